"""course_utils.training on CPU: batching and label masking, the schedule, the NaN guard, evaluation helpers."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from course_utils import data, training as T
from course_utils.training import IGNORE


def test_encode_pairs_trains_only_on_the_answer(course_model):
    _, tok = course_model
    batch = T.encode_pairs(tok, ["q: what color is the sky? a:", "q: hi? a:"], ["blue", "yes"])
    for labels, prompt in zip(batch["labels"], ["q: what color is the sky? a:", "q: hi? a:"]):
        n_prompt = len(tok(prompt).input_ids)
        assert (labels[:n_prompt] == IGNORE).all()
        answer = labels[labels != IGNORE]
        assert answer[-1] == tok.eos_token_id and tok.decode(answer[:-1]).strip() in ("blue", "yes")


def test_encode_texts_pads_right_and_masks_padding(course_model):
    _, tok = course_model
    batch = T.encode_texts(tok, ["a short one", "a much longer text than the first one is"])
    mask, labels = batch["attention_mask"], batch["labels"]
    assert mask[0].sum() < mask[1].sum() and (labels[0][mask[0] == 0] == IGNORE).all()
    assert (batch["input_ids"][:, 0] == tok.bos_token_id).all()


def test_packed_blocks_and_batches_are_deterministic(course_model):
    _, tok = course_model
    blocks = T.packed_blocks(tok, data.texts("pretrain", 50), seq_len=32)
    assert blocks.dim() == 2 and blocks.shape[1] == 32
    a = next(T.batches_from_blocks(blocks, 4, seed=3))["input_ids"]
    b = next(T.batches_from_blocks(blocks, 4, seed=3))["input_ids"]
    assert torch.equal(a, b)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_warmup_then_schedule(fresh_course_model, schedule):
    model, tok = fresh_course_model
    model.requires_grad_(False).lm_head.requires_grad_(True)
    batches = T.batches_from_examples(lambda rows: T.encode_texts(tok, rows), data.texts("near_train", 32), 4)
    result = T.train(model, batches, 10, lr=1e-3, warmup=4, schedule=schedule, progress=False)
    lrs = [x / 1e-3 for x in result.lrs]
    assert lrs[:3] == pytest.approx([0.5, 0.75, 1.0])  # the lr *after* steps 0, 1, 2 of a 4-step warmup
    if schedule == "cosine":
        assert lrs[-1] < 0.1 and all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    else:
        assert lrs[3:] == pytest.approx([1.0] * 7)


def test_training_lowers_the_loss_and_restores_the_mode(fresh_course_model):
    model, tok = fresh_course_model
    model.requires_grad_(True)
    held_out = T.encode_texts(tok, data.texts("near_test", 16))
    before = T.eval_loss(model, held_out)
    batches = T.batches_from_examples(lambda rows: T.encode_texts(tok, rows), data.texts("near_train", 64), 8)
    result = T.train(model, batches, 15, lr=3e-3, progress=False)
    assert len(result.losses) == 15 and T.eval_loss(model, held_out) < before
    assert not model.training  # it came in eval mode and goes out in eval mode


def test_nan_loss_stops_with_the_fix(fresh_course_model):
    model, tok = fresh_course_model
    model.requires_grad_(True)
    with torch.no_grad():
        model.lm_head.weight.fill_(math.nan)
    batches = T.batches_from_examples(lambda rows: T.encode_texts(tok, rows), data.texts("near_train", 8), 4)
    with pytest.raises(FloatingPointError, match="Lower the learning rate"):
        T.train(model, batches, 2, progress=False)


def test_nothing_trainable_names_the_fix(fresh_course_model):
    model, _ = fresh_course_model
    with pytest.raises(ValueError, match="add_lora"):
        T.train(model.requires_grad_(False), iter([]), 1, progress=False)


def test_evaluation_helpers_leave_a_training_model_training(course_model):
    model, tok = course_model
    m = copy.deepcopy(model).train()
    assert T.generate(m, tok, "q: what color is the sky? a:", 3) == T.generate(m, tok, "q: what color is the sky? a:", 3)
    T.eval_loss(m, T.encode_texts(tok, ["the cat sat."]))
    prior = data.load("prior")
    acc = T.answer_accuracy(m, tok, [r["prompt"] for r in prior[:8]], [r["answer"] for r in prior[:8]])
    assert acc >= 0.75 and m.training


def test_choice_accuracy_needs_distinct_first_tokens(course_model):
    model, tok = course_model
    rows = data.load("sentiment_test", 20)
    acc = T.choice_accuracy(model, tok, [r["prompt"] for r in rows], [r["label"] for r in rows])
    assert 0.0 <= acc <= 1.0
    with pytest.raises(ValueError, match="share a first token"):
        T.choice_accuracy(model, tok, ["x"], ["positive"], choices=["positive", "positive"])
