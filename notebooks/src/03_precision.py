# %% [markdown]
# # 03 · Precision and quantization: how models get smaller
#
# Runtime: about 15 s on a 2-core laptop, no GPU.
#
# A parameter is a number, and a number costs bits. This chapter measures what fewer bits cost:
# - the three float formats of deep learning (fp32, fp16, bf16): range vs precision, read from `torch.finfo`;
# - a classic illustration, `7.123456789` in fp32 and fp16, with the *exact* values each format stores;
# - why small updates vanish in 16 bits (the reason for the fp32 master weights of chapter 02);
# - how rounding errors build up through a deep stack of layers;
# - integer quantization with an absmax scale, why one outlier ruins it, and how blocks fix it;
# - why 4-bit weights can keep a model's quality when done carefully (the road to NF4 and QLoRA).

# %% [markdown]
# ## 3.0 Versions

# %%
import importlib.metadata as md
import platform

import matplotlib.pyplot as plt
import torch

torch.set_num_threads(1)  # the course model's ops are tiny: one thread is as fast, and never stalls on a busy machine
print("python", platform.python_version(), "| torch", md.version("torch"))

# %% [markdown]
# ## 3.1 Three float formats
# A float stores a sign, an exponent (the *range*) and a mantissa (the *precision*). `eps` is the gap between
# 1.0 and the next number the format can store; every rounding error is at most `eps/2` of the value.
#
# **Predict:** fp16 and bf16 both use 16 bits. Which one can store larger numbers?

# %%
from course_utils.checks import exercise, predict, reveal

### BEGIN SOLUTION
guess_wider_range = "bf16"  # it keeps fp32's 8 exponent bits
### END SOLUTION
predict("the 16-bit format with the wider range", guess_wider_range, choices=["fp16", "bf16"])

# %%
from course_utils.plots import text_table
from course_utils.precision import float_formats

formats = {f["format"]: f for f in float_formats(["fp32", "fp16", "bf16"])}
rows = [[f["format"], f["bits"], f"1 + {f['exponent_bits']} + {f['mantissa_bits']}", f"{f['max']:.3g}",
         f"{f['smallest_normal']:.3g}", f"{f['eps']:.3g}", f"{f['decimal_digits']:.1f}"] for f in formats.values()]
print(text_table(rows, ["format", "bits", "sign+exp+mantissa", "max", "smallest normal", "eps", "decimal digits"]))

# %%
fp16, bf16, fp32 = formats["fp16"], formats["bf16"], formats["fp32"]
assert fp16["mantissa_bits"] > bf16["mantissa_bits"], "fp16 spends more bits on the mantissa: it is more precise"
assert bf16["exponent_bits"] == fp32["exponent_bits"], "bf16 keeps fp32's 8 exponent bits, hence fp32's range"
assert fp16["max"] < 1e5 < bf16["max"], "fp16 overflows above 65,504; bf16 reaches ~3.4e38 like fp32"
print(f"bf16 is {bf16['eps'] / fp16['eps']:.0f}x coarser than fp16, with a range {bf16['max'] / fp16['max']:.1e}x wider")
reveal("the 16-bit format with the wider range", "bf16" if bf16["max"] > fp16["max"] else "fp16",
       why="The exponent sets the range: bf16 has 8 exponent bits like fp32, fp16 only 5.")

# %% [markdown]
# bf16 is fp32 with the last 16 mantissa bits cut off: same range, ~2.4 significant decimal digits.
# fp16 keeps more digits but overflows at 65,504 — the table above computed both.

# %% [markdown]
# ## 3.2 A classic example, looked at closely
# A common way to show precision is to print `7.123456789` in fp32 and fp16. `print` rounds to four decimals,
# which hides what is stored.
#
# **Predict:** which value does bf16 store for 7.123456789? (Near 7, bf16's grid has a spacing of 1/32.)

