# %% [markdown]
# # 14 · Your own domain: the whole recipe on your own JSONL file
#
# Runtime: about 35 s on a 2-core laptop, no GPU.
#
# Everything so far ran on the course's data. This chapter is the recipe for yours: one file of examples in a
# documented format, one cell of settings, and then the steps every fine-tune needs, each checked:
# - **the data**, read and checked before any training: a bad line is named, with the fix;
# - **a split** into a training part and a held-out part the model never trains on;
# - **the base model, measured first**, so the fine-tune has something to beat;
# - **training** with LoRA or QLoRA, on three seeds;
# - **the adapter saved in PEFT's format** and loaded back with PEFT, giving the same outputs.
#
# The bundled example comes from a music organisation: short song descriptions, each tagged with a mood. Run the
# chapter once as it is, then point the settings cell at your own file.

# %% [markdown]
# ## 14.0 Versions

# %%
import copy
import importlib.metadata as md
import json
import math
import os
import platform
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch

# PEFT 0.21 asks transformers 5 for a deprecated attribute when it wraps a model; the warning is about PEFT's
# internals, not about anything this chapter does.
warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)

torch.set_num_threads(1)  # the course model's ops are tiny: one thread is as fast, and never stalls on a busy machine
print("python", platform.python_version(), "| torch", md.version("torch"), "| transformers", md.version("transformers"),
      "| peft", md.version("peft"))

# %% [markdown]
# ## 14.1 The one cell to change
# Every choice of this chapter is here. The defaults run in well under a minute on a laptop.
#
# - `MODEL`: `None` is the embedded course model. For a real one, start the course with `COURSE_MODEL` set to a hub
#   id or a local folder (`COURSE_ONLINE=1 COURSE_MODEL=meta-llama/Llama-3.2-1B make lab`), or write the id here.
# - `METHOD`: `"lora"` keeps the base in float (bfloat16 on a GPU); `"qlora"` loads its linear layers in 4 bits
#   (NF4 with double quantization, by bitsandbytes, chapter 09) and trains the same adapters on top.
# - `TARGETS` and `RANK`: where the adapters go and how wide they are (chapters 06 and 07); alpha is 2 × rank.
# - `DATA_FILE`: `None` is the bundled music example; otherwise the path of your JSONL file (14.2).

# %%
MODEL = os.environ.get("COURSE_MODEL")  # None: the embedded course model
METHOD = "lora"  # "lora" or "qlora"
TARGETS = "all-linear"  # or e.g. ["q_proj", "v_proj"]
RANK = 8
DATA_FILE = None  # None: the bundled music example; or "path/to/yours.jsonl"
MAX_TOKENS = 64  # the longest example, in the model's tokens (prompt + completion + end of sequence)
STEPS, LR, BATCH = 80, 5e-3, 16
SEEDS = [0, 1, 2]  # three runs show the spread; on a large model one run may be all you can afford
ADAPTER_DIR = None  # None: a temporary folder; write a folder of yours to keep the adapter

# %%
from course_utils import domain

base, tok = domain.load_base(METHOD, MODEL)
work = Path(tempfile.mkdtemp(prefix="ch14_"))
adapter_dir = Path(ADAPTER_DIR) if ADAPTER_DIR else work / "adapter"
device = next(base.parameters()).device
print(f"model: {MODEL or 'the embedded course model'} ({sum(p.numel() for p in base.parameters()):,} stored "
      f"parameters), method {METHOD}, on {device}; the model takes {domain.context_length(tok, base)} tokens")

