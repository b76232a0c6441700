# %% [markdown]
# # 02 · The memory wall: why full fine-tuning breaks down
#
# Runtime: about 15 s on a 2-core laptop, no GPU.
#
# **Scenario:** you have a GPU with 8–16 GiB and want to fine-tune a 7B or 8B model on your own data.
# This chapter counts every byte that training needs (weights, gradients, optimizer state, master weights,
# activations) for 7B, 13B and 70B models, checks a popular rule of thumb against the count, and then
# *measures* the same bytes on the course model under full fine-tuning, LoRA and QLoRA to prove the calculator
# right. It ends with a calculator for your own GPU.
#
# **Units.** GPU memory is reported in **GiB** = 1024³ bytes (by `nvidia-smi` and PyTorch; a card sold as
# "24 GB" holds 24 GiB), so this chapter counts in GiB throughout. **GB** = 10⁹ bytes appears only where a quoted
# figure uses it, and is labelled so.

# %% [markdown]
# ## 2.0 Versions

# %% tags=["workshop"]
import importlib.metadata as md
import platform

import matplotlib.pyplot as plt
import torch

torch.set_num_threads(1)  # the course model's ops are tiny: one thread is as fast, and never stalls on a busy machine
print("python", platform.python_version(), "| torch", md.version("torch"), "| transformers", md.version("transformers"))

# %% [markdown] tags=["workshop"]
# ## 2.1 Weights only
# `model_memory_gb(params, bytes_per_param)` in `course_utils.memory` is the classic back-of-the-envelope
# helper. Despite its name it divides by 1024³: its result is in GiB.
#
# **Predict:** how many GiB do the 16-bit (fp16) weights of a 7B model take?

# %%
from course_utils.checks import exercise, predict, reveal

### BEGIN SOLUTION
guess_7b_fp16_gib = 14  # 2 bytes x 7e9 = 14e9 bytes, a little under 14 GiB
### END SOLUTION
predict("7B fp16 weights (GiB)", guess_7b_fp16_gib)

# %%
from course_utils.memory import GB, GIB, model_memory_gb

models = {"7B": 7e9, "13B": 13e9}
for name, p in models.items():
    print(f"{name} weights only: FP16 {model_memory_gb(p, 2):.2f} GiB, FP32 {model_memory_gb(p, 4):.2f} GiB "
          f"({p * 4 / GB:.0f} GB)")

# %%
reveal("7B fp16 weights (GiB)", model_memory_gb(7e9, 2), rtol=0.15,
       why="2 bytes per parameter x 7e9 parameters / 1024³ bytes per GiB.")

# %% [markdown]
# The 7B weights alone fill most of a 16 GiB card in FP16; the figure often quoted for loading a 7B model,
# "20–30+ GB", is the FP32 one (printed above). And loading is the easy part.

# %% [markdown] tags=["workshop"]
# ## 2.2 What training stores, per parameter
# One training step with Adam in mixed precision (the standard recipe, ZeRO paper arXiv 1910.02054) keeps:
# - **weights** in bf16 (2 bytes), used by the forward and backward pass;
# - **gradients** in bf16 (2 bytes), one per trainable weight;
# - **Adam's two moments** m and v (4 + 4 bytes, see below);
# - **fp32 master weights** (4 bytes): the copy the update is applied to, because 16-bit weights cannot absorb
#   small updates (chapter 03, section 3.3);
# - **activations**: what the forward pass saves for the backward pass; they depend on the batch, not on the
#   parameter count (2.3).
#
# **Predict:** how many bytes per parameter, before activations?

# %%
### BEGIN SOLUTION
guess_bytes_per_param = 16  # 2 + 2 + 8 + 4
### END SOLUTION
predict("bytes per parameter, mixed-precision Adam", guess_bytes_per_param)

# %%
from course_utils.memory import full_finetune_bytes

per_param = full_finetune_bytes(1, weight_dtype="bf16", optimizer="adam", master_weights=True)
print(per_param)
reveal("bytes per parameter, mixed-precision Adam", per_param["total"], rtol=0.1,
       why="The optimizer's m and v (8 bytes) and the fp32 master copy (4) cost more than weights and gradients.")
