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
model does not show the symptom the common failure table claims, `symptom` says what it does show.

    table.py      the common failure table ('LoRA struggles when ...'): domain_shift, prior_resists,
                  tiny_dataset, attention_only
    traps.py      mistakes in a LoRA setup: nonzero_B, alpha_not_rescaled, targets_match_nothing, base_not_frozen,
                  lr_too_high, forgetting
    quantized.py  QLoRA traps: merge_into_4bit, halved_param_count, eval_repack (bitsandbytes' CPU repack)
    core.py       the Outcome, the registry, and the course model and data cached for every run
    seeds.py      across_seeds / seeds_table: one experiment on several seeds, as mean (min - max)

What each experiment compares (broken -> fixed) and the signals it records, for chapter 10 and lab05:

    domain_shift          LoRA r=1 -> r=32 on chords, 10 steps; signals: continued pretraining (every weight), curves
    prior_resists         r=2 on q,k,v,o -> r=16 on all linear, 20 steps on the 8 overrides; signals: accuracies
    tiny_dataset          4 facts -> 16 facts, 20 steps (the gap); signals: dropout 0.3, weight decay 0.5, 10 steps
    attention_only        q,k,v,o -> all linear at r=8, 15 steps on letters; signals: curves, trainable counts
    nonzero_B             init="nonzero_B" -> B = 0; signals: loss at step 0, task loss
    alpha_not_rescaled    r=64 alpha=16 -> r=64 alpha=128; signals: r=8 alpha=16 on the same steps, curves
    targets_match_nothing Phi-2's target names under PEFT (q,k,v only) -> every linear layer; signals: the layers
                          PEFT adapted, course_utils' refusal message, trainable counts
    base_not_frozen       base trainable -> frozen; signals: trainable %, the trained models' own losses
    lr_too_high           lr 0.1 -> 5e-3; signals: loss curves
    forgetting            letters only -> letters + replayed pretraining lines; signals: task losses
    merge_into_4bit       merge into NF4 -> merge into the dequantized float base; signals: losses, rounding error
    halved_param_count    sum(p.numel()) -> PEFT's count; signals: every count (transformers' num_parameters too)
    eval_repack           guard off -> on; signals: what happened to each layer, whether this CPU repacks at all,
                          and what a real unguarded eval forward did here

Each measuring function is short and reads as a recipe (module table.py, traps.py, quantized.py): the broken and
the fixed setup differ in exactly the lines the failure is about, so a lab can plant the same fault.

Speed: the course model and the datasets are loaded once per process and copied for each run; one run takes about
1-4 s on one core (call torch.set_num_threads(1) first on a 2-core machine, as the chapters do). The first run in a
process also loads the course model (a few seconds), and the first run that needs PEFT or bitsandbytes imports it.
"""
from __future__ import annotations

# Importing the groups registers their experiments, in this order: the failure table, setup traps, QLoRA traps.
from . import table  # noqa: F401,I001
from . import traps  # noqa: F401
from . import quantized  # noqa: F401
from .core import REGISTRY, Outcome
from .seeds import AcrossSeeds, across_seeds, seeds_table

__all__ = ["Outcome", "names", "run", "describe", "AcrossSeeds", "across_seeds", "seeds_table"]


def names() -> list[str]:
    """Every experiment's name: the failure table first, then the setup traps, then the QLoRA traps."""
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
