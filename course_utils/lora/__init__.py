"""LoRA from scratch, number for number with PEFT: h = W0 x + B(A(dropout(x))) * scaling. Read minimal.py first.

    minimal.py      MinimalLoRALinear: the whole idea in one ~40-line layer (one adapter, merge/unmerge)
    layer.py        LoRALinear: the same math for any number of named adapters, bit-identical to PEFT's lora.Linear
    adapters.py     the bookkeeping LoRALinear inherits: adapter names, settings (AdapterSpec), the active adapter
    inject.py       add_lora (target matching as PEFT does it), set_adapter, disable_adapters, merge_lora, ...
    saving.py       lora_state_dict, save_adapter / load_adapter, adapter_size_bytes
    peft_format.py  PEFT's adapter directory (adapter_config.json + adapter_model.safetensors), both ways
    count_parameters, trainable_report: course_utils.surgery's (PEFT's print_trainable_parameters rule)

Differences from PEFT worth knowing: `add_lora` and `load_adapter` activate the adapter they add (PEFT's
`add_adapter` / `load_adapter` do not), one adapter is active at a time, and merging twice / unmerging an unmerged
layer raise instead of warning.

Hooks for bases that are not plain nn.Linear (the QLoRA chapter: course_utils.nf4.NF4Linear, bitsandbytes Linear4bit):
- a base is "linear-like" if it has int `in_features`/`out_features` and `weight` or `dequantized_weight()`;
- merging calls `base.merge_delta(delta)` (its return value, e.g. the rounding error, is what `merge()` returns);
  unmerging calls `base.unmerge_delta(delta)` if defined, else `base.merge_delta(-delta)`; without the hook a
  non-float base refuses to merge, naming the fix;
- `module.logical_param_count()` tells count_parameters how many parameters a module's subtree stands for.
"""
from ..surgery import count_parameters, is_linear_like, trainable_report
from .adapters import INITS, AdapterSpec, NamedAdapters
from .inject import (ALL_LINEAR, add_lora, disable_adapters, lora_layers, match_targets, merge_and_unload, merge_lora,
                     set_adapter, unmerge_lora)
from .layer import LoRALinear
from .minimal import MinimalLoRALinear
from .saving import adapter_size_bytes, load_adapter, load_lora_state_dict, lora_state_dict, save_adapter

__all__ = [
    "MinimalLoRALinear", "LoRALinear", "NamedAdapters", "ALL_LINEAR", "INITS", "AdapterSpec", "is_linear_like",
    "add_lora", "match_targets", "set_adapter", "disable_adapters", "lora_layers", "merge_lora", "unmerge_lora",
    "merge_and_unload", "lora_state_dict", "load_lora_state_dict", "save_adapter", "load_adapter",
    "adapter_size_bytes", "count_parameters", "trainable_report",
]
