"""course_utils: the reference code for the LoRA & QLoRA course.

Importing it keeps every cache inside the repo, keeps the hub offline by default, and installs the
bitsandbytes CPU guard (see `course_utils.bnb_guard`) before any notebook can trip over it.
Submodules are imported on use so `import course_utils` stays fast.
"""
from __future__ import annotations

from .paths import set_cache_env as _set_cache_env

_set_cache_env()

__version__ = "0.1.0"


def _install_guards() -> None:
    try:
        from . import bnb_guard
    except ImportError:  # the guard module arrives with the NF4/QLoRA work; nothing to guard before it
        return
    bnb_guard.install()


_install_guards()
