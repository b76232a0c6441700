# %% [markdown]
# # 05 · The LoRA idea: W = W0 + BA
#
# Runtime: about 20 s on a 2-core laptop, no GPU.
#
# Chapter 04 showed that a fine-tune needs few *directions*. LoRA (Hu et al. 2021) turns that into an
# architecture: freeze every pretrained matrix W0 and learn its change as a product of two thin matrices,
#
# $$W = W_0 + \Delta W, \qquad \Delta W = B A, \qquad B \in \mathbb{R}^{d \times r},\; A \in \mathbb{R}^{r \times k},\; r \ll d, k.$$
#
# In this chapter you will:
# - count what that saves (a 1000 × 1000 example, and real layer shapes);
# - see that a rank-1 matrix still changes *every* entry;
# - take a real full fine-tune of the course model apart with the SVD and measure how low-rank its ΔW is;
# - wrap one layer of the course model in `LoRALinear` and check it starts exactly at W0.

# %% [markdown]
# ## 5.0 Versions

# %% tags=["workshop"]
import importlib.metadata as md
import platform

import matplotlib.pyplot as plt
import torch

torch.set_num_threads(1)  # the course model's ops are tiny: one thread is as fast, and never stalls on a busy machine
print("python", platform.python_version(), "| torch", md.version("torch"))

# %% [markdown] tags=["workshop"]
# ## 5.1 Why BA saves parameters
# A d × k matrix has d·k entries. B (d × r) and A (r × k) together have r·(d + k).
#
# **Predict:** a 1000 × 1000 matrix, LoRA with rank r = 8. How many trainable parameters does LoRA need?

# %%
from course_utils.checks import exercise, predict, reveal

### BEGIN SOLUTION
guess_lora_params = 1000 * 8 + 8 * 1000
### END SOLUTION
predict("LoRA parameters, 1000 x 1000 at r = 8", guess_lora_params)

# %%
d, k, r = 1000, 1000, 8
full_params = d * k
lora_params = d * r + r * k
ratio = full_params / lora_params
print(f"full: {full_params:,}   LoRA r={r}: {lora_params:,}   ratio: {ratio}x")

# %%
reveal("LoRA parameters, 1000 x 1000 at r = 8", lora_params, rtol=0.01, why="B is d x r and A is r x k: r·(d + k).")
assert lora_params == 16_000 and ratio == 62.5, "r·(d + k) = 8·2000 = 16,000 and 1,000,000 / 16,000 = 62.5"

# %% [markdown]
# The "62× fewer" often quoted for this example is 62.5 rounded down. The ratio d·k / (r·(d + k)) grows with the matrix, so it is
# modest on the course model and large on a real LLM. The table uses the course model's shapes and
# Llama-2-7B's (hidden size 4096, MLP width 11008):

# %%
from course_utils.plots import text_table

from course_utils.models import course_model_config

cfg = course_model_config()
h, mlp = cfg.hidden_size, cfg.intermediate_size
shapes = {"course q_proj": (h, h), "course up_proj": (mlp, h), "1000 x 1000": (1000, 1000),
          "Llama-7B q_proj": (4096, 4096), "Llama-7B up_proj": (11008, 4096)}
rows = [[name, f"{dd} x {kk}", f"{dd * kk:,}", f"{r * (dd + kk):,}", f"{dd * kk / (r * (dd + kk)):.1f}x"]
        for name, (dd, kk) in shapes.items()]
print(text_table(rows, ["matrix", "shape", "full", f"LoRA r={r}", "fewer"]))

# %% [markdown] tags=["workshop"]
# ## 5.2 Rank, made concrete: a 5 × 5 demo
# The rank of a matrix is the number of independent directions it can write into. A random 5 × 5 matrix uses
# all five; B (5 × 1) times A (1 × 5) can only write along one.

# %%
torch.manual_seed(0)
W = torch.randn(5, 5)
B1, A1 = torch.randn(5, 1), torch.randn(1, 5)
W_low = B1 @ A1
print("full rank:", torch.linalg.matrix_rank(W).item(), "| low rank:", torch.linalg.matrix_rank(W_low).item())

