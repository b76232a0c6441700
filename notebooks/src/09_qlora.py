# %% [markdown]
# # 09 · QLoRA: a 4-bit base, LoRA on top, on a laptop CPU
#
# Runtime: about 20 s on a 2-core laptop, no GPU.
#
# QLoRA (Dettmers et al. 2023) freezes the base model in **4 bits** and trains LoRA adapters, kept in higher
# precision, on top of it. Three ideas make the 4 bits work:
# - **NF4**, a 4-bit code whose 16 levels sit at the quantiles of a normal distribution, because weights,
#   normalised per block, look normal;
# - **blockwise absmax** scaling (blocks of 64), and **double quantization** of those scales: 4.127 bits per weight;
# - gradients flow *through* the frozen 4-bit weight (dequantized on the fly) into the adapters.
#
# We build each piece from the course model's real weights, check that `course_utils.nf4` stores the very same
# bytes as bitsandbytes, then fine-tune the course model with QLoRA the way users do (transformers + bitsandbytes
# + PEFT) and with `course_utils`, side by side: losses, memory and step time, on three seeds.

# %% [markdown]
# ## 9.0 Versions

# %% tags=["workshop"]
import copy
import importlib.metadata as md
import platform
import time
import warnings

import matplotlib.pyplot as plt
import torch

torch.set_num_threads(1)  # the course model's ops are tiny: one thread is as fast, and never stalls on a busy machine
print("python", platform.python_version(), "| torch", md.version("torch"), "| bitsandbytes",
      md.version("bitsandbytes"), "| peft", md.version("peft"), "| transformers", md.version("transformers"))

# %% [markdown] tags=["workshop"]
# ## 9.1 Normalised weights look normal
# Cut a weight matrix into blocks of 64 values and divide each block by its largest absolute value (its
# *absmax*): every value lands in [-1, 1], with at least one value at ±1 per block. If the weights are roughly
# normal, the values inside [-1, 1] pile up near 0 and thin out towards the edges, like a bell curve.
#
# A uniform 4-bit grid (int4: 15 evenly spaced levels, -7/7 .. 7/7) spends as many levels on the sparse edges as
# on the crowded middle. **Predict:** with int4, what fraction of the course model's normalised weights land on
# the 3 levels nearest to 0 (-1/7, 0 and 1/7, a fifth of the 15 levels)?

# %% tags=["workshop"]
from course_utils.checks import exercise, predict, reveal

### BEGIN SOLUTION
guess_int4_middle = 0.45  # a bell curve: far more than a fifth of the values sit near 0
### END SOLUTION
predict("fraction of values on int4's 3 middle levels", guess_int4_middle)

# %% tags=["workshop"]
from course_utils.models import load_course_model
from course_utils.nf4 import NF4Linear, nf4_layers

base, tok = load_course_model()
linear_weights = {n: m.weight.detach() for n, m in base.named_modules()
                  if isinstance(m, torch.nn.Linear) and n != "lm_head"}
