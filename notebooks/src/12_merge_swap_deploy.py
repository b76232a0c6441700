# %% [markdown]
# # 12 · Merge, swap, deploy: one base model, many adapters
#
# Runtime: about 30 s on a 2-core laptop, no GPU.
#
# A trained LoRA adapter is a few hundred kB next to a base model of megabytes (or gigabytes). Two ways to serve it:
# - **merge** it: W = W0 + B A, written into the base weights, so the model is an ordinary transformers model again
#   and inference costs exactly what the base model costs;
# - **swap** it: keep one base in memory and several adapters next to it, and choose the adapter per request. One
#   base, many behaviours: a *model zoo*.
#
# This chapter measures both, on the course model, with Hugging Face PEFT (the tool you would deploy with) and
# `course_utils`:
# - three adapters trained in seconds (a letter style, a chord notation, a review-sentiment task), their files, and
#   the memory of one base + three adapters against three merged copies;
# - inference time of the base, the unmerged adapter and the merged model, measured side by side;
# - combining adapters (`add_weighted_adapter`), and what the combination does to each task;
# - merging into a 4-bit base: the error of dequantize -> merge -> requantize;
# - exporting a merged model that loads with transformers alone and writes the same text.

# %% [markdown]
# ## 12.0 Versions

# %% tags=["workshop"]
import copy
import importlib.metadata as md
import logging
import platform
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from transformers.utils import logging as hf_logging

# PEFT 0.21 asks transformers 5 for a deprecated attribute when it wraps a model; the warning is about PEFT's
# internals, not about anything this chapter does.
warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)

# Saving a 4 MB model needs no progress bar; and on CPUs with AVX512-BF16, bitsandbytes (imported by PEFT) logs that
# an optional kernel package is not installed, which nothing here uses.
hf_logging.disable_progress_bar()
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

torch.set_num_threads(1)  # the course model's ops are tiny: one thread is as fast, and never stalls on a busy machine
print("python", platform.python_version(), "| torch", md.version("torch"), "| transformers", md.version("transformers"),
      "| peft", md.version("peft"))

# %% [markdown] tags=["workshop"]
# ## 12.1 Three adapters for one base
# Three behaviours the course model does not have, each a LoRA adapter (PEFT, r = 8, alpha 16, all linear layers,
# 15 steps of 8 examples with the course's training loop):
# - **letters**, a style: "dear alice, today the cat ate my pie in the park. see you soon, bob.";
# - **chords**, a domain: a notation the model never saw, "C: C4 E4 G4 |";
# - **reviews**, a task: "review: the soup at the farm was cold and stale. sentiment:" -> negative.
#
# Each is trained on three seeds (the random A and the order of the data) and saved with `save_pretrained`.
#
# **Predict:** the course model's weights file (`model.safetensors`) is 4.27 MB. How large is one adapter's file, in
# % of that?

# %%
from course_utils.checks import exercise, predict, reveal

### BEGIN SOLUTION
guess_adapter_pct = 100 * 78_848 / 1.07e6  # r (in + out) per linear layer, 28 layers: ~79 k of ~1.07 M numbers
### END SOLUTION
predict("one adapter's file, % of the base model's file", guess_adapter_pct)

# %%
from peft import LoraConfig, PeftModel, get_peft_model

from course_utils import data
from course_utils.models import load_course_model
from course_utils.plots import plot_bars, text_table
from course_utils.sweeps import spread
from course_utils.training import batches_from_examples, encode_pairs, encode_texts, eval_loss, progress_bar, train

base, tok = load_course_model()
as_texts = lambda rows: encode_texts(tok, [r["text"] for r in rows])  # noqa: E731
as_pairs = lambda rows: encode_pairs(tok, [r["prompt"] for r in rows], [r["label"] for r in rows])  # noqa: E731
TASKS = {"letters": (as_texts, data.load("near_train"), as_texts(data.load("near_test", 32))),
         "chords": (as_texts, data.load("far_train"), as_texts(data.load("far_test", 32))),
         "reviews": (as_pairs, data.load("sentiment_train"), as_pairs(data.load("sentiment_test", 32)))}