# %% [markdown] tags=["workshop-subslide"]
# **Predict:** the rank-1 matrix `W_low` was built from only 5 + 5 = 10 numbers. How many of its 25 entries
# are non-zero?

# %%
### BEGIN SOLUTION
guess_nonzero_entries = 25
### END SOLUTION
predict("non-zero entries of the rank-1 matrix", guess_nonzero_entries)

# %%
print(W_low.round(decimals=2))
print("non-zero entries:", int((W_low != 0).sum()), "of", W_low.numel())
reveal("non-zero entries of the rank-1 matrix", int((W_low != 0).sum()), atol=0.5,
       why="Entry (i, j) is B[i]·A[j]: non-zero whenever both factors are, which random numbers always are.")

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

# %% [markdown] tags=["workshop"]
# ## 5.3 Is a real fine-tune's ΔW low-rank?
# LoRA *forces* ΔW to have rank ≤ r. Is that a loss? Fine-tune the whole course model (every weight free, no
# rank limit) on the far domain, chord notation it never saw, then look at ΔW = W_after − W_before of each
# linear layer with the singular value decomposition. ||ΔW||²_F is the sum of the squared singular values,
# and the best rank-r approximation keeps the top r of them (Eckart–Young), so the share of ||ΔW||²_F in the
# top r is exactly what the best possible rank-r LoRA could reproduce.

# %%
from course_utils import data
from course_utils.models import load_course_model
from course_utils.spectrum import weight_deltas, weight_snapshot
from course_utils.training import batches_from_examples, encode_texts, train

model, tok = load_course_model()
before = weight_snapshot(model)  # every nn.Linear weight, copied
model.requires_grad_(True)  # full fine-tuning: every parameter trains
batches = batches_from_examples(lambda rows: encode_texts(tok, rows), data.texts("far_train"), 16, seed=0)
result = train(model, batches, steps=30, lr=1e-3, progress="full fine-tune")
deltas = weight_deltas(before, model)
print(f"loss {result.losses[0]:.2f} -> {result.final_loss:.2f}; {len(deltas)} weight matrices changed")

# %% [markdown]
# The first loss is far above the uniform guess ln(vocabulary size): chapter 01 (section 1.2) met this. The model
# is not ignorant of chord notation, it is *confidently wrong* about it: its pretraining world made the tokens
# of `C4 E4 G4 |` nearly impossible, and −ln of a near-zero probability is huge.

# %%
import math

print(f"first loss {result.losses[0]:.2f} vs uniform guess ln({cfg.vocab_size}) = {math.log(cfg.vocab_size):.2f}")
assert result.losses[0] > math.log(cfg.vocab_size) > result.final_loss

# %% [markdown] tags=["workshop-subslide"]
# **Predict:** the q_proj of layer 1 is square, so ΔW has as many singular values as the hidden size. What share
# of ||ΔW||²_F do the top 8 hold? For comparison, a random matrix of the same shape (no structure at all) is
# printed next to it.

# %%
### BEGIN SOLUTION
guess_top8_share = 0.8
### END SOLUTION
predict("top-8 share of the q_proj update", guess_top8_share)

# %%
from course_utils.spectrum import energy_captured, rank_for_energy, singular_values

torch.manual_seed(0)
dW_q = deltas["model.layers.1.self_attn.q_proj"]
noise = torch.randn_like(dW_q)
e8_q, e8_noise = energy_captured(dW_q, 8), energy_captured(noise, 8)
print(f"top-8 share of ||dW||^2: real q_proj {e8_q:.3f} | random matrix {e8_noise:.3f}")
reveal("top-8 share of the q_proj update", e8_q, atol=0.1,
       why="Fine-tuning on one narrow data set pushes the weights along a few directions, again and again.")

# %% [markdown]
# The plot shows where that comes from: a few large singular values, then a long flat tail.