flat = torch.cat([w.reshape(-1) for w in linear_weights.values()])
blocks = flat[: flat.numel() // 64 * 64].view(-1, 64)
normalised = (blocks / blocks.abs().amax(1, keepdim=True)).reshape(-1)
int4_codes = torch.round(normalised * 7)  # absmax int4: 15 levels, -7..7
middle, outer = (int4_codes.abs() <= 1).float().mean().item(), (int4_codes.abs() >= 5).float().mean().item()
print(f"{len(linear_weights)} linear layers, {flat.numel():,} weights, {blocks.shape[0]:,} blocks of 64")
print(f"int4: {middle:.1%} of the values land on the 3 levels -1/7, 0, 1/7; "
      f"{outer:.1%} on the 6 outer levels (|level| >= 5/7)")

# %%
reveal("fraction of values on int4's 3 middle levels", middle, rtol=0.2,
       why="Divided by the block's absmax (about 2.4 standard deviations for 64 normal values), most values are small.")
assert middle > 2 * 3 / 15 and outer < 0.5 * 6 / 15, "the middle levels are crowded, the outer ones nearly idle"

# %% [markdown]
# A fifth of the levels carry well over a fifth of the values, and the 6 outer levels (two fifths of them) far
# less than two fifths. The histogram below shows why: the normalised weights (bars) follow a normal curve scaled into [-1, 1]; the
# 15 int4 levels (grey ticks) are evenly spaced, the 16 NF4 levels (red ticks) are dense where the weights are.

# %%
import statistics

from course_utils.nf4 import NF4_OFFSET, nf4_codebook

nf4 = nf4_codebook()
fig, ax = plt.subplots(figsize=(7, 3.4))
ax.hist(normalised.numpy(), bins=101, density=True, alpha=0.6, label="course model, blocks of 64 / absmax")
sigma = normalised.std().item()
xs = torch.linspace(-1, 1, 201)
ax.plot(xs, torch.exp(-0.5 * (xs / sigma) ** 2) / (sigma * (2 * torch.pi) ** 0.5), "k--", label=f"normal, std {sigma:.2f}")
for i, v in enumerate(nf4.tolist()):
    ax.axvline(v, ymin=0, ymax=0.08, color="red", label="NF4 levels" if i == 0 else None)
for i in range(-7, 8):
    ax.axvline(i / 7, ymin=0.92, ymax=1, color="grey", label="int4 levels" if i == -7 else None)
ax.set(title="Normalised weights look normal: where should 16 levels go?", xlabel="value / block absmax",
       ylabel="density")
ax.legend(fontsize=8, loc="upper right")
plt.show()

# %% [markdown] tags=["workshop"]
# ## 9.2 NF4: 16 levels from normal quantiles
# NF4 puts its levels at quantiles of N(0, 1), so that each level is used about equally often by normal data:
# the most information 4 bits can carry. Two details:
# - the outermost quantiles are taken at p = 0.9677 (not 1, whose quantile is infinite), then everything is
#   divided by the largest, so the levels run exactly from -1 to 1 and a block's absmax is stored exactly;
# - **8 positive levels, an exact 0 and 7 negative ones.** A symmetric set around 0 has an odd number of levels,
#   which would waste one of the 16 codes; this asymmetric one keeps 0 exact (padding, pruned weights) and
#   uses all 16.

# %%
ppf = statistics.NormalDist().inv_cdf
pos = torch.linspace(NF4_OFFSET, 0.5, 9)[:-1]  # 8 positive quantile points
neg = torch.linspace(NF4_OFFSET, 0.5, 8)[:-1]  # 7 negative ones
levels = sorted([ppf(p) for p in pos.tolist()] + [0.0] + [-ppf(p) for p in neg.tolist()])
levels = torch.tensor(levels) / max(levels)
print("NF4 levels:", " ".join(f"{v:+.4f}" for v in nf4.tolist()))
print(f"positive {int((nf4 > 0).sum())}, zero {int((nf4 == 0).sum())}, negative {int((nf4 < 0).sum())}")
assert torch.allclose(levels, nf4, atol=1e-6), "8 + 0 + 7 normal quantiles, scaled to [-1, 1], ARE the NF4 levels"
assert (int((nf4 > 0).sum()), int((nf4 == 0).sum()), int((nf4 < 0).sum())) == (8, 1, 7)

# %%
from course_utils.plots import plot_bars, plot_lines, text_table

qs = [(i + 0.5) / 16 for i in range(16)]
plot_lines(list(range(16)), {"NF4 level": nf4.tolist(),
                             "N(0,1) quantile at (i+0.5)/16, scaled": [ppf(q) / ppf(qs[-1]) for q in qs],
                             "int4 (uniform)": [(i - 7.5) / 7.5 for i in range(16)]},
           title="The 16 levels, sorted", xlabel="code (sorted)", ylabel="level")
plt.show()

# %% [markdown] tags=["workshop-subslide"]
# **Predict:** quantize the course model's linear weights in blocks of 64 with int4 (absmax, 15 uniform levels),
# FP4 (a 4-bit float, E2M1) and NF4. Which has the smallest mean absolute error?

# %%
### BEGIN SOLUTION
guess_best_4bit = "NF4"
### END SOLUTION
predict("smallest 4-bit error on the course model", guess_best_4bit, choices=["int4", "FP4", "NF4"])

# %%
from course_utils import quant
from course_utils.nf4 import quantization_error

w_all = flat.view(-1, 64)  # 64 | the number of weights here: every block is whole
errors = {"int4": quant.quantization_error(w_all, bits=4, blocksize=64),
          "FP4": quantization_error(w_all, 64, quant_type="fp4"),
          "NF4": quantization_error(w_all, 64, quant_type="nf4")}
usage = {}
for name, idx in [("int4", int4_codes + 7), ("NF4", torch.bucketize(normalised, (nf4[1:] + nf4[:-1]) / 2))]:
    p = torch.bincount(idx.long(), minlength=16).float() / idx.numel()
    usage[name] = -(p[p > 0] * p[p > 0].log2()).sum().item()  # entropy: 4.0 bits if all 16 codes are used equally
print(text_table([[k, f"{v:.5f}", f"{v / errors['NF4']:.2f}x"] for k, v in errors.items()],
                 ["format (blocks of 64)", "mean |w - w_hat|", "vs NF4"]))
print(f"information per code (entropy): int4 {usage['int4']:.2f} bits, NF4 {usage['NF4']:.2f} bits, of 4")

# %% [markdown] tags=["workshop-subslide"]
# Weight error is not what a user sees. The QLoRA paper ranks the formats by the quantized model's perplexity;
# here, the course model's loss on held-out pretraining text (new lines from the generator of its pretraining
# corpus, as in chapter 01), with every linear layer rounded to each format:

# %%
from course_utils import data, world
from course_utils.nf4 import dequantize_nf4, quantize_4bit
from course_utils.training import encode_texts, eval_loss

seen = set(data.texts("pretrain"))
held_out = encode_texts(tok, [t for t in world.pretrain_lines(120, seed=1) if t not in seen][:64])
ROUND = {"int4": lambda w: quant.fake_quantize(w, bits=4, blocksize=64),
         "FP4": lambda w: dequantize_nf4(quantize_4bit(w, 64, False, "fp4")),
         "NF4": lambda w: dequantize_nf4(quantize_4bit(w, 64, False, "nf4"))}
held_out_loss = {"float32": eval_loss(base, held_out)}
for fmt, rounding in ROUND.items():
    rounded = copy.deepcopy(base)
    with torch.no_grad():
        for n, m in rounded.named_modules():
            if n in linear_weights:
                m.weight.copy_(rounding(m.weight))
    held_out_loss[fmt] = eval_loss(rounded, held_out)
print(text_table([[k, f"{errors.get(k, 0):.5f}", f"{v:.4f}", f"{v - held_out_loss['float32']:+.4f}"]
                  for k, v in held_out_loss.items()],
                 ["weights", "mean |w - w_hat|", "held-out loss", "vs float32"]))

# %%
best = min(errors, key=errors.get)
reveal("smallest 4-bit error on the course model", best,
       why="NF4's levels are dense where normal weights are; int4 and FP4 waste levels on rare values.")
assert all(errors["NF4"] < 0.9 * errors[k] for k in ("int4", "FP4")), "NF4 beats both by over 10%"
assert usage["NF4"] > usage["int4"] + 0.3, "NF4 uses its 16 codes more evenly: more information per code"
assert all(0.2 < 1 - errors["NF4"] / errors[k] < 0.3 for k in ("int4", "FP4")), "about a quarter less error"
loss_shift = {k: held_out_loss[k] - held_out_loss["float32"] for k in ROUND}
assert all(abs(v) < 0.01 for v in loss_shift.values()), "every 4-bit format, in blocks of 64, keeps the loss"

# %% [markdown]
# On the weights NF4 wins clearly: about a quarter less error than int4 and FP4 (which, by mean error, land close
# together here; the QLoRA paper's Table 2 puts FP4 ahead of int4 in perplexity), and more information per code
# (its entropy is closer to the 4 bits available): that is what "information-theoretically optimal for normal
# data" means. On the held-out loss, though, this small model cannot tell the formats apart: every 4-bit version,
# in blocks of 64, is within 0.01 of the float32 loss (the table). "4-bit quantization often preserves model
# quality when done carefully" holds here for all three; the differences between formats that the paper
# measured on 7B-65B models are too small to show on a 1M-parameter one.

# %% [markdown] tags=["workshop"]
# ## 9.3 Block size: error against the bits the constants cost
# Each block stores one float32 absmax: 32 bits per block, so 32/64 = 0.5 extra bits per weight at blocksize 64.
# Larger blocks cost fewer bits but one outlier then stretches the scale of more values.

# %%
from course_utils.nf4 import BLOCKSIZES, bits_per_parameter

by_block = {b: quantization_error(flat, b, double_quant=False) for b in BLOCKSIZES}
plot_lines(list(BLOCKSIZES), {"NF4 mean |error|": list(by_block.values())},
           title="NF4 error vs block size (course model)", xlabel="block size (log scale)", ylabel="mean |w - w_hat|",
           logx=True)
plt.show()
print(text_table([[b, f"{e:.5f}", f"{bits_per_parameter(b, double_quant=False):.3f}"] for b, e in by_block.items()],
                 ["block size", "mean |error|", "bits / weight (no DQ)"]))
errs = list(by_block.values())
assert all(a < b for a, b in zip(errs, errs[1:])), "larger blocks, larger error, at every step"

# %% [markdown] tags=["workshop"]
# ## 9.4 Packing and double quantization: 4.5 -> 4.127 bits, measured
# Two 4-bit codes share a byte (the first in the high nibble). With one float32 absmax per 64 weights that is
# 4 + 32/64 = 4.5 bits per weight. **Double quantization** stores the absmax values themselves in 8 bits (as
# codes of an 8-bit "dynamic" map, in blocks of 256 with one float32 scale each, after subtracting their mean):
# 4 + 8/64 + 32/(64·256).
#
# **Predict:** the bits per weight of the course model's quantized linear layers with double quantization,
# measured from the bytes really stored.

# %%
### BEGIN SOLUTION
guess_bits_dq = 4 + 8 / 64 + 32 / (64 * 256)
### END SOLUTION
predict("bits per weight with double quantization", guess_bits_dq)

# %%
from course_utils.nf4 import model_storage_bytes, quantize_model

n_linear = flat.numel()
stored = {}
for dq in (False, True):
    qm = quantize_model(copy.deepcopy(base), double_quant=dq)
    stored[dq] = model_storage_bytes(qm)
    name, layer = nf4_layers(qm)[0]
print(f"one layer, {name}: " + ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in layer.quantized.tensors().items()))
bits = {dq: 8 * b / n_linear for dq, b in stored.items()}
fp32_bytes = 4 * n_linear
print(text_table([["float32", f"{fp32_bytes:,}", "32.000"], ["bfloat16", f"{2 * n_linear:,}", "16.000"],
                  ["NF4, absmax in float32", f"{stored[False]:,}", f"{bits[False]:.3f}"],
                  ["NF4 + double quantization", f"{stored[True]:,}", f"{bits[True]:.3f}"]],
                 ["linear weights stored as", "bytes", "bits / weight"]))

