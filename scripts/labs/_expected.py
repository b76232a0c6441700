"""Expected values for hidden tests, computed from the course's reference code when a lab is built.

A hidden test never imports the reference inside the student's kernel: the student's own code could reach and
change it there. The numbers are computed here, in the build, and written into the hidden test as literals, so
they exist only in solutions/ and in the gradebook, which a graded kernel cannot read.
"""
from __future__ import annotations

import torch
import torch.nn as nn

# The deterministic LoRA case used by lab02's hidden tests. The same code runs in the grader's kernel with the
# student's class (attributes lora_A, lora_B) and here with the reference (A, B): only `make` and `set_ab` differ.
LORA_CASE = '''
def _case(make, i, o, r, alpha, seed, dropout=0.0):
    torch.manual_seed(seed)
    base = nn.Linear(i, o)
    g = torch.Generator().manual_seed(seed + 1)
    a, b, x = torch.randn(r, i, generator=g) * 0.3, torch.randn(o, r, generator=g) * 0.3, torch.randn(4, i, generator=g)
    layer = make(base, r, alpha, dropout, a, b)
    return layer, x


def _fp(t):
    """Three numbers that pin a tensor down: its sum, its sum of |values| and a position-weighted sum."""
    t = t.detach().double().flatten()
    w = torch.arange(1, t.numel() + 1, dtype=torch.float64) / t.numel()
    return [round(float(v), 6) for v in (t.sum(), t.abs().sum(), (t * w).sum())]
'''

STUDENT_MAKE = '''
def _make(base, r, alpha, dropout, a, b):
    layer = LoRALinear(base, r=r, alpha=alpha, dropout=dropout)
    with torch.no_grad():
        layer.lora_A.copy_(a)
        layer.lora_B.copy_(b)
    return layer


def _close(got, want, what, hint):
    bad = [(g, w) for g, w in zip(got, want) if abs(g - w) > 1e-4 * (1 + abs(w))]
    assert len(got) == len(want) and not bad, f"{what}: your numbers differ from the reference. {hint}"
'''


def _ref_make(base, r, alpha, dropout, a, b):
    from course_utils.lora import LoRALinear

    layer = LoRALinear(base, r, alpha, dropout=dropout)
    with torch.no_grad():
        layer.A.copy_(a)
        layer.B.copy_(b)
    return layer


def _namespace() -> dict:
    ns = {"torch": torch, "nn": nn}
    exec(LORA_CASE, ns)
    return ns


def _exact(fn):
    """Run the reference in float64 on one thread: the literals it produces must not depend on the machine that
    builds the lab (tests/test_labs.py rebuilds them and compares the sources)."""
    def run(*args, **kwargs):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    return run


def _double(layer, x):
    return layer.double(), x.double()


@_exact
def lora_forward(i, o, r, alpha, seed) -> list:
    ns = _namespace()
    layer, x = _double(*ns["_case"](_ref_make, i, o, r, alpha, seed))
    layer.eval()
    with torch.no_grad():
        return ns["_fp"](layer(x))


@_exact
def lora_dropout(i, o, r, alpha, seed) -> list:
    """Train-mode output with dropout=0.5 and the RNG seeded right before the forward."""
    ns = _namespace()
    layer, x = _double(*ns["_case"](_ref_make, i, o, r, alpha, seed, dropout=0.5))
    layer.train()
    torch.manual_seed(seed + 2)
    with torch.no_grad():
        return ns["_fp"](layer(x))


@_exact
def lora_merge(i, o, r, alpha, seed) -> dict:
    ns = _namespace()
    layer, x = _double(*ns["_case"](_ref_make, i, o, r, alpha, seed))
    layer.eval()
    with torch.no_grad():
        out = {"delta_weight": ns["_fp"](layer.delta_weight()), "forward": ns["_fp"](layer(x))}
        layer.merge()
        out["merged_weight"] = ns["_fp"](layer.base_layer.weight)
    return out


@_exact
def lora_model(targets, r, alpha, seed) -> dict:
    """The course model with LoRA on `targets`, A and B drawn in sorted-name order: names, trainable, logits."""
    from course_utils.lora import add_lora, count_parameters
    from course_utils.models import load_course_model

    ns = _namespace()
    model, tokenizer = load_course_model()
    add_lora(model, list(targets), r=r, alpha=alpha)
    names = sorted(n for n, m in model.named_modules() if hasattr(m, "A") and n.rsplit(".", 1)[-1] in targets)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n in names:
            m = model.get_submodule(n)
            m.A.copy_(torch.randn(m.A.shape, generator=g) * 0.05)
            m.B.copy_(torch.randn(m.B.shape, generator=g) * 0.05)
        model.double().eval()
        probe = tokenizer(["dear emma, today the cat ate my pear"], return_tensors="pt").input_ids
        logits = model(probe).logits
    return {"names": names, "trainable": count_parameters(model)[0], "logits": ns["_fp"](logits)}
