"""The common failure table ("LoRA struggles when ..."), measured: domain_shift, prior_resists, tiny_dataset,
attention_only.

    | situation                  | the claimed symptom   | the claimed fix            | experiment      |
    | large domain shift         | underfitting          | increase rank or pretrain  | domain_shift    |
    | contradicting a strong prior | model resists     | higher rank + all layers   | prior_resists   |
    | tiny dataset               | overfitting           | increase dropout           | tiny_dataset    |
    | attention-only LoRA        | weak learning         | include MLP layers         | attention_only  |

Each runs LoRA on the course model for a few dozen steps. Where the course model shows something other than the
claim, the experiment's `symptom` says what it does show (tiny_dataset: dropout is not the fix here).
"""
from __future__ import annotations

import torch

from ..training import choice_accuracy, eval_loss, train
from . import core
from .core import experiment

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
# Measured on the course model: rank 1 catches up with rank 32 on chords with more steps (gain 0.49-0.55 at 10
# steps, 0.30-0.32 at 12, 0.05-0.22 at 16, seeds 0-2), so 10 steps is where rank is what limits the fit.
DOMAIN_SHIFT_STEPS = 10


@experiment(
    "domain_shift",
    symptom="On chord notation the model never saw (a large domain shift), LoRA at rank 1 underfits: after 10 steps "
            "its held-out loss stays well above what rank 32 reaches, and continued pretraining (training every "
            "weight on the new text) gets far lower still.",
    fix="Raise the rank (r=32 here); for a really new domain, continue pretraining on its text first.",
    metric="held-out loss on the far domain (chords)", better="lower", margin=0.3)
def domain_shift(seed: int):
    far = core.texts("far_train")
    runs = {}
    for r in (1, 32):
        m = core.lora(core.fresh_model(), "all-linear", r=r, seed=seed)
        curve = core.fit(m, far, DOMAIN_SHIFT_STEPS, 1e-2, seed).losses
        runs[r] = (core.loss(m, "far"), curve)
    full = core.fresh_model().requires_grad_(True)  # continued pretraining: every weight trains on the new text
    core.fit(full, far, DOMAIN_SHIFT_STEPS, 2e-3, seed, batch_size=4)
    signals = {"base_loss": core.loss(core.base_model(), "far"), "continued_pretraining_loss": core.loss(full, "far"),
               "train_curve_r1": runs[1][1], "train_curve_r32": runs[32][1]}
    return runs[1][0], runs[32][0], signals


@experiment(
    "prior_resists",
    symptom="The base model was trained hard on 'the sky is blue'. A rank-2 adapter on the attention layers only "
            "barely overrides it: after 20 steps on the 8 contradicting answers their loss stays far above what "
            "rank 16 on every linear layer reaches in the same steps.",
    fix="Higher rank and adapters on every linear layer, the MLP included.",
    metric="loss on the 8 contradicting answers (trained on)", better="lower", margin=0.3)
def prior_resists(seed: int):
    from ..world import COLORS

    override = core.pairs("override")
    batch = core.encode(override)
    prompts, answers = [p for p, _ in override], [a for _, a in override]
    out = {}
    for label, targets, r in (("broken", ATTENTION, 2), ("fixed", "all-linear", 16)):
        m = core.lora(core.fresh_model(), targets, r=r, seed=seed)
        core.fit(m, override, 20, 3e-3, seed)
        out[label] = eval_loss(m, batch)
        out[f"{label}_accuracy"] = choice_accuracy(m, core.tokenizer(), prompts, answers, choices=COLORS)
    signals = {"base_loss": eval_loss(core.base_model(), batch), "broken_accuracy": out["broken_accuracy"],
               "fixed_accuracy": out["fixed_accuracy"]}
    return out["broken"], out["fixed"], signals


