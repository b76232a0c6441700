# %% [markdown]
# # 10 · Failure modes: what goes wrong in a LoRA fine-tune, measured and fixed
#
# Runtime: about 30 s on a 2-core laptop, no GPU.
#
# A LoRA run that goes wrong rarely crashes. It trains, the loss falls, an adapter is saved, and only later does
# someone notice that it learned too little, forgot too much, or does not reproduce the model it was trained in.
# This chapter reproduces thirteen such failures on the course model, each in a few seconds
# (`course_utils.experiments`), and for each one:
# 1. you **predict** what the failure does;
# 2. it **runs**: the broken setup and the fixed one, trained and evaluated the same way;
# 3. you read the **diagnostic signal** that would reveal it in a real run: training and held-out loss curves, the
#    loss before the first step, the trainable-parameter report, which layers got adapters and gradients;
# 4. the **fix**, measured.
#
# First the common failure table ("LoRA struggles when ..."), rebuilt with numbers on three seeds; then the
# mistakes users make when setting LoRA up, then the QLoRA traps; at the end, a debugging checklist in which every
# row points to a failure measured here.

# %% [markdown]
# ## 10.0 Versions

# %% tags=["workshop"]
import importlib.metadata as md
import platform
import warnings

import matplotlib.pyplot as plt
import torch

torch.set_num_threads(1)  # the course model's ops are tiny: one thread is as fast, and never stalls on a busy machine
print("python", platform.python_version(), "| torch", md.version("torch"), "| peft", md.version("peft"),
      "| bitsandbytes", md.version("bitsandbytes"))

# %% tags=["workshop"]
from course_utils import experiments
from course_utils.checks import exercise, predict, reveal
from course_utils.experiments.seeds import mean_and_spread
from course_utils.plots import plot_loss_curves, text_table
from course_utils.training import progress_bar

groups = {}
for name in experiments.names():
    groups.setdefault(experiments.describe(name)["group"], []).append(name)
for group, names in groups.items():
    print(f"{group:<10} {', '.join(names)}")
assert len(experiments.names()) == 13

# %% [markdown]
# Every experiment returns an `Outcome`: `broken` and `fixed` (one metric, measured the same way in both setups),
# `better` ("lower" or "higher"), `holds` (the fix beats the failure by at least `margin`: computed, not declared),
# `symptom` and `fix` in words, and `signals`, the diagnostics recorded on the way.
#
# ## 10.1 The failure table, measured
# A table often quoted about LoRA's limits:
#
# | situation | symptom | fix |
# |---|---|---|
# | large domain shift | underfitting | increase rank or pretrain |
# | contradicting what the model was trained hard on (e.g. its safety alignment) | model resists | higher rank + all layers |
# | tiny dataset | overfitting | increase dropout |
# | attention-only LoRA | weak learning | include MLP layers |
#
# Each row, on the course model (a 1 M-parameter model has no safety alignment to contradict; the stand-in is an
# answer it was pretrained on again and again, "the sky is blue"):
# - `domain_shift`: chord notation (`F#: F#3 A#3 C#4 | ...`), which the model never saw; LoRA at r = 1 vs r = 32
#   on every linear layer, 10 steps; also continued pretraining (every weight trains on the chords);
# - `prior_resists`: 8 answers that contradict the pretraining ("q: what color is the sky? a: green"); r = 2 on
#   q, k, v, o vs r = 16 on every linear layer, 20 steps;
# - `tiny_dataset`: 4 facts about invented countries vs 16, 20 steps; the metric is the gap between the held-out
#   and the training loss; dropout 0.3, weight decay 0.5 and stopping after 10 steps are measured too;
# - `attention_only`: adapters on q, k, v, o vs every linear layer (r = 8), 15 steps on letters.
#
# Each runs on three seeds (the adapter's random A and the order of the data).
#
# **Predict (a):** after 10 steps on chords, which ends with the lowest held-out loss on chords?

# %%
### BEGIN SOLUTION
guess_chords_best = "continued pretraining"  # a new notation needs new directions everywhere, embeddings included
### END SOLUTION
predict("chords after 10 steps: lowest held-out loss", guess_chords_best,
        choices=["LoRA r=1", "LoRA r=32", "continued pretraining"])

# %% [markdown]
# **Predict (b):** four facts, 20 steps: the training loss falls well below the held-out loss. Which of these
# shrinks that gap the most?

# %%
TINY_FIXES = ["dropout 0.3", "weight decay 0.5", "stop after 10 steps", "16 facts instead of 4"]
### BEGIN SOLUTION
guess_tiny_fix = "16 facts instead of 4"
### END SOLUTION
predict("tiny dataset: what shrinks the train/held-out gap most", guess_tiny_fix, choices=TINY_FIXES)

# %%
TABLE, SEEDS = groups["table"], [0, 1, 2]
runs = {name: [] for name in TABLE}
for name, seed in progress_bar([(n, s) for n in TABLE for s in SEEDS], desc="4 experiments x 3 seeds"):
    runs[name].append(experiments.run(name, seed))
across = {name: experiments.across_seeds(outs) for name, outs in runs.items()}
print(experiments.seeds_table(across.values(), max_width=44))
assert all(a.holds_everywhere for a in across.values()), "every fix beats its failure on every seed"


