# %% [markdown]
# # 06 · Initialization and placement: why B = 0, and where LoRA goes
#
# Runtime: about 30 s on a 2-core laptop, no GPU.
#
# Three details decide whether a LoRA fine-tune starts well and learns enough:
# - **initialisation**: A random, **B = 0**, so ΔW = BA = 0 at step 0, and what goes wrong otherwise;
# - **scaling**: the update is multiplied by alpha / r (or alpha / sqrt(r) with rsLoRA), which changes how big
#   the update is when you change r;
# - **placement**: which linear layers get adapters (Q, K, V, O, the MLP, embeddings), what each costs in
#   trainable parameters, and which learns more: the QLoRA paper's first finding, measured.
#
# Every training outcome here is measured on three seeds (the random A, and the order of the data), and only
# what holds on all three is asserted.

# %% [markdown]
# ## 6.0 Versions

# %%
import copy
import importlib.metadata as md
import platform

import matplotlib.pyplot as plt
import torch

torch.set_num_threads(1)  # the course model's ops are tiny: one thread is as fast, and never stalls on a busy machine
print("python", platform.python_version(), "| torch", md.version("torch"))

# %% [markdown]
# ## 6.1 Why B = 0
# Two recipes for A are in use. The LoRA paper (Hu et al. 2021) draws A from a **Gaussian**; PEFT, and
# `course_utils.lora` with it, draws A from a **Kaiming-uniform** distribution, U(±1/sqrt(in_features)).
# Both set **B = 0**.
#
# **Predict:** after `add_lora` on every linear layer, are the model's logits *exactly* equal to the base
# model's, or only close?

# %%
from course_utils.checks import exercise, predict, reveal

### BEGIN SOLUTION
guess_logits_at_step_0 = "exactly equal"  # B = 0 makes every adapter's output exactly 0
### END SOLUTION
predict("adapted logits at step 0", guess_logits_at_step_0, choices=["exactly equal", "only close"])

# %%
from course_utils import data
from course_utils.lora import add_lora
from course_utils.models import load_course_model
from course_utils.training import encode_texts

base, tok = load_course_model()
batch = encode_texts(tok, data.texts("near_test")[:16])
with torch.no_grad():
    base_logits = base(**batch).logits
adapted = {}
for init, label in [("default", "Kaiming-uniform A (PEFT)"), ("gaussian", "Gaussian A (Hu et al.)")]:
    torch.manual_seed(0)  # A is random: fix it so the numbers below repeat
    adapted[label] = add_lora(copy.deepcopy(base), "all-linear", r=8, alpha=16, init=init)
    with torch.no_grad():
        same = torch.equal(adapted[label](**batch).logits, base_logits)
    print(f"{label:<25} logits identical to the base model: {same}")

# %%
all_equal = all(torch.equal(m(**batch).logits, base_logits) for m in adapted.values())
reveal("adapted logits at step 0", "exactly equal" if all_equal else "only close",
       why="B = 0 makes B(Ax) exactly 0 for any A, so not a single bit of the output changes.")
assert all_equal, "B = 0 makes every adapter's output B(Ax) exactly 0: the adapted model IS the base model"

# %% [markdown]
# Training therefore starts from everything the base model knows, whichever A you draw. A second consequence:
# the first gradient reaches only B. The gradient of A is scaling · Bᵀ · (gradient of the output) · xᵀ, and B
# is zero.
#
# **Predict:** after one backward pass, which of A and B has a non-zero gradient?

# %%
### BEGIN SOLUTION
guess_first_gradient = "B only"
### END SOLUTION
predict("first non-zero gradient", guess_first_gradient, choices=["A only", "B only", "both"])

# %%
grads = {}
for label, m in adapted.items():
    m.train()
    m(**batch).loss.backward()
    q0 = m.model.layers[0].self_attn.q_proj
    grads[label] = (q0.A.grad.norm().item(), q0.B.grad.norm().item())
    print(f"{label:<25} |grad A| = {grads[label][0]:.3f}   |grad B| = {grads[label][1]:.3f}   "
          f"(std of A: {q0.A.std().item():.3f})")

