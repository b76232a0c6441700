"""QLoRA traps: merge_into_4bit, halved_param_count, eval_repack.

merge_into_4bit uses the course's own NF4 layers (course_utils.nf4); halved_param_count and eval_repack load the
course model in 4 bits through transformers + bitsandbytes, the way a QLoRA script does.

eval_repack on a CPU without AVX512-BF16: bitsandbytes' eval-mode forward repacks 4-bit weights only on CPUs with
AVX512-BF16 (the flag it reads at construction, `Linear4bit.support_avx512bf16_for_cpu`). On other CPUs an eval
forward leaves the weights alone with or without the guard, so guard on and off train identically there
(`signals["this_cpu_repacks"]` says which case a run was). What the experiment measures on every CPU is the step
the guard takes out: it calls the converter exactly as `Linear4bit.forward` looks it up
(`bitsandbytes.nn.modules._convert_weight_packed_for_cpu`) on every 4-bit layer, guard off and guard on, and counts
the layers whose weight survives (dequantizes to the same values as before).
"""
from __future__ import annotations

import copy
import warnings
from functools import lru_cache

import torch
import torch.nn as nn

from ..lora import lora_layers, merge_lora
from ..surgery import count_parameters, replace_module
from . import core
from .core import experiment


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def dequantize_bases(model: nn.Module) -> nn.Module:
    """Put a float nn.Linear holding the dequantized weight in place of every NF4 base under a LoRA layer (in place)."""
    for name, layer in lora_layers(model):
        base = layer.base_layer
        if callable(getattr(base, "dequantized_weight", None)):
            linear = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
            with torch.no_grad():
                linear.weight.copy_(base.dequantized_weight(torch.float32))
                if base.bias is not None:
                    linear.bias.copy_(base.bias)
            replace_module(model, f"{name}.base_layer", linear.requires_grad_(False))
    return model


@experiment(
    "merge_into_4bit",
    symptom="Merging a trained QLoRA adapter into its 4-bit base re-quantizes W0 + Delta W: the merged model's "
            "logits move away from the model that was trained (by about the size of NF4's rounding error; its "
            "held-out loss barely changes at this scale), while merging into a dequantized float copy of the base "
            "reproduces it to float precision.",
    fix="Keep the adapter unmerged on the 4-bit base, or dequantize the base first and merge into the float "
        "weights (then re-quantize only if you must, knowing the error).",
    metric="relative error of the merged model's logits vs the trained QLoRA model", better="lower", margin=0.01)
def merge_into_4bit(seed: int):
    from ..nf4 import quantize_model

    m = quantize_model(core.fresh_model())
    core.lora(m, "all-linear", r=8, alpha=16, seed=seed)
    core.fit(m, core.texts("near_train"), 10, 5e-3, seed)
    batch = core.held_out("near")
    with torch.no_grad():
        trained = m(**batch).logits
    into_4bit = copy.deepcopy(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NF4Linear warns that merging re-quantizes: this experiment measures it
        merge_lora(into_4bit)
    into_float = merge_lora(dequantize_bases(copy.deepcopy(m)))
    with torch.no_grad():
        broken, fixed = into_4bit(**batch).logits, into_float(**batch).logits
    signals = {"trained_loss": core.loss(m, batch), "merged_4bit_loss": core.loss(into_4bit, batch),
               "merged_float_loss": core.loss(into_float, batch),
               "largest_weight_rounding_error": max(layer.base_layer.last_merge_error
                                                    for _, layer in lora_layers(into_4bit))}
    return _relative_error(broken, trained), _relative_error(fixed, trained), signals


# ------------------------------------------------------------------------------------------------ bitsandbytes

def bnb_4bit_config():
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
                              bnb_4bit_use_double_quant=True)


def load_4bit():
    """The course model loaded in 4 bits by transformers + bitsandbytes (a QLoRA script's first line)."""
    from ..models import load_course_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' notes about quantization on CPU
        return load_course_model(quantization_config=bnb_4bit_config())[0]


@lru_cache(maxsize=1)
def _counts() -> dict:
    model = load_4bit()
    naive = sum(p.numel() for p in model.parameters())
    return {"naive": naive, "peft_rule": count_parameters(model)[1], "transformers": model.num_parameters(),
            "float_model": sum(p.numel() for p in core.base_model().parameters())}