# %%
### BEGIN SOLUTION
guess_bf16_of_7123 = 7.125  # the nearest multiple of 1/32 = 0.03125
### END SOLUTION
predict("bf16 value of 7.123456789", guess_bf16_of_7123)

# %%
x = torch.tensor([7.123456789], dtype=torch.float32)
print("FP32:", x)
print("FP16:", x.half())
print("BF16:", x.bfloat16())

# %%
from course_utils.precision import relative_rounding_error, spacing, stored_value

for fmt in ["fp32", "fp16", "bf16"]:
    print(f"{fmt}: stores {str(stored_value(7.123456789, fmt)):<24} spacing near 7: {spacing(7.123456789, fmt):.3g}"
          f"   relative error {relative_rounding_error(7.123456789, fmt):.1e}")

# %%
reveal("bf16 value of 7.123456789", float(stored_value(7.123456789, "bf16")), atol=0.005,
       why="bf16 keeps 8 significant bits: near 7 it can only store multiples of 1/32.")
assert stored_value(7.123456789, "fp16") == stored_value(7.123456789, "bf16") == 7.125
for fmt in ["fp32", "fp16", "bf16"]:
    assert relative_rounding_error(7.123456789, fmt) <= formats[fmt]["eps"] / 2, "rounding never exceeds eps/2"

# %% [markdown]
# Both 16-bit formats store exactly **7.125** (asserted above), a coincidence: 7.125 = 228 × 1/32 lies on bf16's grid (spacing
# 1/32 near 7) *and* on fp16's finer grid (spacing 1/256). Other numbers tell the two apart:

# %%
for value in [1000.7, 0.1, 1 / 3]:
    print(f"{value:<20.10g} fp16 -> {str(stored_value(value, 'fp16')):<28} bf16 -> {stored_value(value, 'bf16')}")

# %% [markdown]
# ### Range: overflow and underflow
# Gradients are often tiny, activations occasionally large. A format must hold both.

# %%
for value in [70000.0, 1e-8]:
    print(f"{value:g}: fp16 -> {torch.tensor(value).half().item():g}, bf16 -> {torch.tensor(value).bfloat16().item():.4g}")
assert torch.tensor(70000.0).half().isinf() and torch.tensor(1e-8).half() == 0
assert torch.tensor(1e-8).bfloat16() != 0, "bf16 has fp32's exponent range: 1e-8 survives"

# %% [markdown]
# fp16 turns 70,000 into `inf` and 1e-8 into 0 (below its smallest subnormal, 6e-8). That is why fp16 training
# needs *loss scaling* (multiply the loss so gradients stay above the underflow line), while bf16 training does
# not. Modern LLM training uses bf16.

# %% [markdown]
# ## 3.3 Updates that vanish
# An optimizer step changes a weight by `lr × update`, often ~1e-4 of its size.
#
# **Predict:** start a weight at 1.0 and add 1e-4 to it 1,000 times, storing it in bf16 after every step.
# What is it at the end? (In fp32 it would be 1.1.)

# %%
### BEGIN SOLUTION
guess_bf16_after_updates = 1.0  # 1e-4 is below half of bf16's spacing at 1.0: every update rounds away
### END SOLUTION
predict("bf16 weight after 1,000 updates of 1e-4", guess_bf16_after_updates)

# %%
from course_utils.precision import accumulate_updates

final = {fmt: accumulate_updates(1.0, 1e-4, 1000, fmt) for fmt in ["fp32", "fp16", "bf16"]}
for fmt, value in final.items():
    print(f"{fmt}: {value:.6f}   (half the spacing at 1.0 is {spacing(1.0, fmt) / 2:.1e})")

# %%
reveal("bf16 weight after 1,000 updates of 1e-4", final["bf16"], atol=0.01,
       why="Half of bf16's spacing at 1.0 is larger than 1e-4, so 1.0 + 1e-4 rounds back to 1.0, every time.")
