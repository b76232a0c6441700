# %% [markdown]
# # 04 · Intrinsic dimension: how many directions does a fine-tune need?
#
# Runtime: ~30 s on a 2-core laptop, no GPU.
#
# The seed's claim (section 4): *many downstream tasks live in a much lower-dimensional subspace than the full
# parameter space*. This chapter measures it on the course model, the way the papers did:
# - Li et al. (2018) train a network only inside a **random d-dimensional subspace** of its D parameters and
#   call the smallest d that reaches 90 % of full training's result its intrinsic dimension, **d90**;
# - Aghajanyan et al. (2021) found that *pretrained* language models have tiny d90s (about 200 parameters for
#   RoBERTa on MRPC), and that longer pretraining lowers d90.
#
# We reproduce both in miniature: the pretrained course model against a randomly initialised copy of the
# same architecture, on one classification task.

# %% [markdown]
# ## 4.0 Versions

# %%
import importlib.metadata as md
import platform

import matplotlib.pyplot as plt
import torch

print("python", platform.python_version(), "| torch", md.version("torch"))

# %% [markdown]
# ## 4.1 Training inside a random subspace
# Write the parameters as θ = θ0 + P θ_d: θ0 the starting weights (frozen), P a fixed random D × d matrix with
# unit-norm columns, and θ_d, d numbers starting at 0, the only thing that trains. Every step moves all D
# weights, but only along the d directions P's columns point in.
#
# **Predict:** the course model has about a million parameters. How much memory would a dense float32 P take
# for d = 1,000?

# %%
from course_utils.intrinsic import RandomSubspace, dense_projection_bytes
from course_utils.models import load_course_model, tiny_llama

model, tok = load_course_model()
D = sum(p.numel() for p in model.parameters())
print(f"D = {D:,} parameters; a dense P for d = 1,000 takes {dense_projection_bytes(D, 1000) / 2**30:.1f} GiB")

# %% [markdown]
# Too much for a laptop, and this is a tiny model. `RandomSubspace` uses the sparsest random projection
# instead: each parameter is tied to *one* of the d coordinates, with a random sign, and coordinate j's column
# is ±1/sqrt(n_j) on its n_j ≈ D/d parameters. That costs one index and one number per parameter, whatever d is.
# Li et al. tried dense, sparse and structured (Fastfood) projections and found the choice barely matters.
# The real model runs unchanged through `torch.func.functional_call`, with θ0 + Pθ_d as its weights.

# %%
sub = RandomSubspace(model, d=3, seed=0)
cols = torch.stack([sub.projection_column(j) for j in range(3)]).double()  # float64: exact sums over 1M entries
print(sub.extra_repr())
print("column norms:", cols.norm(dim=1).round(decimals=6).tolist(), "| P^T P =", (cols @ cols.T).round(decimals=6).tolist())

# %%
assert torch.allclose(cols @ cols.T, torch.eye(3, dtype=torch.float64), atol=1e-9), "unit-norm, orthogonal columns, as Li et al. require"
ids = tok(["review: the soup was tasty. sentiment:"], return_tensors="pt").input_ids
assert torch.equal(sub(input_ids=ids).logits, model(input_ids=ids).logits), "at theta_d = 0 the subspace IS the model"

# %% [markdown]
# ## 4.2 The task: sentiment, read off the next token
# Each review ends in `sentiment:`; the class scores are the model's logits for ` positive` and ` negative`
# as the next token (`training.choice_accuracy`, on the 200 held-out reviews). Training minimises the
# cross-entropy over those two scores only: the pretrained model never saw the word "positive", and learning to
# *spell* the labels would be a format cost that has nothing to do with telling the classes apart.

# %%
from course_utils import data
from course_utils.intrinsic import ChoiceTask
from course_utils.training import choice_accuracy

train_rows, test_rows = data.load("sentiment_train"), data.load("sentiment_test")
train_task = ChoiceTask(tok, [r["prompt"] for r in train_rows], [r["label"] for r in train_rows])
test_task = ChoiceTask(tok, [r["prompt"] for r in test_rows], [r["label"] for r in test_rows])
random_model = tiny_llama(seed=0)
base = {"pretrained": test_task.accuracy(model), "random init": test_task.accuracy(random_model)}
print(test_rows[0]["prompt"], "->", test_rows[0]["label"])
print("accuracy before training:", {k: round(v, 3) for k, v in base.items()})

# %%
same = choice_accuracy(model, tok, [r["prompt"] for r in test_rows], [r["label"] for r in test_rows])
assert abs(same - base["pretrained"]) < 1e-9, "ChoiceTask scores exactly like training.choice_accuracy"
assert all(0.4 <= b <= 0.6 for b in base.values()), "both start at chance: neither has been told what the labels mean"

# %% [markdown]
# ## 4.3 The 100 % line: full fine-tuning
# Fine-tune every parameter of each model (Adam, lr 1e-3, batches of 16). The randomly initialised model gets
# 80 steps instead of 30: it first sits on a plateau (the loss curve below shows it), and every one of its
# subspace runs gets the same 80 steps. That only helps the random model, so any gap we find is conservative.

# %%
import copy

from course_utils.intrinsic import train_choice

STEPS = {"pretrained": 30, "random init": 80}
LR_FULL, BATCH = 1e-3, 16
start = {"pretrained": model, "random init": random_model}
full, full_losses = {}, {}
for name, m in start.items():
    tuned = copy.deepcopy(m).requires_grad_(True)
    full_losses[name] = train_choice(tuned, train_task, STEPS[name], LR_FULL, BATCH, seed=0)
    full[name] = test_task.accuracy(tuned)
