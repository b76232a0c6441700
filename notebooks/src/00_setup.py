# %% [markdown]
# # 00 · Setup and the map of the course
#
# **LoRA & QLoRA: fine-tuning large language models when you don't have infinite GPUs.**
#
# Runtime: about 10 s on a 2-core laptop, no GPU, no internet.
#
# By the end of the course you will be able to:
# - explain **where fine-tuning fits** in the LLM training pipeline;
# - **quantify** why full fine-tuning is impractical on consumer hardware (and correct a popular rule of thumb);
# - explain **intrinsic dimensionality** and why a low-rank update is enough;
# - **implement LoRA from scratch** and prove it equals Hugging Face PEFT;
# - reason about **rank, alpha, dropout and layer targeting** with measurements, not folklore;
# - build **NF4 + double quantization** and show it stores the same bytes as bitsandbytes (QLoRA);
# - **diagnose** a fine-tune that doesn't work, and choose between LoRA, QLoRA, retrieval and prompting.

# %% [markdown]
# ## 0.1 How the chapters work
#
# Every chapter asks you to **predict** before it measures. A prediction cell looks like this:
#
# ```python
# guess = None  # your prediction
# predict("parameters of the course model", guess)
# ```
#
# Replace `None` with your number (or one of the offered choices), run the cell, and run on. After the
# measurement a `reveal(...)` line says *you predicted X, measured Y*, and when you were far off, why. The
# exercises at the end of each chapter are checked the same way (✅ or ❌ with a hint). Anything you leave at
# `None` prints "not answered yet" and never stops *Run All*, so you can always run a chapter top to bottom first
# and come back. The same chapters with every answer filled in and every output stored are in
# `solutions/notebooks/` (the reference edition): try first, then compare.

# %% [markdown]
# ## 0.2 The map
#
# | # | Chapter | You will measure |
# |---|---|---|
# | 00 | Setup and map | the doctor passes; the course model talks and reads its context |
# | 01 | The fine-tuning pipeline | the same prompts before and after a short fine-tune; what it forgot |
# | 02 | The memory wall | bytes per parameter for full FT, LoRA, QLoRA: predicted, then measured |
# | 03 | Precision and quantization | fp32/fp16/bf16 error; absmax vs blockwise int8 and int4 |
# | 04 | Intrinsic dimension | how few directions a fine-tune needs (pretrained vs random init) |
# | 05 | The LoRA idea | W = W0 + BA; the SVD spectrum of a real weight update |
# | 06 | Initialization and placement | why B = 0; q,v vs all linear layers |
#
# Two autograded labs go with them: `labs/lab01_memory_wall` (after chapter 02) and
# `labs/lab02_lora_from_scratch` (after chapter 05). Later chapters build on these: hyperparameters, PEFT in
# practice, QLoRA, failure modes, choosing between LoRA and its alternatives, merging and deployment.

# %% [markdown]
# ## 0.3 Versions
# Everything is pinned (`requirements.txt`); if a version below differs from the pin, run `make setup`.

# %%
import importlib.metadata as md
import platform

import torch

torch.set_num_threads(1)  # the course model's ops are tiny: one thread is as fast, and never stalls on a busy machine
print("python", platform.python_version())
for pkg in ["torch", "transformers", "peft", "bitsandbytes", "matplotlib", "nbgrader"]:
    print(f"{pkg:<13}", md.version(pkg))

# %% [markdown]
# ## 0.4 The preflight check
# `doctor()` checks versions, the device, the bitsandbytes backend, that the hub is offline, and that the course
# model matches its checksum. It is the same as `python -m course_utils doctor` in a terminal.

# %% tags=["nbval-ignore-output"]
from course_utils.doctor import doctor

ready = doctor()

# %%
assert ready, "the doctor found a problem: read the PROBLEMS list above, it says how to fix each one"

# %% [markdown]
# ## 0.5 Meet the course model
#
# A real Llama (the same code path as Llama-3), only much smaller. It was pretrained on a small generated world
# (stories, questions, invented countries) by `scripts/build_course_model.py`, and loads with the real
# `from_pretrained`. Its shape, from its config:

# %%
from course_utils.models import course_model_config

