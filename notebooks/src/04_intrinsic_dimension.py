# %% [markdown]
# # 04 · Intrinsic dimension: how many directions does a fine-tune need?
#
# Runtime: about 40 s on a 2-core laptop, no GPU.
#
# A claim at the heart of LoRA: *many downstream tasks live in a much lower-dimensional subspace than the full
# parameter space*. This chapter measures it on the course model, the way the papers did:
# - Li et al. (2018) train a network only inside a **random d-dimensional subspace** of its D parameters and
#   call the smallest d that reaches 90 % of full training's result its intrinsic dimension, **d90**;
# - Aghajanyan et al. (2021) found that *pretrained* language models have tiny d90s (about 200 parameters for
#   RoBERTa on MRPC), and that longer pretraining lowers d90.
#
# We reproduce both in miniature: the pretrained course model against a randomly initialised copy of the
# same architecture, on one classification task, each on three random subspaces.

# %% [markdown]
# ## 4.0 Versions

# %%
import importlib.metadata as md
import platform

import matplotlib.pyplot as plt
import torch

torch.set_num_threads(1)  # the course model's ops are tiny: one thread is as fast, and never stalls on a busy machine
print("python", platform.python_version(), "| torch", md.version("torch"))

# %% [markdown]
# ## 4.1 Training inside a random subspace
# Write the parameters as θ = θ0 + P θ_d: θ0 the starting weights (frozen), P a fixed random D × d matrix with
# unit-norm columns, and θ_d, d numbers starting at 0, the only thing that trains. Every step moves all D
# weights, but only along the d directions P's columns point in.
#
# **Predict:** the course model has about a million parameters (D, printed below). How many GiB would a dense
# float32 P take for d = 1,000?

# %%
from course_utils.checks import exercise, predict, reveal

### BEGIN SOLUTION
guess_dense_p_gib = 1e6 * 1000 * 4 / 2**30  # D x d numbers, 4 bytes each
### END SOLUTION
predict("dense P for d = 1,000 (GiB)", guess_dense_p_gib)

# %%
from course_utils.intrinsic import RandomSubspace, dense_projection_bytes
from course_utils.models import load_course_model, tiny_llama

model, tok = load_course_model()
D = sum(p.numel() for p in model.parameters())
print(f"D = {D:,} parameters; a dense P for d = 1,000 takes {dense_projection_bytes(D, 1000) / 2**30:.1f} GiB")
reveal("dense P for d = 1,000 (GiB)", dense_projection_bytes(D, 1000) / 2**30, rtol=0.2,
       why="D x d float32 numbers: about a million x 1,000 x 4 bytes.")

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
# as the next token (`training.choice_accuracy`, on the held-out reviews). Training minimises the
# cross-entropy over those two scores only: the pretrained model never saw the word "positive", and learning to
# *spell* the labels would be a format cost that has nothing to do with telling the classes apart.
#
# **Predict:** the accuracy of the pretrained model before any training, and of the randomly initialised one?
# (One number: your guess for both.)

# %%
### BEGIN SOLUTION
guess_accuracy_untrained = 0.5
### END SOLUTION
predict("accuracy before training", guess_accuracy_untrained)

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
print(f"{len(test_rows)} held-out reviews; accuracy before training:", {k: round(v, 3) for k, v in base.items()})

# %%
reveal("accuracy before training", sum(base.values()) / 2, atol=0.1,
       why="Neither model has been told what the labels mean, and half the reviews are positive.")
same = choice_accuracy(model, tok, [r["prompt"] for r in test_rows], [r["label"] for r in test_rows])
assert abs(same - base["pretrained"]) < 1e-9, "ChoiceTask scores exactly like training.choice_accuracy"
assert all(0.4 <= b <= 0.6 for b in base.values()), "both start at chance: neither has been told what the labels mean"

# %% [markdown]
# ## 4.3 The 100 % line: full fine-tuning
# Fine-tune every parameter of each model (Adam, lr 1e-3, batches of 16), with three seeds (the order of the
# batches). The randomly initialised model gets more steps: it first sits on a plateau (the loss curves below
# show it), and every one of its subspace runs gets the same larger number of steps. That only helps the random
# model, so any gap we find is conservative.

