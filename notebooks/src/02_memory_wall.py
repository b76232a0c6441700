# %% [markdown]
# # 02 · The memory wall: why full fine-tuning breaks down
#
# Runtime: ~10 s on a 2-core laptop, no GPU.
#
# **Scenario (the seed's):** you have a GPU with 8–16 GB and want to fine-tune a 7B or 8B model on your own data.
# This chapter counts every byte that training needs — weights, gradients, optimizer state, master weights,
# activations — for 7B, 13B and 70B models, checks a popular rule of thumb against the count (it is far too
# low), and then *measures* the same bytes on the course model under full fine-tuning, LoRA and QLoRA to
# prove the calculator right. It ends with a calculator for your own GPU.
#
# Units: **GiB** = 1024³ bytes (what `nvidia-smi` and PyTorch report), **GB** = 10⁹ bytes.

# %% [markdown]
# ## 2.0 Versions

# %%
import importlib.metadata as md
import platform

import matplotlib.pyplot as plt
import torch

torch.set_num_threads(1)  # the course model's ops are tiny: one thread is as fast, and never stalls on a busy machine
print("python", platform.python_version(), "| torch", md.version("torch"), "| transformers", md.version("transformers"))

# %% [markdown]
# ## 2.1 Weights only (the seed's table)
# The seed's `model_memory_gb(params, bytes_per_param)` lives in `course_utils.memory`. It divides by 1024³,
# so its "GB" are GiB.
#
# **Predict:** how much memory do the FP16 weights of a 7B model take?

# %%
from course_utils.memory import model_memory_gb

models = {"7B": 7e9, "13B": 13e9}
for name, p in models.items():
    print(f"{name} FP16 weights only: {model_memory_gb(p, 2):.2f} GiB   (FP32: {model_memory_gb(p, 4):.2f} GiB)")

# %% [markdown]
# The 7B weights alone fill most of a 16 GB card in FP16; the seed's "20–30+ GB just to load the model" is
# the FP32 figure. And loading is the easy part.

# %% [markdown]
# ## 2.2 What training stores, per parameter
# One training step with Adam in mixed precision (the standard recipe, ZeRO paper arXiv 1910.02054) keeps:
# - **weights** in bf16 (2 bytes), used by the forward and backward pass;
# - **gradients** in bf16 (2 bytes), one per trainable weight;
# - **Adam's two moments** m and v in fp32 (4 + 4 bytes);
# - **fp32 master weights** (4 bytes): the copy the update is applied to, because 16-bit weights cannot absorb
#   small updates (chapter 03, section 3.3);
# - **activations**: what the forward pass saves for the backward pass; they depend on the batch, not on the
#   parameter count (2.3).
#
# **Predict:** how many bytes per parameter, before activations?

# %%
from course_utils.memory import full_finetune_bytes

per_param = full_finetune_bytes(1, weight_dtype="bf16", optimizer="adam", master_weights=True)
print(per_param)
assert per_param["total"] == 16, "2 (bf16 weights) + 2 (bf16 grads) + 8 (Adam m, v) + 4 (fp32 master) bytes"

# %% [markdown]
# **16 bytes per parameter** — 8× the bf16 weights. (Hugging Face's "model memory anatomy" counts 18, keeping
# the gradients in fp32: exercise 2.)

# %% [markdown]
# ## 2.3 Activations are measured in tokens, not parameters
# The backward pass needs the intermediate results of the forward pass. We measure them directly: a
# `saved_tensors_hooks` context sees every tensor autograd saves; we add up those that are not weights.
#
# **Predict:** doubling the batch doubles the activations. What does doubling the number of *layers* do?

# %%
from course_utils.memory import activation_estimate_bytes, saved_activation_bytes
from course_utils.models import course_model_config, load_course_model, tiny_llama


# %%
def token_batch(batch_size, seq_len):
    ids = torch.randint(3, 1000, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "labels": ids}


