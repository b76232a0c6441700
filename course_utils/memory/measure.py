"""Measuring training memory on a real model: the bytes its tensors hold, and the activations autograd saves.

These measurements are what the calculator (course_utils.memory.calculator) is checked against, component by
component, in notebook 02 and lab01.
"""
from __future__ import annotations

import math
from typing import Mapping

from ..surgery import count_parameters
from .calculator import COMPONENTS, _result


def measure_training_bytes(model, optimizer=None, include_buffers: bool = True) -> dict:
    """Bytes really held by a model's parameters, their .grad tensors and the optimizer's state.

    Call it after at least one optimizer step (Adam allocates m and v lazily). Tensors sharing storage (tied
    embeddings, views) are counted once. 4-bit bitsandbytes weights count their packed bytes plus their
    quantization state (absmax, code, nested constants) via `quant_state_bytes`. Buffers count as weights
    (include_buffers): a quantized layer may keep its 4-bit codes in buffers; a Llama's only buffer, the rotary
    inv_freq, is a few dozen bytes.
    master_weights is 0: a plain fp32 model has no separate copy, and an optimizer that keeps one shows it
    in optimizer_state.
    """
    seen: set = set()
    weights = gradients = state = 0
    params = list(model.parameters())
    for p in params:
        weights += _storage_bytes(p, seen)
        weights += quant_state_bytes(getattr(p, "quant_state", None), seen)
    if include_buffers:
        for b in model.buffers():
            weights += _storage_bytes(b, seen)
    for p in params:
        if p.grad is not None:
            gradients += _storage_bytes(p.grad, seen)
    if optimizer is not None:
        for per_param in optimizer.state.values():
            for value in per_param.values():
                if hasattr(value, "untyped_storage"):
                    state += _storage_bytes(value, seen)
    return _result(weights=weights, gradients=gradients, optimizer_state=state, master_weights=0)


def quant_state_bytes(quant_state, seen: set | None = None) -> int:
    """Bytes of a bitsandbytes QuantState's constants (absmax, code, offset and the nested state2).

    The hook for QLoRA measurement: course_utils.nf4 can pass its own state objects as long as they expose
    the same attribute names.
    """
    if quant_state is None:
        return 0
    seen = set() if seen is None else seen
    total = 0
    for name in ("absmax", "code", "offset"):
        t = getattr(quant_state, name, None)
        if hasattr(t, "untyped_storage"):
            total += _storage_bytes(t, seen)
    return total + quant_state_bytes(getattr(quant_state, "state2", None), seen)


def count_params(model) -> dict:
    """{"trainable": n, "frozen": n}: what the predictors need, counted by course_utils.surgery.count_parameters
    (a 4-bit weight counts as the parameters it stands for, whether bitsandbytes or NF4Linear stores it)."""
    trainable, total = count_parameters(model)
    return {"trainable": trainable, "frozen": total - trainable}


def compare(predicted: Mapping, measured: Mapping) -> dict:
    """Relative error of each component, (measured - predicted) / predicted (0 where both are 0)."""
    out = {}
    for key in (*COMPONENTS, "total"):
        p, m = predicted[key], measured[key]
        out[key] = 0.0 if p == m else ((m - p) / p if p else math.inf)
    return out


def explain_mismatch(got: Mapping, expected: Mapping, tol_bytes: float = 1.0, n_params=None) -> str:
    """'' when every component agrees within tol_bytes, else one line per wrong component (for test messages)."""
    if not isinstance(got, Mapping):
        return f"expected a dict with keys {(*COMPONENTS, 'total')}, got {type(got).__name__}"
    missing = [k for k in (*COMPONENTS, "total") if k not in got]
    if missing:
        return f"your dict lacks the key(s) {missing}: return all of {(*COMPONENTS, 'total')}"
    lines = []
    for key in (*COMPONENTS, "total"):
        g, e = got[key], expected[key]
        if abs(g - e) > max(tol_bytes, 1e-9 * abs(e)):
            per = f" ({g / n_params:g} vs {e / n_params:g} bytes/param)" if n_params else ""
            lines.append(f"{key}: got {g:,.0f}, expected {e:,.0f}{per}")
    return "; ".join(lines)


def _storage_bytes(t, seen: set) -> int:
    storage = t.untyped_storage()
    key = (storage.data_ptr(), storage.nbytes()) if storage.data_ptr() else id(storage)
    if key in seen:
        return 0
    seen.add(key)
    return storage.nbytes()


def saved_activation_bytes(model, batch) -> int:
    """Measured bytes of the tensors autograd keeps for backward (weights excluded): one step's activations."""
    import torch

    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def keep(t):
        if t.untyped_storage().data_ptr() not in weights:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        model(**batch)
    return sum(saved.values())
