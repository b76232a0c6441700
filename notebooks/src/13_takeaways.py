# %% [markdown]
# # 13 · Takeaways: five claims, what the course measured, and a recap quiz
#
# Runtime: about 22 s on a 2-core laptop, no GPU.
#
# A LoRA course usually ends with five takeaways:
# 1. LoRA learns **directions of change**, not new knowledge;
# 2. **intrinsic dimension** explains why a low rank works;
# 3. **QLoRA** makes LoRA practical on consumer hardware;
# 4. hyperparameters matter less than **which layers you adapt**;
# 5. **failure is informative**: debug it.
#
# Each is a claim, and you have practised each one. Below, every claim names the chapter sections, exercises and
# labs where you met it, and gets one measurement, re-run here in seconds on the course model, that backs it or
# shows where it goes too far. Then a checklist of what you should be able to do now, each row linked to where you
# practised it, and a recap quiz across the whole course whose checks tell you which section to re-read.

# %% [markdown]
# ## 13.0 Versions

# %%
import copy
import importlib.metadata as md
import platform

import matplotlib.pyplot as plt
import torch

torch.set_num_threads(1)  # the course model's ops are tiny: one thread is as fast, and never stalls on a busy machine
print("python", platform.python_version(), "| torch", md.version("torch"), "| peft", md.version("peft"))

# %% [markdown]
# ## 13.1 "LoRA learns directions of change, not new knowledge"
# **Practised in** [05 · 5.3](05_lora_idea.ipynb) (a full fine-tune's ΔW, nearly low-rank), exercise 5.2 and
# question 5.3; [06 · 6.1](06_init_and_placement.ipynb) (the update starts at zero and grows from there);
# [lab02](../labs/lab02_lora_from_scratch/lab02_lora_from_scratch.ipynb) sections 4 and 7 (ΔW = BA, merged into W);
# and, for the "knowledge" half, [10 · 10.1](10_failure_modes.ipynb) (a strongly trained prior, overridden).
#
# Two halves, two measurements. *Directions of change*: fine-tune every weight of the course model, with no rank
# limit, for 10 steps on chord notation (three data orders), and measure how much of each linear layer's ΔW its
# top 8 singular directions hold, as in 05 · 5.3. *Not new knowledge*: `experiments.run("prior_resists")` trains
# adapters (r = 16 on every linear layer, 20 steps) on 8 questions whose answers contradict what the model was
# pretrained on, such as the colour of the sky.
#
# **Predict:** what fraction of those 8 questions does the adapted model then answer with the *new* answer?
# (0 if LoRA cannot learn new knowledge.)

# %%
from course_utils.checks import exercise, predict, reveal

### BEGIN SOLUTION
guess_override_share = 0.75  # 10 · 10.1: r = 16 on every linear layer overrides most of them
### END SOLUTION
predict("share of the 8 contradicting answers learned", guess_override_share)

# %%
from course_utils import data, experiments
from course_utils.models import LINEAR_NAMES, load_course_model
from course_utils.plots import plot_bars, text_table
from course_utils.spectrum import energy_captured, weight_deltas, weight_snapshot
from course_utils.sweeps import spread
from course_utils.training import batches_from_examples, encode_texts, eval_loss, progress_bar, train

base, tok = load_course_model()
SEEDS = [0, 1, 2]
before = weight_snapshot(base)
share8 = []  # per data order: the top-8 share of ||dW||^2, averaged over the 28 transformer matrices
for seed in progress_bar(SEEDS, desc="full fine-tunes, 3 data orders"):
    tuned = copy.deepcopy(base).requires_grad_(True)
    chords = batches_from_examples(lambda rows: encode_texts(tok, rows), data.texts("far_train"), 16, seed=seed)
    train(tuned, chords, steps=10, lr=1e-3, progress=False, seed=seed)
    deltas = {n: w for n, w in weight_deltas(before, tuned).items() if n.rsplit(".", 1)[-1] in LINEAR_NAMES}
    share8.append(sum(energy_captured(w, 8) for w in deltas.values()) / len(deltas))
noise8 = energy_captured(torch.randn(128, 128, generator=torch.Generator().manual_seed(0)), 8)
print(f"top 8 of 128 singular directions hold {spread(share8)} of ||dW||^2 (mean of {len(deltas)} matrices; "
      f"3 data orders); "
      f"a random 128 x 128 matrix: {noise8:.3f}")

