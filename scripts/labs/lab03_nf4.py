"""Lab 03 -- NF4 from scratch: the codebook from normal quantiles, blockwise absmax, nibble packing, dequantization
and the bits per parameter of double quantization, graded bit for bit against bitsandbytes.

The hidden tests' expected bytes are computed with bitsandbytes when the lab is built (_expected_nf4.py) and written
into the tests as hex strings; the inputs are rebuilt in the graded kernel from seeds.
"""
from textwrap import dedent

import _expected_nf4 as E
from _cells import GRADING_NOTE, answer, md, setup_cell, tests

_CODEBOOK = E.codebook()
_NORMALIZE = E.normalize_cases([(200, 64, 3, "randn"), (100, 32, 4, "zeros"), (300, 128, 5, "midpoints"),
                                (77, 64, 6, "randn")])
_QUANTIZE = E.quantize_cases([
    (((33, 95), "float32", 11, "randn"), 64),       # 3135 values: odd, 48.98 blocks
    (((7, 5), "float32", 12, "randn"), 64),         # one partial block
    (((4, 300), "float32", 13, "zeros"), 128),      # an all-zero block, partial last block
    (((6, 64), "float32", 14, "midpoints"), 64),    # every midpoint, in every block
    (((5, 70), "float32", 15, "midpoints"), 32),
    (((16, 40), "bfloat16", 16, "randn"), 64),
    (((9, 37), "float16", 17, "randn"), 256),
])
_VISIBLE_BYTES = E.visible_bytes()
_DEQUANTIZE = E.dequantize_cases([(((33, 95), "float32", 21, "randn"), 64), (((4, 300), "float32", 22, "zeros"), 128),
                                  (((6, 64), "float32", 23, "midpoints"), 32)])

_COMPARE = '''
def _first_diff(got, want, width, what, hint):
    """Fail with where the first differing element is, or pass if the hex strings are equal."""
    if got == want:
        return
    if len(got) != len(want):
        raise AssertionError(f"{what}: {len(got) // 2} bytes, the reference has {len(want) // 2}. {hint}")
    i = next(k for k in range(0, len(got), 2 * width) if got[k:k + 2 * width] != want[k:k + 2 * width]) // (2 * width)
    n = sum(got[k:k + 2 * width] != want[k:k + 2 * width] for k in range(0, len(got), 2 * width))
    raise AssertionError(f"{what}: {n} of {len(got) // (2 * width)} elements differ from the reference bytes, "
                         f"the first at index {i}. {hint}")
'''


def _hidden(body: str) -> str:
    return E.NF4_CASE + _COMPARE + dedent(body)