acts = {(L, b): saved_activation_bytes(tiny_llama(num_hidden_layers=L), token_batch(b, 64))
        for L, b in [(4, 8), (4, 16), (2, 16)]}
for (L, b), n in acts.items():
    print(f"{L} layers, batch {b:>2} x 64 tokens: {n / 2**20:6.2f} MiB of activations")

# %%
cfg = course_model_config()
tokens = 16 * 64
per_layer_token = (acts[4, 16] - acts[2, 16]) / 2 / tokens
numbers_per_hidden = per_layer_token / 4 / cfg.hidden_size  # fp32: 4 bytes per stored number
print(f"batch x2 -> activations x{acts[4, 16] / acts[4, 8]:.2f}; layers x2 -> x{acts[4, 16] / acts[2, 16]:.2f} "
      "(the logits over the vocabulary do not grow with depth)")
print(f"per layer and token: {per_layer_token:,.0f} bytes = {numbers_per_hidden:.1f} numbers per hidden unit")
assert abs(acts[4, 16] / acts[4, 8] - 2) < 0.01, "activations are proportional to the number of tokens"

# %% [markdown]
# For comparison, Korthikanti et al. (2022, arXiv 2205.05198) count **34·s·b·h bytes per layer** of a GPT block
# with 16-bit activations when the attention scores are not stored (as with flash attention): roughly 17
# two-byte numbers per hidden unit per token.
# The Llama block (RMSNorm, rotary embeddings, a SwiGLU MLP with three matrices) stores a few more, as the cell
# above measured. We take our measured count, at 2 bytes per number, to estimate the big models below.

# %%
assert abs(numbers_per_hidden - 17) / 17 < 0.35, "the measured count should be of the same order as the formula's"


# %% [markdown]
# ## 2.4 Full fine-tuning of 7B, 13B and 70B
# Now everything together, for one sequence of 2,048 tokens (batch 1) — the smallest real training step.
# Layer counts and widths are Llama-2's.
#
# **Predict:** does a full fine-tune of the 7B model fit on an 80 GB A100?

# %%
from course_utils.memory import GIB
from course_utils.plots import text_table

llama = {"7B": (7e9, 32, 4096), "13B": (13e9, 40, 5120), "70B": (70e9, 80, 8192)}  # params, layers, hidden
parts = {"weights (bf16)": [], "gradients (bf16)": [], "Adam m + v (fp32)": [], "master weights (fp32)": [],
         "activations (1 x 2048 tokens)": []}
for name, (n, layers, hidden) in llama.items():
    b = full_finetune_bytes(n, weight_dtype="bf16")
    values = [b["weights"], b["gradients"], b["optimizer_state"], b["master_weights"],
              activation_estimate_bytes(layers, hidden, tokens=2048, numbers_per_hidden=numbers_per_hidden)]
    for key, v in zip(parts, values):
        parts[key].append(v / GIB)
total_gib = {name: sum(p[i] for p in parts.values()) for i, name in enumerate(llama)}
print(text_table([[name] + [f"{parts[k][i]:,.1f}" for k in parts] + [f"{total_gib[name]:,.1f}"]
                  for i, name in enumerate(llama)], ["GiB", *parts, "total"], max_width=30))

# %%
from course_utils.plots import plot_stacked_bars

plot_stacked_bars(list(llama), parts, title="Full fine-tuning, mixed-precision Adam, batch 1 x 2048 tokens",
                  xlabel="model size (parameters)", ylabel="memory (GiB)", hline=80, hline_label="one 80 GB GPU")
plt.show()

# %%
assert total_gib["7B"] > 80, "a full 7B fine-tune does not fit on one 80 GB GPU"
assert parts["activations (1 x 2048 tokens)"][0] < parts["Adam m + v (fp32)"][0], "at batch 1 the optimizer dominates"

# %% [markdown]
# ## 2.5 The seed's rule of thumb, checked
# The seed says: *"Rule of thumb: ~4–6× model size. A 7B model can easily require 25–40 GB VRAM for full
# fine-tuning."* Let us hold both halves against the count.