# %%
import copy

from course_utils.intrinsic import train_choice
from course_utils.training import progress_bar

STEPS = {"pretrained": 30, "random init": 40}
SEEDS, LR_FULL, BATCH = [0, 1, 2], 1e-3, 16
start = {"pretrained": model, "random init": random_model}
full, full_losses = {name: [] for name in start}, {}
for name, m in start.items():
    for seed in progress_bar(SEEDS, desc=f"full fine-tune, {name}"):
        tuned = copy.deepcopy(m).requires_grad_(True)
        losses = train_choice(tuned, train_task, STEPS[name], LR_FULL, BATCH, seed=seed)
        full_losses.setdefault(name, losses)  # the first seed's curve, for the plot
        full[name].append(test_task.accuracy(tuned))
print("full fine-tuning accuracy, 3 seeds:", {k: [round(v, 3) for v in vals] for k, vals in full.items()})

# %%
from course_utils.plots import plot_loss_curves

plot_loss_curves(full_losses, title="Full fine-tuning on sentiment (seed 0)", ylabel="2-way cross-entropy (nats)")
plt.show()
assert min(min(v) for v in full.values()) >= 0.95, "with every parameter free, both models learn the task, every seed"

# %% [markdown]
# **Why normalise.** Li et al. report the *fraction* of full training's result. Here we take the fraction of
# the *gain* full fine-tuning makes over the untrained model: fraction = (acc − acc_base) / (acc_full − acc_base),
# with the full fine-tune of the same seed. Raw accuracy would credit 50 % for doing nothing (chance on two
# classes); the gain fraction puts "no change" at 0 and "as good as full fine-tuning" at 1 for both models, so
# their curves are comparable.

# %% [markdown]
# ## 4.4 The sweep
# For each d on a log grid and each seed: a fresh random subspace (drawn from that seed), the same batches as that
# seed's full fine-tune, the same number of steps. Adam's step moves each θ_d coordinate by about the learning
# rate, and each coordinate drives ~D/d weights by 1/sqrt(D/d) of that; so we use lr = 1e-3 · sqrt(D/d), which
# moves every weight about as far per step as full fine-tuning does.
#
# Each seed's sweep stops at its first d that reaches 90 %: that d is its d90, and larger ones cost time without
# changing it. The randomly initialised model is tried at d = 64, where we will compare the two models, and at
# 4x that, 256 (below 64 its runs are flat, and each costs more steps); question 4.3 sweeps it further.
#
# **Predict:** the smallest d on the grid (4, 16, 64, 256) at which the pretrained model reaches 90 % of its
# full fine-tune: its d90.

# %%
### BEGIN SOLUTION
guess_d90_pretrained = 64
### END SOLUTION
predict("pretrained d90", guess_d90_pretrained)

# %%
from course_utils.intrinsic import fraction_of_full

GRID = {"pretrained": [4, 16, 64, 256], "random init": [64, 256]}
fractions = {name: {seed: [] for seed in SEEDS} for name in start}
for name, m in start.items():
    for seed in progress_bar(SEEDS, desc=f"subspaces, {name}"):
        for d in GRID[name]:
            sub = RandomSubspace(m, d, seed=seed)
            train_choice(sub, train_task, STEPS[name], LR_FULL * (D / d) ** 0.5, BATCH, seed=seed)
            fractions[name][seed].append(fraction_of_full(test_task.accuracy(sub), base[name], full[name][seed]))
            if fractions[name][seed][-1] >= 0.9:
                break  # this seed's d90 is found
for name in start:
    for seed in SEEDS:
        print(f"{name:12} seed {seed}:", "  ".join(f"d={d}: {f:.2f}" for d, f in zip(GRID[name], fractions[name][seed])))

# %% [markdown]
# ## 4.5 Reading off d90