# %%
a_moves, b_moves = (any(g[i] > 0 for g in grads.values()) for i in (0, 1))
reveal("first non-zero gradient", {(False, True): "B only", (True, False): "A only"}.get((a_moves, b_moves), "both"),
       why="dL/dA carries a factor B, which is 0 at step 0.")
assert not a_moves and b_moves, "with either A, the first step moves only B"

# %% [markdown]
# So the first step moves B along directions set by the random A; from the second step on both train. The two
# recipes for A play the same role: a random, full-rank start for A, and B = 0. (A cannot be zero too: with
# A = B = 0 both gradients are zero and nothing would ever train.) Only their scales differ (the std of A is
# printed above; `init="gaussian"` follows PEFT's Gaussian option, std 1/r), so the first updates differ in
# size, not in kind. Section 6.2 trains both.

# %% [markdown]
# ## 6.2 What a non-zero B does
# `init="nonzero_B"` (a demo option) initialises B like A, as a naive "random init everything" would.
#
# **Predict:** the loss on held-out pretraining text (new lines from the generator that wrote the pretraining
# corpus, as in chapter 01, section 1.5) is close to the base model's pretraining loss. What is it with a
# random B, before any training?

# %%
### BEGIN SOLUTION
guess_loss_random_B = 3.0  # every layer gets a random extra matrix: the model is damaged, not destroyed
### END SOLUTION
predict("held-out pretraining loss with a random B", guess_loss_random_B)

# %%
from course_utils.training import eval_loss, generate

held_out = encode_texts(tok, data.held_out_pretrain_texts(64))  # new lines from the pretraining generator
SEEDS = [0, 1, 2]
noisy_loss = []
for seed in SEEDS:
    torch.manual_seed(seed)
    noisy = add_lora(copy.deepcopy(base), "all-linear", r=8, alpha=16, init="nonzero_B")
    noisy_loss.append(eval_loss(noisy, held_out))
loss_base = eval_loss(base, held_out)
print(f"held-out pretraining loss: base {loss_base:.3f}; random B, {len(SEEDS)} draws: "
      + ", ".join(f"{v:.3f}" for v in noisy_loss))
for name, m in [("base", base), ("random B", noisy)]:
    print(f"{name:>8}: {generate(m, tok, 'q: what color is the sky? a:', 4)!r}")

# %%
reveal("held-out pretraining loss with a random B", sum(noisy_loss) / len(noisy_loss), rtol=0.3,
       why="B·A adds a random matrix to every linear layer, of the same order as the layer's own weights.")
assert all(v > loss_base + 1 for v in noisy_loss), "a random BA damages the model before it learns anything"

# %% [markdown]
# **Predict:** fine-tune with the same data, steps and learning rate: B = 0 (either A) against a random B. Which
# one still knows its pretraining text afterwards?

# %%
### BEGIN SOLUTION
guess_keeps_pretraining = "B = 0"
### END SOLUTION
predict("keeps more of its pretraining", guess_keeps_pretraining, choices=["B = 0", "random B", "the same"])

# %%
from course_utils.plots import plot_loss_curves, text_table
from course_utils.training import batches_from_examples, progress_bar, train

INITS = {"B = 0, Kaiming-uniform A": "default", "B = 0, Gaussian A": "gaussian", "random B": "nonzero_B"}
near, near_test = data.texts("near_train"), encode_texts(tok, data.texts("near_test", 50))
letters = lambda seed: batches_from_examples(lambda rows: encode_texts(tok, rows), near, 16, seed=seed)  # noqa: E731
curves, after = {}, {label: [] for label in INITS}
for seed in progress_bar(SEEDS, desc="3 inits x 3 seeds"):
    for label, init in INITS.items():
        torch.manual_seed(seed)
        m = add_lora(copy.deepcopy(base), "all-linear", r=8, alpha=16, init=init)
        losses = train(m, letters(seed), 10, lr=5e-3, progress=False, seed=seed).losses
        curves.setdefault(label, losses)  # the first seed's curve, for the plot
        after[label].append((eval_loss(m, near_test), eval_loss(m, held_out)))
