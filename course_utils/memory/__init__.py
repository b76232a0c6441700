"""Training memory (notebook 02, lab01): predict the bytes, then measure them on a real model.

    calculator   bytes per parameter; full fine-tuning, LoRA and QLoRA totals; does a model fit a GPU?
    measure      bytes a model's tensors really hold; activations autograd saves; prediction vs measurement
"""
from .calculator import (BYTES, COMPONENTS, GB, GIB, OPTIMIZER_BYTES, Fit, activation_estimate_bytes, bytes_per_param,
                         fits_on_gpu, full_finetune_bytes, lora_bytes, lora_param_count, model_memory_gb,
                         nf4_bits_per_param, qlora_bytes)
from .measure import (compare, count_params, explain_mismatch, measure_training_bytes, quant_state_bytes,
                      saved_activation_bytes)

__all__ = [
    "BYTES", "COMPONENTS", "GB", "GIB", "OPTIMIZER_BYTES", "Fit", "activation_estimate_bytes", "bytes_per_param",
    "fits_on_gpu", "full_finetune_bytes", "lora_bytes", "lora_param_count", "model_memory_gb", "nf4_bits_per_param",
    "qlora_bytes", "compare", "count_params", "explain_mismatch", "measure_training_bytes", "quant_state_bytes",
    "saved_activation_bytes",
]
