"""SHA-256 manifest of the committed course model and data: a corrupted or half-pulled checkout fails loudly."""
from __future__ import annotations

import hashlib
from pathlib import Path

from .paths import ASSETS_DIR, MANIFEST


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def asset_files(root: Path = ASSETS_DIR) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST.name)


def write_manifest(root: Path = ASSETS_DIR) -> Path:
    lines = [f"{sha256(p)}  {p.relative_to(root).as_posix()}" for p in asset_files(root)]
    out = root / MANIFEST.name
    out.write_text("\n".join(lines) + "\n")
    return out


def verify_manifest(root: Path = ASSETS_DIR, raise_on_error: bool = False) -> list[str]:
    """Return a list of problems (empty = every file matches); optionally raise with the fix."""
    manifest = root / MANIFEST.name
    if not manifest.exists():
        problems = [f"{manifest} is missing"]
    else:
        problems = []
        listed = set()
        for line in manifest.read_text().splitlines():
            digest, rel = line.split("  ", 1)
            listed.add(rel)
            path = root / rel
            if not path.exists():
                problems.append(f"{rel}: missing")
            elif sha256(path) != digest:
                problems.append(f"{rel}: checksum mismatch")
        extra = [p.relative_to(root).as_posix() for p in asset_files(root)]
        problems += [f"{rel}: not in the manifest" for rel in extra if rel not in listed]
    if problems and raise_on_error:
        raise RuntimeError(
            "The course model/data do not match their checksums:\n  " + "\n  ".join(problems)
            + "\nRestore them with `git checkout -- course_utils/assets` (or rebuild with "
            "`python scripts/build_course_model.py`, which rewrites the manifest)."
        )
    return problems