def _facts_split(seed: int, n_train: int):
    """`n_train` facts to train on (drawn by `seed` from the facts the course model never saw) and 48 held-out facts
    of the same form about other invented countries."""
    from .. import data, world

    facts = [world.fact_sentence(r["country"], r["capital"]) for r in data.load("facts_new")]
    order = torch.randperm(len(facts), generator=torch.Generator().manual_seed(seed)).tolist()
    known = {r["country"] for r in data.load("facts_new") + data.load("facts_known")}
    others = [world.fact_sentence(c, k) for c, k in world.invented_countries(seed=99) if c not in known]
    return [facts[i] for i in order[:n_train]], others[:48]


def _tiny_run(seed, n_train=4, steps=20, dropout=0.0, weight_decay=0.0, every=10):
    """[(training loss, held-out loss)] every `every` steps of LoRA (r=16, all linear) on `n_train` facts."""
    train_set, held = _facts_split(seed, n_train)
    held_batch, train_batch = core.encode(held), core.encode(train_set)
    m = core.lora(core.fresh_model(), "all-linear", r=16, seed=seed, dropout=dropout)
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-3, weight_decay=weight_decay)
    it = core.batches(train_set, 4, seed)
    curve = []
    for k in range(steps // every):  # one optimizer throughout; evaluate every `every` steps
        train(m, it, every, lr=5e-3, optimizer=opt, progress=False, seed=seed * 1000 + k)
        curve.append((eval_loss(m, train_batch), eval_loss(m, held_batch)))
    return curve


@experiment(
    "tiny_dataset",
    symptom="Trained for 20 steps on 4 facts, the adapter memorises them: the training loss falls far below the "
            "held-out loss on facts of the same form. Dropout (0.3), weight decay (0.5) and stopping after 10 "
            "steps, measured in `signals`, leave much of that gap at this scale; 16 facts instead of 4 shrink it.",
    fix="More data first; then fewer steps (stop when the held-out loss stops falling). Measure a regulariser "
        "such as dropout before trusting it: here it does not close the gap.",
    metric="overfitting gap: held-out loss minus training loss, after 20 steps", better="lower", margin=0.2)
def tiny_dataset(seed: int):
    gap = lambda point: point[1] - point[0]  # noqa: E731
    plain, more_data = _tiny_run(seed), _tiny_run(seed, n_train=16)
    dropout, decay = _tiny_run(seed, dropout=0.3, every=20), _tiny_run(seed, weight_decay=0.5, every=20)
    signals = {"curve_train_heldout": plain, "more_data_curve_train_heldout": more_data,
               "dropout_gap": gap(dropout[-1]), "weight_decay_gap": gap(decay[-1]), "gap_at_10_steps": gap(plain[0]),
               "heldout": plain[-1][1], "more_data_heldout": more_data[-1][1], "dropout_heldout": dropout[-1][1],
               "weight_decay_heldout": decay[-1][1], "heldout_at_10_steps": plain[0][1]}
    return gap(plain[-1]), gap(more_data[-1]), signals


@experiment(
    "attention_only",
    symptom="Adapters on the attention projections only (q, k, v, o) learn the letters domain far more slowly than "
            "the same rank on every linear layer, in the same 15 steps.",
    fix="Include the MLP layers (target_modules='all-linear'), as the QLoRA recipe does.",
    metric="held-out loss on the near domain (letters)", better="lower", margin=0.3)
def attention_only(seed: int):
    near = core.texts("near_train")
    out = {}
    for label, targets in (("broken", ATTENTION), ("fixed", "all-linear")):
        m = core.lora(core.fresh_model(), targets, r=8, seed=seed)
        out[f"{label}_curve"] = core.fit(m, near, 15, 5e-3, seed).losses
        out[label] = core.loss(m, "near")
        out[f"{label}_trainable"] = sum(p.numel() for p in m.parameters() if p.requires_grad)
    signals = {k: v for k, v in out.items() if k not in ("broken", "fixed")}
    signals["base_loss"] = core.loss(core.base_model(), "near")
    return out["broken"], out["fixed"], signals
