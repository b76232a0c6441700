"""Lab02's checker: a student's LoRA layer against course_utils.lora.LoRALinear, one numbered step at a time.

`check_lora_layer` runs the steps in teaching order and stops at the first difference, with a message that asks
the question leading to the fix: 1 shapes, 2 init, 3 scaling, 4 forward, 5 dropout, 6 delta_weight, 7 merge and
unmerge, 8 frozen base and gradients.
"""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from .generic import CheckFailed, Checklist

PARTS = ("init", "dropout", "delta_weight", "merge")  # steps a lab may skip until it has taught them


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


@dataclass
class _Case:
    """What every step needs: the student's layer, the reference, their shared base, sizes and an input."""
    checks: Checklist
    student: object  # the class under test (None when an instance was given)
    stu: nn.Module
    ref: nn.Module
    base: nn.Module
    in_features: int
    out_features: int
    r: int
    alpha: float
    seed: int
    atol: float
    x: torch.Tensor | None = None
    y_ref: torch.Tensor | None = None
    y_base: torch.Tensor | None = None


def _step1_shapes(c: _Case):
    """A compresses in_features -> r, B expands r -> out_features."""
    A, B = _weight(c.stu, "A"), _weight(c.stu, "B")
    if A is None or B is None:
        c.checks.fail("Cannot find A and B: store them as `self.lora_A` and `self.lora_B` (nn.Parameter, or "
                      "nn.Linear(in_features, r, bias=False) / nn.Linear(r, out_features, bias=False)).")
    want_A, want_B = (c.r, c.in_features), (c.out_features, c.r)
    got_A, got_B = tuple(A.shape), tuple(B.shape)
    if got_A == want_B and got_B == want_A:
        c.checks.fail(f"lora_A has shape {got_A} and lora_B {got_B}: A and B are swapped. A reads the input, so A "
                      f"is (r, in_features) = {want_A}; B writes the output, so B is (out_features, r) = {want_B}.")
    for name, got, want, layout, inner in (("lora_A", got_A, want_A, "(r, in_features)", "A's 'out' is r"),
                                           ("lora_B", got_B, want_B, "(out_features, r)", "B's 'in' is r")):
        if got != want:
            flip = f" It is transposed: keep nn.Linear's (out, in) layout, where {inner}." if got == want[::-1] else ""
            c.checks.fail(f"{name} has shape {got}, expected {layout} = {want}.{flip}")
    c.checks.ok(f"A is (r, in_features) = {want_A} and B is (out_features, r) = {want_B}")


def _step2_init(c: _Case):
    """B = 0 (so the adapted model starts as the base), A random like nn.Linear's weight."""
    A, B = _weight(c.stu, "A"), _weight(c.stu, "B")
    c.checks.require(bool((B == 0).all()), "B is all zeros, so ΔW = B·A = 0 and step 0 reproduces the base model",
                     "Your ΔW is not zero at step 0, so the adapted model does not start from the base model. "
                     "Which of A or B should start at zero?")
    c.checks.require(bool((A != 0).any()), "A is not all zeros",
                     "A and B are both zero: then B's gradient (which goes through A·x) is zero and nothing ever "
                     "learns. Only B starts at zero; A starts random.")
    bound, a = 1 / math.sqrt(c.in_features), A.detach().float()
    spread = a.std().item() / (bound / math.sqrt(3))
    c.checks.require(a.abs().max().item() <= bound * (1 + 1e-6) and 0.75 < spread < 1.25,
                     f"A looks like U(±1/sqrt(in_features)) = U(±{bound:.4f}) (kaiming_uniform_, a=sqrt(5))",
                     f"A should start like nn.Linear's weight: kaiming_uniform_(A, a=math.sqrt(5)), i.e. uniform in "
                     f"±1/sqrt(in_features) = ±{bound:.4f}; yours has max |A| = {a.abs().max().item():.4f} and "
                     f"std {a.std().item():.4f} (expected {bound / math.sqrt(3):.4f}).")


def _step3_scaling(c: _Case):
    want = c.alpha / c.r
    if not hasattr(c.stu, "scaling"):
        return
    s = float(c.stu.scaling)
    why = (" That is alpha alone: divide by r." if math.isclose(s, c.alpha) else
           " That is r / alpha, upside down." if math.isclose(s, c.r / c.alpha) else
           " That is rsLoRA's alpha / sqrt(r); plain LoRA uses alpha / r."
           if math.isclose(s, c.alpha / math.sqrt(c.r)) else "")
    c.checks.require(math.isclose(s, want, rel_tol=1e-9), f"scaling = alpha / r = {c.alpha:g} / {c.r} = {want:g}",
                     f"scaling is {s:g} but should be alpha / r = {c.alpha:g} / {c.r} = {want:g}.{why}")