# %%
resist = experiments.run("prior_resists", seed=0)
sig = resist.signals
print(f"loss on the 8 contradicting answers: base model {sig['base_loss']:.2f} | r = 2 on attention "
      f"{resist.broken:.2f} | r = 16 on every linear layer {resist.fixed:.2f}")
print(f"new answers given: r = 2 on attention {sig['broken_accuracy']:.0%}, r = 16 on every linear layer "
      f"{sig['fixed_accuracy']:.0%} (seed 0; the course's tests check the loss gap on seeds 0, 1 and 2)")

# %%
reveal("share of the 8 contradicting answers learned", sig["fixed_accuracy"], atol=0.2,
       why="An adapter on every linear layer has enough capacity to store a few answers it is trained on, even "
           "ones its pretraining contradicts.")
assert all(s > 0.6 for s in share8) and min(share8) > 3 * noise8, "the unconstrained update is mostly low-rank"
assert resist.holds and resist.fixed < sig["base_loss"] / 5, "the adapters learn the contradicting answers"
assert sig["fixed_accuracy"] >= 0.5 > sig["broken_accuracy"], "half or more answers change with r = 16 on every layer"

# %% [markdown]
# The first half holds: nothing forced the full fine-tune to be low-rank, yet 8 directions hold most of every
# update (the shares printed above, far above a random matrix's). The second half is overstated at this scale: an
# adapter learned answers that contradict its pretraining and gave at least half of them after 20 steps, so LoRA *can* store
# facts it is trained on. What the measurements support is narrower: the change a fine-tune makes lives in a few
# directions. Whether adapters are the right tool for adding many facts, against retrieval or continued
# pretraining, is a question of cost and of questions it never saw: chapter 11 measures all three (the checklist, 13.7).

# %% [markdown]
# ## 13.2 "Intrinsic dimension explains why a low rank works"
# **Practised in** [04 · 4.4–4.5](04_intrinsic_dimension.ipynb) (d90 of a pretrained and of a random model),
# exercises 4.1 and 4.2 (why the projection must be sparse); [05 · 5.3](05_lora_idea.ipynb) (the rank a real ΔW
# needs); [lab02](../labs/lab02_lora_from_scratch/lab02_lora_from_scratch.ipynb) section 1 (what a low rank saves).
#
# The measurement of 04, at one point: train the sentiment task (04 · 4.2) inside a random 64-dimensional subspace
# of *all* the model's parameters (`RandomSubspace`, θ = θ0 + P θ_d, only the 64 numbers of θ_d trained), for the
# pretrained course model and for a randomly initialised model of the same shape, 20 steps, three seeds.
#
# **Predict:** with only those 64 trained numbers, which model learns the task (held-out accuracy of at least 0.8,
# where chance is 0.5)?

# %%
LEARNERS = ["both", "only the pretrained one", "only the random one", "neither"]
### BEGIN SOLUTION
guess_learns_in_64 = "only the pretrained one"  # 04: pretraining is what makes the intrinsic dimension small
### END SOLUTION
predict("learns sentiment with 64 trained numbers", guess_learns_in_64, choices=LEARNERS)

# %%
from course_utils.intrinsic import ChoiceTask, RandomSubspace, train_choice
from course_utils.models import tiny_llama

rows = {split: data.load(f"sentiment_{split}") for split in ("train", "test")}
task = {split: ChoiceTask(tok, [r["prompt"] for r in v], [r["label"] for r in v]) for split, v in rows.items()}
D, d = sum(p.numel() for p in base.parameters()), 64
starts = {"pretrained": base, "random init": tiny_llama(seed=0)}
accuracy = {name: [] for name in starts}
for name, start in starts.items():
    for seed in progress_bar(SEEDS, desc=f"d = {d}, {name}"):
        sub = RandomSubspace(start, d, seed=seed)  # theta0 stays frozen: only theta_d trains
        train_choice(sub, task["train"], 20, 1e-3 * (D / d) ** 0.5, batch_size=16, seed=seed)
        accuracy[name].append(task["test"].accuracy(sub))
print(f"d = {d} of D = {D:,} parameters ({d / D:.4%}); held-out accuracy, 3 seeds:",
      {name: [round(a, 3) for a in accs] for name, accs in accuracy.items()})

# %%
learned = {name: min(accs) >= 0.8 for name, accs in accuracy.items()}
verdict = {(True, True): "both", (True, False): "only the pretrained one", (False, True): "only the random one",
           (False, False): "neither"}[learned["pretrained"], learned["random init"]]
