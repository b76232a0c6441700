"""course_utils.spectrum: singular values and the share of a weight update's energy a rank-r update captures."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from course_utils.spectrum import (best_rank_r, cumulative_energy, energy_captured, rank_for_energy,
                                   singular_values, weight_deltas, weight_snapshot)


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))


def test_energy_of_a_known_matrix():
    M = torch.diag(torch.tensor([4.0, 3.0, 0.0]))
    assert singular_values(M).tolist() == [4.0, 3.0, 0.0]
    assert energy_captured(M, 1) == pytest.approx(16 / 25)
    assert cumulative_energy(singular_values(M))[-1].item() == pytest.approx(1.0)
    assert rank_for_energy(M, 0.6) == 1 and rank_for_energy(M, 0.65) == 2 and rank_for_energy(M, 1.0) == 2


def test_a_rank_r_product_has_all_its_energy_in_r_directions():
    torch.manual_seed(0)
    B, A = torch.randn(40, 3), torch.randn(3, 30)
    assert energy_captured(B @ A, 3) == pytest.approx(1.0, abs=1e-9)
    assert rank_for_energy(B @ A, 0.999) <= 3


def test_best_rank_r_error_is_the_discarded_energy():
    # Eckart-Young: ||M - M_r||_F^2 / ||M||_F^2 = 1 - energy_captured(M, r)
    torch.manual_seed(0)
    M = torch.randn(20, 12)
    for r in (1, 4, 12):
        err = ((M - best_rank_r(M, r)).norm() / M.norm()) ** 2
        assert err.item() == pytest.approx(1 - energy_captured(M, r), abs=1e-5)


def test_spectrum_errors_name_the_fix():
    with pytest.raises(ValueError, match="2-D matrix.*Fix"):
        singular_values(torch.ones(3))
    with pytest.raises(ValueError, match="all zeros.*Fix"):
        energy_captured(torch.zeros(3, 3), 1)
    with pytest.raises(ValueError, match="r must be between 1 and 3"):
        energy_captured(torch.eye(3), 4)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\].*Fix"):
        rank_for_energy(torch.eye(3), 1.5)


def test_weight_deltas_are_after_minus_before():
    net = small_net()
    before = weight_snapshot(net)
    assert set(before) == {"0", "2"}
    with torch.no_grad():
        net[2].weight += 0.5
    deltas = weight_deltas(before, net)
    assert torch.allclose(deltas["2"], torch.full((3, 4), 0.5)) and torch.equal(deltas["0"], torch.zeros(4, 5))
    assert set(weight_snapshot(net, suffixes=["2"])) == {"2"}
    with pytest.raises(KeyError, match="not in this model.*Fix"):
        weight_deltas({"missing": torch.zeros(1)}, net)
