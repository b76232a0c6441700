"""Counting parameters exactly as PEFT's print_trainable_parameters does, plus a hook for quantized layers.

A module may define `logical_param_count()`: the number of parameters its whole subtree stands for (course_utils.nf4's
NF4Linear keeps its 4-bit codes in buffers, which are not nn.Parameters). count_parameters then uses that number for the
subtree's total instead of summing its nn.Parameters; trainable parameters inside it still count as trainable.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def _numel(p: torch.Tensor) -> int:
    n = p.numel()
    if n == 0 and hasattr(p, "ds_numel"):  # DeepSpeed ZeRO-3 placeholder
        n = p.ds_numel
    if p.__class__.__name__ == "Params4bit":  # two 4-bit values per stored byte (PEFT's rule)
        n = n * 2 * p.element_size()
    return n


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) as PEFT counts them. Buffers are not parameters, unless logical_param_count() says so."""
    roots = [(n, m) for n, m in model.named_modules() if callable(getattr(m, "logical_param_count", None))]
    names = [n for n, _ in roots]
    roots = [(n, m) for n, m in roots if not any(o != n and (o == "" or n.startswith(o + ".")) for o in names)]
    covered = {id(p) for _, m in roots for p in m.parameters()}
    total = sum(int(m.logical_param_count()) for _, m in roots)
    trainable = 0
    for _, p in model.named_parameters():
        n = _numel(p)
        total += 0 if id(p) in covered else n
        trainable += n if p.requires_grad else 0
    return trainable, total


def trainable_report(model: nn.Module) -> str:
    """PEFT's print_trainable_parameters line, character for character."""
    t, a = count_parameters(model)
    return f"trainable params: {t:,d} || all params: {a:,d} || trainable%: {100 * t / a:.4f}"
