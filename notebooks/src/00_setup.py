# %% [markdown]
# # 00 · Setup and the map of the course
#
# **LoRA & QLoRA: fine-tuning large language models when you don't have infinite GPUs.**
# Runtime: ~10 s on a 2-core laptop, no GPU, no internet.
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
# ## 0.1 The map
#
# | # | Chapter | You will measure |
# |---|---|---|
# | 00 | Setup and map | the doctor passes; the course model talks |
# | 01 | The fine-tuning pipeline | the same prompts before and after a short fine-tune |
# | 02 | The memory wall | bytes per parameter for full FT, LoRA, QLoRA — predicted, then measured |
# | 03 | Precision and quantization | fp32/fp16/bf16 error; absmax vs blockwise int8 |
# | 04 | Intrinsic dimension | how few directions a fine-tune needs (pretrained vs random init) |
# | 05 | The LoRA idea | W = W0 + BA; the SVD spectrum of a real weight update |
# | 06 | Initialization and placement | why B = 0; q,v vs all linear layers |
# | 07 | Hyperparameters | rank, alpha/r, dropout |
# | 08 | PEFT in practice | PEFT == our LoRA; adapters on disk |
# | 09 | QLoRA | NF4 from normal quantiles; 4.127 bits per parameter |
# | 10 | Failure modes | each failure's symptom, measured and fixed |
# | 11 | Decision guide | LoRA vs retrieval vs prompting |
# | 12 | Merge, swap, deploy | zero-overhead merging; one base, many adapters |
#
# Labs (autograded, in `labs/`): memory wall, LoRA from scratch, NF4, QLoRA, failure diagnosis.

# %% [markdown]
# ## 0.2 Versions
# Everything is pinned (`requirements.txt`); if a version below differs from the pin, run `make setup`.

# %%
import importlib.metadata as md
import platform

print("python", platform.python_version())
for pkg in ["torch", "transformers", "peft", "bitsandbytes", "matplotlib", "nbgrader"]:
    print(f"{pkg:<13}", md.version(pkg))

# %% [markdown]
# ## 0.3 The preflight check
# `doctor()` checks versions, the device, the bitsandbytes backend, that the hub is offline, and that the course
# model matches its checksum. It is the same as `python -m course_utils doctor` in a terminal.

# %% tags=["nbval-ignore-output"]
from course_utils.doctor import doctor

ready = doctor()

# %%
assert ready, "the doctor found a problem: read the PROBLEMS list above, it says how to fix each one"

# %% [markdown]
# ## 0.4 Meet the course model
#
# A real Llama — the same code path as Llama-3 — but with 4 layers of width 128 instead of 32 layers of width 4096.
# It was pretrained on a small generated world (stories, questions, invented countries) by
# `scripts/build_course_model.py`, and loads with the real `from_pretrained`.
#
# **Predict:** how many parameters does a 4-layer, width-128 Llama with a 1,024-token vocabulary have?
# (Hint: each layer has four 128×128 attention matrices and three 128×352 MLP matrices.)

# %%
from course_utils.models import load_course_model

model, tokenizer = load_course_model()
n_params = sum(p.numel() for p in model.parameters())
print(f"{n_params:,} parameters, {model.config.num_hidden_layers} layers, hidden size {model.config.hidden_size}")

# %% [markdown]
# Check: two embedding tables (input and output, 1,024 × 128 each), per layer 4·128² + 3·128·352 weights, plus
# the RMSNorm gains. The formula must give exactly the count above.

# %%
cfg = model.config
per_layer = 4 * cfg.hidden_size**2 + 3 * cfg.hidden_size * cfg.intermediate_size + 2 * cfg.hidden_size
formula = 2 * cfg.vocab_size * cfg.hidden_size + cfg.num_hidden_layers * per_layer + cfg.hidden_size
print(f"formula: {formula:,}")
assert formula == n_params

# %% [markdown]
# The linear layers carry the names every LoRA recipe targets:

# %%
import torch

linear_names = sorted({name.split(".")[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
print(linear_names)

# %% [markdown]
# It learned its world in one pretraining run on a CPU. The build script recorded every step's loss:
#
# **Predict:** a model that guesses uniformly among 1,024 tokens has loss ln(1024) ≈ 6.9 nats. Where will the
# curve end?

# %%
import json

from course_utils.paths import MODEL_DIR
from course_utils.plots import plot_loss_curves

log = json.loads((MODEL_DIR / "pretrain_log.json").read_text())
plot_loss_curves({"pretraining": log["losses"]}, title="How the course model was pretrained", smooth=20)
print(f"{log['steps']} steps of {log['batch'][0]} x {log['batch'][1]} tokens; loss {log['losses'][0]:.2f} -> {log['final_loss']:.2f}")

# %%
assert log["losses"][0] > 6.5 and log["final_loss"] < 1.2, "pretraining took the loss from chance to a model that knows its world"

# %% [markdown]
# ## 0.5 It talks
# Greedy decoding, so you will see exactly the text below.

# %%
from course_utils.training import generate

for prompt in ["q: what color is the sky? a:", "q: what is the opposite of hot? a:", "the cat"]:
    print(f"{prompt!r:40} -> {generate(model, tokenizer, prompt, max_new_tokens=12)!r}")

# %%
assert generate(model, tokenizer, "q: what color is the sky? a:", 3).split()[0].strip(".") == "blue"

# %% [markdown]
# ## 0.6 Exercise
# Ask the model two questions of your own in the same `q: ... a:` format (try an animal sound, e.g.
# `q: what sound does a cow make? a:`). Which ones does it get right? Its whole world is in
# `course_utils/assets/data/pretrain.jsonl`.
#
# **Summary.** The stack is pinned and offline, the course model loads in about a second and knows its small
# world. Next: where fine-tuning fits (01).
