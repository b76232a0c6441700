"""lab04's build-time numbers: the reference QLoRA run on three seeds (which sets the pass mark) and a checksum of
the course model's NF4 base (which the hidden tests compare the submitted base with)."""
from __future__ import annotations

import copy
import hashlib
import math

import torch

BUDGET = 40_000  # trainable parameters: all-linear at r = 4 fits (39,424), at r = 8 it does not (78,848)
TIME_LIMIT = 60  # seconds of training on 2 cores
SEEDS = (0, 1, 2)
# The reference solution's settings (lab04_qlora.py, Task 3): a usual first choice, not a tuned one. On the course
# model, 30 steps at lr 5e-3 or 1e-2 reach 5.38-5.50 on seeds 0-2, 2e-2 and 5e-2 reach 5.72-5.76, 2e-3 5.76-5.79 and
# 1e-3 6.24 (seed 0): the pass mark lets every learning rate from 2e-3 to 5e-2 through, and the test's hint names
# the range.
STEPS, BATCH, LR = 30, 8, 2e-2


def _setup():
    from course_utils import data
    from course_utils.models import load_course_model
    from course_utils.training import encode_texts

    torch.set_num_threads(1)
    base, tok = load_course_model()
    return base, tok, data.texts("far_train"), encode_texts(tok, data.texts("far_test"))


def reference_runs() -> dict:
    """The reference solution on three seeds (LoRA init and data order): its held-out losses, and the pass mark:
    the worst seed plus the spread between seeds (at least 0.25), rounded up to 0.05. The sum is taken in whole
    hundredths, so that a loss a few 1e-5 under a grid line (5.74997 on seed 1 with the course model that reads its
    context) cannot move the mark by 0.05 between two builds."""
    from course_utils.lora import add_lora
    from course_utils.nf4 import quantize_model
    from course_utils.training import batches_from_examples, encode_texts, eval_loss, train

    base, tok, texts, held_out = _setup()
    losses = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = add_lora(quantize_model(copy.deepcopy(base)), "all-linear", r=4, alpha=8)
        batches = batches_from_examples(lambda rows: encode_texts(tok, rows), texts, BATCH, seed=seed)
        train(model, batches, STEPS, lr=LR, progress=False, seed=seed)
        losses.append(eval_loss(model, held_out))
    worst, spread = round(max(losses) * 100), round((max(losses) - min(losses)) * 100)
    threshold = math.ceil((worst + max(25, spread)) / 5) * 5 / 100
    return {"losses": [round(v, 4) for v in losses], "threshold": round(threshold, 2),
            "base_loss": round(eval_loss(base, held_out), 4)}


def nf4_base_digest() -> str:
    """sha256 over every NF4 layer's codes and constants of the course model quantized with QLoRA's defaults."""
    from course_utils.nf4 import nf4_layers, quantize_model

    base, *_ = _setup()
    h = hashlib.sha256()
    for _, m in nf4_layers(quantize_model(copy.deepcopy(base))):
        for t in (m.weight_codes, m.weight_absmax, m.weight_absmax_scale, m.weight_absmax_offset):
            h.update(t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