# %%
reveal("bits per weight with double quantization", bits[True], rtol=0.01,
       why="8/64 for the 8-bit absmax codes, plus one float32 scale per 256 blocks and one mean.")
assert abs(bits[False] - 4.5) < 0.01 and abs(bits[True] - bits_per_parameter(64, True)) < 0.01
saved_7b_gib = (bits[False] - bits[True]) * 7e9 / 8 / 2**30
print(f"double quantization saves {bits[False] - bits[True]:.3f} bits per weight; a 7B model: {saved_7b_gib:.2f} GiB")
assert abs(bits[False] - bits[True] - 0.37) < 0.005 and abs(saved_7b_gib - 0.3) < 0.01

# %% [markdown]
# The measured numbers sit a hair above the formula: the course model's layers are small, so their last block of
# 256 absmax values is partial but still gets its own float32 scale. Double quantization saves about
# 0.37 bits per weight: about 0.3 GiB on a 7B model, for an 8-bit rounding of the scales.

# %% [markdown]
# ## 9.5 The same bytes as bitsandbytes
# `course_utils.nf4` is written in plain torch to be read (`course_utils/nf4/reference.py`). It repeats
# bitsandbytes' arithmetic operation for operation, so the bytes are *equal*, not close:

# %%
import bitsandbytes as bnb
import bitsandbytes.functional as bnbF