print("full fine-tuning accuracy:", {k: round(v, 3) for k, v in full.items()})

# %%
from course_utils.plots import plot_loss_curves

plot_loss_curves(full_losses, title="Full fine-tuning on sentiment", ylabel="2-way cross-entropy (nats)")
plt.show()
assert min(full.values()) >= 0.95, "with every parameter free, both models learn the task"

# %% [markdown]
# **Why normalise.** Li et al. report the *fraction* of full training's result. Here we take the fraction of
# the *gain* full fine-tuning makes over the untrained model: fraction = (acc − acc_base) / (acc_full − acc_base).
# Raw accuracy would credit 50 % for doing nothing (chance on two classes); the gain fraction puts "no change" at
# 0 and "as good as full fine-tuning" at 1 for both models, so their curves are comparable.

# %% [markdown]
# ## 4.4 The sweep
# For each d on a log grid: a fresh random subspace, the same batches, the same number of steps. Adam's step
# moves each θ_d coordinate by about the learning rate, and each coordinate drives ~D/d weights by 1/sqrt(D/d)
# of that; so we use lr = 1e-3 · sqrt(D/d), which moves every weight about as far per step as full fine-tuning
# does. (The random model's smallest d values are skipped to save time: its curve is flat there.)
#
# **Predict:** which model reaches 90 % of its full fine-tune with fewer dimensions, and by roughly what factor?

# %%
from course_utils.training import progress_bar

from course_utils.intrinsic import fraction_of_full

GRID = {"pretrained": [1, 4, 16, 64, 256], "random init": [16, 64, 256, 1024, 4096]}
fractions = {}
for name, m in start.items():
    fractions[name] = []
    for d in progress_bar(GRID[name], desc=name):
        sub = RandomSubspace(m, d, seed=0)
        train_choice(sub, train_task, STEPS[name], LR_FULL * (D / d) ** 0.5, BATCH, seed=0)
        fractions[name].append(fraction_of_full(test_task.accuracy(sub), base[name], full[name]))
for name in start:
    print(f"{name:12}", "  ".join(f"d={d}: {f:.2f}" for d, f in zip(GRID[name], fractions[name])))

# %% [markdown]
# ## 4.5 Reading off d90

# %%
from course_utils.intrinsic import intrinsic_dimension
from course_utils.plots import plot_intrinsic_curves

d90 = {name: intrinsic_dimension(GRID[name], fractions[name], 0.9) for name in start}
plot_intrinsic_curves({n: (GRID[n], fractions[n]) for n in start}, marks=d90,
                      title="Sentiment in a random subspace: pretrained vs random init")
plt.show()
print("d90:", d90)

# %%
for name in start:
    below = [f for d, f in zip(GRID[name], fractions[name]) if d < d90[name]]
    assert fractions[name][GRID[name].index(d90[name])] >= 0.9 and all(f < 0.9 for f in below), \
        "d90 is the first d on the grid whose run reaches 90% of the full fine-tune's gain"
ratio = d90["random init"] / d90["pretrained"]
print(f"the random model needs {ratio:.0f}x more dimensions; pretrained d90 = {d90['pretrained']} numbers "
      f"= {d90['pretrained'] / D:.6%} of D")
assert ratio >= 16, "pretraining is what makes the task low-dimensional"

# %% [markdown]
# The pretrained model reaches 90 % of its full fine-tune by training a handful of numbers (the cell above
# printed how many), while the same architecture from random initialisation needs far more, even with more
# steps. That is Aghajanyan et al.'s result in miniature: pretraining builds features (the pretraining stories
# pair "tasty" with "smiled" and "happy", "bitter" with "frowned" and "sad"), and fine-tuning only has to point
# the output at them.
#
# Two caveats you can see above. A random subspace is random: at very small d a run succeeds or fails
# depending on whether P happens to contain a useful direction, so single points are noisy (exercise 1). And the
# random-init runs are erratic near their plateau. The *gap* between the two models is the robust result.
#
# **Why this matters for LoRA.** If a fine-tune lives in a few directions, we do not need to store or train a
# full ΔW. A random subspace is a wasteful way to exploit that (it still touches every weight, and must be
# regenerated); LoRA's low-rank ΔW = BA is a structured, cheap one. Chapter 05 checks that a real ΔW is
# low-rank.

# %% [markdown]
# ## 4.6 Exercises
# 1. Rerun the pretrained sweep with `RandomSubspace(m, d, seed=1)`. Does d90 move? Within what range?
# 2. How many GiB would a dense float32 P take for Llama-2-7B (D = 6.74e9) at d = 1,000? Check with
#    `check_value("dense P GiB", your_answer, dense_projection_bytes(6.74e9, 1000) / 2**30, rtol=0.01)`.
# 3. Restrict the subspace to the linear layers only:
#    `RandomSubspace(m, d, include=lambda name, p: p.dim() == 2 and "embed" not in name)`. Does the pretrained
#    d90 change?

# %%
from course_utils.checks import check_value

# Exercise 2, solved: D x d float32 numbers, about 25,000 GiB (24.5 TiB)
_ = check_value("dense P GiB", dense_projection_bytes(int(6.74e9), 1000) / 2**30, 25_108, rtol=0.01)

# %% [markdown]
# **Summary.** Training only d random directions of the course model's ~1.07M parameters, the pretrained model
# reaches 90 % of its full fine-tune with a handful of trainable numbers; the randomly initialised copy needs
# many times more (the ratio printed in 4.5), even with more steps. Fine-tuning a pretrained model is a low-dimensional problem, which is why a low-rank update
# can work. Next (05): LoRA, W = W0 + BA.