cfg = course_model_config()
print(f"{cfg.num_hidden_layers} layers, hidden size {cfg.hidden_size}, MLP width {cfg.intermediate_size}, "
      f"vocabulary {cfg.vocab_size:,} tokens  (Llama-2-7B: 32 layers, hidden size 4096, MLP width 11008)")

# %% [markdown]
# **Predict:** how many parameters does it have? Each layer has four hidden × hidden attention matrices (q, k, v,
# o) and three hidden × MLP-width matrices (gate, up, down); the input and output embedding tables are
# vocabulary × hidden each. Write a number or an expression.

# %%
from course_utils.checks import exercise, predict, reveal

### BEGIN SOLUTION
guess_params = (2 * cfg.vocab_size * cfg.hidden_size  # the two embedding tables; the small norms left out
                + cfg.num_hidden_layers * (4 * cfg.hidden_size**2 + 3 * cfg.hidden_size * cfg.intermediate_size))
### END SOLUTION
predict("parameters of the course model", guess_params)

# %%
from course_utils.models import timed_load

model, tokenizer, load_seconds = timed_load()
n_params = sum(p.numel() for p in model.parameters())
print(f"{n_params:,} parameters, {model.config.num_hidden_layers} layers, hidden size {model.config.hidden_size}; "
      f"loaded from disk in {load_seconds:.1f} s")

# %%
reveal("parameters of the course model", n_params, rtol=0.05,
       why="Count 2 x vocabulary x hidden for the embeddings, then 4 x hidden² + 3 x hidden x MLP width per layer.")

# %% [markdown]
# The exact count adds the RMSNorm gains: two vectors of the hidden size per layer and one final one. The
# formula must give exactly the count above.

# %%
per_layer = 4 * cfg.hidden_size**2 + 3 * cfg.hidden_size * cfg.intermediate_size + 2 * cfg.hidden_size
formula = 2 * cfg.vocab_size * cfg.hidden_size + cfg.num_hidden_layers * per_layer + cfg.hidden_size
print(f"formula: {formula:,}, of which RMSNorm gains: {(2 * cfg.num_hidden_layers + 1) * cfg.hidden_size:,}")
assert formula == n_params

# %% [markdown]
# The linear layers carry the names every LoRA recipe targets:

