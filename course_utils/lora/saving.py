"""Saving and loading adapters alone: the few MB that make "one base model, many behaviours" practical.

    lora_state_dict / load_lora_state_dict   the tensors, keyed as in a PEFT file minus its 'base_model.model.'
    save_adapter / load_adapter              a directory in PEFT's format (peft_format.py), or one .safetensors file
    adapter_size_bytes                       what an adapter costs on disk or in memory
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn

from ..surgery import is_linear_like, replace_module
from . import peft_format
from .adapters import validate
from .inject import lora_layers, set_adapter
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
    """Copy lora_state_dict's tensors into the model's adapter (which must have the same layers and ranks)."""
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
    """Write one adapter; returns the bytes written.

    A directory (the usual case): PEFT's own format, adapter_config.json + adapter_model.safetensors, which
    `PeftModel.from_pretrained(base_model, path)` loads. A path ending in .safetensors: one file, the tensors plus the
    settings in its metadata (course_utils' compact format).
    """
    name, layers = _adapter_of(model, adapter_name)
    sd = lora_state_dict(model, name)
    if str(path).endswith(".safetensors"):
        return _save_single_file(path, sd, layers[0][1].specs[name], [n for n, _ in layers])
    if Path(path).is_file():
        raise FileExistsError(f"{path} is a file; PEFT's format is a directory. Fix: pass a folder name, or a name "
                              "ending in .safetensors for the single-file format.")
    adapted = [n for n, _ in layers]
    inside = tuple(n + "." for n, _ in lora_layers(model))  # the names PEFT sees: the base model's own
    names = [n for n, _ in model.named_modules() if n and not n.startswith(inside)]
    cfg = peft_format.config(peft_format.minimal_targets(adapted, names), {n: lay.specs[name] for n, lay in layers},
                             base_model_class=type(model), name_or_path=model.__dict__.get("name_or_path"))
    return peft_format.write(path, cfg, sd)


def load_adapter(model: nn.Module, path: str | os.PathLike, adapter_name: str = "default") -> nn.Module:
    """Load an adapter that save_adapter or PEFT's save_pretrained wrote, as `adapter_name`, and activate it.

    The adapted layers, and each one's rank, come from the saved tensors; alpha, rsLoRA, dropout and PEFT's per-layer
    rank_pattern / alpha_pattern from the config. Loading into an adapter that exists replaces its weights (the
    settings must agree). Unlike PEFT's load_adapter, the loaded adapter becomes the active one: loading is for using.
    Everything is checked before the model changes, so a refused file leaves it as it was.
    """
    if str(path).endswith(".safetensors") and Path(path).is_file():
        layers, alphas, dropout, use_rslora = _read_single_file(path)
    else:
        cfg, layers = peft_format.read(path)
        alphas = peft_format.alphas(cfg, {n: ab["A"].shape[0] for n, ab in layers.items()}, path)
        dropout, use_rslora = cfg["lora_dropout"], cfg["use_rslora"]
    modules = _targets(model, layers, path)
    for n, ab in layers.items():
        validate(ab["A"].shape[0], alphas[n], dropout, "default")
    if any(adapter_name in layer.specs for _, layer in lora_layers(model)):
        _check_same_adapter(model, adapter_name, {n: (ab["A"].shape[0], alphas[n], use_rslora)
                                                  for n, ab in layers.items()}, path)
    else:
        for n, module in modules.items():
            r = layers[n]["A"].shape[0]
            if isinstance(module, LoRALinear):
                module.add_adapter(adapter_name, r, alphas[n], dropout, use_rslora=use_rslora)
            else:
                replace_module(model, n, LoRALinear(module, r, alphas[n], dropout, use_rslora=use_rslora,
                                                    adapter_name=adapter_name))
        model.requires_grad_(False)
    load_lora_state_dict(model, {f"{n}.lora_{ab}.weight": t[ab] for n, t in layers.items() for ab in "AB"},
                         adapter_name)
    set_adapter(model, adapter_name)
    return model


def _targets(model: nn.Module, layers: dict[str, dict], path) -> dict[str, nn.Module]:
    """{module name: module} for every saved layer, after checking it exists here, unmerged, with matching shapes."""
    modules = {}
    for n, ab in layers.items():
        try:
            module = model.get_submodule(n)
        except AttributeError:
            raise KeyError(f"{path} adapts '{n}', which this model does not have. Fix: load it into the base model it "
                           "was trained on (same architecture and module names).") from None
        A, B = ab["A"], ab["B"]
        if not (isinstance(module, LoRALinear) or is_linear_like(module)):
            raise TypeError(f"{path} adapts '{n}', a {type(module).__name__} here, not a Linear layer. Fix: load it "
                            "into the base model it was trained on.")
        if isinstance(module, LoRALinear) and module.merged:
            raise RuntimeError(f"'{n}' is merged (W0 holds an adapter). Fix: unmerge_lora(model) before loading.")
        want = (module.in_features, module.out_features)
        if A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1] or (A.shape[1], B.shape[0]) != want:
            raise ValueError(f"{path}: '{n}' has A {tuple(A.shape)} and B {tuple(B.shape)}, which do not fit a "
                             f"{want[0]} -> {want[1]} layer (A is r x in, B is out x r). Fix: load it into the base "
                             "model it was trained on.")
        modules[n] = module
    return modules


def _check_same_adapter(model, adapter_name, want: dict[str, tuple], path) -> None:
    have = {n: (layer.specs[adapter_name].r, layer.specs[adapter_name].alpha, layer.specs[adapter_name].use_rslora)
            for n, layer in lora_layers(model) if adapter_name in layer.specs}
    if have != want:
        raise ValueError(f"Adapter '{adapter_name}' exists with other layers or settings than {path} "
                         f"(e.g. {next(iter(set(have.items()) ^ set(want.items())))} as (layer, (r, alpha, rsLoRA))). "
                         f"Fix: load it under a new name: load_adapter(model, path, adapter_name='{adapter_name}_2').")


def _save_single_file(path, sd: dict, spec, targets: list[str]) -> int:
    from safetensors.torch import save_file

    meta = {k: json.dumps(v) for k, v in asdict(spec).items()}
    meta["target_modules"] = json.dumps(targets)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=meta)
    return os.path.getsize(path)


def _read_single_file(path) -> tuple[dict[str, dict], dict[str, float], float, bool]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        sd = {k: f.get_tensor(k) for k in f.keys()}
    if not {"r", "alpha", "target_modules"} <= set(meta):
        raise ValueError(f"{path} was not written by save_adapter (no r/alpha/target_modules metadata). Fix: "
                         "add_lora(model, ...) with its settings, then load_lora_state_dict(model, tensors).")
    layers = peft_format.lora_pairs(sd, path)
    return layers, dict.fromkeys(layers, meta["alpha"]), meta.get("dropout", 0.0), meta.get("use_rslora", False)


def adapter_size_bytes(model_or_path, adapter_name: str | None = None) -> int:
    """Bytes of an adapter: a saved directory's config + weights, a saved file's size, or a model's raw tensors."""
    if isinstance(model_or_path, (str, os.PathLike)):
        return peft_format.size(model_or_path) if Path(model_or_path).is_dir() else os.path.getsize(model_or_path)
    return sum(t.numel() * t.element_size() for t in lora_state_dict(model_or_path, adapter_name).values())