# %% [markdown]
# ## 14.2 The format, and the bundled example
# A **JSONL** file: one JSON object per line, in UTF-8.
#
# ```
# {"prompt": "song: a slow folk song with piano about the cold soup in the park. mood:", "completion": "sad"}
# {"prompt": "song: a fast pop song with drums about the sweet cake in the farm. mood:", "completion": "happy"}
# ```
#
# - `prompt` is what the model reads. End it with the same cue in every line (`mood:`): that is how the model
#   learns where its answer starts, and it is what you will write at the end of a prompt when you use the adapter.
# - `completion` is what the model should write next. Training joins it to the prompt with one space, adds the
#   end-of-sequence token, and computes the loss on the completion only.
# - Other keys (an `"id"`, a source) are ignored; blank lines are skipped.
#
# The bundled file is written by `course_utils.world.music_moods`, a generator (the same 240 lines every time).
# The mood follows a rule that needs two cues: a **fast** song about something good is *happy*, a **slow** one
# *calm*; a slow song about something bad is *sad*, a fast one *dark*. Tempo alone, or the words alone, get half
# of the songs right.

# %%
data_file = Path(DATA_FILE) if DATA_FILE else domain.write_music_example(work)
# The asserts of this chapter describe the course model on the bundled file with these settings (either METHOD);
# with your model, your data or other settings they are skipped, and the printed tables are the result.
AS_SHIPPED = (MODEL, DATA_FILE, TARGETS, RANK, STEPS, LR, BATCH) == (None, None, "all-linear", 8, 80, 5e-3, 16)
print(f"{data_file.name}:")
print("".join(data_file.read_text(encoding="utf-8").splitlines(keepends=True)[:3]))

# %% [markdown]
# Length limits are in **tokens**, and a word the model's tokenizer never learned costs several. The course model's
# tokenizer learned the words of its tiny world (*sweet*, *park*, *fast* are one token each); the music words are
# new to it: *violin* is 5 tokens, *guitar* 4.
#
# **Predict:** the longest bundled example, counted as training sees it (the prompt, the completion and the
# end-of-sequence token): how many tokens?

# %%
from course_utils.checks import exercise, predict, reveal

### BEGIN SOLUTION
guess_longest_tokens = 36  # about 20 words; the music words take 2-5 tokens each
### END SOLUTION
predict("tokens in the longest example", guess_longest_tokens)

# %%
from course_utils.plots import plot_bars, plot_loss_curves, text_table

examples = domain.load_examples(data_file, tok, max_tokens=MAX_TOKENS)
lengths = [domain.n_tokens(tok, e.prompt, e.completion) for e in examples]
counts = domain.label_counts(examples)
print(f"{len(examples)} examples; tokens per example {min(lengths)} - {max(lengths)} (limit {MAX_TOKENS})")
if domain.is_labelled(examples):
    print("labels:", ", ".join(f"{k} {v}" for k, v in counts.most_common()))
print("one prompt, token by token:", [tok.decode([i]) for i in tok(examples[0].prompt).input_ids[1:]])

# %%
reveal("tokens in the longest example", max(lengths), rtol=0.2,
       why="Each known word is one token, but 'violin', 'guitar', 'drums', 'about' and 'song' split into pieces.")
if AS_SHIPPED:
    assert len(examples) == 240 and max(lengths) <= MAX_TOKENS
    assert max(counts.values()) < domain.MAX_RATIO * min(counts.values()), "the bundled labels are balanced"
    assert len(tok(" violin", add_special_tokens=False).input_ids) == 5

# %% [markdown]
# ## 14.3 The checks, on a file with mistakes
# `domain.load_examples` reads the whole file before anything trains, and refuses it if any line is wrong,
# naming **every** bad line, what is wrong with it, and the fix, so one edit repairs them all. What it checks:
# valid JSON, an object with `prompt` and `completion`, both non-empty text, valid UTF-8, every example within
# `MAX_TOKENS` (encode_pairs would cut a longer one, and the cut falls on the completion, the very tokens the loss
# is about), and at least 10 examples.
#
# Below, the bundled file with six lines spoiled the way files from spreadsheets and scripts get spoiled, checked
# with a limit of 64 tokens.
#
# **Predict:** how many problems does the error report?

