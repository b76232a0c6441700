"""course_utils.checks: lab02's LoRA-layer checker, check_value, and the chapters' predict / reveal / exercise."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from course_utils import lora as L
from course_utils.checks import CheckFailed, check_lora_layer, check_value, exercise, predict, reveal, summary


# --- self-checks (lab02) ----------------------------------------------------------------------------------

class StudentLoRA(nn.Module):
    """A correct from-scratch answer: nn.Parameter A and B, Delta W built on the fly."""

    def __init__(self, base, r, alpha, dropout=0.0):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout)
        self.merged = False

    def delta_weight(self):
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x):
        y = self.base(x)
        return y if self.merged else y + self.dropout(x) @ self.lora_A.T @ self.lora_B.T * self.scaling

    def merge(self):
        with torch.no_grad():
            self.base.weight += self.delta_weight()
        self.merged = True

    def unmerge(self):
        with torch.no_grad():
            self.base.weight -= self.delta_weight()
        self.merged = False


class RandomB(StudentLoRA):
    def __init__(self, base, r, alpha, dropout=0.0):
        super().__init__(base, r, alpha, dropout)
        nn.init.normal_(self.lora_B)


class ScalingAlpha(StudentLoRA):
    def __init__(self, base, r, alpha, dropout=0.0):
        super().__init__(base, r, alpha, dropout)
        self.scaling = alpha


class HiddenDoubleScaling(StudentLoRA):
    def forward(self, x):
        return self.base(x) + self.dropout(x) @ self.lora_A.T @ self.lora_B.T * self.scaling * 2


class DropoutOnOutput(StudentLoRA):
    def forward(self, x):
        return self.dropout(self.base(x) + x @ self.lora_A.T @ self.lora_B.T * self.scaling)


class DropoutAfterB(StudentLoRA):
    def forward(self, x):
        return self.base(x) + self.dropout(x @ self.lora_A.T @ self.lora_B.T) * self.scaling


class SwappedShapes(StudentLoRA):
    def __init__(self, base, r, alpha, dropout=0.0):
        super().__init__(base, r, alpha, dropout)
        self.lora_A = nn.Parameter(torch.randn(base.out_features, r) * 0.01)
        self.lora_B = nn.Parameter(torch.zeros(r, base.in_features))


class UnfrozenBase(StudentLoRA):
    def __init__(self, base, r, alpha, dropout=0.0):
        super().__init__(base, r, alpha, dropout)
        self.base.requires_grad_(True)


class MergeCountsTwice(StudentLoRA):
    def forward(self, x):
        return self.base(x) + self.dropout(x) @ self.lora_A.T @ self.lora_B.T * self.scaling


class LinearStudent(nn.Module):
    """Another correct answer, built from nn.Linear modules the way PEFT does."""

    def __init__(self, base, r, alpha, dropout=0.0):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)
        self.scaling, self.drop, self.merged = alpha / r, nn.Dropout(dropout), False

    def delta_weight(self):
        return self.lora_B.weight @ self.lora_A.weight * self.scaling

    def forward(self, x):
        return self.base(x) + (0 if self.merged else self.lora_B(self.lora_A(self.drop(x))) * self.scaling)

    def merge(self):
        self.base.weight.data += self.delta_weight().detach()
        self.merged = True

    def unmerge(self):
        self.base.weight.data -= self.delta_weight().detach()
        self.merged = False


@pytest.mark.parametrize("student", [StudentLoRA, LinearStudent, L.LoRALinear])
def test_correct_student_layers_pass_every_check(student, capsys):
    report = check_lora_layer(student)
    assert len(report.passed) >= 12 and "🎉" in capsys.readouterr().out


@pytest.mark.parametrize("student, words", [
    (RandomB, "Which of A or B should start at zero?"),
    (ScalingAlpha, "That is alpha alone: divide by r"),
    (HiddenDoubleScaling, "contribution is 2 x the reference's"),
    (DropoutOnOutput, "dropout is touching the base path or the output"),
    (DropoutAfterB, "Apply nn.Dropout(p) once, to x, before A"),
    (SwappedShapes, "A and B are swapped"),
    (UnfrozenBase, "freeze W0 with base.requires_grad_(False)"),
    (MergeCountsTwice, "counts the update twice"),
])
def test_broken_student_layers_fail_with_the_teaching_message(student, words):
    with pytest.raises(CheckFailed) as err:
        check_lora_layer(student, verbose=False)
    assert words in str(err.value), str(err.value)


class TransposedA(StudentLoRA):
    def __init__(self, base, r, alpha, dropout=0.0):
        super().__init__(base, r, alpha, dropout)
        self.lora_A = nn.Parameter(self.lora_A.detach().T.contiguous())


class CrashingForward(StudentLoRA):
    def forward(self, x):
        return self.base(x) + x @ self.lora_A @ self.lora_B  # wrong orientation: shapes do not line up


class NoMerge(nn.Module):
    def __init__(self, base, r, alpha, dropout=0.0):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features).uniform_(-1, 1) / math.sqrt(base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + x @ self.lora_A.T @ self.lora_B.T * self.scaling


class Skeleton(nn.Module):
    def __init__(self, base, r, alpha, dropout=0.0):
        super().__init__()
        raise NotImplementedError


def test_checks_report_transposes_crashes_and_missing_methods():
    with pytest.raises(CheckFailed, match="raised NotImplementedError.*Finish __init__ first"):
        check_lora_layer(Skeleton, verbose=False)
    with pytest.raises(CheckFailed, match=r"lora_A has shape \(64, 8\), expected \(r, in_features\).*transposed"):
        check_lora_layer(TransposedA, verbose=False)
    with pytest.raises(CheckFailed, match="Your forward\\(x\\) raised RuntimeError"):
        check_lora_layer(CrashingForward, verbose=False)
    with pytest.raises(CheckFailed, match="no delta_weight\\(\\) method"):
        check_lora_layer(NoMerge, verbose=False, skip=("dropout",))
    # A lab that has not reached dropout / merging yet skips those parts.
    check_lora_layer(NoMerge, verbose=False, skip=("dropout", "delta_weight", "merge"))
    with pytest.raises(ValueError, match="is not a part of this check"):
        check_lora_layer(StudentLoRA, skip=("speed",))


def test_check_lora_layer_accepts_an_instance():
    check_lora_layer(L.LoRALinear(nn.Linear(32, 16), r=4, alpha=8), verbose=False)


def test_check_value_passes_quietly_and_fails_with_the_hint(capsys):
    assert check_value("trainable %", 1.5135, 1.51348, rtol=1e-4) is None  # nothing to echo in a notebook
    check_value("shape", (8, 128), (8, 128))
    check_value("name", "q_proj", "q_proj")
    assert capsys.readouterr().out.count("✅") == 3
    with pytest.raises(CheckFailed, match="got 2.0, expected 1.0.*Hint: divide by r"):
        check_value("scaling", 2.0, 1.0, hint="divide by r")
    with pytest.raises(CheckFailed, match=r"shape \(2,\), expected \(3,\)"):
        check_value("v", torch.ones(2), [1, 1, 1])
    check_value("bytes", {"weights": 4.0, "grads": 8}, {"weights": 4, "grads": 8}, verbose=False)
    with pytest.raises(CheckFailed, match=r"bytes\['grads'\]: got 9, expected 8"):
        check_value("bytes", {"weights": 4, "grads": 9}, {"weights": 4, "grads": 8})


# --- predictions and exercises in the chapters ----------------------------------------------------------------

def test_unanswered_prediction_and_exercise_say_so_and_never_raise(capsys):
    predict("7B fp16 GiB", None)
    reveal("7B fp16 GiB", 13.04)
    exercise("ex 1", None, 8)

    def stub():
        raise NotImplementedError("write it")

    exercise("ex 2", stub, 8)
    out = capsys.readouterr().out
    assert out.count("not answered yet") == 4 and "13.04" in out


def test_prediction_close_or_far_with_the_reason(capsys):
    predict("p", 13)
    assert reveal("p", 13.04, rtol=0.2) == "close"
    predict("p", 30)
    assert reveal("p", 13.04, rtol=0.2, why="2 bytes per parameter.") == "far"
    out = capsys.readouterr().out
    assert "you predicted 13, measured 13.04: close" in out
    assert "you predicted 30, measured 13.04: far off. 2 bytes per parameter." in out


def test_choice_predictions_must_be_one_of_the_choices(capsys):
    predict("which", "neither", choices=["q,v", "all-linear"])
    assert reveal("which", "all-linear") == "not answered"
    predict("which", " ALL-linear", choices=["q,v", "all-linear"])
    assert reveal("which", "all-linear") == "close"
    assert "is not one of the choices" in capsys.readouterr().out


def test_exercise_right_wrong_and_crashing_answers(capsys):
    exercise("a", 8.0, 8)
    exercise("b", 9, 8, hint="m and v")
    exercise("c", lambda: 1 / 0, 8)
    exercise("d", [1, 2.0005], [1, 2], rtol=1e-3)
    exercise("e", "B", "b", choices=["a", "b"])
    out = capsys.readouterr().out
    assert "✅ a" in out and "❌ b: 9 is not it. Hint: m and v" in out and "ZeroDivisionError" in out
    assert "✅ d" in out and "✅ e" in out
    summary()
    assert "right" in capsys.readouterr().out


def test_a_wrong_pick_is_told_why_without_the_right_answer(capsys):
    why = {"a": "fp16 has 5 exponent bits.", 2: "That counts the weights alone."}
    exercise("q", " A", "b", choices=["a", "b"], why=why, hint="Re-read 03 · 3.1.")
    exercise("n", 2.0001, 16, why=why)
    exercise("m", 12, 16, why=why, hint="Re-read 02 · 2.2.")
    out = capsys.readouterr().out
    assert "❌ q: ' A' is not it. fp16 has 5 exponent bits. Hint: Re-read 03 · 3.1." in out
    assert "❌ n: 2 is not it. That counts the weights alone." in out  # matched within rtol, like the answer
    assert "❌ m: 12 is not it. Hint: Re-read 02 · 2.2." in out and "'b'" not in out and " 16" not in out