# %%
from course_utils.intrinsic import intrinsic_dimension
from course_utils.plots import plot_intrinsic_curves

ran = {seed: GRID["pretrained"][:len(fractions["pretrained"][seed])] for seed in SEEDS}  # the d each sweep reached
d90 = {seed: intrinsic_dimension(ran[seed], fractions["pretrained"][seed], 0.9) for seed in SEEDS}
curves = {f"pretrained, seed {s}": (ran[s], fractions["pretrained"][s]) for s in SEEDS}
curves.update({f"random init, seed {s}": (GRID["random init"], fractions["random init"][s]) for s in SEEDS})
ax = plot_intrinsic_curves(curves, marks={f"pretrained, seed {s}": d90[s] for s in SEEDS},
                           title="Sentiment in a random subspace: pretrained vs random init (3 seeds each)")
ax.set_xticks(GRID["pretrained"], labels=[str(d) for d in GRID["pretrained"]])  # the random model's d are on it too
ax.minorticks_off()
plt.show()
print("pretrained d90 per seed:", d90)

# %%
reveal("pretrained d90", sorted(d90.values(), key=lambda v: v or float("inf"))[1], rtol=0.5,
       why="Pretraining already built the features, but a random subspace must also contain a direction that "
           "points the output at them: here that takes a few dozen random directions, not a handful.")
d_same, d_far = GRID["random init"]
random_at = {d: [fractions["random init"][s][i] for s in SEEDS] for i, d in enumerate(GRID["random init"])}
print(f"D = {D:,}: d = {d_same} is {d_same / D:.4%} of the parameters")
for d, fs in random_at.items():
    print(f"random init at d = {d}: {', '.join(f'{f:.2f}' for f in fs)} of its full fine-tune's gain (seeds 0, 1, 2)")
print(f"so on every seed the random model's d90 is above {d_far}, at least "
      + ", ".join(f"{d_far / d90[s]:.0f}x" for s in SEEDS) + " the pretrained d90 of the same seed")

# %%
assert all(d is not None and d <= d_same for d in d90.values()), "the pretrained model reaches 90% by d = 64, every seed"
assert all(f < 0.5 for f in random_at[d_same]), "at the same d, the random model recovers under half its gain, every seed"
assert all(f < 0.9 for f in random_at[d_far]), "even at 4x that d, the random model stays below 90%, every seed"

# %% [markdown]
# The pretrained model reaches 90 % of its full fine-tune by training at most 64 numbers, a few thousandths of a
# percent of D, on every seed (its d90s are printed above). The same architecture from random initialisation,
# with more steps, recovers less than half of its gain at the same d = 64, and is still below 90 % at 256, on
# every seed. That is Aghajanyan et al.'s result in miniature: pretraining builds features (the pretraining
# stories pair "tasty" with "smiled" and "happy", "bitter" with "frowned" and "sad"), and fine-tuning only has
# to point the output at them.
#
# Three caveats you can see above. A random subspace is random: at small d a run succeeds or fails depending on
# whether P happens to contain a useful direction, so the fraction at d = 4 or 16 moves a lot from seed to seed
# (the spread is printed). The grid is coarse (factors of 4), so a d90 of 64 means "above 16, at most 64";
# and d90 is measured at one learning rate (question 4.5 changes it). And the ratio of the two models' d90 is
# only bounded here, not measured: the random model's own d90 lies beyond the grid. The *gap* between the two
# models, at the same d and with the same recipe, is the robust result.
#
# **Why this matters for LoRA.** If a fine-tune lives in a few directions, we do not need to store or train a
# full ΔW. A random subspace is a wasteful way to exploit that (it still touches every weight, and must be
# regenerated); LoRA's low-rank ΔW = BA is a structured, cheap one. Chapter 05 checks that a real ΔW is
# low-rank.

# %% [markdown]
# ## 4.6 Exercises
# **Exercise 4.1.** How many GiB would a dense float32 P take for Llama-2-7B (D = 6.74e9) at d = 1,000?

