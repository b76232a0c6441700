"""Lab 04 -- a QLoRA fine-tune of the course model: a 4-bit NF4 base, LoRA adapters within a parameter budget,
trained in under a minute on 2 cores, saved in PEFT's format.

The pass threshold of the held-out loss is set when the lab is built from the reference run on three seeds
(_expected_qlora.py); the hidden tests also hold the base model's 4-bit bytes as a checksum, so a submission whose
base is not NF4, or was trained, fails with the reason.
"""
from textwrap import dedent

import _expected_qlora as E
from _cells import GRADING_NOTE, answer, code, md, setup_cell, tests

_REF = E.reference_runs()
_THRESHOLD = _REF["threshold"]
_BASE_DIGEST = E.nf4_base_digest()

_DIGEST = '''
import hashlib


def _nf4_digest(m):
    """sha256 over every NF4 layer's codes and constants: the base's 4-bit bytes, bit for bit."""
    h = hashlib.sha256()
    for _, layer in nf4_layers(m):
        for t in (layer.weight_codes, layer.weight_absmax, layer.weight_absmax_scale, layer.weight_absmax_offset):
            h.update(t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
'''

CELLS = [
    md(f"""
    # Lab 04 — QLoRA: fine-tune the course model on a 4-bit base

    QLoRA keeps the pretrained weights frozen in **4-bit NF4** and trains small **LoRA** adapters, in float32, on top.
    You will fine-tune the course model on a domain it never saw — chord spellings in a music notation,
    `"A: A3 C#4 E4 | ..."` — on a laptop CPU:

    1. Quantize the base model to NF4 (double quantization, blocks of 64)
    2. Add LoRA adapters within a budget of **{E.BUDGET:,} trainable parameters**
    3. Train for at most **{E.TIME_LIMIT} seconds** and reach a held-out loss below **{_THRESHOLD}**
    4. Save the adapter in PEFT's format, so `PeftModel.from_pretrained` loads it

    The tools are the course's: `course_utils.nf4.quantize_model`, `course_utils.lora.add_lora` and `save_adapter`,
    `course_utils.training.train`. Chapter 09 (notebooks/09_qlora.ipynb) shows each of them at work. The pass mark
    {_THRESHOLD} comes from the reference solution: its held-out loss on three seeds was
    {", ".join(f"{v:.3f}" for v in _REF["losses"])}, and the mark leaves room above the worst of them.

    **How this lab is graded.** Write your code where it says `# YOUR CODE HERE` (replace the
    `raise NotImplementedError(...)` line). Each test cell prints a ✅ line per check that passes and stops at the
    first one that fails, with a question that points at the fix. When grading, the tests check your model again:
    that the base is really 4-bit and was never trained, the budget, the held-out loss (recomputed), and the saved
    adapter. Training the full model, or skipping the quantization, fails with the reason.
    {GRADING_NOTE}
    """),
    setup_cell("""
    import copy
    import tempfile
    import time
    from pathlib import Path

    from course_utils import data
    from course_utils.checks import check_value
    from course_utils.lora import add_lora, count_parameters, save_adapter
    from course_utils.models import load_course_model
    from course_utils.nf4 import NF4Linear, model_storage_bytes, nf4_layers, quantize_model
    from course_utils.training import batches_from_examples, encode_texts, eval_loss, train
    """),
    md("""
    ## 0. The model and the data

    The course model has never seen this notation: its held-out loss on it is high. 400 training lines and 100
    held-out lines.
    """),
    code(f"""
    BUDGET, TIME_LIMIT = {E.BUDGET}, {E.TIME_LIMIT}
    base, tok = load_course_model()
    train_texts = data.texts("far_train")
    held_out = encode_texts(tok, data.texts("far_test"))
    print(train_texts[0])
    print(f"base model, held-out loss: {{eval_loss(base, held_out):.3f}}")
    """),

    # ---------------------------------------------------------------------------------------------- 1
    md("""
    ## 1. A 4-bit base

    **Task 1.** Set `model` to a copy of `base` whose linear layers (all but the output head, `lm_head`) are NF4
    with double quantization in blocks of 64: QLoRA's recipe, and `quantize_model`'s defaults. Keep `base` itself
    unchanged (`copy.deepcopy`): the tests compare with it.
    """),
    answer("quantize_base", '''
    ### BEGIN SOLUTION
    model = quantize_model(copy.deepcopy(base))
    ### END SOLUTION
    print(f"{len(nf4_layers(model))} NF4 layers, {model_storage_bytes(model):,} bytes of 4-bit weights")
    '''),
    tests("quantize_base_tests", 2, '''
    _linear = [n for n, m in model.named_modules() if type(m).__name__ == "Linear"]
    check_value("NF4 layers", len(nf4_layers(model)), 28,
                hint="4 blocks x 7 linear layers: quantize_model(copy.deepcopy(base)) replaces each by an NF4Linear")
    check_value("full-precision linear layers left", ", ".join(_linear), "lm_head",
                hint="only the output head stays in full precision, as in QLoRA")
    check_value("double quantization, blocks of 64",
                all(m.double_quant and m.blocksize == 64 for _, m in nf4_layers(model)), True,
                hint="quantize_model's defaults: blocksize=64, double_quant=True")
    _ = check_value("base left unchanged", type(base.model.layers[0].self_attn.q_proj).__name__, "Linear",
                    hint="quantize a copy: quantize_model(copy.deepcopy(base)); quantize_model changes its argument")
    ''', _DIGEST + dedent('''
    assert _nf4_digest(model) == _BASE_DIGEST, (
        "the 4-bit layers are not the course model's weights in NF4 with double quantization, blocks of 64: "
        "quantize_model(copy.deepcopy(base)) with its defaults")
    '''), expected={"_BASE_DIGEST": _BASE_DIGEST}),

    # ---------------------------------------------------------------------------------------------- 2
    md(f"""
    ## 2. Adapters within the budget

    **Task 2.** Add LoRA adapters to `model` with `add_lora(model, targets, r=..., alpha=...)` so that at most
    **{E.BUDGET:,}** parameters train. Where they go matters more than how many there are (chapter 06 measured
    it); the budget decides the rank. Then set `n_trainable` with `count_parameters(model)[0]`.
    """),
    answer("add_adapters", '''
    torch.manual_seed(0)  # LoRA's A matrices are random: fixed, so that a rerun gives the same numbers
    ### BEGIN SOLUTION
    model = add_lora(model, "all-linear", r=4, alpha=8)
    ### END SOLUTION
    n_trainable = count_parameters(model)[0]
    print(f"{n_trainable:,} trainable parameters, {n_trainable / BUDGET:.0%} of the budget")
    '''),
    tests("add_adapters_tests", 2, '''
    _trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    check_value("some parameters train", len(_trainable) > 0, True, hint="add_lora(model, targets, r=..., alpha=...)")
    check_value("within the budget", sum(p.numel() for _, p in _trainable) <= BUDGET, True,
                hint=f"{sum(p.numel() for _, p in _trainable):,} parameters train: lower r or adapt fewer layers")
    check_value("trainable parameters outside the adapters", ", ".join(n for n, _ in _trainable if "lora_" not in n), "",
                hint="the base stays frozen: only lora_A / lora_B may have requires_grad=True")
    _ = check_value("adapter dtype", ", ".join(sorted({str(p.dtype) for _, p in _trainable})), "torch.float32",
                    hint="QLoRA keeps the adapters in higher precision than the 4-bit base")
    '''),

    # ---------------------------------------------------------------------------------------------- 3
    md(f"""
    ## 3. Train

    **Task 3.** Train `model` on `train_texts` with `train(model, batches, steps, lr=...)`, batches from
    `batches_from_examples(lambda rows: encode_texts(tok, rows), train_texts, batch_size, seed=0)`. Choose the
    steps, batch size and learning rate; the whole training must take at most **{E.TIME_LIMIT} s** on 2 cores (the
    cell measures it). Aim for a held-out loss below **{_THRESHOLD}**.
    """),
    answer("train_adapters", '''
    t0 = time.perf_counter()
    ### BEGIN SOLUTION
    batches = batches_from_examples(lambda rows: encode_texts(tok, rows), train_texts, 8, seed=0)
    result = train(model, batches, 30, lr=2e-2, progress=False)
    ### END SOLUTION
    train_seconds = time.perf_counter() - t0
    final_loss = eval_loss(model, held_out)
    print(f"trained in {train_seconds:.1f} s; held-out loss {final_loss:.3f}")
    '''),
    tests("train_adapters_tests", 4, f'''
    check_value("training time within the limit", train_seconds <= TIME_LIMIT, True,
                hint=f"{{train_seconds:.0f}} s: fewer steps or smaller batches")
    check_value("held-out loss below {_THRESHOLD}", eval_loss(model, held_out) < {_THRESHOLD}, True,
                hint=f"held-out loss {{eval_loss(model, held_out):.3f}}: more steps, a learning rate "
                     "from 5e-3 to 2e-2 (1e-3 is too small for LoRA here), or adapters on every linear layer")
    ''', _DIGEST + dedent(f'''
    assert len(nf4_layers(model)) == 28 and _nf4_digest(model) == _BASE_DIGEST, (
        "the 4-bit base is not the course model quantized with QLoRA's defaults, or it changed during training: "
        "quantize a copy of the base, and train only the adapters")
    _n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert _n_train <= BUDGET, f"{{_n_train:,}} parameters train, over the budget of {{BUDGET:,}}: the full model?"
    assert [n for n, m in model.named_modules() if type(m).__name__ == "Linear" and "lora_" not in n] == ["lm_head"], (
        "a full-precision linear layer is back in the model: the base must stay 4-bit")
    _held_out = eval_loss(model, held_out)
    assert _held_out < {_THRESHOLD}, f"held-out loss {{_held_out:.3f}}, the pass mark is {_THRESHOLD}"
    '''), expected={"_BASE_DIGEST": _BASE_DIGEST}),

    # ---------------------------------------------------------------------------------------------- 4
    md("""
    ## 4. Save the adapter, load it with PEFT

    **Task 4.** Save the adapter to the folder `adapter_dir` with `save_adapter(model, adapter_dir)`: PEFT's
    format (adapter_config.json + adapter_model.safetensors), a few hundred kB instead of the whole model. The
    test loads it into Hugging Face PEFT on a fresh copy of the course model and compares the weights.
    """),
    answer("save_adapter_dir", '''
    adapter_dir = Path(tempfile.mkdtemp()) / "far_adapter"
    ### BEGIN SOLUTION
    save_adapter(model, adapter_dir)
    ### END SOLUTION
    print(sorted(p.name for p in adapter_dir.iterdir()))
    '''),
    tests("save_adapter_dir_tests", 2, '''
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():  # PEFT asks transformers a question under its deprecated name
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        _peft = PeftModel.from_pretrained(load_course_model()[0], adapter_dir)
    _theirs = {n.replace("base_model.model.", "").replace(".default", ""): p for n, p in _peft.named_parameters()
               if "lora_" in n}
    _ours = {n.replace(".default", ""): p for n, p in model.named_parameters() if "lora_" in n}
    check_value("adapter matrices loaded by PEFT", len(_theirs), len(_ours),
                hint="save_adapter(model, adapter_dir) writes every adapter of the model")
    _ = check_value("the same weights", all(torch.equal(_theirs[n].float(), _ours[n].float()) for n in _ours), True,
                    hint="save the trained model's adapter, after training")
    ''', '''
    import json

    from safetensors.torch import load_file

    _cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    assert _cfg.get("peft_type") == "LORA", "adapter_config.json must describe a LoRA adapter (save_adapter writes it)"
    _n_saved = sum(t.numel() for t in load_file(str(Path(adapter_dir) / "adapter_model.safetensors")).values())
    assert _n_saved <= BUDGET, f"the saved adapter holds {_n_saved:,} numbers, over the budget of {BUDGET:,}"
    '''),
    md("""
    ## What you built

    * A QLoRA fine-tune on a CPU: the base frozen in NF4 (about 4.1 bits per weight), adapters in float32 within a
      parameter budget, trained in seconds to a held-out loss far below the base model's.
    * An adapter of a few hundred kB that Hugging Face PEFT loads onto the original (full-precision) model.
    """),
]