def signal(name, key):
    """One signal of a table experiment, on every seed."""
    return [out.signals[key] for out in runs[name]]


# %%
fig, ax = plt.subplots(figsize=(7.2, 3.8), layout="constrained")
for what, offset in (("broken", -0.2), ("fixed", 0.2)):
    values = [getattr(across[n], what) for n in TABLE]
    means = [getattr(across[n], f"{what}_mean") for n in TABLE]
    err = [[m - min(v) for m, v in zip(means, values)], [max(v) - m for m, v in zip(means, values)]]
    bars = ax.bar([i + offset for i in range(len(TABLE))], means, width=0.4, yerr=err, capsize=3, label=what)
    ax.bar_label(bars, fmt="%.2f", padding=3)
ax.set_xticks(range(len(TABLE)), TABLE)
ax.set(title="The failure table on the course model (mean of 3 seeds; whiskers: min - max)",
       ylabel="each row's metric (nats, lower is better)")
ax.legend(frameon=False)
plt.show()

# %% [markdown]
# The metrics differ per row (held-out loss on chords, loss on the 8 contradicting answers, the overfitting gap,
# held-out loss on letters), all in nats and all lower-is-better. The same table with what each row measured in
# place of words:

# %%
continued = signal("domain_shift", "continued_pretraining_loss")
acc = {k: signal("prior_resists", f"{k}_accuracy") for k in ("broken", "fixed")}
plain_gap = across["tiny_dataset"].broken
tiny_gaps = {"dropout 0.3": signal("tiny_dataset", "dropout_gap"),
             "weight decay 0.5": signal("tiny_dataset", "weight_decay_gap"),
             "stop after 10 steps": signal("tiny_dataset", "gap_at_10_steps"),
             "16 facts instead of 4": list(across["tiny_dataset"].fixed)}
closed = {k: [1 - g / g0 for g, g0 in zip(gaps, plain_gap)] for k, gaps in tiny_gaps.items()}
from statistics import mean
ms = lambda v, fmt=".2f": mean_and_spread(v, fmt)  # noqa: E731
of_8 = {k: ms([8 * a for a in v], ".0f") for k, v in acc.items()}  # answers (of 8) where the new colour wins
rows = [
    ["large domain shift", "underfitting", f"r=1: loss {ms(across['domain_shift'].broken)}", "rank or pretrain",
     f"r=32: {ms(across['domain_shift'].fixed)}", f"continued pretraining: {ms(continued)}"],
    ["strong prior", "model resists", f"r=2, q,k,v,o: loss {ms(across['prior_resists'].broken)}",
     "higher rank + all layers", f"r=16, all linear: {ms(across['prior_resists'].fixed)}",
     f"new answer given (of 8): {of_8['broken']} -> {of_8['fixed']}"],
    ["tiny dataset", "overfitting", f"4 facts: gap {ms(plain_gap)}", "increase dropout",
     f"dropout 0.3: gap {ms(tiny_gaps['dropout 0.3'])}", f"16 facts: gap {ms(tiny_gaps['16 facts instead of 4'])}"],
    ["attention-only LoRA", "weak learning", f"q,k,v,o: loss {ms(across['attention_only'].broken)}",
     "include MLP layers", f"all linear: {ms(across['attention_only'].fixed)}", ""],
]
print(text_table(rows, ["situation", "claimed symptom", "measured (3 seeds)", "claimed fix", "the fix, measured",
                        "also measured"], max_width=60))
print(f"base model on chords: loss {runs['domain_shift'][0].signals['base_loss']:.1f}; tiny dataset, other fixes: "
      + "; ".join(f"{k}: gap {ms(tiny_gaps[k])}" for k in ("weight decay 0.5", "stop after 10 steps")))
trainable = {k: runs["attention_only"][0].signals[f"{k}_trainable"] for k in ("broken", "fixed")}
print(f"attention_only, trainable parameters: q,k,v,o {trainable['broken']:,}, all linear {trainable['fixed']:,}")

# %%
broken_r1, fixed_r32 = across["domain_shift"].broken, across["domain_shift"].fixed
assert all(c < f < b for c, f, b in zip(continued, fixed_r32, broken_r1)), \
    "chords: continued pretraining < r=32 < r=1, on every seed"
assert max(continued) < min(fixed_r32) - 1, "continued pretraining beats both ranks by more than 1 nat"
reveal("chords after 10 steps: lowest held-out loss", "continued pretraining",
       why="LoRA moves each linear layer within a few directions only; continued pretraining trains every weight, "
           "the token embeddings and the output head included, and a notation never seen needs that freedom.")
best_tiny = min(tiny_gaps, key=lambda k: mean(tiny_gaps[k]))
more_data = "16 facts instead of 4"
assert all(tiny_gaps[more_data][i] < min(g[i] for k, g in tiny_gaps.items() if k != more_data) for i in range(3)), \
    "more data shrinks the gap more than any regulariser, on every seed"