assert abs(final["fp32"] - 1.1) < 1e-3, "fp32 adds every update"
assert final["bf16"] == final["fp16"] == 1.0, "each update is below half the spacing at 1.0, so it rounds away"

# %% [markdown]
# In 16 bits the weight **never moves**: 1.0 + 1e-4 rounds back to 1.0, a thousand times. Mixed-precision
# training therefore keeps an **fp32 master copy** of every trainable weight, applies the update there and
# copies it down to 16 bits for the next forward pass — the 4 bytes/parameter of "master weights" in
# chapter 02's accounting.

# %% [markdown]
# ## 3.4 Rounding through a deep stack
# It is often said that small rounding errors "accumulate in deep networks". Let us measure it: 64 random
# orthogonal 256×256 layers (orthogonal, so the signal neither explodes nor vanishes), weights and activations
# stored in each format, compared with a float64 reference after every layer.
#
# **Predict:** if each layer adds an independent rounding error, how does the total error grow with depth?

# %%
GROWTH = ["linearly", "like sqrt(depth)", "not at all"]
### BEGIN SOLUTION
guess_error_growth = "like sqrt(depth)"  # independent errors add like a random walk
### END SOLUTION
predict("error growth with depth", guess_error_growth, choices=GROWTH)

# %%
from course_utils.precision import deep_stack_errors

errors = deep_stack_errors(["fp32", "fp16", "bf16"], depth=64, width=256, batch=64, seed=0)
depths = list(range(1, 65))
for fmt, errs in errors.items():
    print(f"{fmt}: relative error after 1 layer {errs[0]:.1e}, after 16 {errs[15]:.1e}, after 64 {errs[63]:.1e}")

# %%
from course_utils.plots import plot_lines

ax = plot_lines(depths, errors, title="Rounding error through a stack of linear layers",
                xlabel="depth (number of layers)", ylabel="relative error vs float64", logx=True, logy=True,
                markers=False)
ax.plot(depths, [errors["bf16"][0] * d**0.5 for d in depths], ":", color="grey", label="√depth growth")
ax.legend(frameon=False)
plt.show()

# %%
import math

growth = {fmt: errs[63] / errs[0] for fmt, errs in errors.items()}
exponent = math.log(growth["bf16"]) / math.log(64)  # growth = depth^exponent: 1 linear, 0.5 sqrt, 0 flat
print("error growth from 1 to 64 layers:", {k: round(v, 1) for k, v in growth.items()},
      f"| sqrt(64) = 8 | bf16: growth = depth^{exponent:.2f}")
reveal("error growth with depth", GROWTH[min(range(3), key=lambda i: abs(exponent - [1, 0.5, 0][i]))],
       why="Roundings are as often up as down: independent errors add like a random walk, sqrt(n) after n steps.")

# %% [markdown]
# One random stack could be lucky. Three more stacks (other random layers and inputs), and the spread of the two
# numbers this section relies on: the growth from 1 to 64 layers, and bf16's error relative to fp16's.

# %%
spread = {"growth 1 -> 64 layers (bf16)": [], "growth 1 -> 64 layers (fp16)": [], "bf16 / fp16 error at 64": []}
for seed in [0, 1, 2]:
    e = errors if seed == 0 else deep_stack_errors(["fp16", "bf16"], depth=64, width=256, batch=64, seed=seed)
    spread["growth 1 -> 64 layers (bf16)"].append(e["bf16"][63] / e["bf16"][0])
    spread["growth 1 -> 64 layers (fp16)"].append(e["fp16"][63] / e["fp16"][0])
    spread["bf16 / fp16 error at 64"].append(e["bf16"][63] / e["fp16"][63])
print(text_table([[k, " ".join(f"{v:.1f}" for v in vals), f"{min(vals):.1f} - {max(vals):.1f}"]
                  for k, vals in spread.items()], ["3 random stacks", "values", "min - max"]))