SEEDS, RECIPE = [0, 1, 2], dict(r=8, lora_alpha=16, target_modules="all-linear")
work = Path(tempfile.mkdtemp(prefix="ch12_"))
for seed in progress_bar(SEEDS, desc="3 adapters x 3 seeds"):
    for task, (encode, rows, _) in TASKS.items():
        torch.manual_seed(seed)  # the random A
        model = get_peft_model(copy.deepcopy(base), LoraConfig(**RECIPE))
        train(model, batches_from_examples(encode, rows, 8, seed=seed), 15, lr=5e-3, seed=seed, progress=False)
        model.save_pretrained(work / f"seed{seed}" / task)
base.save_pretrained(work / "base")
file_kb = {task: (work / "seed0" / task / "adapter_model.safetensors").stat().st_size / 1e3 for task in TASKS}
base_kb = (work / "base" / "model.safetensors").stat().st_size / 1e3
print(text_table([["base model (model.safetensors)", f"{base_kb:,.0f}"]] +
                 [[f"adapter '{t}' (adapter_model.safetensors)", f"{kb:,.0f}"] for t, kb in file_kb.items()],
                 ["file", "kB"]))

# %%
reveal("one adapter's file, % of the base model's file", 100 * file_kb["letters"] / base_kb, rtol=0.15,
       why="r (in + out) numbers per adapted matrix: 78,848 float32 numbers next to the base's ~1.07 M.")
assert all(kb < 0.1 * base_kb for kb in file_kb.values()), "every adapter file is under a tenth of the base's"

# %% [markdown]
# On a 7B model the same adapter shape is a far smaller share (r (in + out) against in × out, chapter 08): that is
# why a zoo of adapters is cheap to store and to ship.

# %% [markdown]
# ## 12.2 Swapping adapters at run time
# One base in memory, the three adapters loaded next to it with `load_adapter(folder, adapter_name=...)`, and
# `set_adapter(name)` to choose the one that runs. Below, each task's held-out loss with each adapter active
# (and with none: `disable_adapter()`), on every seed.

# %%
def zoo_for(seed):
    """One PEFT model: the base and the three adapters of this seed."""
    folders = {task: work / f"seed{seed}" / task for task in TASKS}
    zoo = PeftModel.from_pretrained(copy.deepcopy(base), folders["letters"], adapter_name="letters")
    for task in ["chords", "reviews"]:
        zoo.load_adapter(folders[task], adapter_name=task)
    return zoo.eval()


def task_losses(model):
    return {task: eval_loss(model, test) for task, (_, _, test) in TASKS.items()}


swap, zoos = {}, {}
for seed in progress_bar(SEEDS, desc="3 zoos"):
    zoos[seed] = zoo = zoo_for(seed)
    with zoo.disable_adapter():
        swap[seed, "none (the base)"] = task_losses(zoo)
    for task in TASKS:
        zoo.set_adapter(task)
        swap[seed, task] = task_losses(zoo)
print("held-out loss on each task (rows: the active adapter), min - max over 3 seeds")
ACTIVE = ["none (the base)", *TASKS]
print(text_table([[a] + [spread(swap[s, a][t] for s in SEEDS) for t in TASKS] for a in ACTIVE],
                 ["active adapter", *TASKS]))

# %%
for seed in SEEDS:
    for task in TASKS:
        others = [swap[seed, a][task] for a in ACTIVE if a != task]
        assert swap[seed, task][task] < min(others), f"seed {seed}: the {task} adapter is best at {task}"
w0 = dict(base.named_parameters())
assert all(torch.equal(p, w0[n.replace("base_model.model.", "", 1).replace(".base_layer", "")])
           for n, p in zoos[0].named_parameters() if "lora_" not in n), "after all the switching, W0 is untouched"

# %% [markdown]
# On every seed, each task is best served by its own adapter (asserted), and a wrong adapter is worse than the right
# one: swapping is choosing. The switch itself moves no weights: `set_adapter` changes which A and B the forward
# pass uses, and after all the switching W0 is bit for bit the base model's (asserted).
#
# **Memory.** Serving the three behaviours as three merged models needs three copies of the base; the zoo needs one
# base and three adapters. `course_utils.deploy.zoo_memory` adds up the bytes of the tensors in the loaded model.
#
# **Predict:** how many times more memory do three merged copies take than one base + three adapters?