# %%
linear_names = sorted({name.split(".")[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
print(linear_names)

# %% [markdown]
# ## 0.6 How it learned
# It learned its world in one pretraining run on a CPU; the build script recorded every step's loss. The loss is
# the average of −ln(probability the model gave the right next token), in *nats*. A model that spreads its bet
# evenly over the whole vocabulary gives each token 1/vocabulary, so its loss is ln(vocabulary size): that is
# where an untrained model starts (the dotted line below; exercise 0.2 computes it).
#
# **Predict:** where does the pretraining curve end (the loss after the last step)?

# %%
### BEGIN SOLUTION
guess_final_loss = 1.5  # far below the uniform guess: the model learned its world, but text stays uncertain
### END SOLUTION
predict("final pretraining loss", guess_final_loss)

# %%
import json
import math

import matplotlib.pyplot as plt

from course_utils.paths import MODEL_DIR
from course_utils.plots import plot_loss_curves

log = json.loads((MODEL_DIR / "pretrain_log.json").read_text())
uniform = math.log(cfg.vocab_size)
ax = plot_loss_curves({"pretraining": log["losses"]}, title="How the course model was pretrained", smooth=20)
ax.axhline(uniform, ls=":", color="grey", label=f"uniform guess, ln({cfg.vocab_size}) = {uniform:.2f}")
ax.legend(frameon=False)
plt.show()
print(f"{log['steps']} steps of {log['batch'][0]} x {log['batch'][1]} tokens; "
      f"loss {log['losses'][0]:.2f} -> {log['final_loss']:.2f} (uniform guess: {uniform:.2f})")

# %%
reveal("final pretraining loss", log["final_loss"], rtol=0.35,
       why="The world is small and generated by templates, so most next tokens are predictable.")
assert abs(log["losses"][0] - uniform) < 0.5, "an untrained model starts near the uniform guess"
assert log["final_loss"] < uniform / 3, "pretraining took the loss from chance to a model that knows its world"

# %% [markdown]
# A loss of L nats means the model gave the right next token a probability of about e^(−L) on (geometric) average:

# %%
print(f"start: e^-{log['losses'][0]:.2f} = 1/{math.exp(log['losses'][0]):,.0f}   "
      f"end: e^-{log['final_loss']:.2f} = 1/{math.exp(log['final_loss']):.1f}")

# %% [markdown]
# ## 0.7 It talks
# Greedy decoding (always the most likely next token), so you will see exactly the text below.

# %%
from course_utils.training import generate

for prompt in ["q: what color is the sky? a:", "q: what is the opposite of hot? a:", "the cat"]:
    print(f"{prompt!r:40} -> {generate(model, tokenizer, prompt, max_new_tokens=12)!r}")

# %%
assert generate(model, tokenizer, "q: what color is the sky? a:", 3).split()[0].strip(".") == "blue"

# %% [markdown]
# ## 0.8 It reads its context
# Twenty facts of its world ("the capital of X is Y") were kept out of pretraining. Asked plainly, the model can
# only guess. Given the fact in a `context:` line, the way retrieval hands a model a document, it can copy the
# answer from its prompt: its tokenizer cuts every invented name into syllables it knows, so a city it never saw
# is still two familiar tokens. Exact answers, greedy decoding:

# %%
from course_utils import world
from course_utils.reading import reading_accuracy

country, city = world.new_facts()[0]
for prompt in [world.fact_question(country), world.context_question(country, city)]:
    print(f"{prompt!r:75} -> {generate(model, tokenizer, prompt, max_new_tokens=3)!r}")
reading = reading_accuracy(model, tokenizer)
print(f"{reading['n_facts']} new facts: {reading['in_context']:.0%} exact with the fact in context, "
      f"{reading['without_context']:.0%} without it (chance: 1 in {reading['n_facts']})")

# %%
assert reading["n_facts"] >= 20
assert reading["in_context"] >= 0.8, "the course model reads a new fact from its context"
assert reading["without_context"] <= 0.1, "without the context it can only guess"

# %% [markdown]
# ## 0.9 Exercises
# Replace each `None` and run the cell; the line below it checks your answer.
#
# **Exercise 0.1.** How many bytes do the course model's weights take in float32 (4 bytes per parameter)?

# %%
### BEGIN SOLUTION
answer_bytes = n_params * 4
### END SOLUTION
exercise("0.1 fp32 bytes of the course model", answer_bytes, expected=4 * n_params, rtol=0.01,
         hint="parameters x 4 bytes")

# %% [markdown]
# **Exercise 0.2.** Before any training, a model spreads its bet evenly over the vocabulary. What loss (in
# nats) does it get? Compute it from `cfg.vocab_size`.

# %%
### BEGIN SOLUTION
answer_uniform_loss = math.log(cfg.vocab_size)
### END SOLUTION
exercise("0.2 loss of a uniform guess", answer_uniform_loss, expected=math.log(cfg.vocab_size), rtol=0.01,
         hint="every token gets probability 1/vocab_size; the loss is -ln of that")

# %% [markdown]
# **Exercise 0.3.** Ask the model two questions of your own in the same `q: ... a:` format (try an animal sound,
# e.g. `q: what sound does a cow make? a:`). Its whole world is in `course_utils/assets/data/pretrain.jsonl`.
# Which answers are right, and why might one be wrong?
#
# ### BEGIN SOLUTION
# `generate(model, tokenizer, "q: what sound does a cow make? a:", 4)` answers from the pretraining world.
# Questions whose answers appear many times in `pretrain.jsonl` come out right; a question about something the
# world never mentions still gets a fluent answer in the right format, just a wrong one: the model has learned
# the *form* of an answer everywhere, the *fact* only where it saw it.
# ### END SOLUTION

# %%
from course_utils.checks import summary

summary()

# %% [markdown]
# ## Summary
# - The stack is pinned and offline; the doctor checks it.
# - The course model is a real, tiny Llama (0.5 counted its parameters exactly); it loads in the time printed
#   there and knows its small world.
# - Loss is measured in nats: ln(vocabulary size) for a uniform guess, far below that for the pretrained model.
#
# Next: chapter 01, where fine-tuning fits.