# %%
### BEGIN SOLUTION
answer_dense_p_7b_gib = 6.74e9 * 1000 * 4 / 2**30
### END SOLUTION
exercise("4.1 dense P for Llama-2-7B, d = 1,000 (GiB)", answer_dense_p_7b_gib,
         expected=dense_projection_bytes(int(6.74e9), 1000) / 2**30, rtol=0.01, hint="D x d x 4 bytes / 1024³")

# %% [markdown]
# **Exercise 4.2.** The sparse P stores one int64 index (8 bytes) and one float32 coefficient (4 bytes) per
# parameter, whatever d is. How many times smaller is that than the dense P of the course model at d = 1,000?

# %%
### BEGIN SOLUTION
answer_sparse_saving = (D * 1000 * 4) / (D * (8 + 4))
### END SOLUTION
sparse_bytes = sum(t.numel() * t.element_size() for t in (sub.group, sub.coef))
exercise("4.2 dense / sparse P at d = 1,000", answer_sparse_saving, expected=dense_projection_bytes(D, 1000) / sparse_bytes,
         rtol=0.01, hint="(D x 1,000 x 4) / (D x 12): D cancels")
print(f"the sparse P of the course model: {sparse_bytes / 2**20:.1f} MiB")

# %% [markdown]
# **Question 4.3.** Sweep the random-init model further: `d` in 1024 and 4096 on the three seeds (copy the loop
# of 4.4 with `GRID["random init"] = [1024, 4096]`). Predict first: where does it reach 90 %? What do you make of
# a run at a larger d that does *worse* than one at a smaller d?
#
# ### BEGIN SOLUTION
# In the thousands at best, and not reliably. When we ran it, one seed reached 90 % at d = 4096 and the other two
# stayed near chance at both 1024 and 4096; one of them did better at 1024 than at 4096. A larger d doing worse is
# noise in the optimisation, not a property of the task: with lr scaled up by sqrt(D/d) and a model that starts
# on a plateau, single runs of the random model are erratic. That is why the chapter compares both models at the
# same d over three seeds instead of quoting one random-init d90.
# ### END SOLUTION
#
# **Question 4.4.** Restrict the subspace to the linear layers only:
# `RandomSubspace(m, d, include=lambda name, p: p.dim() == 2 and "embed" not in name)`. Would you expect the
# pretrained d90 to change? Why?
#
# ### BEGIN SOLUTION
# Little. The task is read off the output logits of two label tokens, which the linear layers of the top
# blocks (and `lm_head`, which has "lm_head" in its name and is kept) can steer on their own; the input
# embeddings are shared by every task and a random direction through them mostly adds noise. Measure it on the
# three seeds: a change smaller than the spread between seeds is no change.
# ### END SOLUTION
#
# **Question 4.5.** 4.4 used lr = 1e-3 · sqrt(D/d) for every subspace run. Rerun the pretrained sweep with twice
# that (`LR_FULL * 2 * (D / d) ** 0.5`), then the random model at d = 64 and 256 with it too. Does the pretrained
# d90 change? Does the gap between the two models?
#
# ### BEGIN SOLUTION
# When we ran it, the pretrained d90 dropped from 64 to 32 or 16, depending on which seed (add 32 to the grid to
# see it), while the random model stayed far below 90 % at both 64 and 256 on every seed. So a d90 is a property
# of the task, the model *and the training recipe*: read off one fixed learning-rate rule it is an upper bound,
# which a better-tuned run can lower. What survives the change of recipe is the comparison: with the same recipe
# for both, the pretrained model needs far fewer directions than the random one.
# ### END SOLUTION

# %%
from course_utils.checks import summary

summary()

# %% [markdown]
# **Summary.** Training only d random directions of the course model's parameters, the pretrained model reaches
# 90 % of its full fine-tune with at most 64 trainable numbers on every seed; the randomly initialised copy
# recovers less than half of its gain at the same d and stays below 90 % at four times that d, even with more
# steps. Fine-tuning a pretrained model is a
# low-dimensional problem, which is why a low-rank update can work. Next (05): LoRA, W = W0 + BA.