print(f"eps ratio bf16 / fp16: {bf16['eps'] / fp16['eps']:.0f}")

# %%
assert all(3 < g < 20 for k in list(spread)[:2] for g in spread[k]), "on every stack: ~sqrt(depth), far from 64x"
assert all(4 < r < 16 for r in spread["bf16 / fp16 error at 64"]), "the error scales with eps (8x) on every stack"

# %% [markdown]
# The error grows like √depth (the dotted line), not linearly, on every stack we tried: roundings are as often up
# as down. Even after 64 layers bf16 is only a few percent off the exact result (printed above). Training tolerates this noise; it
# could not tolerate updates that vanish (3.3), which is why the *update* happens in fp32.

# %% [markdown]
# ## 3.5 Integer quantization: absmax
# Quantization does not just "drop bits". To store weights as int8, scale them so the largest |w| (the
# *absmax*) maps to 127, round to integers, and keep the scale:
#
# q = round(w / absmax × 127),  ŵ = q × absmax / 127.
#
# Every value then lands within half a step (absmax/127/2) of where it was. We quantize a real weight: the
# course model's first `down_proj` (its shape is printed below).

# %%
from course_utils.models import load_course_model
from course_utils.quant import dequantize_absmax, quantize_absmax

model, tokenizer = load_course_model()
w = model.model.layers[0].mlp.down_proj.weight.detach().clone()
q, absmax = quantize_absmax(w, bits=8)
w_hat = dequantize_absmax(q, absmax, bits=8)
print(f"w[0, :4]     = {[round(v, 4) for v in w[0, :4].tolist()]}\nint8 codes   = {q[0, :4].tolist()}"
      f"\nw_hat[0, :4] = {[round(v, 4) for v in w_hat[0, :4].tolist()]}")
print(f"shape {tuple(w.shape)}, absmax {absmax.item():.4f}, step {absmax.item() / 127:.5f}, max error {(w_hat - w).abs().max():.5f}")

# %% [markdown]
# **Predict:** the step between int8 levels is absmax/127. What is the largest error any weight can get, as a
# fraction of one step?

# %%
### BEGIN SOLUTION
guess_max_error_in_steps = 0.5
### END SOLUTION
predict("largest int8 error, in steps", guess_max_error_in_steps)

# %%
step = absmax.item() / 127
reveal("largest int8 error, in steps", (w_hat - w).abs().max().item() / step, atol=0.05,
       why="Every weight rounds to the nearest level, and the nearest level is never more than half a step away.")
assert (w_hat - w).abs().max() <= step / 2 + 1e-7, "rounding to the nearest level is off by at most half a step"
print(f"int8 storage: {q.numel() * q.element_size():,} bytes + 4 for the scale vs {w.numel() * 4:,} in fp32")

# %% [markdown]
# ## 3.6 One outlier, and why blocks help
# Trained LLMs contain a few weights and features much larger than the rest. With *one* absmax for the whole
# tensor, one outlier stretches the scale and every other weight gets fewer levels. *Blockwise* quantization
# keeps one absmax per block of 64 consecutive values, so the outlier only coarsens its own block.
#
# **Predict:** we set one weight of the matrix to 10× the current largest. By what factor does the mean
# error grow with a per-tensor absmax?

# %%
### BEGIN SOLUTION
guess_outlier_growth = 10  # the scale, hence the step and the error, grow 10x
### END SOLUTION
predict("per-tensor error growth from one outlier", guess_outlier_growth)

# %%
from course_utils.quant import quantization_error

w_outlier = w.clone()
w_outlier[0, 0] = 10 * w.abs().max()
print(f"{w.numel():,} weights = {w.numel() // 64} blocks of 64; one of them now holds the outlier")
cases = {"per-tensor": None, "block-64": 64}
err = {(name, kind): quantization_error(t, bits=8, blocksize=bs)
       for name, bs in cases.items() for kind, t in [("clean", w), ("one outlier", w_outlier)]}
