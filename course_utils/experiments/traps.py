"""Mistakes in a LoRA setup that users hit: nonzero_B, alpha_not_rescaled, targets_match_nothing, base_not_frozen,
lr_too_high, forgetting.

None of them stops a training run in the usual tools (PEFT and a plain training loop); each shows up only in a
number: a loss that is worse than it should be, a trainable-parameter count that is too large or too small, an
adapter that does not reproduce the model it was trained in. Each experiment records that number (`signals`)
next to the metric.
"""
from __future__ import annotations

import warnings

from ..lora import count_parameters, load_lora_state_dict, lora_state_dict
from . import core
from .core import experiment

ALL_LINEAR_NAMES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# A recipe written for Phi-2, whose attention is q/k/v_proj + dense and whose MLP is fc1/fc2: on a Llama only
# q, k and v match, so the MLP and the output projection silently get no adapter.
PHI2_RECIPE = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]


@experiment(
    "nonzero_B",
    symptom="With B initialised randomly instead of to zero, B·A adds a random matrix to every layer before the "
            "first step: the fine-tuned model ends with a far higher loss on pretraining text than with B = 0, "
            "while both learn the new task.",
    fix="Initialise B = 0 (PEFT's and course_utils' default), so the adapted model starts exactly at the base.",
    metric="held-out pretraining loss after fine-tuning on letters", better="lower", margin=1.0)
def nonzero_B(seed: int):
    near = core.texts("near_train")
    out = {}
    for label, init in (("broken", "nonzero_B"), ("fixed", "default")):
        m = core.lora(core.fresh_model(), "all-linear", r=8, alpha=16, seed=seed, init=init)
        out[f"{label}_loss_at_step_0"] = core.loss(m, "pretrain")
        core.fit(m, near, 10, 5e-3, seed)
        out[label] = core.loss(m, "pretrain")
        out[f"{label}_task_loss"] = core.loss(m, "near")
    signals = {k: v for k, v in out.items() if k not in ("broken", "fixed")}
    signals["base_loss"] = core.loss(core.base_model(), "pretrain")
    return out["broken"], out["fixed"], signals


@experiment(
    "alpha_not_rescaled",
    symptom="A recipe with r=8, alpha=16 (scaling alpha/r = 2) has its rank raised to 64 with alpha kept at 16: the "
            "scaling drops to 0.25, and in the same 12 steps r=64 learns about as much as r=8 did (the extra rank "
            "is wasted); with alpha raised to 128 it learns far more.",
    fix="Scale alpha with r (alpha = 2r keeps alpha/r = 2), or use rsLoRA (alpha/sqrt(r)); then compare ranks.",
    metric="held-out loss on the near domain (letters)", better="lower", margin=0.5)
def alpha_not_rescaled(seed: int):
    near = core.texts("near_train")
    out = {}
    for label, r, alpha in (("broken", 64, 16), ("fixed", 64, 128), ("r8", 8, 16)):
        m = core.lora(core.fresh_model(), "all-linear", r=r, alpha=alpha, seed=seed)
        out[f"{label}_curve"] = core.fit(m, near, 12, 2e-3, seed).losses
        out[label] = core.loss(m, "near")
    signals = {"broken_scaling": 16 / 64, "fixed_scaling": 128 / 64, "broken_curve": out["broken_curve"],
               "fixed_curve": out["fixed_curve"], "r8_alpha16_loss": out["r8"]}
    return out["broken"], out["fixed"], signals


def peft_targets(model, target_modules) -> list[str]:
    """The layer names PEFT's LoraConfig(target_modules=...) adapts on `model` (found by PEFT itself, on a copy)."""
    import copy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices from PEFT's imports and calls, not ours to fix
        from peft import LoraConfig, get_peft_model

        peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=1, target_modules=target_modules))
    prefix = "base_model.model."
    return [n.removeprefix(prefix) for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and
            hasattr(m, "base_layer")]


@experiment(
    "targets_match_nothing",
    symptom="A target_modules list copied from another architecture (Phi-2's q/k/v_proj, dense, fc1, fc2) matches "
            "only q, k and v on a Llama; PEFT silently drops the names that match nothing, so the MLP gets no "
            "adapter and the model learns far less. (course_utils' add_lora refuses the list and names the fix.)",
    fix="Print the linear layer names (or the trainable-parameter report) before training, and target names from "
        "that list, or 'all-linear'.",
    metric="held-out loss on the near domain (letters)", better="lower", margin=0.3)
