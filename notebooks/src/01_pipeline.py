# %% [markdown]
# # 01 · Where fine-tuning fits: the LLM training pipeline
#
# Runtime: ~15 s on a 2-core laptop, no GPU.
#
# Large language models are not trained in one step. This chapter places fine-tuning in the pipeline and then
# *does* a fine-tune: we ask the course model a few questions, adapt it for a few seconds to a new domain
# (letters) and a new task (review sentiment), and ask the same questions again.

# %% [markdown]
# ## 1.0 Versions

# %%
import importlib.metadata as md
import platform

import matplotlib.pyplot as plt
import torch

torch.set_num_threads(1)  # the course model's ops are tiny: one thread is as fast, and never stalls on a busy machine
print("python", platform.python_version(), "| torch", md.version("torch"), "| transformers", md.version("transformers"))

# %% [markdown]
# ## 1.1 The modern pipeline
#
# | # | Stage | Data | What it teaches | Who does it |
# |---|---|---|---|---|
# | 1 | **Pre-training** | trillions of tokens of raw text | next-token prediction: language, facts, structure | a lab, once, at huge cost |
# | 2 | **Instruction tuning** | prompt → response pairs | to follow instructions, chat | the lab (or you, on a base model) |
# | 3 | **Alignment / safety** | preferences, refusals | helpful and harmless outputs | the lab |
# | 4 | **Domain fine-tuning** | text of one field: law, medicine, code, music… | its words, formats and facts | **you** |
# | 5 | **Task fine-tuning** | labelled examples | one behaviour: classify, extract, answer in a format | **you** |
#
# Stages 4 and 5 are this course. You are **not training from scratch**: you **adapt** a model that already
# knows a great deal. The course model went through stage 1 on its own small world; its training log ships
# with it:

# %%
import json

from course_utils.paths import MODEL_DIR

log = json.loads((MODEL_DIR / "pretrain_log.json").read_text())
print(f"stage 1 of the course model: {log['tokens_seen']:,} tokens, {log['steps']:,} steps, "
      f"{log['parameters']:,} parameters, final loss {log['final_loss']:.2f}")

# %% [markdown]
# ## 1.2 The base model, before any fine-tuning
# Four prompts: a **letter** (a new template made of words it knows: our domain), a **review** ending in
# `sentiment:` (our task), a line of **chord notation** (a notation it never saw, and we will not teach it),
# and a **question** from its pretraining world.
#
# **Predict:** what will the base model write after `sentiment:`?

# %%
from course_utils.models import load_course_model
from course_utils.training import generate

model, tokenizer = load_course_model()
prompts = {
    "letter (domain)": "dear alice,",
    "review (task)": "review: the cake at the park was tasty and sweet. sentiment:",
    "chords (not trained)": "C: C4 E4 G4 |",
    "knowledge (kept?)": "q: what color is the sky? a:",
}
before = {name: generate(model, tokenizer, p, max_new_tokens=24) for name, p in prompts.items()}
for name, text in before.items():
    print(f"{name:<21} {prompts[name]!r} -> {text!r}")

# %% [markdown]
# It continues with its pretraining world: stories and questions. It has never seen a review labelled, nor a
# letter in this template. Two numbers make this precise: **sentiment accuracy** on held-out reviews (does it
# give more probability to the right label, `positive` or `negative`?) and the **loss on held-out letters**.
#
# **Predict:** what accuracy does a model that has never seen the task get on a balanced two-way choice?

# %%
from course_utils import data
from course_utils.training import choice_accuracy, encode_texts, eval_loss

reviews = data.load("sentiment_test")
review_prompts, review_labels = [r["prompt"] for r in reviews], [r["label"] for r in reviews]
letters_test = encode_texts(tokenizer, data.texts("near_test"))
acc_before = choice_accuracy(model, tokenizer, review_prompts, review_labels)
loss_before = eval_loss(model, letters_test)
print(f"{len(reviews)} held-out reviews, {len(letters_test['input_ids'])} held-out letters")
print(f"sentiment accuracy {acc_before:.1%}   held-out letter loss {loss_before:.3f}")

# %%
share_positive = review_labels.count("positive") / len(review_labels)
print(f"{share_positive:.0%} of the test reviews are positive")
assert acc_before < 0.65, "before fine-tuning the base model should be near chance on sentiment"

# %% [markdown]
# ## 1.3 A short fine-tune: one domain, one task
# Training data: letters (plain text, stage 4) and labelled reviews (prompt → label, with the loss only on the
# label, stage 5), alternating batch by batch.

# %%
print(len(data.texts("near_train")), "letters, e.g.", data.texts("near_train", 1)[0])
print(len(data.load("sentiment_train")), "reviews, e.g.", data.load("sentiment_train", 1)[0])

# %% [markdown]
# The classic fine-tune: **every weight trains** (full fine-tuning), with AdamW, for 80 steps of 16 examples.
# Keep a copy of the weights first, to see afterwards how far they moved.

# %%
import functools

from course_utils.training import batches_from_examples, encode_pairs, train

weights_before = {name: p.detach().clone() for name, p in model.named_parameters()}
model.requires_grad_(True)  # full fine-tuning: all parameters are trainable

