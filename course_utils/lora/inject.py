"""Putting LoRA layers into a model: target matching as PEFT does it, freezing, switching and merging adapters.

"The linear layers" and swapping a module by name are course_utils.surgery's, the rule every chapter uses.
"""
from __future__ import annotations

import contextlib
import re

import torch.nn as nn

from ..surgery import linear_layers, replace_module
from .adapters import validate
from .layer import LoRALinear

ALL_LINEAR = "all-linear"


def lora_layers(model: nn.Module):
    """(name, LoRALinear) pairs, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def _suffixes(layers) -> list[str]:
    return list(dict.fromkeys(n.rpartition(".")[2] for n, _ in layers))


def match_targets(model: nn.Module, target_modules) -> list[str]:
    """Names of the layers PEFT's LoraConfig(target_modules=...) would adapt, in module order.

    "all-linear": every linear layer but the output head of a transformers model (a plain nn.Module has none);
    a list: names equal to an entry or ending in "." + entry; another string: a regex over the full name.
    """
    if isinstance(target_modules, str) and target_modules.lower() == ALL_LINEAR:
        chosen = [n for n, _ in linear_layers(model)]
        if not chosen:
            raise ValueError("'all-linear' found no Linear layers in this model. Fix: check the model you passed.")
        return chosen
    linears = dict(linear_layers(model, include_head=True))
    inside = tuple(n + "." for n, _ in lora_layers(model))  # no LoRA on lora_A: insides of a wrapper don't count
    names = [n for n, _ in model.named_modules() if n and not n.startswith(inside)]
    if isinstance(target_modules, str):
        chosen = [n for n in names if re.fullmatch(target_modules, n)]
        missing = [] if chosen else [target_modules]
    else:
        targets = list(target_modules or [])
        if not targets or not all(isinstance(t, str) for t in targets):
            raise ValueError(f"target_modules must be a non-empty list of module names or 'all-linear', got "
                             f"{target_modules!r}. Fix: e.g. target_modules=['q_proj', 'v_proj'].")
        hits = {t: {n for n in names if n == t or n.endswith("." + t)} for t in targets}
        missing = [t for t, found in hits.items() if not found]
        chosen = [n for n in names if any(n in found for found in hits.values())]
    if missing:
        raise ValueError(f"target_modules {missing} matched no module. Linear layers in this model (by suffix): "
                         f"{_suffixes(linears.items())}. Fix: use names from that list (a string is read as a regular "
                         "expression over full names; pass a list for suffixes), or 'all-linear'.")
    for n in chosen:
        if n not in linears:
            m = model.get_submodule(n)
            inner = _suffixes((c, x) for c, x in linears.items() if c.startswith(n + "."))
            what = (" (GPT-2 style, weight stored transposed: use PEFT with fan_in_fan_out=True)"
                    if type(m).__name__ == "Conv1D" else "")
            fix = (f"target the Linear layers inside it: {inner}" if inner
                   else f"choose from {_suffixes(linears.items())}")
            raise TypeError(f"target '{n}' is a {type(m).__name__}{what}, not a Linear layer; LoRALinear wraps Linear "
                            f"layers only. Fix: {fix}.")
    return chosen


def add_lora(model: nn.Module, target_modules, r: int = 8, alpha: float = 8, dropout: float = 0.0, init="default",
             use_rslora: bool = False, adapter_name: str = "default") -> nn.Module:
    """Wrap the matching Linear layers in LoRALinear (in place), freeze everything else, activate `adapter_name`."""
    validate(r, alpha, dropout, init)
    names = match_targets(model, target_modules)
    for n, layer in lora_layers(model):  # check everything before changing anything
        if adapter_name in layer.specs:
            raise ValueError(f"adapter '{adapter_name}' already exists (e.g. on '{n}'). Fix: pick a new adapter_name "
                             "for a second adapter, or load_lora_state_dict to replace its weights.")
        if layer.merged:
            raise RuntimeError(f"'{n}' is merged. Fix: unmerge_lora(model) before adding an adapter.")
    for n in names:
        module = model.get_submodule(n)
        if isinstance(module, LoRALinear):
            module.add_adapter(adapter_name, r, alpha, dropout, init, use_rslora)
        else:
            replace_module(model, n, LoRALinear(module, r, alpha, dropout, init, use_rslora, adapter_name))
    model.requires_grad_(False)
    set_adapter(model, adapter_name)
    return model


def set_adapter(model: nn.Module, name: str) -> None:
    """Switch every LoRA layer to adapter `name` (layers without it act as the base): one model, many behaviours."""
    layers = lora_layers(model)
    if not any(name in layer.specs for _, layer in layers):
        known = list(dict.fromkeys(a for _, layer in layers for a in layer.specs))
        raise KeyError(f"No layer has an adapter named '{name}'; adapters present: {known}. Fix: use one of those, "
                       f"or add_lora(..., adapter_name='{name}') first.")
    for _, layer in layers:
        layer.set_adapter(name)


@contextlib.contextmanager
def disable_adapters(model: nn.Module):
    """`with disable_adapters(model):` runs the frozen base model alone."""
    layers = [layer for _, layer in lora_layers(model)]
    if any(layer.merged for layer in layers):
        raise RuntimeError("Adapters are merged into W0, so they cannot be switched off. "
                           "Fix: unmerge_lora(model) first.")
    for layer in layers:
        layer.adapters_disabled = True
    try:
        yield model
    finally:
        for layer in layers:
            layer.adapters_disabled = False


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge the active adapter into W0 in every LoRA layer (all checked first, so a refusal changes nothing)."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("This model has no LoRA layers to merge. Fix: add_lora(model, ...) first.")
    for _, layer in layers:
        if layer.active_adapter in layer.specs:
            layer.check_mergeable()
    for _, layer in layers:
        if layer.active_adapter in layer.specs:
            layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    merged = [layer for _, layer in lora_layers(model) if layer.merged]
    if not merged:
        raise RuntimeError("No LoRA layer is merged, so there is nothing to unmerge. Fix: merge_lora(model) first.")
    for layer in merged:
        layer.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge, then put the plain base layers back: the deployable model has no LoRA code left in it."""
    merge_lora(model)
    for n, layer in lora_layers(model):
        replace_module(model, n, layer.base_layer)
    return model