assert all(g < g0 for g, g0 in zip(tiny_gaps["dropout 0.3"], plain_gap)), "dropout narrows the gap a little"
assert mean(closed["weight decay 0.5"]) < mean(closed["dropout 0.3"]) < 0.5 < mean(closed["16 facts instead of 4"])
reveal("tiny dataset: what shrinks the train/held-out gap most", best_tiny,
       why="The regularisers only slow the memorising of 4 facts; 16 facts give the adapter a pattern to learn.")
assert all(b < f for b, f in zip(acc["broken"], acc["fixed"])), "the fix flips more answers, on every seed"
assert max(acc["broken"]) <= 2 / 8 and min(acc["fixed"]) >= 4 / 8, \
    "r=2 attention-only flips at most 2 of the 8 answers; r=16 on every linear layer at least 4"
assert 2 < trainable["fixed"] / trainable["broken"] < 3
print("share of the overfitting gap each fix closes (mean of 3 seeds):",
      ", ".join(f"{k} {mean(v):.0%}" for k, v in closed.items()))

# %% [markdown]
# Three rows of the table hold here as stated, on every seed: low rank underfits a new notation (and continued
# pretraining beats both ranks by more than a nat), a rank-2 attention-only adapter gives the new answer for at
# most 2 of the 8 strongly trained questions (the old colour wins the rest), while rank 16 on every linear layer
# gives it for at least half of them, on every seed (the counts are in the table above), and attention-only
# adapters learn the letters more slowly than adapters on every linear layer. (The all-linear adapters also train
# more parameters, printed above; chapter 07 measured that rank, i.e. more parameters in the same layers, barely
# changes the loss, while placement changes it a lot.)
#
# The tiny-dataset row holds only in part. The symptom is there: a clear gap between training and held-out loss.
# But the claimed fix is weak at this scale: dropout 0.3 narrows the gap on every seed, by the small share printed
# above, weight decay does even less, stopping after 10 steps a little more; what closes most of the gap is **more
# data** (16 facts instead of 4).
# Chapter 07 found the same: dropout helps in proportion to the overfitting there is to prevent, and it is worth
# measuring before trusting it.
#
# The diagnostic signal for this row is the pair of curves, training loss and held-out loss, evaluated as you train:

# %%
curves = runs["tiny_dataset"][0].signals
fig, ax = plt.subplots(figsize=(6.4, 3.4), layout="constrained")
for key, label in (("curve_train_heldout", "4 facts"), ("more_data_curve_train_heldout", "16 facts")):
    steps = [10 * (i + 1) for i in range(len(curves[key]))]
    (line,) = ax.plot(steps, [p[1] for p in curves[key]], marker="o", label=f"{label}: held-out")
    ax.plot(steps, [p[0] for p in curves[key]], marker="o", ls="--", color=line.get_color(), label=f"{label}: training")
ax.set(title="Tiny dataset: training vs held-out loss (one seed, every 10 steps)", xlabel="training step",
       ylabel="loss (nats)", xticks=[10, 20])
ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))
plt.show()

# %% [markdown]
# ## 10.2 Setup traps
# Six mistakes in setting LoRA up. None of them stops a training run; each shows only in a number. Each trap runs
# once here, on seed 0 (the course's tests check every one on seeds 0, 1 and 2).

# %% tags=["workshop"]
traps = {}  # name -> its Outcome on seed 0; the exercises and the checklist read them again


def run_trap(name):
    traps[name] = experiments.run(name, 0)
    return traps[name]


# %% [markdown]
# ### B is not zero at the start
# LoRA adds B·A to each adapted weight. PEFT and `course_utils` start B at zero, so that the adapted model *is* the
# base model before the first step (chapter 06). A hand-written layer that initialises both A and B randomly (or
# PEFT's `init_lora_weights=False`, meant for debugging) adds a random matrix to every layer before training starts.
#
# **Predict:** with B random (r = 8, alpha 16, all linear), the held-out loss on pretraining-style text *before any
# training step* is how many times the base model's loss?

# %%
### BEGIN SOLUTION
guess_nonzero_B_ratio = 2.0
### END SOLUTION
predict("random B: loss before training / base model's loss", guess_nonzero_B_ratio)

# %%
out = run_trap("nonzero_B")
s = out.signals
print(f"before the first step: base model {s['base_loss']:.3f} | B = 0: {s['fixed_loss_at_step_0']:.3f} | "
      f"B random: {s['broken_loss_at_step_0']:.3f}")
base_letters = runs["attention_only"][0].signals["base_loss"]  # the base model on held-out letters
print(f"after 10 steps on letters: loss on letters   B = 0: {s['fixed_task_loss']:.2f}, B random: "
      f"{s['broken_task_loss']:.2f} (base model {base_letters:.2f})")
print(f"                           loss on pretraining text   B = 0: {out.fixed:.2f}, B random: {out.broken:.2f}")
reveal("random B: loss before training / base model's loss", s["broken_loss_at_step_0"] / s["base_loss"], rtol=0.3,
       why="All 28 adapted layers get a random B·A added before a single step: the model that training starts "
           "from is a damaged copy of the base, and 10 steps on letters do not repair it.")
assert abs(s["fixed_loss_at_step_0"] - s["base_loss"]) < 1e-5, "B = 0: exactly the base model before training"
assert s["broken_loss_at_step_0"] > 2 * s["base_loss"] and out.holds
assert max(s["fixed_task_loss"], s["broken_task_loss"]) < base_letters - 4, "both learn the letters"