# %%
### BEGIN SOLUTION
guess_problems = 6  # every bad line, not just the first
### END SOLUTION
predict("problems reported for the spoiled file", guess_problems)

# %%
lines = domain.write_music_example(work / "bundled").read_text(encoding="utf-8").splitlines()
lines[1] = lines[1][:-1]  # a line cut short
lines[3] = lines[3].replace('"completion"', '"label"')  # a spreadsheet column under another name
lines[4] = json.dumps({"prompt": json.loads(lines[4])["prompt"], "completion": ""})  # the tag left empty
lines[6] = json.dumps({"prompt": "song: " + "a long song with guitar and piano and drums, " * 8 + "mood:",
                       "completion": "happy"})  # pasted lyrics
lines[8] = lines[8].replace("'", '"').replace('"prompt"', "'prompt'")  # Python's quotes, not JSON's
lines[9] = json.dumps({"prompt": json.loads(lines[9])["prompt"], "completion": 3})  # a mood id, not a mood
spoiled = work / "spoiled.jsonl"
spoiled.write_text("\n".join(lines) + "\n", encoding="utf-8")
try:
    domain.load_examples(spoiled, tok, max_tokens=64)
except domain.DataError as err:
    refusal = err
    print(str(err).replace(f"{work}/", ""))  # the file's name without its temporary folder

# %%
reveal("problems reported for the spoiled file", len(refusal.problems), atol=0,
       why="The checks read the whole file and report every bad line at once, each with its fix.")
assert [n for n, _ in refusal.problems] == [2, 4, 5, 7, 9, 10], "each line named, in file order"
assert all("Fix:" in message for _, message in refusal.problems)

# %% [markdown]
# A file can also be valid and still mislead. Two checks **warn** (and, with `strict=True`, refuse):
# - **Label imbalance.** If one label is more than 3 times as common as another, a model can look good by
#   answering it always. The warning gives the counts and the line of the rarest label's first example.
# - **Duplicates.** A copy of a line on each side of the split is a test the model has already seen.
#
# Below, a file of 100 songs whose tags came mostly from one playlist: 70 *happy*, 10 of each other mood.
#
# **Predict:** what accuracy does a "model" get that answers *happy* to every song of this file?

# %%
### BEGIN SOLUTION
guess_always_happy = 0.7  # 70 of the 100 songs
### END SOLUTION
predict("accuracy of always answering 'happy'", guess_always_happy)

# %%
from course_utils import world

by_mood = {m: [r for r in world.music_moods(600, seed=1) if r["completion"] == m] for m in world.MOODS.values()}
playlist = by_mood["happy"][:70] + [r for m in ("calm", "sad", "dark") for r in by_mood[m][:10]]
skewed = domain.write_jsonl(work / "one_playlist.jsonl", playlist)
try:
    domain.load_examples(skewed, tok, max_tokens=MAX_TOKENS, strict=True)
except domain.DataError as err:
    imbalance = err
    print(str(err).replace(f"{work}/", ""))

# %%
skewed_counts = domain.label_counts(domain.load_examples(skewed, strict=False, max_ratio=10))
always_happy = skewed_counts["happy"] / sum(skewed_counts.values())
reveal("accuracy of always answering 'happy'", always_happy, atol=0.01,
       why="The share of the commonest label is what a model gets for learning nothing but that label.")
assert imbalance.problems[0][0] == 71 and "'happy': 70" in str(imbalance) and "70%" in str(imbalance)

# %% [markdown]
# 70% accuracy for a model that learned nothing. On such a file, report accuracy next to this baseline (or per
# label), and balance the file before training: more examples of the rare labels, or fewer of the common one.

# %% [markdown]
# ## 14.4 A split, and the base model before any training
# `domain.split` keeps a fifth of the examples aside, per label, so both parts keep the file's mix. The fine-tune
# never sees the held-out part; every number below is measured on it. Two numbers to beat:
# - the **majority baseline**: always answer the training set's commonest label;
# - the **base model**, as it is: the prompt in, its greedy continuation out, compared with the completion.
#
# **Predict:** the base model's accuracy on the held-out songs?