# %%
### BEGIN SOLUTION
guess_zoo_ratio = 3 * 4.27 / (4.27 + 3 * 0.32)  # three bases / (one base + three adapters), in MB
### END SOLUTION
predict("memory: 3 merged copies / (1 base + 3 adapters)", guess_zoo_ratio)

# %%
from course_utils.deploy import zoo_memory

mem = zoo_memory(zoos[0])
print(text_table([["one base + 3 adapters (the zoo)", f"{mem['zoo'] / 1e6:.2f}"],
                  ["3 merged copies", f"{mem['merged_copies'] / 1e6:.2f}"]] +
                 [[f"  of which adapter '{name}'", f"{b / 1e6:.3f}"] for name, b in mem["adapters"].items()],
                 ["what is in memory", "MB"]))
zoo_ratio = mem["merged_copies"] / mem["zoo"]

# %%
reveal("memory: 3 merged copies / (1 base + 3 adapters)", zoo_ratio, rtol=0.1,
       why="Each merged copy is a whole base; each adapter is r (in + out) per matrix, a few % of it.")
assert mem["base"] == sum(p.numel() * p.element_size() for p in base.parameters()) + \
    sum(b.numel() * b.element_size() for b in base.buffers()), "the zoo holds the base once"
assert 2 < zoo_ratio < 3, "three copies cost nearly 3x; the adapters add only a few % to one base"

# %% [markdown]
# The ratio approaches N, the number of behaviours, as adapters get smaller relative to the base: on a 7B model,
# 20 behaviours as merged copies are 20 models; as a zoo they are one model and 20 small files (exercise 12.1).

# %% [markdown] tags=["workshop"]
# ## 12.3 Merged adapters cost nothing at inference
# An unmerged adapter adds work to every adapted layer: besides W0 x, the forward pass computes A x, then B (A x),
# scales and adds it: four more operations per layer, 28 layers here. `merge_and_unload` folds ΔW into W0 and
# removes the adapter, so the merged model runs exactly the base model's operations.
#
# Timing on a shared machine needs care. `course_utils.deploy.interleaved_timings` calls the three models in turns
# (one call each per round, the order rotated every round) and times each call by the CPU time of this thread: the
# wall clock would also count the moments other programs had the core. `median_ratio` takes the median over rounds
# of each round's ratio, so what slows a whole round cancels, and an odd round is dropped as an outlier. Two sizes:
# one token (what the linear layers do in one step of generation, where each new token is one forward pass) and a
# batch of 8 sequences of 64 tokens (reading 8 prompts at once).
#
# **Predict:** for one token, how many times slower than the base model is the model with the adapter unmerged?

# %%
### BEGIN SOLUTION
guess_unmerged_ratio = 2.0  # 4 extra small ops per layer on a model whose own ops are tiny
### END SOLUTION
predict("unmerged / base time, one token", guess_unmerged_ratio)

# %%
from course_utils.deploy import interleaved_timings, median_ratio

adapter = work / "seed0" / "letters"
unmerged = PeftModel.from_pretrained(copy.deepcopy(base), adapter).eval()
merged = PeftModel.from_pretrained(copy.deepcopy(base), adapter).merge_and_unload().eval()
SIZES = {"1 token": (1, 1), "8 x 64 tokens": (8, 64)}
ROUNDS = {"1 token": 200, "8 x 64 tokens": 30}
timings, ratios = {}, {}
for label, shape in progress_bar(SIZES.items(), desc="timing 2 sizes"):
    ids = torch.randint(3, tok.vocab_size, shape, generator=torch.Generator().manual_seed(0))
    timings[label] = t = interleaved_timings({"base": lambda: base(input_ids=ids), "unmerged": lambda: unmerged(input_ids=ids),
                                              "merged": lambda: merged(input_ids=ids)}, rounds=ROUNDS[label])
    ratios[label] = {name: median_ratio(t, name, "base") for name in ("unmerged", "merged")}