# %% [markdown]
# **Signal:** evaluate once *before* training. An adapter that starts at zero gives exactly the base model's loss
# (the check above, to 5 decimals). Both runs learn the new task (the letters), so the task loss alone hides the
# damage; the held-out loss on the old kind of text shows it. **Fix:** B = 0, PEFT's default.
#
# ### Alpha kept while r changes
# A recipe says r = 8, alpha = 16: the update is scaled by alpha / r = 2. Someone raises the rank to 64 for more
# capacity and leaves alpha at 16: the scaling drops to 0.25, eight times smaller.
#
# **Predict:** in the same 12 steps, how much does r = 64 with alpha 16 learn, compared with r = 8 and alpha 16?

# %%
### BEGIN SOLUTION
guess_alpha_trap = "about as much as r = 8"
### END SOLUTION
ALPHA_CHOICES = ["more than r = 8", "about as much as r = 8", "less than r = 8"]
predict("r = 64, alpha 16 vs r = 8, alpha 16", guess_alpha_trap, choices=ALPHA_CHOICES)

# %%
out = run_trap("alpha_not_rescaled")
s = out.signals
r8 = s["r8_alpha16_loss"]
print(f"held-out loss on letters after 12 steps: r=8 alpha=16 {r8:.2f} | r=64 alpha=16 {out.broken:.2f} | "
      f"r=64 alpha=128 {out.fixed:.2f}")
plot_loss_curves({f"r=64, alpha=16 (scaling {s['broken_scaling']:g})": s["broken_curve"],
                  f"r=64, alpha=128 (scaling {s['fixed_scaling']:g})": s["fixed_curve"]},
                 title="Alpha not rescaled: training loss, same lr and steps")
plt.show()
verdict = ALPHA_CHOICES[1] if abs(out.broken - r8) < 0.3 else ALPHA_CHOICES[0 if out.broken < r8 else 2]
reveal("r = 64, alpha 16 vs r = 8, alpha 16", verdict,
       why="With alpha fixed, a larger r divides the update by a larger r: the extra capacity arrives with smaller "
           "steps, and in a short run the two cancel (chapter 07, section 7.2).")
assert abs(out.broken - r8) < 0.3 and out.holds

# %% [markdown]
# **Signal:** raising the rank changes nothing: r = 64 ends where r = 8 did, and its curve falls far more slowly
# than the same rank with alpha rescaled; in the config, alpha / r has shrunk. **Fix:** scale alpha with r
# (alpha = 2r), or use rsLoRA (alpha / sqrt(r)); only then compare ranks.

# %% [markdown] tags=["workshop"]
# ### target_modules that match (almost) nothing
# A training script written for Phi-2 names its layers `q_proj, k_proj, v_proj, dense, fc1, fc2`. Copied to a Llama
# (whose layers are `q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj`), PEFT adapts whatever
# matches and drops the rest without a word.
#
# **Predict:** of the course model's 28 linear layers (4 blocks × 7, the output head not counted), how many get an
# adapter from that list under PEFT?

# %%
### BEGIN SOLUTION
guess_matched_layers = 12
### END SOLUTION
predict("Phi-2's target list on the course model: layers adapted", guess_matched_layers)

# %%
from course_utils.experiments.traps import PHI2_RECIPE

out = run_trap("targets_match_nothing")
s = out.signals
kinds = {}
for layer in s["peft_adapted_layers"]:
    kinds[layer.rpartition(".")[2]] = kinds.get(layer.rpartition(".")[2], 0) + 1
print("PEFT adapted:", kinds, f"({len(s['peft_adapted_layers'])} layers)")
print(f"trainable parameters: Phi-2's list {s['broken_trainable']:,} | every linear layer {s['fixed_trainable']:,}")
print(f"held-out loss on letters after 15 steps: Phi-2's list {out.broken:.2f} | every linear layer {out.fixed:.2f}")
print("course_utils.lora.add_lora with the same list:", s["course_utils_refusal"])
reveal("Phi-2's target list on the course model: layers adapted", len(s["peft_adapted_layers"]), atol=0,
       why="Only q_proj, k_proj and v_proj exist in both architectures; dense, fc1 and fc2 match nothing on a "
           "Llama, so o_proj and the whole MLP go without adapters.")
assert set(kinds) == {"q_proj", "k_proj", "v_proj"} and out.holds

# %% [markdown]
# **Signal:** the trainable-parameter count is lower than the recipe promised, and a look at *which* layers carry
# adapters (or which parameters receive a gradient) shows the gap. One backward pass through PEFT's model is enough
# to see it: only the layers with adapters get gradients, and at the first step only B does (A's gradient passes
# through B, which starts at 0).

# %%
import copy

from peft import LoraConfig, get_peft_model

from course_utils import data
from course_utils.models import load_course_model
from course_utils.training import encode_texts