# %%
weights_7b = model_memory_gb(7e9, 2)
state_7b = full_finetune_bytes(7e9, "bf16")["total"] / GIB
print(f"7B fp16 weights: {weights_7b:.1f} GiB; 4-6x that: {4 * weights_7b:.0f}-{6 * weights_7b:.0f} GiB")
print(f"16 bytes/param:  {state_7b:.1f} GiB ({7e9 * 16 / 1e9:.0f} GB) = {state_7b / weights_7b:.0f}x the weights, "
      "before activations")
print(f"the seed's 25-40 GB covers {25e9 / GIB / state_7b:.0%}-{40e9 / GIB / state_7b:.0%} of that")
assert state_7b > 100 and 40e9 / GIB < 0.4 * state_7b

# %% [markdown]
# **The seed's numbers are wrong, and not even consistent with each other.** 4–6× the fp16 weights would be
# the range the first line prints, not 25–40 GB; and the honest count is **16 bytes per parameter = 8× the fp16
# weights ≈ 104 GiB (112 GB) for 7B, before a single activation** (the cell above computes both). 25–40 GB is
# roughly what a 7B model needs with **LoRA** (bf16 base) plus activations — which is the point of the rest of
# this course.

# %% [markdown]
# ## 2.6 LoRA and QLoRA move the wall
# LoRA freezes the base: gradients and Adam state exist only for the small adapters. QLoRA also stores the
# frozen base in 4-bit NF4 (≈ 0.516 bytes/param, chapter 09). For Llama-2-7B with rank-16 adapters on every
# linear layer of its 32 blocks:
#
# **Predict:** which part of the memory is left for LoRA to shrink, once the optimizer state is gone?

# %%
from course_utils.memory import fits_on_gpu, lora_param_count

llama7b_linears = [(4096, 4096)] * 4 * 32 + [(11008, 4096)] * 2 * 32 + [(4096, 11008)] * 32  # q,k,v,o; gate,up; down
n_lora_7b = lora_param_count(llama7b_linears, r=16)
act_7b = activation_estimate_bytes(32, 4096, tokens=2048, numbers_per_hidden=numbers_per_hidden)
fits = {m: fits_on_gpu(7e9, 24, m, n_lora=n_lora_7b, activation_bytes=act_7b) for m in ["full", "lora", "qlora"]}
print(f"LoRA r=16, all linear layers: {n_lora_7b:,} trainable parameters ({n_lora_7b / 7e9:.2%} of 7B)")
for m, f in fits.items():
    print(f"{m:>5}: {f.needed_gib:6.1f} GiB incl. {act_7b / GIB:.1f} GiB activations -> fits 24 GiB: {f.fits}")

# %%
method_parts = {
    "weights": [f.breakdown["weights"] / GIB for f in fits.values()],
    "gradients + Adam + master": [(f.breakdown["gradients"] + f.breakdown["optimizer_state"]
                                   + f.breakdown["master_weights"]) / GIB for f in fits.values()],
    "activations (1 x 2048 tokens)": [act_7b / GIB] * len(fits),
}
plot_stacked_bars(["full FT", "LoRA (bf16 base)", "QLoRA (NF4 base)"], method_parts, xlabel="method",
                  title="7B model: memory by fine-tuning method", ylabel="memory (GiB)", hline=24,
                  hline_label="24 GB GPU")
plt.show()
assert not fits["full"].fits and fits["qlora"].fits

# %% [markdown]
# ## 2.7 Is the calculator right? Measure it
# Predictions are cheap; let us check them. We train the course model for one real optimizer step three ways —
# full fine-tuning, LoRA (r=8 on all linear layers) and QLoRA (the same LoRA on an NF4 base from
# `course_utils.nf4`) — then count the bytes that actually sit in its parameters, buffers, gradients and Adam's
# state (`measure_training_bytes`), and compare with the calculator. On the CPU everything trainable is fp32, so
# full fine-tuning is 4 (weights) + 4 (gradients) + 8 (Adam) = again 16 bytes per parameter.
#
# **Predict:** how close will prediction and measurement be?

