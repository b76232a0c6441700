"""The NF4 test cases every test_nf4_*.py file checks: shapes with partial blocks and odd tails, every blocksize,
values on the codebook's midpoints and one ulp either side, +-absmax, all-zero blocks, tiny and huge values."""
from __future__ import annotations

import torch

from course_utils.nf4 import reference

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CASES = [  # (shape, blocksize): odd lengths, trailing partial blocks, rows that are not a multiple of a block
    ((256, 256), 64), ((128, 512), 32), ((400, 257), 128), ((500, 99), 256), ((4097,), 64), ((7, 33), 32),
    ((1,), 64), ((3,), 32), ((31, 31), 256), ((128, 352), 64), ((65, 64), 4096), ((64, 1), 64),
    ((96, 70), 512), ((33, 64), 1024), ((2050,), 2048),
]
SEEDS = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def hard_blocks(dtype: torch.dtype, blocksize: int, seed: int = 0) -> torch.Tensor:
    """Whole blocks that probe the edges. Each probe block holds +-absmax (a power of two, so x * (1/absmax) is
    exact) and values ON the NF4 midpoints and one ulp either side."""
    gen = torch.Generator().manual_seed(seed)
    code = reference.nf4_codebook()
    mids = (code[:-1] + code[1:]) / 2
    mids = torch.cat([mids, -mids])
    blocks = []
    for absmax in (1.0, 4.0, 0.0625):
        on = mids * absmax
        probes = torch.cat([on, torch.nextafter(on, torch.tensor(9.0)), torch.nextafter(on, torch.tensor(-9.0))])
        for chunk in probes.split(blocksize - 2):
            block = torch.zeros(blocksize)
            block[:2] = torch.tensor([absmax, -absmax])
            block[2: 2 + chunk.numel()] = chunk
            blocks.append(block)
    blocks.append(torch.zeros(blocksize))  # an all-zero block packs to 0x77 with absmax 0
    blocks.append(torch.full((blocksize,), 1e-30) * torch.randn(blocksize, generator=gen).sign())  # 0 in float16
    top = {torch.float16: 6e4, torch.bfloat16: 1e38, torch.float32: 1e38}[dtype]
    blocks.append(torch.randn(blocksize, generator=gen).clamp(-3, 3) * top / 3)
    blocks.append(-torch.ones(blocksize))
    return torch.cat(blocks).to(dtype)


def weights(dtype: torch.dtype, hard_blocksizes=(32, 64, 128, 256)):
    """(weight, blocksize) pairs: every CASES shape (random, an all-zero block in the middle), then the hard blocks
    for each blocksize, whole and with an odd partial tail."""
    gen = torch.Generator().manual_seed(SEEDS[dtype])
    for shape, bs in CASES:
        w = (torch.randn(shape, generator=gen) * 0.02).to(dtype)
        if w.numel() >= 2 * bs:
            w.view(-1)[bs: 2 * bs] = 0
        yield w, bs
    for bs in hard_blocksizes:
        w = hard_blocks(dtype, bs)
        yield w, bs
        yield w[: w.numel() - 5], bs
