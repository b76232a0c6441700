"""Self-checks for exercises and labs: print a ✅ line per passed check, stop at the FIRST difference.

A failure raises `CheckFailed` (an AssertionError, so nbgrader and pytest treat it as a failed test) whose
message says what differs and asks the question that leads to the fix. A lab adds its own checker by writing
a function that builds a `Checklist` and calls `require(...)` in teaching order; see `check_lora_layer`.
"""
from __future__ import annotations

import copy
import inspect
import math

import torch
import torch.nn as nn


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
    """✅ if `got` matches `expected` (exactly for str/bool/None, within rtol/atol for numbers and arrays).

    Returns `got`, so a notebook can write `x = check_value("x", compute(), 42)`.
    """
    hint_txt = f" Hint: {hint}" if hint else ""
    if isinstance(expected, dict):  # e.g. a bytes breakdown: same keys, each value checked in turn
        if not isinstance(got, dict) or set(got) != set(expected):
            keys = sorted(got) if isinstance(got, dict) else type(got).__name__
            raise CheckFailed(f"❌ {name}: expected a dict with keys {sorted(expected)}, got {keys}.{hint_txt}")
        for key in expected:
            check_value(f"{name}[{key!r}]", got[key], expected[key], rtol, atol, hint, verbose)
        return got
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
    return got


# --- LoRA layer (lab02) ------------------------------------------------------------------------------------

def _weight(obj: nn.Module, which: str) -> torch.Tensor | None:
    """The student's A or B as a tensor: lora_A / A, stored as a Parameter, an nn.Linear or a per-adapter dict."""
    for attr in (f"lora_{which}", which):
        v = getattr(obj, attr, None)
        if isinstance(v, nn.ModuleDict) and not hasattr(type(v), "weight") and len(v) == 1:
            v = next(iter(v.values()))
        if isinstance(v, nn.Module):
            v = getattr(v, "weight", None)
        if isinstance(v, torch.Tensor):
            return v
    return None


def _base(obj: nn.Module) -> nn.Module | None:
    for attr in ("base", "base_layer", "W0", "linear"):
        v = getattr(obj, attr, None)
        if isinstance(v, nn.Module):
            return v
    return None


def _build(cls, base, r, alpha, dropout, checks: Checklist) -> nn.Module:
    call = f"{cls.__name__}(base, r={r}, alpha={alpha}, dropout={dropout})"
    try:
        try:
            return cls(base, r=r, alpha=alpha, dropout=dropout)
        except TypeError as kw_error:
            try:
                return cls(base, r, alpha, dropout)
            except TypeError:
                checks.fail(f"Could not build your layer as {call}: {kw_error}. The constructor should be "
                            f"__init__(self, base, r, alpha, dropout=0.0); yours is {inspect.signature(cls)}.")
    except CheckFailed:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. the skeleton's NotImplementedError
        checks.fail(f"Building {call} raised {type(e).__name__}: {e or '(no message)'}. Finish __init__ first.")


def _run(checks: Checklist, what: str, fn):
    """Call the student's code; an exception becomes a failed check that says which step raised."""
    try:
        return fn()
    except CheckFailed:
        raise
    except Exception as e:  # noqa: BLE001 - any error in student code is reported, not crashed on
        checks.fail(f"{what} raised {type(e).__name__}: {e}")


def _copy_AB(src: nn.Module, dst: nn.Module) -> None:
    with torch.no_grad():
        _weight(dst, "A").copy_(_weight(src, "A"))
        _weight(dst, "B").copy_(_weight(src, "B"))


