"""sweeps.py: one fine-tune as a function of its knobs (chapter 07), on a model small enough to train in milliseconds."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from course_utils.lora import lora_layers
from course_utils.sweeps import finetune, over_seeds, scaling, spread

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2)).eval()


def batches(seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        x = torch.randint(0, 50, (4, 9), generator=g)
        yield {"input_ids": x, "labels": x}


HELD_OUT = next(batches(99))


def test_scaling_is_alpha_over_r_or_over_sqrt_r():
    assert scaling(16, 8) == 2 and scaling(16, 64) == 0.25 and scaling(16, 64, use_rslora=True) == 2
    for bad in [dict(alpha=16, r=0), dict(alpha=0, r=8), dict(alpha=16, r=2.5)]:
        with pytest.raises(ValueError, match="Fix:"):
            scaling(**bad)


def test_finetune_leaves_the_base_alone_and_repeats_exactly(base):
    before = {k: v.clone() for k, v in base.state_dict().items()}
    a = finetune(base, batches, HELD_OUT, steps=4, lr=1e-2, seed=3, r=2)
    b = finetune(base, batches, HELD_OUT, steps=4, lr=1e-2, seed=3, r=2)
    c = finetune(base, batches, HELD_OUT, steps=4, lr=1e-2, seed=4, r=2)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items()), "the base model is copied, not trained"
    assert a.losses == b.losses and a.held_out == b.held_out and a.update_norm == b.update_norm
    assert a.losses != c.losses, "another seed draws another A and another data order"
    assert len(a.losses) == 4 and math.isfinite(a.held_out) and a.update_norm > 0


def test_alpha_defaults_to_2r_and_rslora_only_changes_the_scaling(base):
    default = finetune(base, batches, HELD_OUT, steps=3, lr=1e-2, seed=0, r=4)
    explicit = finetune(base, batches, HELD_OUT, steps=3, lr=1e-2, seed=0, r=4, alpha=8)
    rs = finetune(base, batches, HELD_OUT, steps=3, lr=1e-2, seed=0, r=4, alpha=4, use_rslora=True)  # 4/sqrt(4) = 2
    assert default.losses == explicit.losses and default.losses == rs.losses


def test_full_finetuning_trains_every_weight_and_lora_only_the_adapters(base):
    full = finetune(base, batches, HELD_OUT, steps=2, lr=1e-3, seed=0, full=True)
    lora = finetune(base, batches, HELD_OUT, steps=2, lr=1e-3, seed=0, targets=["q_proj", "v_proj"], r=2)
    assert full.trainable == sum(p.numel() for p in base.parameters())
    assert lora.trainable == 2 * 2 * (16 + 16), "one layer, q and v, r (in + out) each"
    assert full.update_norm > 0


def test_curves_record_train_and_held_out_loss_along_the_way(base):
    train_eval = next(batches(7))
    run = finetune(base, batches, HELD_OUT, steps=6, lr=1e-2, seed=0, eval_every=2, train_eval=train_eval, dropout=0.1)
    assert [c[0] for c in run.curve] == [2, 4, 6] and run.held_out == run.curve[-1][2]
    one_go = finetune(base, batches, HELD_OUT, steps=6, lr=1e-2, seed=0, dropout=0.0)
    chunked = finetune(base, batches, HELD_OUT, steps=6, lr=1e-2, seed=0, dropout=0.0, eval_every=3,
                       train_eval=train_eval)
    assert torch.allclose(torch.tensor(one_go.losses), torch.tensor(chunked.losses)), \
        "evaluating along the way keeps the optimizer's state: the same training"
    with pytest.raises(ValueError, match="Fix:"):
        finetune(base, batches, HELD_OUT, steps=5, lr=1e-2, eval_every=2, train_eval=train_eval)
    with pytest.raises(ValueError, match="Fix:"):
        finetune(base, batches, HELD_OUT, steps=4, lr=1e-2, eval_every=2)


def test_lora_targets_are_passed_through(base):
    import copy

    from course_utils.lora import add_lora

    torch.manual_seed(0)
    expected = add_lora(copy.deepcopy(base), "all-linear", r=2, alpha=4)
    run = finetune(base, batches, HELD_OUT, steps=1, lr=1e-3, seed=0, r=2)
    assert run.trainable == sum(p.numel() for p in expected.parameters() if p.requires_grad)
    assert len(lora_layers(expected)) == 7


def test_over_seeds_and_spread():
    assert over_seeds(lambda s: s * s, [0, 1, 2]) == {0: 0, 1: 1, 2: 4}
    with pytest.raises(ValueError, match="at least 3 seeds"):
        over_seeds(lambda s: s, [0, 1])
    assert spread([3.0, 1.25, 2.0]) == "1.250 - 3.000" and spread([1, 2], ".1f") == "1.0 - 2.0"
    with pytest.raises(ValueError, match="Fix:"):
        spread([])