assert per_param["total"] == 16, "2 (bf16 weights) + 2 (bf16 grads) + 8 (Adam m, v) + 4 (fp32 master) bytes"

# %% [markdown] tags=["workshop-subslide"]
# Why are m and v 4 bytes each? torch's AdamW allocates them in the dtype of the parameter it updates. Measure it
# on one bf16 and one fp32 parameter:

# %%
for dtype in [torch.bfloat16, torch.float32]:
    p = torch.nn.Parameter(torch.zeros(4, dtype=dtype))
    opt = torch.optim.AdamW([p])
    p.grad = torch.ones_like(p)
    opt.step()
    state = opt.state[p]
    print(f"parameter {dtype}: m {state['exp_avg'].dtype}, v {state['exp_avg_sq'].dtype}")
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == dtype

# %% [markdown]
# So m and v are fp32 in mixed-precision training *because* the optimizer updates the fp32 master copy, not
# because Adam insists on fp32: hand it bf16 parameters and its state is bf16 too (and the small updates of
# chapter 03 section 3.3 vanish). Together: **16 bytes per parameter**, 8× the bf16 weights. (Hugging Face's
# "model memory anatomy" counts 18, keeping the gradients in fp32: exercise 2.2.)

# %% [markdown]
# ## 2.3 Activations are measured in tokens, not parameters
# The backward pass needs the intermediate results of the forward pass. We measure them directly: a
# `saved_tensors_hooks` context sees every tensor autograd saves; we add up those that are not weights.
#
# **Predict:** doubling the batch doubles the activations. By what factor do they grow when you double the
# number of *layers* (same batch)?

# %%
### BEGIN SOLUTION
guess_layers_factor = 1.8  # a little under 2: the logits at the top do not grow with depth
### END SOLUTION
predict("activations, 2 -> 4 layers (factor)", guess_layers_factor)

# %% tags=["workshop"]
from course_utils.memory import activation_estimate_bytes, saved_activation_bytes
from course_utils.models import course_model_config, load_course_model, tiny_llama


# %% tags=["workshop"]
def token_batch(batch_size, seq_len):
    ids = torch.randint(3, 1000, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "labels": ids}


acts = {(L, b): saved_activation_bytes(tiny_llama(num_hidden_layers=L), token_batch(b, 64))
        for L, b in [(4, 8), (4, 16), (2, 16)]}
for (L, b), n in acts.items():
    print(f"{L} layers, batch {b:>2} x 64 tokens: {n / 2**20:6.2f} MiB of activations")

# %% tags=["workshop"]
cfg = course_model_config()
tokens = 16 * 64
per_layer_token = (acts[4, 16] - acts[2, 16]) / 2 / tokens
numbers_per_hidden = per_layer_token / 4 / cfg.hidden_size  # fp32: 4 bytes per stored number
print(f"batch x2 -> activations x{acts[4, 16] / acts[4, 8]:.2f}; layers x2 -> x{acts[4, 16] / acts[2, 16]:.2f}")
print(f"per layer and token: {per_layer_token:,.0f} bytes = {numbers_per_hidden:.1f} numbers per hidden unit")
reveal("activations, 2 -> 4 layers (factor)", acts[4, 16] / acts[2, 16], rtol=0.15,
       why="Each layer stores the same amount, but the logits over the vocabulary at the top do not grow with depth.")
assert abs(acts[4, 16] / acts[4, 8] - 2) < 0.01, "activations are proportional to the number of tokens"

# %% [markdown]
# For comparison, Korthikanti et al. (2022, arXiv 2205.05198) count **34·s·b·h bytes per layer** of a GPT block
# with 16-bit activations when the attention scores are not stored (as with flash attention): roughly 17
# two-byte numbers per hidden unit per token.
# The Llama block (RMSNorm, rotary embeddings, a SwiGLU MLP with three matrices) stores a different number, as the
# cell above measured. We take our measured count, at 2 bytes per number, to estimate the big models below.