# %% tags=["nbval-ignore-output"]
# Times differ from machine to machine and run to run: this cell's output is not compared by the tests.
import statistics

print(text_table([[label, *(f"{1e3 * statistics.median(timings[label][m]):.2f} ms" for m in ("base", "unmerged", "merged")),
                   f"{r['unmerged']:.2f}x", f"{r['merged']:.2f}x"] for label, r in ratios.items()],
                 ["input", "base (CPU time per call)", "unmerged", "merged", "unmerged / base", "merged / base"]))
plot_bars([f"{m}\n{label}" for label in SIZES for m in ("unmerged", "merged")],
          [ratios[label][m] for label in SIZES for m in ("unmerged", "merged")],
          title="Inference time relative to the base model (median of per-round ratios)",
          xlabel="model and input size (batch x tokens)",
          ylabel="time / base time", hline=1.0, hline_label="the base model")
plt.show()

# %% tags=["nbval-ignore-output"]
# The measured ratio printed here varies from run to run (the tests compare no output of this cell); the asserts
# below hold on a busy machine too.
small, large = ratios["1 token"], ratios["8 x 64 tokens"]
reveal("unmerged / base time, one token", small["unmerged"], rtol=0.5,
       why="Each adapted layer runs 4 more operations; the course model's own operations are so small that the "
           "fixed cost of an operation, not its arithmetic, sets the time.")
assert all(abs(r["merged"] - 1) < 0.15 for r in ratios.values()), "merged runs within 15% of the base, both sizes"
assert small["unmerged"] > 1.3, "unmerged is clearly slower on one token"
assert small["unmerged"] > large["unmerged"], "the adapter's share of the time shrinks as the matrices get busier"
print("merged: within 15% of the base at both sizes; unmerged: over 1.3x slower on one token, less on the batch")

# %% [markdown]
# The merged model runs as fast as the base (within timing noise: both run the very same operations), at both sizes.
# The unmerged adapter costs at least 30% more on one token, and a smaller share on the batch (the table above;
# the exact numbers depend on the machine: the ms columns are each model's median CPU time per call, the ratio
# columns the median of the per-round ratios). Why so much, for an adapter whose arithmetic is small?

# %%
from course_utils.surgery import linear_layers

shapes = [(m.in_features, m.out_features) for _, m in linear_layers(base)]
extra_flops = sum(8 * (i + o) for i, o in shapes) / sum(i * o for i, o in shapes)
in_7b = [(4096, 4096)] * 4 + [(4096, 11008), (4096, 11008), (11008, 4096)]
extra_7b = sum(8 * (i + o) for i, o in in_7b) / sum(i * o for i, o in in_7b)
print(f"extra multiply-adds of an r = 8 adapter on every linear layer: course model {extra_flops:.1%}, "
      f"a 7B Llama layer {extra_7b:.2%}")
assert extra_7b < 0.01 < extra_flops < 0.2
assert small["unmerged"] - 1 > 2 * extra_flops, "the slowdown is far more than the extra arithmetic"

# %% [markdown]
# The adapter's extra arithmetic is about a tenth of the course model's (well under 1% of a 7B layer's), far less
# than the slowdown measured on one token. What costs is the number of operations: every extra operation has a fixed price
# (a Python call, a kernel launch on a GPU), and on a small input that price dominates. On the 8 × 64 batch the
# matrices have more work, and the ratio drops. Generation is the small case: every new token is one thin forward
# pass, so an unmerged adapter's extra operations are paid once per layer per token.
# Merging removes them all: zero overhead, measured, not assumed.
#
# The merged weights are the same whether PEFT or `course_utils.lora` merges them:

# %%
from course_utils.lora import load_adapter
from course_utils.lora import merge_and_unload as course_merge_and_unload

ours = course_merge_and_unload(load_adapter(copy.deepcopy(base), adapter))
diff = max((a - b).abs().max().item() for a, b in zip(ours.state_dict().values(), merged.state_dict().values()))
print(f"largest difference between PEFT's and course_utils' merged weights: {diff}")
assert list(ours.state_dict()) == list(merged.state_dict()) and diff < 1e-6