base, tok = load_course_model()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # deprecation notices from PEFT's internals, not about this experiment
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=8, target_modules=PHI2_RECIPE))
peft_model(**encode_texts(tok, data.texts("near_train", 8))).loss.backward()
grads = {}  # layer kind -> {parameter kind: nonzero gradient?}
for name, p in peft_model.named_parameters():
    if p.grad is not None:
        layer, _, rest = name.partition(".lora_")
        kind = layer.rpartition(".")[2]
        grads.setdefault(kind, {})["lora_" + rest.split(".")[0]] = bool(p.grad.abs().sum() > 0)
print("layers whose parameters got a gradient:", sorted(grads))
print("nonzero gradient at step 0:", grads["q_proj"], "(q_proj; k_proj and v_proj alike)")
assert set(grads) == {"q_proj", "k_proj", "v_proj"}
assert all(v == {"lora_A": False, "lora_B": True} for v in grads.values())

# %% [markdown]
# **Fix:** print the model's linear layer names before training and target names from that list, or use
# `"all-linear"`. (`course_utils`' `add_lora` refuses a name that matches nothing and lists the names it could have
# used, printed above; PEFT raises only when *no* name matches.)

# %% [markdown]
# ### The base is not frozen
# `get_peft_model` and `add_lora` freeze the base model. A later `model.requires_grad_(True)` (or a training script
# that unfreezes "everything" for some other reason) turns it into full fine-tuning with adapters attached.
#
# **Predict:** after 10 steps on letters, the trained model's *own* held-out loss, base unfrozen vs base frozen:

# %%
### BEGIN SOLUTION
guess_unfrozen_run = "lower"
### END SOLUTION
predict("base unfrozen: the trained model's own loss vs frozen", guess_unfrozen_run,
        choices=["lower", "about the same", "higher"])

# %%
from course_utils.lora import add_lora, trainable_report

out = run_trap("base_not_frozen")
s = out.signals
for label, unfreeze in (("frozen  ", False), ("unfrozen", True)):
    m = add_lora(copy.deepcopy(base), "all-linear", r=8, alpha=16)
    print(label, trainable_report(m.requires_grad_(True) if unfreeze else m))
print(f"held-out loss on letters: the trained model itself   frozen {s['fixed_trained_model_loss']:.2f}, "
      f"unfrozen {s['broken_trained_model_loss']:.2f}")
print(f"                          its adapter on a fresh base  frozen {out.fixed:.2f}, unfrozen {out.broken:.2f} "
      f"(the base model, no fine-tune: {base_letters:.2f})")
own = s["broken_trained_model_loss"] - s["fixed_trained_model_loss"]
reveal("base unfrozen: the trained model's own loss vs frozen",
       "about the same" if abs(own) < 0.2 else ("lower" if own < 0 else "higher"),
       why="Unfrozen, every weight trains: it is a full fine-tune, which learns more in 10 steps than LoRA does "
           "(chapter 07, section 7.3). The run looks better; only the saved adapter is wrong.")
assert s["broken_trainable_percent"] == 100 and s["fixed_trainable_percent"] < 10 and out.holds
assert out.broken > 0.8 * base_letters, "the adapter alone on the real base: nearly no fine-tune"

# %% [markdown]
# The trap hides well: the unfrozen run has the *better* held-out loss. But what gets saved is only
# the adapter, and the adapter was trained alongside a base that moved; put on the real base, it is nearly as bad
# as no fine-tune. **Signal:** the trainable-parameter report (the `trainable%` of 100 above). **Fix:** never call
# `requires_grad_(True)` on the whole model after adding adapters; read the report before training.
#
# ### The learning rate is too high
# **Predict:** at learning rate 0.1 (twenty times the usual 5e-3 on this model), on how many of the 11 steps after
# the first does the training loss go *up*? (At 5e-3: none.)

# %%
### BEGIN SOLUTION
guess_rising_steps = 4
### END SOLUTION
predict("lr 0.1: steps where the training loss rose (of 11)", guess_rising_steps)

# %%
out = run_trap("lr_too_high")
s = out.signals
plot_loss_curves({"lr 0.1": s["broken_curve"], "lr 5e-3": s["fixed_curve"]},
                 title="Learning rate too high: training loss per step")
plt.show()
print(f"steps where the loss rose: lr 0.1 {s['broken_steps_loss_rose']}, lr 5e-3 {s['fixed_steps_loss_rose']} | "
      f"held-out loss on letters: lr 0.1 {out.broken:.2f}, lr 5e-3 {out.fixed:.2f}")
reveal("lr 0.1: steps where the training loss rose (of 11)", s["broken_steps_loss_rose"], atol=1,
       why="Adam moves every weight by about the learning rate each step, whatever the gradient's size: at 0.1 the "
           "steps overshoot, and gradient clipping keeps the loss finite but not falling steadily.")
assert s["broken_steps_loss_rose"] >= 2 and s["fixed_steps_loss_rose"] == 0 and out.holds

# %% [markdown]
# Is the zig-zag always there? The same two runs on seeds 1 and 2 (another random A, another order of the data):

# %%
lr_runs = [out] + [experiments.run("lr_too_high", seed) for seed in (1, 2)]
for o in lr_runs:
    c = o.signals
    print(f"seed {o.seed}: steps where the loss rose: lr 0.1 {c['broken_steps_loss_rose']:>2}, lr 5e-3 "
          f"{c['fixed_steps_loss_rose']} | last training loss: lr 0.1 {c['broken_curve'][-1]:.2f}, lr 5e-3 "
          f"{c['fixed_curve'][-1]:.2f} | held-out: lr 0.1 {o.broken:.2f}, lr 5e-3 {o.fixed:.2f}")