# %%
print(f"measured {numbers_per_hidden:.1f} numbers per hidden unit and token, vs 17 in Korthikanti et al.'s GPT count")
assert abs(numbers_per_hidden - 17) / 17 < 0.35, "the measured count should be of the same order as the formula's"


# %% [markdown] tags=["workshop"]
# ## 2.4 Full fine-tuning of 7B, 13B and 70B
# Now everything together, for one sequence of 2,048 tokens (batch 1): the smallest real training step.
# Layer counts and widths are Llama-2's.
#
# **Predict:** does a full fine-tune of the 7B model fit on one 80 GiB A100?

# %%
### BEGIN SOLUTION
guess_7b_fits_80 = "no"  # 16 bytes x 7e9 is over 100 GiB before any activation
### END SOLUTION
predict("7B full fine-tune fits 80 GiB", guess_7b_fits_80, choices=["yes", "no"])

# %%
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

# %% tags=["workshop-subslide"]
from course_utils.plots import plot_stacked_bars

plot_stacked_bars(list(llama), parts, title="Full fine-tuning, mixed-precision Adam, batch 1 x 2048 tokens",
                  xlabel="model size (parameters)", ylabel="memory (GiB)", hline=80, hline_label="one 80 GiB GPU")
plt.show()

# %%
reveal("7B full fine-tune fits 80 GiB", "yes" if total_gib["7B"] <= 80 else "no",
       why="Optimizer state and master weights alone (12 bytes per parameter) are over 78 GiB for 7B.")
assert total_gib["7B"] > 80, "a full 7B fine-tune does not fit on one 80 GiB GPU"
assert parts["activations (1 x 2048 tokens)"][0] < parts["Adam m + v (fp32)"][0], "at batch 1 the optimizer dominates"

# %% [markdown]
# ## 2.5 A popular rule of thumb, checked
# A common rule of thumb says: *"~4–6× model size. A 7B model can easily require 25–40 GB VRAM for full
# fine-tuning."* Read "model size" as the parameter count (4–6 bytes per parameter) and its two halves agree
# with each other. Hold them against the count:

# %%
state_7b = full_finetune_bytes(7e9, "bf16")
rule_gb = [k * 7e9 / GB for k in (4, 6)]
print(f"rule: 4-6 bytes/param x 7e9 = {rule_gb[0]:.0f}-{rule_gb[1]:.0f} GB  (it quotes 25-40 GB)")
print(f"count: {per_param['total']} bytes/param x 7e9 = {state_7b['total'] / GB:.0f} GB = "
      f"{state_7b['total'] / GIB:.1f} GiB, before activations")
covered = per_param["weights"] + per_param["gradients"]
print(f"16-bit weights + gradients: {covered} bytes/param; left out: Adam's m and v "
      f"({per_param['optimizer_state']}) and the fp32 master copy ({per_param['master_weights']})")

# %%
assert abs(rule_gb[0] / 25 - 1) < 0.15 and abs(rule_gb[1] / 40 - 1) < 0.1, "4-6 bytes/param x 7B is the rule's own 25-40 GB"
assert covered == 4 and per_param["optimizer_state"] + per_param["master_weights"] == 12
assert round(state_7b["total"] / GIB) == 104 and round(state_7b["total"] / GB) == 112
assert 2.5 < state_7b["total"] / GB / 40 < 3.5, "about 3x the rule's upper end"

# %% [markdown]
# The rule is consistent with itself, and wrong: its 4–6 bytes per parameter cover the 16-bit weights and
# gradients (4 bytes) and little else. It leaves out **Adam's two fp32 moments (8 bytes) and the fp32 master
# copy (4 bytes)**, which is why the count above is about 3× the rule's upper end before a single activation.
# 25–40 GB is roughly what a 7B model needs with **LoRA** (bf16 base) plus activations, which is the point of
# the rest of this course.