def _step4_forward(c: _Case):
    """Same A and B in both layers (B made non-zero so the adapter path counts), same input, same output."""
    with torch.no_grad():
        _weight(c.ref, "B").normal_(0, 0.5)
    _copy_AB(c.ref, c.stu)
    c.stu.eval(), c.ref.eval()
    c.x = torch.randn(3, 5, c.in_features)
    with torch.no_grad():
        ys = _run(c.checks, "Your forward(x)", lambda: c.stu(c.x))
        c.y_ref, c.y_base = c.ref(c.x), c.base(c.x)
    if tuple(ys.shape) != tuple(c.y_ref.shape):
        c.checks.fail(f"forward returned shape {tuple(ys.shape)}, expected {tuple(c.y_ref.shape)} (the same as "
                      "base(x)).")
    if not torch.allclose(ys, c.y_ref, atol=c.atol, rtol=c.atol):
        dy_s, dy_r = (ys - c.y_base).flatten(), (c.y_ref - c.y_base).flatten()
        k = (dy_s @ dy_r / (dy_r @ dy_r)).item()
        if torch.allclose(dy_s, k * dy_r, atol=1e-4, rtol=1e-4) and abs(k - 1) > 1e-3:
            c.checks.fail(f"Your adapter's contribution is {k:.4g} x the reference's: apply scaling = alpha / r = "
                          f"{c.alpha / c.r:g} exactly once, to B(A(x)).")
        c.checks.fail(f"forward differs from base(x) + B(A(x)) * scaling by up to "
                      f"{(ys - c.y_ref).abs().max().item():.3g}. Check the order (A first, then B) and that the base "
                      "output W0·x (+ bias) is added.")
    c.checks.ok(f"forward = base(x) + B(A(x)) * scaling (within {c.atol:g})")


def _step5_dropout(c: _Case):
    """Dropout acts only on the adapter's input, and only in training."""
    from ..lora import LoRALinear

    torch.manual_seed(c.seed + 2)
    stu_d = _build(c.student, copy.deepcopy(c.base), c.r, c.alpha, 0.5, c.checks)
    ref_d = LoRALinear(copy.deepcopy(c.base), c.r, c.alpha, dropout=0.5)
    _copy_AB(c.ref, ref_d)
    with torch.no_grad():
        _weight(ref_d, "B").zero_()
    _copy_AB(ref_d, stu_d)
    stu_d.train()
    close = lambda a, b: torch.allclose(a, b, atol=c.atol, rtol=c.atol)  # noqa: E731
    with torch.no_grad():
        c.checks.require(close(_run(c.checks, "forward(x) with dropout", lambda: stu_d(c.x)), c.y_base),
                         "with B = 0, dropout leaves the base path alone",
                         "With B = 0 and dropout=0.5 in train mode your output differs from base(x): dropout is "
                         "touching the base path or the output. It belongs only on the adapter's input: "
                         "B(A(dropout(x))).")
        _copy_AB(c.ref, ref_d), _copy_AB(c.ref, stu_d)
        ref_d.train()
        torch.manual_seed(c.seed + 3)
        yr_d = ref_d(c.x)
        torch.manual_seed(c.seed + 3)
        c.checks.require(close(stu_d(c.x), yr_d), "dropout acts on the adapter's input x, before A",
                         "In train mode your adapter path differs from B(A(dropout(x))) * scaling with the same "
                         "random mask. Apply nn.Dropout(p) once, to x, before A: not to A's or B's output.")
        stu_d.eval()
        c.checks.require(close(stu_d(c.x), c.y_ref), "dropout is off in eval mode",
                         "In eval mode your output still changes: use an nn.Dropout module (or F.dropout(x, p, "
                         "self.training)) so dropout switches off for evaluation.")


def _step6_delta_weight(c: _Case):
    want = c.ref.delta_weight().detach()
    if not callable(getattr(c.stu, "delta_weight", None)):
        c.checks.fail("Your layer has no delta_weight() method: add one returning (B @ A) * scaling.")
    with torch.no_grad():
        dw = _run(c.checks, "delta_weight()", c.stu.delta_weight)
    if tuple(dw.shape) != tuple(want.shape):
        c.checks.fail(f"delta_weight() has shape {tuple(dw.shape)}, expected (out_features, in_features) = "
                      f"{tuple(want.shape)}: it is B @ A, not A @ B or its transpose.")
    c.checks.require(torch.allclose(dw, want, atol=c.atol, rtol=1e-5), "delta_weight() = (B @ A) * scaling",
                     "delta_weight() has the right shape but wrong values: it should be (B @ A) * scaling.")