def targets_match_nothing(seed: int):
    from ..lora import match_targets

    base = core.base_model()
    matched = peft_targets(base, PHI2_RECIPE)
    try:
        match_targets(base, PHI2_RECIPE)
        refusal = None
    except ValueError as exc:
        refusal = str(exc)
    near = core.texts("near_train")
    out = {}
    for label, targets in (("broken", matched), ("fixed", ALL_LINEAR_NAMES)):
        m = core.lora(core.fresh_model(), targets, r=8, seed=seed)
        out[f"{label}_trainable"] = count_parameters(m)[0]
        core.fit(m, near, 15, 5e-3, seed)
        out[label] = core.loss(m, "near")
    signals = {"peft_adapted_layers": matched, "course_utils_refusal": refusal,
               "broken_trainable": out["broken_trainable"], "fixed_trainable": out["fixed_trainable"]}
    return out["broken"], out["fixed"], signals


@experiment(
    "base_not_frozen",
    symptom="Turning gradients back on for the whole model after adding LoRA (model.requires_grad_(True)) trains "
            "every weight: the trainable-parameter report says 100%, the base drifts, and the saved adapter, put "
            "on a fresh copy of the base, no longer reproduces the trained model.",
    fix="Freeze the base (add_lora and PEFT do it; never call requires_grad_(True) on the whole model "
        "afterwards) and check the trainable-parameter report before training.",
    metric="held-out loss on letters of the saved adapter loaded onto a fresh base", better="lower", margin=1.0)
def base_not_frozen(seed: int):
    near = core.texts("near_train")
    out = {}
    for label, unfreeze in (("broken", True), ("fixed", False)):
        m = core.lora(core.fresh_model(), "all-linear", r=8, alpha=16, seed=seed)
        if unfreeze:
            m.requires_grad_(True)
        trainable, total = count_parameters(m)
        out[f"{label}_trainable_percent"] = 100 * trainable / total
        core.fit(m, near, 10, 5e-3, seed)
        out[f"{label}_trained_model_loss"] = core.loss(m, "near")
        reloaded = core.lora(core.fresh_model(), "all-linear", r=8, alpha=16, seed=seed)
        load_lora_state_dict(reloaded, lora_state_dict(m))
        out[label] = core.loss(reloaded, "near")
    signals = {k: v for k, v in out.items() if k not in ("broken", "fixed")}
    return out["broken"], out["fixed"], signals


@experiment(
    "lr_too_high",
    symptom="At learning rate 0.1 (twenty times the usual 5e-3 for LoRA) the held-out loss ends far above the run "
            "at 5e-3 on every seed; the training loss often jumps up on some steps instead of falling steadily, but "
            "not on every seed (on some it falls smoothly and stalls high); gradient clipping keeps it finite.",
    fix="Use a LoRA learning rate around 1e-4 to 1e-2 (5e-3 on this model); if the loss spikes, lower it.",
    metric="held-out loss on the near domain (letters)", better="lower", margin=1.0)
def lr_too_high(seed: int):
    near = core.texts("near_train")
    out = {}
    for label, lr in (("broken", 0.1), ("fixed", 5e-3)):
        m = core.lora(core.fresh_model(), "all-linear", r=8, alpha=16, seed=seed)
        try:
            out[f"{label}_curve"] = core.fit(m, near, 12, lr, seed).losses
            out[label] = core.loss(m, "near")
        except FloatingPointError:  # the training loop stops on a non-finite loss
            out[f"{label}_curve"], out[label] = [], float("inf")
    rises = lambda c: sum(b > a for a, b in zip(c, c[1:]))  # noqa: E731  (steps where the training loss went up)
    signals = {"broken_curve": out["broken_curve"], "fixed_curve": out["fixed_curve"],
               "broken_steps_loss_rose": rises(out["broken_curve"]), "fixed_steps_loss_rose": rises(out["fixed_curve"])}
    return out["broken"], out["fixed"], signals


@experiment(
    "forgetting",
    symptom="After 15 LoRA steps on letters alone, the loss on pretraining text has more than doubled (the model "
            "forgets); mixing pretraining lines into the same batches (replay) keeps it near the base model's, "
            "at a small cost on the new task.",
    fix="Replay: mix some of the original kind of data into the fine-tuning batches, and watch a held-out set of "
        "it while fine-tuning (a lower learning rate also forgets less, but learns the task far more slowly).",
    metric="held-out pretraining loss after fine-tuning on letters", better="lower", margin=0.5)
def forgetting(seed: int):
    near = core.texts("near_train")
    replay = core.texts("pretrain", len(near))  # as many pretraining lines as letters: half of each batch
    out = {}
    for label, items in (("broken", near), ("fixed", near + replay)):
        m = core.lora(core.fresh_model(), "all-linear", r=8, alpha=16, seed=seed)
        core.fit(m, items, 15, 5e-3, seed)
        out[label] = core.loss(m, "pretrain")
        out[f"{label}_task_loss"] = core.loss(m, "near")
    signals = {"base_loss": core.loss(core.base_model(), "pretrain"), "broken_task_loss": out["broken_task_loss"],
               "fixed_task_loss": out["fixed_task_loss"], "base_task_loss": core.loss(core.base_model(), "near")}
    return out["broken"], out["fixed"], signals