zeroed = {name: (quantize_absmax(w_outlier, 8, bs)[0] == 0).float().mean().item() for name, bs in cases.items()}
rows = [[name, f"{err[name, 'clean']:.2e}", f"{err[name, 'one outlier']:.2e}",
         f"{err[name, 'one outlier'] / err[name, 'clean']:.1f}x", f"{zeroed[name]:.0%}"] for name in cases]
print(text_table(rows, ["int8 scale", "mean |error| clean", "with outlier", "growth", "weights rounded to 0"]))

# %%
from course_utils.plots import plot_bars

labels = [f"{name}\n{kind}" for name, kind in err]
plot_bars(labels, [v * 1e4 for v in err.values()], title="int8 quantization error of one real weight matrix",
          xlabel="absmax scale, weight matrix", ylabel="mean |w - ŵ| (×1e-4)", fmt="{:.2f}")
plt.show()

# %%
reveal("per-tensor error growth from one outlier", err["per-tensor", "one outlier"] / err["per-tensor", "clean"],
       rtol=0.3, why="The scale grows 10x; below that, many weights round to 0, whose error is the weight itself.")
assert err["per-tensor", "one outlier"] > 5 * err["per-tensor", "clean"], "one outlier coarsens every level"
assert err["block-64", "one outlier"] < 1.1 * err["block-64", "clean"], "blocks confine it to its own block"

# %% [markdown]
# The cell above shows it: with one scale, the outlier multiplies everyone's error and rounds a large share of
# the weights to exactly 0; with blocks of 64 all the other blocks never notice. The price of blocks is one
# scale per 64 weights: 32/64 = 0.5 extra bits per weight for an fp32 scale (QLoRA's double quantization shrinks
# that further by quantizing the scales themselves).

# %% [markdown]
# ## 3.7 Why 4 bits can be enough
# Now the whole model. We plant one outlier (5× the largest weight) in each of its linear layers — the
# fp32 model barely changes — then store every linear weight in 8 or 4 bits, per tensor or per block of 64,
# and in NF4 (4-bit, blocks of 64, levels placed at the quantiles of a normal distribution), and measure the
# loss on the model's own text.
#
# **Predict:** which ONE of these moves the loss by more than 0.01 from fp32?

# %%
QUANT_CHOICES = ["int8 per-tensor", "int4 per-tensor", "int4 block-64"]
### BEGIN SOLUTION
guess_breaks_the_model = "int4 per-tensor"
### END SOLUTION
predict("the scheme that breaks the model", guess_breaks_the_model, choices=QUANT_CHOICES)

# %%
import copy

from course_utils import data
from course_utils.nf4 import dequantize_nf4, quantize_nf4
from course_utils.precision import fake_quantize_linears, plant_outliers
from course_utils.quant import fake_quantize
from course_utils.training import eval_loss, packed_blocks

blocks = packed_blocks(tokenizer, data.texts("pretrain")[-150:], seq_len=64)
text_batch = {"input_ids": blocks, "labels": blocks}
schemes = {
    "fp32": None,
    "bf16": lambda t: t.bfloat16().float(),
    "int8 per-tensor": lambda t: fake_quantize(t, 8, None),
    "int8 block-64": lambda t: fake_quantize(t, 8, 64),
    "int4 per-tensor": lambda t: fake_quantize(t, 4, None),
    "int4 block-64": lambda t: fake_quantize(t, 4, 64),
    "NF4 block-64": lambda t: dequantize_nf4(quantize_nf4(t, 64, False)),
}

# %%
from course_utils.training import progress_bar

