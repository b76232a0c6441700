# %% [markdown]
# # 06 · Initialization and placement: why B = 0, and where LoRA goes
#
# Runtime: ~15 s on a 2-core laptop, no GPU.
#
# Two details decide whether a LoRA fine-tune starts well and learns enough (seed sections 7 and 8):
# - **initialisation**: A random, **B = 0**, so ΔW = BA = 0 at step 0 — and what goes wrong otherwise;
# - **scaling**: the update is multiplied by alpha / r (or alpha / sqrt(r) with rsLoRA), which changes how big
#   the update is when you change r;
# - **placement**: which linear layers get adapters (Q, K, V, O, the MLP, embeddings), what each costs in
#   trainable parameters, and which learns more — the QLoRA paper's first finding, measured.

# %% [markdown]
# ## 6.0 Versions

# %%
import copy
import importlib.metadata as md
import platform

import matplotlib.pyplot as plt
import torch

print("python", platform.python_version(), "| torch", md.version("torch"))

# %% [markdown]
# ## 6.1 Why B = 0
# PEFT (and `course_utils.lora`) initialise A uniformly in ±1/sqrt(in_features) and B to zeros.
#
# **Predict:** after `add_lora` on every linear layer, are the model's logits *exactly* equal to the base
# model's, or only close?

# %%
from course_utils import data
from course_utils.lora import add_lora
from course_utils.models import load_course_model
from course_utils.training import encode_texts

base, tok = load_course_model()
torch.manual_seed(0)  # A is random: fix it so the numbers below repeat
adapted = add_lora(copy.deepcopy(base), "all-linear", r=8, alpha=16)
batch = encode_texts(tok, data.texts("near_test")[:16])
with torch.no_grad():
    same = torch.equal(adapted(**batch).logits, base(**batch).logits)
print("logits identical to the base model:", same)

# %%
assert same, "B = 0 makes every adapter's output B(Ax) exactly 0, so the adapted model IS the base model at step 0"

# %% [markdown]
# Training therefore starts from everything the base model knows. A second consequence: the first gradient
# reaches only B. The gradient of A is scaling · Bᵀ · (gradient of the output) · xᵀ, and B is zero.
#
# **Predict:** after one backward pass, which of A and B has a non-zero gradient?

# %%
adapted.train()
adapted(**batch).loss.backward()
q0 = adapted.model.layers[0].self_attn.q_proj
print(f"|grad A| = {q0.A.grad.norm():.3g}   |grad B| = {q0.B.grad.norm():.3g}")
assert torch.count_nonzero(q0.A.grad) == 0 and q0.B.grad.norm() > 0, "dL/dA carries a factor B, which is 0 at step 0"

# %% [markdown]
# So the first step moves B along directions set by the random A; from the second step on both train. A cannot
# be zero too: with A = B = 0 both gradients are zero and nothing would ever train.

# %% [markdown]
# ## 6.2 What a non-zero B does
# `init="nonzero_B"` (a demo option) initialises B like A, as a naive "random init everything" would.
#
# **Predict:** how far do the outputs move? Does the model still answer `q: what color is the sky? a:` with
# "blue"?

# %%
from course_utils.plots import text_table
from course_utils.training import eval_loss, generate

torch.manual_seed(0)
noisy = add_lora(copy.deepcopy(base), "all-linear", r=8, alpha=16, init="nonzero_B")
with torch.no_grad():
    drift = (noisy(**batch).logits - base(**batch).logits).abs().max().item()
pretrain_batch = encode_texts(tok, data.texts("pretrain")[:32])
loss_base, loss_noisy = eval_loss(base, pretrain_batch), eval_loss(noisy, pretrain_batch)
print(f"largest logit change: {drift:.2f}")
print(f"loss on text the base model knows: base {loss_base:.3f} -> non-zero B {loss_noisy:.3f}")
for name, m in [("base", base), ("non-zero B", noisy)]:
    print(f"{name:>10}: {generate(m, tok, 'q: what color is the sky? a:', 4)!r}")

# %%
assert loss_noisy > loss_base, "a random B A adds noise to every layer: the model is damaged before it learns"

# %% [markdown]
# **Predict:** fine-tune both on the near domain (letters) with the same data, steps and learning rate. Which
# one ends with the lower loss on the letters? Which one still knows its pretraining text afterwards?

# %%
from course_utils.plots import plot_loss_curves
from course_utils.training import batches_from_examples, train