# %%
### BEGIN SOLUTION
guess_base_accuracy = 0.0  # it never saw "mood:" or this task; it continues the way its pretraining text did
### END SOLUTION
predict("base model's held-out accuracy", guess_base_accuracy)

# %%
from course_utils.training import generate

train_set, held_out = domain.split(examples, held_out=0.2, seed=0)
majority = domain.majority_accuracy(train_set, held_out)
before = domain.evaluate(base, tok, held_out, max_tokens=MAX_TOKENS)
print(f"train {len(train_set)}, held out {len(held_out)}; majority baseline {majority:.2f}")
print(f"base model: held-out loss {before['loss']:.2f} per completion token, accuracy {before['accuracy']:.2f}")
for e in held_out[:3]:
    print(f"  {e.prompt!r} -> the base writes {generate(base, tok, e.prompt, 6)!r}; the tag is {e.completion!r}")

# %%
reveal("base model's held-out accuracy", before["accuracy"], atol=0.05,
       why="A base model continues text the way its pretraining did; it has never seen 'mood:' followed by a tag.")
if AS_SHIPPED:
    assert before["accuracy"] == 0 and 0.2 < majority < 0.35, "the base never answers; the majority label is ~1/4"

# %% [markdown]
# The base model is a pretrained text continuer: given a prompt it writes what usually came next in its
# pretraining text, never a mood tag. That is the starting point of every fine-tune on a new format, and the
# reason to measure the base first: "the fine-tune reaches 95%" means little until you know what the base got
# (0% here) and what the majority label gets (about a quarter here, 70% on the one-playlist file of 14.3).

# %% [markdown]
# ## 14.5 Train, on three seeds, and compare with the base
# The recipe, as in chapters 08 and 09: a fresh base, `get_peft_model` with a `LoraConfig` from the settings cell,
# the course's training loop (`course_utils.training.train`: AdamW on the adapters only, gradient clipping) on
# batches of the training part, then the held-out evaluation. Each seed draws other adapter matrices and another
# order of the examples.
#
# **Predict:** the held-out accuracy after 80 steps (the mean over the three seeds)?

# %%
### BEGIN SOLUTION
guess_tuned_accuracy = 0.95  # a simple rule, 190 examples seen about 7 times each
### END SOLUTION
predict("fine-tuned held-out accuracy", guess_tuned_accuracy)

# %%
from peft import LoraConfig, PeftModel, get_peft_model

from course_utils.sweeps import over_seeds, spread
from course_utils.training import progress_bar, train


def lora_config():
    return LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=TARGETS, lora_dropout=0.0)


def finetune_once(seed):
    torch.manual_seed(seed)  # the adapters' random A
    model = get_peft_model(domain.load_base(METHOD, MODEL)[0], lora_config())
    batches = domain.batches(tok, train_set, BATCH, MAX_TOKENS, seed=seed, device=device)
    curve = train(model, batches, STEPS, lr=LR, seed=seed, progress=False).losses
    return model, curve, domain.evaluate(model, tok, held_out, max_tokens=MAX_TOKENS)


runs = over_seeds(finetune_once, progress_bar(SEEDS, desc=f"{METHOD}, {len(SEEDS)} seeds"))
runs[SEEDS[0]][0].print_trainable_parameters()
accuracy = [r[2]["accuracy"] for r in runs.values()]
loss = [r[2]["loss"] for r in runs.values()]
plot_loss_curves({f"seed {s}": r[1] for s, r in runs.items()}, title=f"{METHOD}, r = {RANK}: training loss",
                 smooth=5)