losses_by_seed = {}  # where the outliers are planted is random: three placements
for seed in progress_bar([0, 1, 2], desc="outlier placements"):
    outlier_model = copy.deepcopy(model)
    plant_outliers(outlier_model, factor=5.0, seed=seed)
    losses_by_seed[seed] = {}
    for name, fn in schemes.items():
        m = copy.deepcopy(outlier_model)
        if fn is not None:
            fake_quantize_linears(m, fn)
        losses_by_seed[seed][name] = eval_loss(m, text_batch)
loss = losses_by_seed[0]
shift = {k: [losses_by_seed[s][k] - losses_by_seed[s]["fp32"] for s in losses_by_seed] for k in schemes}
print(f"clean fp32 model: {eval_loss(model, text_batch):.4f}; one outlier planted in every linear layer but lm_head")
print(text_table([[k, f"{loss[k]:.4f}", f"{min(v):+.4f} .. {max(v):+.4f}"] for k, v in shift.items()],
                 ["weights", "loss (placement 0)", "vs fp32, 3 placements"]))

# %%
plot_bars([k.replace(" ", "\n") for k in loss], list(loss.values()), fmt="{:.3f}",
          title="Course model (with planted outliers) after quantizing its linear weights",
          xlabel="storage format of the linear weights", ylabel="loss on its own text (nats/token)")
plt.show()

# %%
reveal("the scheme that breaks the model", max(QUANT_CHOICES, key=lambda k: min(abs(d) for d in shift[k])),
       why="With one scale per tensor, 4 bits leave 7 levels per sign, and the outlier makes them 5x coarser.")
assert all(d > 1 for d in shift["int4 per-tensor"]), "4 bits with one scale per tensor cannot survive outliers"
for name in ["bf16", "int8 per-tensor", "int8 block-64", "int4 block-64", "NF4 block-64"]:
    assert all(abs(d) < 0.01 for d in shift[name]), f"{name} should keep the loss within 0.01 of fp32"

# %% [markdown]
# 4-bit per tensor destroys the model, wherever the outliers sit; the *same* 4 bits with a scale per 64 weights
# cost almost nothing. That is what "done carefully" means in the claim that 4-bit weights can keep a model's
# quality: small blocks (and, in NF4, levels placed where normally distributed weights actually are) make 4-bit
# storage nearly lossless.
#
# The QLoRA paper finds the same at scale (Dettmers et al. 2023, arXiv 2305.14314, Table 4 — quoted, not
# measured here): mean 5-shot MMLU of LLaMA models fine-tuned with a **BF16** base 53.0, an **FP4** base 52.2,
# an **NF4 + double quantization** base **53.1**.

# %% [markdown]
# ## 3.8 Exercises
# **Exercise 3.1. Bigger blocks.** The loop below quantizes `w_outlier` to int4 with growing blocks. Then compute
# the mean |error| for blocksize 64 yourself with `quantization_error(tensor, bits=..., blocksize=...)`.

# %%
for bs in [64, 256, 1024, w_outlier.numel()]:
    print(f"int4, blocksize {bs:>5}: mean |error| {quantization_error(w_outlier, bits=4, blocksize=bs):.2e}")

# %%
### BEGIN SOLUTION
answer_int4_block64_error = quantization_error(w_outlier, bits=4, blocksize=64)
### END SOLUTION
exercise("3.1 int4 block-64 mean error", answer_int4_block64_error,
         expected=(fake_quantize(w_outlier, 4, 64) - w_outlier).abs().mean().item(), rtol=1e-4,
         hint="quantization_error(w_outlier, bits=4, blocksize=64)")

# %% [markdown]
# **Exercise 3.2. Updates that overshoot, then stall.** Now the update is 0.004, just *above* half of bf16's
# spacing at 1.0 (the spacing is 2⁻⁷ ≈ 0.0078). Each step, 1.0 + 0.004 rounds up to the next bf16 number, so the
# weight climbs by a whole spacing instead of by 0.004. Predict, then compute with `accumulate_updates`:
# (a) the bf16 weight after 1,000 updates of 0.004 (in fp32 it would be 5.0);
# (b) after how many updates it stops moving.

