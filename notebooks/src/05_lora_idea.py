# %% [markdown]
# # 05 · The LoRA idea: W = W0 + BA
#
# Runtime: ~10 s on a 2-core laptop, no GPU.
#
# Chapter 04 showed that a fine-tune needs few *directions*. LoRA (Hu et al. 2021) turns that into an
# architecture: freeze every pretrained matrix W0 and learn its change as a product of two thin matrices,
#
# $$W = W_0 + \Delta W, \qquad \Delta W = B A, \qquad B \in \mathbb{R}^{d \times r},\; A \in \mathbb{R}^{r \times k},\; r \ll d, k.$$
#
# In this chapter you will:
# - count what that saves (the seed's 1000 × 1000 example, and real layer shapes);
# - see that a rank-1 matrix still changes *every* entry;
# - take a real full fine-tune of the course model apart with the SVD and measure how low-rank its ΔW is;
# - wrap one layer of the course model in `LoRALinear` and check it starts exactly at W0.

# %% [markdown]
# ## 5.0 Versions

# %%
import importlib.metadata as md
import platform

import matplotlib.pyplot as plt
import torch

print("python", platform.python_version(), "| torch", md.version("torch"))

# %% [markdown]
# ## 5.1 Why BA saves parameters
# A d × k matrix has d·k entries. B (d × r) and A (r × k) together have r·(d + k).
#
# **Predict:** the seed's example is a 1000 × 1000 matrix with rank r = 8. How many trainable parameters does
# LoRA need, and how many times fewer is that than the full matrix?

# %%
d, k, r = 1000, 1000, 8
full_params = d * k
lora_params = d * r + r * k
ratio = full_params / lora_params
print(f"full: {full_params:,}   LoRA r={r}: {lora_params:,}   ratio: {ratio}x")

# %%
assert lora_params == 16_000 and ratio == 62.5, "r·(d + k) = 8·2000 = 16,000 and 1,000,000 / 16,000 = 62.5"

# %% [markdown]
# The seed's "62× fewer" is 62.5 rounded down. The ratio d·k / (r·(d + k)) grows with the matrix, so it is
# modest on the course model and large on a real LLM. The table uses the course model's shapes and
# Llama-2-7B's (hidden size 4096, MLP width 11008):

# %%
from course_utils.plots import text_table

shapes = {"course q_proj": (128, 128), "course up_proj": (352, 128), "1000 x 1000 (seed)": (1000, 1000),
          "Llama-7B q_proj": (4096, 4096), "Llama-7B up_proj": (11008, 4096)}
rows = [[name, f"{dd} x {kk}", f"{dd * kk:,}", f"{r * (dd + kk):,}", f"{dd * kk / (r * (dd + kk)):.1f}x"]
        for name, (dd, kk) in shapes.items()]
print(text_table(rows, ["matrix", "shape", "full", f"LoRA r={r}", "fewer"]))

# %% [markdown]
# ## 5.2 Rank, made concrete (the seed's 5 × 5 demo)
# The rank of a matrix is the number of independent directions it can write into. A random 5 × 5 matrix uses
# all five; B (5 × 1) times A (1 × 5) can only write along one.

# %%
torch.manual_seed(0)
W = torch.randn(5, 5)
B1, A1 = torch.randn(5, 1), torch.randn(1, 5)
W_low = B1 @ A1
print("full rank:", torch.linalg.matrix_rank(W).item(), "| low rank:", torch.linalg.matrix_rank(W_low).item())

# %% [markdown]
# **Predict:** the rank-1 matrix `W_low` was built from only 5 + 5 = 10 numbers. How many of its 25 entries
# are non-zero?

# %%
print(W_low.round(decimals=2))
print("non-zero entries:", int((W_low != 0).sum()), "of", W_low.numel())

# %%
assert torch.linalg.matrix_rank(W_low) == 1 and bool((W_low != 0).all()), \
    "entry (i, j) is B[i]·A[j]: non-zero whenever both factors are, so rank 1 still touches all 25 entries"

# %% [markdown]
# So "low rank" does not mean "few weights change": every weight changes, but in a coordinated way, through
# 10 degrees of freedom instead of 25. A rank-r product is a sum of r such rank-1 layers:

# %%
B2, A2 = torch.randn(5, 2), torch.randn(2, 5)
print("rank of B (5x2) @ A (2x5):", torch.linalg.matrix_rank(B2 @ A2).item())
assert torch.linalg.matrix_rank(B2 @ A2) == 2