def _step7_merge(c: _Case):
    if not (callable(getattr(c.stu, "merge", None)) and callable(getattr(c.stu, "unmerge", None))):
        c.checks.fail("Your layer needs merge() (W <- W0 + ΔW) and unmerge() (W <- W - ΔW) methods.")
    stu_base, want = _base(c.stu), c.ref.delta_weight().detach()
    W0 = stu_base.weight.detach().clone()
    _run(c.checks, "merge()", c.stu.merge)
    with torch.no_grad():
        y_merged = _run(c.checks, "forward(x) after merge()", lambda: c.stu(c.x))
    c.checks.require(torch.allclose(stu_base.weight, W0 + want, atol=c.atol, rtol=1e-5),
                     "merge() sets W = W0 + ΔW", "After merge() the base weight should be W0 + delta_weight().")
    c.checks.require(torch.allclose(y_merged, c.y_ref, atol=1e-5, rtol=1e-5),
                     "the merged layer gives the same output (and skips the adapter path)",
                     "After merge() the output changed. Once ΔW is inside W, forward must use the base alone; "
                     "adding B(A(x)) again counts the update twice.")
    _run(c.checks, "unmerge()", c.stu.unmerge)
    with torch.no_grad():
        y_back = c.stu(c.x)
    c.checks.require(torch.allclose(stu_base.weight, W0, atol=c.atol)
                     and torch.allclose(y_back, c.y_ref, atol=1e-5, rtol=1e-5),
                     "unmerge() restores W0 and the adapter path",
                     "After unmerge() W should be W0 again (W - ΔW) and forward should add the adapter path again.")


def _step8_gradients(c: _Case):
    """Only A and B train, and their gradients equal the reference's."""
    A, B = _weight(c.stu, "A"), _weight(c.stu, "B")
    unfrozen = [n for n, p in _base(c.stu).named_parameters() if p.requires_grad]
    c.checks.require(not unfrozen, "the base layer is frozen (requires_grad=False)",
                     f"The base layer's {unfrozen} still have requires_grad=True: freeze W0 with "
                     "base.requires_grad_(False) so only A and B train; that is where LoRA saves memory.")
    c.checks.require(A.requires_grad and B.requires_grad, "A and B are trainable",
                     "A or B has requires_grad=False: they are the only weights that should train.")
    c.stu.train(), c.ref.train()
    g = torch.randn_like(c.y_ref)
    c.stu(c.x).backward(g), c.ref(c.x).backward(g)
    same = all(p.grad is not None and torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-5)
               for p, q in ((A, _weight(c.ref, "A")), (B, _weight(c.ref, "B"))))
    c.checks.require(same, "gradients of A and B match the reference",
                     "The gradients of A or B differ from the reference: is the adapter output (built from A and B) "
                     "part of what forward returns, with no .detach() or torch.no_grad() around it?")


def check_lora_layer(student, in_features: int = 64, out_features: int = 48, r: int = 8, alpha: float = 16,
                     seed: int = 0, atol: float = 1e-6, skip=(), verbose: bool = True) -> Checklist:
    """Compare a student's LoRA layer class (or a freshly built instance) with `course_utils.lora.LoRALinear`.

    `skip` may name parts a lab has not reached yet: "init", "dropout", "delta_weight", "merge".
    A student layer needs: `base` (the nn.Linear), `lora_A` (r x in) and `lora_B` (out x r) as nn.Parameter or
    nn.Linear, optionally `scaling`; `delta_weight()`, `merge()` and `unmerge()` unless skipped.
    """
    from ..lora import LoRALinear

    unknown = set(skip) - set(PARTS)
    if unknown:
        raise ValueError(f"skip={sorted(unknown)} is not a part of this check; use one of {PARTS}.")
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
    if _base(stu) is None:
        checks.fail("Cannot find the frozen base layer: store it as `self.base` (the nn.Linear holding W0).")
    c = _Case(checks, student if is_class else None, stu, LoRALinear(copy.deepcopy(base), r, alpha), base,
              in_features, out_features, r, alpha, seed, atol)
    steps = [(_step1_shapes, None), (_step2_init, "init"), (_step3_scaling, None), (_step4_forward, None),
             (_step5_dropout, "dropout"), (_step6_delta_weight, "delta_weight"), (_step7_merge, "merge"),
             (_step8_gradients, None)]
    for step, part in steps:
        if part in skip or (part in ("init", "dropout") and not is_class):  # init and dropout need a fresh build
            continue
        step(c)
    return checks.done()
