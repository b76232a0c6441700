"""Self-checks with messages that teach.

    generic      CheckFailed, Checklist, check_value: stop at the first difference (labs, tests)
    notebook     predict / reveal / exercise: chapters' predictions and exercises, never stopping Run All
    lora_layer   lab02's step-by-step comparison of a student's LoRA layer with course_utils.lora
"""
from .generic import CheckFailed, Checklist, check_value
from .lora_layer import check_lora_layer
from .notebook import exercise, predict, reveal, summary

__all__ = ["CheckFailed", "Checklist", "check_value", "check_lora_layer", "exercise", "predict", "reveal", "summary"]