# %% [markdown]
# ## 5.3 Is a real fine-tune's ΔW low-rank?
# LoRA *forces* ΔW to have rank ≤ r. Is that a loss? Fine-tune the whole course model (every weight free, no
# rank limit) on the far domain, chord notation it never saw, then look at ΔW = W_after − W_before of each
# linear layer with the singular value decomposition. ||ΔW||²_F is the sum of the squared singular values,
# and the best rank-r approximation keeps the top r of them (Eckart–Young), so the share of ||ΔW||²_F in the
# top r is exactly what the best possible rank-r LoRA could reproduce.

# %%
from course_utils import data
from course_utils.models import load_course_model
from course_utils.spectrum import weight_snapshot, weight_deltas
from course_utils.training import batches_from_examples, encode_texts, train

model, tok = load_course_model()
before = weight_snapshot(model)  # every nn.Linear weight, copied
model.requires_grad_(True)  # full fine-tuning: all 1.07M parameters train
batches = batches_from_examples(lambda rows: encode_texts(tok, rows), data.texts("far_train"), 16, seed=0)
result = train(model, batches, steps=40, lr=1e-3, progress="full fine-tune")
deltas = weight_deltas(before, model)
print(f"loss {result.losses[0]:.2f} -> {result.final_loss:.2f}; {len(deltas)} weight matrices changed")

# %% [markdown]
# **Predict:** the q_proj of layer 1 is 128 × 128, so ΔW has 128 singular values. What share of ||ΔW||²_F do
# the top 8 hold? For comparison, a random 128 × 128 matrix (no structure at all) is printed next to it.

# %%
from course_utils.spectrum import energy_captured, rank_for_energy, singular_values

torch.manual_seed(0)
dW_q = deltas["model.layers.1.self_attn.q_proj"]
noise = torch.randn_like(dW_q)
e8_q, e8_noise = energy_captured(dW_q, 8), energy_captured(noise, 8)
print(f"top-8 share of ||dW||^2: real q_proj {e8_q:.3f} | random matrix {e8_noise:.3f}")

# %%
assert e8_q > 3 * e8_noise, "a fine-tune's dW concentrates in a few directions; a random matrix spreads evenly"

# %% [markdown]
# The plot shows where that comes from: a few large singular values, then a long flat tail.

# %%
from course_utils.plots import plot_spectrum

