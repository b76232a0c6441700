"""Model surgery: the operations every part of the course performs on a model's layers, each defined once.

    linear_layers(model)           "the linear layers": what LoRA targets, NF4 quantizes, a memory count adds up
    is_linear_like(module)         nn.Linear, or a frozen layer that behaves like one (NF4Linear, Linear4bit)
    replace_module(model, name, new)   swap a submodule by its dotted name, returning the old one
    eval_mode(model), train_mode(model)   `with eval_mode(model):` ..., then every module's own flag is restored
    count_parameters(model)        (trainable, total) by PEFT's rule, 4-bit weights counted as what they stand for
    trainable_report(model)        PEFT's print_trainable_parameters line, character for character
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

HEAD_NAME = "lm_head"


def is_linear_like(module: nn.Module) -> bool:
    """nn.Linear (bitsandbytes' Linear4bit is one), or a layer with integer in/out features and a weight or a
    `dequantized_weight()` (course_utils.nf4.NF4Linear). A wrapper that holds a `base_layer` is not: it is an
    adapter around a linear layer (see `is_wrapped_linear`)."""
    if hasattr(module, "base_layer"):
        return False
    if isinstance(module, nn.Linear):
        return True
    return (isinstance(getattr(module, "in_features", None), int)
            and isinstance(getattr(module, "out_features", None), int)
            and (hasattr(module, "weight") or callable(getattr(module, "dequantized_weight", None))))


def is_wrapped_linear(module: nn.Module) -> bool:
    """A LoRA wrapper (ours or PEFT's): a module whose `base_layer` is linear-like."""
    base = getattr(module, "base_layer", None)
    return isinstance(base, nn.Module) and is_linear_like(base)


def output_head_name(model: nn.Module) -> str | None:
    """The name of the output projection of a transformers model (get_output_embeddings), else None.

    On a plain nn.Module nothing is the head, as in PEFT: there `all-linear` targets every linear layer.
    """
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is None:
        return None
    return next((n for n, m in model.named_modules() if m is head), None)


def linear_layers(model: nn.Module, *, include_head: bool = False, suffixes=None, skip=()) -> list[tuple[str, nn.Module]]:
    """(name, module) of every linear layer in module order; an adapter wrapper counts as its linear layer.

    include_head: keep the output projection (lm_head). LoRA and QLoRA leave it alone, so the default drops it.
    suffixes: keep only names whose last component is listed (e.g. ("q_proj", "v_proj")).
    skip: leave out these names (a full dotted name or a last component).
    The insides of a wrapper (its base_layer, lora_A, lora_B) are never listed separately.
    """
    skip = (skip,) if isinstance(skip, str) else tuple(skip)
    head = None if include_head else output_head_name(model)
    found, wrappers = [], []
    for name, module in model.named_modules():
        if not name or any(name.startswith(w) for w in wrappers):
            continue
        wrapped = is_wrapped_linear(module)
        if wrapped:
            wrappers.append(name + ".")
        if not (wrapped or is_linear_like(module)) or name == head:
            continue
        leaf = name.rpartition(".")[2]
        if name in skip or leaf in skip or (suffixes is not None and leaf not in suffixes):
            continue
        found.append((name, module))
    return found


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put `new` where the submodule `name` (dotted, e.g. "model.layers.0.self_attn.q_proj") is; return the old one."""
    if not name:
        raise ValueError("replace_module needs the dotted name of a submodule, got ''. Fix: to replace the whole "
                         "model, just use the new module.")
    parent_name, _, child = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name)
        old = getattr(parent, child)
    except AttributeError:
        raise KeyError(f"The model has no submodule {name!r}. Fix: pick a name from "
                       f"[n for n, _ in model.named_modules()].") from None
    setattr(parent, child, new)
    return old


@contextlib.contextmanager
def _mode(model: nn.Module, training: bool):
    flags = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for m, was in flags:
            m.training = was


def eval_mode(model: nn.Module):
    """`with eval_mode(model):` runs in eval mode (no dropout), then restores each module's own flag, also after an
    exception (a model left in eval mode after a failed cell would silently train without dropout)."""
    return _mode(model, False)


def train_mode(model: nn.Module):
    """`with train_mode(model):` trains (dropout on), then restores each module's own flag, also after an exception."""
    return _mode(model, True)


def _numel(p: torch.Tensor) -> int:
    n = p.numel()
    if n == 0 and hasattr(p, "ds_numel"):  # DeepSpeed ZeRO-3 placeholder
        n = p.ds_numel
    if p.__class__.__name__ == "Params4bit":  # two 4-bit values per stored byte (PEFT's rule)
        n = n * 2 * p.element_size()
    return n


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) as PEFT's print_trainable_parameters counts them.

    Buffers are not parameters, except where a module says how many parameters its subtree stands for with
    `logical_param_count()` (NF4Linear keeps its 4-bit codes in buffers); trainable parameters inside such a
    subtree still count as trainable.
    """
    roots = [(n, m) for n, m in model.named_modules() if callable(getattr(m, "logical_param_count", None))]
    names = [n for n, _ in roots]
    roots = [(n, m) for n, m in roots if not any(o != n and (o == "" or n.startswith(o + ".")) for o in names)]
    covered = {id(p) for _, m in roots for p in m.parameters()}
    total = sum(int(m.logical_param_count()) for _, m in roots)
    trainable = 0
    for p in model.parameters():
        n = _numel(p)
        total += 0 if id(p) in covered else n
        trainable += n if p.requires_grad else 0
    return trainable, total


def trainable_report(model: nn.Module) -> str:
    """PEFT's print_trainable_parameters line, character for character."""
    t, a = count_parameters(model)
    return f"trainable params: {t:,d} || all params: {a:,d} || trainable%: {100 * t / a:.4f}"
