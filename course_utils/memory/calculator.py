"""Training-memory accounting: how many bytes full fine-tuning, LoRA and QLoRA need before activations.

Every predictor returns the same five components, so a prediction and a measurement on a real model can be
compared line by line:

    weights          every stored weight: the frozen base (bf16, fp32 or NF4) plus the trainable ones
    gradients        one gradient per *trainable* parameter, in the dtype of that parameter
    optimizer_state  Adam keeps two moments (m and v) per trainable parameter, in the dtype of the weights it
                     updates: fp32 (8 bytes), because mixed precision updates the fp32 master copy
    master_weights   mixed precision keeps an fp32 copy of 16-bit trainable weights for the update
    total            the sum

Full fine-tuning with mixed-precision Adam costs 2 + 2 + 8 + 4 = 16 bytes per parameter (ZeRO, arXiv 1910.02054):
a 7B model needs ~104 GiB (112 GB) before a single activation -- far above the "25-40 GB" rule of thumb.
LoRA and QLoRA pay gradients and Adam state only for the adapters; the frozen base costs 2 B/param (bf16)
or ~0.516 B/param (NF4 with double quantization, 4.127 bits).

Sizes are in bytes; `model_memory_gb` converts to GiB (1024**3), which is how GPU memory is reported.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable, Mapping, NamedTuple

COMPONENTS = ("weights", "gradients", "optimizer_state", "master_weights")

# Bytes per stored number. NF4 is 4 bits plus its quantization constants; see nf4_bits_per_param.
BYTES = {
    "fp32": 4,
    "fp16": 2,
    "bf16": 2,
    "int8": 1,
}

_DTYPE_ALIASES = {
    "float32": "fp32", "float": "fp32", "torch.float32": "fp32",
    "float16": "fp16", "half": "fp16", "torch.float16": "fp16",
    "bfloat16": "bf16", "torch.bfloat16": "bf16",
    "uint8": "int8", "torch.int8": "int8", "torch.uint8": "int8",
}

# Bytes of optimizer state per trainable parameter.
OPTIMIZER_BYTES = {
    "adam": 8,          # m and v, fp32 like the master weights they update
    "adamw": 8,         # same state as Adam; only the weight-decay rule differs
    "adam8bit": 2,      # bitsandbytes 8-bit Adam: m and v as int8 (block constants ignored)
    "sgd_momentum": 4,  # one fp32 momentum buffer
    "sgd": 0,           # plain SGD keeps nothing between steps
}

GIB = 1024**3
GB = 1000**3


def nf4_bits_per_param(blocksize: int = 64, double_quant: bool = True) -> float:
    """Bits per weight of a 4-bit (NF4/FP4) tensor, constants included: 4.5 plain, 4.127 with double quantization.

    One formula for the whole course: it is course_utils.nf4's, whose quantizer the storage is measured from.
    """
    from ..nf4 import bits_per_parameter

    return bits_per_parameter(blocksize, double_quant)


def bytes_per_param(dtype, blocksize: int = 64, double_quant: bool = True) -> float:
    """Bytes per stored number for a dtype name ("bf16", "fp32", ..., "nf4", "fp4") or a torch dtype."""
    key = _dtype_key(dtype)
    if key in ("nf4", "fp4"):
        return nf4_bits_per_param(blocksize, double_quant) / 8
    return BYTES[key]


BYTES["nf4"] = nf4_bits_per_param() / 8  # 4.127 bits = 0.515875 B with the QLoRA defaults
BYTES["fp4"] = BYTES["nf4"]
_bytes_per_param = bytes_per_param  # model_memory_gb's argument has the same name and shadows it


def full_finetune_bytes(n_params, weight_dtype="bf16", optimizer: str = "adam", master_weights: bool = True,
                        grad_dtype=None) -> dict:
    """Full fine-tuning: every parameter has a gradient and optimizer state.

    master_weights=True keeps an fp32 copy when the weights are 16-bit (mixed precision); fp32 weights are their
    own master copy. grad_dtype defaults to the weight dtype; HF's "18 bytes/param" variant is
    full_finetune_bytes(n, "fp16", grad_dtype="fp32").
    """
    n = _count(n_params, "n_params")
    w = bytes_per_param(weight_dtype)
    g = bytes_per_param(grad_dtype if grad_dtype is not None else weight_dtype)
    master = 4 if (master_weights and _dtype_key(weight_dtype) != "fp32") else 0
    return _result(weights=n * w, gradients=n * g, optimizer_state=n * _optimizer_bytes(optimizer),
                   master_weights=n * master)


def lora_bytes(n_base, n_lora, base_dtype="bf16", adapter_dtype="fp32", optimizer: str = "adam",
               master_weights: bool = False) -> dict:
    """LoRA: the frozen base is only stored; gradients and optimizer state exist for the adapters alone.

    n_base counts every frozen parameter (embeddings and norms included). Adapters are usually kept in fp32
    (PEFT does), so they need no master copy; master_weights=True adds one only for 16-bit adapters.
    """
    base = _count(n_base, "n_base")
    n = _count(n_lora, "n_lora")
    a = bytes_per_param(adapter_dtype)
    master = 4 if (master_weights and _dtype_key(adapter_dtype) != "fp32") else 0
    return _result(weights=base * bytes_per_param(base_dtype) + n * a, gradients=n * a,
                   optimizer_state=n * _optimizer_bytes(optimizer), master_weights=n * master)


def qlora_bytes(n_base_quantized, n_base_other, n_lora, blocksize: int = 64, double_quant: bool = True,
                other_dtype="bf16", adapter_dtype="fp32", optimizer: str = "adam") -> dict:
    """QLoRA: LoRA on a base whose linear layers are stored in NF4.

    n_base_quantized: weights of the quantized linear layers (4.127 bits each with the defaults).
    n_base_other: what bitsandbytes leaves unquantized -- embeddings, norms, lm_head -- stored in other_dtype.
    """
    q = _count(n_base_quantized, "n_base_quantized")
    other = _count(n_base_other, "n_base_other")
    n = _count(n_lora, "n_lora")
    a = bytes_per_param(adapter_dtype)
    frozen = q * nf4_bits_per_param(blocksize, double_quant) / 8 + other * bytes_per_param(other_dtype)
    return _result(weights=frozen + n * a, gradients=n * a, optimizer_state=n * _optimizer_bytes(optimizer),
                   master_weights=0)


def lora_param_count(shapes_or_model, r: int, target_modules: Iterable[str] | None = ("q_proj", "v_proj")) -> int:
    """Trainable parameters LoRA adds: r * (in_features + out_features) per adapted matrix.

    shapes_or_model: a torch model (its nn.Linear layers whose name ends in one of target_modules are counted),
    a mapping name -> (out_features, in_features) filtered the same way, or a plain list of (out, in) shapes
    (all counted). target_modules=None counts every linear layer except lm_head.
    """
    if not isinstance(r, numbers.Integral) or r <= 0:
        raise ValueError(f"r must be a positive integer, got {r!r}: typical ranks are 4, 8, 16, 64")
    targets = None if target_modules is None else tuple(target_modules)
    if isinstance(target_modules, str):
        raise TypeError(f"target_modules must be a list of names, got the string {target_modules!r}: "
                        f"write [{target_modules!r}]")
    shapes = _linear_shapes(shapes_or_model)
    if isinstance(shapes, list):
        picked = shapes
    else:
        picked = [s for name, s in shapes.items() if _is_target(name, targets)]
        if not picked:
            raise ValueError(f"target_modules {targets} match none of the linear layers "
                             f"(e.g. {list(shapes)[:3]}): use names such as 'q_proj', 'v_proj'")
    total = 0
    for shape in picked:
        out_f, in_f = _shape(shape)
        total += r * (in_f + out_f)
    return total


def model_memory_gb(params, bytes_per_param) -> float:
    """The classic back-of-the-envelope helper: memory of `params` numbers at `bytes_per_param` each, in GiB (1024**3 bytes)."""
    n = _count(params, "params")
    if isinstance(bytes_per_param, str):
        bytes_per_param = _bytes_per_param(bytes_per_param)
    if bytes_per_param < 0:
        raise ValueError(f"bytes_per_param must be >= 0, got {bytes_per_param}: fp32 is 4, bf16 2, int8 1")
    return n * bytes_per_param / GIB


class Fit(NamedTuple):
    fits: bool
    needed_gib: float
    gpu_gib: float
    method: str
    breakdown: dict


def fits_on_gpu(model_params, gpu_gb, method: str = "full", *, n_lora=None, lora_fraction: float = 0.01,
                unquantized_fraction: float = 0.04, activation_bytes=0, **kwargs) -> Fit:
    """Does training state (weights + gradients + optimizer + master copies + given activations) fit?

    method: "full" (mixed-precision Adam, 16 B/param), "lora" (bf16 base) or "qlora" (NF4 + DQ base).
    n_lora defaults to lora_fraction of the model (0.1-1% is typical); for QLoRA, unquantized_fraction of the
    base stays in bf16 (embeddings, lm_head, norms: ~4% of a Llama-7B). gpu_gb is in GiB, as nvidia-smi reports.
    Activations are not estimated: pass activation_bytes if you have measured them.
    """
    n = _count(model_params, "model_params")
    if gpu_gb is None or gpu_gb <= 0:
        raise ValueError(f"gpu_gb must be a positive number of GiB, got {gpu_gb!r}: e.g. 16 for a 16 GB card")
    n_ad = _count(n_lora, "n_lora") if n_lora is not None else int(round(n * lora_fraction))
    if method == "full":
        parts = full_finetune_bytes(n, **kwargs)
    elif method == "lora":
        parts = lora_bytes(n, n_ad, **kwargs)
    elif method == "qlora":
        other = int(round(n * unquantized_fraction))
        parts = qlora_bytes(n - other, other, n_ad, **kwargs)
    else:
        raise ValueError(f"unknown method {method!r}: use 'full', 'lora' or 'qlora'")
    needed = (parts["total"] + _count(activation_bytes, "activation_bytes")) / GIB
    return Fit(needed <= gpu_gb, needed, float(gpu_gb), method, parts)


def activation_estimate_bytes(layers, hidden, tokens, numbers_per_hidden: float = 17.0, bytes_per_number: int = 2) -> float:
    """Activations of one training step: layers x tokens x hidden x numbers stored per hidden unit x bytes.

    17 numbers per hidden unit per token is Korthikanti et al.'s GPT-block count (34 bytes at 16 bits, attention
    scores not stored); notebook 02 measures the Llama block's own number and passes it in.
    """
    return layers * hidden * tokens * numbers_per_hidden * bytes_per_number


# ---------------------------------------------------------------------------------------------- helpers

def _dtype_key(dtype) -> str:
    name = str(dtype).lower() if dtype is not None else "none"
    key = _DTYPE_ALIASES.get(name, name)
    if key not in BYTES:
        known = ", ".join(BYTES)
        raise ValueError(f"unknown dtype {dtype!r}: use one of {known} (or a torch dtype such as torch.bfloat16)")
    return key


def _optimizer_bytes(optimizer: str) -> int:
    key = str(optimizer).lower()
    if key not in OPTIMIZER_BYTES:
        raise ValueError(f"unknown optimizer {optimizer!r}: use one of {', '.join(OPTIMIZER_BYTES)}")
    return OPTIMIZER_BYTES[key]


def _count(n, what: str) -> int:
    """Parameter counts arrive as 7e9 or 7_000_000_000; both are fine, negatives and fractions are not."""
    if isinstance(n, bool) or not isinstance(n, numbers.Real):
        raise TypeError(f"{what} must be a number of parameters, got {type(n).__name__} {n!r}: write 7e9, not '7B'")
    if n < 0 or math.isnan(n) or math.isinf(n):
        raise ValueError(f"{what} must be a finite count >= 0, got {n!r}: pass e.g. 7e9 for a 7B model")
    if n != int(n):
        raise ValueError(f"{what} must be a whole number of parameters, got {n!r}: round it first")
    return int(n)


def _result(**parts) -> dict:
    out = {k: int(round(parts[k])) for k in COMPONENTS}
    out["total"] = sum(out.values())
    return out


def _linear_shapes(obj):
    """A model -> {name: (out, in)} of its linear layers (lm_head included); mappings and lists pass through."""
    if hasattr(obj, "named_modules"):
        from ..surgery import linear_layers

        return {name: (m.out_features, m.in_features) for name, m in linear_layers(obj, include_head=True)}
    if isinstance(obj, Mapping):
        return dict(obj)
    return list(obj)


def _is_target(name: str, targets) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    if targets is None:
        return leaf != "lm_head"
    return leaf in targets


def _shape(shape) -> tuple[int, int]:
    try:
        out_f, in_f = (int(x) for x in shape)
    except (TypeError, ValueError):
        raise ValueError(f"each shape must be (out_features, in_features), got {shape!r}") from None
    if out_f <= 0 or in_f <= 0:
        raise ValueError(f"shape dimensions must be positive, got {shape!r}")
    return out_f, in_f