spectra = {name: singular_values(deltas[f"model.layers.1.{name}"])
           for name in ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"]}
spectra["random 128x128"] = singular_values(noise)
plot_spectrum(spectra, r=8, title="Spectrum of a real fine-tune's dW (layer 1)")
plt.show()

# %% [markdown]
# Every linear layer of the model, summarised: the share at r = 8, the rank needed for 90 %, and the best rank-8
# approximation's relative error sqrt(1 − share). Averages over the 4 layers:

# %%
from course_utils.models import LINEAR_NAMES

rows, share_at_8 = [], {}
for name in LINEAR_NAMES:
    mats = [w for n, w in deltas.items() if n.endswith("." + name)]
    e8 = sum(energy_captured(w, 8) for w in mats) / len(mats)
    r90 = sum(rank_for_energy(w, 0.9) for w in mats) / len(mats)
    share_at_8[name] = e8
    rows.append([name, f"{tuple(mats[0].shape)}", f"{e8:.3f}", f"{r90:.1f}", f"{(1 - e8) ** 0.5:.3f}"])
print(text_table(rows, ["layer", "shape", "share at r=8", "rank for 90%", "rank-8 rel. error"]))

# %%
all_mats = [w for n, w in deltas.items() if n.rsplit(".", 1)[-1] in LINEAR_NAMES]
mean_e8 = sum(energy_captured(w, 8) for w in all_mats) / len(all_mats)
print(f"rank 8 captures {mean_e8:.1%} of ||dW||^2 on average over all {len(all_mats)} transformer matrices")
assert mean_e8 > 0.6, "the full fine-tune's update is mostly low-rank, which is the bet LoRA makes"

# %% [markdown]
# Nothing forced the full fine-tune to be low-rank, yet the top 8 of 128+ directions hold most of each update
# (the table above; attention matrices somewhat more than the MLP's). This is the hypothesis of the LoRA paper
# (Hu et al. 2021, section 7) measured on our own model. The rest of ΔW is not zero, so a rank-8 LoRA is an
# approximation: chapter 07 measures what the rank costs in loss.

# %% [markdown]
# **Explore:** pick a weight matrix of this fine-tune and a rank r. The explorer shows the share of that matrix's
# ||ΔW||² a rank-r LoRA could keep, next to the numbers it trains. The figure shows the same trade-off for every
# layer type (no kernel needed); the sliders need a running kernel.

# %% tags=["nbval-ignore-output"]
from course_utils.widgets import rank_explorer

rank_explorer(deltas)

# %% [markdown]
# ## 5.4 LoRA on one layer
# `course_utils.lora.LoRALinear` wraps a frozen linear layer: forward = W0 x + B(A x) · alpha / r. PEFT's
# initialisation: A uniform in ±1/sqrt(k), **B = 0** (chapter 06 says why).
#
# **Predict:** for the course model's q_proj (128 × 128) and r = 8: the shapes of A and B, the number of
# trainable parameters, and whether the wrapped layer's output differs from the original before any training.

# %%
from course_utils.lora import LoRALinear, count_parameters

fresh, _ = load_course_model()
q = fresh.model.layers[0].self_attn.q_proj
lora_q = LoRALinear(q, r=8, alpha=8)
trainable, total = count_parameters(lora_q)
print(f"W0 {tuple(q.weight.shape)} | A {tuple(lora_q.A.shape)} | B {tuple(lora_q.B.shape)} | scaling {lora_q.scaling}")
print(f"trainable {trainable:,} of {total:,} ({q.weight.numel() / trainable:.0f}x fewer than W0's {q.weight.numel():,})")

# %%
torch.manual_seed(0)
x = torch.randn(4, 10, 128)
same = torch.equal(lora_q(x), q(x))
print("LoRA output == base output at step 0:", same)
assert same and trainable == 8 * (128 + 128), "B = 0 makes B(Ax) exactly zero, and only A and B train"
assert not any(p.requires_grad for p in q.parameters()), "W0 is frozen: that is the point"

# %% [markdown]
# Finally, close the loop with 5.3: an ideal rank-8 LoRA for the *fine-tuned* q_proj of layer 1. Put the top-8
# SVD factors of the real ΔW into B and A (B = U·sqrt(S), A = sqrt(S)·Vᵀ) and compare the layer's output with
# the fully fine-tuned layer's.
#
# **Predict:** the relative error of the output change, compared with the rank-8 relative error of ΔW itself
# (sqrt(1 − share at r = 8) for this layer).

# %%
W0_1 = before["model.layers.1.self_attn.q_proj"]
base_1 = torch.nn.Linear(128, 128, bias=False)
base_1.weight.data.copy_(W0_1)
lora_1 = LoRALinear(base_1, r=8, alpha=8)  # scaling 1, so Delta W = B @ A exactly
U, S, Vh = torch.linalg.svd(dW_q)
with torch.no_grad():
    lora_1.B.copy_(U[:, :8] * S[:8].sqrt())
    lora_1.A.copy_(S[:8].sqrt()[:, None] * Vh[:8])
torch.manual_seed(0)
x = torch.randn(256, 128)
tuned_out, base_out = x @ (W0_1 + dW_q).T, x @ W0_1.T
err = ((lora_1(x) - tuned_out).norm() / (tuned_out - base_out).norm()).item()
print(f"relative error of the rank-8 LoRA's output change: {err:.3f} | sqrt(1 - share at r=8): {(1 - e8_q) ** 0.5:.3f}")
assert abs(err - (1 - e8_q) ** 0.5) < 0.05, "for random inputs the output error follows the Frobenius error of dW"

# %% [markdown]
# ## 5.5 Exercises
# 1. Llama-2-7B's `down_proj` is 4096 × 11008. How many times fewer parameters does a rank-16 LoRA train? Compute
#    it, then check: `check_value("down_proj ratio", your_ratio, 11008 * 4096 / (16 * (11008 + 4096)))`.
# 2. Which layer type needs the highest rank for 90 % of ||ΔW||²? Use `rank_for_energy` on `deltas` for all 4
#    layers and compare with the table.
# 3. Redo 5.3 with 10 training steps instead of 40 (copy the cell). Is the early update more or less low-rank?

# %%
from course_utils.checks import check_value

# Exercise 1, solved: d·k / (r·(d + k))
_ = check_value("down_proj ratio", 11008 * 4096 / (16 * (11008 + 4096)), 186.5, rtol=1e-3)

# %% [markdown]
# **Summary.** LoRA writes the update as ΔW = BA: r·(d + k) numbers instead of d·k (62.5× fewer for the seed's
# 1000 × 1000 at r = 8). A low-rank ΔW still changes every weight. A real, unconstrained fine-tune of the course
# model puts most of its ||ΔW||² into the top 8 directions, so a rank-8 LoRA loses little, and `LoRALinear`
# starts exactly at W0. Next (06): why B starts at zero, and which layers to adapt.
