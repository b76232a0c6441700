"""The optional C kernel for NF4 dequantization on CPU (nf4_dequantize.c beside this file), compiled on first use.

    from course_utils.nf4 import native
    native.status()      # 'native (cc -O3 -mssse3 ...)' or why not, e.g. 'off: no C compiler (cc) found'

fast.dequantize goes through `call` when `usable()`, else through its torch path. Both give reference.py's bits:
the kernel computes level * absmax in float32 exactly as torch does, and rounds to bfloat16 the way torch does
(nearest, ties to even). The library is built once per source/compiler/flags into .cache/native/ (inside the
repo), checked against reference.dequantize on small tensors, and only then used. COURSE_NF4_NATIVE=0 turns it
off; CC picks the compiler (default `cc`).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

from ..runtime.paths import CACHE_DIR
from . import reference

SOURCE = Path(__file__).resolve().parent / "nf4_dequantize.c"
ENV = "COURSE_NF4_NATIVE"
OUT_DTYPES = (torch.float32, torch.bfloat16)  # float16 output takes the torch path

_state: dict = {}  # "lib": the loaded function, or None; "why": a one-line status


def _cc() -> str:
    return os.environ.get("CC") or "cc"  # an empty CC (some shells export one) means the default


def _flags(portable: bool = False) -> list[str]:
    # -ffp-contract=off: no fused multiply-add, so absmax = dmap * scale + offset rounds twice, as in torch.
    flags = ["-O3", "-shared", "-fPIC", "-ffp-contract=off"]
    if platform.machine().lower() in ("x86_64", "amd64", "i686", "i386") and not portable:
        flags.append("-mssse3")
    if portable:
        flags.append("-DNF4_PORTABLE")
    return flags


def build(portable: bool = False, cache_dir: Path | None = None) -> Path:
    """Compile the kernel (or reuse the cached build) and return the shared library's path. Raises on failure."""
    cc = _cc()
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler ({cc}) found")
    flags = _flags(portable)
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([cc, *flags, platform.machine()]).encode()).hexdigest()[:16]
    out_dir = Path(cache_dir or CACHE_DIR / "native")
    lib = out_dir / f"nf4_dequantize-{key}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)  # build aside, then rename: parallel imports never
    os.close(fd)                                           # load a half-written library
    try:
        r = subprocess.run([cc, *flags, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{cc} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def load(path: Path):
    fn = ctypes.CDLL(str(path)).nf4_dequantize_blocks  # CDLL releases the GIL during the call: threads overlap
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    fn.argtypes = [p, p, p, p, p, p, ctypes.c_float, i64, p, i64, i64, i64, ctypes.c_int]
    fn.restype = None
    return fn


def call(fn, q, levels: torch.Tensor, dmap: torch.Tensor, out: torch.Tensor, lo: int, hi: int) -> None:
    """out[lo:hi] for whole blocks lo/bs .. hi/bs of q; out is the flat float32/bfloat16 result.

    q: an NF4Tensor or anything with its fields (codes, absmax, blocksize, double_quant, and under double
    quantization absmax_scale, absmax_offset, dq_blocksize). levels: the 16 levels indexed by code.
    """
    if q.double_quant:
        stats = (None, q.absmax.data_ptr(), dmap.data_ptr(), q.absmax_scale.data_ptr(), float(q.absmax_offset),
                 q.dq_blocksize)
    else:
        stats = (q.absmax.data_ptr(), None, None, None, 0.0, 1)
    bs = q.blocksize
    fn(q.codes.data_ptr(), levels.data_ptr(), *stats, out.data_ptr(), lo // bs, hi // bs, bs,
       int(out.dtype == torch.bfloat16))


def usable(q, out: torch.Tensor) -> bool:
    """Can the kernel take this call? CPU, contiguous float32 constants, float32/bfloat16 output."""
    if out.device.type != "cpu" or out.dtype not in OUT_DTYPES or not available():
        return False
    dtypes = {"codes": torch.uint8, "absmax": torch.float32}  # what the C signature takes
    if q.double_quant:
        dtypes.update(absmax=torch.uint8, absmax_scale=torch.float32, absmax_offset=torch.float32)
    parts = [(getattr(q, name), want) for name, want in dtypes.items()]
    return all(t.device.type == "cpu" and t.is_contiguous() and t.dtype == want for t, want in parts)


def _self_test(fn) -> str | None:
    """Run a fresh build against reference.dequantize once; any difference -> don't use it (and say why)."""
    g = torch.Generator().manual_seed(0)
    levels, dmap = reference.nf4_codebook(), reference.dynamic_map()
    for dq in (False, True):
        for dtype in OUT_DTYPES:
            w = (torch.randn(37, 128, generator=g) * 3).to(dtype)
            codes, absmax = reference.quantize(w, 64)
            q = SimpleNamespace(codes=codes, absmax=absmax, blocksize=64, double_quant=dq, dq_blocksize=256)
            if dq:
                q.absmax, q.absmax_scale, q.absmax_offset = reference.double_quantize(absmax, 256)
                absmax = reference.dequantize_absmax(q.absmax, q.absmax_scale, q.absmax_offset, 256)
            out = torch.empty(w.numel(), dtype=dtype)
            call(fn, q, levels, dmap, out, 0, w.numel())
            if not torch.equal(out, reference.dequantize(codes, absmax, (w.numel(),), 64, "nf4", dtype)):
                return f"self-test differs from reference.dequantize (double_quant={dq}, {dtype})"
    return None


def available() -> bool:
    if os.environ.get(ENV, "1") == "0":
        return False
    if "lib" not in _state:
        _state["lib"], _state["why"] = None, "off"
        try:
            path = build()
            fn = load(path)
            problem = _self_test(fn)
            if problem:
                _state["why"] = f"off: {problem}"
            else:
                _state["lib"], _state["why"] = fn, f"native ({_cc()} {' '.join(_flags())})"
        except Exception as e:  # no compiler, read-only checkout, ...: the torch path still works
            _state["why"] = f"off: {e}"
    return _state["lib"] is not None


def function():
    return _state["lib"] if available() else None


def status() -> str:
    """One line for the doctor and the benchmark: which dequantize path runs, and why."""
    if os.environ.get(ENV, "1") == "0":
        return f"off ({ENV}=0): torch path"
    available()
    return _state["why"]


def reset() -> None:
    """Forget the loaded kernel (tests use it to try another CC or COURSE_NF4_NATIVE setting)."""
    _state.clear()