plot_loss_curves(curves, title="LoRA on the near domain: B = 0 vs random B (seed 0)")
plt.show()
span = lambda vals: f"{min(vals):.3f} - {max(vals):.3f}"  # noqa: E731
print(text_table([[label, span([v[0] for v in runs]), span([v[1] for v in runs])] for label, runs in after.items()],
                 ["init", f"held-out letter loss, 3 seeds (base: {eval_loss(base, near_test):.3f})",
                  f"held-out pretraining loss, 3 seeds (base: {loss_base:.3f})"]))

# %%
pre = {label: [v[1] for v in runs] for label, runs in after.items()}
keeps = "B = 0" if all(max(pre[k]) < min(pre["random B"]) for k in list(INITS)[:2]) else "the same"
reveal("keeps more of its pretraining", keeps,
       why="Nothing in the letters pulls the random B·A back out; with B = 0 every change is one the data asked for.")
assert keeps == "B = 0", "on every seed, both B = 0 runs forget less than every random-B run"
assert all(max(after[k][i][1] for k in list(INITS)[:2]) + 1 < after["random B"][i][1] for i in range(len(SEEDS)))
assert all(v[0] < eval_loss(base, near_test) / 2 for runs in after.values() for v in runs), "all of them learn letters"

# %% [markdown]
# All three learn the letters (their held-out letter loss falls far below the base model's, 3 seeds each in the
# table above). The difference is what is *left* of the base model: the random-B
# runs forgot far more of their pretraining text on every seed, because nothing in the letters data pulls the
# noise back out. B = 0 means every change to the model is one the fine-tuning data asked for. The two A
# recipes behave alike where it matters, both far from the random B; they differ a little in how fast they fit
# the letters, because their A's differ in scale (printed in 6.1). Even with B = 0 the pretraining loss rose
# above the base model's: fine-tuning at this learning rate forgets some, as chapter 01 measured for full
# fine-tuning.

# %%
assert all(min(pre[k]) > loss_base for k in INITS), "every run forgets some of the pretraining text"

# %% [markdown]
# ## 6.3 Scaling: alpha / r versus rsLoRA's alpha / sqrt(r)
# The adapter's output is multiplied by `scaling`: alpha / r in the LoRA paper and PEFT's default, alpha / sqrt(r)
# with rsLoRA (`use_rslora=True`). Adam's first step moves every entry of B by ±lr (it divides each gradient by
# its own size), whatever r is and whatever the scaling is; and BA sums r such terms, so ||BA|| grows like sqrt(r).
#
# **Predict:** keep alpha = 8 and raise r from 1 to 128. By what factor does the size of the first update
# ||scaling · BA||_F change under alpha / r? (Smaller than 1 means it shrinks.)

# %%
### BEGIN SOLUTION
guess_alpha_r_factor = 128**0.5 / 128  # ||BA|| grows like sqrt(r), the scaling shrinks like 1/r
### END SOLUTION
predict("first update, r = 1 -> 128, alpha / r (factor)", guess_alpha_r_factor)

# %% [markdown]
# Because Adam's first step ignores the scaling, one run per rank gives B·A, and each rule only multiplies it
# by its own scaling. We check that once directly, then use it for three rules and three seeds:

# %%
from course_utils.lora import lora_layers

RANKS = [1, 2, 4, 8, 16, 32, 64, 128]
first_batch = next(letters(0))


def first_update_norm(r, alpha, seed, use_rslora=False):
    """Mean ||scaling · B A||_F over the q, v adapters after one Adam step (lr 1e-3)."""
    torch.manual_seed(seed)
    m = add_lora(copy.deepcopy(base), ["q_proj", "v_proj"], r=r, alpha=alpha, use_rslora=use_rslora)
    train(m, iter([first_batch]), steps=1, lr=1e-3, clip=None, progress=False)
    norms = [layer.delta_weight().norm().item() for _, layer in lora_layers(m)]
    return sum(norms) / len(norms)


direct = {"alpha/r": first_update_norm(16, 8, 0), "rsLoRA": first_update_norm(16, 8, 0, use_rslora=True),
          "alpha = 2r": first_update_norm(16, 32, 0), "scaling 1": first_update_norm(16, 16, 0)}
