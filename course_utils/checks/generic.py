"""Checks that stop at the first difference: print a ✅ line per passed check, raise on the first failure.

A failure raises `CheckFailed` (an AssertionError, so nbgrader and pytest treat it as a failed test) whose
message says what differs and asks the question that leads to the fix. A lab adds its own checker by building a
`Checklist` and calling `require(...)` in teaching order (course_utils.checks.lora_layer is one).
"""
from __future__ import annotations

import torch


class CheckFailed(AssertionError):
    """A self-check found a difference; the message is written for the student."""


class Checklist:
    """Collects passed checks (printed as ✅) and raises on the first failure (❌ + hint)."""

    def __init__(self, title: str | None = None, verbose: bool = True):
        self.title, self.verbose, self.passed = title, verbose, []
        if title and verbose:
            print(f"— {title} —")

    def ok(self, msg: str) -> None:
        self.passed.append(msg)
        if self.verbose:
            print(f"✅ {msg}")

    def fail(self, msg: str):
        raise CheckFailed(f"❌ {msg}")

    def require(self, condition: bool, ok_msg: str, fail_msg: str) -> None:
        if not condition:
            self.fail(fail_msg)
        self.ok(ok_msg)

    def done(self) -> "Checklist":
        if self.verbose:
            print(f"🎉 all {len(self.passed)} checks passed")
        return self

    def __repr__(self) -> str:
        return f"Checklist({self.title!r}, passed={len(self.passed)})"


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64)
    return torch.as_tensor(x, dtype=torch.float64)  # numbers, lists, numpy arrays


def _short(x) -> str:
    if isinstance(x, torch.Tensor) and x.numel() > 6:
        return f"tensor of shape {tuple(x.shape)}"
    return repr(x.tolist() if isinstance(x, torch.Tensor) else x)


def check_value(name: str, got, expected, rtol: float = 1e-5, atol: float = 1e-8, hint: str | None = None,
                verbose: bool = True):
    """✅ if `got` matches `expected` (exactly for str/bool/None, within rtol/atol for numbers and arrays), else
    raise CheckFailed saying what differs. Returns nothing, so a notebook cell ending in a check echoes nothing."""
    hint_txt = f" Hint: {hint}" if hint else ""
    if isinstance(expected, dict):  # e.g. a bytes breakdown: same keys, each value checked in turn
        if not isinstance(got, dict) or set(got) != set(expected):
            keys = sorted(got) if isinstance(got, dict) else type(got).__name__
            raise CheckFailed(f"❌ {name}: expected a dict with keys {sorted(expected)}, got {keys}.{hint_txt}")
        for key in expected:
            check_value(f"{name}[{key!r}]", got[key], expected[key], rtol, atol, hint, verbose)
        return
    exact = isinstance(expected, (str, bool, type(None))) or isinstance(got, (str, bool, type(None)))
    if exact:
        ok, detail = got == expected, f"got {got!r}, expected {expected!r}."
    else:
        try:
            g, e = _as_tensor(got), _as_tensor(expected)
        except (TypeError, ValueError, RuntimeError):
            raise CheckFailed(f"❌ {name}: got a {type(got).__name__} ({_short(got)}), expected something like "
                              f"{_short(expected)}.{hint_txt}") from None
        if g.shape != e.shape:
            raise CheckFailed(f"❌ {name}: shape {tuple(g.shape)}, expected {tuple(e.shape)}.{hint_txt}")
        ok = bool(torch.allclose(g, e, rtol=rtol, atol=atol, equal_nan=True))
        worst = (g - e).abs().max().item() if g.numel() else 0.0
        detail = f"got {_short(got)}, expected {_short(expected)} (max abs diff {worst:.3g}, rtol={rtol:g})."
    if not ok:
        raise CheckFailed(f"❌ {name}: {detail}{hint_txt}")
    if verbose:
        print(f"✅ {name} = {_short(got)}" if not isinstance(got, torch.Tensor) or got.numel() <= 6
              else f"✅ {name} matches (shape {tuple(got.shape)})")
