"""Putting LoRA layers into a model: target matching as PEFT does it, freezing, switching and merging adapters."""
from __future__ import annotations

import contextlib
import re

import torch.nn as nn

from .layer import ALL_LINEAR, LoRALinear, _validate, is_linear_like


def lora_layers(model: nn.Module):
    """(name, LoRALinear) pairs, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def _output_head_name(model: nn.Module) -> str | None:
    try:
        from transformers import PreTrainedModel
    except ImportError:
        return None
    if not isinstance(model, PreTrainedModel) or model.get_output_embeddings() is None:
        return None  # on a plain nn.Module the head IS targeted, as in PEFT
    head = model.get_output_embeddings()
    return next((n for n, m in model.named_modules() if m is head), None)


def _candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every named module except the insides of existing LoRALinear layers (no LoRA on lora_A)."""
    wrapped = [n + "." for n, _ in lora_layers(model)]
    return [(n, m) for n, m in model.named_modules() if n and not any(n.startswith(w) for w in wrapped)]


def _linear_suffixes(modules) -> list[str]:
    names = (n.rsplit(".", 1)[-1] for n, m in modules if is_linear_like(m) or isinstance(m, LoRALinear))
    return list(dict.fromkeys(names))


def _match_targets(model: nn.Module, target_modules) -> list[str]:
    cands = _candidates(model)
    available = _linear_suffixes(cands)
    if isinstance(target_modules, str) and target_modules.lower() == ALL_LINEAR:
        head = _output_head_name(model)
        chosen = [n for n, m in cands if (is_linear_like(m) or isinstance(m, LoRALinear)) and n != head]
        if not chosen:
            raise ValueError("'all-linear' found no Linear layers in this model. Fix: check the model you passed.")
        return chosen
    if isinstance(target_modules, str):  # PEFT: a single string is a regex matched against the full module name
        chosen = [n for n, _ in cands if re.fullmatch(target_modules, n)]
        missing = [] if chosen else [target_modules]
    else:
        targets = list(target_modules or [])
        if not targets or not all(isinstance(t, str) for t in targets):
            raise ValueError(f"target_modules must be a non-empty list of module names or 'all-linear', got "
                             f"{target_modules!r}. Fix: e.g. target_modules=['q_proj', 'v_proj'].")
        hits = {t: [n for n, _ in cands if n == t or n.endswith("." + t)] for t in targets}
        missing = [t for t, found in hits.items() if not found]
        chosen = [n for n, _ in cands if any(n in found for found in hits.values())]
    if missing:
        raise ValueError(f"target_modules {missing} matched no module. Linear layers in this model (by suffix): "
                         f"{available}. Fix: use names from that list (a string is read as a regular expression "
                         "over full names; pass a list for suffixes), or 'all-linear'.")
    for n in chosen:
        m = model.get_submodule(n)
        if not (is_linear_like(m) or isinstance(m, LoRALinear)):
            inner = _linear_suffixes((c, mm) for c, mm in cands if c.startswith(n + "."))
            what = (" (GPT-2 style, weight stored transposed: use PEFT with fan_in_fan_out=True)"
                    if type(m).__name__ == "Conv1D" else "")
            fix = f"target the Linear layers inside it: {inner}" if inner else f"choose from {available}"
            raise TypeError(f"target '{n}' is a {type(m).__name__}{what}, not a Linear layer; LoRALinear wraps Linear "
                            f"layers only. Fix: {fix}.")
    return chosen


def add_lora(model: nn.Module, target_modules, r: int = 8, alpha: float = 8, dropout: float = 0.0, init="default",
             use_rslora: bool = False, adapter_name: str = "default") -> nn.Module:
    """Wrap the matching Linear layers in LoRALinear (in place), freeze everything else, activate `adapter_name`."""
    _validate(r, alpha, dropout, init)
    names = _match_targets(model, target_modules)
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
            parent, _, child = n.rpartition(".")
            setattr(model.get_submodule(parent), child,
                    LoRALinear(module, r, alpha, dropout, init, use_rslora, adapter_name))
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
        parent, _, child = n.rpartition(".")
        setattr(model.get_submodule(parent), child, layer.base_layer)
    return model