# %% [markdown] tags=["workshop"]
# ## 2.6 LoRA and QLoRA move the wall
# LoRA freezes the base: gradients and Adam state exist only for the small adapters. QLoRA also stores the
# frozen base in 4-bit NF4 (about half a byte per parameter). For Llama-2-7B with rank-16 adapters on every
# linear layer of its 32 blocks, three figures per method, each naming what it includes:
# - **before activations**: weights, adapters, their gradients and Adam state (what the calculator counts);
# - **+ activations**: plus one 2,048-token sequence's activations, everything stored (2.3's estimate);
# - **+ checkpointed activations**: with gradient checkpointing, which keeps only each layer's input
#   (2 bytes × tokens × hidden per layer) and recomputes one layer at a time in the backward pass.
#
# **Predict:** for the 7B LoRA fine-tune with one full 2,048-token sequence of activations, which part is the
# largest?

# %%
LORA_PARTS = ["frozen weights", "adapters: weights, gradients, Adam", "activations"]
### BEGIN SOLUTION
guess_largest_lora_part = "frozen weights"
### END SOLUTION
predict("largest part of a 7B LoRA step", guess_largest_lora_part, choices=LORA_PARTS)

# %% tags=["workshop-subslide"]
from course_utils.memory import fits_on_gpu, lora_param_count

llama7b_linears = [(4096, 4096)] * 4 * 32 + [(11008, 4096)] * 2 * 32 + [(4096, 11008)] * 32  # q,k,v,o; gate,up; down
n_lora_7b = lora_param_count(llama7b_linears, r=16)
act_7b = activation_estimate_bytes(32, 4096, tokens=2048, numbers_per_hidden=numbers_per_hidden)
act_7b_ckpt = 32 * 2048 * 4096 * 2 + act_7b / 32  # every layer's input, plus one layer recomputed
fits = {m: fits_on_gpu(7e9, 24, m, n_lora=n_lora_7b) for m in ["full", "lora", "qlora"]}
print(f"LoRA r=16, all linear layers: {n_lora_7b:,} trainable parameters ({n_lora_7b / 7e9:.2%} of 7B)")
rows = [[m, f"{f.needed_gib:.1f}", f"{f.needed_gib + act_7b / GIB:.1f}", f"{f.needed_gib + act_7b_ckpt / GIB:.1f}"]
        for m, f in fits.items()]
print(text_table(rows, ["GiB", "before activations", "+ activations", "+ checkpointed activations"]))
print(f"activations of one 2,048-token sequence: {act_7b / GIB:.1f} GiB stored, {act_7b_ckpt / GIB:.1f} GiB checkpointed")

# %%
lora_b = fits["lora"].breakdown
lora_sizes = {"frozen weights": 7e9 * 2, "adapters: weights, gradients, Adam": lora_b["total"] - 7e9 * 2,
              "activations": act_7b}
reveal("largest part of a 7B LoRA step", max(lora_sizes, key=lora_sizes.get),
       why="Once the optimizer state is gone, the 2-byte frozen base and the activations are what is left.")
print({k: f"{v / GIB:.1f} GiB" for k, v in lora_sizes.items()})

# %% tags=["workshop-subslide"]
method_parts = {
    "weights": [f.breakdown["weights"] / GIB for f in fits.values()],
    "gradients + Adam + master": [(f.breakdown["gradients"] + f.breakdown["optimizer_state"]
                                   + f.breakdown["master_weights"]) / GIB for f in fits.values()],
    "activations (1 x 2048 tokens)": [act_7b / GIB] * len(fits),
}
plot_stacked_bars(["full FT", "LoRA (bf16 base)", "QLoRA (NF4 base)"], method_parts, xlabel="method",
                  title="7B model: memory by fine-tuning method", ylabel="memory (GiB)", hline=24,
                  hline_label="one 24 GiB GPU")
plt.show()

# %%
lora_gib = fits["lora"].needed_gib
assert not fits["full"].fits and fits["lora"].fits and fits["qlora"].fits, "before activations"
assert lora_gib + act_7b / GIB > 24 > lora_gib + act_7b_ckpt / GIB, "LoRA on 24 GiB needs checkpointing"
assert fits["qlora"].needed_gib + act_7b / GIB < 24, "QLoRA fits 24 GiB even with all activations stored"
assert 25e9 <= lora_gib * GIB + act_7b <= 40e9, "the rule's 25-40 GB is roughly LoRA plus one sequence's activations"
print(f"LoRA: {lora_gib:.1f} GiB before activations; {lora_gib + act_7b / GIB:.1f} GiB with one sequence's "
      f"activations (does not fit 24 GiB); {lora_gib + act_7b_ckpt / GIB:.1f} GiB with checkpointing (fits)")

