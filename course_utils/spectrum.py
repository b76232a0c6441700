"""How low-rank is a weight update? Singular values and the share of ||Delta W||_F^2 the top r of them hold.

||M||_F^2 = sum of sigma_i^2, and the best rank-r approximation of M (Eckart-Young) keeps exactly the top r
singular values. So "energy captured at rank r" = sum_{i<=r} sigma_i^2 / sum_i sigma_i^2 is the best any rank-r
update -- a LoRA with that r -- could do at reproducing Delta W, and sqrt(1 - energy) is its relative error.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .surgery import linear_layers


def singular_values(M: torch.Tensor) -> torch.Tensor:
    """sigma_1 >= sigma_2 >= ... of a 2-D matrix, computed in float64 so tiny tails are not rounding noise."""
    if M.dim() != 2:
        raise ValueError(f"singular values need a 2-D matrix, got shape {tuple(M.shape)}. "
                         "Fix: pass one weight matrix (e.g. layer.weight), not a batch or a bias vector.")
    return torch.linalg.svdvals(M.detach().double())


def cumulative_energy(S: torch.Tensor) -> torch.Tensor:
    """Entry r-1 is the share of ||M||_F^2 the top r singular values hold (ends at 1.0)."""
    e = S.double() ** 2
    total = e.sum()
    if not total > 0:
        raise ValueError("the matrix is all zeros, so it has no energy to split. "
                         "Fix: check that training actually changed the weights (Delta W = W_after - W_before).")
    return e.cumsum(0) / total


def energy_captured(M_or_S: torch.Tensor, r: int) -> float:
    """Share of ||M||_F^2 held by the best rank-r approximation (pass a matrix or its singular values)."""
    S = singular_values(M_or_S) if M_or_S.dim() == 2 else M_or_S
    if not 1 <= r <= len(S):
        raise ValueError(f"r must be between 1 and {len(S)} (the matrix's smaller side), got r={r}.")
    return float(cumulative_energy(S)[r - 1])


def rank_for_energy(M_or_S: torch.Tensor, fraction: float = 0.9) -> int:
    """The smallest r whose best rank-r approximation holds `fraction` of ||M||_F^2."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}. Fix: e.g. 0.9 for 90% of the energy.")
    S = singular_values(M_or_S) if M_or_S.dim() == 2 else M_or_S
    # a hair of tolerance so fraction=1.0 is reachable despite float rounding in the cumulative sum
    return int((cumulative_energy(S) < fraction - 1e-12).sum()) + 1


def best_rank_r(M: torch.Tensor, r: int) -> torch.Tensor:
    """The closest rank-r matrix to M in Frobenius norm (truncated SVD): what an ideal rank-r LoRA would learn."""
    U, S, Vh = torch.linalg.svd(M.detach().double(), full_matrices=False)
    return ((U[:, :r] * S[:r]) @ Vh[:r]).to(M.dtype)


def weight_snapshot(model: nn.Module, suffixes=None) -> dict[str, torch.Tensor]:
    """Copies of the 2-D weights of the Linear layers (optionally only those whose name ends in one of `suffixes`)."""
    return {n: m.weight.detach().clone() for n, m in linear_layers(model, include_head=True, suffixes=suffixes)
            if isinstance(m, nn.Linear)}


def weight_deltas(before: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Delta W = W_after - W_before for every weight in the snapshot `before`."""
    modules = dict(model.named_modules())
    missing = [n for n in before if n not in modules]
    if missing:
        raise KeyError(f"{missing[:3]} are in the snapshot but not in this model. Fix: snapshot the same model "
                       "(weight_snapshot(model)) before training it.")
    return {n: modules[n].weight.detach() - w for n, w in before.items()}