# %%
from course_utils import data, memory
from course_utils.lora import add_lora
from course_utils.nf4 import nf4_layers, quantize_model
from course_utils.training import encode_texts

_, tokenizer = load_course_model()
step_batch = encode_texts(tokenizer, data.texts("near_train", 16))


def one_optimizer_step(model):
    """One real AdamW step on the trainable parameters; returns the optimizer (it holds m and v)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model(**step_batch).loss.backward()
    opt.step()
    return opt


# %%
predicted, measured = {}, {}

full = load_course_model()[0].requires_grad_(True)
opt = one_optimizer_step(full)
predicted["full FT"] = memory.full_finetune_bytes(memory.count_params(full)["trainable"], weight_dtype="fp32")
measured["full FT"] = memory.measure_training_bytes(full, opt)

torch.manual_seed(0)
lora = add_lora(load_course_model()[0], "all-linear", r=8, alpha=16)
opt = one_optimizer_step(lora)
n = memory.count_params(lora)
predicted["LoRA"] = memory.lora_bytes(n["frozen"], n["trainable"], base_dtype="fp32")
measured["LoRA"] = memory.measure_training_bytes(lora, opt)

# %% [markdown]
# For QLoRA the 4-bit codes and their constants are buffers of the `NF4Linear` layers; `measure_training_bytes`
# counts them byte for byte. The calculator needs to know how many weights are 4-bit (all linear layers but
# `lm_head`) and how many stay fp32 (embeddings, norms, `lm_head`).

# %%
torch.manual_seed(0)
qlora = quantize_model(load_course_model()[0])
n_4bit = sum(layer.logical_param_count() for _, layer in nf4_layers(qlora))
add_lora(qlora, "all-linear", r=8, alpha=16)
opt = one_optimizer_step(qlora)
n = memory.count_params(qlora)  # a 4-bit weight counts as the parameters it stands for
n_fp32 = n["frozen"] - n_4bit  # embeddings, norms and lm_head stay in fp32
predicted["QLoRA"] = memory.qlora_bytes(n_4bit, n_fp32, n["trainable"], other_dtype="fp32")
measured["QLoRA"] = memory.measure_training_bytes(qlora, opt)
print(f"{n_4bit:,} weights in NF4, {n_fp32:,} frozen in fp32 ({n_fp32 / n['frozen']:.0%} of the base), "
      f"{n['trainable']:,} trainable")

# %%
rows = []
for method in predicted:
    for part in ["weights", "gradients", "optimizer_state", "total"]:
        p, m = predicted[method][part], measured[method][part]
        rows.append([method, part, f"{p:,}", f"{m:,}", f"{(m - p) / p:+.3%}"])
print(text_table(rows, ["method", "part", "predicted bytes", "measured bytes", "difference"]))

# %%
for method in predicted:
    gap = memory.compare(predicted[method], measured[method])
    assert all(abs(v) < 0.05 for v in gap.values()), f"{method}: prediction and measurement differ by >5%: {gap}"
print("every part of every method agrees within 5%; the largest gap is",
      f"{max(abs(v) for m in predicted for v in memory.compare(predicted[m], measured[m]).values()):.3%}")

# %% [markdown]
# They agree to a fraction of a percent; the few extra bytes are Adam's step counters, the rotary-embedding
# buffer and NF4's per-matrix offset. The measurement also shows what the calculator is for:

# %%
from course_utils.plots import plot_bars

totals = {m: measured[m]["total"] / 2**20 for m in measured}

plot_bars(list(totals), list(totals.values()), title="Course model: measured training state after one step",
          xlabel="method", ylabel="parameters + gradients + Adam state (MiB)", fmt="{:.1f} MiB")
plt.show()
print(f"LoRA uses {totals['LoRA'] / totals['full FT']:.0%} and QLoRA {totals['QLoRA'] / totals['full FT']:.0%} of full FT")

# %% [markdown]
# On the course model the embeddings, norms and `lm_head` stay fp32 and are a large share of the base (printed
# above; its vocabulary is large for its width), so QLoRA saves less here than on a 7B model, where they are
# ~4% (the calculator's `unquantized_fraction` default).

# %% [markdown]
# ## 2.8 Does model X fit my GPU?
# The figure answers for three common GPUs; below it, move the sliders for yours (they need a running kernel).
# Activations are yours to add: 2.6 printed the 7B estimate for one 2,048-token sequence; gradient checkpointing
# cuts it to about one layer input per layer.

# %% tags=["nbval-ignore-output"]
from course_utils.widgets import fit_explorer, show_fit

fit_explorer()

# %% [markdown]
# The same answers without widgets — the seed's scenario, a 7B model on a 16 GB card:

# %%
answers = {m: show_fit(7, 16, m) for m in ["full", "lora", "qlora"]}
assert [a.fits for a in answers.values()] == [False, True, True]
assert not show_fit(7, 16, "lora", activation_gib=act_7b / GIB).fits, "LoRA + one 2k sequence: over 16 GiB"

# %% [markdown]
# With a bf16 base, LoRA on 7B fits 16 GiB only on paper: one 2,048-token sequence of activations pushes it
# over. QLoRA leaves room for them. That is the memory wall, and the way around it.

# %% [markdown]
# ## 2.9 Exercises
# 1. Does a **13B** model fit a 16 GiB GPU with QLoRA (1% adapters, no activations)? How many GiB does it need?
# 2. Hugging Face's "model memory anatomy" counts **18 bytes/param** for mixed-precision AdamW. Reproduce it with
#    `full_finetune_bytes(1, "fp16", grad_dtype="fp32")` and explain the extra 2 bytes.
# 3. 8-bit Adam (bitsandbytes) stores m and v in one byte each. How many bytes/param does full fine-tuning need
#    then (`optimizer="adam8bit"`)? Does a 7B full fine-tune fit on 80 GiB?

# %%
from course_utils.checks import check_value

answer_13b = show_fit(13, 16, "qlora").needed_gib  # solution; try it yourself first
kept = round(13e9 * 0.04)  # embeddings, norms, lm_head stay bf16
reference = memory.qlora_bytes(13e9 - kept, kept, round(13e9 * 0.01))["total"] / GIB
_ = check_value("13B QLoRA GiB", round(answer_13b, 3), reference, rtol=1e-3)

# %%
_ = check_value("HF bytes/param", full_finetune_bytes(1, "fp16", grad_dtype="fp32")["total"], 18)
adam8 = full_finetune_bytes(1, "bf16", optimizer="adam8bit")["total"]
_ = check_value("8-bit Adam bytes/param", adam8, 2 + 2 + 2 + 4, hint="bf16 weights + bf16 grads + 2x int8 + fp32 master")
print(f"7B with 8-bit Adam: {7e9 * adam8 / GIB:.1f} GiB before activations")

# %% [markdown]
# ## Summary
# - Weights are the small part: mixed-precision Adam needs **16 bytes/param**, ≈ 104 GiB for 7B before
#   activations. The seed's "4–6×, 25–40 GB" rule is far too low (2.5).
# - Activations scale with tokens (batch × sequence): a fixed count of numbers per hidden unit, layer and token
#   (measured in 2.3), independent of the optimizer.
# - LoRA removes gradients and optimizer state for the frozen base; QLoRA also shrinks the base to ~0.5 B/param.
# - The calculator in `course_utils.memory` matches the bytes measured on a real model to well under 1%.
#
# Next: chapter 03 looks at the bits themselves — fp16, bf16, int8 and 4-bit.