from course_utils.nf4 import dequantize_nf4, quantize_nf4

rows = []
for name in ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj", "model.layers.3.mlp.up_proj"]:
    w = linear_weights[name]
    ours = quantize_nf4(w, 64, double_quant=False)
    theirs_codes, theirs_state = bnbF.quantize_4bit(w, blocksize=64, quant_type="nf4")
    same_codes = torch.equal(ours.codes, theirs_codes.view(-1))
    same_absmax = torch.equal(ours.absmax, theirs_state.absmax)
    same_w = torch.equal(dequantize_nf4(ours), bnbF.dequantize_4bit(theirs_codes, theirs_state))
    rows.append([name, tuple(w.shape), same_codes, same_absmax, same_w])
print(text_table(rows, ["layer", "shape", "codes equal", "absmax equal", "dequantized equal"]))
assert all(all(r[2:]) for r in rows), "bit for bit: codes, scales and the dequantized weight"

# %% [markdown]
# Our 4-bit layer and bitsandbytes' are interchangeable: `NF4Linear.to_bitsandbytes()` returns a
# `bitsandbytes.nn.Linear4bit` holding the same packed codes and quantization state (double quantization
# included), `NF4Linear.from_bitsandbytes(layer)` goes back, and the outputs are equal both ways. down_proj's
# 352 inputs are 5.5 blocks of 64 per row, so blocks span rows: the case that needs care.

# %%
layer = NF4Linear.from_linear(base.model.layers[0].mlp.down_proj)  # double quantization on, QLoRA's default
as_bnb = layer.to_bitsandbytes()
back = NF4Linear.from_bitsandbytes(as_bnb)
x = torch.randn(4, layer.in_features)
with torch.no_grad():
    y_ours, y_bnb, y_back = layer(x), as_bnb(x), back(x)
print(type(as_bnb).__module__ + "." + type(as_bnb).__name__, "| nested (double) quant:",
      as_bnb.weight.quant_state.nested)