# %% [markdown]
# ## 12.4 Combining adapters
# PEFT's `add_weighted_adapter` builds a new adapter from existing ones. With `combination_type="cat"` it stacks
# their A and B matrices (rank 8 + 8 = 16), so the new ΔW is exactly the weighted sum w1 ΔW1 + w2 ΔW2. With
# `"linear"` it averages A with A and B with B (rank stays 8), which is *not* the average of the ΔWs: the product of
# the averages has cross terms B1 A2 and B2 A1. One adapter for two behaviours: letters + chords, weights 1 and 1
# ("cat") and 0.5 and 0.5 ("linear").
#
# **Predict:** with the combined letters + chords adapter ("cat") active, the letters loss is ...

# %%
### BEGIN SOLUTION
guess_combined = "between letters alone and the base"  # the chords update acts on letters inputs too
### END SOLUTION
CHOICES = ["about the same as letters alone", "between letters alone and the base", "worse than the base"]
predict("letters loss with letters + chords combined", guess_combined, choices=CHOICES)

# %%
COMBOS = {"cat_1_1": dict(weights=[1.0, 1.0], combination_type="cat"),  # adapter names: no dots, no spaces
          "linear_half_half": dict(weights=[0.5, 0.5], combination_type="linear")}
LABELS = {"cat_1_1": "letters + chords, cat, weights 1 and 1", "linear_half_half": "letters + chords, linear, 0.5 and 0.5"}
for seed in progress_bar(SEEDS, desc="combinations, 3 seeds"):
    zoo = zoos[seed]
    for name, how in COMBOS.items():
        zoo.add_weighted_adapter(["letters", "chords"], adapter_name=name, **how)
        zoo.set_adapter(name)
        swap[seed, name] = task_losses(zoo)
ROWS = ["none (the base)", "letters", "chords", *COMBOS]
print("held-out loss, min - max over 3 seeds")
print(text_table([[LABELS.get(a, a)] + [spread(swap[s, a][t] for s in SEEDS) for t in ("letters", "chords")] for a in ROWS],
                 ["active adapter", "letters", "chords"]))

# %%
cat = "cat_1_1"
for seed in SEEDS:
    for task in ("letters", "chords"):
        own, combined, none = swap[seed, task][task], swap[seed, cat][task], swap[seed, "none (the base)"][task]
        assert own < combined < none, f"seed {seed}, {task}: the combination lands between own adapter and base"
letters_cost = [swap[s, cat]["letters"] - swap[s, "letters"]["letters"] for s in SEEDS]
chords_cost = [swap[s, cat]["chords"] - swap[s, "chords"]["chords"] for s in SEEDS]
gained = [swap[s, "none (the base)"]["letters"] - swap[s, "letters"]["letters"] for s in SEEDS]
where = [0 if c < 0.1 * g else 1 if c < g else 2 for c, g in zip(letters_cost, gained)]  # the choice, per seed
reveal("letters loss with letters + chords combined", CHOICES[max(where)],
       why="Both updates act on every input: the chords ΔW also changes how the model continues a letter.")
print(f"loss the combination costs, over each task's own adapter: letters {spread(letters_cost)}, "
      f"chords {spread(chords_cost)}")
assert min(letters_cost) > 2 * max(chords_cost), "the letters task pays far more than the chords task, every seed"

# %% [markdown]
# A combination is a compromise, measured: on every seed, each task's loss lands between its own adapter and the
# base. It is not symmetric: letters loses much of its gain, chords little.
#
# What "cat" and "linear" build, and how large each update is, checked with `course_utils.lora`: it loads the two
# adapter folders and computes each layer's ΔW = (B A) · alpha / r, which we compare with the ΔW of PEFT's
# combined adapters (`get_delta_weight`), on every seed.

