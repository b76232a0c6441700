# %% [markdown]
# # 08 · PEFT in practice: LoraConfig, training, saving, and adapters that move both ways
#
# Runtime: about 20 s on a 2-core laptop, no GPU.
#
# Chapters 05-07 built LoRA from scratch (`course_utils.lora`). Most people fine-tune with Hugging Face **PEFT**, so
# this chapter does the same things with it, and checks at each step that the two agree:
# - `LoraConfig` + `get_peft_model` + `print_trainable_parameters`, on the course model and on a 7B Llama (built on
#   PyTorch's "meta" device: shapes only, no memory), where the often quoted "< 0.5% trainable" comes from;
# - training a PEFT model with the course's training loop, and the same run with `course_utils.lora`;
# - a task whose answer tokens the model never produced in pretraining, where adapters alone stay unsure, and
#   `modules_to_save` fixes it;
# - `save_pretrained`, `PeftModel.from_pretrained`, `merge_and_unload`, several adapters on one base;
# - adapters moving between PEFT and `course_utils.lora` in both directions, logits identical.

# %% [markdown]
# ## 8.0 Versions

# %% tags=["workshop"]
import contextlib
import copy
import importlib.metadata as md
import io
import platform
import warnings

import matplotlib.pyplot as plt
import torch

# PEFT 0.21 asks transformers 5 for a deprecated attribute when it wraps a model; the warning is about PEFT's
# internals, not about anything this chapter does.
warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)

torch.set_num_threads(1)  # the course model's ops are tiny: one thread is as fast, and never stalls on a busy machine
print("python", platform.python_version(), "| torch", md.version("torch"), "| transformers", md.version("transformers"),
      "| peft", md.version("peft"))

# %% [markdown] tags=["workshop"]
# ## 8.1 The config, and what it trains
# The configuration most tutorials start from (the QLoRA paper's r and alpha, on q and v only):
#
# ```python
# config = LoraConfig(r=64, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.1, bias="none")
# model = get_peft_model(base_model, config)
# model.print_trainable_parameters()
# ```
#
# **Predict:** on the course model (about 1.07 M parameters, 4 layers, hidden size 128), what percentage of the
# parameters does this config train?

# %%
from course_utils.checks import exercise, predict, reveal

### BEGIN SOLUTION
guess_course_pct = 100 * (4 * 2 * 64 * (128 + 128)) / (1.07e6 + 4 * 2 * 64 * 256)  # r (in + out) per matrix
### END SOLUTION
predict("trainable % on the course model, r = 64 on q, v", guess_course_pct)

# %%
from peft import LoraConfig, PeftModel, get_peft_model

from course_utils.lora import trainable_report
from course_utils.models import load_course_model

base, tok = load_course_model()
OUTLINE = dict(r=64, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.1, bias="none")
peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(**OUTLINE))
peft_model.print_trainable_parameters()
with contextlib.redirect_stdout(io.StringIO()) as printed:
    peft_model.print_trainable_parameters()
trainable, total = peft_model.get_nb_trainable_parameters()
course_pct = 100 * trainable / total
all_linear = get_peft_model(copy.deepcopy(base), LoraConfig(**{**OUTLINE, "target_modules": "all-linear"}))
all_linear.print_trainable_parameters()

# %%
reveal("trainable % on the course model, r = 64 on q, v", course_pct, rtol=0.1,
       why="r (in + out) = 64 x 256 per matrix, 8 matrices: large next to a model this small.")
assert printed.getvalue().strip() == trainable_report(peft_model), "course_utils counts exactly as PEFT does"
assert course_pct > 5, "on a 1 M-parameter model, r = 64 is not a small adapter"
assert round(sum(p.numel() for p in base.parameters()) / 1e6, 2) == 1.07, "the course model's size, as stated above"

