"""course_utils.grading.screen: what an answer may not do, read before it runs (no kernel needed)."""
from __future__ import annotations

import pytest

from course_utils.grading.labs import lab_spec
from course_utils.grading.screen import assigned_names, imports_of, screen

LAB2 = lab_spec("lab02_lora_from_scratch")
OURS = imports_of(["import math\nimport torch\nimport torch.nn as nn\nimport course_utils\n"
                   "from course_utils.checks import check_lora_layer, check_value",
                   "from course_utils.lora import add_lora, count_parameters"])


def kinds(source, **kw):
    return [f.kind for f in screen(source, LAB2, OURS, **kw)]


@pytest.mark.parametrize("source", [
    "class LoRALinear(nn.Module):\n    def __init__(self, base, r, alpha, dropout=0.0):\n        super().__init__()\n"
    "        self.base = base\n        self.lora_A = nn.Parameter(torch.zeros(r, base.in_features))\n"
    "    def forward(self, x):\n        return self.base(x)",
    "def inject_lora(model, target_names, r, alpha, dropout=0.0):\n    model.requires_grad_(False)\n"
    "    for name, module in list(model.named_modules()):\n        parent, _, child = name.rpartition('.')\n"
    "        setattr(model.get_submodule(parent), child, module)\n    return []",
    "import torch\nfrom course_utils.checks import check_value\nimport math",   # re-importing what we imported
    "from course_utils.lora import count_parameters",                        # allowed from the reference module
    "import sys\nsys.exit()", "import os\nos._exit(1)", "while True:\n    pass",
    "def merge_all(model):\n    for m in model.modules():\n        m.merge()",
    "n_full = 128 * 128\nn_lora = 8 * (128 + 128)",
])
def test_honest_answers_pass(source):
    assert screen(source, LAB2, OURS) == []


@pytest.mark.parametrize("source, fragment", [
    ("from course_utils.lora import LoRALinear", "imports course_utils.lora.LoRALinear"),
    ("import course_utils.lora as L", "imports course_utils.lora"),
    ("from course_utils import lora", "imports course_utils.lora"),
    ("from course_utils.lora.layer import LoRALinear", "course_utils.lora.layer.LoRALinear"),
    ("from course_utils.lora import *", "course_utils.lora.*"),
    ("X = course_utils.lora.LoRALinear", "uses course_utils.lora.LoRALinear"),
    ("def inject_lora(m, t, r, a):\n    return add_lora(m, t, r=r, alpha=a)", "uses add_lora (course_utils.lora"),
])
def test_reference_use_is_refused(source, fragment):
    found = screen(source, LAB2, OURS)
    assert found and found[0].kind == "reference" and fragment in found[0].message, found


@pytest.mark.parametrize("source, fragment", [
    ("get_ipython().events.register('pre_run_cell', print)", ".events"),
    ("%timeit 1", "get_ipython"),
    ("!ls", "get_ipython"),
    ("exec('x = 1')", "exec"),
    ("eval('1')", "eval"),
    ("__import__('os')", "__import__"),
    ("import importlib", "importlib"),
    ("import builtins\nbuiltins.abs = lambda x: 0", "builtins"),
    ("check_value = lambda *a, **k: None", "rebinds check_value"),
    ("def f():\n    global check_value\n    check_value = print", "rebinds check_value"),
    ("import course_utils.checks as c\nc.check_value = print", "monkeypatching"),
    ("setattr(torch, 'allclose', lambda *a, **k: True)", "monkeypatching"),
    ("T = torch.Tensor\nT.allclose = lambda *a, **k: True", "assigns to an attribute of T"),
    ("class Always:\n    def __eq__(self, other):\n        return True", "defines __eq__"),
    ("X = type('X', (float,), {'__eq__': lambda s, o: True})", "type(name, bases, dict)"),
    ("import sys\nsys.settrace(print)", ".settrace"),
    ("import sys\nm = sys.modules", "sys.modules"),
    ("f = check_value.__code__", ".__code__"),
    ("exit._ip.events", "._ip"),
    ("print(In[3])", "uses In"),
    ("print(_i3)", "reads _i3"),
    ("import threading", "threading"),
    ("import signal", "signal"),
    ("import weakref", "weakref"),
    ("import pkgutil", "pkgutil"),
    ("g = getattr\ng(course_utils, 'lora')", "passes getattr around"),
    ("getattr(course_utils, 'lo' + 'ra')", "looks up a name of course_utils"),
    ("getattr(model, '__class__')", "looks up .__class__"),
    ("abs = lambda x: 0", "rebinds the builtin abs"),
])
def test_tampering_is_refused(source, fragment):
    found = screen(source, LAB2, OURS)
    assert any(f.kind == "tamper" and fragment in f.message for f in found), found


def test_added_cells_may_not_overwrite_what_provided_cells_computed():
    provided = assigned_names(["measured = measure(model)\nmodel, tokenizer = load()"])
    assert provided == {"measured", "model", "tokenizer"}
    assert kinds("measured = predicted", provided_names=provided, shadow_check=True) == ["shadow"]
    assert kinds("measured = predicted", provided_names=provided) == []  # an answer cell's own business
    assert kinds("def f():\n    global measured\n    measured = 1", provided_names=provided) == ["tamper"]


def test_a_syntax_error_is_left_to_the_kernel():
    assert screen("def f(:\n", LAB2, OURS) == []