# %%
combo_check = {}
for seed in SEEDS:
    ours2 = copy.deepcopy(base)
    for task in ("letters", "chords"):
        load_adapter(ours2, work / f"seed{seed}" / task, adapter_name=task)
    ours_layers, norms, cat_err, linear_gap = dict(ours2.named_modules()), {"letters": 0.0, "chords": 0.0}, [], []
    for name, layer in zoos[seed].base_model.model.named_modules():
        if hasattr(layer, "get_delta_weight") and name in ours_layers:
            d1, d2 = (ours_layers[name].delta_weight(t) for t in ("letters", "chords"))
            norms["letters"] += d1.norm().item() / 28
            norms["chords"] += d2.norm().item() / 28
            cat_err.append(((layer.get_delta_weight(cat) - (d1 + d2)).norm() / (d1 + d2).norm()).item())
            lin = layer.get_delta_weight("linear_half_half")
            linear_gap.append(((lin - (d1 + d2) / 2).norm() / ((d1 + d2) / 2).norm()).item())
    combo_check[seed] = dict(layers=len(cat_err), cat_err=max(cat_err), linear_gap=linear_gap, **norms)
print(text_table([[s, c["layers"], f"{c['letters']:.3f}", f"{c['chords']:.3f}", f"{c['cat_err']:.1e}",
                   spread(c["linear_gap"], ".2f")] for s, c in combo_check.items()],
                 ["seed", "layers", "mean |ΔW| letters", "mean |ΔW| chords", "cat vs ΔW1 + ΔW2",
                  "linear vs (ΔW1 + ΔW2) / 2"]))

# %%
for c in combo_check.values():
    assert c["layers"] == 28 and c["cat_err"] < 1e-5, "'cat' is the exact sum of the two updates, in every layer"
    assert min(c["linear_gap"]) > 0.05, "'linear' is not the average of the updates: the cross terms"
    assert 0.8 < c["chords"] / c["letters"] < 1.25, "the two updates are of about the same size"

# %% [markdown]
# Three things, on every seed. "cat" is the exact sum of the two updates (relative difference at float rounding).
# "linear" differs from the average of the two updates by the cross terms B1 A2 and B2 A1 (the last column, relative
# to the average): an update neither adapter learned. PEFT's default, "svd", takes the exact sum and truncates it
# to a rank by SVD. And the asymmetry is not a matter of size: the two updates have about the same norm (mean
# Frobenius norm per layer, within 25% of each other). The sum of the two acts on every input, and how much one
# update disturbs the other task depends on the tasks, not on a number you can read off the adapters: here the
# chords update undoes most of what the letters one gained on letters, while the letters update costs chords little.
# Adapters do not live in separate compartments. When behaviours must not interfere, swapping (12.2) keeps them
# apart; combining is for behaviours you want at the same time, and its cost has to be measured per task, as here.

# %% [markdown]
# ## 12.5 Merging into a 4-bit base
# A QLoRA adapter was trained on a 4-bit NF4 base. Merging it means dequantize W0, add ΔW, and quantize again: the
# sum is rounded to the 4-bit grid, so the merged model is not the model that was trained. The alternative keeps the
# adapter apart (the trained model itself: 4-bit base + adapter), or merges into a float copy of the base.
# `course_utils.experiments.run("merge_into_4bit", seed)` does all three on the course model (QLoRA on letters,
# 10 steps) and measures how far each is from the trained model.
#
# **Predict:** by how much (in %) does merging into the 4-bit base change the held-out loss of the trained model?

# %%
### BEGIN SOLUTION
guess_4bit_loss_change = 0.5  # rounding each weight to NF4 again: an error of NF4's own size, small for the loss
### END SOLUTION
predict("held-out loss change after merging into 4 bits (%)", guess_4bit_loss_change)

# %%
from course_utils import experiments
from course_utils.nf4 import quantize_model

four_bit = {seed: experiments.run("merge_into_4bit", seed) for seed in progress_bar(SEEDS, desc="QLoRA merge, 3 seeds")}
near_batch = encode_texts(tok, data.texts("near_test", 48))  # the batch the experiment evaluates on
with torch.no_grad():
    nf4_base = quantize_model(copy.deepcopy(base))
    nf4_error = ((nf4_base(**near_batch).logits - base(**near_batch).logits).norm() / base(**near_batch).logits.norm()).item()
