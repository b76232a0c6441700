"""Lab 01 -- The memory wall: account for every byte of training, predict the course model's, then measure.

The hidden tests' expected values are computed here from course_utils.memory when the lab is built.
"""
from _cells import GRADING_NOTE, answer, code, md, setup_cell, tests

from course_utils import memory as _memory
from course_utils.models import load_course_model as _load

_MODEL = _load()[0]
_N_PARAMS = sum(p.numel() for p in _MODEL.parameters())
_N_LORA = _memory.lora_param_count(_MODEL, r=8, target_modules=("q_proj", "v_proj"))
_NF4 = [(bs, dq, _memory.nf4_bits_per_param(bs, dq)) for bs in (32, 128, 256, 4096) for dq in (True, False)]
_FULL = [(a, _memory.full_finetune_bytes(*a)) for a in [
    (13e9, "fp32", "adamw", True), (3e9, "fp16", "sgd", True), (1.5e9, "bf16", "adam", False),
    (70e9, "bf16", "sgd_momentum", True), (124_000_000, "fp32", "sgd", False)]]
_COUNT = [(shapes, r, _memory.lora_param_count(shapes, r)) for shapes, r in [
    ([(128, 128)] * 8, 4), ([(352, 128), (128, 352)], 16), ([(4096, 11008)] * 3, 64)]]
_LORA = [(a, _memory.lora_bytes(*a)) for a in [
    (13e9, 25_000_000, "bf16", "fp32", "adamw"), (1_066_112, 16_384, "fp32", "fp32", "adam"),
    (70e9, 100_000_000, "fp16", "bf16", "sgd")]]
_QLORA = [(a, _memory.qlora_bytes(*a)) for a in [
    (12e9, 0.5e9, 50_000_000, 64, True), (6e9, 0.2e9, 10_000_000, 128, False), (60e9, 1e9, 200_000_000, 256, True)]]