print({k: round(v, 5) for k, v in direct.items()})
for rule, scaling in [("alpha/r", 8 / 16), ("rsLoRA", 8 / 16**0.5), ("alpha = 2r", 2.0)]:
    assert abs(direct[rule] / (scaling * direct["scaling 1"]) - 1) < 1e-3, "the rule only multiplies B A"

# %%
RULES = {"alpha / r (alpha = 8)": lambda r: 8 / r, "alpha / sqrt(r) (rsLoRA, alpha = 8)": lambda r: 8 / r**0.5,
         "alpha = 2r (scaling 2)": lambda r: 2.0}
update = {rule: {seed: [] for seed in SEEDS} for rule in RULES}
for seed in progress_bar(SEEDS, desc="first steps"):
    for r in RANKS:
        ba = first_update_norm(r, r, seed)  # alpha = r: scaling 1, so this is ||B A||
        for rule, scaling in RULES.items():
            update[rule][seed].append(scaling(r) * ba)
for rule, by_seed in update.items():
    print(f"{rule:36}", " ".join(f"r={r}: {by_seed[0][i]:.4f}" for i, r in enumerate(RANKS)))

# %%
from course_utils.plots import plot_lines

mean_update = {rule: [sum(by_seed[s][i] for s in SEEDS) / len(SEEDS) for i in range(len(RANKS))]
               for rule, by_seed in update.items()}
plot_lines(RANKS, mean_update, title="Size of the first LoRA update vs rank (mean of 3 seeds)",
           xlabel="rank r (log scale)", ylabel="mean ||scaling * B A||_F after 1 step", logx=True, logy=True)
plt.show()

# %%
growth = {rule: [by_seed[s][-1] / by_seed[s][0] for s in SEEDS] for rule, by_seed in update.items()}
print(text_table([[rule, " ".join(f"{g:.2f}" for g in gs)] for rule, gs in growth.items()],
                 ["rule", "update at r=128 / at r=1, 3 seeds"]))
print(f"sqrt(128) = {128 ** 0.5:.1f}, 1 / sqrt(128) = {128 ** -0.5:.3f}")
plain, rs, two_r = growth.values()
reveal("first update, r = 1 -> 128, alpha / r (factor)", sum(plain) / len(plain), rtol=0.5,
       why="B A grows like sqrt(r) (a sum of r random terms) while alpha / r shrinks like 1/r: net 1/sqrt(r).")

# %%
assert all(g < 1 / 5 for g in plain), "alpha/r shrinks the first update roughly like 1/sqrt(r), on every seed"
assert all(0.67 < g < 1.5 for g in rs), "alpha/sqrt(r) cancels the sqrt(r) growth of B A, on every seed"
assert all(g > 5 for g in two_r), "alpha = 2r keeps the scaling fixed, so the update grows like sqrt(r)"

# %% [markdown]
# With alpha / r, a larger rank means a *smaller* first step unless you raise alpha with it. The common
# "alpha = 2r" recipe raises alpha in proportion to r, which keeps the scaling fixed, so its first step *grows*
# like sqrt(r) (the last row above, on every seed): measured by the size of the first step it over-corrects, and
# alpha ∝ sqrt(r), which is what rsLoRA does, is the rule that keeps it constant. Whether the first step's size
# is what matters over a whole training run is a question for a rank and alpha sweep.

# %% [markdown]
# ## 6.4 Where LoRA can go, and what it costs
# A common rule of thumb: Q and V almost always; K and O often; the MLP yes; embeddings usually not. In
# parameters, at the same r = 8:

# %%
from course_utils.lora import count_parameters

cfg = base.config
CHOICES = {"q, v": ["q_proj", "v_proj"], "q, k, v, o": ["q_proj", "k_proj", "v_proj", "o_proj"],
           "MLP (gate, up, down)": ["gate_proj", "up_proj", "down_proj"], "all linear": "all-linear"}