reveal("learns sentiment with 64 trained numbers", verdict,
       why="Pretraining has already built the features; the task only needs a few directions on top of them. A "
           "random model has no features for 64 directions to select from.")
mean = {name: sum(accs) / len(accs) for name, accs in accuracy.items()}
assert learned["pretrained"] and not learned["random init"] and mean["random init"] < mean["pretrained"] - 0.2, \
    "pretrained learns on every seed; random init does not"

# %% [markdown]
# It holds, as the reason a low rank *can* work: pretraining leaves the model in a place where this task needs a
# handful of directions (64 numbers, the share of D printed above), while a random model of the same shape does
# not learn it reliably from the same 64 (near chance on some seeds). LoRA's subspace is a different one (a trained low-rank matrix per layer, not a random
# projection of everything), so d90 says how few numbers can suffice, not which rank to pick: 07 · 7.1 measured
# that directly, and 13.4 re-measures it.

# %% [markdown]
# ## 13.3 "QLoRA makes LoRA practical on consumer hardware"
# **Practised in** [02 · 2.4–2.6](02_memory_wall.ipynb) (the 7B wall, and how LoRA and QLoRA move it), exercise 2.1
# (13B on a 16 GiB card); [09 · 9.4](09_qlora.ipynb) (4.127 bits per weight, from the stored bytes) and 9.6 (QLoRA
# trained on a CPU), exercise 9.1; [lab01](../labs/lab01_memory_wall/lab01_memory_wall.ipynb) section 6,
# [lab03](../labs/lab03_nf4/lab03_nf4.ipynb) (NF4 from scratch), [lab04](../labs/lab04_qlora/lab04_qlora.ipynb)
# (a QLoRA fine-tune within a budget).
#
# Two measurements: the memory calculator on a 7B Llama (rank-16 adapters on every linear layer) against 8 and
# 16 GiB cards, and the course model's linear layers stored in NF4 with double quantization: bits per weight from
# the bytes, and what the 4-bit base does to its held-out loss.
#
# **Predict:** how many GiB does a 7B QLoRA fine-tune need before activations (4-bit base, bf16 embeddings,
# float32 adapters with their gradients and Adam state)?

# %%
### BEGIN SOLUTION
guess_7b_qlora_gib = 7e9 * 4.127 / 8 / 2**30 + 1  # the 4-bit weights, plus about 1 GiB for the rest
### END SOLUTION
predict("7B QLoRA, GiB before activations", guess_7b_qlora_gib)

# %%
from course_utils.memory import fits_on_gpu, lora_param_count, nf4_bits_per_param
from course_utils.nf4 import model_storage_bytes, quantize_model

LLAMA_7B_LINEARS = [(4096, 4096)] * 4 * 32 + [(11008, 4096)] * 2 * 32 + [(4096, 11008)] * 32  # q,k,v,o; gate,up; down
n_lora_7b = lora_param_count(LLAMA_7B_LINEARS, r=16)
need = {method: fits_on_gpu(7e9, 16, method, n_lora=n_lora_7b).needed_gib for method in ("full", "lora", "qlora")}
print(text_table([[m, f"{gib:.1f}", "yes" if gib <= 8 else "no", "yes" if gib <= 16 else "no"]
                  for m, gib in need.items()],
                 ["7B, r = 16 on every linear layer", "GiB before activations", "fits 8 GiB", "fits 16 GiB"]))