change = {s: 100 * (o.signals["merged_4bit_loss"] / o.signals["trained_loss"] - 1) for s, o in four_bit.items()}
print(text_table([[s, f"{o.signals['trained_loss']:.4f}", f"{o.signals['merged_4bit_loss']:.4f} ({change[s]:+.2f}%)",
                   f"{o.signals['merged_float_loss']:.4f}", f"{o.broken:.2%}", f"{o.fixed:.0e}",
                   f"{o.signals['largest_weight_rounding_error']:.3f}"] for s, o in four_bit.items()],
                 ["seed", "trained (adapter apart)", "merged into 4 bits", "merged into float",
                  "logit error, 4-bit merge", "logit error, float merge", "largest weight error"]))
print(f"for scale, quantizing the float base to NF4 moves its logits by {nf4_error:.2%}")

# %%
reveal("held-out loss change after merging into 4 bits (%)", sum(map(abs, change.values())) / 3, atol=1.0,
       why="The re-rounding moves every weight by up to half an NF4 step: the logits move a few %, the mean loss "
           "barely, and in either direction.")
errors = [o.broken for o in four_bit.values()]
assert all(o.fixed < 1e-5 < 0.01 < o.broken for o in four_bit.values()), "4-bit merge moves the logits; float does not"
assert nf4_error / 2 < min(errors) and max(errors) < 2 * nf4_error, "the size of quantizing to NF4 once more"
assert all(abs(c) < 2 for c in change.values()), "the loss changes by under 2% on every seed"
assert min(change.values()) < 0 < max(change.values()), "up on some seeds, down on others"

# %% [markdown]
# Merging into the 4-bit base moves the logits by a few % on every seed (the table), about as much as quantizing the
# float model to NF4 in the first place: the merge is one more rounding to the 4-bit grid, and the trained adapter
# had learned to work with the *old* rounding. Merging into a float copy of the base reproduces the trained model to
# float precision. On this model the held-out loss barely moves either way (under 2%, sometimes down), so the
# quality cost is small here; what is lost is exactness: the merged 4-bit model is a different model from the one you
# trained and evaluated. So: keep the adapter apart on the 4-bit base (what QLoRA trained), or dequantize the base,
# merge in float (16-bit on a GPU), and quantize later only if memory demands it, then evaluate again.

# %% [markdown]
# ## 12.6 Export: a merged model that needs nothing but transformers
# `merge_and_unload` returns a plain `LlamaForCausalLM`; `save_pretrained` writes it as an ordinary model folder.
# A fresh Python process that imports transformers only (no PEFT, no course_utils) loads it and generates.
#
# **Predict:** does the reloaded model generate the same text (greedy decoding) as the unmerged PEFT model?

# %%
### BEGIN SOLUTION
guess_same_text = "yes"  # the merged logits differ from the unmerged ones by float rounding only
### END SOLUTION
predict("the exported model writes the same text", guess_same_text, choices=["yes", "no"])

# %%
import json
import subprocess
import sys

from course_utils.training import generate

export = work / "letters_merged"
merged.save_pretrained(export)
tok.save_pretrained(export)
print("files:", ", ".join(sorted(p.name for p in export.iterdir())))
FRESH_PROCESS = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompt, n_new = sys.argv[1], sys.argv[2], int(sys.argv[3])
model, tok = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
ids = tok(prompt, return_tensors="pt").input_ids
with torch.no_grad():
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new, do_sample=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
print(json.dumps({"text": tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True), "class": type(model).__name__,
                  "imported": sorted(m for m in ("peft", "course_utils") if m in sys.modules)}))
