"""Saving and loading adapters alone: the few MB that make "one base model, many behaviours" practical."""
from __future__ import annotations

import json
import os
from dataclasses import asdict

import torch
import torch.nn as nn

from .inject import add_lora, lora_layers, set_adapter
from .layer import LoRALinear


def _adapter_of(model: nn.Module, adapter_name: str | None) -> tuple[str, list[tuple[str, LoRALinear]]]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError("This model has no LoRA layers. Fix: add_lora(model, ...) first.")
    name = adapter_name or layers[0][1].active_adapter
    with_it = [(n, layer) for n, layer in layers if name in layer.specs]
    if not with_it:
        raise KeyError(f"No layer has an adapter named '{name}'. Fix: use one of "
                       f"{list(dict.fromkeys(a for _, layer in layers for a in layer.specs))}.")
    return name, with_it


def lora_state_dict(model: nn.Module, adapter_name: str | None = None) -> dict[str, torch.Tensor]:
    """Only the adapter: {'<module>.lora_A.weight': A, '<module>.lora_B.weight': B} (PEFT's file keys, no prefix)."""
    name, layers = _adapter_of(model, adapter_name)
    sd = {}
    for n, layer in layers:
        sd[f"{n}.lora_A.weight"] = layer.lora_A[name].weight.detach()
        sd[f"{n}.lora_B.weight"] = layer.lora_B[name].weight.detach()
    return sd


@torch.no_grad()
def load_lora_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], adapter_name: str | None = None) -> nn.Module:
    name, layers = _adapter_of(model, adapter_name)
    expected = {f"{n}.lora_{ab}.weight": (layer, ab) for n, layer in layers for ab in "AB"}
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise KeyError(f"Adapter keys do not match this model: missing {missing[:3]}, unexpected {unexpected[:3]} "
                       f"({len(missing)} / {len(unexpected)} in all). Fix: add_lora with the same target_modules "
                       "as the saved adapter.")
    params = {key: getattr(layer, f"lora_{ab}")[name].weight for key, (layer, ab) in expected.items()}
    for key, (layer, _) in expected.items():  # check everything before changing anything
        if layer.merged:
            raise RuntimeError("Cannot load into a merged model (W0 holds the old Delta W). "
                               "Fix: unmerge_lora(model) first.")
        if params[key].shape != sd[key].shape:
            raise ValueError(f"{key}: saved shape {tuple(sd[key].shape)} != this adapter's "
                             f"{tuple(params[key].shape)}. Fix: add_lora with the saved rank (r={min(sd[key].shape)}).")
    for key, param in params.items():
        param.copy_(sd[key])
    return model


def save_adapter(model: nn.Module, path: str | os.PathLike, adapter_name: str | None = None) -> int:
    """Write the adapter (and its r/alpha/targets) to a .safetensors file; returns the file size in bytes."""
    from safetensors.torch import save_file

    name, layers = _adapter_of(model, adapter_name)
    meta = {k: json.dumps(v) for k, v in asdict(layers[0][1].specs[name]).items()}
    meta["target_modules"] = json.dumps([n for n, _ in layers])
    save_file({k: v.contiguous() for k, v in lora_state_dict(model, name).items()}, str(path), metadata=meta)
    return os.path.getsize(path)


def load_adapter(model: nn.Module, path: str | os.PathLike, adapter_name: str = "default") -> nn.Module:
    """Load a save_adapter file as `adapter_name` (added first if the model lacks it) and activate it.

    Unlike PEFT's load_adapter, the loaded adapter becomes the active one: loading is for using.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        sd = {k: f.get_tensor(k) for k in f.keys()}
    if not {"r", "alpha", "target_modules"} <= set(meta):
        raise ValueError(f"{path} was not written by save_adapter (no r/alpha/target_modules metadata). Fix: "
                         "add_lora(model, ...) with its settings, then load_lora_state_dict(model, tensors).")
    if not any(adapter_name in layer.specs for _, layer in lora_layers(model)):
        add_lora(model, meta["target_modules"], r=meta["r"], alpha=meta["alpha"], dropout=meta.get("dropout", 0.0),
                 use_rslora=meta.get("use_rslora", False), adapter_name=adapter_name)
    load_lora_state_dict(model, sd, adapter_name)
    set_adapter(model, adapter_name)
    return model


def adapter_size_bytes(model_or_path, adapter_name: str | None = None) -> int:
    """Bytes of an adapter: a saved file's size, or the raw tensor bytes of a model's adapter."""
    if isinstance(model_or_path, (str, os.PathLike)):
        return os.path.getsize(model_or_path)
    return sum(t.numel() * t.element_size() for t in lora_state_dict(model_or_path, adapter_name).values())