qbase = quantize_model(copy.deepcopy(base), double_quant=True)
n_linear = sum(m.weight.numel() for n, m in base.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head")
bits = 8 * model_storage_bytes(qbase) / n_linear
held_pretrain = encode_texts(tok, data.held_out_pretrain_texts(48))
loss_shift = eval_loss(qbase, held_pretrain) - eval_loss(base, held_pretrain)
print(f"course model in NF4 + double quantization: {bits:.3f} bits per weight (formula {nf4_bits_per_param():.3f}); "
      f"held-out loss {loss_shift:+.4f} against float32")

# %%
reveal("7B QLoRA, GiB before activations", need["qlora"], rtol=0.3,
       why="4.127 bits is about half a byte per weight; the bf16 embeddings and the adapters with their Adam state "
           "add about a GiB.")
assert need["full"] > 80 and need["lora"] > 8 >= need["qlora"], "only the 4-bit base fits an 8 GiB card"
assert need["lora"] < 1.1 * 7e9 * 2 / 2**30, "LoRA: about the size of the bf16 weights alone"
assert abs(bits - nf4_bits_per_param(64, True)) < 0.01 and abs(loss_shift) < 0.01, "4.127 bits, loss kept"

# %% [markdown]
# It holds. Full fine-tuning of a 7B model needs more than an 80 GiB data-centre GPU; LoRA brings it to about the
# size of the bf16 weights, and only the 4-bit base fits an 8 GiB card, leaving room on a 16 GiB one for
# activations (which come on top: 02 · 2.6). The 4 bits cost the course model almost nothing: its held-out loss
# moved by the shift printed above, and 09 · 9.6 trained QLoRA to within a few percent of LoRA on every seed. Two
# honest limits: activations grow with batch and sequence length, not with the base's precision; and a QLoRA step
# dequantizes every 4-bit weight before it multiplies, so it is slower than a LoRA step (09 · 9.6), not faster:
# the 4 bits buy memory, not speed.

# %% [markdown]
# ## 13.4 "Hyperparameters matter less than which layers you adapt"
# **Practised in** [06 · 6.5](06_init_and_placement.ipynb) (q, v against all linear layers at the same budget),
# exercise 6.2; [07 · 7.1–7.3](07_hyperparameters.ipynb) (rank, alpha, learning rate), exercises 7.1 and 7.2;
# [10 · 10.1](10_failure_modes.ipynb) (attention-only adapters);
# [lab04](../labs/lab04_qlora/lab04_qlora.ipynb) section 2 (targets and rank within a parameter budget).
#
# Start from the reference run of 07 · 7.1 (every linear layer, r = 8, alpha 16, learning rate 5e-3, 8 steps of
# 6 letters) and change one thing at a time: the rank to 64 (alpha stays 16), the adapters to q and v only, the
# learning rate to a tenth. Three seeds each; the cost of a change is its held-out loss minus the reference run's
# on the same seed.
#
# **Predict:** which single change costs the most held-out loss?

# %%
CHANGES = {"rank 64": dict(r=64), "q, v only": dict(targets=["q_proj", "v_proj"]), "learning rate / 10": dict(lr=5e-4)}
### BEGIN SOLUTION
guess_costliest = "q, v only"  # what the claim says; 07 · 7.3 has the learning-rate sweep
### END SOLUTION
predict("the costliest single change", guess_costliest, choices=list(CHANGES))

# %%
from course_utils.sweeps import finetune

near, held_letters = data.texts("near_train"), encode_texts(tok, data.texts("near_test", 24))
letters = lambda seed: batches_from_examples(lambda rows: encode_texts(tok, rows), near, 6, seed=seed)  # noqa: E731
REFERENCE = dict(targets="all-linear", r=8, alpha=16, lr=5e-3)
held = {}
for change, knobs in progress_bar({"reference": {}, **CHANGES}.items(), desc="4 settings x 3 seeds"):
    held[change] = [finetune(base, letters, held_letters, steps=8, seed=s, **{**REFERENCE, **knobs}).held_out
                    for s in SEEDS]
cost = {change: [h - ref for h, ref in zip(held[change], held["reference"])] for change in CHANGES}
mean_cost = {change: sum(c) / len(c) for change, c in cost.items()}
print(text_table([[c, " ".join(f"{v:.3f}" for v in held[c]), spread(cost[c], "+.2f") if c in cost else "-"]
                  for c in held],
                 ["setting", "held-out loss, 3 seeds", "cost vs reference (min - max)"]))
plot_bars(list(CHANGES), list(mean_cost.values()), fmt="{:+.2f}", xlabel="one change to the reference run",
          title="What one change costs (letters, 8 steps; mean of 3 seeds)",
          ylabel="held-out loss above the reference (nats)")
plt.show()

# %%
reveal("the costliest single change", max(mean_cost, key=mean_cost.get),
       why="In 8 steps a learning rate ten times smaller barely moves the adapters away from B = 0: it loses more "
           "than the wrong layers do.")
assert max(abs(c) for c in cost["rank 64"]) < 0.25 * min(cost["q, v only"]), "rank matters far less than placement"
assert min(cost["q, v only"]) > 1, "q, v only costs more than a nat on every seed"
assert min(cost["learning rate / 10"]) > max(cost["q, v only"]), "the learning rate costs more, on every seed"

# %% [markdown]
# Half of it holds. Where the adapters sit matters far more than their rank: q and v alone cost more than a nat on
# every seed, rank 64 instead of 8 next to nothing. But rank is not the only hyperparameter: a learning rate ten
# times too small cost more than the wrong layers, on every seed, at this budget of 8 steps (07 · 7.3 swept it),
# and alpha / r scales the step as much as the learning rate does (07 · 7.2). The order to keep: adapt every linear
# layer, tune the learning rate (with alpha / r in mind), and leave the rank for last.

# %% [markdown]
# ## 13.5 "Failure is informative: debug it"
# **Practised in** [06 · 6.1–6.2](06_init_and_placement.ipynb) (B = 0, and what a random B does);
# [10 · 10.1–10.3](10_failure_modes.ipynb) (thirteen failures, each measured and fixed) and its debugging
# checklist, 10.5; exercise 10.2 (which failure is behind each readout?);
# [lab05](../labs/lab05_failure_diagnosis/lab05_failure_diagnosis.ipynb) (four broken fine-tunes to diagnose and
# fix).
#
# One of the thirteen, run once: `experiments.run("nonzero_B")` starts the adapters with a random B instead of
# B = 0. The readout that gives it away comes before any training: the loss on held-out pretraining-style text.
#
# **Predict:** with B random, that loss before the first step is how many times the base model's?

# %%
### BEGIN SOLUTION
guess_random_B_ratio = 3.0  # 06 · 6.2: a random B wrecks the pretrained behaviour at once
### END SOLUTION
predict("random B: loss before training / base model's", guess_random_B_ratio)

# %%
trap = experiments.run("nonzero_B", seed=0)
sig = trap.signals
print(f"before the first step: base model {sig['base_loss']:.4f} | B = 0 {sig['fixed_loss_at_step_0']:.4f} | "
      f"B random {sig['broken_loss_at_step_0']:.4f}")
print(f"{trap.metric} (10 steps): B random {trap.broken:.3f}, B = 0 {trap.fixed:.3f}")

# %%
reveal("random B: loss before training / base model's", sig["broken_loss_at_step_0"] / sig["base_loss"], rtol=0.5,
       why="B·A adds a random matrix to all 28 layers before a single step: the model is no longer the one that "
           "was pretrained.")
assert abs(sig["fixed_loss_at_step_0"] - sig["base_loss"]) < 1e-6, "B = 0: exactly the base model before training"
assert sig["broken_loss_at_step_0"] > 2 * sig["base_loss"] and trap.holds, "B random: visible at once, and it lasts"

# %% [markdown]
# It holds, and this is the pattern of all thirteen failures in 10: none stops a run, each shows up in a number you
# can read, here before the first step. A correct LoRA setup starts *exactly* at the base model (the B = 0 loss
# equals the base model's to every printed digit), so one evaluation before training catches a whole class of
# bugs, and a debugging checklist is a list of such readouts (10 · 10.5).

# %% [markdown]
# ## 13.6 The five claims, measured
# One line per claim, with the number this chapter measured for it:

# %%
rows = [
    ["directions of change, not new knowledge", f"top-8 share of a full ΔW {spread(share8, '.2f')}; new answers "
     f"learned {resist.signals['fixed_accuracy']:.0%}", "first half holds; adapters did learn new answers"],
    ["intrinsic dimension explains low rank", f"d = {d}: accuracy pretrained {spread(accuracy['pretrained'], '.2f')}, "
     f"random {spread(accuracy['random init'], '.2f')}", "holds"],
    ["QLoRA on consumer hardware", f"7B: {need['qlora']:.1f} GiB (full {need['full']:.0f}); {bits:.3f} bits/weight",
     "holds; memory, not speed"],
    ["layers matter more than hyperparameters", f"cost: q, v {mean_cost['q, v only']:+.2f}, rank 64 "
     f"{mean_cost['rank 64']:+.2f}, lr / 10 {mean_cost['learning rate / 10']:+.2f} nats",
     "holds for rank; the learning rate mattered more"],
    ["failure is informative", f"random B: {sig['broken_loss_at_step_0'] / sig['base_loss']:.1f}x the base loss "
     "before step 1", "holds"],
]
print(text_table(rows, ["claim", "measured here", "verdict"], max_width=62))

# %% [markdown]
# ## 13.7 What you should be able to do now
# Tick each row you could do tomorrow on a model of your own; where you cannot yet, the last column says where to
# go back to.
#
# | you can | ☐ | practised in |
# |---|---|---|
# | **explain why LoRA works**: a fine-tune's change is low-rank, and pretraining makes a task's intrinsic dimension small | ☐ | [04 · 4.4–4.5](04_intrinsic_dimension.ipynb), [05 · 5.3](05_lora_idea.ipynb), 13.1–13.2 above |
# | **implement it correctly**: B = 0 and a random A, alpha / r, the right target modules, merge and unmerge | ☐ | [05 · 5.4](05_lora_idea.ipynb), [06 · 6.1–6.5](06_init_and_placement.ipynb), [08 · 8.1–8.5](08_peft_in_practice.ipynb); [lab02](../labs/lab02_lora_from_scratch/lab02_lora_from_scratch.ipynb) |
# | **diagnose failures** from the numbers a run shows | ☐ | [10 · 10.1–10.5](10_failure_modes.ipynb); [lab05](../labs/lab05_failure_diagnosis/lab05_failure_diagnosis.ipynb) |
# | **choose between LoRA, QLoRA, retrieval (RAG), continued pretraining and prompting** | ☐ | [11 · 11.2–11.7](11_decision_guide.ipynb); [02 · 2.6](02_memory_wall.ipynb) and [09 · 9.6](09_qlora.ipynb) (LoRA or QLoRA); [10 · 10.1](10_failure_modes.ipynb) (a domain shift: when to pretrain first) |
# | **fine-tune large models without infinite GPUs**: size the memory, quantize the base, train within a budget | ☐ | [02 · 2.4–2.8](02_memory_wall.ipynb), [09 · 9.4–9.6](09_qlora.ipynb); [lab01](../labs/lab01_memory_wall/lab01_memory_wall.ipynb), [lab03](../labs/lab03_nf4/lab03_nf4.ipynb), [lab04](../labs/lab04_qlora/lab04_qlora.ipynb) |
# | **deploy**: merge an adapter, swap adapters on one base, export a model that needs only transformers | ☐ | [08 · 8.4](08_peft_in_practice.ipynb), [12 · 12.1–12.6](12_merge_swap_deploy.ipynb) |
# | **adapt a model to your own domain** from a JSONL file, with checks, baselines and seeds | ☐ | [14 · 14.1–14.7](14_your_own_domain.ipynb) |

# %% [markdown]
# ## 13.8 Recap quiz
# Thirteen questions across the course. Write your answer in each cell (a letter for a multiple choice, a number
# otherwise) and run it: a wrong answer says why it is wrong and which section to re-read.
#
# **Q1 (memory wall).** Full fine-tuning with mixed-precision Adam: how many bytes does training keep per
# parameter, before activations?
#
# **Q2 (precision).** Why does mixed-precision training keep an fp32 master copy of the weights?
# - a) 16-bit numbers round small updates away: a bf16 weight at 1.0 ignores an update of 1e-4
# - b) bf16 cannot store numbers above 65,504
# - c) GPUs cannot multiply 16-bit numbers
# - d) the gradients would overflow in 16 bits

# %%
from course_utils.memory import full_finetune_bytes

### BEGIN SOLUTION
q1 = 2 + 2 + 4 + 4 + 4  # bf16 weights and gradients, fp32 master copy, Adam's m and v
q2 = "a"
### END SOLUTION
exercise("Q1 bytes per parameter, full fine-tuning", q1, expected=full_finetune_bytes(1, "bf16", "adam")["total"],
         rtol=0, hint="Re-read 02 · 2.2: list everything one training step keeps per parameter.",
         why={2: "That is the bf16 weights alone: training also keeps gradients and optimizer state.",
              8: "That is Adam's m and v alone: the weights, their gradients and the master copy come on top.",
              12: "Close: one part is missing. Count weights, gradients, master copy, m and v.",
              18: "That is Hugging Face's variant with fp32 gradients (exercise 2.2); here gradients are bf16."})
exercise("Q2 why an fp32 master copy", q2, expected="a", choices="abcd",
         hint="Re-read 03 · 3.3 (updates that vanish).",
         why={"b": "65,504 is fp16's largest number; bf16 has fp32's 8 exponent bits, hence its range (03 · 3.1). "
                   "The master copy is about precision, not range.",
              "c": "16-bit matrix products are what GPUs do fastest: forward and backward run in 16 bits.",
              "d": "Overflow is a range problem (fp16's, met with loss scaling); the master copy is where the update "
                   "is added."})

# %% [markdown]
# **Q3 (intrinsic dimension).** What does a task's d90 measure?
# - a) the rank of the pretrained weight matrices
# - b) the smallest number of trained directions (in a random subspace of all parameters) that reaches 90% of
#   full fine-tuning's gain
# - c) the number of layers a fine-tune must change
# - d) the hidden size the model needs for the task
#
# **Q4 (rank).** A LoRA adapter of rank 16 on one 4096 × 4096 weight matrix: how many trainable parameters?

# %%
### BEGIN SOLUTION
q3 = "b"
q4 = 16 * (4096 + 4096)  # B is 4096 x 16, A is 16 x 4096
### END SOLUTION
exercise("Q3 what d90 measures", q3, expected="b", choices="abcd", hint="Re-read 04 · 4.1 and 4.5.",
         why={"a": "d90 is about the update, not the weights: it counts trained coordinates θ_d in θ0 + P θ_d.",
              "c": "The subspace spans every layer at once: d counts directions in parameter space, not layers.",
              "d": "The model is fixed; d90 asks how few of its directions a fine-tune needs."})
exercise("Q4 LoRA parameters, 4096 x 4096 at r = 16", q4, expected=lora_param_count([(4096, 4096)], r=16), rtol=0,
         hint="Re-read 05 · 5.1: r · (d_in + d_out).",
         why={16 * 4096: "That is A or B alone: LoRA trains both.",
              4096 * 4096: "That is the full matrix: LoRA trains B (d × r) and A (r × d) instead.",
              16 * 16: "r × r is the size of neither factor: each has a side as long as the matrix's."})

# %% [markdown]
# **Q5 (initialisation).** Why is B initialised to 0 (and A at random)?
# - a) so that the adapted model starts exactly at the base model
# - b) so that A and B receive equal gradients at the first step
# - c) to save memory: a zero matrix is stored sparsely
# - d) so that training converges to a low-rank update
#
# **Q6 (placement).** You can afford about 78,000 trainable parameters on the course model. Where do they learn
# the most?
# - a) on q and v only, at a higher rank
# - b) on every linear layer, at a lower rank
# - c) on the input embeddings
#
# **Q7 (alpha / r).** Plain LoRA (no rsLoRA) with r = 64 and alpha = 16: by what does the adapter's output get
# multiplied?
#
# **Q8 (PEFT).** `LoraConfig(lora_dropout=0.1)`: what does the dropout drop?
# - a) entries of the adapter's input
# - b) entries of the frozen weight W0
# - c) whole adapters, at random
# - d) entries of the base layer's output

# %%
from course_utils.sweeps import scaling

### BEGIN SOLUTION
q5 = "a"
q6 = "b"
q7 = 16 / 64
q8 = "a"
### END SOLUTION
exercise("Q5 why B = 0", q5, expected="a", choices="abcd", hint="Re-read 06 · 6.1.",
         why={"b": "With B = 0 only B gets a gradient at the first step: 06 · 6.1 measured A's as exactly 0.",
              "c": "B is a dense tensor like any other; the zero is about where training starts.",
              "d": "The rank is fixed by the shapes of B and A whatever their start."})
exercise("Q6 where 78k parameters learn most", q6, expected="b", choices="abc", hint="Re-read 06 · 6.5.",
         why={"a": "06 · 6.5 gave q, v the same budget through a higher rank: every seed stayed far behind, because "
                   "no rank reaches the MLP.",
              "c": "The embeddings are one input table (06 · 6.4); the behaviour a fine-tune changes lives in the "
                   "transformer layers."})
exercise("Q7 the scaling at r = 64, alpha = 16", q7, expected=scaling(16, 64), rtol=1e-9,
         hint="Re-read 07 · 7.2 and exercise 7.1.",
         why={4: "That is r / alpha, upside down.",
              2: "That is alpha / sqrt(r), rsLoRA's rule; plain LoRA divides by r.",
              16: "That is alpha alone: LoRA divides it by the rank."})
exercise("Q8 what lora_dropout drops", q8, expected="a", choices="abcd",
         hint="Re-read 07 · 7.4, and lab02 section 3.",
         why={"b": "The frozen weight is never touched: W0 x is computed in full.",
              "c": "Dropout acts on numbers flowing through the adapter, not on whole adapters.",
              "d": "The base layer's output W0 x passes unchanged, in training as in evaluation."})

# %% [markdown]
# **Q9 (NF4 and double quantization).** Blocks of 64 with double quantization: how many bits per weight, constants
# included?
#
# **Q10 (QLoRA).** In QLoRA, what is stored in 4 bits?
# - a) the frozen base model's linear weights
# - b) the LoRA adapters
# - c) the gradients and the Adam state
# - d) everything, adapters included

# %%
### BEGIN SOLUTION
q9 = 4 + 8 / 64 + 32 / (64 * 256)
q10 = "a"
### END SOLUTION
exercise("Q9 NF4 + double quantization, bits per weight", q9, expected=nf4_bits_per_param(64, True), rtol=1e-4,
         hint="Re-read 09 · 9.4: 4 bits of code, plus what each block's scale costs.",
         why={4.5: "That is without double quantization: one float32 absmax per 64 weights, 0.5 bits each.",
              4: "That is the codes alone: every block of 64 also stores its scale.",
              4.125: "Close: the 8-bit scales need their own float32 scale, one per 256 blocks."})
exercise("Q10 what QLoRA stores in 4 bits", q10, expected="a", choices="abcd",
         hint="Re-read 09 · 9.6 and question 9.4.",
         why={"b": "The adapters are what trains: updates far smaller than a 4-bit step would round away.",
              "c": "Gradients and Adam state exist only for the adapters, in full precision (02 · 2.6).",
              "d": "The adapters stay in 16 or 32 bits: they are trained, and tiny anyway."})

# %% [markdown]
# **Q11 (failure modes).** Before the first training step, your LoRA model's loss on ordinary text is three times
# the base model's. The most likely cause:
# - a) the learning rate is too high
# - b) B was not initialised to 0
# - c) the rank is too low
# - d) the dataset is too small
#
# **Q12 (deploy).** After merging (W = W0 + (alpha / r) · BA), how much extra time per token does the adapter
# cost at inference, compared with the base model?
# - a) none: the merged model has the base model's shapes and operations
# - b) one extra matrix product per adapted layer
# - c) a share r / d of the base model's time
#
# **Q13 (deploy).** You merge a QLoRA adapter into its 4-bit NF4 base and store the result in NF4 again. The
# merged model is:
# - a) exactly the model that was trained
# - b) slightly different: the sum W0 + ΔW is rounded to the 4-bit grid again
# - c) unusable

# %%
### BEGIN SOLUTION
q11 = "b"
q12 = "a"
q13 = "b"
### END SOLUTION
no_step_yet = "Nothing has trained yet, so this setting has had no chance to change the model's outputs: ask what " \
              "does change them before the first step."
exercise("Q11 loss wrong before the first step", q11, expected="b", choices="abcd",
         hint="Re-read 06 · 6.1–6.2 and 10 · 10.2 (setup traps); 13.5 above measured it.",
         why={"a": no_step_yet, "c": no_step_yet, "d": no_step_yet})
exercise("Q12 merged adapter, extra time per token", q12, expected="a", choices="abc", hint="Re-read 12 · 12.3.",
         why={"b": "That is the adapter kept apart (unmerged); merging folds BA into W, and the adapter is gone.",
              "c": "That is roughly the unmerged adapter's extra work; merged, nothing of the adapter remains."})
exercise("Q13 merging into a 4-bit base", q13, expected="b", choices="abc",
         hint="Re-read 12 · 12.5 and 10 · 10.3 (QLoRA traps).",
         why={"a": "W0 + ΔW must be rounded back to 16 levels per block: parts of ΔW under half a step vanish.",
              "c": "The rounding error is small but real: 12 · 12.5 measured what it does to the loss."})

# %%
from course_utils.checks import summary

summary()

# %% [markdown]
# **Summary.** Of the five takeaways, three hold as stated on the course model: intrinsic dimension (a pretrained
# model learned a task in 64 random directions, a random one did not reliably), QLoRA (only a 4-bit base fits a 7B
# fine-tune on an 8 GiB card, and the 4 bits cost the loss almost nothing), and failure as information (a random B
# shows before the first step). Two need a qualifier: LoRA's update does live in a few directions, but adapters
# also learned answers that contradict pretraining; and placement matters far more than rank, but a learning rate
# ten times too small cost more than the wrong layers.