# %% [markdown]
# The three columns answer different questions, so say which one you quote. "A 7B LoRA fine-tune needs about
# 14 GiB" (lab01) is the *before activations* figure; one 2,048-token sequence with every activation stored
# pushes it past 24 GiB; gradient checkpointing brings it back under. QLoRA fits 24 GiB either way.

# %%
assert round(lora_gib) == 14, "the 'about 14 GiB' quoted above is the before-activations figure"

# %% [markdown]
# ## 2.7 Is the calculator right? Measure it
# Predictions are cheap; let us check them. We train the course model for one real optimizer step three ways:
# full fine-tuning, LoRA (r=8 on all linear layers) and QLoRA (the same LoRA on an NF4 base from
# `course_utils.nf4`). Then we count the bytes that actually sit in its parameters, buffers, gradients and
# Adam's state (`measure_training_bytes`), and compare with the calculator. On the CPU everything trainable is
# fp32, so full fine-tuning is 4 (weights) + 4 (gradients) + 8 (Adam) = again 16 bytes per parameter.
#
# **Predict:** the largest gap between calculator and measurement, over every part of every method, in percent?

# %%
### BEGIN SOLUTION
guess_largest_gap_percent = 1.0
### END SOLUTION
predict("largest calculator gap (%)", guess_largest_gap_percent)

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
largest_gap = max(abs(v) for m in predicted for v in memory.compare(predicted[m], measured[m]).values())
reveal("largest calculator gap (%)", 100 * largest_gap, atol=1.0,
       why="Every byte is a weight, gradient or Adam number the calculator counts; only a few counters are extra.")
for method in predicted:
    gap = memory.compare(predicted[method], measured[method])
    assert all(abs(v) < 0.05 for v in gap.values()), f"{method}: prediction and measurement differ by >5%: {gap}"
print(f"every part of every method agrees within 5%; the largest gap is {largest_gap:.3%}")

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
# a few percent (the calculator's `unquantized_fraction` default).

# %% [markdown]
# ## 2.8 Does model X fit my GPU?
# The figure answers for three common GPUs; below it, move the sliders for yours (they need a running kernel).
# Activations are yours to add: 2.6 printed the 7B estimate for one 2,048-token sequence; gradient checkpointing
# cuts it to about one layer input per layer.

# %% tags=["nbval-ignore-output"]
from course_utils.widgets import fit_explorer, show_fit

fit_explorer()

# %% [markdown]
# The same answers without widgets, for the scenario this chapter opened with: a 7B model on a 16 GiB card.

# %%
answers = {m: show_fit(7, 16, m) for m in ["full", "lora", "qlora"]}
assert [a.fits for a in answers.values()] == [False, True, True]
assert not show_fit(7, 16, "lora", activation_gib=act_7b / GIB).fits, "LoRA + one 2k sequence: over 16 GiB"

# %% [markdown]
# With a bf16 base, LoRA on 7B fits 16 GiB only on paper: one 2,048-token sequence of activations pushes it
# over. QLoRA leaves room for them. That is the memory wall, and the way around it.

# %% [markdown]
# ## 2.9 Exercises
# **Exercise 2.1.** Does a **13B** model fit a 16 GiB GPU with QLoRA (1% adapters, no activations)? How many
# GiB does it need? Use `fits_on_gpu(...)` or `show_fit(...)`.

# %%
### BEGIN SOLUTION
answer_13b_qlora_gib = fits_on_gpu(13e9, 16, "qlora").needed_gib
### END SOLUTION
kept = round(13e9 * 0.04)  # embeddings, norms, lm_head stay bf16 (the calculator's default share)
exercise("2.1 13B QLoRA GiB", answer_13b_qlora_gib,
         expected=memory.qlora_bytes(13e9 - kept, kept, round(13e9 * 0.01))["total"] / GIB, rtol=1e-3,
         hint="the calculator's fits_on_gpu knows the QLoRA recipe; read its needed_gib")