print("outputs equal: ours == bitsandbytes", torch.equal(y_ours, y_bnb), "| back == ours", torch.equal(y_back, y_ours))
assert torch.equal(y_ours, y_bnb) and torch.equal(y_back, y_ours)
assert torch.equal(back.weight_codes, layer.weight_codes) and torch.equal(back.weight_absmax, layer.weight_absmax)

# %% [markdown] tags=["workshop"]
# ## 9.6 QLoRA on the course model, two ways
# **The way users do it:** transformers loads the model with a `BitsAndBytesConfig` (NF4, double quantization,
# a compute dtype: float32 on CPU, bfloat16 on a GPU), PEFT's `prepare_model_for_kbit_training` freezes it (and
# casts norms to float32), and `get_peft_model` adds LoRA on all linear layers. **The course way:**
# `quantize_model` (NF4Linear) and `course_utils.lora.add_lora`. Both train only the adapters, in float32.
#
# The task is the near domain from chapter 06 (letters in a new template), 30 steps of 8 examples. The reference run is the
# same LoRA on the float32 base. **Predict:** how much higher is the held-out loss after QLoRA than after LoRA
# on the float32 base (relative, e.g. 0.05 for 5%)?

# %%
### BEGIN SOLUTION
guess_qlora_cost = 0.0  # the QLoRA paper: NF4 + DQ matches 16-bit fine-tuning
### END SOLUTION
predict("QLoRA held-out loss vs LoRA (relative increase)", guess_qlora_cost)

# %%
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import BitsAndBytesConfig

from course_utils import data
from course_utils.lora import add_lora, count_parameters
from course_utils.memory import measure_training_bytes
from course_utils.training import batches_from_examples, encode_texts, eval_loss, progress_bar, train

SEEDS, STEPS, BATCH, LR = [0, 1, 2], 30, 8, 5e-3
near, near_test = data.texts("near_train"), encode_texts(tok, data.texts("near_test", 50))
letters = lambda seed: batches_from_examples(lambda rows: encode_texts(tok, rows), near, BATCH, seed=seed)  # noqa: E731
bnb_config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.float32)


def bnb_peft_model(seed):
    """transformers + bitsandbytes + PEFT: the QLoRA recipe as its users write it."""
    with warnings.catch_warnings():  # PEFT asks transformers a question under its deprecated name
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        model, _ = load_course_model(quantization_config=bnb_config)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        torch.manual_seed(seed)
        return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0))


def course_model(seed, quantized):
    m = quantize_model(copy.deepcopy(base)) if quantized else copy.deepcopy(base)
    torch.manual_seed(seed)
    return add_lora(m, "all-linear", r=8, alpha=16)


def finetune_once(build, seed):
    m = build(seed)
    t0 = time.perf_counter()
    curve = train(m, letters(seed), STEPS, lr=LR, progress=False, seed=seed).losses
    ms = 1000 * (time.perf_counter() - t0) / STEPS
    return m, curve, eval_loss(m, near_test), ms


RUNS = {"LoRA, float32 base (course_utils)": lambda s: course_model(s, False),
        "QLoRA, NF4 base (course_utils)": lambda s: course_model(s, True),
        "QLoRA, bitsandbytes + PEFT": bnb_peft_model}
results = {name: [] for name in RUNS}
curves, step_ms, models = {}, {}, {}
for seed in progress_bar(SEEDS, desc="3 runs x 3 seeds"):
    for name, build in RUNS.items():
        m, curve, loss, ms = finetune_once(build, seed)
        results[name].append(loss)
        curves.setdefault(name, curve)
        step_ms.setdefault(name, []).append(ms)
        models.setdefault(name, m)
loss_base = eval_loss(base, near_test)
loss_base_nf4 = eval_loss(quantize_model(copy.deepcopy(base)), near_test)  # the 4-bit base, before any training

# %% tags=["workshop-subslide"]
from course_utils.plots import plot_loss_curves

plot_loss_curves(curves, title="Near domain: LoRA vs QLoRA (seed 0)")
plt.show()
span = lambda vals: f"{min(vals):.3f} - {max(vals):.3f}"  # noqa: E731
print(text_table([[k, " ".join(f"{v:.3f}" for v in vals), span(vals)] for k, vals in results.items()],
                 ["run", "held-out loss, seeds 0 1 2", "min - max"]))
print(f"base model, no fine-tuning: {loss_base:.3f} in float32, {loss_base_nf4:.3f} in NF4 "
      f"({loss_base_nf4 / loss_base - 1:+.2%})")

# %% tags=["nbval-ignore-output"]
# Times differ from machine to machine and run to run: this cell's output is not compared by the tests.
print(text_table([[k, f"{min(v):.0f} ms"] for k, v in step_ms.items()], ["run", "time per step (best of 3 seeds)"]))

