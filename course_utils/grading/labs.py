"""The graded labs. Adding a lab to the course (and to the graded test batch) is one line in LAB_TABLE.

`reference` is the course module that holds what the lab asks students to write; `off_limits` are its names an
answer may not use (importing them, or the module itself, scores that answer as not answered). Hidden tests never
compare against this module inside the student's kernel: scripts/labs/ computes the expected values when the lab
is built and writes them into the hidden tests, which only the grader and the gradebook hold.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lab:
    name: str
    reference: tuple[str, ...] = ()       # module prefixes, e.g. "course_utils.lora" (its submodules too)
    off_limits: tuple[str, ...] = ()      # names from `reference` that answers may not use
    cell_timeout: float | None = None     # None: the course's (nbgrader_config.py c.Execute.timeout)
    notebook_timeout: float | None = None


LAB_TABLE = (
    Lab("lab01_memory_wall", reference=("course_utils.memory", "course_utils.nf4"),
        off_limits=("bytes_per_param", "nf4_bits_per_param", "optimizer_bytes_per_param", "full_finetune_bytes",
                    "lora_param_count", "lora_bytes", "qlora_bytes", "count_params", "bits_per_parameter")),
    Lab("lab02_lora_from_scratch", reference=("course_utils.lora",),
        off_limits=("LoRALinear", "MinimalLoRALinear", "NamedAdapters", "add_lora", "match_targets", "merge_lora",
                    "unmerge_lora", "merge_and_unload", "lora_layers", "AdapterSpec")),
    Lab("lab03_nf4", reference=("course_utils.nf4", "bitsandbytes"),
        off_limits=("nf4_codebook", "quantize_nf4", "dequantize_nf4", "quantize_4bit", "dequantize_4bit", "quantize",
                    "dequantize", "normalize_blocks", "nearest_level", "pack_nibbles", "unpack_nibbles",
                    "bits_per_parameter", "codebook", "NF4Tensor", "get_4bit_type", "create_normal_map",
                    "quantize_blockwise", "dequantize_blockwise")),
    # lab04 uses the course's tools (nf4, lora, training) by design; what it is graded against is the grader's
    # build-time numbers, so the grading package itself is off limits.
    Lab("lab04_qlora", reference=("course_utils.grading",)),
    # lab05 trains with the course's tools and plants faults from its failure library (course_utils.experiments)
    # by design; its answers are diagnoses and configs, graded against build-time digests and marks.
    Lab("lab05_failure_diagnosis", reference=("course_utils.grading",)),
)

LABS = tuple(lab.name for lab in LAB_TABLE)
HIDDEN_BEGIN, HIDDEN_END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"

_BY_NAME = {lab.name: lab for lab in LAB_TABLE}


def lab_spec(lab) -> Lab:
    """The Lab for a name (a lab not in the table, e.g. a test fixture, gets no reference rules)."""
    if isinstance(lab, Lab):
        return lab
    return _BY_NAME.get(lab, Lab(lab))