@experiment(
    "halved_param_count",
    symptom="After loading in 4 bits, sum(p.numel() for p in model.parameters()) reports far fewer parameters "
            "than the model has: bitsandbytes stores two 4-bit values per byte, so every quantized weight counts "
            "half (embeddings and the output head stay in float and count in full).",
    fix="Count as PEFT's print_trainable_parameters does (course_utils.surgery.count_parameters): a packed 4-bit "
        "weight stands for twice its stored elements.",
    metric="error of the parameter count after 4-bit loading, % of the true count", better="lower", margin=10.0)
def halved_param_count(seed: int):
    counts = _counts()  # counting is deterministic: the seed changes nothing here
    true = counts["float_model"]
    error = lambda n: 100 * abs(n - true) / true  # noqa: E731
    signals = dict(counts, transformers_error_percent=error(counts["transformers"]))
    return error(counts["naive"]), error(counts["peft_rule"]), signals


def _linear4bit_layers(model):
    return [(n, m) for n, m in model.named_modules()
            if type(m).__name__ == "Linear4bit" and type(m).__module__.startswith("bitsandbytes")]


def _survives_repack(layer) -> tuple[bool, str]:
    """Call the converter the way Linear4bit.forward does on an AVX512-BF16 CPU; does the weight survive?"""
    import bitsandbytes.functional as F
    import bitsandbytes.nn.modules as modules

    weight, state = layer.weight, layer.weight.quant_state
    before = F.dequantize_4bit(weight.data, state)
    try:
        data, state = modules._convert_weight_packed_for_cpu(weight.data, state)
    except RuntimeError as exc:
        return False, f"crash: {exc}"
    weight.data, weight.quant_state = data, state
    try:
        after = F.dequantize_4bit(data, state)
    except Exception as exc:  # a repacked state no longer fits the ordinary dequantize path
        return False, f"unusable: {type(exc).__name__}"
    same = after.shape == before.shape and torch.equal(after, before)
    return same, "intact" if same else f"scrambled (relative error {_relative_error(after.float(), before):.2f})"


def _real_eval_forward_unguarded() -> str:
    """What an actual eval-mode forward does to the 4-bit model on this CPU with the guard off."""
    from ..runtime import bnb_guard

    model = load_4bit()
    ids = core.held_out("near", 4)["input_ids"]
    with bnb_guard.disabled():
        try:
            with torch.no_grad():
                model.eval()(input_ids=ids)
        except RuntimeError as exc:
            return f"crashed: {exc}"
        packed = bnb_guard.packed_layers(model)
    return f"ran; {len(packed)} of {len(_linear4bit_layers(model))} layers repacked"


@experiment(
    "eval_repack",
    symptom="Without the course's guard, bitsandbytes 0.50's first eval-mode forward on an AVX512-BF16 CPU repacks "
            "every 4-bit weight for an inference-only kernel: layers whose width is not a multiple of 64 crash, "
            "the others come out reordered with bf16 scales, so training through them and merging stop working.",
    fix="Import course_utils before the first forward (its bnb_guard turns the repack into a no-op), or call "
        "model.train() before any forward pass.",
    metric="4-bit layers whose weight survives the eval-mode repack step, % of all", better="higher", margin=50.0)
def eval_repack(seed: int):
    from ..runtime import bnb_guard

    outcome = {}
    for label, guarded in (("fixed", True), ("broken", False)):
        model = load_4bit()
        layers = _linear4bit_layers(model)
        if guarded:
            results = [_survives_repack(m) for _, m in layers]
        else:
            with bnb_guard.disabled():
                results = [_survives_repack(m) for _, m in layers]
        outcome[label] = 100 * sum(ok for ok, _ in results) / len(layers)
        outcome[f"{label}_layers"] = {n: how for (n, _), (_, how) in zip(layers, results)}
        kinds = [how.split()[0].rstrip(":") for _, how in results]
        outcome[f"{label}_summary"] = {k: kinds.count(k) for k in sorted(set(kinds))}
    outcome["this_cpu_repacks"] = bool(_linear4bit_layers(model)[0][1].support_avx512bf16_for_cpu)
    outcome["cpu_avx512_bf16"] = bnb_guard.cpu_has_avx512_bf16()
    outcome["real_eval_forward_unguarded"] = _real_eval_forward_unguarded()
    signals = {k: v for k, v in outcome.items() if k not in ("broken", "fixed")}
    return outcome["broken"], outcome["fixed"], signals
