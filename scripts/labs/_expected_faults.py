"""lab05's build-time numbers: the broken fine-tunes, the reference fixes on three seeds (which set the pass marks),
and the salted digests of the planted faults (which the hidden tests compare the diagnoses with).

The training script students read (RUNNER) is the one this module runs: the notebook's provided cell and the
reference runs execute the same source, so a mark computed here is a mark for the script in the notebook. Every
broken config, and every fix of only one of two faults, is run on the same seeds and must miss its mark: the lab
cannot be passed without fixing every planted fault (the build stops otherwise).
"""
from __future__ import annotations

import hashlib
import math
from textwrap import dedent

SEEDS = (0, 1, 2)
STEPS = 12
N_LINEAR = 28  # linear layers of the course model, lm_head excluded: 4 blocks x 7

# The data every fine-tune uses, as the notebook loads it (the provided cell of section 0).
DATA = """
base, tok = load_course_model()
letters = data.texts("near_train")  # the new task: short letters in one house style
letters_held_out = encode_texts(tok, data.texts("near_test")[:48])
ordinary = encode_texts(tok, data.held_out_pretrain_texts(48))  # lines like the base model's pretraining text
base_letters, base_ordinary = eval_loss(base, letters_held_out), eval_loss(base, ordinary)
print(f"{len(letters)} training letters; the base model's held-out loss: letters {base_letters:.2f}, "
      f"ordinary text {base_ordinary:.2f}")
"""

# The training script of every fine-tune in the lab. `fine_tune` is the name students call; the hidden tests run a
# private copy (renamed), so that a later cell cannot change what grading measures.
RUNNER = '''
def fine_tune(config, seed=0):
    """LoRA on the course model, trained on letters (8 per batch) for config["steps"] steps of AdamW.

    Returns what you would look at afterwards: the training-loss curve, which layers got adapters, how many
    parameters trained, and the held-out losses of the saved adapter loaded onto a fresh copy of the base."""
    model = copy.deepcopy(base)
    layers = peft_targets(model, config["target_modules"])  # the layers PEFT adapts for these names
    torch.manual_seed(seed)  # the adapters' random matrices come from the seed
    init = "nonzero_B" if config["init_B"] == "random" else "default"
    add_lora(model, layers, r=config["r"], alpha=config["lora_alpha"], init=init)
    if not config["freeze_base"]:
        model.requires_grad_(True)
    trainable, total = count_parameters(model)
    ordinary_before = eval_loss(model, ordinary)
    batches = batches_from_examples(lambda rows: encode_texts(tok, rows), letters, 8, seed=seed)
    losses = train(model, batches, config["steps"], lr=config["lr"], progress=False, seed=seed).losses
    shipped = add_lora(copy.deepcopy(base), layers, r=config["r"], alpha=config["lora_alpha"])
    load_lora_state_dict(shipped, lora_state_dict(model))  # what users get: the saved adapter on the base
    return SimpleNamespace(losses=losses, layers=layers, trainable=trainable, total=total,
                           ordinary_before=ordinary_before, letters_loss=eval_loss(shipped, letters_held_out),
                           ordinary_loss=eval_loss(shipped, ordinary))
'''

IMPORTS = """
import copy
import logging
from types import SimpleNamespace

from course_utils import data
from course_utils.checks import check_value
from course_utils.experiments.traps import peft_targets
from course_utils.lora import add_lora, count_parameters, load_lora_state_dict, lora_state_dict
from course_utils.models import load_course_model
from course_utils.training import batches_from_examples, encode_texts, eval_loss, train
"""

_SOUND = {"target_modules": "all-linear", "r": 8, "lora_alpha": 16, "init_B": "zeros", "freeze_base": True,
          "lr": 5e-3, "steps": STEPS}
# A recipe written for Phi-2 (attention q/k/v_proj + dense, MLP fc1/fc2): on a Llama only q, k and v exist.
PHI2_TARGETS = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]

# The broken fine-tunes as students get them; FAULTS holds the planted faults' letters (see CHOICES), which only
# the hidden tests know, as salted digests. FIXES: the reference fix; PARTIAL_FIXES: fixing one of two faults.
# Fine-tune 1's rate: at 0.1 (chapter 10's lr_too_high) the training loss falls without a single rise on seed 1 of
# the course model, at 0.2 it rises on 2-4 of the 11 steps on each of seeds 0-2, as the lab's story says.
BROKEN = {
    1: {**_SOUND, "lr": 0.2},
    2: {**_SOUND, "target_modules": PHI2_TARGETS},
    3: {**_SOUND, "r": 64, "lora_alpha": 16, "freeze_base": False, "lr": 2e-3},
    4: {**_SOUND, "init_B": "random"},
}
FIXES = {
    1: {"lr": 5e-3},
    2: {"target_modules": "all-linear"},
    3: {"lora_alpha": 128, "freeze_base": True},
    4: {"init_B": "zeros"},
}
PARTIAL_FIXES = {3: [{"lora_alpha": 128}, {"freeze_base": True}]}
FAULTS = {1: "A", 2: "B", 3: "DE", 4: "C"}