near, near_test = data.texts("near_train"), encode_texts(tok, data.texts("near_test"))
curves, after = {}, {}
for init, label in [("default", "B = 0"), ("nonzero_B", "B random")]:
    torch.manual_seed(0)
    m = add_lora(copy.deepcopy(base), "all-linear", r=8, alpha=16, init=init)
    batches = batches_from_examples(lambda rows: encode_texts(tok, rows), near, 16, seed=0)
    curves[label] = train(m, batches, 30, lr=5e-3, progress=label).losses
    after[label] = (eval_loss(m, near_test), eval_loss(m, pretrain_batch))
plot_loss_curves(curves, title="LoRA on the near domain: B = 0 vs random B")
plt.show()
print(text_table([[k, f"{curves[k][0]:.3f}", f"{v[0]:.3f}", f"{v[1]:.3f}"] for k, v in after.items()],
                 ["init", "first loss", "near held-out loss", f"pretraining-text loss (was {loss_base:.3f})"]))

# %%
assert after["B random"][1] > after["B = 0"][1] + 1, "the random B's damage to old knowledge is not undone"

# %% [markdown]
# Both fit the letters about equally well (the table above; the base model is so confidently wrong on this new
# template that random noise even lowers the very first loss). The difference is what is *left* of the base model:
# the random-B run forgot far more of its pretraining text, because nothing in the letters data pulls the noise
# back out. B = 0 means every change to the model is one the fine-tuning data asked for.

# %% [markdown]
# ## 6.3 Scaling: alpha / r versus rsLoRA's alpha / sqrt(r)
# The adapter's output is multiplied by `scaling`: alpha / r in the LoRA paper and PEFT's default, alpha / sqrt(r)
# with rsLoRA (`use_rslora=True`). After the first Adam step every entry of B is ±lr (Adam normalises each
# entry's step), whatever r is, while BA sums r such terms: ||BA|| grows like sqrt(r).
#
# **Predict:** keep alpha = 8 and raise r from 1 to 128. Does the size of the first update ||ΔW||_F grow,
# shrink or stay put under each rule?

# %%
from course_utils.lora import lora_layers

RANKS = [1, 2, 4, 8, 16, 32, 64, 128]
step_batches = batches_from_examples(lambda rows: encode_texts(tok, rows), near, 16, seed=0)
one_batch = next(step_batches)
update = {"alpha / r": [], "alpha / sqrt(r) (rsLoRA)": []}
for rule, rs in zip(update, [False, True]):
    for r in RANKS:
        torch.manual_seed(0)
        m = add_lora(copy.deepcopy(base), ["q_proj", "v_proj"], r=r, alpha=8, use_rslora=rs)
        train(m, iter([one_batch]), steps=1, lr=1e-3, clip=None, progress=False)
        dws = [layer.delta_weight().norm().item() for _, layer in lora_layers(m)]
        update[rule].append(sum(dws) / len(dws))
for rule, vals in update.items():
    print(f"{rule:26}", " ".join(f"r={r}: {v:.4f}" for r, v in zip(RANKS, vals)))

# %%
from course_utils.plots import plot_lines

plot_lines(RANKS, update, title="Size of the first LoRA update vs rank (alpha = 8)", xlabel="rank r (log scale)",
           ylabel="mean ||scaling * B A||_F after 1 step", logx=True, logy=True)
plt.show()

# %%
plain, rs = update["alpha / r"], update["alpha / sqrt(r) (rsLoRA)"]
print(f"r=1 -> r=128: alpha/r update shrinks {plain[0] / plain[-1]:.1f}x (sqrt(128) = {128 ** 0.5:.1f}); "
      f"rsLoRA changes {max(rs) / min(rs):.2f}x")
assert plain[0] / plain[-1] > 5 and max(rs) / min(rs) < 1.5, \
    "alpha/r shrinks the update like 1/sqrt(r); alpha/sqrt(r) cancels the sqrt(r) growth of BA"

# %% [markdown]
# With alpha / r, a larger rank means a *smaller* update per step unless you raise alpha with it (the common
# "alpha = 2r" recipe does exactly that, and in fact over-corrects: sqrt(r) would be enough). With rsLoRA the
# step size barely depends on r (the ratio printed above), so a rank sweep compares ranks, not step sizes. Chapter 07 sweeps r and
# alpha properly.