encode_reviews = lambda rows: encode_pairs(tokenizer, [r["prompt"] for r in rows], [r["label"] for r in rows])  # noqa: E731
review_batches = batches_from_examples(encode_reviews, data.load("sentiment_train"), 16, seed=0)
letter_batches = batches_from_examples(functools.partial(encode_texts, tokenizer), data.texts("near_train"), 16, seed=1)
mixed = (batch for pair in zip(review_batches, letter_batches) for batch in pair)  # review, letter, review, ...

# %% tags=["nbval-ignore-output"]
import time

t0 = time.perf_counter()
result = train(model, mixed, steps=80, lr=3e-4, progress="fine-tuning")
print(f"80 steps in {time.perf_counter() - t0:.1f} s")

# %%
from course_utils.plots import plot_loss_curves

plot_loss_curves({"reviews (task: loss on the label)": result.losses[0::2],
                  "letters (domain: loss on every token)": result.losses[1::2]},
                 title="Fine-tuning the course model (all weights)", xlabel="step (per data set)",
                 ylabel="training loss (nats per token)")
plt.show()

# %% [markdown]
# ## 1.4 The same prompts, side by side
# **Predict:** which of the four rows will change? Which should not?

# %%
from course_utils.plots import text_table

after = {name: generate(model, tokenizer, p, max_new_tokens=24) for name, p in prompts.items()}
rows = []
for name in prompts:
    rows += [[name, "before", repr(before[name])], ["", "after", repr(after[name])]]
print(text_table(rows, ["prompt", "model", "greedy continuation"], max_width=90))

# %%
acc_after = choice_accuracy(model, tokenizer, review_prompts, review_labels)
loss_after = eval_loss(model, letters_test)
print(text_table([["sentiment accuracy (held-out reviews)", f"{acc_before:.1%}", f"{acc_after:.1%}"],
                  ["loss on held-out letters (nats/token)", f"{loss_before:.3f}", f"{loss_after:.3f}"]],
                 ["measure", "before", "after"]))

# %%
assert acc_after > 0.95 > acc_before + 0.3, "the task fine-tune takes sentiment from chance to near-perfect"
assert loss_after < loss_before / 2, "the domain fine-tune makes held-out letters much more predictable"
assert after["letter (domain)"].startswith(" today the"), "letters now follow the template"
assert after["knowledge (kept?)"].split()[0].strip(".") == "blue", "what the model knew is still there"

# %% [markdown]
# The letter now follows the new template, the review gets a label, and the sky is still blue: the fine-tune
# *added* a domain and a task without erasing the pretraining. The chord line changed but is not music:
# fine-tuning teaches what you show it, and we showed no chords (chapter 10 trains on them).

# %% [markdown]
# ## 1.5 Adapting, not rebuilding
# **Predict:** how many of the weights did the fine-tune change, and by how much, relative to their size?

# %%
n_total = sum(w.numel() for w in weights_before.values())
n_changed = sum(int((p.detach() != weights_before[name]).sum()) for name, p in model.named_parameters())
delta_sq = sum(float((p.detach() - weights_before[name]).pow(2).sum()) for name, p in model.named_parameters())
relative_change = (delta_sq / sum(float(w.pow(2).sum()) for w in weights_before.values())) ** 0.5
print(f"{n_changed:,} of {n_total:,} weights changed ({n_changed / n_total:.0%}); "
      f"||W_after - W_before|| / ||W_before|| = {relative_change:.3f}")
assert n_changed / n_total > 0.8 and relative_change < 0.3

# %% [markdown]
# Nearly every weight moved (only the embedding rows of tokens that never appear in the training text did not),
# but by a small fraction of its size: a nudge to a capable model, not a new model. Two questions follow,
# and they are the rest of this course:
# - **Memory (chapter 02).** Updating every weight means keeping a gradient and two Adam moments for each. For
#   1 M weights that is nothing; for 7 B it is the memory wall.
# - **Size of the change (chapters 04–05).** If the change is small, maybe it also lives in a few directions —
#   then we could train only those. That is LoRA.

# %% [markdown]
# ## 1.6 Exercises
# 1. **Task only.** Reload the model (`load_course_model()`), train 40 steps on `review_batches` alone. Does
#    the letter prompt change? (Predict first.)
# 2. **Too much.** Repeat 1.3 with `lr=1e-3`, or add chord lines (`data.texts("far_train")`) as a third stream
#    in `mixed`. What happens to the sky question? (This is *forgetting*; chapter 10 measures it.)
# 3. **What the optimizer kept.** AdamW stores two running averages (m and v) per trainable weight. How many
#    numbers is that for the course model? Write your answer, then the cell measures it with one more
#    (zero learning rate) step.

# %%
from course_utils.checks import check_value

your_answer = 2 * n_total  # solution: replace with your own expression
probe = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr = 0: fills the state without moving any weight
model(**next(mixed)).loss.backward()
probe.step()
model.zero_grad(set_to_none=True)
measured = sum(t.numel() for state in probe.state.values() for key, t in state.items() if key != "step")
_ = check_value("numbers AdamW keeps", your_answer, measured)

# %% [markdown]
# ## Summary
# - The pipeline: pre-training → instruction tuning → alignment → **domain** → **task** fine-tuning. You work
#   at the end of it, adapting a capable model.
# - 80 full fine-tuning steps (seconds on a CPU) took the course model from chance to near-perfect sentiment
#   and taught it the letter template, while its pretrained knowledge stayed (the tables above).
# - Nearly every weight moved, each by a small fraction: fine-tuning adapts, it does not rebuild.
#
# Next: chapter 02 — why full fine-tuning of a 7B model does not fit your GPU.