CELLS = [
    md(f"""
    # Lab 01 — The memory wall

    Why can't you fully fine-tune a 7B model on a 16 GB GPU, when its bf16 weights take only 13 GiB?
    Because training stores much more than the weights. In this lab you write the accounting yourself:

    1. Bytes per number (fp32, bf16, int8, NF4)
    2. Optimizer state
    3. Full fine-tuning: the 16 bytes/parameter rule
    4. The 7B wall
    5. LoRA: trainable parameters and bytes
    6. QLoRA: a 4-bit frozen base
    7. Predict the course model's bytes, then measure them

    **How this lab is graded.** Write your code where it says `# YOUR CODE HERE` (replace the
    `raise NotImplementedError(...)` line). Each answer is followed by a test cell: run it, it prints nothing when
    you are right and tells you what to check when you are not. When grading, the same cells run again with extra
    hidden cases (other model sizes and dtypes), so make your functions general, not tuned to the visible examples.
    {GRADING_NOTE}

    Throughout, **GiB** means 1024³ bytes (what `nvidia-smi` and PyTorch report) and **GB** means 10⁹ bytes.
    Activations are left out: they depend on batch size and sequence length, not on the parameter count.
    """),
    setup_cell(),

    # ---------------------------------------------------------------------------------------------- 1
    md("""
    ## 1. Bytes per number

    A parameter is one number. fp32 stores it in 32 bits, fp16 and bf16 in 16 bits, int8 in 8.

    **Task 1.1.** Write `bytes_per_param(dtype)` for `"fp32"`, `"fp16"`, `"bf16"` and `"int8"`. For any other
    name raise a `ValueError` that names the dtype.
    """),
    answer("bytes_per_param", '''
    def bytes_per_param(dtype):
        """Bytes one number takes when stored as `dtype` ("fp32", "fp16", "bf16" or "int8")."""
        ### BEGIN SOLUTION
        table = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
        if dtype not in table:
            raise ValueError(f"unknown dtype {dtype!r}: use one of {list(table)}")
        return table[dtype]
        ### END SOLUTION
    '''),
    tests("bytes_per_param_tests", 1, '''
    assert bytes_per_param("fp32") == 4, "fp32 = 32 bits; how many bytes is that?"
    assert bytes_per_param("bf16") == 2, "bf16 has 16 bits (8 exponent, 7 mantissa, 1 sign)"
    ''', '''
    assert bytes_per_param("fp16") == 2, "fp16 is 16 bits, like bf16"
    assert bytes_per_param("int8") == 1, "int8 is one byte"
    try:
        bytes_per_param("fp12")
    except ValueError:
        pass
    else:
        raise AssertionError("bytes_per_param('fp12') should raise ValueError")
    '''),
    md("""
    **NF4** (QLoRA's 4-bit NormalFloat) stores 4 bits per weight *plus* one scale (absmax) per block of weights.
    With blocks of 64 and an fp32 absmax that is 32/64 = 0.5 extra bits per weight. *Double quantization* stores
    each absmax in 8 bits instead, plus one fp32 scale per 256 absmaxes: 8/64 + 32/(64·256) extra bits.

    **Task 1.2.** Write `nf4_bits_per_param(blocksize=64, double_quant=True)`.
    *Predict first:* how many bits per weight does QLoRA's default (blocksize 64, double quantization) cost?
    """),
    answer("nf4_bits_per_param", '''
    def nf4_bits_per_param(blocksize=64, double_quant=True):
        """Bits per weight of a 4-bit tensor, quantization constants included."""
        ### BEGIN SOLUTION
        if double_quant:
            return 4 + 8 / blocksize + 32 / (blocksize * 256)
        return 4 + 32 / blocksize
        ### END SOLUTION
    '''),
    code("""
    print(f"NF4, blocksize 64, no double quantization: {nf4_bits_per_param(64, False):.3f} bits")
    print(f"NF4, blocksize 64, double quantization:    {nf4_bits_per_param(64, True):.3f} bits")
    """),
    tests("nf4_bits_tests", 1, '''
    assert nf4_bits_per_param(64, double_quant=False) == 4.5, (
        "4 bits per weight + one fp32 absmax (32 bits) shared by 64 weights = 4 + 32/64")
    assert abs(nf4_bits_per_param(64, double_quant=True) - 4.127) < 1e-3, (
        "QLoRA reports 4.127 bits: 4 + 8/64 (8-bit absmax) + 32/(64*256) (one fp32 scale per 256 absmaxes)")
    ''', '''
    for _bs, _dq, _want in _cases:
        assert abs(float(nf4_bits_per_param(_bs, _dq)) - _want) < 1e-9, (
            f"blocksize={_bs}, double_quant={_dq}: use `blocksize`, not the number 64")
    ''', expected={"_cases": _NF4}),

    # ---------------------------------------------------------------------------------------------- 2
    md("""
    ## 2. Optimizer state

    The optimizer keeps state for every parameter it updates, in fp32 whatever the weights' dtype:

    | optimizer | state per parameter |
    |---|---|
    | SGD | nothing |
    | SGD with momentum | one momentum buffer |
    | Adam / AdamW | two moments, *m* (mean of gradients) and *v* (mean of squared gradients) |

    **Task 2.** Write `optimizer_bytes_per_param(optimizer)` for `"sgd"`, `"sgd_momentum"`, `"adam"` and
    `"adamw"`; raise a `ValueError` for anything else.
    """),
    answer("optimizer_bytes_per_param", '''
    def optimizer_bytes_per_param(optimizer):
        """Bytes of optimizer state per trainable parameter."""
        ### BEGIN SOLUTION
        table = {"sgd": 0, "sgd_momentum": 4, "adam": 8, "adamw": 8}
        if optimizer not in table:
            raise ValueError(f"unknown optimizer {optimizer!r}: use one of {list(table)}")
        return table[optimizer]
        ### END SOLUTION
    '''),
    tests("adam_bytes_per_param", 1, '''
    assert optimizer_bytes_per_param("adam") == 8, (
        "Adam keeps two moments (m and v) per parameter, each an fp32 number: how many bytes is that?")
    ''', '''
    assert optimizer_bytes_per_param("adamw") == 8, "AdamW keeps the same m and v as Adam"
    assert optimizer_bytes_per_param("sgd") == 0, "plain SGD keeps nothing between steps"
    assert optimizer_bytes_per_param("sgd_momentum") == 4, "momentum is one fp32 buffer"
    '''),

    # ---------------------------------------------------------------------------------------------- 3
    md("""
    ## 3. Full fine-tuning: what one training step keeps in memory

    For `n` parameters, every one of them trainable:

    * **weights**: `n` numbers in the weight dtype;
    * **gradients**: one per parameter, in the weight dtype;
    * **optimizer state**: section 2;
    * **master weights**: with 16-bit weights (mixed precision) the optimizer updates an fp32 copy, because tiny
      updates vanish when added to a bf16 number. fp32 weights are their own master copy: no extra bytes.

    **Task 3.** Write `full_finetune_bytes(n_params, weight_dtype="bf16", optimizer="adam", master_weights=True)`
    returning a dict with the keys `"weights"`, `"gradients"`, `"optimizer_state"`, `"master_weights"` and
    `"total"` (all in bytes). Use your functions from sections 1 and 2.

    *Predict first:* how many bytes per parameter does mixed-precision Adam need?
    """),
    answer("full_finetune_bytes", '''
    def full_finetune_bytes(n_params, weight_dtype="bf16", optimizer="adam", master_weights=True):
        """Bytes held by weights, gradients, optimizer state and master weights in full fine-tuning."""
        ### BEGIN SOLUTION
        w = bytes_per_param(weight_dtype)
        parts = {
            "weights": n_params * w,
            "gradients": n_params * w,
            "optimizer_state": n_params * optimizer_bytes_per_param(optimizer),
            "master_weights": n_params * 4 if (master_weights and weight_dtype != "fp32") else 0,
        }
        parts["total"] = sum(parts.values())
        return parts
        ### END SOLUTION
    '''),
    code("""
    per_param = full_finetune_bytes(1)
    print("bytes per parameter, bf16 mixed precision + Adam:", per_param)
    """),
    tests("full_ft_16_bytes_per_param", 2, '''
    from course_utils.memory import explain_mismatch

    _expected = {"weights": 2, "gradients": 2, "optimizer_state": 8, "master_weights": 4, "total": 16}
    _problem = explain_mismatch(full_finetune_bytes(1), _expected)
    assert not _problem, (
        f"{_problem}. ZeRO's accounting for mixed-precision Adam: bf16 weights 2 + bf16 gradients 2 "
        "+ Adam m and v 8 + fp32 master copy 4 = 16 bytes per parameter")
    ''', '''
    for _args, _want in _cases:
        _problem = explain_mismatch(dict(full_finetune_bytes(*_args)), _want, n_params=_args[0])
        assert not _problem, (
            f"full_finetune_bytes{_args}: {_problem}. Do fp32 weights need an fp32 master copy? "
            "Does every component use the dtype and optimizer you were given?")
    ''', expected={"_cases": _FULL}),

    # ---------------------------------------------------------------------------------------------- 4
    md("""
    ## 4. The 7B wall

    A common rule of thumb says a 7B model "can require 25–40 GB for full fine-tuning".

    **Task 4.** *Predict first*, then compute `full_ft_7b_gib`: the bytes of a full fine-tune of a 7-billion-parameter
    model in bf16 with Adam and master weights, in **GiB**.
    """),
    answer("full_ft_7b_gib", '''
    ### BEGIN SOLUTION
    full_ft_7b_gib = full_finetune_bytes(7e9)["total"] / 1024**3
    ### END SOLUTION
    print(f"7B full fine-tune: {full_ft_7b_gib:.1f} GiB before a single activation")
    '''),
    tests("full_ft_7b_gib_tests", 1, '''
    assert abs(full_ft_7b_gib - 104.3) < 0.1, (
        f"got {full_ft_7b_gib:.2f}: 7e9 parameters x 16 bytes = 112e9 bytes; a GiB is 1024**3 bytes, not 1e9")
    '''),
    code("""
    from course_utils.memory import GIB

    print(f"{'model':>6} {'weights bf16':>13} {'full FT':>9}")
    for name, n in [("7B", 7e9), ("13B", 13e9), ("70B", 70e9)]:
        print(f"{name:>6} {n * bytes_per_param('bf16') / GIB:10.1f} GiB {full_finetune_bytes(n)['total'] / GIB:6.0f} GiB")
    """),
    md("""
    The weights are only an eighth of the bill: at 16 bytes/parameter a 7B model needs ~104 GiB (112 GB), more
    than one 80 GB GPU, so the "25–40 GB" rule of thumb is about three times too low. That is the memory wall.
    (LLaMA-7B really has 6.74 billion parameters: 108 GB, the number the ZeRO-style accounting usually quotes.)
    """),

    # ---------------------------------------------------------------------------------------------- 5
    md("""
    ## 5. LoRA: train a few parameters, freeze the rest

    LoRA freezes the weight `W0` (shape `out x in`) and trains `B` (`out x r`) and `A` (`r x in`) instead:
    `r * (in + out)` parameters per adapted matrix.

    **Task 5.1.** Write `lora_param_count(shapes, r)`: `shapes` is a list of `(out_features, in_features)` of the
    adapted matrices.
    """),
    answer("lora_param_count", '''
    def lora_param_count(shapes, r):
        """Trainable parameters LoRA adds to the matrices listed in `shapes` ((out, in) pairs)."""
        ### BEGIN SOLUTION
        return sum(r * (n_in + n_out) for n_out, n_in in shapes)
        ### END SOLUTION
    '''),
    tests("lora_param_count_tests", 1, '''
    assert lora_param_count([(4096, 4096)], r=8) == 65536, (
        "one 4096 x 4096 matrix at r=8: A is 8 x 4096 and B is 4096 x 8")
    ''', '''
    for _shapes, _r, _want in _cases:
        assert int(lora_param_count(_shapes, _r)) == _want, (
            f"shapes {_shapes[:2]}..., r={_r}: A is r x in and B is out x r -- are in and out swapped or "
            "is r hard-coded?")
    ''', expected={"_cases": _COUNT}),
    md("""
    Only the adapters have gradients and optimizer state; the frozen base is just stored. Adapters are kept in
    fp32 (as PEFT does), so they need no master copy.

    **Task 5.2.** Write `lora_bytes(n_base, n_lora, base_dtype="bf16", adapter_dtype="fp32", optimizer="adam")`,
    same five keys as before. `"weights"` counts the base *and* the adapters.
    """),
    answer("lora_bytes", '''
    def lora_bytes(n_base, n_lora, base_dtype="bf16", adapter_dtype="fp32", optimizer="adam"):
        """Bytes of LoRA training: frozen base + adapters, gradients and optimizer state for adapters only."""
        ### BEGIN SOLUTION
        a = bytes_per_param(adapter_dtype)
        parts = {
            "weights": n_base * bytes_per_param(base_dtype) + n_lora * a,
            "gradients": n_lora * a,
            "optimizer_state": n_lora * optimizer_bytes_per_param(optimizer),
            "master_weights": 0,
        }
        parts["total"] = sum(parts.values())
        return parts
        ### END SOLUTION
    '''),
    tests("lora_bytes_tests", 2, '''
    from course_utils.memory import explain_mismatch

    _n_lora = lora_param_count([(4096, 4096)] * 64, r=8)  # Llama-7B, r=8 on q and v in 32 layers
    _expected = {"weights": 14e9 + 4 * _n_lora, "gradients": 4 * _n_lora, "optimizer_state": 8 * _n_lora,
                 "master_weights": 0}
    _expected["total"] = sum(_expected.values())
    _problem = explain_mismatch(lora_bytes(7e9, _n_lora), _expected)
    assert not _problem, (
        f"{_problem}. Which parameters have gradients and Adam state in LoRA: the 7e9 frozen ones or the adapters?")
    ''', '''
    for _args, _want in _cases:
        _problem = explain_mismatch(dict(lora_bytes(*_args)), _want, n_params=_args[0])
        assert not _problem, f"lora_bytes{_args}: {_problem}. Use base_dtype for the base, adapter_dtype for A and B."
    ''', expected={"_cases": _LORA}),

    # ---------------------------------------------------------------------------------------------- 6
    md("""
    ## 6. QLoRA: a 4-bit base

    QLoRA stores the base's linear layers in NF4 (section 1) and leaves the rest — embeddings, norms, the output
    head — in bf16. The adapters are trained exactly as in LoRA.

    **Task 6.** Write `qlora_bytes(n_base_quantized, n_base_other, n_lora, blocksize=64, double_quant=True)`: the
    quantized weights cost `nf4_bits_per_param(...) / 8` bytes each, the other base weights 2 bytes (bf16),
    the adapters fp32 with Adam.
    """),
    answer("qlora_bytes", '''
    def qlora_bytes(n_base_quantized, n_base_other, n_lora, blocksize=64, double_quant=True):
        """Bytes of QLoRA training: NF4 linear layers + bf16 rest of the base + fp32 adapters with Adam."""
        ### BEGIN SOLUTION
        parts = lora_bytes(0, n_lora)
        parts["weights"] += (n_base_quantized * nf4_bits_per_param(blocksize, double_quant) / 8
                             + n_base_other * bytes_per_param("bf16"))
        parts["total"] = sum(v for k, v in parts.items() if k != "total")
        return parts
        ### END SOLUTION
    '''),
    tests("qlora_bytes_tests", 2, '''
    from course_utils.memory import explain_mismatch

    _parts = qlora_bytes(6.74e9, 0.26e9, 40_000_000)
    _weights = 6.74e9 * nf4_bits_per_param() / 8 + 0.26e9 * 2 + 40_000_000 * 4
    assert abs(_parts["weights"] - _weights) < 1e3, (
        f"weights: got {_parts['weights']:,.0f}, expected {_weights:,.0f}: NF4 weights at "
        f"{nf4_bits_per_param() / 8:.4f} bytes, the unquantized rest at 2 bytes, adapters at 4")
    assert _parts["total"] / 1024**3 < 6, "a 7B QLoRA fine-tune fits in ~5 GiB before activations"
    ''', '''
    for _args, _want in _cases:
        _problem = explain_mismatch(dict(qlora_bytes(*_args)), _want, tol_bytes=2, n_params=_args[0])
        assert not _problem, f"qlora_bytes{_args}: {_problem}. Pass blocksize and double_quant on to nf4_bits_per_param."
    ''', expected={"_cases": _QLORA}),
    code("""
    from course_utils.memory import fits_on_gpu

    n_lora_7b = 40_000_000  # r=16 on all linear layers of a Llama-7B
    print("7B model, GiB needed before activations, and the GPUs (16 / 24 / 80 GiB) that hold it:")
    for method in ("full", "lora", "qlora"):
        fits = [fits_on_gpu(7e9, gpu, method, n_lora=n_lora_7b) for gpu in (16, 24, 80)]
        gpus = [f"{f.gpu_gib:.0f}" for f in fits if f.fits] or ["none"]
        print(f"{method:>6}: {fits[0].needed_gib:6.1f} GiB -> {', '.join(gpus)}")
    """),
    md("""
    LoRA's 13.6 GiB squeezes onto a 16 GiB card only with almost nothing left for activations; QLoRA leaves
    most of it free. Full fine-tuning needs several GPUs (or ZeRO/offloading) whatever their size.
    """),

    # ---------------------------------------------------------------------------------------------- 7
    md("""
    ## 7. Predict, then measure: the course model

    Accounting is only worth something if it matches reality. The course model is a tiny Llama (~1.07M
    parameters) with the same layer names as Llama-7B; it trains in fp32 on the CPU. Predict its training memory
    with your functions, then run a real AdamW step and count the bytes PyTorch actually holds.

    **Task 7.1.** Set `n_params` to the model's parameter count (count it from `model.parameters()`), and
    `predicted_full` to your prediction for full fine-tuning in **fp32** with **AdamW**.
    """),
    code("""
    from course_utils.models import load_course_model

    model, tokenizer = load_course_model()
    print(type(model).__name__, "with", len(model.model.layers), "layers")
    """),
    answer("predict_full_ft", '''
    ### BEGIN SOLUTION
    n_params = sum(p.numel() for p in model.parameters())
    predicted_full = full_finetune_bytes(n_params, weight_dtype="fp32", optimizer="adamw")
    ### END SOLUTION
    print(f"{n_params:,} parameters; predicted {predicted_full['total']:,} bytes")
    '''),
    md("""
    Now measure. `measure_training_bytes` adds up the bytes of every parameter, every `.grad` and every tensor in
    `optimizer.state` (Adam creates *m* and *v* at the first step, so we take one step first).
    """),
    code("""
    from course_utils.memory import compare, measure_training_bytes

    torch.manual_seed(0)
    batch = torch.randint(0, model.config.vocab_size, (8, 32), generator=torch.Generator().manual_seed(0))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()

    measured_full = measure_training_bytes(model, optimizer)
    for key, rel in compare(predicted_full, measured_full).items():
        print(f"{key:>16}: predicted {predicted_full[key]:>12,}  measured {measured_full[key]:>12,}  ({rel:+.3%})")
    """),
    tests("course_model_full_ft_prediction", 2, '''
    from course_utils.memory import explain_mismatch

    assert n_params == sum(p.numel() for p in model.parameters()), "count every parameter: sum of p.numel()"
    _problem = explain_mismatch(predicted_full, measured_full, tol_bytes=0.05 * measured_full["total"])
    assert not _problem, (
        f"{_problem}. The model is fp32 (what does that mean for master weights?) and AdamW keeps m and v.")
    ''', '''
    assert int(n_params) == _n_params, "count every parameter of the course model: the sum of p.numel()"
    _problem = explain_mismatch(dict(predicted_full), _want, tol_bytes=1)
    assert not _problem, f"predicted_full: {_problem}. It is full_finetune_bytes(n_params, 'fp32', 'adamw')."
    ''', expected={"_n_params": _N_PARAMS, "_want": _memory.full_finetune_bytes(_N_PARAMS, "fp32", "adamw")}),
    md("""
    The only difference is Adam's `step` counter, one 4-byte number per parameter tensor.

    **Task 7.2.** Now LoRA with `r=8` on the attention's `q_proj` and `v_proj` (the original LoRA recipe).
    Collect the `(out_features, in_features)` of every `q_proj` and `v_proj` layer of a fresh model into `shapes`,
    then set `predicted_lora` (fp32 base, fp32 adapters, AdamW). Remember that `n_base` is every frozen
    parameter.
    """),
    answer("predict_lora", '''
    model, tokenizer = load_course_model()  # fresh weights: the full fine-tuning step above changed them
    ### BEGIN SOLUTION
    shapes = [(m.out_features, m.in_features) for name, m in model.named_modules()
              if name.endswith(("q_proj", "v_proj"))]
    n_lora = lora_param_count(shapes, r=8)
    predicted_lora = lora_bytes(n_params, n_lora, base_dtype="fp32", adapter_dtype="fp32", optimizer="adamw")
    ### END SOLUTION
    print(f"{len(shapes)} adapted matrices, {n_lora:,} LoRA parameters; predicted {predicted_lora['total']:,} bytes")
    '''),
    code("""
    from course_utils.lora import add_lora, count_parameters

    add_lora(model, target_modules=["q_proj", "v_proj"], r=8, alpha=16)
    trainable, total = count_parameters(model)
    print(f"trainable {trainable:,} of {total:,} ({trainable / total:.2%})")

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()

    measured_lora = measure_training_bytes(model, optimizer)
    for key, rel in compare(predicted_lora, measured_lora).items():
        print(f"{key:>16}: predicted {predicted_lora[key]:>12,}  measured {measured_lora[key]:>12,}  ({rel:+.3%})")
    print(f"LoRA needs {measured_lora['total'] / measured_full['total']:.0%} of full fine-tuning's memory")
    """),
    tests("course_model_lora_prediction", 2, '''
    from course_utils.memory import explain_mismatch

    assert n_lora == trainable, (
        f"you predicted {n_lora:,} LoRA parameters, the model trains {trainable:,}: r=8 on every q_proj and v_proj")
    _problem = explain_mismatch(predicted_lora, measured_lora, tol_bytes=0.05 * measured_lora["total"])
    assert not _problem, f"{_problem}. Gradients and AdamW state exist only for the {trainable:,} adapter parameters."
    ''', '''
    assert int(n_lora) == _n_lora, "r=8 on every q_proj and v_proj of a fresh course model"
    _problem = explain_mismatch(dict(predicted_lora), _want, tol_bytes=1)
    assert not _problem, f"predicted_lora: {_problem}. n_base is every frozen parameter; base and adapters in fp32."
    ''', expected={"_n_lora": _N_LORA, "_want": _memory.lora_bytes(_N_PARAMS, _N_LORA, "fp32", "fp32", "adamw")}),
    md("""
    ## What you found

    * Mixed-precision Adam costs **16 bytes per parameter**; a 7B full fine-tune needs ~104 GiB before
      activations, not 25–40 GB.
    * LoRA pays gradients and optimizer state only for the adapters: the frozen base dominates (2 bytes/param in
      bf16), so a 7B LoRA fine-tune needs ~14 GiB and fits a 24 GB GPU.
    * QLoRA's NF4 base costs 4.127 bits per weight: a 7B model trains in ~5 GiB plus activations.
    * On a real model your predictions and the measured bytes agree to a fraction of a percent.

    Next: Lab 02 builds the LoRA layer you just used.
    """),
]