plt.show()
print(text_table([["base model", f"{before['loss']:.3f}", f"{before['accuracy']:.2f}"],
                  ["majority label", "", f"{majority:.2f}"]]
                 + [[f"fine-tuned, seed {s}", f"{r[2]['loss']:.3f}", f"{r[2]['accuracy']:.2f}"] for s, r in runs.items()]
                 + [["fine-tuned, spread", spread(loss), spread(accuracy, ".2f")]],
                 ["model", "held-out loss", "held-out accuracy"]))

# %%
reveal("fine-tuned held-out accuracy", sum(accuracy) / len(accuracy), atol=0.05,
       why="The rule has two cues and four answers; 80 steps of 16 show each training song about 7 times.")
if AS_SHIPPED:
    assert min(accuracy) == 1 and majority < 0.35 and before["accuracy"] == 0, "every held-out song, every seed"
    assert max(loss) < before["loss"] / 5, "the held-out loss falls more than fivefold, on every seed"

# %% [markdown]
# Every seed learns the rule and gets every held-out song right, from 0% for the base and about a quarter for the
# majority label. The spread column shows how little the choice of seed matters here; on your data, look at it
# before trusting a difference between two settings that is smaller than it.
#
# The loss column is less tidy than the accuracy one. Accuracy asks only whether the greedy answer is right;
# the loss asks how sure the model is. Per label:
#
# **Predict:** which mood has the highest held-out loss after fine-tuning?

# %%
### BEGIN SOLUTION
guess_hardest_mood = "calm"  # its tokens (' ca', 'l', 'm') never occur in the pretraining text
### END SOLUTION
predict("the mood with the highest held-out loss", guess_hardest_mood, choices=sorted(set(world.MOODS.values())))

# %%
tuned = runs[SEEDS[0]][0]
labels = sorted(domain.label_counts(held_out)) if domain.is_labelled(held_out) else []
per_label = {lab: domain.evaluate(tuned, tok, [e for e in held_out if e.completion == lab], max_tokens=MAX_TOKENS)
             for lab in labels}
pieces = {lab: [tok.decode([i]) for i in tok(" " + lab, add_special_tokens=False).input_ids] for lab in labels}
# the loss is per token: over the label's tokens and the end of sequence it gives the probability of the whole answer
p_answer = {lab: math.exp(-r["loss"] * (len(pieces[lab]) + 1)) for lab, r in per_label.items()}
print(text_table([[lab, f"{r['loss']:.3f}", f"{r['accuracy']:.2f}", f"{p_answer[lab]:.2g}", pieces[lab]]
                  for lab, r in per_label.items()],
                 ["label", "held-out loss", "accuracy (greedy)", "P(the model writes it)", "its tokens"]))

# %%
hardest = max(per_label, key=lambda lab: per_label[lab]["loss"]) if per_label else None
reveal("the mood with the highest held-out loss", hardest,
       why="A label made of tokens the model never produced in pretraining: their output rows were never trained.")
if AS_SHIPPED:
    assert hardest == "calm" and all(r["accuracy"] == 1 for r in per_label.values())
    assert p_answer["calm"] < 0.01 and min(p for lab, p in p_answer.items() if lab != "calm") > 0.9
    from course_utils import data

    seen = set(i for ids in tok(data.texts("pretrain")).input_ids for i in ids)
    assert not any(i in seen for i in tok(" calm", add_special_tokens=False).input_ids)
    assert all(tok(" " + m, add_special_tokens=False).input_ids[0] in seen for m in ("happy", "sad", "dark"))

# %% [markdown]
# *happy*, *sad* and *dark* are words the course model wrote thousands of times in pretraining; *calm* is three
# pieces (` ca`, `l`, `m`) that never occur in its pretraining text (asserted above), so their rows of the output
# layer were never trained to be predicted. LoRA, which leaves the output layer frozen, made them the **most
# likely** next tokens, so greedy decoding writes *calm* for every calm song, yet with so little probability that
# a model sampling its answer (temperature 1) would almost never write it (the probability column). Chapter 08
# met the same effect with *positive* / *negative*. On your own data, look at the loss per label: a label far
# above the others is one the model only writes under greedy decoding. The fixes are those of chapter 08: train
# the output layer too (`modules_to_save=["lm_head"]`), or choose tags the model already writes.

