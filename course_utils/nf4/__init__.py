"""NF4 and double quantization, bit-exact with bitsandbytes, and the 4-bit layers QLoRA trains on (03, 09, lab03).

Read reference.py first: the whole format in plain torch, one short function per step (codebooks from normal
quantiles, blockwise absmax, nearest level by bucketize on midpoints, packing two codes per byte, double
quantization, bits per parameter). Lab03 rebuilds it; chapter 09 walks through it. The other modules:

    reference.py   the format itself, written to be read; everything else is tested against it
    tensor.py      NF4Tensor (codes + constants) and the entry points: quantize_nf4, dequantize_nf4, ...
    fast.py        the same bytes, faster on CPU: chunks, threads, table lookups instead of binary searches
    native.py      the optional C dequantization kernel (nf4_dequantize.c): builds, loads, self-checks it
    checks.py      input checks whose errors name the fix
    layer.py       NF4Linear (a frozen 4-bit linear layer, convertible to and from bitsandbytes' Linear4bit),
                   quantize_model, nf4_layers, model_storage_bytes

    from course_utils.nf4 import quantize_nf4, dequantize_nf4, quantize_model
    q = quantize_nf4(w)            # blocks of 64, double quantization: 4.127 bits per parameter
    w_hat = dequantize_nf4(q)
"""
from .checks import SUPPORTED_DTYPES
from .layer import MERGE_WARNING, NF4Linear, model_storage_bytes, nf4_layers, quantize_model
from .reference import (BLOCKSIZES, DQ_BLOCKSIZE, MIN_ABSMAX, NF4_OFFSET, bits_per_parameter, dynamic_map,
                        fp4_codebook, nf4_codebook)
from .tensor import (NF4Tensor, dequantize_nf4, quantization_error, quantize_4bit, quantize_fp4,
                     quantize_nf4)

__all__ = [
    "BLOCKSIZES", "DQ_BLOCKSIZE", "MERGE_WARNING", "MIN_ABSMAX", "NF4Linear", "NF4Tensor", "NF4_OFFSET",
    "SUPPORTED_DTYPES", "bits_per_parameter", "dequantize_nf4", "dynamic_map", "fp4_codebook", "model_storage_bytes",
    "nf4_codebook", "nf4_layers", "quantization_error", "quantize_4bit", "quantize_fp4", "quantize_model",
    "quantize_nf4",
]
