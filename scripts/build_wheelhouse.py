"""A folder that installs the course with no network: every pinned wheel, the course's own, and the course itself.

    python scripts/build_wheelhouse.py                  # -> wheelhouse/ (make wheelhouse)
    python scripts/build_wheelhouse.py --dest DIR --only tqdm    # a subset (the tests use one)

For a room without internet (docs/workshop.md): copy the folder to a USB stick; on each laptop unpack
`lora-course.tar.gz`, put the folder next to it as `lora-course/wheelhouse/` (or point WHEELHOUSE=... at the stick),
and `make lab` installs from it with `pip --no-index --find-links`, never touching the network.

Wheels are platform-specific: the folder serves laptops with this machine's OS, CPU architecture and Python (3.11).
Build one per platform the room has, on a machine of that platform.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = """Offline install of the LoRA & QLoRA course ({platform}, Python {python}).

  tar xzf lora-course.tar.gz            # the course, as committed ({commit})
  cp -r THIS_FOLDER lora-course/wheelhouse   # or: export WHEELHOUSE=/path/to/THIS_FOLDER
  cd lora-course && make lab            # pip --no-index --find-links wheelhouse: no network needed
  make doctor                           # ends with "All checks passed"

{count} wheels, {size_mb:.0f} MB in all.
"""


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"], check=True)


def build(dest: Path, only: list[str] | None = None) -> dict:
    """Writes the wheelhouse to `dest` (replaced whole, so no stale wheel survives); returns what it holds."""
    t0 = time.perf_counter()
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if only:
        pins = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
        _pip("wheel", "-w", str(tmp), *[p for p in pins if p.split("==")[0] in only])
    else:
        _pip("wheel", "-w", str(tmp), "-r", str(ROOT / "requirements.txt"))
    # the tools `make setup` installs the course with (--no-build-isolation), so an old venv can be brought up offline
    _pip("download", "-d", str(tmp), "--only-binary=:all:", "setuptools")
    _pip("wheel", "-w", str(tmp), "--no-deps", "--no-build-isolation", str(ROOT))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    subprocess.run(["git", "archive", "--format=tar.gz", "--prefix=lora-course/", "-o",
                    str(tmp / "lora-course.tar.gz"), "HEAD"], cwd=ROOT, check=True)
    wheels = sorted(tmp.glob("*.whl"))
    size = sum(p.stat().st_size for p in tmp.iterdir())
    (tmp / "README.txt").write_text(README.format(
        platform=sys.platform, python=sys.version.split()[0], commit=commit.strip(), count=len(wheels),
        size_mb=size / 1e6))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return {"wheels": len(wheels), "bytes": size, "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dest", type=Path, default=ROOT / "wheelhouse")
    ap.add_argument("--only", nargs="*", help="only these pinned packages (and their dependencies)")
    args = ap.parse_args(argv)
    got = build(args.dest, args.only)
    print(f"ok     {args.dest}: {got['wheels']} wheels and the course, {got['bytes'] / 1e6:.0f} MB "
          f"({got['seconds']:.0f} s). On a laptop: see {args.dest / 'README.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