def check_lora_layer(student, in_features: int = 64, out_features: int = 48, r: int = 8, alpha: float = 16,
                     seed: int = 0, atol: float = 1e-6, skip=(), verbose: bool = True) -> Checklist:
    """Compare a student's LoRA layer class (or a freshly built instance) with `course_utils.lora.LoRALinear`.

    Checks, in teaching order: construction, A/B shapes, B = 0 at init, A's init range, scaling, forward,
    dropout placement, delta_weight, merge/unmerge, frozen base and gradients; stops at the first difference.
    `skip` may name parts a lab has not reached yet: "init", "dropout", "delta_weight", "merge".
    A student layer needs: `base` (the nn.Linear), `lora_A` (r x in) and `lora_B` (out x r) as nn.Parameter or
    nn.Linear, optionally `scaling`; `delta_weight()`, `merge()` and `unmerge()` unless skipped.
    """
    from .lora import LoRALinear

    unknown = set(skip) - {"init", "dropout", "delta_weight", "merge"}
    if unknown:
        raise ValueError(f"skip={sorted(unknown)} is not a part of this check; use 'init', 'dropout', "
                         "'delta_weight' or 'merge'.")
    is_class = inspect.isclass(student)
    if not is_class:  # an instance: read its sizes instead of choosing them
        base = _base(student)
        if base is None:
            raise CheckFailed("❌ Cannot find the frozen base layer: store it as `self.base` (the nn.Linear with W0).")
        in_features, out_features = base.in_features, base.out_features
        A = _weight(student, "A")
        r = int(getattr(student, "r", None) or (A.shape[0] if A is not None else r))
        alpha = getattr(student, "alpha", None) or getattr(student, "scaling", alpha / r) * r
    checks = Checklist(f"checking your LoRA layer against the reference (in={in_features}, out={out_features}, "
                       f"r={r}, alpha={alpha:g})", verbose)
    torch.manual_seed(seed)
    if is_class:
        base = nn.Linear(in_features, out_features)
        torch.manual_seed(seed + 1)
        stu = _build(student, copy.deepcopy(base), r, alpha, 0.0, checks)
        checks.ok(f"{student.__name__}(base, r={r}, alpha={alpha}, dropout=0.0) builds")
    else:
        stu, base = student, copy.deepcopy(_base(student))
    ref = LoRALinear(copy.deepcopy(base), r, alpha)
    stu_base = _base(stu)
    if stu_base is None:
        checks.fail("Cannot find the frozen base layer: store it as `self.base` (the nn.Linear holding W0).")

    # 1. shapes: A compresses in_features -> r, B expands r -> out_features
    A, B = _weight(stu, "A"), _weight(stu, "B")
    if A is None or B is None:
        checks.fail("Cannot find A and B: store them as `self.lora_A` and `self.lora_B` (nn.Parameter, or "
                    "nn.Linear(in_features, r, bias=False) / nn.Linear(r, out_features, bias=False)).")
    want_A, want_B = (r, in_features), (out_features, r)
    got_A, got_B = tuple(A.shape), tuple(B.shape)
    if got_A == want_B and got_B == want_A:
        checks.fail(f"lora_A has shape {got_A} and lora_B {got_B}: A and B are swapped. A reads the input, so A is "
                    f"(r, in_features) = {want_A}; B writes the output, so B is (out_features, r) = {want_B}.")
    for name, got, want, layout, inner in (("lora_A", got_A, want_A, "(r, in_features)", "A's 'out' is r"),
                                           ("lora_B", got_B, want_B, "(out_features, r)", "B's 'in' is r")):
        if got != want:
            flip = f" It is transposed: keep nn.Linear's (out, in) layout, where {inner}." if got == want[::-1] else ""
            checks.fail(f"{name} has shape {got}, expected {layout} = {want}.{flip}")
    checks.ok(f"A is (r, in_features) = {want_A} and B is (out_features, r) = {want_B}")

    # 2. initialisation (only meaningful on a freshly built layer)
    if is_class and "init" not in skip:
        checks.require(bool((B == 0).all()), "B is all zeros, so ΔW = B·A = 0 and step 0 reproduces the base model",
                       "Your ΔW is not zero at step 0, so the adapted model does not start from the base model. "
                       "Which of A or B should start at zero?")
        checks.require(bool((A != 0).any()), "A is not all zeros",
                       "A and B are both zero: then B's gradient (which goes through A·x) is zero and nothing ever "
                       "learns. Only B starts at zero; A starts random.")
        bound, a = 1 / math.sqrt(in_features), A.detach().float()
        spread = a.std().item() / (bound / math.sqrt(3))
        checks.require(a.abs().max().item() <= bound * (1 + 1e-6) and 0.75 < spread < 1.25,
                       f"A looks like U(±1/sqrt(in_features)) = U(±{bound:.4f}) (kaiming_uniform_, a=sqrt(5))",
                       f"A should start like nn.Linear's weight: kaiming_uniform_(A, a=math.sqrt(5)), i.e. uniform in "
                       f"±1/sqrt(in_features) = ±{bound:.4f}; yours has max |A| = {a.abs().max().item():.4f} and "
                       f"std {a.std().item():.4f} (expected {bound / math.sqrt(3):.4f}).")

    # 3. scaling
    want_s = alpha / r
    if hasattr(stu, "scaling"):
        s = float(stu.scaling)
        why = (" That is alpha alone: divide by r." if math.isclose(s, alpha) else
               " That is r / alpha, upside down." if math.isclose(s, r / alpha) else
               " That is rsLoRA's alpha / sqrt(r); plain LoRA uses alpha / r."
               if math.isclose(s, alpha / math.sqrt(r)) else "")
        checks.require(math.isclose(s, want_s, rel_tol=1e-9), f"scaling = alpha / r = {alpha:g} / {r} = {want_s:g}",
                       f"scaling is {s:g} but should be alpha / r = {alpha:g} / {r} = {want_s:g}.{why}")

    # 4. forward with identical A and B (B made non-zero so the adapter path counts)
    with torch.no_grad():
        _weight(ref, "B").normal_(0, 0.5)
    _copy_AB(ref, stu)
    stu.eval(), ref.eval()
    x = torch.randn(3, 5, in_features)
    with torch.no_grad():
        ys, yr, y0 = _run(checks, "Your forward(x)", lambda: stu(x)), ref(x), base(x)
    if tuple(ys.shape) != tuple(yr.shape):
        checks.fail(f"forward returned shape {tuple(ys.shape)}, expected {tuple(yr.shape)} (the same as base(x)).")
    if not torch.allclose(ys, yr, atol=atol, rtol=atol):
        dy_s, dy_r = (ys - y0).flatten(), (yr - y0).flatten()
        c = (dy_s @ dy_r / (dy_r @ dy_r)).item()
        if torch.allclose(dy_s, c * dy_r, atol=1e-4, rtol=1e-4) and abs(c - 1) > 1e-3:
            checks.fail(f"Your adapter's contribution is {c:.4g} x the reference's: apply scaling = alpha / r = "
                        f"{want_s:g} exactly once, to B(A(x)).")
        checks.fail(f"forward differs from base(x) + B(A(x)) * scaling by up to {(ys - yr).abs().max().item():.3g}. "
                    "Check the order (A first, then B) and that the base output W0·x (+ bias) is added.")
    checks.ok(f"forward = base(x) + B(A(x)) * scaling (within {atol:g})")

    # 5. dropout: only on the adapter's input, only in training
    if is_class and "dropout" not in skip:
        torch.manual_seed(seed + 2)
        stu_d = _build(student, copy.deepcopy(base), r, alpha, 0.5, checks)
        ref_d = LoRALinear(copy.deepcopy(base), r, alpha, dropout=0.5)
        _copy_AB(ref, ref_d)
        with torch.no_grad():
            _weight(ref_d, "B").zero_()
        _copy_AB(ref_d, stu_d)
        stu_d.train()
        with torch.no_grad():
            checks.require(torch.allclose(_run(checks, "forward(x) with dropout", lambda: stu_d(x)), y0, atol=atol,
                                          rtol=atol),
                           "with B = 0, dropout leaves the base path alone",
                           "With B = 0 and dropout=0.5 in train mode your output differs from base(x): dropout is "
                           "touching the base path or the output. It belongs only on the adapter's input: "
                           "B(A(dropout(x))).")
            _copy_AB(ref, ref_d), _copy_AB(ref, stu_d)
            ref_d.train()
            torch.manual_seed(seed + 3)
            yr_d = ref_d(x)
            torch.manual_seed(seed + 3)
            checks.require(torch.allclose(stu_d(x), yr_d, atol=atol, rtol=atol),
                           "dropout acts on the adapter's input x, before A",
                           "In train mode your adapter path differs from B(A(dropout(x))) * scaling with the same "
                           "random mask. Apply nn.Dropout(p) once, to x, before A: not to A's or B's output.")
            stu_d.eval()
            checks.require(torch.allclose(stu_d(x), yr, atol=atol, rtol=atol), "dropout is off in eval mode",
                           "In eval mode your output still changes: use an nn.Dropout module (or F.dropout(x, p, "
                           "self.training)) so dropout switches off for evaluation.")

    # 6. delta_weight
    want_dw = ref.delta_weight().detach()
    if "delta_weight" not in skip:
        if not callable(getattr(stu, "delta_weight", None)):
            checks.fail("Your layer has no delta_weight() method: add one returning (B @ A) * scaling.")
        with torch.no_grad():
            dw = _run(checks, "delta_weight()", stu.delta_weight)
        if tuple(dw.shape) != tuple(want_dw.shape):
            checks.fail(f"delta_weight() has shape {tuple(dw.shape)}, expected (out_features, in_features) = "
                        f"{tuple(want_dw.shape)}: it is B @ A, not A @ B or its transpose.")
        checks.require(torch.allclose(dw, want_dw, atol=atol, rtol=1e-5), "delta_weight() = (B @ A) * scaling",
                       "delta_weight() has the right shape but wrong values: it should be (B @ A) * scaling.")

    # 7. merge / unmerge
    if "merge" not in skip:
        if not (callable(getattr(stu, "merge", None)) and callable(getattr(stu, "unmerge", None))):
            checks.fail("Your layer needs merge() (W <- W0 + ΔW) and unmerge() (W <- W - ΔW) methods.")
        W0 = stu_base.weight.detach().clone()
        _run(checks, "merge()", stu.merge)
        with torch.no_grad():
            y_merged = _run(checks, "forward(x) after merge()", lambda: stu(x))
        checks.require(torch.allclose(stu_base.weight, W0 + want_dw, atol=atol, rtol=1e-5),
                       "merge() sets W = W0 + ΔW", "After merge() the base weight should be W0 + delta_weight().")
        checks.require(torch.allclose(y_merged, yr, atol=1e-5, rtol=1e-5),
                       "the merged layer gives the same output (and skips the adapter path)",
                       "After merge() the output changed. Once ΔW is inside W, forward must use the base alone; "
                       "adding B(A(x)) again counts the update twice.")
        _run(checks, "unmerge()", stu.unmerge)
        with torch.no_grad():
            y_back = stu(x)
        checks.require(torch.allclose(stu_base.weight, W0, atol=atol)
                       and torch.allclose(y_back, yr, atol=1e-5, rtol=1e-5),
                       "unmerge() restores W0 and the adapter path",
                       "After unmerge() W should be W0 again (W - ΔW) and forward should add the adapter path again.")

    # 8. frozen base, trainable adapters, same gradients
    unfrozen = [n for n, p in stu_base.named_parameters() if p.requires_grad]
    checks.require(not unfrozen, "the base layer is frozen (requires_grad=False)",
                   f"The base layer's {unfrozen} still have requires_grad=True: freeze W0 with "
                   "base.requires_grad_(False) so only A and B train; that is where LoRA saves memory.")
    checks.require(A.requires_grad and B.requires_grad, "A and B are trainable",
                   "A or B has requires_grad=False: they are the only weights that should train.")
    stu.train(), ref.train()
    g = torch.randn_like(yr)
    stu(x).backward(g), ref(x).backward(g)
    same = all(p.grad is not None and torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-5)
               for p, q in ((A, _weight(ref, "A")), (B, _weight(ref, "B"))))
    checks.require(same, "gradients of A and B match the reference",
                   "The gradients of A or B differ from the reference: is the adapter output (built from A and B) "
                   "part of what forward returns, with no .detach() or torch.no_grad() around it?")
    return checks.done()