# %% [markdown] tags=["workshop-subslide"]
# Over 5%: far from "< 0.5%". The percentage depends on the model's size: an adapter on a d × d matrix has
# r · 2d parameters against d², so its share falls like 2r / d. `course_utils.lora.trainable_report` prints the
# same line for our own LoRA (asserted above, character for character).
#
# Now Llama-2-7B, the model the claim is about. Built on the "meta" device, a model has every parameter's shape
# and none of its memory, so PEFT can wrap and count it on a laptop.
#
# **Predict:** the same config on a 7B Llama trains what percentage?

# %%
### BEGIN SOLUTION
guess_7b_pct = 100 * 32 * 2 * 64 * (4096 + 4096) / 6.74e9
### END SOLUTION
predict("trainable % on Llama-2-7B, r = 64 on q, v", guess_7b_pct)

# %%
from transformers import LlamaConfig, LlamaForCausalLM

from course_utils.memory import lora_param_count

LLAMA_2_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32)
with torch.device("meta"):
    llama = LlamaForCausalLM(LlamaConfig(**LLAMA_2_7B))
n_7b = sum(p.numel() for p in llama.parameters())
llama_peft = get_peft_model(llama, LoraConfig(**OUTLINE))
llama_peft.print_trainable_parameters()
t7, all7 = llama_peft.get_nb_trainable_parameters()
calc = lora_param_count(llama, r=64, target_modules=["q_proj", "v_proj"])  # the memory calculator, from the shapes
pct_7b = 100 * t7 / all7
print(f"base parameters: {n_7b:,}; LoRA by the memory calculator: {calc:,}; trainable: {pct_7b:.3f}%")
all_7b = lora_param_count(llama, r=64, target_modules=None)
print(f"the same r = 64 on all linear layers: {all_7b:,} = {100 * all_7b / (n_7b + all_7b):.2f}%")

# %%
reveal("trainable % on Llama-2-7B, r = 64 on q, v", pct_7b, rtol=0.1,
       why="2 x 32 matrices of 4096 x 4096, each with 64 x 8192 adapter parameters, against 6.74 B.")
assert calc == t7 and all7 == n_7b + t7, "PEFT's count = the memory calculator's, from the same shapes"
assert pct_7b < 0.5 < 100 * all_7b / (n_7b + all_7b), "< 0.5% holds for q, v at r = 64, not for all linear layers"

# %% [markdown]
# The often-quoted "< 0.5% trainable" holds for exactly this config, just (the percentage printed above): r = 64 on q
# and v of a 7B model. Put the same rank on all linear layers, as the QLoRA paper recommends (and chapter 06
# measured), and it is more than 0.5%; still tiny next to full fine-tuning, but the number is a property of the
# config and the model, not of LoRA.

# %% [markdown] tags=["workshop"]
# ## 8.2 Training a PEFT model, and the same run in course_utils.lora
# A PEFT model is an ordinary `torch.nn.Module` whose only trainable parameters are the adapters, so any training
# loop works: the course's (`course_utils.training.train`, AdamW, with a progress bar), or transformers' `Trainer`.
# Below, 10 steps on the near domain with all linear layers, r = 8, alpha 16, dropout 0.1, three seeds; and the
# same with `course_utils.lora.add_lora`.
#
# **Predict:** with the same seed, are the two runs' losses identical, close, or different?

# %%
### BEGIN SOLUTION
guess_same_losses = "identical"  # same init order, same ops, same dropout draws
### END SOLUTION
predict("PEFT vs course_utils.lora losses", guess_same_losses, choices=["identical", "close", "different"])

# %% tags=["workshop-subslide"]
from course_utils import data
from course_utils.lora import add_lora
from course_utils.plots import plot_loss_curves, text_table
from course_utils.sweeps import over_seeds, spread
from course_utils.training import batches_from_examples, encode_texts, eval_loss, progress_bar, train

