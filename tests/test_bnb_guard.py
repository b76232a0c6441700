"""course_utils.bnb_guard: QLoRA through transformers + PEFT + bitsandbytes keeps training after an eval forward.

The failure it guards against (bitsandbytes 0.50, CPUs with AVX512-BF16): the first eval-mode no-grad forward
of a Linear4bit repacks its weight for a fused bf16 kernel that has no backward. Training afterwards silently
loses the gradient through every frozen W0 x, PEFT merges scramble the weights, and the course model's
down_proj (in_features 352, not a multiple of 64) makes that eval forward crash outright.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import course_utils
from course_utils import bnb_guard, nf4

import bitsandbytes  # noqa: E402,F401  (pinned: a broken install must fail, not skip)
import peft  # noqa: E402,F401
import bitsandbytes.functional as F  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, BitsAndBytesConfig  # noqa: E402

COURSE_MODEL_DIR = Path(course_utils.__file__).parent / "assets" / "course_model"
needs_avx512_bf16 = pytest.mark.skipif(not bnb_guard.cpu_has_avx512_bf16(),
                                       reason="the repack only happens on CPUs with AVX512-BF16")
TORCH_BACKEND = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)




pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # PEFT -> transformers


@pytest.fixture(autouse=True)
def _guard_on():
    if not bnb_guard.install():
        pytest.skip(f"{bnb_guard.ENV_SWITCH}=0 switches the guard off")
    yield
    bnb_guard.install()  # a failing test inside `disabled()` must not leave the guard off


def nf4_config():
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
                              bnb_4bit_use_double_quant=True)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """{'course': the course model (or its random-init twin), 'aligned': a twin with intermediate_size 384}.

    The twin with every in_features a multiple of 64 repacks without crashing, so the silent failure shows.
    """
    from course_utils.models import tiny_llama

    dirs = {}
    if (COURSE_MODEL_DIR / "config.json").exists():
        dirs["course"] = str(COURSE_MODEL_DIR)
    else:
        dirs["course"] = str(tmp_path_factory.mktemp("course"))
        tiny_llama().save_pretrained(dirs["course"])
    dirs["aligned"] = str(tmp_path_factory.mktemp("aligned"))
    tiny_llama(intermediate_size=384).save_pretrained(dirs["aligned"])
    return dirs


def merge_targets(model) -> dict:
    """{layer name: (W0 + Delta W as float, quantize_nf4 of it)} from the weights as they are now."""
    out = {}
    for name, layer in model.named_modules():
        if hasattr(layer, "get_delta_weight") and hasattr(layer, "base_layer"):
            w = layer.base_layer.weight
            target = F.dequantize_4bit(w.data, w.quant_state) + layer.get_delta_weight("default")
            out[name.removeprefix("base_model.model.")] = (target, nf4.quantize_nf4(target))
    return out


def merge(model):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Merge lora module to 4-bit linear")
        return model.merge_and_unload()


def load_4bit_lora(path, init_lora_weights=True):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=nf4_config(), dtype=torch.float32)
    torch.manual_seed(1)
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=init_lora_weights)
    return get_peft_model(model, config)


def batch(model):
    return torch.randint(4, model.config.vocab_size, (8, 32), generator=torch.Generator().manual_seed(0))


def eval_forward(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def train(model, ids, steps=6):
    """A few AdamW steps; returns the losses and the LoRA gradients of the first step."""
    model.train()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(params.values(), lr=3e-3)
    losses, first = [], None
    for step in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        if step == 0:
            first = {n: None if p.grad is None else p.grad.clone() for n, p in params.items()}
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses, first


# ------------------------------------------------------------------------------------------------ the guard itself

@pytest.mark.slow  # a fresh interpreter importing bitsandbytes: 5-11 s on 2 cores
def test_install_is_cheap_idempotent_and_patches_on_import():
    # Expected: `import course_utils` imports neither torch nor bitsandbytes (seconds each), installs one hook however often install() is
    # called, and the hook patches bitsandbytes.nn.modules the moment it is imported.
    code = textwrap.dedent("""
        import sys
        import course_utils
        from course_utils import bnb_guard
        assert "bitsandbytes" not in sys.modules and "torch" not in sys.modules, sorted(sys.modules)[:5]
        for _ in range(3):
            bnb_guard.install()
        assert sum(type(f).__name__ == "_ImportHook" for f in sys.meta_path) == 1
        s = bnb_guard.status()
        assert s["guard_active"] and s["waiting_for_import"] and not s["repack_blocked"], s
        import bitsandbytes.nn.modules as modules
        s = bnb_guard.status()
        assert modules._convert_weight_packed_for_cpu is bnb_guard._keep_weight_unpacked
        assert s["repack_blocked"] and not s["waiting_for_import"] and s["guard_active"], s
        assert not any(type(f).__name__ == "_ImportHook" for f in sys.meta_path)
        bnb_guard.install()  # after the import: patches in place, no new hook
        assert not any(type(f).__name__ == "_ImportHook" for f in sys.meta_path)
        print(s["dequant_fix"])
    """)
    env = {k: v for k, v in os.environ.items() if k != bnb_guard.ENV_SWITCH}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() in ("applied", "not needed")  # cheap: importing course_utils imports neither

    off = subprocess.run([sys.executable, "-c", "import course_utils, sys\nfrom course_utils import bnb_guard\n"
                          "print(bnb_guard.status()['guard_installed'])"],
                         capture_output=True, text=True, env={**env, bnb_guard.ENV_SWITCH: "0"}, timeout=60)
    assert off.stdout.strip() == "False", off.stderr[-2000:]


def test_status_for_the_doctor():
    # Expected: the doctor's facts, as plain values.
    s = bnb_guard.status()
    assert s["bitsandbytes_importable"] and s["bitsandbytes_version"].startswith("0.")
    assert s["backend"] in ("cpu", "cuda") and s["guard_installed"] and s["guard_active"]
    assert s["cpu_avx512_bf16"] in (True, False, None)
    assert s["repack_blocked"] and s["error"] is None
    with bnb_guard.disabled():
        off = bnb_guard.status()
        assert not off["guard_active"] and not off["repack_blocked"]
    assert bnb_guard.status()["guard_active"]


def test_dequantize_fix_for_rows_that_split_a_block():
    # Expected: bitsandbytes' native CPU dequantize restarts its block count on every row, so with in_features 352
    # (5.5 blocks of 64) rows after the first use the wrong absmax; with the guard the result equals bitsandbytes'
    # own torch backend (and course_utils.nf4) exactly, for fp32/bf16/fp16 and odd or 1-D shapes too.
    torch.manual_seed(0)
    for shape in [(128, 352), (7, 33), (4096,), (64, 96)]:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            w = torch.randn(shape).to(dtype)
            packed, state = F.quantize_4bit(w, blocksize=64, compress_statistics=False, quant_type="nf4")
            with torch._dynamo.config.patch(disable=True):
                ref = torch.ops.bitsandbytes.dequantize_4bit.default.redispatch(
                    TORCH_BACKEND, packed, state.absmax, 64, "nf4", list(shape), dtype)
            got = F.dequantize_4bit(packed, state)
            assert got.shape == w.shape and torch.equal(got, ref), (shape, dtype)
            assert torch.equal(got, nf4.dequantize_nf4(nf4.quantize_nf4(w, double_quant=False)))
    w = torch.randn(128, 352)
    packed, state = F.quantize_4bit(w, blocksize=64, compress_statistics=False, quant_type="nf4")
    with bnb_guard.disabled():
        native = F.dequantize_4bit(packed, state)
        rows_wrong = not torch.equal(native, ref_row := nf4.dequantize_nf4(nf4.quantize_nf4(w, double_quant=False)))
    good = F.dequantize_4bit(packed, state)
    assert torch.equal(good, ref_row)
    if rows_wrong:  # the AVX512 kernel's bug; AVX2-only machines get rows right and only 1-D shapes wrong
        assert (native - w).abs().mean() > 2 * (good - w).abs().mean()  # measured 0.168 vs 0.073


# ------------------------------------------------------------------------------------------------ QLoRA end to end

def test_guarded_qlora_trains_after_an_eval_forward(model_dirs):
    # Expected: with the guard, an eval-mode no-grad forward changes nothing: no layer is repacked, the first
    # training step's LoRA gradients equal those of a model that never ran eval, every LoRA matrix gets a
    # gradient, and the loss falls.
    fresh = load_4bit_lora(model_dirs["course"])
    ids = batch(fresh)
    _, reference = train(fresh, ids, steps=1)

    model = load_4bit_lora(model_dirs["course"])
    eval_logits = eval_forward(model, ids)  # on the course model this crashes without the guard (352 = 5.5 x 64)
    assert bnb_guard.packed_layers(model) == []
    model.train()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, eval_logits)  # one code path for eval and train
    losses, grads = train(model, ids)
    for name, g in grads.items():
        assert g is not None and torch.allclose(g, reference[name], rtol=1e-5, atol=1e-8), name
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)  # (lora_A's are 0 while B = 0)
    assert losses[-1] < losses[0] - 0.05, losses


@needs_avx512_bf16
def test_without_the_guard_the_repack_breaks_training(model_dirs):
    # Expected on this CPU, guard off: the eval forward repacks every Linear4bit; afterwards q/k/v/gate/up get
    # exactly zero gradient (their output only reaches the loss through repacked layers without a backward), the
    # rest get wrong ones, and the loss falls far less; a later merge scrambles the weights. On the course model the
    # same eval forward crashes.
    ids = None
    with bnb_guard.disabled():
        model = load_4bit_lora(model_dirs["aligned"])
        ids = batch(model)
        eval_forward(model, ids)
        assert len(bnb_guard.packed_layers(model)) == 7 * model.config.num_hidden_layers
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*autograd kernel was not registered.*")
            broken_losses, broken = train(model, ids)
        course = load_4bit_lora(model_dirs["course"])
        if course.config.intermediate_size % 64:  # 352 on the course model
            with pytest.raises(RuntimeError, match="invalid for input of size"):
                eval_forward(course, ids)
        # merging after the eval forward dequantizes the reordered codes as if they were in order
        model = load_4bit_lora(model_dirs["aligned"], init_lora_weights=False)
        expected = merge_targets(model)
        eval_forward(model, ids)
        merged = merge(model)
        errors = [((F.dequantize_4bit(merged.get_submodule(n).weight.data, merged.get_submodule(n).weight.quant_state)
                    - target).norm() / target.norm()).item() for n, (target, _) in expected.items()]
        assert sum(errors) / len(errors) > 0.3, errors  # measured 0.51 (0.09 with the guard)
    good_losses, good = train(load_4bit_lora(model_dirs["aligned"]), ids)
    dead = [n for n in broken if "lora_B" in n and any(k in n for k in ("q_proj", "k_proj", "v_proj", "gate_proj",
                                                                       "up_proj"))]
    assert dead and all(broken[n] is None or broken[n].abs().sum() == 0 for n in dead)
    assert all(good[n].abs().sum() > 0 for n in dead)
    assert (broken_losses[0] - broken_losses[-1]) < 0.6 * (good_losses[0] - good_losses[-1]), (broken_losses,
                                                                                              good_losses)


def test_4bit_merge_after_an_eval_forward_gives_the_right_weights(model_dirs):
    # Expected: PEFT's merge into the 4-bit base (dequantize, add Delta W, re-quantize) after an eval forward gives
    # exactly the 4-bit codes of quantize_nf4(W0 + Delta W): the merge saw the real, unrepacked weights.
    model = load_4bit_lora(model_dirs["course"], init_lora_weights=False)  # B != 0: a real Delta W
    expected = merge_targets(model)  # from the weights as loaded, before any forward
    assert len(expected) == 7 * model.config.num_hidden_layers
    eval_forward(model, batch(model))
    merged = merge(model)
    for name, (target, q) in expected.items():
        w = merged.get_submodule(name).weight
        assert torch.equal(w.data.view(-1), q.codes), name
        error = (F.dequantize_4bit(w.data, w.quant_state) - target).norm() / target.norm()
        assert error < 0.15, (name, error)  # NF4 rounding alone: measured 0.09