"""
prompt, n_new = "dear alice, today the cat ate my", 5
# -I: an isolated interpreter, which ignores PYTHONPATH and its start-up hooks, so nothing but what the script
# imports gets loaded (the script reports what of peft and course_utils ended up in sys.modules)
fresh = json.loads(subprocess.run([sys.executable, "-I", "-c", FRESH_PROCESS, str(export), prompt, str(n_new)],
                                  capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
peft_text = generate(unmerged, tok, prompt, max_new_tokens=n_new)
print(f"the unmerged PEFT model: {prompt}{peft_text}")
print(f"fresh process, {fresh['class']}, modules imported from peft / course_utils: {fresh['imported']}: "
      f"{prompt}{fresh['text']}")

# %%
reveal("the exported model writes the same text", "yes" if fresh["text"] == peft_text else "no",
       why="Merging changes each logit by float rounding only, far less than the gap between the top two tokens.")
assert fresh["text"] == peft_text and fresh["imported"] == [] and fresh["class"] == "LlamaForCausalLM"
assert not (export / "adapter_config.json").exists(), "an ordinary model folder: no adapter left"
assert (export / "model.safetensors").stat().st_size == (work / "base" / "model.safetensors").stat().st_size

# %% [markdown]
# The exported folder is a base-sized model (no adapter files), a fresh process loads it with transformers alone,
# and greedy decoding writes the same words as the unmerged PEFT model, token for token (5 tokens: 15 steps teach
# the letter's opening, not yet its sign-off, "see you soon", so longer letters derail). That is the deployment
# choice in one line: merge for a single behaviour at the base model's speed; keep adapters apart for a zoo of
# behaviours at the memory of one model.

# %% [markdown]
# ## 12.7 Exercises
# **Exercise 12.1.** A 7B Llama (Llama-2-7B's shapes, chapter 08) in bfloat16 serves 20 behaviours, each a LoRA
# adapter with r = 16 on all linear layers, also in bfloat16. How many times more memory do 20 merged copies take
# than one base + 20 adapters? (`course_utils.memory.lora_param_count` counts an adapter's parameters.)

# %%
from transformers import LlamaConfig, LlamaForCausalLM

from course_utils.memory import lora_param_count

with torch.device("meta"):  # shapes only, no memory
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32))
n_7b = sum(p.numel() for p in llama.parameters())
### BEGIN SOLUTION
answer_7b_zoo_ratio = 20 * n_7b / (n_7b + 20 * lora_param_count(llama, r=16, target_modules=None))
### END SOLUTION
per_adapter = lora_param_count(llama, r=16, target_modules=None)
exercise("12.1 7B: 20 merged copies / (base + 20 adapters)", answer_7b_zoo_ratio,
         expected=20 * n_7b * 2 / (n_7b * 2 + 20 * per_adapter * 2), rtol=1e-3,
         hint="bytes cancel (all bfloat16): 20 x base parameters / (base + 20 x adapter parameters)")

# %% [markdown]
# **Exercise 12.2.** Merge by hand. Complete `answer_merged_weight(layer, name)`: for a PEFT LoRA layer, return the
# weight `merge_and_unload` would leave in it for the adapter `name` (`layer.base_layer.weight`,
# `layer.lora_A[name].weight`, `layer.lora_B[name].weight`, `layer.scaling[name]`). The check compares it with the
# weight of the model merged in 12.3.

# %%
def answer_merged_weight(layer, name):
    ### BEGIN SOLUTION
    return layer.base_layer.weight + (layer.lora_B[name].weight @ layer.lora_A[name].weight) * layer.scaling[name]
    ### END SOLUTION


q_proj = unmerged.base_model.model.model.layers[1].self_attn.q_proj
with torch.no_grad():
    by_hand = answer_merged_weight(q_proj, "default")
gap = None if by_hand is None else (by_hand - merged.model.layers[1].self_attn.q_proj.weight).abs().max().item()
exercise("12.2 merge one layer by hand (largest difference)", gap, expected=0.0, atol=1e-6,
         hint="W0 + (B @ A) * scaling: B is (out x r), A is (r x in), scaling = alpha / r")

# %%
from course_utils.checks import summary

summary()

# %% [markdown]
# **Summary.** An adapter file is under a tenth of the course model's weights (far less on a large model). One base with
# three adapters swapped by `set_adapter` serves three behaviours, each best on its own task, at a fraction of the
# memory of three merged copies. Merged, an adapter costs nothing at inference: the merged model runs the base
# model's own operations, while the unmerged one pays for extra operations per layer, most on small inputs (one
# generated token).
# Combining adapters is a compromise that each task pays for, unequally; "cat" is the exact sum of the updates,
# "linear" is not. Merging into a 4-bit base re-rounds the weights (logits move by about NF4's own error), merging
# into float does not. A merged model saved with `save_pretrained` is an ordinary transformers model and writes the
# same text.
