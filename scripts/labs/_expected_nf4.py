"""Expected values for lab03's hidden tests, computed with bitsandbytes itself when the lab is built.

The hidden tests rebuild the same inputs in the student's kernel (NF4_CASE runs in both places), run the
student's functions on them and compare the bytes with the hex strings written here: bit for bit, with no
bitsandbytes and no course_utils.nf4 inside the graded kernel.
"""
from __future__ import annotations

import hashlib

import torch

# The deterministic inputs: shared, as source, by this build script and the hidden tests.
NF4_CASE = '''
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_NF4_MIDPOINTS = [-0.8480963706970215, -0.6106328964233398, -0.4599952697753906, -0.33967941999435425,
                  -0.23460739850997925, -0.13791173696517944, -0.045525018125772476, 0.03979014977812767,
                  0.120255246758461, 0.2035212516784668, 0.2920137643814087, 0.3893125355243683,
                  0.5016634464263916, 0.6427869200706482, 0.8614784479141235]


def _case(shape, dtype, seed, kind="randn"):
    """A weight to quantize: normal values; with kind "zeros" its first 64 values are 0 (an all-zero block);
    with kind "midpoints" every 64 values start with 1 and the 15 NF4 midpoints (values exactly between two
    levels), times 2**-5, among small normal values."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * (0.002 if kind == "midpoints" else 0.05)
    flat = w.view(-1)
    if kind == "zeros":
        flat[:64] = 0.0
    elif kind == "midpoints":  # scaled by 2**-5: dividing by the block's absmax (2**-5) gives the midpoints exactly
        row = torch.tensor([1.0] + _NF4_MIDPOINTS) * 2.0**-5
        for start in range(0, flat.numel() - row.numel() + 1, 64):
            flat[start:start + row.numel()] = row
    return w.to(_DTYPES[dtype])


def _hex(t):
    """A tensor's raw bytes as hex: what the tests compare, bit for bit."""
    return t.detach().contiguous().view(torch.uint8).numpy().tobytes().hex()
'''


def _ns() -> dict:
    ns = {"torch": torch}
    exec(NF4_CASE, ns)
    return ns


def _check_midpoints(ns) -> None:
    from course_utils.nf4 import nf4_codebook

    code = nf4_codebook()
    mids = ((code[:-1] + code[1:]) / 2).tolist()
    assert mids == ns["_NF4_MIDPOINTS"], "NF4_CASE's midpoints must be the float32 midpoints of the NF4 levels"


def codebook() -> list[float]:
    """bitsandbytes' NF4 levels (float32 values as Python floats: exact)."""
    import bitsandbytes.functional as bnbF

    return bnbF.get_4bit_type("nf4", device="cpu").tolist()


def quantize_cases(cases) -> list:
    """[(case args, blocksize, packed codes hex, absmax hex)] from bitsandbytes.functional.quantize_4bit."""
    import bitsandbytes.functional as bnbF

    ns = _ns()
    _check_midpoints(ns)
    out = []
    for args, blocksize in cases:
        w = ns["_case"](*args)
        packed, state = bnbF.quantize_4bit(w, blocksize=blocksize, quant_type="nf4")
        out.append((args, blocksize, ns["_hex"](packed.view(-1)), ns["_hex"](state.absmax.float())))
    return out


def dequantize_cases(cases) -> list:
    """[(case args, blocksize, packed hex, absmax hex, sha256 of the float32 weight bitsandbytes dequantizes)]."""
    import bitsandbytes.functional as bnbF

    import course_utils  # noqa: F401 - installs the guard that fixes bitsandbytes' row-relative CPU blocks

    ns = _ns()
    out = []
    for args, blocksize in cases:
        w = ns["_case"](*args).float()
        packed, state = bnbF.quantize_4bit(w, blocksize=blocksize, quant_type="nf4")
        w_hat = bnbF.dequantize_4bit(packed, state).float().contiguous()
        digest = hashlib.sha256(w_hat.view(torch.uint8).numpy().tobytes()).hexdigest()
        out.append((args, blocksize, ns["_hex"](packed.view(-1)), ns["_hex"](state.absmax.float()), digest,
                    round(float(w_hat.double().abs().sum()), 4)))
    return out


def normalize_cases(cases) -> list:
    """[(n, blocksize, seed, absmax hex, scaled hex)] from the reference (bit-exact with bitsandbytes' steps)."""
    from course_utils.nf4.reference import normalize_blocks

    ns = _ns()
    out = []
    for n, blocksize, seed, kind in cases:
        x = ns["_case"]((n,), "float32", seed, kind)
        absmax, scaled = normalize_blocks(x, blocksize)
        out.append(((n,), blocksize, seed, kind, ns["_hex"](absmax), ns["_hex"](scaled)))
    return out


def visible_bytes() -> list[int]:
    """The bytes bitsandbytes stores for the visible quantize test's 7-value weight."""
    import bitsandbytes.functional as bnbF

    w = torch.linspace(-1, 1, 7).view(1, 7) * torch.tensor([[1.0, -0.5, 0.25, 1.0, 0.0, 0.3, -0.9]])
    packed, _ = bnbF.quantize_4bit(w, blocksize=64, quant_type="nf4")
    return packed.view(-1).tolist()