# %%
### BEGIN SOLUTION
answer_bf16_after_1000 = accumulate_updates(1.0, 0.004, 1000, "bf16")
answer_steps_until_stall = next(n for n in range(1, 1001)
                                if accumulate_updates(1.0, 0.004, n, "bf16") == accumulate_updates(1.0, 0.004, n + 1, "bf16"))
### END SOLUTION
trace = [1.0]
for _ in range(1000):
    trace.append(accumulate_updates(trace[-1], 0.004, 1, "bf16"))
stall = next(n for n in range(1000) if trace[n] == trace[n + 1])
exercise("3.2a bf16 weight after 1,000 updates of 0.004", answer_bf16_after_1000, expected=trace[-1], rtol=1e-6,
         hint="accumulate_updates(1.0, 0.004, 1000, 'bf16')")
exercise("3.2b updates until it stops moving", answer_steps_until_stall, expected=stall, rtol=0,
         hint="the weight climbs by one spacing per update until the spacing doubles")
print(f"after 100 updates: {trace[100]}, after {stall}: {trace[stall]}, after 1,000: {trace[-1]} "
      f"(half the spacing there: {spacing(trace[stall], 'bf16') / 2})")

# %%
assert trace[100] < trace[stall] == trace[-1] and spacing(trace[stall], "bf16") / 2 > 0.004
assert stall == round((trace[stall] - 1) / spacing(1.0, "bf16")), "one spacing per update, from 1.0 up to the stall"

# %% [markdown]
# **Question 3.3.** Why does the weight stop exactly there, and what would an fp32 master copy change?
#
# ### BEGIN SOLUTION
# Between 1 and 2, bf16 numbers are 2⁻⁷ ≈ 0.0078 apart; 0.004 is a little more than half of that, so every
# update rounds *up* to the next number: the weight climbs by 0.0078 per step, about twice too fast. At 2.0 the
# exponent grows by one and the spacing doubles to 2⁻⁶ ≈ 0.0156; now 0.004 is less than half a spacing, so
# 2.0 + 0.004 rounds back to 2.0 and the weight never moves again. The 128 updates it took are
# (2 − 1) / 2⁻⁷. With an fp32 master copy the update is added in fp32 (exact to about 1e-7 here), and only the
# copy used by the forward pass is rounded to bf16: the weight follows 1 + 0.004·n, off by at most half a bf16
# spacing.
# ### END SOLUTION
#
# **Exercise 3.4. Smallest fp16.** What is the smallest positive number fp16 can store? (Hint: try
# `torch.tensor(2.0**-k).half()` for growing k.)

# %%
### BEGIN SOLUTION
answer_smallest_fp16 = 2.0**-24
### END SOLUTION
zero, one = torch.zeros((), dtype=torch.float16), torch.ones((), dtype=torch.float16)
exercise("3.4 smallest positive fp16", answer_smallest_fp16, expected=torch.nextafter(zero, one).item(), rtol=1e-6,
         hint="keep halving 1.0 in fp16 until it becomes 0; the last non-zero value is below the smallest *normal*")

# %%
from course_utils.checks import summary

summary()

# %% [markdown]
# ## Summary
# - fp16 and bf16 both take 2 bytes: fp16 is more precise, bf16 has fp32's range (no loss scaling needed).
# - 7.123456789 becomes exactly 7.125 in both 16-bit formats; rounding is at most eps/2.
# - Updates smaller than half a spacing vanish in 16 bits, and updates a little larger overshoot: training keeps
#   fp32 master weights.
# - Rounding error through depth grows like √depth and scales with eps (on every random stack we tried).
# - One absmax per tensor lets a single outlier ruin quantization; one per block of 64 contains it, and makes
#   even 4 bits nearly lossless: the foundation of NF4 and QLoRA.
#
# Next: chapter 04 asks *how many* directions a fine-tune really needs.