rose = [o.signals["broken_steps_loss_rose"] for o in lr_runs]
smooth_seeds = [o.seed for o in lr_runs if o.signals["broken_steps_loss_rose"] == 0]
assert min(rose) < 2 <= max(rose) and smooth_seeds, "the zig-zag shows on some seeds, not on all"
assert all(o.holds and o.signals["fixed_steps_loss_rose"] == 0 for o in lr_runs), "lr 0.1 ends far higher, every seed"
assert all(o.signals["broken_curve"][-1] > o.signals["fixed_curve"][-1] + 1 for o in lr_runs)
print("seeds where the loss at lr 0.1 never rose:", smooth_seeds)

# %% [markdown]
# The zig-zag is a signal, not a guarantee: on each seed in the last line above, the training loss at lr 0.1 falls
# on every step and simply stalls, more than a nat above the run at 5e-3. What holds on every seed is where the run
# ends.
#
# **Signal:** a training loss that zigzags (goes up on several steps) instead of falling steadily, or one that
# stalls far above where a lower learning rate gets in the same steps; at worse settings, a loss that becomes NaN
# (the course's training loop stops and says so). **Fix:** lower the learning rate (1e-4 to 1e-2 is the usual LoRA
# range; sweep it on a log grid, chapter 07).
#
# ### Forgetting
# **Predict:** after 15 steps on letters alone, the held-out loss on pretraining-style text (the kind of text the
# model was trained on) is how many times the base model's?

# %%
### BEGIN SOLUTION
guess_forgetting_ratio = 1.5
### END SOLUTION
predict("letters only: pretraining loss / base model's", guess_forgetting_ratio)

# %%
out = run_trap("forgetting")
s = out.signals
print(f"held-out loss on pretraining text: base {s['base_loss']:.2f} | letters only {out.broken:.2f} | "
      f"letters + replay {out.fixed:.2f}")
print(f"held-out loss on letters:          base {s['base_task_loss']:.2f} | letters only {s['broken_task_loss']:.2f} | "
      f"letters + replay {s['fixed_task_loss']:.2f}")
reveal("letters only: pretraining loss / base model's", out.broken / s["base_loss"], rtol=0.3,
       why="Nothing in 15 steps of letters asks the model to keep its old skills; every adapter is free to bend "
           "the layers towards letters.")
assert out.broken > 2 * s["base_loss"] and out.fixed < 1.2 * s["base_loss"] and out.holds
assert s["fixed_task_loss"] - s["broken_task_loss"] < 0.3, "replay costs little on the new task"

# %% [markdown]
# **Signal:** a held-out set of the *original* kind of data, evaluated during fine-tuning; the new task's loss alone
# looks fine. **Fix:** replay (mix original data into the batches; here half of each batch), at the small cost on
# the new task printed above.
#
# ## 10.3 QLoRA traps
# Three traps that come with a 4-bit base (chapter 09).
#
# ### Merging into the 4-bit base
# Merging adds ΔW = B·A into the base weight. If the base is NF4, W0 + ΔW has to be quantized again.
#
# **Predict:** after merging a trained adapter into the 4-bit base, by how much (relative error, %) do the merged
# model's logits differ from the trained QLoRA model's?

# %%
### BEGIN SOLUTION
guess_merge_error_pct = 1.0
### END SOLUTION
predict("merge into 4 bits: logits' relative error (%)", guess_merge_error_pct)

# %%
out = run_trap("merge_into_4bit")
s = out.signals
print(f"logits vs the trained model: merged into 4 bits {100 * out.broken:.2f}% | merged into a dequantized float "
      f"base {100 * out.fixed:.1e}%")
print(f"held-out loss: trained {s['trained_loss']:.4f} | merged into 4 bits {s['merged_4bit_loss']:.4f} | "
      f"merged into float {s['merged_float_loss']:.4f}")
reveal("merge into 4 bits: logits' relative error (%)", 100 * out.broken, rtol=0.5,
       why="Merging re-quantizes W0 + ΔW onto the 16 NF4 levels of each block: part of the trained ΔW is rounded "
           "away and other weights jump a level, so the served model is not the trained one.")
assert out.broken > 0.01 and out.fixed < 1e-5 and out.holds
assert abs(s["merged_4bit_loss"] - s["trained_loss"]) < 0.05, "at this scale the loss barely notices"

# %% [markdown]
# Said plainly: at this scale the held-out loss barely notices, but the merged model is a different model (its
# logits moved by the percentage printed above), while merging into a dequantized float copy of the base reproduces
# the trained model to float precision. **Signal:** compare the merged model's logits with the unmerged one's on a
# few inputs before shipping it. **Fix:** keep the adapter unmerged on the 4-bit base, or merge into the
# dequantized float weights.
#
# ### The halved parameter count
# **Predict:** load the course model (1,066,112 parameters) in 4 bits with transformers + bitsandbytes. What does
# `sum(p.numel() for p in model.parameters())` report?