# %% [markdown]
# ## 6.4 Where LoRA can go, and what it costs
# The seed's rule of thumb: Q and V almost always; K and O often; the MLP yes; embeddings usually not. In
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

# %% [markdown]
# `course_utils.lora` wraps linear layers only, so the embedding row is computed from the shapes
# (PEFT can put LoRA on an `nn.Embedding`). "all-linear" leaves out `lm_head`, as PEFT does. The MLP holds most
# of the adapter parameters because its matrices are 352 wide.

# %% [markdown]
# ## 6.5 q, v only, or all linear layers?
# The LoRA paper adapted only W_q and W_v. The QLoRA paper (finding 1) reports that LoRA on query/value only
# does not match full fine-tuning, and that LoRA on *all* linear layers is required. Three runs on the near
# domain, same steps, data and learning rate: q, v at r = 8; all linear at r = 8; and q, v with the rank raised
# until it trains as many parameters as all-linear at r = 8 (so "more parameters" cannot be the explanation).
#
# **Predict:** rank the three by held-out loss after 40 steps.

# %%
from course_utils.training import progress_bar

r_match = round(counts["all linear"] / (counts["q, v"] / 8))  # q,v parameters grow linearly in r
RUNS = {"q, v (r=8)": (["q_proj", "v_proj"], 8), "all linear (r=8)": ("all-linear", 8),
        f"q, v (r={r_match})": (["q_proj", "v_proj"], r_match)}
test_batch = near_test
results, losses, n_train = {}, {}, {}
for name, (targets, r) in progress_bar(RUNS.items(), desc="placement"):
    torch.manual_seed(0)
    m = add_lora(copy.deepcopy(base), targets, r=r, alpha=2 * r)
    n_train[name] = count_parameters(m)[0]
    batches = batches_from_examples(lambda rows: encode_texts(tok, rows), near, 16, seed=0)
    losses[name] = train(m, batches, 40, lr=5e-3, progress=False).losses
    results[name] = eval_loss(m, test_batch)
print(text_table([[k, f"{n_train[k]:,}", f"{v:.3f}"] for k, v in results.items()],
                 ["adapters", "trainable", "held-out loss"]))

# %%
plot_loss_curves(losses, title="LoRA placement on the near domain", smooth=5)
plt.show()

# %%
qv, allin, qv_big = results["q, v (r=8)"], results["all linear (r=8)"], results[f"q, v (r={r_match})"]
print(f"base model held-out loss: {eval_loss(base, test_batch):.3f}")
assert allin < qv and allin < qv_big, "adapting every linear layer learns more, even against q,v with as many parameters"

# %% [markdown]
# All-linear learns the most (the table above), and raising the q, v rank to the same parameter count closes
# only part of the gap: *where* the adapters sit matters more than how many parameters they have. This is the
# QLoRA paper's finding 1 in miniature, and why its recipe (and PEFT's `target_modules="all-linear"`) puts LoRA
# on every linear layer of the transformer blocks.

# %% [markdown]
# ## 6.6 Exercises
# 1. Add a fourth run to 6.5 with the MLP only (`["gate_proj", "up_proj", "down_proj"]`, r = 8). Where does it
#    land between q, v and all linear?
# 2. In 6.3, how much larger would alpha need to be at r = 64 (plain alpha / r) to take the same first step as
#    r = 8? Predict from the sqrt(r) argument, then check:
#    `check_value("alpha factor", plain[RANKS.index(8)] / plain[RANKS.index(64)], (64 / 8) ** 0.5, rtol=0.15)`.
# 3. Count the LoRA parameters for Llama-2-7B (32 layers, hidden 4096, MLP 11008) with r = 16 on q, v only and
#    on all linear layers. What fraction of its 6.74B parameters is each?

# %%
from course_utils.checks import check_value

# Exercise 2, solved: the first update scales like sqrt(r) / r, so alpha must grow by sqrt(64 / 8)
_ = check_value("alpha factor", plain[RANKS.index(8)] / plain[RANKS.index(64)], (64 / 8) ** 0.5, rtol=0.15)

# %% [markdown]
# **Summary.** B = 0 makes the adapted model start exactly at the base model (asserted with `torch.equal`); a
# random B damages it before training begins. The update's size under alpha / r shrinks like 1/sqrt(r) while
# rsLoRA's alpha / sqrt(r) keeps it constant. LoRA on all linear layers trains a few percent of this model and
# learns more than q, v only, even when q, v gets the same parameter budget. Next (07): rank, alpha and dropout.
