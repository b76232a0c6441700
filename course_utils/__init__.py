"""course_utils: the reference code of the LoRA & QLoRA course. Every chapter and lab imports it.

Where things are (module -> the chapters and labs that use it):

    The course's ideas, written to be read
      memory/        02, lab01   training-memory accounting: bytes per parameter, measured bytes, does it fit
      precision      03          float formats (fp32, fp16, bf16): rounding, range, accumulation
      quant          03          absmax int8/int4 quantization, per tensor and blockwise
      intrinsic      04          intrinsic dimension: training in a random low-dimensional subspace
      spectrum       05          singular values and the energy a rank-r update captures
      lora/          05-09, lab02, 04   LoRA layers, injection, merging, adapters on disk (PEFT's format)
      sweeps         07, 08      one fine-tune as a function of its knobs (rank, alpha, lr, dropout), over seeds
      nf4/           03, 09, lab03, 04  NF4 and double quantization, bit-exact with bitsandbytes; 4-bit layers
      experiments/   10, lab05      guided failure experiments: each failure reproduced, measured and fixed
      guide          11          the decision guide measured: new facts by LoRA / retrieval / continued pretraining,
                                 asked three ways; overriding the prior and what it costs
      deploy         12          inference timing side by side (interleaved, median ratios); a zoo's memory
    The course model and how it trains
      models, tokenizer   the embedded 4-layer Llama (00+); COURSE_MODEL swaps in a real one
      world, data         the generated "tiny world" corpus and the committed datasets
      domain              your own data (14): the JSONL format, its checks, a split, evaluation against the base
      training            the one training loop, batching, evaluation, greedy generation
      answers             exact answers by batched greedy decoding (knowledge tests over many prompts)
      surgery             which layers are linear, replacing a layer, eval mode, counting parameters
    Around the notebooks
      plots, widgets      figures and interactive explorers
      checks/             self-checks for exercises, predictions and labs (messages that teach)
    For instructors
      grading/            nbgrader release / collect / autograde / feedback / export
    Plumbing
      runtime/            paths and caches, the offline guard, checksums, the bitsandbytes CPU guard, the doctor
      lab_modes           `python -m course_utils lab | instructor`: JupyterLab in student or instructor mode

Importing the package keeps every cache inside the repo, keeps the hub offline by default, and installs the
bitsandbytes CPU guard before any notebook can trip over it. Submodules are imported on use, so
`import course_utils` stays fast.
"""
from __future__ import annotations

import importlib
import sys

from .runtime.paths import set_cache_env as _set_cache_env

__version__ = "0.1.0"

# Modules that live in a subpackage, under the short names notebooks and users have imported them by.
_ALIASES = {
    "paths": "runtime.paths",
    "netguard": "runtime.netguard",
    "manifest": "runtime.manifest",
    "bnb_guard": "runtime.bnb_guard",
    "doctor": "runtime.doctor",
    "nf4_native": "nf4.native",
}


class _AliasFinder:
    """`import course_utils.paths` gives the very module object `course_utils.runtime.paths` (one copy, one state)."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, short = fullname.partition(".")
        if prefix != __name__ or short not in _ALIASES:
            return None
        from importlib.machinery import ModuleSpec

        return ModuleSpec(fullname, self)

    def create_module(self, spec):
        return importlib.import_module(f"{__name__}.{_ALIASES[spec.name.partition('.')[2]]}")

    def exec_module(self, module):
        pass  # the real module is already executed


if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.append(_AliasFinder())

_set_cache_env()

from .runtime import bnb_guard as _bnb_guard  # noqa: E402

_bnb_guard.install()
