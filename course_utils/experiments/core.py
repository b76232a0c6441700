"""What every failure experiment shares: the Outcome it returns, the registry, and the course model and data,
loaded once per process so that one run takes seconds.

An experiment is a function `f(seed) -> (broken, fixed, signals)` registered with `@experiment(...)`, which states
the failure in words (symptom, fix), what is measured (metric, better) and by how much the fix must beat the
failure (margin). `run` times it and wraps the numbers in an Outcome.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import torch

BETTER = ("lower", "higher")


@dataclass(frozen=True)
class Outcome:
    """One run of one experiment: the metric in the failing setup (`broken`) and after the fix (`fixed`).

    `signals` holds the diagnostics measured along the way (loss curves, trainable-parameter reports, gradient
    norms, ...): what would reveal the failure in a real run. `holds` says whether the fix beats the failure by
    at least `margin`, in the metric's own units.
    """

    name: str
    seed: int
    symptom: str
    fix: str
    metric: str
    better: str
    broken: float
    fixed: float
    margin: float
    signals: dict = field(default_factory=dict)
    seconds: float = 0.0  # wall-clock time of the run
    cpu_seconds: float = 0.0  # CPU time of this process during the run (about the wall time on a quiet machine)

    @property
    def gain(self) -> float:
        """How much better the fixed run is than the broken one (positive: the fix helps)."""
        return self.broken - self.fixed if self.better == "lower" else self.fixed - self.broken

    @property
    def holds(self) -> bool:
        return self.gain >= self.margin

    def summary(self) -> str:
        verdict = "holds" if self.holds else "does NOT hold"
        return (f"{self.name} (seed {self.seed}): {self.metric} ({self.better} is better): broken {self.broken:.4g}, "
                f"fixed {self.fixed:.4g}; the fix gains {self.gain:.4g} (margin {self.margin:g}): {verdict}. "
                f"[{self.seconds:.1f} s]")


@dataclass(frozen=True)
class Experiment:
    name: str
    group: str
    symptom: str
    fix: str
    metric: str
    better: str
    margin: float
    measure: Callable[[int], tuple]


REGISTRY: dict[str, Experiment] = {}


def experiment(name: str, *, symptom: str, fix: str, metric: str, better: str, margin: float):
    """Register `measure(seed) -> (broken, fixed, signals)` as the experiment `name`."""
    if better not in BETTER:
        raise ValueError(f"better must be one of {BETTER}, got {better!r}. Fix: say which direction of the metric "
                         "is good.")

    def register(measure):
        if name in REGISTRY:
            raise ValueError(f"experiment {name!r} is registered twice. Fix: give the second one another name.")
        group = measure.__module__.rpartition(".")[2]
        REGISTRY[name] = Experiment(name, group, symptom, fix, metric, better, margin, measure)
        return measure

    return register


def run_registered(name: str, seed: int) -> Outcome:
    exp = REGISTRY[name]
    t0, c0 = time.perf_counter(), time.process_time()
    broken, fixed, signals = exp.measure(seed)
    return Outcome(exp.name, seed, exp.symptom, exp.fix, exp.metric, exp.better, float(broken), float(fixed),
                   exp.margin, signals, time.perf_counter() - t0, time.process_time() - c0)


# ------------------------------------------------------------------------------------------------ shared material

@lru_cache(maxsize=1)
def _base():
    from ..models import load_course_model

    return load_course_model()


def tokenizer():
    return _base()[1]


def fresh_model() -> torch.nn.Module:
    """A private copy of the course model (the loaded original is never trained)."""
    return copy.deepcopy(_base()[0])


def base_model() -> torch.nn.Module:
    """The shared, loaded course model: read it, never train or modify it (use fresh_model for that)."""
    return _base()[0]


@lru_cache(maxsize=None)
def _texts(name: str) -> tuple[str, ...]:
    from .. import data

    if name == "pretrain_held_out":
        return tuple(data.held_out_pretrain_texts(48))
    return tuple(data.texts(name))


@lru_cache(maxsize=None)
def _pairs(name: str) -> tuple[tuple[str, str], ...]:
    from .. import data

    return tuple((r["prompt"], r.get("answer", r.get("label"))) for r in data.load(name))


def texts(name: str, n: int | None = None) -> list[str]:
    rows = _texts(name)
    return list(rows if n is None else rows[:n])


def pairs(name: str, n: int | None = None) -> list[tuple[str, str]]:
    rows = _pairs(name)
    return list(rows if n is None else rows[:n])


def encode(items, max_len: int = 64) -> dict:
    """Texts (str) as a causal-LM batch; (prompt, answer) pairs as a batch whose loss covers the answers only."""
    from ..training import encode_pairs, encode_texts

    items = list(items)
    if items and isinstance(items[0], tuple):
        return encode_pairs(tokenizer(), [p for p, _ in items], [a for _, a in items], max_len)
    return encode_texts(tokenizer(), items, max_len)


@lru_cache(maxsize=None)
def _held_out(name: str, n: int):
    split = {"near": "near_test", "far": "far_test", "pretrain": "pretrain_held_out",
             "sentiment": "sentiment_test"}[name]
    return encode(pairs(split, n) if name == "sentiment" else texts(split, n))


def held_out(name: str, n: int = 48) -> dict:
    """A held-out batch (cached): 'near', 'far', 'sentiment', or 'pretrain' (pretraining-style lines the course
    model never saw). Evaluation never changes it."""
    return _held_out(name, n)


def batches(items, batch_size: int, seed: int):
    """Endless shuffled batches of texts or (prompt, answer) pairs, the order fixed by `seed`."""
    from ..training import batches_from_examples

    return batches_from_examples(encode, items, batch_size, seed=seed)


def fit(model, items, steps: int, lr: float, seed: int, batch_size: int = 8, **train_kwargs):
    """Train `model` on `items` (see `batches`) for `steps` steps; returns the TrainResult (its loss curve)."""
    from ..training import train

    return train(model, batches(items, batch_size, seed), steps, lr=lr, progress=False, seed=seed, **train_kwargs)


def lora(model, targets="all-linear", r: int = 8, alpha: float | None = None, seed: int = 0, **kwargs):
    """add_lora with the random A drawn from `seed` (alpha defaults to 2r)."""
    from ..lora import add_lora

    torch.manual_seed(seed)
    return add_lora(model, targets, r=r, alpha=2 * r if alpha is None else alpha, **kwargs)


def loss(model, name_or_batch, n: int = 48) -> float:
    from ..training import eval_loss

    batch = held_out(name_or_batch, n) if isinstance(name_or_batch, str) else name_or_batch
    return eval_loss(model, batch)