# %%
### BEGIN SOLUTION
guess_naive_count = 1_066_112
### END SOLUTION
predict("4-bit model: sum(p.numel())", guess_naive_count)

# %%
from course_utils.surgery import linear_layers

out = run_trap("halved_param_count")
s = out.signals
quantized = sum(m.weight.numel() for _, m in linear_layers(base))  # every linear layer but the output head
print(f"float model {s['float_model']:,} | 4-bit, sum(p.numel()) {s['naive']:,} ({out.broken:.1f}% short) | "
      f"4-bit, PEFT's rule {s['peft_rule']:,} | transformers' num_parameters() {s['transformers']:,}")
print(f"quantized linear weights: {quantized:,}; float model - half of them = {s['float_model'] - quantized // 2:,}")
reveal("4-bit model: sum(p.numel())", s["naive"], rtol=0.1,
       why="bitsandbytes packs two 4-bit codes into each uint8 element, so each quantized weight counts half; the "
           "embeddings and the output head stay in float and count in full.")
assert s["naive"] == s["float_model"] - quantized // 2 and s["peft_rule"] == s["float_model"] == 1_066_112
assert out.holds

# %% [markdown]
# **Signal:** a parameter count that changes when nothing but the storage changed. **Fix:** count the way PEFT's
# `print_trainable_parameters` does (`course_utils.lora.count_parameters`): a packed weight stands for twice its
# stored elements.
#
# ### bitsandbytes' eval-mode repack on the CPU
# On a CPU with AVX512-BF16, bitsandbytes 0.50's first *eval-mode* forward repacks every 4-bit weight for an
# inference-only kernel. The course's guard (`course_utils.runtime.bnb_guard`, active once `course_utils` is
# imported) turns that step into a no-op. The experiment calls the repack step on each of the 28 4-bit layers,
# guard off and guard on, and checks whether each weight still dequantizes to the same values.
#
# **Predict:** with the guard off, what percentage of the 4-bit layers come through the repack intact?

# %%
### BEGIN SOLUTION
guess_repack_intact = 50
### END SOLUTION
predict("guard off: 4-bit layers intact after the repack (%)", guess_repack_intact)

# %%
out = run_trap("eval_repack")
s = out.signals
crashed = [n for n, how in s["broken_layers"].items() if how.startswith("crash")]
print(f"guard off: {s['broken_summary']} -> {out.broken:.0f}% intact | guard on: {s['fixed_summary']} -> "
      f"{out.fixed:.0f}% intact")
print("crashed:", sorted({n.rpartition(".")[2] for n in crashed}), f"(input width {base.config.intermediate_size}, "
      f"{base.config.intermediate_size / 64:g} blocks of 64)")
reveal("guard off: 4-bit layers intact after the repack (%)", out.broken, atol=5,
       why="The repack reorders the 4-bit codes and stores the scales in bf16: a weight read back the ordinary way "
           "is scrambled, and a layer whose width is not a multiple of 64 cannot be repacked at all.")
assert out.broken == 0 and out.fixed == 100 and all(n.endswith("down_proj") for n in crashed)
assert sum(s["broken_summary"].values()) == 28

# %% [markdown]
# Whether *your* CPU repacks in a real eval forward depends on its instruction set (this cell's output differs
# between machines, the measurement above does not):

# %% tags=["nbval-ignore-output"]
print(f"this CPU has AVX512-BF16: {s['cpu_avx512_bf16']}; a real eval-mode forward without the guard: "
      f"{s['real_eval_forward_unguarded']}")

# %% [markdown]
# **Signal:** a crash or suddenly garbage outputs after the first `model.eval()` forward of a 4-bit model, on a CPU.
# **Fix:** import `course_utils` before the first forward (its guard), or keep the model in `train()` mode.
#
# ## 10.4 Exercises
# **Exercise 10.1 (the fix, as a config).** Write a `target_modules` list for the course model that adapts every
# linear layer except the output head, from the layer names printed in 10.2.

# %%
from course_utils.lora import match_targets

### BEGIN SOLUTION
answer_targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
### END SOLUTION


def adapted_layers():
    if answer_targets is None:
        return None
    chosen = match_targets(base, answer_targets)  # a name that matches nothing raises, naming the layers there are
    return len(chosen) if "lm_head" not in chosen else "the output head too"


exercise("10.1 target_modules: every linear layer but the head", adapted_layers, expected=28,
         hint="28 = 4 blocks x (4 attention projections + 3 MLP projections); the output head (lm_head) is not "
              "adapted (all-linear leaves it out too). Names are matched as suffixes: 'o_proj', not 'dense'.")


# %% [markdown]
# **Exercise 10.2 (which failure is it?).** Five readouts from runs, all measured in this chapter. Name the failure
# behind each (one of `experiments.names()`), in order A-E.

