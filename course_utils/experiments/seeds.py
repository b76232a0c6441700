"""One experiment over several seeds, as a table: the broken and the fixed metric as mean (min - max), and on how
many seeds the fix holds. A result that depends on randomness is shown with its spread, never from one seed.

    outs = [experiments.run("domain_shift", s) for s in (0, 1, 2)]
    agg = experiments.across_seeds(outs)        # agg.broken_mean, agg.fixed, agg.holds_everywhere, ...
    print(experiments.seeds_table([agg, ...]))  # one row per experiment
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .core import Outcome


def _mean(values) -> float:
    return sum(values) / len(values)


def mean_and_spread(values, fmt: str = ".3g") -> str:
    """'mean (min - max)': a number that depends on the seed, with how far the seeds spread it."""
    from ..sweeps import spread

    return f"{_mean(values):{fmt}} ({spread(values, fmt)})"


@dataclass(frozen=True)
class AcrossSeeds:
    """One experiment's outcomes on several seeds, side by side (tuples in seed order)."""

    name: str
    metric: str
    better: str
    margin: float
    seeds: tuple
    broken: tuple
    fixed: tuple
    holds: tuple  # one bool per seed: did the fix beat the failure by at least `margin` there?

    @property
    def broken_mean(self) -> float:
        return _mean(self.broken)

    @property
    def fixed_mean(self) -> float:
        return _mean(self.fixed)

    @property
    def holds_everywhere(self) -> bool:
        return all(self.holds)

    def row(self, fmt: str = ".3g") -> list[str]:
        return [self.name, self.metric, mean_and_spread(self.broken, fmt), mean_and_spread(self.fixed, fmt),
                f"{sum(self.holds)}/{len(self.holds)}"]


def across_seeds(outcomes: Iterable[Outcome]) -> AcrossSeeds:
    """Gather one experiment's Outcomes (one per seed) into an AcrossSeeds."""
    outs = sorted(outcomes, key=lambda o: o.seed)
    if not outs:
        raise ValueError("across_seeds of no outcomes. Fix: pass the Outcomes of experiments.run(name, seed) for "
                         "seeds 0, 1, 2.")
    names = {o.name for o in outs}
    if len(names) > 1:
        raise ValueError(f"across_seeds mixes experiments {sorted(names)}. Fix: gather one experiment at a time.")
    seeds = [o.seed for o in outs]
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"across_seeds got a seed twice ({seeds}). Fix: one Outcome per seed.")
    first = outs[0]
    return AcrossSeeds(first.name, first.metric, first.better, first.margin, tuple(seeds),
                       tuple(o.broken for o in outs), tuple(o.fixed for o in outs), tuple(o.holds for o in outs))


def seeds_table(rows: Iterable[AcrossSeeds], fmt: str = ".3g", max_width: int = 48) -> str:
    """A text table, one row per experiment: metric, broken and fixed as mean (min - max), seeds where it holds."""
    from ..plots import text_table

    return text_table([r.row(fmt) for r in rows], ["experiment", "metric", "broken: mean (min - max)",
                                                   "fixed: mean (min - max)", "fix holds"], max_width=max_width)
