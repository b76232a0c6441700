"""Guided failure experiments (chapter 10, lab05): each failure reproduced on the course model in seconds, measured,
and fixed.

    from course_utils import experiments
    experiments.names()                         # every experiment's name
    out = experiments.run("domain_shift", seed=0)
    out.symptom, out.fix                        # one sentence each, for students
    out.metric, out.better                      # what is measured; "lower" or "higher" is better
    out.broken, out.fixed                       # the metric in the failing setup and after the fix
    out.holds                                   # the fix beats the failure by at least out.margin
    out.signals                                 # diagnostics measured on the way (curves, counts, norms)
    print(out.summary())

Every experiment is an honest measurement: the broken and the fixed setup are trained and evaluated the same way,
and `holds` is computed, not declared. Each holds on seeds 0, 1 and 2 (tests/test_experiments.py). Where the course
model does not show the symptom the course outline claims, `symptom` says what it does show.

    table.py      the outline's failure table: domain_shift, prior_resists, tiny_dataset, attention_only
    traps.py      mistakes in a LoRA setup: nonzero_B, alpha_not_rescaled, targets_match_nothing, base_not_frozen,
                  lr_too_high, forgetting
    quantized.py  QLoRA traps: merge_into_4bit, halved_param_count, eval_repack (bitsandbytes' CPU repack)
    core.py       the Outcome, the registry, and the course model and data cached for every run

Speed: the course model and the datasets are loaded once per process and copied for each run; one run takes about
1-3 s on one core (call torch.set_num_threads(1) first on a 2-core machine, as the chapters do).
"""
from __future__ import annotations

from . import quantized, table, traps  # noqa: F401  (importing them registers their experiments)
from .core import REGISTRY, Outcome

__all__ = ["Outcome", "names", "run", "describe"]


def names() -> list[str]:
    """Every experiment's name: the outline's table first, then the setup traps, then the QLoRA traps."""
    return list(REGISTRY)


def _get(name: str):
    if not isinstance(name, str) or name not in REGISTRY:
        raise KeyError(f"No experiment named {name!r}. Fix: use one of experiments.names(): {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def describe(name: str) -> dict:
    """What an experiment measures, without running it: symptom, fix, metric, better, margin, group."""
    e = _get(name)
    return {"name": e.name, "group": e.group, "symptom": e.symptom, "fix": e.fix, "metric": e.metric,
            "better": e.better, "margin": e.margin}


def run(name: str, seed: int = 0) -> Outcome:
    """Run one experiment on one seed (the random adapter init and the data order): an Outcome."""
    _get(name)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}. Fix: e.g. seed=0 (the tests use 0, 1, 2).")
    from .core import run_registered

    return run_registered(name, seed)