# %%
t = {name: out.signals for name, out in traps.items()}
seen = {  # experiment -> (what its broken run showed, the hint for a wrong name)
    "base_not_frozen": (f"print_trainable_parameters: trainable%: {t['base_not_frozen']['broken_trainable_percent']:.4f}",
                        "100% trainable: the base trains too; what should add_lora / get_peft_model have done to it?"),
    "nonzero_B": (f"held-out loss before the first training step {t['nonzero_B']['broken_loss_at_step_0']:.2f}; "
                  f"the base model's {t['nonzero_B']['base_loss']:.2f}",
                  "measured before any step, so no learning rate or data caused it; what sets the adapter's output "
                  "at step 0?"),
    "lr_too_high": (f"the training loss went up on {t['lr_too_high']['broken_steps_loss_rose']} of 11 steps",
                    "a loss that goes up between steps points at the size of each step."),
    "halved_param_count": (f"after loading in 4 bits: {t['halved_param_count']['naive']:,} parameters (the model card "
                           f"says {t['halved_param_count']['float_model']:,})",
                           "only the storage changed; how many 4-bit values fit in one stored byte?"),
    "forgetting": (f"loss on the new task {t['forgetting']['broken_task_loss']:.2f} (from "
                   f"{t['forgetting']['base_task_loss']:.2f}); on held-out original data {traps['forgetting'].broken:.2f} "
                   f"(from {t['forgetting']['base_loss']:.2f})",
                   "the new task improves while the old data gets worse."),
}
order = sorted(seen, key=lambda name: seen[name][0])  # letters follow the readouts' text, not the experiments
READOUTS = {chr(ord("A") + i): seen[name][0] for i, name in enumerate(order)}
for letter, readout in READOUTS.items():
    print(f"{letter}: {readout}")

# %%
### BEGIN SOLUTION
answer_failures = ["halved_param_count", "nonzero_B", "forgetting", "base_not_frozen", "lr_too_high"]
### END SOLUTION
given = list(answer_failures or [])
wrong = [f"{letter}: {seen[name][1]}" for letter, name, got in zip(READOUTS, order, given) if str(got).strip() != name]
exercise("10.2 the failure behind each readout", answer_failures, expected=order,
         hint=" ".join(wrong) if len(given) == len(order) else "one experiment name per readout, in order A-E")

# %% [markdown]
# ## 10.5 The debugging checklist
# Every failure of this chapter, measured on the course model: the metric broken and fixed, and whether the fix
# held (the failure table on three seeds, the traps on one).

# %%
measured = {**{n: (a.broken_mean, a.fixed_mean, a.better, a.holds_everywhere) for n, a in across.items()},
            **{n: (o.broken, o.fixed, o.better, o.holds) for n, o in traps.items()}}
print(text_table([[n, experiments.describe(n)["metric"], f"{b:.3g}", f"{f:.3g}", better, "yes" if h else "NO"]
                  for n, (b, f, better, h) in measured.items()],
                 ["experiment", "metric", "broken", "fixed", "better", "fix holds"], max_width=70))
assert sorted(measured) == sorted(experiments.names()) and all(h for *_, h in measured.values())

# %% [markdown]
# When a fine-tune disappoints, start from what you see, check the first thing in its row, and the last column
# names the experiment above that reproduces it:
#
# | what you see | check first | measured in |
# |---|---|---|
# | the loss before the first step differs from the base model's | the adapter's init: B must start at 0 | `nonzero_B` |
# | a larger r does not help: the loss ends where the smaller r did | alpha / r: did alpha grow with r? | `alpha_not_rescaled` |
# | the loss falls slowly; fewer trainable parameters than expected | which layers carry adapters and get gradients | `targets_match_nothing` |
# | `trainable%` near 100, or the saved adapter does not reproduce the run | is the base frozen? read the trainable-parameter report | `base_not_frozen` |
# | the training loss goes up on several steps, becomes NaN, or stalls high | the learning rate | `lr_too_high` |
# | the new task improves, the old kind of text gets worse | a held-out set of the original data; replay | `forgetting` |
# | a new notation's held-out loss stays high | the rank; continued pretraining for a really new domain | `domain_shift` |
# | the model keeps giving its old answer | rank and adapters on every linear layer | `prior_resists` |
# | the training loss falls far below the held-out loss | more data, fewer steps; measure dropout before trusting it | `tiny_dataset` |
# | adapters on q, k, v, o only learn slowly | include the MLP layers (`all-linear`) | `attention_only` |
# | the merged model's outputs differ from the trained one's | the merge target: merge into dequantized float weights | `merge_into_4bit` |
# | the parameter count drops after 4-bit loading | the counting rule: a packed 4-bit weight counts twice | `halved_param_count` |
# | a crash or garbage after the first eval forward of a 4-bit model on a CPU | bitsandbytes' repack: the guard, or `train()` mode | `eval_repack` |

# %%
from course_utils.checks import summary

summary()

# %% [markdown]
# **Summary.** Thirteen ways a LoRA or QLoRA fine-tune goes wrong, each reproduced on the course model and fixed,
# with the fix measured. The common failure table holds on three seeds for domain shift, a strongly trained prior
# and attention-only adapters; for a tiny dataset the overfitting is there but dropout is a weak fix at this scale,
# and more data is the strong one. The setup and QLoRA traps never stop a run: each shows only in a number, the loss
# before the first step, the trainable-parameter report, the layers that get gradients, a held-out set of the
# original data, the merged model's logits, so the habit to keep is to look at those numbers before and while
# training.
