"""course_utils.intrinsic: random-subspace training and the intrinsic dimension d90."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from course_utils.intrinsic import (ChoiceTask, RandomSubspace, dense_projection_bytes, fraction_of_full,
                                    intrinsic_dimension, log_grid, train_choice)


@pytest.fixture(scope="module")
def model_and_tok(course_model):
    return course_model


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))


def dense_P(sub: RandomSubspace) -> torch.Tensor:
    return torch.stack([sub.projection_column(j) for j in range(sub.d)], dim=1).double()


def flat_grads(net) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in net.parameters()])


# --- RandomSubspace ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("d", [1, 3, 10, 39])
def test_projection_has_orthonormal_columns(d):
    # Li et al.: P has unit-norm columns; the sparse construction makes them exactly orthogonal too.
    sub = RandomSubspace(small_net(), d, seed=1)
    P = dense_P(sub)
    assert P.shape == (sub.D, d)
    assert torch.allclose(P.T @ P, torch.eye(d, dtype=torch.float64), atol=1e-6)


def test_at_zero_the_subspace_is_the_model(model_and_tok):
    model, tok = model_and_tok
    sub = RandomSubspace(model, 7)
    ids = tok(["the cat sat in the park."], return_tensors="pt").input_ids
    assert torch.equal(sub(input_ids=ids).logits, model(input_ids=ids).logits)


def test_forward_uses_theta0_plus_P_theta_d():
    net = small_net()
    sub = RandomSubspace(net, 4, seed=2)
    with torch.no_grad():
        sub.theta_d.copy_(torch.tensor([0.5, -1.0, 2.0, 0.25]))
    moved = small_net()  # same seed, same theta0
    theta = torch.nn.utils.parameters_to_vector(moved.parameters()).double() + dense_P(sub) @ sub.theta_d.double()
    torch.nn.utils.vector_to_parameters(theta.float(), moved.parameters())
    x = torch.randn(6, 5)
    assert torch.allclose(sub(x), moved(x), atol=1e-6)


def test_gradient_is_P_transpose_times_full_gradient():
    x, y = torch.randn(8, 5), torch.randn(8, 3)
    sub = RandomSubspace(small_net(), 6, seed=3)
    ((sub(x) - y) ** 2).mean().backward()
    full = small_net().requires_grad_(True)
    ((full(x) - y) ** 2).mean().backward()
    assert torch.allclose(sub.theta_d.grad.double(), dense_P(sub).T @ flat_grads(full).double(), atol=1e-6)


def test_d_equal_D_is_a_signed_permutation_of_all_parameters():
    sub = RandomSubspace(small_net(), sum(p.numel() for p in small_net().parameters()))
    P = dense_P(sub)
    assert torch.equal(P.abs().sum(0), torch.ones(sub.D, dtype=torch.float64))  # one +-1 per column
    assert torch.equal(P.abs().sum(1), torch.ones(sub.D, dtype=torch.float64))  # and per row


def test_only_theta_d_trains_and_the_model_is_frozen():
    net = small_net()
    sub = RandomSubspace(net, 5)
    trainable = [p for p in sub.parameters() if p.requires_grad]
    assert len(trainable) == 1 and trainable[0] is sub.theta_d and sub.theta_d.numel() == 5
    assert not any(p.requires_grad for p in net.parameters())


def test_include_restricts_the_subspace():
    sub = RandomSubspace(small_net(), 3, include=lambda name, p: name.startswith("2."))
    assert sub.D == 4 * 3 + 3 and sub.names == ["2.weight", "2.bias"]
    with torch.no_grad():
        sub.theta_d.fill_(1.0)
    params = sub.params()
    assert torch.equal(params["0.weight"], sub.model[0].weight)  # outside the subspace: stays at theta0
    assert not torch.equal(params["2.weight"], sub.model[2].weight)


@pytest.mark.parametrize("d", [0, -1, 2.5, True, 10_000])
def test_bad_d_names_the_range_and_the_fix(d):
    with pytest.raises(ValueError, match=r"d must be a whole number from 1 to D = 39.*Fix"):
        RandomSubspace(small_net(), d)


def test_empty_include_names_the_fix():
    with pytest.raises(ValueError, match="selected no parameter.*Fix"):
        RandomSubspace(small_net(), 2, include=lambda n, p: False)


def test_seed_fixes_the_projection():
    a, b, c = (RandomSubspace(small_net(), 4, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.coef, b.coef) and torch.equal(a.group, b.group)
    assert not torch.equal(a.coef, c.coef)


def test_dense_projection_bytes():
    assert dense_projection_bytes(1_066_112, 1000) == 1_066_112 * 1000 * 4


# --- metric helpers ----------------------------------------------------------------------------------------

def test_fraction_of_full_puts_base_at_0_and_full_at_1():
    assert fraction_of_full(0.5, base=0.5, full=1.0) == 0.0
    assert fraction_of_full(1.0, base=0.5, full=1.0) == 1.0
    assert fraction_of_full(0.75, base=0.5, full=1.0) == pytest.approx(0.5)  # not "75%"


def test_fraction_of_full_refuses_a_baseline_that_did_not_improve():
    with pytest.raises(ValueError, match="did not improve.*Fix"):
        fraction_of_full(0.6, base=0.5, full=0.5)


def test_intrinsic_dimension_is_the_first_d_reaching_the_threshold():
    ds, fr = [1, 4, 16, 64], [0.1, 0.95, 0.85, 1.0]
    assert intrinsic_dimension(ds, fr) == 4  # the first d that got there, even if a later one dips
    assert intrinsic_dimension(list(reversed(ds)), list(reversed(fr))) == 4  # grid order does not matter
    assert intrinsic_dimension(ds, fr, threshold=0.99) == 64
    assert intrinsic_dimension(ds, [0.1, 0.2, 0.3, 0.4]) is None


def test_intrinsic_dimension_wants_one_fraction_per_d():
    with pytest.raises(ValueError, match="one fraction per d"):
        intrinsic_dimension([1, 2], [0.5])


def test_log_grid():
    grid = log_grid(1, 1000, 4)
    assert grid == [1, 10, 100, 1000]
    with pytest.raises(ValueError, match="lo < hi"):
        log_grid(10, 1, 3)


# --- ChoiceTask and train_choice ----------------------------------------------------------------------------

def sentiment(n):
    from course_utils import data

    rows = data.load("sentiment_test")[:n]
    return [r["prompt"] for r in rows], [r["label"] for r in rows]


def test_choice_task_scores_like_choice_accuracy(model_and_tok):
    from course_utils.training import choice_accuracy

    model, tok = model_and_tok
    prompts, labels = sentiment(24)
    task = ChoiceTask(tok, prompts, labels)
    assert task.choices == ["negative", "positive"] and len(task) == 24
    assert task.accuracy(model) == pytest.approx(choice_accuracy(model, tok, prompts, labels), abs=1e-9)


def test_choice_task_rejects_labels_it_cannot_score(model_and_tok):
    _, tok = model_and_tok
    with pytest.raises(ValueError, match="not among the choices.*Fix"):
        ChoiceTask(tok, ["a", "b"], ["positive", "maybe"], choices=["positive", "negative"])
    with pytest.raises(ValueError, match="share a first token.*Fix"):
        ChoiceTask(tok, ["a", "b"], ["positive", "positive"], choices=["positive", "positive"])


def test_training_in_a_subspace_lowers_the_loss(model_and_tok):
    model, tok = model_and_tok
    task = ChoiceTask(tok, *sentiment(32))
    sub = RandomSubspace(model, 16, seed=0)
    with torch.no_grad():
        before = task.loss(sub).item()
    losses = train_choice(sub, task, steps=6, lr=1e-3 * math.sqrt(sub.D / 16), batch_size=16, seed=0)
    with torch.no_grad():
        after = task.loss(sub).item()
    assert len(losses) == 6 and after < before
    assert sub.theta_d.abs().sum() > 0


def test_train_choice_refuses_a_frozen_model(model_and_tok):
    model, tok = model_and_tok
    task = ChoiceTask(tok, *sentiment(4))
    frozen = nn.Module()
    frozen.w = nn.Parameter(torch.zeros(1), requires_grad=False)
    with pytest.raises(ValueError, match="nothing in this model requires grad.*Fix"):
        train_choice(frozen, task, steps=1, lr=0.1)