near, held_out = data.texts("near_train"), encode_texts(tok, data.texts("near_test", 24))
letters = lambda seed: batches_from_examples(lambda rows: encode_texts(tok, rows), near, 8, seed=seed)  # noqa: E731
SEEDS, RECIPE = [0, 1, 2], dict(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.1)
both = {}
for seed in progress_bar(SEEDS, desc="PEFT and course_utils.lora, 3 seeds"):
    torch.manual_seed(seed)  # the random A
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(**RECIPE))
    torch.manual_seed(seed)
    ours = add_lora(copy.deepcopy(base), "all-linear", r=8, alpha=16, dropout=0.1)
    both[seed] = {name: (train(m, letters(seed), 10, lr=5e-3, seed=seed, progress=False).losses, eval_loss(m, held_out))
                  for name, m in [("PEFT", theirs), ("course_utils.lora", ours)]}
    if seed == 0:
        trained_peft = theirs
plot_loss_curves({name: both[0][name][0] for name in both[0]}, title="PEFT vs course_utils.lora, same seed")
plt.show()
print(text_table([[s, f"{r['PEFT'][1]:.6f}", f"{r['course_utils.lora'][1]:.6f}",
                   max(abs(a - b) for a, b in zip(r["PEFT"][0], r["course_utils.lora"][0]))] for s, r in both.items()],
                 ["seed", "held-out loss, PEFT", "held-out loss, course_utils.lora", "max |loss difference|"]))

# %%
identical = all(r["PEFT"] == r["course_utils.lora"] for r in both.values())
reveal("PEFT vs course_utils.lora losses", "identical" if identical else "close",
       why="Same construction order (so the same A from the same seed), same ops in the same order, same dropout.")
assert identical, "every loss of every step, and the held-out loss, bit for bit, on every seed"

# %% [markdown]
# Not close: identical, every loss of every step, on every seed. `course_utils.lora`
# builds A and B in PEFT's order (so one seed draws the same A in both), runs the same operations in the same order, and
# applies dropout to the adapter's input as PEFT does. Whatever you learned about LoRA from our code holds for PEFT.

# %% [markdown]
# ## 8.3 When adapters alone stay unsure: modules_to_save
# The review task answers "positive" or "negative", words the course model never produced: the tokens that start
# them never occur in its pretraining text, so their rows of the output layer (`lm_head`) were never trained to be
# predicted. LoRA on all linear layers (which leaves out `lm_head`, as PEFT's "all-linear" does) has to reach those
# rows by bending the hidden states. PEFT's `modules_to_save=["lm_head"]` trains a full copy of the output layer next
# to the adapters (and saves it with them).
#
# **Predict:** after 30 steps, what mean probability does LoRA alone put on the right answer's first token?

# %%
### BEGIN SOLUTION
guess_label_prob = 0.01  # the rows were never trained: far less than a coin flip
### END SOLUTION
predict("LoRA alone: mean probability of the right label", guess_label_prob)

# %%
from collections import Counter

from course_utils.training import choice_accuracy, encode_pairs

rows, test = data.load("sentiment_train"), data.load("sentiment_test", 64)
first_ids = {lab: tok(" " + lab, add_special_tokens=False).input_ids[0] for lab in ("positive", "negative")}
seen = Counter(i for ids in tok(data.texts("pretrain")).input_ids for i in ids)
print({lab: f"token {tok.decode([i])!r} occurs {seen[i]} times in pretraining" for lab, i in first_ids.items()})
reviews = lambda seed: batches_from_examples(  # noqa: E731
    lambda b: encode_pairs(tok, [r["prompt"] for r in b], [r["label"] for r in b]), rows, 8, seed=seed)
prompts, labels = [r["prompt"] for r in test], [r["label"] for r in test]


@torch.no_grad()
def label_probability(model):
    """Mean probability of the right label's first token after each test prompt."""
    batch = encode_pairs(tok, prompts, labels)
    model.eval()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    first = (batch["labels"] != -100).int().argmax(1)  # the first answer position
    probs = logits[torch.arange(len(prompts)), first - 1].softmax(-1)
    return probs[torch.arange(len(prompts)), batch["labels"][torch.arange(len(prompts)), first]].mean().item()