# %% [markdown]
# ## 14.6 Save the adapter in PEFT's format, load it back with PEFT
# `save_pretrained` writes the adapter alone: `adapter_config.json` (the `LoraConfig`) and
# `adapter_model.safetensors` (the A and B matrices). Anyone with the same base model loads it with
# `PeftModel.from_pretrained(base, folder)`, and so does `course_utils.lora.load_adapter` (chapter 08).

# %%
tuned.save_pretrained(adapter_dir)
sizes = {p.name: p.stat().st_size for p in sorted(adapter_dir.iterdir())}
saved = json.loads((adapter_dir / "adapter_config.json").read_text())
print("files:", ", ".join(sizes), "| adapter_model.safetensors:", f"{sizes['adapter_model.safetensors'] / 1e3:.0f} kB")
print({k: saved[k] for k in ("peft_type", "r", "lora_alpha", "target_modules")})
reloaded = PeftModel.from_pretrained(domain.load_base(METHOD, MODEL)[0], adapter_dir)
check = domain.batches(tok, held_out, len(held_out), MAX_TOKENS, device=device)
batch = next(check)
with torch.no_grad():
    gap = (reloaded.eval()(**batch).logits - tuned.eval()(**batch).logits).abs().max().item()
again = domain.evaluate(reloaded, tok, held_out, max_tokens=MAX_TOKENS)
print(f"reloaded with PEFT: max |logit difference| {gap}; held-out accuracy {again['accuracy']:.2f}, "
      f"as before saving: {runs[SEEDS[0]][2]['accuracy']:.2f}")
assert gap == 0 and again == runs[SEEDS[0]][2], "the same numbers after the round trip through the folder"
assert saved["peft_type"] == "LORA" and saved["r"] == RANK and {"adapter_config.json", "adapter_model.safetensors"} <= set(sizes)

# %% [markdown]
# The same logits to the last bit. Now the adapter in use, on songs that are in neither part of the file:

# %%
new_songs = ["song: a slow jazz song with violin about the lovely tea in the garden. mood:",
             "song: a fast rock song with guitar about the rotten egg in the market. mood:"]
if DATA_FILE:  # your file: two of its held-out prompts instead
    new_songs = [e.prompt for e in held_out[:2]]
for prompt in new_songs:
    print(f"{prompt!r} -> {generate(reloaded, tok, prompt, 4).strip()!r}")
if AS_SHIPPED:
    assert [generate(reloaded, tok, p, 4).strip() for p in new_songs] == ["calm", "dark"]

# %% [markdown]
# ## 14.7 Your own file
# 1. Write your examples as JSONL (14.2): the same cue at the end of every prompt, the answer as the completion.
#    A few hundred examples is a start for a task like this one; free text needs more.
# 2. Set `DATA_FILE` in 14.1 and run the chapter. Fix what 14.3's checks name; read the label counts.
# 3. Compare with the two baselines (14.4). The asserts of this chapter check the course model on the bundled
#    file (`AS_SHIPPED`); on yours, the table of 14.5 is the result: held-out accuracy and loss, base against
#    fine-tuned, with the seeds' spread.
# 4. If the loss still falls at the end of the curve, raise `STEPS`; if the training loss falls while the held-out
#    one rises, lower it (chapter 07). Look at the loss per label (14.5).
# 5. The adapter is in `ADAPTER_DIR`. It only fits the base model it was trained on: keep the two names together.
#
# On a real model (`COURSE_MODEL`): raise `MAX_TOKENS` to your longest example (the checks tell you), lower `LR`
# (2e-4 is the QLoRA paper's for 7B models), use `METHOD = "qlora"` where the float model does not fit in
# memory (chapter 02), and run on a GPU (`load_base` puts the model there).

