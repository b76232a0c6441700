"""The course datasets, read from the committed (checksummed) JSONL files in course_utils/assets/data.

    >>> from course_utils import data
    >>> data.names()            # every dataset
    >>> data.load("sentiment_train")[:2]
    >>> data.held_out_pretrain_texts(64)   # pretraining-style lines the course model never saw
Each dataset's meaning and provenance: course_utils/world.py, the generator that scripts/build_course_model.py ran.
"""
from __future__ import annotations

import json
from functools import lru_cache

from .paths import DATA_DIR


def names() -> list[str]:
    return sorted(p.stem for p in DATA_DIR.glob("*.jsonl"))


@lru_cache(maxsize=None)
def _read(name: str) -> tuple[dict, ...]:
    path = DATA_DIR / f"{name}.jsonl"
    if not path.exists():
        raise KeyError(f"no dataset {name!r}; available: {', '.join(names())}")
    with open(path) as f:
        return tuple(json.loads(line) for line in f)


def load(name: str, n: int | None = None) -> list[dict]:
    """A fresh list of records (first `n` if given), safe to shuffle or modify."""
    rows = _read(name)
    return [dict(r) for r in (rows if n is None else rows[:n])]


def texts(name: str, n: int | None = None) -> list[str]:
    return [r["text"] for r in load(name, n)]


def held_out_pretrain_texts(n: int, seed: int = 1) -> list[str]:
    """`n` fresh lines from the generator that wrote the pretraining corpus (another seed), none of them in it.

    The loss on these is how the course measures what a fine-tune did to the base model's pretraining knowledge
    (forgetting). The same `n` and seed always give the same lines, and a smaller `n` gives a prefix of them.
    """
    from .world import pretrain_lines

    seen, pool = set(texts("pretrain")), 2 * n
    while True:
        fresh = [t for t in pretrain_lines(pool, seed=seed) if t not in seen]
        if len(fresh) >= n:
            return fresh[:n]
        pool *= 2