# %%
lora_fp, qlora_ours, qlora_bnb = results.values()
cost = [q / f - 1 for q, f in zip(qlora_ours, lora_fp)]
cost_bnb = [q / f - 1 for q, f in zip(qlora_bnb, lora_fp)]
gain = [loss_base - f for f in lora_fp]
print("QLoRA (ours) vs LoRA, per seed:", " ".join(f"{c:+.2%}" for c in cost),
      "| bitsandbytes + PEFT vs LoRA:", " ".join(f"{c:+.2%}" for c in cost_bnb))
print("the 4-bit cost as a share of what fine-tuning gained, per seed:",
      " ".join(f"{(q - f) / g:.1%}" for q, f, g in zip(qlora_ours, lora_fp, gain)))
reveal("QLoRA held-out loss vs LoRA (relative increase)", sum(cost) / len(cost), atol=0.03,
       why="NF4's error is a small, noise-like change to each weight, and the adapters learn on top of it.")

# %%
assert all(abs(c) < 0.05 for c in cost + cost_bnb), "on every seed, QLoRA lands within 5% of LoRA's held-out loss"
assert all(abs(q - f) < 0.1 * g for q, f, g in zip(qlora_ours, lora_fp, gain)), \
    "the 4-bit cost is under a tenth of what fine-tuning gains, on every seed"
assert all(c < 0 for c in cost + cost_bnb) and loss_base_nf4 < loss_base, \
    "here QLoRA ends a little lower on every seed, and the NF4 base already starts lower on this domain"
assert max(abs(a - b) for a, b in zip(qlora_ours, qlora_bnb)) <= max(max(v) - min(v) for v in (qlora_ours, qlora_bnb)), \
    "the two QLoRA implementations differ by no more than the seeds do"

# %% [markdown]
# On every seed QLoRA lands within a few percent of LoRA on the float32 base, and the difference is a small
# fraction of what the fine-tune gains: "4-bit quantization often preserves model quality", measured on this
# model. Here the difference even goes the other way: QLoRA ends a little *lower* on every seed, and the NF4 base
# already starts lower on this domain before any training (the last line of the table). The base model is far
# from the near domain (a loss of 10), and rounding its weights happened to move it slightly closer; on held-out
# pretraining text (9.2) the same rounding changed the loss by less than 0.01. Do not read it as "4 bits
# help": they cost almost nothing here, in either direction. The two QLoRA implementations differ by no more than
# the seeds do: PEFT draws its random A matrices in its own order, and bitsandbytes quantized the model itself
# while loading.
#
# **Memory.** What the trained models hold, measured from their tensors (`measure_training_bytes` counts
# parameters, buffers and bitsandbytes' quantization state, gradients and optimizer state):

# %% tags=["workshop-subslide"]
memory = {}
for name, m in models.items():
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=LR)
    train(m, letters(0), 1, optimizer=opt, progress=False)  # one step, so gradients and Adam's state exist
    memory[name] = measure_training_bytes(m, opt)
bf16_weights = sum(p.numel() * 2 for p in base.parameters())
trainable, total = count_parameters(models["QLoRA, NF4 base (course_utils)"])
print(text_table([[k, f"{v['weights'] / 1e6:.2f}", f"{v['gradients'] / 1e6:.3f}", f"{v['optimizer_state'] / 1e6:.3f}"]
                  for k, v in memory.items()] + [["(a bfloat16 copy of the base model)", f"{bf16_weights / 1e6:.2f}",
                                                  "", ""]],
                 ["model", "weights MB", "gradients MB", "Adam state MB"]))
print(f"trainable: {trainable:,} of {total:,} parameters ({trainable / total:.2%})")
w_fp, w_ours, w_bnb = (memory[k]["weights"] for k in RUNS)
assert w_ours < w_fp / 2 and w_bnb < w_fp / 2, "the 4-bit base holds less than half the float32 model's bytes"
assert memory["QLoRA, NF4 base (course_utils)"]["gradients"] == memory["LoRA, float32 base (course_utils)"]["gradients"]

# %%
n_7b, embed_7b = 6.74e9, 2 * 32000 * 4096  # Llama-2-7B: input embeddings and output head, 32000 x 4096 each
linear_share = {"course model": n_linear / total, "Llama-2-7B": (n_7b - embed_7b) / n_7b}
print(", ".join(f"{k}: linear layers hold {v:.0%} of the weights" for k, v in linear_share.items()))
assert linear_share["course model"] < 0.75 < 0.95 < linear_share["Llama-2-7B"]

# %% [markdown]
# The weights shrink, but not 8x: only the linear layers are quantized. The embedding table and the output head
# stay in float32, as in QLoRA, and in a model this small they are a large share of the weights (printed above);
# in a 7B model the linear layers dominate and the ratio approaches 32/4.127. Gradients and Adam's state belong
# to the adapters only: identical with and without quantization. The QLoRA steps take longer than the float32
# LoRA step (the second table in 9.6; times vary from run to run, so nothing about them is asserted): every
# forward pass dequantizes each 4-bit weight before it multiplies, the price of keeping the base in 4 bits.