# %% tags=["workshop-subslide"]
from course_utils.plots import plot_spectrum

spectra = {name: singular_values(deltas[f"model.layers.1.{name}"])
           for name in ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"]}
spectra["random matrix"] = singular_values(noise)
plot_spectrum(spectra, r=8, title="Spectrum of a real fine-tune's dW (layer 1)")
plt.show()

# %% [markdown] tags=["workshop-skip"]
# ### Every layer, and two more data orders
# One run could be a fluke. Two more full fine-tunes from the pretrained weights, with other orders of the chord
# lines, and then every linear layer of the model, summarised: the share at r = 8 and the rank needed for 90 %,
# averaged over the 4 layers of each type, with the spread over the three runs.

# %%
from course_utils.models import LINEAR_NAMES
from course_utils.training import progress_bar

runs = {0: deltas}
for seed in progress_bar([1, 2], desc="other data orders"):
    m, _ = load_course_model()
    m.requires_grad_(True)
    train(m, batches_from_examples(lambda rows: encode_texts(tok, rows), data.texts("far_train"), 16, seed=seed),
          steps=30, lr=1e-3, progress=False, seed=seed)
    runs[seed] = weight_deltas(before, m)

share = {name: [] for name in LINEAR_NAMES}  # per type: the mean over its 4 layers, one value per run
r90 = {name: [] for name in LINEAR_NAMES}
for run in runs.values():
    for name in LINEAR_NAMES:
        mats = [w for n, w in run.items() if n.endswith("." + name)]
        share[name].append(sum(energy_captured(w, 8) for w in mats) / len(mats))
        r90[name].append(sum(rank_for_energy(w, 0.9) for w in mats) / len(mats))
shape_of = {name: tuple(next(w for n, w in deltas.items() if n.endswith("." + name)).shape) for name in LINEAR_NAMES}
rows = [[name, f"{shape_of[name]}",
         f"{min(share[name]):.3f} - {max(share[name]):.3f}", f"{min(r90[name]):.1f} - {max(r90[name]):.1f}"]
        for name in LINEAR_NAMES]
print(text_table(rows, ["layer", "shape", "share at r=8 (3 runs)", "rank for 90% (3 runs)"]))

# %%
mean_e8 = [sum(energy_captured(w, 8) for n, w in run.items() if n.rsplit(".", 1)[-1] in LINEAR_NAMES)
           / sum(n.rsplit(".", 1)[-1] in LINEAR_NAMES for n in run) for run in runs.values()]
attention = [sum(share[n][i] for n in LINEAR_NAMES[:4]) / 4 for i in range(len(runs))]
mlp_share = [sum(share[n][i] for n in LINEAR_NAMES[4:]) / 3 for i in range(len(runs))]
print(f"rank 8 captures {min(mean_e8):.1%} - {max(mean_e8):.1%} of ||dW||^2 on average over all transformer matrices")
print("attention (q, k, v, o) vs MLP (gate, up, down), mean share at r=8 per run:",
      ", ".join(f"{a:.3f} vs {m:.3f}" for a, m in zip(attention, mlp_share)))
lowest_attention = min(LINEAR_NAMES[:4], key=lambda n: min(share[n]))
highest_mlp = max(LINEAR_NAMES[4:], key=lambda n: max(share[n]))
overlap = min(share[lowest_attention]) < max(share[highest_mlp])
print(f"lowest attention type {lowest_attention} {min(share[lowest_attention]):.3f}, highest MLP type {highest_mlp} "
      f"{max(share[highest_mlp]):.3f}: the single types' ranges {'overlap' if overlap else 'do not overlap'}")

# %%
assert all(e > 0.6 for e in mean_e8), "on every run the full fine-tune's update is mostly low-rank"
assert all(energy_captured(run["model.layers.1.self_attn.q_proj"], 8) > 3 * e8_noise for run in runs.values())
attention_more = all(a > m for a, m in zip(attention, mlp_share))
print("attention updates more low-rank than MLP updates on every run:", attention_more)

# %% [markdown]
# Nothing forced the full fine-tune to be low-rank, yet on every run the top 8 of more than a hundred directions
# hold most of each update (the table above). Compare the attention rows with the MLP rows yourself: the cells
# above printed whether attention's average share beat the MLP's on every run, and whether single layer types
# overlap. A difference that does not hold on every run, or that single types contradict, is not one to build a
# recipe on. This is the hypothesis of the LoRA paper (Hu et al. 2021,
# section 7) measured on our own model. The rest of ΔW is not zero, so a rank-8 LoRA is an approximation: what
# the rank costs in loss is a question of hyperparameters, measured by training LoRAs of different ranks.

# %% [markdown]
# **Explore:** pick a weight matrix of this fine-tune and a rank r. The explorer shows the share of that matrix's
# ||ΔW||² a rank-r LoRA could keep, next to the numbers it trains. The figure shows the same trade-off for every
# layer type (no kernel needed); the sliders need a running kernel.

# %% tags=["nbval-ignore-output"]
from course_utils.widgets import rank_explorer

rank_explorer(deltas)

# %% [markdown] tags=["workshop"]
# ## 5.4 LoRA on one layer
# `course_utils.lora.LoRALinear` wraps a frozen linear layer: forward = W0 x + B(A x) · alpha / r.
# Initialisation: the LoRA paper (Hu et al.) draws A from a Gaussian; PEFT, and `course_utils.lora` with it,
# draws A from a Kaiming-uniform distribution, U(±1/sqrt(k)) for k inputs. Both set **B = 0**, and that is the
# part that matters: BA = 0 whatever A is (chapter 06 compares the two A's and shows why B = 0).
#
# **Predict:** for the course model's q_proj (hidden × hidden) and r = 8, how many trainable parameters does the
# wrapped layer have?

# %%
### BEGIN SOLUTION
guess_trainable_q = 8 * (cfg.hidden_size + cfg.hidden_size)  # A: r x in, B: out x r
### END SOLUTION
predict("trainable parameters of LoRA on q_proj, r = 8", guess_trainable_q)

# %%
from course_utils.lora import LoRALinear, count_parameters

fresh, _ = load_course_model()
q = fresh.model.layers[0].self_attn.q_proj
lora_q = LoRALinear(q, r=8, alpha=8)
trainable, total = count_parameters(lora_q)
print(f"W0 {tuple(q.weight.shape)} | A {tuple(lora_q.A.shape)} | B {tuple(lora_q.B.shape)} | scaling {lora_q.scaling}")
print(f"trainable {trainable:,} of {total:,} ({q.weight.numel() / trainable:.0f}x fewer than W0's {q.weight.numel():,})")
reveal("trainable parameters of LoRA on q_proj, r = 8", trainable, rtol=0.01,
       why="Only A (r x in) and B (out x r) train; W0 is frozen.")

# %%
torch.manual_seed(0)
x = torch.randn(4, 10, q.in_features)
same = torch.equal(lora_q(x), q(x))
print("LoRA output == base output at step 0:", same)
assert same and trainable == 8 * (q.in_features + q.out_features), "B = 0 makes B(Ax) exactly zero; only A, B train"
assert not any(p.requires_grad for p in q.parameters()), "W0 is frozen: that is the point"

# %% [markdown] tags=["workshop-subslide"]
# Finally, close the loop with 5.3: an ideal rank-8 LoRA for the *fine-tuned* q_proj of layer 1. Put the top-8
# SVD factors of the real ΔW into B and A (B = U·sqrt(S), A = sqrt(S)·Vᵀ) and compare the layer's output with
# the fully fine-tuned layer's.
#
# **Predict:** the relative error of the output change. (The rank-8 relative error of ΔW itself is
# sqrt(1 − share at r = 8): printed in 5.3 for this layer.)

# %%
### BEGIN SOLUTION
guess_output_error = (1 - e8_q) ** 0.5  # random inputs see every direction of dW alike
### END SOLUTION
predict("relative error of the rank-8 LoRA's output change", guess_output_error)

# %%
W0_1 = before["model.layers.1.self_attn.q_proj"]
base_1 = torch.nn.Linear(*reversed(W0_1.shape), bias=False)
base_1.weight.data.copy_(W0_1)
lora_1 = LoRALinear(base_1, r=8, alpha=8)  # scaling 1, so Delta W = B @ A exactly
U, S, Vh = torch.linalg.svd(dW_q)
with torch.no_grad():
    lora_1.B.copy_(U[:, :8] * S[:8].sqrt())
    lora_1.A.copy_(S[:8].sqrt()[:, None] * Vh[:8])
torch.manual_seed(0)
x = torch.randn(256, W0_1.shape[1])
tuned_out, base_out = x @ (W0_1 + dW_q).T, x @ W0_1.T
err = ((lora_1(x) - tuned_out).norm() / (tuned_out - base_out).norm()).item()
print(f"relative error of the rank-8 LoRA's output change: {err:.3f} | sqrt(1 - share at r=8): {(1 - e8_q) ** 0.5:.3f}")
reveal("relative error of the rank-8 LoRA's output change", err, atol=0.05,
       why="For random inputs, the error of the output change follows the Frobenius error of dW.")
assert abs(err - (1 - e8_q) ** 0.5) < 0.05, "for random inputs the output error follows the Frobenius error of dW"

# %% [markdown]
# ## 5.5 Exercises
# **Exercise 5.1.** Llama-2-7B's `down_proj` is 4096 × 11008. How many times fewer parameters does a rank-16 LoRA
# train than the full matrix?

# %%
### BEGIN SOLUTION
answer_down_proj_ratio = 4096 * 11008 / (16 * (4096 + 11008))
### END SOLUTION
exercise("5.1 down_proj: full / LoRA r=16", answer_down_proj_ratio, expected=11008 * 4096 / (16 * (11008 + 4096)),
         rtol=1e-3, hint="d·k / (r·(d + k))")

# %% [markdown]
# **Exercise 5.2.** In the first run (`deltas`), which layer type needs the highest rank, on average over its 4
# layers, to hold 90 % of ||ΔW||²? Use `rank_for_energy(w, 0.9)` on the matrices of `deltas` whose name ends in
# each type.

# %%
### BEGIN SOLUTION
answer_highest_rank_type = max(LINEAR_NAMES, key=lambda t: sum(rank_for_energy(w, 0.9) for n, w in deltas.items()
                                                              if n.endswith("." + t)))
### END SOLUTION
exercise("5.2 type needing the highest rank", answer_highest_rank_type,
         expected=max(LINEAR_NAMES, key=lambda t: r90[t][0]), choices=LINEAR_NAMES,
         hint="the first entry of each r90[type] list is the first run's average")

# %% [markdown]
# **Question 5.3.** Redo the first run of 5.3 with 10 training steps instead of 30 (copy the cell). Predict first:
# is the early update more or less low-rank than the later one? Why?
#
# ### BEGIN SOLUTION
# More low-rank. The first steps all push in nearly the same direction (the largest, most consistent error
# signal of the new data: here, "stop predicting the pretraining world's tokens"), so ΔW is close to a sum of
# a few rank-1 gradient steps. Later steps fit finer detail in more directions and the spectrum's tail fills
# in. In numbers: the top-8 share after 10 steps is higher than after 30.
# ### END SOLUTION

# %%
from course_utils.checks import summary

summary()

# %% [markdown]
# **Summary.** LoRA writes the update as ΔW = BA: r·(d + k) numbers instead of d·k (62.5× fewer for a
# 1000 × 1000 matrix at r = 8). A low-rank ΔW still changes every weight. A real, unconstrained fine-tune of the
# course model puts most of its ||ΔW||² into the top 8 directions, on every data order we tried, so a rank-8 LoRA
# loses little, and `LoRALinear` starts exactly at W0. Next (06): why B starts at zero, and which layers to adapt.