CELLS = [
    md(f"""
    # Lab 03 — NF4 from scratch

    QLoRA stores a frozen weight in **4-bit NormalFloat (NF4)**: blocks of 64 values, each divided by its largest
    absolute value (*absmax*), then each value replaced by the index of the nearest of 16 levels placed at quantiles
    of a normal distribution. Two indices share a byte. You will build every step and match **bitsandbytes** (the
    library QLoRA uses) **bit for bit**:

    1. The NF4 codebook from normal quantiles
    2. Blockwise absmax normalisation
    3. The nearest level
    4. Packing two codes per byte
    5. Quantize: a weight to bytes, exactly as bitsandbytes stores it
    6. Dequantize: bytes back to a weight
    7. Double quantization: bits per parameter

    Chapter 09 (notebooks/09_qlora.ipynb) walks through the same ideas on the course model.

    **How this lab is graded.** Write your code where it says `# YOUR CODE HERE` (replace the
    `raise NotImplementedError(...)` line). Each test cell prints a ✅ line per check that passes and stops at the
    first one that fails, with a question that points at the fix. When grading, the tests run again on other
    shapes, dtypes and block sizes (partial blocks, all-zero blocks, values exactly between two levels), and
    compare your bytes with the bytes bitsandbytes writes: close is not enough, the bits must be equal.
    {GRADING_NOTE}
    """),
    setup_cell("""
    import statistics

    import torch.nn.functional as F

    from course_utils.checks import check_value
    """),

    # ---------------------------------------------------------------------------------------------- 1
    md("""
    ## 1. The NF4 codebook from normal quantiles

    Weights divided by their block's absmax look roughly normal, squeezed into [-1, 1]. NF4 puts its 16 levels
    at quantiles of N(0, 1) so that each level is used about equally often. The construction (bitsandbytes'
    `create_normal_map`):

    * `ppf = statistics.NormalDist().inv_cdf` is the inverse normal CDF (the quantile function);
    * 8 **positive** levels: `ppf(p)` for the first 8 of `torch.linspace(OFFSET, 0.5, 9)` (drop the last point,
      0.5, whose quantile is 0);
    * 7 **negative** levels: `-ppf(p)` for the first 7 of `torch.linspace(OFFSET, 0.5, 8)`;
    * one exact **0**;
    * sort the 16 values, put them in a float32 tensor, and divide by the largest so they run from -1 to 1.

    `OFFSET = 0.9677083` is where the outermost quantile is taken (not 1, whose quantile is infinite). 8 positive
    and 7 negative levels: a symmetric set around an exact 0 would have an odd count and waste one of the 16 codes.

    **Task 1.** Write `nf4_codebook()`. Take the quantile points from `torch.linspace` (float32) and call `ppf` on
    each as a Python float (`.tolist()`): bitsandbytes does exactly that, and the last bit of each level depends on it.
    """),
    answer("nf4_codebook", '''
    OFFSET = 0.9677083


    def nf4_codebook():
        """The 16 NF4 levels: a sorted float32 tensor from -1 to 1."""
        ppf = statistics.NormalDist().inv_cdf
        ### BEGIN SOLUTION
        pos = [ppf(p) for p in torch.linspace(OFFSET, 0.5, 9)[:-1].tolist()]
        neg = [-ppf(p) for p in torch.linspace(OFFSET, 0.5, 8)[:-1].tolist()]
        code = torch.tensor(pos + [0.0] + neg, dtype=torch.float32).sort().values
        return code / code.max()
        ### END SOLUTION


    print(nf4_codebook())
    '''),
    tests("nf4_codebook_tests", 2, f'''
    _code = nf4_codebook()
    check_value("dtype", str(_code.dtype), "torch.float32", hint="torch.tensor(values, dtype=torch.float32)")
    check_value("number of levels", _code.numel(), 16, hint="8 positive + 0 + 7 negative")
    check_value("sorted", bool((_code[1:] > _code[:-1]).all()), True, hint="sort the values: .sort().values")
    check_value("ends", [_code[0].item(), _code[-1].item()], [-1.0, 1.0],
                hint="divide by the largest level (the positive end), so the levels run from -1 to 1")
    check_value("exact zero", int((_code == 0).sum()), 1, hint="one level is exactly 0.0")
    check_value("positive levels", int((_code > 0).sum()), 8,
                hint="8 positive (linspace with 9 points, last dropped), 7 negative (8 points, last dropped)")
    _ = check_value("the levels, bit for bit", _code, torch.tensor({_CODEBOOK!r}), rtol=0, atol=0,
                    hint="quantile points from torch.linspace (float32), ppf on Python floats, one float32 tensor, "
                         "then divide by the maximum")
    '''),

    # ---------------------------------------------------------------------------------------------- 2
    md("""
    ## 2. Blockwise absmax

    Cut a flat float32 tensor `x` into blocks of `blocksize` values (the last block may be shorter). For each
    block, its **absmax** is the largest absolute value; the block is scaled into [-1, 1] by it. Three details
    decide the last bit, and bitsandbytes does all three:

    * full blocks are **multiplied by `1 / absmax`**; the partial last block (if any) is **divided by its absmax**
      (`x * (1/a)` and `x / a` can differ in the last bit, which moves a value sitting on a midpoint);
    * an all-zero block has absmax 0: clamp the divisor to at least `1e-38` so the block scales to 0, not NaN
      (keep the absmax itself 0);
    * clamp the scaled values to [-1, 1].

    **Task 2.** Write `normalize_blocks(x, blocksize)` returning `(absmax, scaled)`: `absmax` a float32 tensor with one
    value per block (the partial one included), `scaled` a float32 tensor shaped like `x`.
    """),
    answer("normalize_blocks", '''
    def normalize_blocks(x, blocksize):
        """(absmax per block, x scaled into [-1, 1] block by block) for a flat float32 tensor x."""
        ### BEGIN SOLUTION
        full = x.numel() - x.numel() % blocksize
        blocks = x[:full].view(-1, blocksize)
        absmax = blocks.abs().amax(dim=1)
        scaled = (blocks * (1.0 / absmax.clamp(min=1e-38)).view(-1, 1)).view(-1)
        if full < x.numel():
            tail_absmax = x[full:].abs().max()
            absmax = torch.cat([absmax, tail_absmax.view(1)])
            scaled = torch.cat([scaled, x[full:] / tail_absmax.clamp(min=1e-38)])
        return absmax, scaled.clamp(-1, 1)
        ### END SOLUTION
    '''),
    tests("normalize_blocks_tests", 2, '''
    _x = torch.tensor([1.0, -4.0, 2.0, 0.5, 0.0, 0.0, 0.0, 0.0, 3.0, -6.0])
    _absmax, _scaled = normalize_blocks(_x, 4)
    check_value("absmax", _absmax, torch.tensor([4.0, 0.0, 6.0]),
                hint="one absmax per block of 4, the partial last block (3.0, -6.0) included")
    check_value("scaled", _scaled, torch.tensor([0.25, -1.0, 0.5, 0.125, 0.0, 0.0, 0.0, 0.0, 0.5, -1.0]),
                hint="each value divided by its own block's absmax; is an all-zero block NaN? clamp the divisor")
    _ = check_value("no NaN", bool(torch.isfinite(_scaled).all()), True, hint="clamp the divisor to at least 1e-38")
    ''', _hidden('''
    for _shape, _bs, _seed, _kind, _want_absmax, _want_scaled in _NORMALIZE:
        _x = _case(_shape, "float32", _seed, _kind)
        _a, _s = normalize_blocks(_x, _bs)
        _first_diff(_hex(_a.float()), _want_absmax, 4, f"absmax (n={_shape[0]}, blocksize={_bs})",
                    "One absmax per block, the partial last block included.")
        _first_diff(_hex(_s.float()), _want_scaled, 4, f"scaled values (n={_shape[0]}, blocksize={_bs}, {_kind})",
                    "Full blocks: x * (1 / absmax); the partial last block: x / absmax; then clamp to [-1, 1].")
    '''), expected={"_NORMALIZE": _NORMALIZE}),

    # ---------------------------------------------------------------------------------------------- 3
    md("""
    ## 3. The nearest level

    Each scaled value becomes the index (0..15) of the nearest NF4 level. With sorted levels, "nearest" means:
    count how many **midpoints** between neighbouring levels lie below the value. `torch.bucketize(values,
    midpoints)` does exactly that, and a value exactly **on** a midpoint gets the **lower** level (as in
    bitsandbytes). Compute the midpoints in float32: `(code[:-1] + code[1:]) / 2`.

    **Task 3.** Write `nearest_code(scaled, code)`: a `torch.uint8` tensor of indices, shaped like `scaled`.
    """),
    answer("nearest_code", '''
    def nearest_code(scaled, code):
        """Index (uint8) of the level of the sorted `code` nearest to each value; on a midpoint, the lower one."""
        ### BEGIN SOLUTION
        midpoints = (code[:-1] + code[1:]) / 2
        return torch.bucketize(scaled, midpoints).to(torch.uint8)
        ### END SOLUTION
    '''),
    tests("nearest_code_tests", 2, '''
    _code = nf4_codebook()
    _mid = (_code[:-1] + _code[1:]) / 2
    check_value("dtype", str(nearest_code(_code, _code).dtype), "torch.uint8", hint=".to(torch.uint8)")
    check_value("each level maps to itself", nearest_code(_code, _code), torch.arange(16, dtype=torch.uint8),
                hint="compare with the midpoints between sorted levels")
    check_value("values exactly on a midpoint", nearest_code(_mid, _code), torch.arange(15, dtype=torch.uint8),
                rtol=0, atol=0, hint="a value on a midpoint takes the LOWER level: torch.bucketize(values, midpoints)")
    _ = check_value("just above a midpoint", nearest_code(_mid + 1e-6, _code), torch.arange(1, 16, dtype=torch.uint8),
                    rtol=0, atol=0, hint="above the midpoint, the upper level is nearer")
    ''', _hidden('''
    _code = nf4_codebook()
    _g = torch.Generator().manual_seed(31)
    _v = torch.cat([torch.rand(500, generator=_g) * 2 - 1, (_code[:-1] + _code[1:]) / 2, _code])
    _got = nearest_code(_v, _code)
    _want = torch.bucketize(_v, (_code[:-1] + _code[1:]) / 2).to(torch.uint8)
    _first_diff(_hex(_got), _hex(_want), 1, "nearest level of 531 values", "Use the midpoints; on one, go lower.")
    ''')),

    # ---------------------------------------------------------------------------------------------- 4
    md("""
    ## 4. Two codes per byte

    A 4-bit index fits in a *nibble* (half a byte). bitsandbytes stores element `2j` in the **high** nibble and
    element `2j + 1` in the **low** nibble of byte `j`: `(first << 4) | second`.

    **Task 4.** Write `pack_nibbles(idx)` for a uint8 tensor of an even number of indices (returns `len(idx) // 2`
    uint8 bytes), and `unpack_nibbles(packed, n)`, which returns the first `n` indices (uint8) in their original
    order.
    """),
    answer("pack_nibbles", '''
    def pack_nibbles(idx):
        """Two 4-bit indices per byte, the first in the high nibble."""
        ### BEGIN SOLUTION
        idx = idx.to(torch.uint8)
        return (idx[0::2] << 4) | idx[1::2]
        ### END SOLUTION


    def unpack_nibbles(packed, n):
        """The first n indices stored in `packed`, high nibble first."""
        ### BEGIN SOLUTION
        return torch.stack([packed >> 4, packed & 0x0F], dim=1).view(-1)[:n]
        ### END SOLUTION
    '''),
    tests("pack_nibbles_tests", 2, '''
    _idx = torch.tensor([1, 2, 15, 0, 7, 8], dtype=torch.uint8)
    check_value("packed", pack_nibbles(_idx), torch.tensor([0x12, 0xF0, 0x78], dtype=torch.uint8), rtol=0, atol=0,
                hint="byte j = (idx[2j] << 4) | idx[2j + 1]: the first value in the HIGH nibble")
    check_value("dtype", str(pack_nibbles(_idx).dtype), "torch.uint8", hint="keep everything uint8")
    _ = check_value("unpacked", unpack_nibbles(pack_nibbles(_idx), 5), _idx[:5], rtol=0, atol=0,
                    hint="high nibble (b >> 4) first, then low (b & 0x0F); keep only the first n")
    ''', _hidden('''
    _g = torch.Generator().manual_seed(41)
    _i = torch.randint(0, 16, (1002,), generator=_g, dtype=torch.uint8)
    _p = pack_nibbles(_i)
    _first_diff(_hex(_p.to(torch.uint8)), _hex((_i[0::2] << 4) | _i[1::2]), 1, "packed bytes of 1002 indices",
                "The first index of each pair goes in the high nibble.")
    _first_diff(_hex(unpack_nibbles(_p, 1001).to(torch.uint8)), _hex(_i[:1001]), 1, "unpacked 1001 indices",
                "High nibble first; return only n values.")
    ''')),

    # ---------------------------------------------------------------------------------------------- 5
    md("""
    ## 5. Quantize: a weight to the bytes bitsandbytes stores

    Put the pieces together, as `bitsandbytes.functional.quantize_4bit(w, blocksize, quant_type="nf4")` does:

    1. flatten `w` and convert it to float32 (bfloat16 and float16 weights too);
    2. `normalize_blocks`;
    3. if the number of values is **odd**, append one 0.0 so the last byte is whole;
    4. `nearest_code` with the NF4 codebook, then `pack_nibbles`.

    **Task 5.** Write `quantize_nf4(w, blocksize=64)` returning `(packed, absmax)`: uint8 bytes (`ceil(n / 2)` of
    them) and the float32 absmax per block.
    """),
    answer("quantize_nf4", '''
    def quantize_nf4(w, blocksize=64):
        """(packed uint8 codes, float32 absmax per block) of a float tensor, as bitsandbytes stores them."""
        ### BEGIN SOLUTION
        absmax, scaled = normalize_blocks(w.detach().reshape(-1).float(), blocksize)
        if scaled.numel() % 2:
            scaled = F.pad(scaled, (0, 1))
        return pack_nibbles(nearest_code(scaled, nf4_codebook())), absmax
        ### END SOLUTION
    '''),
    tests("quantize_nf4_tests", 4, f'''
    _w = torch.linspace(-1, 1, 7).view(1, 7) * torch.tensor([[1.0, -0.5, 0.25, 1.0, 0.0, 0.3, -0.9]])
    _packed, _absmax = quantize_nf4(_w, blocksize=64)
    check_value("number of bytes", _packed.numel(), 4, hint="7 values: pad with one 0 to 8, then 2 per byte")
    check_value("absmax", _absmax, torch.tensor([_w.abs().max().item()]), hint="one block of 64 holds all 7 values")
    _ = check_value("bytes (as bitsandbytes stores them)", _packed, torch.tensor({_VISIBLE_BYTES!r}, dtype=torch.uint8),
                    rtol=0, atol=0, hint="normalize, pad an odd count with one 0, nearest code, pack high nibble first")
    ''', _hidden('''
    for (_args, _bs, _want_codes, _want_absmax) in _QUANTIZE:
        _shape, _dtype = _args[0], _args[1]
        _w = _case(*_args)
        _packed, _absmax = quantize_nf4(_w, blocksize=_bs)
        _where = f"shape {_shape}, {_dtype}, blocksize {_bs}, {_args[3]}"
        _first_diff(_hex(_absmax.float()), _want_absmax, 4, f"absmax ({_where})",
                    "One float32 absmax per block of the flattened weight, converted to float32 first.")
        _first_diff(_hex(_packed.to(torch.uint8).view(-1)), _want_codes, 1, f"packed codes ({_where})",
                    "Odd counts get one 0 appended; values on a midpoint take the lower level; "
                    "the partial last block is divided by its absmax, full blocks multiplied by 1 / absmax.")
    '''), expected={"_QUANTIZE": _QUANTIZE}),

    # ---------------------------------------------------------------------------------------------- 6
    md("""
    ## 6. Dequantize: bytes back to a weight

    Each value is `level[code] * absmax of its block`, computed in float32. The blocks run over the **flattened**
    weight, so a block can span two rows (a row of 95 values holds 1.48 blocks of 64): index the absmax by the
    flat position `i // blocksize`, not by row.

    **Task 6.** Write `dequantize_nf4(packed, absmax, shape, blocksize=64)` returning a float32 tensor of `shape`.
    """),
    answer("dequantize_nf4", '''
    def dequantize_nf4(packed, absmax, shape, blocksize=64):
        """level[code] * block absmax, float32, in the given shape."""
        ### BEGIN SOLUTION
        n = torch.Size(shape).numel()
        levels = nf4_codebook()[unpack_nibbles(packed, n).long()]
        padded = F.pad(levels, (0, -n % blocksize))
        return (padded.view(-1, blocksize) * absmax.view(-1, 1)).view(-1)[:n].view(shape)
        ### END SOLUTION
    '''),
    tests("dequantize_nf4_tests", 4, '''
    _w = torch.randn(5, 70, generator=torch.Generator().manual_seed(0))
    _packed, _absmax = quantize_nf4(_w, blocksize=64)
    _w_hat = dequantize_nf4(_packed, _absmax, (5, 70), blocksize=64)
    check_value("shape", tuple(_w_hat.shape), (5, 70), hint="return .view(shape)")
    check_value("dtype", str(_w_hat.dtype), "torch.float32", hint="compute in float32")
    _err = (_w_hat - _w).abs().mean().item() / _w.abs().mean().item()
    _ = check_value("relative error < 0.25", _err < 0.25, True,
                    hint=f"relative error {_err:.3f}: NF4 on normal data gives about 0.2. Is each block scaled by "
                         "its own absmax (by flat position, not by row)? High nibble first?")
    ''', _hidden('''
    import hashlib

    for (_args, _bs, _codes, _absmax, _digest, _abs_sum) in _DEQUANTIZE:
        _shape = _args[0]
        _p = torch.tensor(list(bytes.fromhex(_codes)), dtype=torch.uint8)
        _a = torch.frombuffer(bytearray(bytes.fromhex(_absmax)), dtype=torch.float32)
        _w_hat = dequantize_nf4(_p, _a, _shape, blocksize=_bs)
        assert tuple(_w_hat.shape) == tuple(_shape), f"shape {tuple(_w_hat.shape)}, expected {_shape}"
        _w_hat = _w_hat.float().contiguous()
        _got_sum = float(_w_hat.double().abs().sum())
        assert abs(_got_sum - _abs_sum) < 1e-3 * (1 + _abs_sum), (
            f"dequantized {_shape} (blocksize {_bs}): sum |w| is {_got_sum:.4f}, the reference {_abs_sum:.4f}. "
            "Each value is level[code] * the absmax of its block, blocks counted over the flattened weight.")
        _got = hashlib.sha256(_w_hat.view(torch.uint8).numpy().tobytes()).hexdigest()
        assert _got == _digest, (f"dequantized {_shape} (blocksize {_bs}): close, but not bit for bit. Multiply the "
                                 "float32 level by the float32 absmax, one rounding, nothing else.")
    '''), expected={"_DEQUANTIZE": _DEQUANTIZE}),

    # ---------------------------------------------------------------------------------------------- 7
    md("""
    ## 7. Double quantization: bits per parameter

    Storage per weight: 4 bits of code, plus its share of the block's float32 absmax: `4 + 32 / blocksize` bits
    (4.5 at blocksize 64). **Double quantization** stores each absmax as an 8-bit code instead, and adds one
    float32 scale per `dq_blocksize` (256) absmax values: `4 + 8 / blocksize + 32 / (blocksize * dq_blocksize)`.

    **Task 7.** Write `bits_per_param(blocksize=64, double_quant=True, dq_blocksize=256)`.
    """),
    answer("bits_per_param", '''
    def bits_per_param(blocksize=64, double_quant=True, dq_blocksize=256):
        """Storage bits per weight of NF4, the constants included."""
        ### BEGIN SOLUTION
        if double_quant:
            return 4 + 8 / blocksize + 32 / (blocksize * dq_blocksize)
        return 4 + 32 / blocksize
        ### END SOLUTION


    print(f"{bits_per_param(64, False):.3f} -> {bits_per_param(64, True):.3f} bits per weight")
    '''),
    tests("bits_per_param_tests", 2, '''
    check_value("blocksize 64, no double quantization", bits_per_param(64, False), 4.5,
                hint="4 bits of code + 32 bits of absmax shared by 64 weights")
    _ = check_value("blocksize 64, double quantization", bits_per_param(64, True), 4.127, rtol=1e-3,
                    hint="4 + 8/64 + 32/(64*256)")
    ''', '''
    for _bs in (32, 128, 4096):
        for _dq in (False, True):
            for _dqb in (256, 128):
                _want = 4 + 8 / _bs + 32 / (_bs * _dqb) if _dq else 4 + 32 / _bs
                assert abs(bits_per_param(_bs, _dq, _dqb) - _want) < 1e-9, (
                    f"bits_per_param({_bs}, {_dq}, {_dqb}) = {bits_per_param(_bs, _dq, _dqb)}, expected {_want}: "
                    "use the arguments, not 64 and 256")
    '''),
    md("""
    ## What you built

    * The 16 NF4 levels from normal quantiles (8 positive, an exact 0, 7 negative), equal to bitsandbytes' own.
    * Blockwise absmax quantization and packing that write the very bytes bitsandbytes writes, partial and
      all-zero blocks and midpoint values included, for float32, bfloat16 and float16 weights.
    * Dequantization, and the 4.5 -> 4.127 bits per weight that double quantization buys.

    Chapter 09 puts this format under a LoRA fine-tune (QLoRA) and measures what it costs.
    """),
]