CHOICES = {
    "A": "The learning rate is far too high for LoRA: each update overshoots.",
    "B": "`target_modules` names layers this model does not have (copied from another architecture): they are "
         "skipped without a word, so fewer layers get an adapter than the recipe meant.",
    "C": "B is initialised randomly instead of to zero: before any training, the adapted model is no longer the "
         "base model.",
    "D": "`lora_alpha` was not raised with `r`: the scaling alpha / r shrinks each adapter's update.",
    "E": "The base model is not frozen: every weight trains, and the saved adapter no longer carries what was "
         "learned.",
    "F": "Catastrophic forgetting: training on the new data alone wears away the old skill (the fix is replay, "
         "or fewer steps).",
    "G": "The dataset is too small: the adapter memorises its examples and does not generalise.",
    "H": "The rank is too low for the task: the adapter cannot express the change.",
}


def salt(n: int) -> str:
    return f"lab05-fine-tune-{n}-"


def digest(n: int, letters) -> str:
    """What a hidden test compares `diagnosis_<n>` with: sha256 of a salt and the sorted letters."""
    return hashlib.sha256((salt(n) + "".join(sorted(letters))).encode()).hexdigest()


def runner(name: str = "fine_tune") -> str:
    return dedent(RUNNER).strip("\n").replace("def fine_tune(", f"def {name}(")


def _namespace() -> dict:
    import torch

    torch.set_num_threads(1)
    ns = {"torch": torch, "print": lambda *a, **k: None}
    exec(dedent(IMPORTS), ns)  # noqa: S102 - our own source, the same the notebook runs
    exec(dedent(DATA), ns)  # noqa: S102
    exec(runner(), ns)  # noqa: S102
    return ns


def _mark(values, floor: float = 0.25) -> float:
    """The worst reference run plus the spread between seeds (at least `floor`), rounded up to 0.05."""
    margin = max(floor, max(values) - min(values))
    return round(math.ceil((max(values) + margin) * 20) / 20, 2)


def reference_runs() -> dict:
    """Each fine-tune's reference fix on SEEDS, its marks, and a check that every broken or half-fixed config
    misses them. Marks: letters loss for 1-3 (the saved adapter's); letters and ordinary text for 4."""
    ns = _namespace()
    fine_tune = ns["fine_tune"]
    out = {"base_letters": round(ns["base_letters"], 4), "base_ordinary": round(ns["base_ordinary"], 4)}
    for n, broken in BROKEN.items():
        fixed = [fine_tune({**broken, **FIXES[n]}, seed) for seed in SEEDS]
        letters = [r.letters_loss for r in fixed]
        out[n] = {"letters": [round(v, 4) for v in letters], "letters_mark": _mark(letters)}
        if n == 4:
            ordinary = [r.ordinary_loss for r in fixed]
            out[n].update(ordinary=[round(v, 4) for v in ordinary], ordinary_mark=_mark(ordinary))
        wrong = [broken] + [{**broken, **p} for p in PARTIAL_FIXES.get(n, [])]
        misses = []
        for cfg in wrong:
            for seed in SEEDS:
                r = fine_tune(cfg, seed)
                passes = r.letters_loss < out[n]["letters_mark"] and (
                    n != 4 or r.ordinary_loss < out[n]["ordinary_mark"])
                if passes:
                    raise SystemExit(f"lab05: fine-tune {n} passes its mark without every fix ({cfg}, seed {seed}): "
                                     "the lab would not test the fault")
                misses.append((round(r.letters_loss, 3), round(r.ordinary_loss, 3)))
        out[n]["broken"] = misses
    _claims(fine_tune, out)
    return out


def _claims(fine_tune, out) -> None:
    """What the lab's text says about the broken runs, measured on SEEDS (the build stops if one does not hold)."""
    broken = {n: [fine_tune(cfg, seed) for seed in SEEDS] for n, cfg in BROKEN.items()}
    r8 = [fine_tune({**BROKEN[3], **FIXES[3], "r": 8, "lora_alpha": 16}, seed) for seed in SEEDS]
    claims = {
        "1: the training loss rises on some steps": all(any(b > a for a, b in zip(r.losses, r.losses[1:]))
                                                        for r in broken[1]),
        "2: fewer layers adapted, loss falling steadily": all(len(r.layers) < N_LINEAR and all(
            b < a for a, b in zip(r.losses, r.losses[1:])) for r in broken[2]),
        "3: training loss below rank 8's, shipped adapter above it": all(
            b.losses[-1] < a.losses[-1] and b.letters_loss > max(x.letters_loss for x in r8)
            for a, b in zip(r8, broken[3])),
        "4: worse than the base before step 1": all(r.ordinary_before > out["base_ordinary"] + 1 for r in broken[4]),
    }
    failed = [k for k, ok in claims.items() if not ok]
    if failed:
        raise SystemExit(f"lab05: the text's claims do not hold on seeds {SEEDS}: {failed}")
    out[3]["r8_letters"] = [round(r.letters_loss, 4) for r in r8]
    out[3]["r8_train_final"] = [round(r.losses[-1], 4) for r in r8]
    out[3]["broken_train_final"] = [round(r.losses[-1], 4) for r in broken[3]]