# %% [markdown]
# ## 9.7 Paged optimizers (GPU only)
# QLoRA's third ingredient: **paged optimizers** keep Adam's state in NVIDIA *unified memory*, which the driver
# pages between GPU and CPU memory when the GPU runs out, e.g. on a long sequence's activation spike, instead of
# crashing with out-of-memory. They absorb spikes; they do not lower steady-state memory. A CPU has no second,
# smaller memory to page from, so there is nothing to show here: the cell below runs
# `bitsandbytes.optim.PagedAdamW` only where CUDA is available.

# %%
if torch.cuda.is_available():
    gpu_model = course_model(0, quantized=False).cuda()
    paged = bnb.optim.PagedAdamW([p for p in gpu_model.parameters() if p.requires_grad], lr=LR)
    batch = {k: v.cuda() for k, v in next(letters(0)).items()}
    gpu_model(**batch).loss.backward()
    paged.step()
    print("PagedAdamW took a step on", torch.cuda.get_device_name())
else:
    print("No CUDA GPU here: PagedAdamW pages optimizer state between GPU and CPU memory, so it needs a GPU. "
          "Skipped; everything else in this chapter runs on the CPU.")

# %% [markdown]
# ## 9.8 The bitsandbytes CPU traps, shown
# `import course_utils` installs a guard (`course_utils.bnb_guard`) against two bitsandbytes 0.50 CPU bugs:
# 1. **The eval-mode repack.** On CPUs with AVX512-BF16, the first `Linear4bit` forward in eval mode without
#    gradients reorders the 4-bit codes for a fused kernel, in place and for good, and drops double
#    quantization. Afterwards training gets wrong gradients and PEFT's merge scrambles weights, silently.
# 2. **Row-relative blocks.** The native CPU dequantization restarts its block count at each row, so with
#    in_features not a multiple of 64 (down_proj: 352) every row after the first uses the wrong absmax.
#
# The guard's state on this machine (whether the CPU has AVX512-BF16 differs from machine to machine):

# %% tags=["nbval-ignore-output"]
from course_utils import bnb_guard

print({k: v for k, v in bnb_guard.status().items()})

# %% [markdown]
# The repack, made to happen on any CPU (bitsandbytes' own per-layer flag for the CPU feature is set to True),
# once with the guard and once with it switched off:

# %%
with torch.no_grad():
    for guarded in (True, False):
        test_layer = NF4Linear.from_linear(base.model.layers[0].self_attn.q_proj).to_bitsandbytes()
        test_layer.support_avx512bf16_for_cpu = True
        if guarded:
            test_layer.eval()(x[:, :128])
        else:
            with bnb_guard.disabled():
                test_layer.eval()(x[:, :128])
        repacked = bool(bnb_guard.packed_layers(torch.nn.Sequential(test_layer)))
        print(f"guard {'on ' if guarded else 'off'}: after one eval forward, repacked = {repacked}, "
              f"double quantization kept = {test_layer.weight.quant_state.nested}")
        if guarded:
            assert not repacked
        else:
            assert repacked, "without the guard, one innocent eval forward repacks the layer"

# %% [markdown]
# With the guard off, one evaluation before training is enough: the layer is repacked and its double quantization
# is gone for good. With the guard on, the same forward leaves the layer exactly as it was.

# %% [markdown]
# The second trap is in bitsandbytes' native CPU dequantization, and which form it takes depends on the kernel
# bitsandbytes picks for the CPU: on AVX512 machines blocks that span rows (down_proj: 352 inputs per row) get
# the wrong absmax; on AVX2-only machines a 1-D weight comes back with the wrong shape. The guard probes for both
# when it is installed (`dequant_fix` above: "applied" means this machine has one). Here bitsandbytes quantizes
# down_proj, and a flattened copy of it, and dequantizes both with the guard on and off:

# %% tags=["nbval-ignore-output"]
import contextlib

w_down = linear_weights["model.layers.0.mlp.down_proj"]
quantized_down = {name: bnbF.quantize_4bit(w, blocksize=64, quant_type="nf4")
                  for name, w in [("2-D", w_down), ("1-D", w_down.reshape(-1))]}
dequant = {}
for guarded in (True, False):
    with contextlib.nullcontext() if guarded else bnb_guard.disabled():
        for name, (packed, state) in quantized_down.items():
            w_hat = bnbF.dequantize_4bit(packed, state)
            dequant[guarded, name] = (tuple(w_hat.shape), (w_hat.reshape(-1) - w_down.reshape(-1)).abs().mean().item())