# %% [markdown]
# **Exercise 2.2.** Hugging Face's "model memory anatomy" counts **18 bytes/param** for mixed-precision AdamW.
# Reproduce it with `full_finetune_bytes(1, "fp16", grad_dtype="fp32")`.

# %%
### BEGIN SOLUTION
answer_hf_bytes = full_finetune_bytes(1, "fp16", grad_dtype="fp32")["total"]
### END SOLUTION
exercise("2.2 bytes/param with fp32 gradients", answer_hf_bytes, expected=18, rtol=0,
         hint="full_finetune_bytes(1, 'fp16', grad_dtype='fp32')['total']")

# %% [markdown]
# **Exercise 2.3.** 8-bit Adam (bitsandbytes) stores m and v in one byte each. How many bytes per parameter does
# full fine-tuning need then (`optimizer="adam8bit"`, bf16 weights)? Does a 7B full fine-tune then fit on one
# 80 GiB GPU before activations?

# %%
### BEGIN SOLUTION
answer_adam8_bytes = full_finetune_bytes(1, "bf16", optimizer="adam8bit")["total"]
answer_7b_adam8_fits_80 = "yes" if 7e9 * answer_adam8_bytes / GIB <= 80 else "no"
### END SOLUTION
adam8 = full_finetune_bytes(1, "bf16", optimizer="adam8bit")["total"]
exercise("2.3a 8-bit Adam bytes/param", answer_adam8_bytes, expected=adam8, rtol=0,
         hint="only the optimizer's part changes: two numbers per parameter, one byte each")
exercise("2.3b 7B with 8-bit Adam fits 80 GiB", answer_7b_adam8_fits_80,
         expected="yes" if 7e9 * adam8 / GIB <= 80 else "no", choices=["yes", "no"])
print(f"7B with 8-bit Adam: {7e9 * adam8 / GIB:.1f} GiB before activations")

# %% [markdown]
# **Question 2.4.** Where do Hugging Face's extra 2 bytes (exercise 2.2) come from, and which is right?
#
# ### BEGIN SOLUTION
# They keep the gradients in fp32 (4 bytes instead of 2): some mixed-precision setups accumulate gradients in
# fp32 so that many small contributions are not rounded away (chapter 03, section 3.3). Both counts are right
# for their recipe; what matters is to count every buffer the recipe keeps, and neither comes close to a
# 4–6 bytes/param rule.
# ### END SOLUTION
#
# **Question 2.5.** Activations grow with the batch and the sequence length, not with the optimizer. Name two
# ways to fit a longer sequence into the same GPU without changing the model.
#
# ### BEGIN SOLUTION
# Gradient checkpointing (store only each layer's input and recompute the rest in the backward pass: 2.6's
# third column), and a smaller micro-batch with gradient accumulation (the same effective batch over several
# steps). Flash attention also avoids storing the attention scores, whose size grows with the square of the
# sequence length.
# ### END SOLUTION

# %%
from course_utils.checks import summary

summary()

# %% [markdown]
# ## Summary
# - Weights are the small part: mixed-precision Adam needs **16 bytes/param**, about 104 GiB for 7B before
#   activations (2.5). The popular "4–6×, 25–40 GB" rule leaves out Adam's moments and the master copy.
# - Adam's m and v take the dtype of the parameter they update: fp32, because that is the master copy.
# - Activations scale with tokens (batch × sequence): a fixed count of numbers per hidden unit, layer and token
#   (measured in 2.3), independent of the optimizer.
# - LoRA removes gradients and optimizer state for the frozen base; QLoRA also shrinks the base to about half a
#   byte per parameter. Quote memory figures with what they include: before activations, with them, with
#   checkpointing.
# - The calculator in `course_utils.memory` matches the bytes measured on a real model to well under 1%.
#
# Next: chapter 03 looks at the bits themselves: fp16, bf16, int8 and 4-bit. Then `labs/lab01_memory_wall`
# has you build this calculator yourself.