# %% [markdown]
# ## 14.8 Exercises
# **Exercise 14.1.** Write one line of the bundled file's format for the song "a slow folk song with piano about
# the lovely tea in the garden", with the mood the rule of 14.2 gives it. The check reads it as JSON.

# %%
### BEGIN SOLUTION
answer_line = ('{"prompt": "song: a slow folk song with piano about the lovely tea in the garden. mood:", '
               '"completion": "calm"}')
### END SOLUTION
as_fields = (lambda: [json.loads(answer_line)[k] for k in domain.FIELDS]) if answer_line else None
exercise("14.1 one JSONL line", as_fields,
         expected=["song: a slow folk song with piano about the lovely tea in the garden. mood:", world.MOODS["slow", True]],
         hint='{"prompt": "song: ... mood:", "completion": "..."}: double quotes; slow + something good')

# %% [markdown]
# **Exercise 14.2.** A file holds 300 songs tagged *rock*, 50 *jazz* and 50 *folk*. What accuracy does always
# answering *rock* get, and does `load_examples` warn about it (True or False)?

# %%
### BEGIN SOLUTION
answer_always_rock = 300 / 400
answer_warns = 300 > domain.MAX_RATIO * 50
### END SOLUTION
exercise("14.2a always 'rock'", answer_always_rock, expected=0.75, hint="the commonest label's share of all songs")
exercise("14.2b does it warn", answer_warns, expected=True, choices=[True, False],
         hint=f"it warns when the commonest label is more than {domain.MAX_RATIO:g} times the rarest")

# %% [markdown]
# **Exercise 14.3.** How many tokens does the completion *calm* add to a training sequence, the end-of-sequence
# token included? Count them with the tokenizer `tok`, as training joins them (one space before the completion).

# %%
### BEGIN SOLUTION
answer_calm_tokens = len(tok(" calm", add_special_tokens=False).input_ids) + 1
### END SOLUTION
exercise("14.3 tokens of ' calm' + end of sequence", answer_calm_tokens,
         expected=domain.n_tokens(tok, "x", "calm") - len(tok("x").input_ids), rtol=0,
         hint='len(tok(" calm", add_special_tokens=False).input_ids), plus one')

# %% [markdown]
# **Question 14.4.** Your own file tags songs with genres the model has never written (*shoegaze*, *zydeco*). The
# fine-tune reaches high accuracy, but the loss per label shows these labels far above the others. Why does it
# matter if accuracy is high, and what are two ways to fix it?
#
# ### BEGIN SOLUTION
# Accuracy counts the greedy answer; the loss shows the model puts little probability on it, so a small change
# (another prompt wording, sampling with a temperature, a 4-bit base) can tip it to something else, and the
# model's confidence is no guide. The labels' output rows were never trained to be predicted, and LoRA leaves
# the output layer frozen. Fixes: train the output layer too (`modules_to_save=["lm_head"]`, or PEFT's
# `trainable_token_indices` for just those rows), or map the labels to words the model already writes and map
# back after generation (a verbaliser); more steps also help, slowly.
# ### END SOLUTION

# %%
from course_utils.checks import summary

summary()

# %% [markdown]
# **Summary.** A fine-tune on your own data starts with the file: one JSON object per line, a prompt ending in the
# same cue and a completion. `course_utils.domain.load_examples` refuses a bad file naming every bad line and
# the fix, and warns when labels are imbalanced (a majority label that scores 70% by itself) or duplicated.
# Measured on held-out examples, the base model scored 0% and the majority label about a quarter; LoRA (r = 8,
# all linear layers, 80 steps) learned the two-cue mood rule on every seed. A label made of tokens the model never
# produced is answered right but with little confidence, visible only in the loss per label. The adapter, saved
# with `save_pretrained`, loads back with `PeftModel.from_pretrained` to the same logits.