HEADS = {"LoRA alone": {}, "LoRA + modules_to_save=['lm_head']": {"modules_to_save": ["lm_head"]}}
sentiment = {}
for name, extra in progress_bar(HEADS.items(), desc="2 configs x 3 seeds"):
    def one(seed, extra=extra):
        torch.manual_seed(seed)
        m = get_peft_model(copy.deepcopy(base), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", **extra))
        train(m, reviews(seed), 30, lr=5e-3, seed=seed, progress=False)
        return m, label_probability(m), choice_accuracy(m, tok, prompts, labels)
    sentiment[name] = over_seeds(one, SEEDS)
print(text_table([[name, f"{runs[0][0].get_nb_trainable_parameters()[0]:,}", spread([r[1] for r in runs.values()]),
                   spread([r[2] for r in runs.values()], ".2f")] for name, runs in sentiment.items()],
                 ["config", "trainable", "P(right label), 3 seeds", "accuracy, 3 seeds"]))

# %%
alone, saved = ([r[1] for r in runs.values()] for runs in sentiment.values())
reveal("LoRA alone: mean probability of the right label", sum(alone) / 3, atol=0.02,
       why="The label tokens' output rows were never trained; reaching them through the hidden states is slow.")
assert all(seen[i] == 0 for i in first_ids.values()), "the labels' first tokens never occur in pretraining"
assert max(alone) < 0.05 and min(saved) > 0.5, "LoRA alone stays unsure; with lm_head trained it is sure, every seed"
accuracy = {name: [r[2] for r in runs.values()] for name, runs in sentiment.items()}
assert min(accuracy["LoRA + modules_to_save=['lm_head']"]) >= max(accuracy["LoRA alone"]) - 1e-9
assert min(accuracy["LoRA alone"]) < 0.6 and max(accuracy["LoRA alone"]) > 0.9, "LoRA alone: from chance to right"
print(f"P(right label): LoRA alone {spread(alone, '.4f')}, with lm_head {spread(saved)}")

# %% [markdown]
# Two numbers, two stories. **Accuracy** only asks which of the two labels' first tokens scores higher, and LoRA
# alone gets that anywhere from a coin flip to every review, from seed to seed (the accuracy column; with
# `lm_head` trained, every review on every seed). The **probability** asks how sure the model is, and LoRA alone
# puts only the sliver printed above on the right label: nearly all of the probability still goes to tokens it knows.
# Generate from that model and it will not write "positive". Training the output layer fixes the cause instead of
# working around it: the two label rows move toward the
# hidden states that precede them. The price is in the trainable column: `lm_head` is vocab × hidden, a full
# matrix. PEFT also has `trainable_token_indices`, which trains only chosen rows of an embedding, for the same
# problem at a fraction of the cost. `course_utils.lora` keeps to LoRA layers, and says so when asked to load such
# an adapter (8.5).

# %% [markdown] tags=["workshop"]
# ## 8.4 Saving, loading, merging, switching
# `save_pretrained` writes the adapter only: a config and the tensors.
#
# **Predict:** the all-linear r = 8 adapter trained in 8.2 holds 78,848 float32 numbers. How many kB is
# `adapter_model.safetensors`?

# %%
### BEGIN SOLUTION
guess_adapter_kb = 78_848 * 4 / 1000  # 4 bytes each, plus a small header
### END SOLUTION
predict("adapter_model.safetensors (kB)", guess_adapter_kb)

# %%
import json
import tempfile
from pathlib import Path

work = Path(tempfile.mkdtemp(prefix="ch08_"))
trained_peft.save_pretrained(work / "letters")
sizes = {p.name: p.stat().st_size for p in sorted((work / "letters").iterdir())}
# the README and the config name the base model's folder, so their sizes depend on where the course lives
print("files:", ", ".join(sizes))
cfg = json.loads((work / "letters" / "adapter_config.json").read_text())
print({k: cfg[k] for k in ["r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "bias"]})
base_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
print(f"the base model's weights: {base_bytes / 1e6:.2f} MB; the adapter: "
      f"{sizes['adapter_model.safetensors'] / 1e3:.1f} kB")

# %%
reveal("adapter_model.safetensors (kB)", sizes["adapter_model.safetensors"] / 1e3, rtol=0.1,
       why="78,848 numbers x 4 bytes, plus a JSON header naming each tensor.")
assert trained_peft.get_nb_trainable_parameters()[0] == 78_848, "the count stated in the question"
assert 78_848 * 4 < sizes["adapter_model.safetensors"] < 78_848 * 4 * 1.1

# %% [markdown] tags=["workshop-subslide"]
# Loading takes a fresh base model and the folder; `merge_and_unload` folds ΔW into W0 and returns a plain
# transformers model (no PEFT code left at inference). Several adapters can share one base:
# `load_adapter(folder, adapter_name=...)` adds one, `set_adapter` switches.

# %%
batch = encode_texts(tok, data.texts("near_test", 8))
with torch.no_grad():
    want = trained_peft.eval()(**batch).logits
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), work / "letters").eval()
    got = loaded(**batch).logits
    merged = PeftModel.from_pretrained(copy.deepcopy(base), work / "letters").merge_and_unload().eval()
    got_merged = merged(**batch).logits
print(f"from_pretrained: max |logit diff| {(got - want).abs().max().item()}; merged: "
      f"{(got_merged - want).abs().max().item():.1e} (float rounding of W0 + dW); merged is a "
      f"{type(merged).__name__}")
assert torch.equal(got, want) and (got_merged - want).abs().max() < 1e-4 and not isinstance(merged, PeftModel)

# %% tags=["workshop-skip"]
sentiment["LoRA + modules_to_save=['lm_head']"][0][0].save_pretrained(work / "reviews")  # 8.3's, seed 0
loaded.load_adapter(work / "reviews", adapter_name="reviews")
review = "review: the plum at the house was nice and sweet. sentiment:"
switch = {}
for name in ["default", "reviews"]:
    loaded.set_adapter(name)
    switch[name] = (eval_loss(loaded, held_out), choice_accuracy(loaded, tok, prompts, labels))
    print(f"active adapter {name!r:10}: letters held-out loss {switch[name][0]:.3f}, review accuracy "
          f"{switch[name][1]:.2f}")
assert switch["default"][0] < switch["reviews"][0] and switch["reviews"][1] > switch["default"][1]

# %% [markdown] tags=["workshop-skip"]
# One base in memory, two behaviours, switched by name: each adapter is best at its own task (asserted above). The
# reviews adapter is 8.3's with `lm_head` trained (seed 0): PEFT swaps its copy of the output layer in and out with
# the adapter.

# %% [markdown]
# ## 8.5 Adapters move both ways
# `course_utils.lora.save_adapter(model, folder)` writes PEFT's own folder format, and
# `course_utils.lora.load_adapter(model, folder)` reads a folder PEFT wrote (any targets, rank, alpha, rsLoRA).
#
# **Predict:** an adapter trained with `course_utils.lora`, saved, and loaded with `PeftModel.from_pretrained`:
# the largest difference between the two models' logits?

# %%
### BEGIN SOLUTION
guess_roundtrip_diff = 0.0
### END SOLUTION
predict("max |logit diff|, course_utils -> PEFT", guess_roundtrip_diff)

# %%
from course_utils.lora import load_adapter, save_adapter

torch.manual_seed(0)
ours = add_lora(copy.deepcopy(base), ["q_proj", "v_proj", "down_proj"], r=4, alpha=8, use_rslora=True)
train(ours, letters(0), 10, lr=5e-3, progress=False)
save_adapter(ours, work / "ours")
in_peft = PeftModel.from_pretrained(copy.deepcopy(base), work / "ours").eval()
back = load_adapter(copy.deepcopy(base), work / "letters")  # the folder PEFT's save_pretrained wrote in 8.4
with torch.no_grad():
    diffs = {"course_utils -> PEFT": (in_peft(**batch).logits - ours.eval()(**batch).logits).abs().max().item(),
             "PEFT -> course_utils": (back.eval()(**batch).logits - want).abs().max().item()}
print(diffs)

# %%
reveal("max |logit diff|, course_utils -> PEFT", diffs["course_utils -> PEFT"], atol=1e-6,
       why="Same tensors, same scaling, same ops: the two implementations compute the same numbers.")
assert diffs == {"course_utils -> PEFT": 0.0, "PEFT -> course_utils": 0.0}, "identical logits both ways"
sentiment["LoRA + modules_to_save=['lm_head']"][0][0].save_pretrained(work / "reviews_head")
try:
    load_adapter(copy.deepcopy(base), work / "reviews_head")
except ValueError as err:
    refusal = str(err)
print(refusal[refusal.index("uses"):][:300])
assert "modules_to_save" in refusal and "Fix:" in refusal

# %% [markdown]
# Both directions give logits identical to the last bit. What `course_utils.lora` cannot represent (a trained
# copy of `lm_head`, DoRA, ...) it refuses with the way out, rather than loading half an adapter.

# %% [markdown]
# ## 8.6 Exercises
# **Exercise 8.1.** Llama-2-7B with r = 16 on all linear layers: how many trainable parameters, and what
# percentage of the total (base + adapters)? The 7B shapes are in chapter 06, exercise 6.2.

# %%
### BEGIN SOLUTION
answer_7b_r16 = 32 * 16 * (4 * (4096 + 4096) + 3 * (4096 + 11008))
answer_7b_r16_pct = 100 * answer_7b_r16 / (n_7b + answer_7b_r16)
### END SOLUTION
r16 = lora_param_count(llama, r=16, target_modules=None)  # every linear layer but lm_head
exercise("8.1a 7B, r = 16, all linear", answer_7b_r16, expected=r16, rtol=0,
         hint="r x (in + out) for 7 matrices per layer, 32 layers")
exercise("8.1b its share (%)", answer_7b_r16_pct, expected=100 * r16 / (n_7b + r16), rtol=1e-3,
         hint="trainable / (base + trainable)")

# %% [markdown]
# **Exercise 8.2.** Write the `LoraConfig` for: rank 16, alpha 32, every linear layer, dropout 0.05, rsLoRA on.
# The check builds a PEFT model from it and compares the scaling of one layer with `course_utils.sweeps.scaling`.

# %%
### BEGIN SOLUTION
answer_config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.05, use_rslora=True)
### END SOLUTION
from course_utils.sweeps import scaling

check = (lambda c: get_peft_model(copy.deepcopy(base), c).base_model.model.model.layers[0].mlp.down_proj.scaling[
    "default"]) if isinstance(answer_config, LoraConfig) else None
exercise("8.2 rsLoRA config's scaling", check(answer_config) if check else None,
         expected=scaling(32, 16, use_rslora=True), rtol=1e-9, hint="use_rslora=True: alpha / sqrt(r)")

# %% [markdown]
# **Question 8.3.** The adapter trained with `modules_to_save=["lm_head"]` is bigger on disk than the plain LoRA one
# (the trainable column of 8.3), and on a 7B model with a 32,000-row head the gap is far larger. Name two ways to
# keep the fix of 8.3 and most of the size saving.
#
# ### BEGIN SOLUTION
# Train only the rows that matter: PEFT's `trainable_token_indices` updates chosen embedding / output rows (here the
# label tokens) and saves only those. Or put the new labels on tokens the model already predicts well (a verbaliser:
# map "positive" to a word it knows), so plain LoRA reaches them through the hidden states. A LoRA adapter on
# `lm_head` itself (a low-rank update of the head) is a third option, in between.
# ### END SOLUTION

# %%
from course_utils.checks import summary

summary()

# %% [markdown]
# **Summary.** PEFT's `LoraConfig` / `get_peft_model` / `print_trainable_parameters` count exactly as
# `course_utils.lora` does; the often-quoted config trains < 0.5% of a 7B model but > 5% of the course model, and > 0.5%
# of the 7B once all linear layers are adapted. Training a PEFT model with the course loop gives the same losses as
# `course_utils.lora`, bit for bit. Labels the model never produced need their output rows trained
# (`modules_to_save`). Adapters save to a few hundred kB, load, merge, switch, and move between PEFT and
# `course_utils.lora` with identical logits.