counts = {name: count_parameters(add_lora(copy.deepcopy(base), t, r=8, alpha=16))[0] for name, t in CHOICES.items()}
counts["embeddings (input table)"] = 8 * (cfg.vocab_size + cfg.hidden_size)  # A: r x vocab, B: hidden x r
total = count_parameters(base)[1]
rows = [[name, f"{n:,}", f"{100 * n / total:.2f}%"] for name, n in counts.items()]
print(text_table(rows, ["LoRA on (r = 8)", "trainable", "% of model"]))

# %%
assert counts["all linear"] == sum(counts[k] for k in ["q, k, v, o", "MLP (gate, up, down)"])
assert counts["all linear"] < 0.1 * total, "even LoRA on every linear layer trains under 10% of this tiny model"
assert counts["MLP (gate, up, down)"] > counts["q, k, v, o"], "the MLP's wider matrices hold most adapter parameters"

# %% [markdown]
# `course_utils.lora` wraps linear layers only, so the embedding row is computed from the shapes
# (PEFT can put LoRA on an `nn.Embedding`). "all-linear" leaves out `lm_head`, as PEFT does. The MLP holds most
# of the adapter parameters because its matrices are wider (the MLP width is printed in chapter 00).

# %% [markdown]
# ## 6.5 q, v only, or all linear layers?
# The LoRA paper adapted only W_q and W_v. The QLoRA paper (finding 1) reports that LoRA on query/value only
# does not match full fine-tuning, and that LoRA on *all* linear layers is required. Three runs on the near
# domain, same steps (15), data and learning rate: q, v at r = 8; all linear at r = 8; and q, v with the rank raised
# until it trains as many parameters as all-linear at r = 8 (so "more parameters" cannot be the explanation).
# Each on three seeds.
#
# **Predict:** which one ends with the lowest held-out loss?

# %%
r_match = round(counts["all linear"] / (counts["q, v"] / 8))  # q,v parameters grow linearly in r
RUNS = {"q, v (r=8)": (["q_proj", "v_proj"], 8), "all linear (r=8)": ("all-linear", 8),
        f"q, v (r={r_match})": (["q_proj", "v_proj"], r_match)}
### BEGIN SOLUTION
guess_best_placement = "all linear (r=8)"
### END SOLUTION
predict("lowest held-out loss", guess_best_placement, choices=list(RUNS))

# %%
results, losses, n_train = {name: [] for name in RUNS}, {}, {}
for seed in progress_bar(SEEDS, desc="3 placements x 3 seeds"):
    for name, (targets, r) in RUNS.items():
        torch.manual_seed(seed)
        m = add_lora(copy.deepcopy(base), targets, r=r, alpha=2 * r)
        n_train[name] = count_parameters(m)[0]
        curve = train(m, letters(seed), 15, lr=5e-3, progress=False, seed=seed).losses
        losses.setdefault(name, curve)
        results[name].append(eval_loss(m, near_test))
print(text_table([[k, f"{n_train[k]:,}", " ".join(f"{v:.3f}" for v in vals), span(vals)] for k, vals in results.items()],
                 ["adapters", "trainable", "held-out loss, 3 seeds", "min - max"]))
print(f"base model held-out loss: {eval_loss(base, near_test):.3f}")

# %%
plot_loss_curves(losses, title="LoRA placement on the near domain (seed 0)", smooth=5)
plt.show()

# %%
qv, allin, qv_big = results.values()
wins = [min(RUNS, key=lambda k: results[k][i]) for i in range(len(SEEDS))]
reveal("lowest held-out loss", max(set(wins), key=wins.count),
       why="Adapters on the MLP can change what each layer computes, not only where attention looks.")
assert all(a < q and a < b for a, q, b in zip(allin, qv, qv_big)), \
    "on every seed, adapting every linear layer learns more, even against q,v with as many parameters"

# %% [markdown]
# All-linear learns the most on every seed (the table above), and raising the q, v rank to the same parameter
# count closes only part of the gap: *where* the adapters sit matters more than how many parameters they have.
# This is the QLoRA paper's finding 1 in miniature, and why its recipe (and PEFT's `target_modules="all-linear"`)
# puts LoRA on every linear layer of the transformer blocks.

# %% [markdown]
# ## 6.6 Exercises
# **Exercise 6.1.** In 6.3 (plain alpha / r), by what factor must alpha grow at r = 64 to take the same first
# step as r = 8? Predict it from the sqrt(r) argument; the check compares with the measured ratio.

