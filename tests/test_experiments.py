"""course_utils.experiments: every guided failure experiment holds on seeds 0, 1 and 2.

Each experiment trains the course model for a few dozen steps (about 1-3 s a run on one core); the course model and
the datasets are loaded once per process, so the 39 runs share one load.
"""
from __future__ import annotations

import math

import pytest

from course_utils import data, experiments
from course_utils.experiments.core import Outcome

REQUIRED = ["domain_shift", "prior_resists", "tiny_dataset", "attention_only", "nonzero_B", "alpha_not_rescaled",
            "targets_match_nothing", "base_not_frozen", "lr_too_high", "forgetting", "merge_into_4bit",
            "halved_param_count", "eval_repack"]
SEEDS = (0, 1, 2)


def test_every_required_experiment_is_there():
    # Expected: exactly the experiments chapter 10 and lab05 name, the failure table first.
    assert experiments.names() == REQUIRED


@pytest.mark.parametrize("name", REQUIRED)
def test_the_fix_beats_the_failure_on_every_seed(name):
    # Expected: on seeds 0, 1 and 2 the fixed setup is better than the broken one in the experiment's own direction,
    # by at least the margin it states, with finite numbers and a sentence each for students.
    runs = [experiments.run(name, seed) for seed in SEEDS]
    for out in runs:
        assert isinstance(out, Outcome) and out.name == name
        assert out.better in ("lower", "higher") and out.metric and out.margin > 0
        assert len(out.symptom.split()) >= 8 and len(out.fix.split()) >= 5, "one real sentence each"
        assert math.isfinite(out.fixed) and not math.isnan(out.broken)
        if out.better == "lower":
            assert out.fixed < out.broken, (out.seed, out.broken, out.fixed)
        else:
            assert out.fixed > out.broken, (out.seed, out.broken, out.fixed)
        assert out.holds, out.summary()
    spread = ", ".join(f"seed {o.seed}: {o.broken:.4g} -> {o.fixed:.4g} ({o.seconds:.1f} s, cpu {o.cpu_seconds:.1f} s)"
                       for o in runs)
    print(f"{name}: {runs[0].metric}: {spread}")


def test_a_run_repeats_exactly():
    # Expected: the same seed gives the same numbers (the seed fixes the adapter's init and the data order).
    a, b = experiments.run("prior_resists", 0), experiments.run("prior_resists", 0)
    assert (a.broken, a.fixed) == (b.broken, b.fixed)


def test_describe_matches_run_without_running():
    info = experiments.describe("lr_too_high")
    assert info["better"] == "lower" and info["group"] == "traps" and "learning rate" in info["symptom"]


def test_bad_input_names_the_fix():
    with pytest.raises(KeyError, match="Fix: use one of experiments.names()"):
        experiments.run("domain-shift")
    with pytest.raises(ValueError, match="seed must be a whole number"):
        experiments.run("domain_shift", seed=-1)
    with pytest.raises(ValueError, match="Fix"):
        experiments.run("domain_shift", seed=1.5)


def test_outcome_holds_by_the_stated_margin():
    # Expected: `holds` is computed from the numbers, in the metric's direction, never declared.
    common = dict(name="x", seed=0, symptom="s", fix="f", metric="m", margin=0.5)
    assert Outcome(better="lower", broken=2.0, fixed=1.4, **common).holds
    assert not Outcome(better="lower", broken=2.0, fixed=1.6, **common).holds
    assert Outcome(better="higher", broken=0.0, fixed=0.5, **common).holds
    assert not Outcome(better="higher", broken=1.0, fixed=0.0, **common).holds
    assert Outcome(better="lower", broken=3.0, fixed=1.0, **common).gain == 2.0


def test_held_out_pretraining_lines_are_unseen_and_stable():
    # Expected: lines the course model never trained on; a smaller n gives a prefix (chapters 01 and 06 use 100, 64).
    seen = set(data.texts("pretrain"))
    lines = data.held_out_pretrain_texts(64)
    assert len(lines) == 64 and not seen.intersection(lines)
    assert data.held_out_pretrain_texts(16) == lines[:16]


def test_across_seeds_shows_mean_spread_and_where_the_fix_holds():
    # Expected: outcomes on three seeds (given in any order) gathered in seed order; the table shows mean (min - max)
    # and on how many seeds the fix held; mixing experiments or repeating a seed names the fix.
    common = dict(name="x", symptom="s", fix="f", metric="loss", better="lower", margin=0.5)
    outs = [Outcome(seed=s, broken=b, fixed=f, **common) for s, b, f in ((2, 3.0, 1.0), (0, 2.0, 1.0), (1, 4.0, 3.8))]
    agg = experiments.across_seeds(outs)
    assert agg.seeds == (0, 1, 2) and agg.broken == (2.0, 4.0, 3.0) and agg.holds == (True, False, True)
    assert agg.broken_mean == 3.0 and not agg.holds_everywhere
    table = experiments.seeds_table([agg])
    assert "3 (2 - 4)" in table and "2/3" in table and table.splitlines()[0].startswith("experiment")
    with pytest.raises(ValueError, match="Fix: gather one experiment"):
        experiments.across_seeds(outs + [Outcome(seed=3, broken=1.0, fixed=0.0, **dict(common, name="y"))])
    with pytest.raises(ValueError, match="Fix: one Outcome per seed"):
        experiments.across_seeds(outs + outs[:1])
