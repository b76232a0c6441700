"""Where the course keeps things. Every cache lives inside the repo (ignored by git), never in $HOME."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # course_utils/
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


# torch picks its vectorised kernels (ATen), MKL and oneDNN their matmul code paths by CPU: an AVX512 machine and
# an AVX2-only one round fp16/bf16 ops and fp32 matmuls differently (measured: a printed 9.5e-03 became 9.6e-03;
# on a CPU with AVX512-BF16, bf16 matmuls go through oneDNN's native bf16 kernels). Pinning all three to AVX2,
# which every x86 machine the course runs on has, makes stored outputs reproducible.
PORTABLE_FLOATS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and "avx2" in line.split() for line in f)
    except OSError:
        return False


def notebook_env(environ=None) -> dict:
    """The environment notebooks are executed in, both when their outputs are stored and when nbval re-runs them.

    One definition for both, because nbval compares stored outputs: offline and network-blocked (every Python
    subprocess loads tests/sitecustomize), no progress bars, the embedded model, the venv's bin/ on PATH
    (nbgrader runs `alembic` as a subprocess), and the same float kernels on every x86 machine (PORTABLE_FLOATS).
    """
    import sys

    env = dict(os.environ if environ is None else environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COURSE_BLOCK_NETWORK="1", TQDM_DISABLE="1",
               PYTHONHASHSEED="0")
    if _has_avx2():
        env.update(PORTABLE_FLOATS)
    for key in ("COURSE_MODEL", "COURSE_ONLINE"):
        env.pop(key, None)
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "tests" / "sitecustomize"), str(REPO_ROOT), *extra])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env
