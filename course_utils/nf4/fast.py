"""The fast NF4 paths: the same bytes as reference.py, computed in a way that suits a CPU.

The reference binary-searches 15 midpoints for every value and builds several full-size temporaries. Here:
- quantize: an exact table lookup replaces the binary search (`BinnedIndex`), in cache-sized chunks with
  preallocated buffers, split over a few threads (`split_work`);
- dequantize: one lookup per byte yields both nibbles' levels (`_tables().pairs`), or, on CPU with a C compiler,
  the one-pass kernel of native.py.
A trailing partial block is handed to the reference itself. tests/test_nf4_fast.py proves every path equal to
reference.py bit for bit; bench/bench_nf4.py times them against bitsandbytes.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from types import SimpleNamespace

import torch

from . import native, reference
from .checks import check_finite

CHUNK = 1 << 15  # values per step on CPU: torch's parallel grain size, so each op stays on its calling thread
CPUS = os.cpu_count() or 1  # read once: it costs a system call, and small layers dequantize on every forward
_pool: tuple[int, ThreadPoolExecutor] | None = None


def split_work(total: int, align: int, work, device: torch.device) -> None:
    """Run work(lo, hi) over [0, total): on CPU one contiguous, `align`-aligned part per thread.

    Why our own threads instead of torch's: the work is a dozen small ops per chunk. Handing each op to torch's
    OpenMP pool costs a barrier per op, and on 2 shared cores the second OpenMP thread spin-waits at every one.
    With chunks at torch's grain size each op runs on the thread that calls it, and our threads meet once, at
    the end. bitsandbytes' native kernels use threads the same way.
    """
    global _pool
    k = min(torch.get_num_threads(), CPUS, max(1, total // (4 * CHUNK)))
    if k <= 1 or device.type != "cpu":
        work(0, total)
        return
    if _pool is None or _pool[0] != os.getpid():  # a forked child inherits a pool whose threads are gone
        _pool = (os.getpid(), ThreadPoolExecutor(max_workers=CPUS, thread_name_prefix="nf4"))
    per = -(-total // k)
    per = -(-per // align) * align
    inference = torch.is_inference_mode_enabled()  # grad and inference modes are per thread: carry them over

    def run(lo, hi):
        with torch.inference_mode() if inference else torch.no_grad():
            work(lo, hi)

    futures = [_pool[1].submit(run, lo, min(lo + per, total)) for lo in range(per, total, per)]
    try:
        run(0, min(per, total))
    finally:
        for f in futures:
            f.result()


def _chunk(device: torch.device, blocksize: int, total: int) -> int:
    # On a GPU one vectorised pass is best; on CPU, cache-sized chunks (a multiple of every blocksize).
    return max(CHUNK, blocksize) if device.type == "cpu" else max(total, 1)


class BinnedIndex:
    """torch.bucketize(s, midpoints), i.e. #(midpoints < s), exactly, without a binary search.

    Cut [-1, 1] into 256 uniform bins; NF4's midpoints are >= 0.08 apart, so a bin widened by one bin on each
    side holds at most one midpoint. Per bin store `base` = #(midpoints left of the widened bin) and `thr` = the
    midpoint inside it (+inf if none). Then #(midpoints < s) = base[bin] + (s > thr[bin]) exactly, for any s the
    bin arithmetic can round into that bin (its error is ~1e-5 bin, far inside the one-bin margin). A value
    exactly on a midpoint is not > thr, so it takes the lower level, like bucketize. `ok` is False when two
    midpoints are too close for this (FP4 has some): the caller then uses bucketize.
    """

    SCALE, SHIFT, NBINS = 128.0, 130.0, 261  # bin = trunc(s * 128 + 130); s in [-1.01, 1.01] -> 1 .. 259

    def __init__(self, midpoints: torch.Tensor):
        bounds = midpoints.double()
        k = torch.arange(self.NBINS, dtype=torch.float64)
        lo = (k - self.SHIFT - 1) / self.SCALE  # bin k nominally covers [(k-130)/128, (k-129)/128); widen by 1/128
        hi = (k - self.SHIFT + 2) / self.SCALE
        inside = (bounds[None, :] >= lo[:, None]) & (bounds[None, :] < hi[:, None])
        self.ok = bool((inside.sum(1) <= 1).all())
        self.base = (bounds[None, :] < lo[:, None]).sum(1).to(torch.uint8)
        self.thr = torch.where(inside, bounds[None, :], torch.inf).amin(1).float()  # float32 midpoints: exact

    def to(self, device) -> "BinnedIndex":
        self.base, self.thr = self.base.to(device), self.thr.to(device)
        return self

    def index(self, s: torch.Tensor, tmp: torch.Tensor, kbuf: torch.Tensor, out: torch.Tensor, mask: torch.Tensor):
        """out (uint8) <- #(midpoints < s); tmp, kbuf (int32) and mask (bool) are scratch of s's size."""
        torch.mul(s, self.SCALE, out=tmp).add_(self.SHIFT)
        kbuf.copy_(tmp)  # float -> int32 truncates; the values are positive, so this is floor
        torch.index_select(self.base, 0, kbuf, out=out)
        torch.index_select(self.thr, 0, kbuf, out=tmp)
        torch.gt(s, tmp, out=mask)
        return out.add_(mask)


