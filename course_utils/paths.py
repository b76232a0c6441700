"""Where the course keeps things. Every cache lives inside the repo (ignored by git), never in $HOME."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
ASSETS_DIR = PACKAGE_DIR / "assets"
MODEL_DIR = ASSETS_DIR / "course_model"
DATA_DIR = ASSETS_DIR / "data"
MANIFEST = ASSETS_DIR / "MANIFEST.sha256"
CACHE_DIR = REPO_ROOT / ".cache"

# One table, used by the Makefile (via `python -m course_utils env`), the tests and every notebook import.
CACHE_ENV = {
    "JUPYTER_CONFIG_DIR": REPO_ROOT / ".jupyter" / "config",
    "JUPYTER_DATA_DIR": REPO_ROOT / ".jupyter" / "data",
    "JUPYTER_RUNTIME_DIR": REPO_ROOT / ".jupyter" / "runtime",
    "IPYTHONDIR": REPO_ROOT / ".ipython",
    "MPLCONFIGDIR": CACHE_DIR / "matplotlib",
    "HF_HOME": CACHE_DIR / "huggingface",
    "TRITON_CACHE_DIR": CACHE_DIR / "triton",
}


def set_cache_env(force: bool = False) -> dict[str, str]:
    """Point Jupyter, IPython, matplotlib and Hugging Face at folders inside the repo.

    Existing values win unless `force`, so a user who deliberately set HF_HOME keeps it.
    The hub is offline unless the user explicitly opted in with COURSE_ONLINE=1.
    """
    applied = {}
    for key, path in CACHE_ENV.items():
        if force or key not in os.environ:
            os.environ[key] = str(path)
        applied[key] = os.environ[key]
    if os.environ.get("COURSE_ONLINE") != "1":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return applied
