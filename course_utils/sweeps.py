"""Hyperparameter sweeps on the course model (07, 08): one fine-tune as a function of its knobs, repeated over seeds.

    scaling(alpha, r, use_rslora)     the factor the adapter's output is multiplied by (alpha / r or alpha / sqrt(r))
    finetune(base, batches, ...)      one LoRA (or full) fine-tune of a copy of `base` -> Run (curves, held-out loss)
    over_seeds(fn, seeds)             {seed: fn(seed)}: every claim that depends on randomness runs on several seeds
    spread(values)                    "min - max", how a table shows that spread

A sweep is many short runs, so `finetune` copies the base model (the base itself is never changed), seeds both the
adapter's random A and the data order, and evaluates held-out loss only where asked (`eval_every`).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch

from .lora import add_lora, count_parameters, lora_layers
from .training import eval_loss, train


def scaling(alpha: float, r: int, use_rslora: bool = False) -> float:
    """What LoRA multiplies B A by: alpha / r, or alpha / sqrt(r) with rsLoRA (PEFT's use_rslora=True)."""
    if not (isinstance(r, int) and r > 0):
        raise ValueError(f"r must be a positive integer, got {r!r}. Fix: e.g. r=8.")
    if not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ValueError(f"alpha must be a positive number, got {alpha!r}. Fix: e.g. alpha=16 (or alpha=2*r).")
    return alpha / (math.sqrt(r) if use_rslora else r)


@dataclass
class Run:
    """One fine-tune: its minibatch losses, held-out loss at the end (and along the way), size of its update."""

    losses: list = field(default_factory=list)
    held_out: float = math.nan
    curve: list = field(default_factory=list)  # (step, loss on the `train_eval` batch, held-out loss)
    update_norm: float = 0.0  # mean ||Delta W||_F over the adapted layers (full fine-tuning: over all linear weights)
    trainable: int = 0


def finetune(base, batches, eval_batch, *, steps: int, lr: float, seed: int = 0, targets="all-linear", r: int = 8,
             alpha: float | None = None, use_rslora: bool = False, dropout: float = 0.0, full: bool = False,
             eval_every: int | None = None, train_eval=None, clip: float | None = 1.0) -> Run:
    """Fine-tune a copy of `base` for `steps` batches of `batches(seed)`; `full=True` trains every weight, else LoRA.

    alpha defaults to 2r (scaling 2). With `eval_every`, `curve` records the loss on `train_eval` (a fixed batch of
    training examples) and on `eval_batch` every `eval_every` steps, so over- and underfitting show as two curves.
    """
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}. Fix: e.g. steps=20.")
    if eval_every is not None and (train_eval is None or eval_every <= 0 or steps % eval_every):
        raise ValueError("eval_every needs a train_eval batch and must divide steps. Fix: e.g. steps=40, "
                         "eval_every=10, train_eval=encode_texts(tok, train_texts[:32]).")
    torch.manual_seed(seed)  # the adapter's random A
    model = copy.deepcopy(base)
    if full:
        model.requires_grad_(True)
    else:
        add_lora(model, targets, r=r, alpha=2 * r if alpha is None else alpha, dropout=dropout, use_rslora=use_rslora)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)  # one optimizer across chunks keeps Adam's moments
    run, it = Run(trainable=count_parameters(model)[0]), iter(batches(seed))
    chunk = eval_every or steps
    for done in range(0, steps, chunk):
        run.losses += train(model, it, chunk, lr=lr, optimizer=opt, clip=clip, progress=False, seed=seed + done).losses
        if eval_every:
            run.curve.append((done + chunk, eval_loss(model, train_eval), eval_loss(model, eval_batch)))
    run.held_out = run.curve[-1][2] if run.curve else eval_loss(model, eval_batch)
    run.update_norm = _update_norm(model, base, full)
    return run


@torch.no_grad()
def _update_norm(model, base, full: bool) -> float:
    if not full:
        norms = [layer.delta_weight().norm().item() for _, layer in lora_layers(model)]
    else:
        old = dict(base.named_parameters())
        norms = [(p - old[n]).norm().item() for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n
                 and "lm_head" not in n]
    return sum(norms) / len(norms)


def over_seeds(fn, seeds) -> dict:
    """{seed: fn(seed)} for each seed, in order."""
    seeds = list(seeds)
    if len(seeds) < 3:
        raise ValueError(f"{len(seeds)} seed(s) cannot show a spread. Fix: pass at least 3 seeds, e.g. [0, 1, 2].")
    return {s: fn(s) for s in seeds}


def spread(values, fmt: str = ".3f") -> str:
    """'min - max' of the values: the spread a table shows next to a mean."""
    values = list(values)
    if not values:
        raise ValueError("spread of no values. Fix: pass the results of at least one run.")
    return f"{min(values):{fmt}} - {max(values):{fmt}}"
