"""Preflight: is this machine ready for the course? `python -m course_utils doctor` or `doctor()` in a notebook."""
from __future__ import annotations

import importlib
import os
import platform
import sys

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "matplotlib", "jupyterlab",
            "ipywidgets", "nbgrader", "nbval", "tqdm")


def _pinned_versions() -> dict[str, str]:
    from .paths import REPO_ROOT

    pins = {}
    req = REPO_ROOT / "requirements.txt"
    if req.exists():
        for line in req.read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                name, ver = line.split("==")
                pins[name.strip().lower()] = ver.strip()
    return pins


def collect() -> tuple[list[tuple[str, str]], list[str]]:
    """(rows to print, problems). Each problem names what is wrong and how to fix it."""
    from importlib.metadata import PackageNotFoundError, version

    rows, problems = [("python", sys.version.split()[0]), ("platform", platform.platform())], []
    if sys.version_info[:2] != (3, 11):
        problems.append(f"Python {sys.version_info[0]}.{sys.version_info[1]} found; the course is pinned to 3.11.")
    pins = _pinned_versions()
    for pkg in PACKAGES:
        try:
            v = version(pkg)
        except PackageNotFoundError:
            rows.append((pkg, "MISSING"))
            problems.append(f"{pkg} is not installed: run `make setup`.")
            continue
        want = pins.get(pkg.lower())
        rows.append((pkg, v if not want or v.split("+")[0] == want else f"{v} (pinned {want})"))
        if want and v.split("+")[0] != want:
            problems.append(f"{pkg} {v} is installed but {want} is pinned: run `make setup` (or `pip install -r requirements.txt`).")

    import torch

    device = "cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    rows.append(("device", device))
    rows.append(("bitsandbytes guard", _guard_line(problems)))
    from ..nf4 import native as nf4_native

    rows.append(("NF4 dequantize", _nf4_line(nf4_native.status())))  # no compiler is fine: torch is just slower
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    rows.append(("hub", "offline: nothing is downloaded (COURSE_ONLINE=1 lifts it)" if offline
                 else "ONLINE (COURSE_ONLINE=1): models may be downloaded from the Hugging Face hub"))

    from .manifest import verify_manifest
    from ..models import COURSE_MODEL_ENV, resolve_model_source, timed_load

    bad = verify_manifest()
    rows.append(("course model checksum", "ok" if not bad else f"{len(bad)} problem(s)"))
    problems += [f"course model/data: {b}; restore with `git checkout -- course_utils/assets`." for b in bad]
    if not bad:
        try:
            model, _, secs = timed_load()
            n = sum(p.numel() for p in model.parameters())
            rows.append(("course model", f"{resolve_model_source()} ({n:,} params, loaded in {secs:.2f} s)"))
        except Exception as e:  # the doctor reports, it does not crash
            problems.append(f"loading the course model failed: {e!r}")
    if os.environ.get(COURSE_MODEL_ENV):
        rows.append(("COURSE_MODEL", os.environ[COURSE_MODEL_ENV]))
    return rows, problems


def _guard_line(problems: list[str]) -> str:
    """One sentence on course_utils.bnb_guard, from its status flags."""
    try:
        from . import bnb_guard
    except ImportError:
        return "not part of this install"
    st = bnb_guard.status()
    if not st["bitsandbytes_importable"]:
        return "not needed: bitsandbytes is not installed"
    if st["error"]:
        problems.append(f"the bitsandbytes guard failed ({st['error']}): QLoRA on the CPU may train wrongly. "
                        "Fix: `make setup` to reinstall the pinned bitsandbytes.")
        return f"FAILED: {st['error']}"
    if st["disabled_by_env"] or not st["guard_active"]:
        return (f"off ({bnb_guard.ENV_SWITCH}=0): an eval before training can silently break QLoRA on CPUs with "
                "AVX512-BF16")
    cpu = "needed: this CPU has AVX512-BF16" if st["cpu_avx512_bf16"] else "this CPU has no AVX512-BF16"
    if st["waiting_for_import"]:
        return f"on: patches bitsandbytes' CPU 4-bit path on first import ({cpu})"
    fix = {"applied": "row-block dequantize fixed", "not needed": "dequantize already right here",
           "not applicable": "no native CPU library"}.get(st["dequant_fix"], st["dequant_fix"])
    return f"on: eval repack blocked, {fix} ({cpu})"


def _nf4_line(status: str) -> str:
    """course_utils.nf4_native.status() without compiler flags."""
    if status.startswith("native"):
        return "compiled C kernel (fast path)"
    reason = status.split(":", 1)[1].strip() if ":" in status else status
    return f"plain torch, 1.4-2.6x slower ({reason}); a C compiler (cc) enables the fast path"


def doctor(raise_on_problem: bool = False) -> bool:
    rows, problems = collect()
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if problems:
        print("\nPROBLEMS:")
        for p in problems:
            print(f"  - {p}")
        if raise_on_problem:
            raise RuntimeError("course doctor found problems (listed above)")
        return False
    print("\nAll checks passed: you are ready for the course.")
    return True


def ready() -> bool:
    """The doctor in one line, for an attendee before the workshop (`make ready`): READY, or the first fix."""
    from .paths import REPO_ROOT

    try:
        rows, problems = collect()
    except Exception as e:  # a half-installed venv must still get its one line, not a traceback
        rows, problems = [], [f"the course's packages do not import ({type(e).__name__}: {e}): run `make setup`"]
    for path in ("notebooks/00_setup.ipynb", "workshop/workshop.ipynb"):
        if not (REPO_ROOT / path).exists():
            problems.append(f"{path} is missing: `git checkout -- {path}`")
    if problems:
        more = f" (and {len(problems) - 1} more: `make doctor` lists them)" if len(problems) > 1 else ""
        print(f"NOT READY: {problems[0]}{more}")
        return False
    info = dict(rows)
    print(f"READY for the workshop: Python {info['python']}, torch {info['torch']}, {info['device']}, "
          "the course model loads, every check of `make doctor` passes.")
    return True