@lru_cache(maxsize=None)
def _tables(quant_type: str, device: torch.device) -> SimpleNamespace:
    code = reference.codebook(quant_type).to(device)
    order = torch.argsort(code)  # as in reference.nearest_level
    midpoints = (code[order[:-1]] + code[order[1:]]) / 2
    byte = torch.arange(256, device=device)  # both nibbles' levels of every byte, as one 64-bit word
    pairs = torch.stack([code[byte >> 4], code[byte & 15]], 1).contiguous().view(torch.int64).view(-1)
    return SimpleNamespace(code=code, order=order.to(torch.uint8), midpoints=midpoints,
                           binned=BinnedIndex(midpoints.cpu()).to(device), pairs=pairs,
                           dynamic_map=reference.codebook("dynamic").to(device))


# ------------------------------------------------------------------------------------------------ quantize

def _quantize_blocks(flat, blocksize, quant_type, absmax, codes, lo, hi) -> None:
    """Fill absmax and codes for the whole blocks in flat[lo:hi], one cache-sized chunk at a time."""
    t = _tables(quant_type, flat.device)
    chunk = _chunk(flat.device, blocksize, hi - lo)
    m = min(chunk, hi - lo)
    tmp, tmp2 = (torch.empty(m, dtype=torch.float32, device=flat.device) for _ in range(2))
    kbuf = torch.empty(m, dtype=torch.int32, device=flat.device)
    qbuf = torch.empty(m, dtype=torch.uint8, device=flat.device)
    mask = torch.empty(m, dtype=torch.bool, device=flat.device)
    for start in range(lo, hi, chunk):
        stop = min(start + chunk, hi)
        size, b0, b1 = stop - start, start // blocksize, stop // blocksize
        x = flat[start:stop]
        x = x if x.dtype == torch.float32 else x.float()
        s, t2, kb, q, mk = tmp[:size], tmp2[:size], kbuf[:size], qbuf[:size], mask[:size]
        am = absmax[b0:b1]
        torch.abs(x, out=s)
        torch.amax(s.view(-1, blocksize), 1, out=am)
        check_finite(am, flat, "The weight")  # before a NaN can become a garbage table index
        inv = 1.0 / am.clamp(min=reference.MIN_ABSMAX)  # reciprocal in float32, then multiply: as the reference
        torch.mul(x.view(-1, blocksize), inv.view(-1, 1), out=s.view(-1, blocksize))
        # No clamp to [-1, 1]: |s| exceeds 1 by at most an ulp, beyond the last midpoint either way.
        if t.binned.ok:
            t.binned.index(s, t2, kb, q, mk)
        else:
            torch.bucketize(s, t.midpoints, out_int32=True, out=kb)
            q.copy_(t.order[kb] if quant_type != "nf4" else kb)
        pairs = q.view(-1, 2)
        out = codes[start // 2:stop // 2]
        torch.bitwise_left_shift(pairs[:, 0], 4, out=out)
        out.bitwise_or_(pairs[:, 1])


def quantize(w: torch.Tensor, blocksize: int = 64, quant_type: str = "nf4") -> tuple[torch.Tensor, torch.Tensor]:
    """reference.quantize's (codes, absmax), bit for bit. Whole blocks here, a partial last one by the reference."""
    flat = w.detach().reshape(-1)
    n = flat.numel()
    full = n - n % blocksize
    absmax = torch.empty(-(-n // blocksize), dtype=torch.float32, device=w.device)
    codes = torch.empty((n + 1) // 2, dtype=torch.uint8, device=w.device)
    if full:
        split_work(full, blocksize, lambda lo, hi: _quantize_blocks(flat, blocksize, quant_type, absmax, codes,
                                                                    lo, hi), w.device)
    if full < n:  # full is even (blocksize >= 32), so the tail starts on a byte boundary
        codes[full // 2:], absmax[-1:] = reference.quantize(flat[full:], blocksize, quant_type)
    return codes, absmax


# ------------------------------------------------------------------------------------------------ dequantize

def _dequantize_blocks(codes, absmax, blocksize, pairs, out, lo, hi) -> None:
    """out[lo:hi] <- level[code] * absmax for whole blocks: each byte looks up both nibbles' levels at once."""
    chunk = _chunk(out.device, blocksize, hi - lo)
    m = min(chunk, hi - lo)
    idx = torch.empty(m // 2, dtype=torch.int32, device=out.device)
    tmp = None if out.dtype == torch.float32 else torch.empty(m, dtype=torch.float32, device=out.device)
    for start in range(lo, hi, chunk):
        stop = min(start + chunk, hi)
        size = stop - start
        ix = idx[: size // 2]
        ix.copy_(codes[start // 2:stop // 2])
        dst = out[start:stop] if tmp is None else tmp[:size]
        torch.index_select(pairs, 0, ix, out=dst.view(torch.int64))
        dst.view(-1, blocksize).mul_(absmax[start // blocksize:stop // blocksize].view(-1, 1))
        if tmp is not None:  # the float32 product, rounded once into the output dtype (as the reference);
            out[start:stop].copy_(dst)  # a separate copy: torch.mul(out=bf16) takes a slow mixed-dtype loop


def dequantize(q, out: torch.Tensor, use_native: bool | None = None) -> torch.Tensor:
    """out (flat, q.numel values) <- reference.dequantize of q, bit for bit.

    q: an NF4Tensor (or anything with its fields). use_native: None = the C kernel when native.usable, False =
    the torch path (what runs without a compiler; tests and the benchmark pick it explicitly).
    """
    n, bs = q.numel, q.blocksize
    full = n - n % bs
    t = _tables(q.quant_type, out.device)
    if use_native is None:
        use_native = native.usable(q, out)
    if use_native:  # the kernel rebuilds each block's absmax from the double-quantization codes itself
        fn = native.function()
        work = lambda lo, hi: native.call(fn, q, t.code, t.dynamic_map, out, lo, hi)  # noqa: E731
    else:
        absmax = q.block_absmax()
        work = lambda lo, hi: _dequantize_blocks(q.codes, absmax, bs, t.pairs, out, lo, hi)  # noqa: E731
    if full:
        split_work(full, bs, work, out.device)
    if full < n:
        tail_absmax = q.block_absmax()[-1:]  # n/blocksize values: cheap next to the n codes
        out[full:] = reference.dequantize(q.codes[full // 2:], tail_absmax, (n - full,), bs, q.quant_type, out.dtype)
    return out