for (guarded, name), (shape, err) in dequant.items():
    print(f"guard {'on ' if guarded else 'off'} {name}: shape {shape}, mean |w - w_hat| {err:.5f}")

# %%
nf4_error = quantization_error(w_down, 64)
assert all(dequant[True, name] == (tuple(w.shape), nf4_error) for name, w in [("2-D", w_down), ("1-D", w_down.reshape(-1))]), \
    "with the guard, bitsandbytes returns the right shape and exactly NF4's own error"
if bnb_guard.status()["dequant_fix"] == "applied":
    assert any(dequant[False, k] != dequant[True, k] for k in ("2-D", "1-D")), "unguarded, one of the two goes wrong"
print("with the guard: both shapes right, the error is NF4's own,", f"{nf4_error:.5f}")

# %% [markdown]
# ## 9.9 Exercises
# **Exercise 9.1.** A 7B model (6.74e9 parameters, treat them all as linear weights) in NF4 with double
# quantization, blocks of 64: how many GiB do its weights take? Use `bits_per_parameter`.

# %%
### BEGIN SOLUTION
answer_7b_gib = 6.74e9 * bits_per_parameter(64, True) / 8 / 2**30
### END SOLUTION
exercise("9.1 7B in NF4 + DQ (GiB)", answer_7b_gib, expected=6.74e9 * 4.127 / 8 / 2**30, rtol=0.01,
         hint="4 + 8/64 + 32/(64*256) bits per weight, divided by 8 bits per byte, then by 2**30")

# %% [markdown]
# **Exercise 9.2.** Complete `answer_nf4_split()`: how many positive levels, zero levels and negative levels
# NF4's asymmetric construction gives 16 codes. Return them as (positive, zero, negative).

# %%
def answer_nf4_split():
    ### BEGIN SOLUTION
    return (16 // 2, 1, 16 // 2 - 1)  # one more positive level than negative ones, and an exact 0
    ### END SOLUTION


exercise("9.2 NF4 levels: positive, zero, negative", answer_nf4_split,
         expected=[int((nf4 > 0).sum()), int((nf4 == 0).sum()), int((nf4 < 0).sum())], rtol=0,
         hint="16 codes; 0 must be exact; one side gets one level more")

# %% [markdown]
# **Exercise 9.3.** What is the mean absolute NF4 error of the course model's linear weights at blocksize 256,
# relative to blocksize 64? Compute it with `quantization_error` (double_quant=False).

# %%
### BEGIN SOLUTION
answer_256_vs_64 = quantization_error(flat, 256, double_quant=False) / quantization_error(flat, 64, double_quant=False)
### END SOLUTION
exercise("9.3 error at blocksize 256 / at 64", answer_256_vs_64, expected=by_block[256] / by_block[64], rtol=1e-3,
         hint="quantization_error(flat, blocksize, double_quant=False), twice")

# %% [markdown]
# **Question 9.4.** The adapters are trained in float32 on top of a 4-bit base. Why not quantize the adapters
# too?
#
# ### BEGIN SOLUTION
# The adapters are what changes during training: Adam's updates are often far smaller than a 4-bit step, so
# rounding after each update would erase them. They are also tiny (a few percent of the parameters here, well
# under 1% on a 7B model), so keeping them in float32 (or bf16) costs almost no memory, while the base, which
# never changes, takes the 4-bit saving.
# ### END SOLUTION
#
# **Question 9.5.** Why does the QLoRA recipe quantize with a block size of 64 rather than 4096, when 4096 makes
# the scales almost free (4.008 bits per weight)?
#
# ### BEGIN SOLUTION
# One absmax per block means one outlier stretches the scale of its whole block, pushing every other value onto
# fewer levels near 0. Section 9.3 measured the error growing at every step from 32 to 4096. Double quantization
# makes small blocks cheap (0.127 instead of 0.5 extra bits), so QLoRA keeps the accuracy of blocks of 64 and pays
# little for it.
# ### END SOLUTION

# %%
from course_utils.checks import summary

summary()

# %% [markdown]
# **Summary.** Weights divided by their block's absmax look normal, so NF4 puts its 16 levels (8 positive, an
# exact 0, 7 negative) at normal quantiles: on the course model it has a lower error than FP4 and int4 and uses
# its codes more evenly. Blocks of 64 with double-quantized scales store 4.127 bits per weight, measured from the
# bytes. `course_utils.nf4` stores the very bytes bitsandbytes does, and its layers convert both ways. QLoRA
# trained on the CPU, through transformers + bitsandbytes + PEFT and through `course_utils`, to within a few
# percent of LoRA on the float32 base (here a little lower), on every seed.
