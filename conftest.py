"""Loaded by pytest for every path it collects (tests/, the reference notebooks, the lab solutions), so
`pytest solutions/notebooks/05_lora_idea.ipynb` runs nbval in the same environment as `make test`: the one
scripts store notebook outputs under (course_utils.paths.notebook_env), offline, network blocked."""
from __future__ import annotations

import os

from course_utils.runtime.paths import notebook_env, set_cache_env
from course_utils.runtime.netguard import block_network

# notebook_env() builds on the caller's environment (PATH included), so compute it before replacing it.
_env = notebook_env()
os.environ.clear()
os.environ.update(_env)
set_cache_env(force=True)
block_network()
