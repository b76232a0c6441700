"""The embedded course model: a tiny Llama, pretrained offline by scripts/build_course_model.py.

Its linear layers carry the names the course teaches (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj,
down_proj), so every PEFT recipe written for Llama-7B runs on it unchanged, just ~7,000x smaller.
Set COURSE_MODEL to a hub id or a local path to use a real model instead (needs COURSE_ONLINE=1 for a hub id).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from .paths import MODEL_DIR

COURSE_MODEL_ENV = "COURSE_MODEL"
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_NAMES = ("gate_proj", "up_proj", "down_proj")

# Sized so one LoRA step on a 16 x 64-token batch stays far below 100 ms on 2 cores, while every weight
# matrix still splits into whole 64-element NF4 blocks.
COURSE_MODEL_SHAPE = dict(
    vocab_size=1024,
    hidden_size=128,
    intermediate_size=352,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)


def course_model_config(**overrides):
    """The course model's LlamaConfig (token ids match the course tokenizer)."""
    from transformers import LlamaConfig

    from .tokenizer import SPECIAL_TOKENS

    shape = {**COURSE_MODEL_SHAPE, **overrides}
    return LlamaConfig(
        **shape,
        pad_token_id=SPECIAL_TOKENS.index("<pad>"),
        bos_token_id=SPECIAL_TOKENS.index("<bos>"),
        eos_token_id=SPECIAL_TOKENS.index("<eos>"),
    )


def tiny_llama(seed: int = 0, **overrides):
    """A randomly initialised model with the course model's architecture (the 'no pretraining' control)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(course_model_config(**overrides))
    return model.eval()


def resolve_model_source(name_or_path: str | os.PathLike | None = None) -> str:
    """Explicit argument > $COURSE_MODEL > the embedded course model."""
    src = name_or_path or os.environ.get(COURSE_MODEL_ENV) or MODEL_DIR
    return str(src)


def is_embedded(source: str) -> bool:
    return Path(source).resolve() == MODEL_DIR.resolve()


def load_course_model(name_or_path=None, *, dtype=torch.float32, verify: bool = True, **from_pretrained_kwargs):
    """Load (model, tokenizer) through the real `from_pretrained` path.

    The embedded model is checked against MANIFEST.sha256 first, so a corrupted checkout fails loudly here
    instead of training on garbage. Extra kwargs (e.g. quantization_config) go to `from_pretrained`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model_source(name_or_path)
    if is_embedded(source):
        if not (Path(source) / "config.json").exists():
            raise FileNotFoundError(
                f"The course model is missing from {source}. Restore it with `git checkout -- course_utils/assets` "
                "or rebuild it with `python scripts/build_course_model.py`."
            )
        if verify:
            from .manifest import verify_manifest

            verify_manifest(raise_on_error=True)
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(source)
    # A "Loading weights" bar for a 4 MB model is noise in a notebook; keep it for real (large) models.
    quiet = is_embedded(source) and hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **from_pretrained_kwargs)
    finally:
        if quiet:
            hf_logging.enable_progress_bar()
    model.eval()
    return model, tokenizer


def timed_load(**kwargs):
    """load_course_model plus the seconds it took (the doctor and the tests report it)."""
    t0 = time.perf_counter()
    model, tok = load_course_model(**kwargs)
    return model, tok, time.perf_counter() - t0
