"""course_utils.grading.probe: how the grader reads the kernel's integrity reports (no kernel needed: the reports
are built here; the batch runs the real probe against real attacks)."""
from __future__ import annotations

import copy
import json

from course_utils.grading import probe

BASE = {"hooks": {"pre_run_cell": [], "post_execute": []}, "transformers": ["IPython:leading_empty_lines"],
        "custom_exc": "()", "tracing": [False, False], "sys_hooks": ["ipykernel:ZMQDisplayHook"],
        "overrides": [], "ids": {"course_utils.checks.check_value": 1, "builtins.abs": 2}, "answers": {}, "calls": []}


def text(report, nonce="n1"):
    return repr(json.dumps({**report, "nonce": nonce}))   # what user_expressions returns: the repr of a str


def watch():
    w = probe.Watch()
    assert w.check(text(BASE), "n1", trusted=True) == []
    return w


def changed(**kw):
    r = copy.deepcopy(BASE)
    for k, v in kw.items():
        r[k] = v
    return r


def test_an_unchanged_kernel_passes():
    assert watch().check(text(BASE), "n1", trusted=False) == []


def test_a_wrong_or_missing_answer_is_a_finding():
    w = watch()
    assert w.check(text(BASE, nonce="other"), "n1", trusted=False) != []
    assert w.check(None, "n1", trusted=False) != []
    assert w.check("'not json'", "n1", trusted=False) != []


def test_each_kind_of_tampering_is_named():
    cases = {
        "registered an IPython 'pre_run_cell' hook": changed(hooks={"pre_run_cell": ["__main__:<lambda>"]}),
        "input or AST transformer": changed(transformers=["IPython:leading_empty_lines", "__main__:<lambda>"]),
        "custom exception handler": changed(custom_exc="(<class 'BaseException'>,)"),
        "trace or profile function": changed(tracing=[True, False]),
        "sys hook": changed(sys_hooks=["__main__:Mine"]),
        "execution methods": changed(overrides=["run_cell"]),
        "rebound course_utils.checks.check_value": changed(ids={"course_utils.checks.check_value": 9,
                                                                "builtins.abs": 2}),
        "uses course_utils.lora.LoRALinear": changed(answers={"LoRALinear": "course_utils.lora.LoRALinear"}),
        "called fact_sentence": changed(calls=["fact_sentence"]),
    }
    for fragment, report in cases.items():
        found = watch().check(text(report), "n1", trusted=False)
        assert any(fragment in f for f in found), (fragment, found)


def test_our_own_cells_may_add_plotting_hooks_and_import_hooks():
    w = watch()
    plots = changed(hooks={"post_execute": ["matplotlib_inline.backend_inline:flush_figures"]},
                    sys_hooks=["ipykernel:ZMQDisplayHook", "course_utils.bnb_guard:_ImportHook"])
    assert w.check(text(plots), "n1", trusted=True) == []
    assert w.check(text(plots), "n1", trusted=False) == [], "accepted once, it is part of the baseline"
    student_hook = changed(hooks={"post_execute": ["matplotlib_inline.backend_inline:flush_figures",
                                                   "__main__:mine"]})
    assert watch().check(text(student_hook), "n1", trusted=True) != [], "a student's hook is never trusted"


def test_new_modules_are_not_tampering():
    report = changed(ids={**BASE["ids"], "course_utils.lora.add_lora": 5})
    assert watch().check(text(report), "n1", trusted=False) == []


def test_the_probe_expression_is_one_python_expression():
    for arm in (None, "cell", "test"):
        nonce, expr = probe.expression(["f"], ["course_utils.lora"], ["LoRALinear"], arm=arm, protected=["x"])
        compile(expr, "<probe>", "eval")
        assert nonce in expr


def test_a_student_cell_may_import_pyplot():
    """pyplot registers its own redraw hook when imported: that is not the student tampering."""
    report = changed(hooks={"pre_run_cell": [], "post_execute": ["matplotlib.pyplot:_draw_all_if_interactive"]})
    assert watch().check(text(report), "n1", trusted=False) == []