# %%
### BEGIN SOLUTION
answer_alpha_factor = (64 / 8) ** 0.5
### END SOLUTION
by_seed = update["alpha / r (alpha = 8)"]
measured_factor = sum(by_seed[s][RANKS.index(8)] / by_seed[s][RANKS.index(64)] for s in SEEDS) / len(SEEDS)
exercise("6.1 alpha factor, r = 8 -> 64", answer_alpha_factor, expected=measured_factor, rtol=0.15,
         hint="the first update scales like sqrt(r) / r")
print(f"measured: {measured_factor:.2f}")

# %% [markdown]
# **Exercise 6.2.** Count the LoRA parameters for Llama-2-7B (32 layers, hidden 4096, MLP 11008) with r = 16 on
# q and v only, and on all linear layers (q, k, v, o: 4096 × 4096; gate, up: 11008 × 4096; down: 4096 × 11008).
# `course_utils.memory.lora_param_count` takes a list of (out, in) shapes.

# %%
from course_utils.memory import lora_param_count

### BEGIN SOLUTION
answer_qv_7b = 32 * 2 * 16 * (4096 + 4096)
answer_all_linear_7b = 32 * 16 * (4 * (4096 + 4096) + 3 * (4096 + 11008))
### END SOLUTION
shapes_7b = {"q": (4096, 4096), "k": (4096, 4096), "v": (4096, 4096), "o": (4096, 4096),
             "gate": (11008, 4096), "up": (11008, 4096), "down": (4096, 11008)}
exercise("6.2a 7B LoRA r=16 on q, v", answer_qv_7b,
         expected=lora_param_count([shapes_7b[k] for k in "qv"] * 32, r=16), rtol=0, hint="r x (in + out) per matrix")
exercise("6.2b 7B LoRA r=16 on all linear", answer_all_linear_7b,
         expected=lora_param_count(list(shapes_7b.values()) * 32, r=16), rtol=0, hint="7 matrices per layer, 32 layers")
print(f"of 6.74B parameters: q, v {lora_param_count([shapes_7b[k] for k in 'qv'] * 32, r=16) / 6.74e9:.2%}, "
      f"all linear {lora_param_count(list(shapes_7b.values()) * 32, r=16) / 6.74e9:.2%}")

# %% [markdown]
# **Question 6.3.** Why must A be random rather than zero, when B = 0 already makes the start exact?
#
# ### BEGIN SOLUTION
# With A = 0 and B = 0, the gradient of B is scaling · (gradient of the output) · (Ax)ᵀ = 0 and the gradient of A
# carries a factor B = 0: neither ever moves, and the adapter never trains. One of the two must be non-zero to
# break the symmetry; putting the randomness in A and the zero in B gives an exact start *and* a non-zero first
# gradient (for B), as 6.1 measured.
# ### END SOLUTION
#
# **Question 6.4.** Add a fourth run to 6.5 with the MLP only (`["gate_proj", "up_proj", "down_proj"]`, r = 8).
# Predict first: where does it land between q, v and all linear, and why?
#
# ### BEGIN SOLUTION
# Between them, and much closer to all linear than to q, v: the letters ask the model for new content in a new
# template, which the MLP (where most of a transformer's per-token computation and stored knowledge sits) can
# express, while q, v only change which earlier tokens each position reads. The MLP adapters also hold most of
# the all-linear parameters (6.4). Run it on the three seeds before trusting a single number.
# ### END SOLUTION

# %%
from course_utils.checks import summary

summary()

# %% [markdown]
# **Summary.** B = 0 makes the adapted model start exactly at the base model (asserted with `torch.equal`) whether
# A is Gaussian (the LoRA paper) or Kaiming-uniform (PEFT); a random B damages the model before training begins,
# and the damage stays. The first update's size under alpha / r shrinks like 1/sqrt(r), grows like sqrt(r) under
# alpha = 2r, and stays put under rsLoRA's alpha / sqrt(r). LoRA on all linear layers trains a few percent of this
# model and learns more than q, v only, even when q, v gets the same parameter budget, on every seed.
