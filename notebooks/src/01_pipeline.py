# %% [markdown]
# # 01 · Where fine-tuning fits: the LLM training pipeline
#
# Runtime: about 25 s on a 2-core laptop, no GPU.
#
# Large language models are not trained in one step. This chapter places fine-tuning in the pipeline and then
# *does* a fine-tune: we ask the course model a few questions, adapt it for a few seconds to a new domain
# (letters) and a new task (review sentiment), ask the same questions again, and measure what it gained and what
# it lost.

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
# **Predict:** what will the base model write right after `sentiment:`? Pick one of the choices.

# %%
from course_utils.checks import exercise, predict, reveal

SENTIMENT_CHOICES = ["positive", "negative", "something else"]
### BEGIN SOLUTION
guess_after_sentiment = "something else"  # it has never seen a labelled review
### END SOLUTION
predict("first word after 'sentiment:'", guess_after_sentiment, choices=SENTIMENT_CHOICES)

# %%
from course_utils.models import load_course_model
from course_utils.training import first_word, generate

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

# %%
said = first_word(before["review (task)"])
reveal("first word after 'sentiment:'", said if said in SENTIMENT_CHOICES else "something else",
       why="The base model continues with what its pretraining world looks like; it never saw a labelled review.")

# %% [markdown]
# It continues with its pretraining world: stories and questions. It has never seen a review labelled, nor a
# letter in this template. Two numbers make this precise: **sentiment accuracy** on held-out reviews (does it
# give more probability to the right label, `positive` or `negative`?) and the **loss on held-out letters**.
#
# **Predict:** what accuracy (a fraction from 0 to 1) does a model that has never seen the task get on a
# balanced two-way choice?

# %%
### BEGIN SOLUTION
guess_accuracy_before = 0.5
### END SOLUTION
predict("sentiment accuracy before fine-tuning", guess_accuracy_before)

# %%
from course_utils import data
from course_utils.training import choice_accuracy, encode_texts, eval_loss

reviews = data.load("sentiment_test")
review_prompts, review_labels = [r["prompt"] for r in reviews], [r["label"] for r in reviews]
letters_test = encode_texts(tokenizer, data.texts("near_test"))
acc_before = choice_accuracy(model, tokenizer, review_prompts, review_labels)
loss_before = eval_loss(model, letters_test)
share_positive = review_labels.count("positive") / len(review_labels)
print(f"{len(reviews)} held-out reviews ({share_positive:.0%} positive), {len(letters_test['input_ids'])} held-out letters")
print(f"sentiment accuracy {acc_before:.1%}   held-out letter loss {loss_before:.3f} nats/token")

# %%
reveal("sentiment accuracy before fine-tuning", acc_before, atol=0.1,
       why="Half the reviews are positive: a model with no idea picks the right label half the time.")
assert acc_before < 0.65, "before fine-tuning the base model should be near chance on sentiment"

# %% [markdown]
# ### A loss worse than guessing
# Chapter 00 showed that a uniform guess over the vocabulary scores ln(vocabulary size) nats. The base model's
# loss on the letters is **higher** than that. How can a trained model be worse than a blind guess? The loss is
# the *average* of −ln p over every token, and −ln p has no ceiling: a token the model considers nearly
# impossible (p = 1e-7, say) costs 16 nats on its own. Here is the cost of every token of one held-out letter:

# %%
import math

import torch.nn.functional as F

uniform = math.log(model.config.vocab_size)
with torch.no_grad():
    logits = model(**letters_test).logits[:, :-1]
targets = letters_test["labels"][:, 1:]
token_loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
first = targets[0] != -100
print(" ".join(f"{tokenizer.decode([int(t)])!r}:{c:.0f}" for t, c in zip(targets[0][first], token_loss[0][first])))
token_loss = token_loss[targets != -100]
worse = token_loss > uniform
print(f"\nall held-out letters: uniform guess {uniform:.2f} nats | mean token loss {token_loss.mean():.2f} | "
      f"{worse.float().mean():.0%} of the tokens cost more than a uniform guess | the most expensive "
      f"{token_loss.max():.1f} nats (p = {math.exp(-token_loss.max()):.0e})")

# %%
assert loss_before > uniform, "the base model is worse than a uniform guess on the new template"
assert token_loss.max() > 2 * uniform, "some tokens get a probability far below 1/vocabulary"

# %% [markdown]
# The model is not ignorant, it is *confident*: pretraining taught it what follows what in its own world, and it
# gives the letter's tokens, strung together in an order that world never used, tiny probabilities. A model
# that knows nothing spreads its bet evenly and is never this wrong; a model that is sure of something else can
# be. Those confidently wrong tokens are what fine-tuning fixes first.

# %% [markdown]
# ## 1.3 A short fine-tune: one domain, one task
# Training data: letters (plain text, stage 4) and labelled reviews (prompt → label, with the loss only on the
# label, stage 5), alternating batch by batch.

# %%
print(len(data.texts("near_train")), "letters, e.g.", data.texts("near_train", 1)[0])
print(len(data.load("sentiment_train")), "reviews, e.g.", data.load("sentiment_train", 1)[0])

# %% [markdown]
# The classic fine-tune: **every weight trains** (full fine-tuning), with AdamW. Keep a copy of the weights
# first, to see afterwards how far they moved. `mixed_batches(seed)` alternates a batch of 16 reviews with a
# batch of 16 letters, in an order set by `seed`.

# %%
import functools
import itertools

from course_utils.training import batches_from_examples, encode_pairs, train

STEPS, LR = 80, 3e-4
weights_before = {name: p.detach().clone() for name, p in model.named_parameters()}
encode_reviews = lambda rows: encode_pairs(tokenizer, [r["prompt"] for r in rows], [r["label"] for r in rows])  # noqa: E731
encode_letters = functools.partial(encode_texts, tokenizer)
mixed_batches = lambda seed: itertools.chain.from_iterable(zip(  # review, letter, review, ...  # noqa: E731
    batches_from_examples(encode_reviews, data.load("sentiment_train"), 16, seed=2 * seed),
    batches_from_examples(encode_letters, data.texts("near_train"), 16, seed=2 * seed + 1)))

# %% tags=["nbval-ignore-output"]
import time

model.requires_grad_(True)  # full fine-tuning: all parameters are trainable
t0 = time.perf_counter()
result = train(model, mixed_batches(0), steps=STEPS, lr=LR, progress="fine-tuning")
print(f"{STEPS} steps in {time.perf_counter() - t0:.1f} s")

# %%
from course_utils.plots import plot_loss_curves

plot_loss_curves({"reviews (task: loss on the label)": result.losses[0::2],
                  "letters (domain: loss on every token)": result.losses[1::2]},
                 title="Fine-tuning the course model (all weights)", xlabel="step (per data set)",
                 ylabel="training loss (nats per token)")
plt.show()

# %% [markdown]
# ## 1.4 The same prompts, side by side
# **Predict:** after the fine-tune, will the model still answer the sky question with "blue"?

# %%
### BEGIN SOLUTION
guess_sky_still_blue = "yes"
### END SOLUTION
predict("still answers 'blue'", guess_sky_still_blue, choices=["yes", "no"])

# %%
from course_utils.plots import text_table

after = {name: generate(model, tokenizer, p, max_new_tokens=24) for name, p in prompts.items()}
rows = []
for name in prompts:
    rows += [[name, "before", repr(before[name])], ["", "after", repr(after[name])]]
print(text_table(rows, ["prompt", "model", "greedy continuation"], max_width=90))

# %%
still_blue = first_word(after["knowledge (kept?)"]) == "blue"
reveal("still answers 'blue'", "yes" if still_blue else "no",
       why="The fine-tuning data never asked about the sky, and a fact seen thousands of times is hard to dislodge.")
acc_after = choice_accuracy(model, tokenizer, review_prompts, review_labels)
loss_after = eval_loss(model, letters_test)
print(text_table([["sentiment accuracy (held-out reviews)", f"{acc_before:.1%}", f"{acc_after:.1%}"],
                  ["loss on held-out letters (nats/token)", f"{loss_before:.3f}", f"{loss_after:.3f}"]],
                 ["measure", "before", "after"]))

# %%
assert acc_after > 0.95 > acc_before + 0.3, "the task fine-tune takes sentiment from chance to near-perfect"
assert loss_after < loss_before / 2, "the domain fine-tune makes held-out letters much more predictable"
assert first_word(after["letter (domain)"]) == "today", "letters now follow the template"
assert still_blue, "the sky question still gets its pretrained answer"

# %% [markdown]
# The letter now follows the new template, the review gets a label, and the sky is still blue. The chord line
# changed but is not music: fine-tuning teaches what you show it, and we showed no chords.
#
# One greedy answer is not a measurement of what the model *kept*, though.

# %% [markdown]
# ## 1.5 What did it forget?
# Measure it: the loss on **held-out pretraining text**, new lines from the same generator that built the
# pretraining corpus (`course_utils.world`, a seed the corpus did not use), with every line the model saw in
# pretraining removed. Before the fine-tune the model predicts this text about as well as its own training data.
#
# **Predict:** by what factor does the loss on this text grow after the fine-tune (1 = no forgetting)?

# %%
### BEGIN SOLUTION
guess_forgetting_factor = 1.2
### END SOLUTION
predict("held-out pretraining loss, after / before", guess_forgetting_factor)

# %%
held_out_lines = data.held_out_pretrain_texts(100)  # new lines from the pretraining generator, none in the corpus
held_out = encode_texts(tokenizer, held_out_lines)
base_model = load_course_model()[0]  # a fresh copy of the pretrained weights
pre_before, pre_after = eval_loss(base_model, held_out), eval_loss(model, held_out)
print(f"{len(held_out_lines)} held-out pretraining lines, e.g. {held_out_lines[0]!r}")
print(f"loss before {pre_before:.3f} -> after {pre_after:.3f} nats/token (x{pre_after / pre_before:.2f}); "
      f"the pretraining log's final training loss was {log['final_loss']:.3f}")

# %%
reveal("held-out pretraining loss, after / before", pre_after / pre_before, rtol=0.2,
       why="Every weight moved to fit letters and labels, and nothing in that data holds the rest in place.")
assert abs(pre_before - log["final_loss"]) < 0.3, "held-out pretraining text is as predictable as the training text"
assert pre_after > pre_before, "the fine-tune made the pretraining text less predictable: it forgot some of it"

# %% [markdown]
# ### Does this hold, or was it this data order?
# Everything above came from one run, with one order of the batches. Two more runs with other orders (a fresh
# copy of the base model each time), then the spread:

# %%
from course_utils.training import progress_bar

runs = {0: (acc_after, loss_after, pre_after)}
for seed in progress_bar([1, 2], desc="other data orders"):
    m = load_course_model()[0].requires_grad_(True)
    train(m, mixed_batches(seed), steps=STEPS, lr=LR, progress=False, seed=seed)
    runs[seed] = (choice_accuracy(m, tokenizer, review_prompts, review_labels), eval_loss(m, letters_test),
                  eval_loss(m, held_out))
cols = list(zip(*runs.values()))
print(text_table([[name, f"{before_value:.3f}", f"{min(c):.3f} - {max(c):.3f}"] for name, before_value, c in
                  zip(["sentiment accuracy", "held-out letter loss", "held-out pretraining loss"],
                      [acc_before, loss_before, pre_before], cols)],
                 ["measure", "before", f"after, {len(runs)} data orders (min - max)"]))

# %%
assert all(acc > 0.95 for acc, _, _ in runs.values()), "every run learns the task"
assert all(letters < loss_before / 2 for _, letters, _ in runs.values()), "every run learns the letters"
assert all(pre > pre_before * 1.05 for _, _, pre in runs.values()), "every run forgets some pretraining text"

# %% [markdown]
# So the fine-tune **added** a domain and a task, and it also **cost** something on every run: the held-out
# pretraining text became less predictable by the factor the table shows, even though the sky question survived.
# Whether that cost matters depends on what you need the model for. Chapter 06 measures the same forgetting
# for LoRA.

# %% [markdown]
# ## 1.6 Adapting, not rebuilding
# **Predict:** the fine-tune changed nearly every weight. By how much, relative to their size: what is
# ||W_after − W_before|| / ||W_before|| over all weights?

# %%
### BEGIN SOLUTION
guess_relative_change = 0.1
### END SOLUTION
predict("relative change of the weights", guess_relative_change)

# %%
n_total = sum(w.numel() for w in weights_before.values())
n_changed = sum(int((p.detach() != weights_before[name]).sum()) for name, p in model.named_parameters())
delta_sq = sum(float((p.detach() - weights_before[name]).pow(2).sum()) for name, p in model.named_parameters())
relative_change = (delta_sq / sum(float(w.pow(2).sum()) for w in weights_before.values())) ** 0.5
print(f"{n_changed:,} of {n_total:,} weights changed ({n_changed / n_total:.0%}); "
      f"||W_after - W_before|| / ||W_before|| = {relative_change:.3f}")

# %%
reveal("relative change of the weights", relative_change, rtol=0.5,
       why="A few dozen small Adam steps (lr 3e-4 each) move each weight a little; the weights themselves are ~0.1.")
assert n_changed / n_total > 0.8 and relative_change < 0.3

# %% [markdown]
# Nearly every weight moved (only the embedding rows of tokens that never appear in the training text did not),
# but by a small fraction of its size: a nudge to a capable model, not a new model. Two questions follow,
# and they are the rest of this course:
# - **Memory (chapter 02).** Updating every weight means keeping a gradient and two Adam moments for each. For
#   the course model that is nothing; for 7 B weights it is the memory wall.
# - **Size of the change (chapters 04 and 05).** If the change is small, maybe it also lives in a few
#   directions; then we could train only those. That is LoRA.

# %% [markdown]
# ## 1.7 Exercises
# **Exercise 1.1.** AdamW stores two running averages (m and v) per trainable weight. How many numbers is that
# for the course model under full fine-tuning? Write an expression (you may use `n_total`); the check measures
# it with one more, zero-learning-rate step.

# %%
### BEGIN SOLUTION
answer_adam_numbers = 2 * n_total
### END SOLUTION
probe = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr = 0: fills the state without moving any weight
model(**next(mixed_batches(0))).loss.backward()
probe.step()
model.zero_grad(set_to_none=True)
adam_numbers = sum(t.numel() for state in probe.state.values() for key, t in state.items() if key != "step")
exercise("1.1 numbers AdamW keeps", answer_adam_numbers, expected=adam_numbers, rtol=0,
         hint="m and v: one number each, per trainable weight")

# %% [markdown]
# **Exercise 1.2.** Perplexity is e^loss: the number of equally likely tokens the model is, on average, choosing
# between. By what factor did the perplexity of the held-out pretraining text grow in the first run
# (`pre_before`, `pre_after`)?

# %%
### BEGIN SOLUTION
answer_perplexity_factor = math.exp(pre_after) / math.exp(pre_before)
### END SOLUTION
exercise("1.2 perplexity factor", answer_perplexity_factor, expected=math.exp(pre_after - pre_before), rtol=0.01,
         hint="e^after / e^before = e^(after - before)")

# %% [markdown]
# **Exercise 1.3.** Which stage of the pipeline (1.1) would teach a base model to answer questions politely
# instead of continuing the text?

# %%
STAGES = ["pre-training", "instruction tuning", "alignment", "domain fine-tuning", "task fine-tuning"]
### BEGIN SOLUTION
answer_stage = "instruction tuning"
### END SOLUTION
exercise("1.3 which stage", answer_stage, expected="instruction tuning", choices=STAGES,
         hint="prompt -> response pairs")

# %% [markdown]
# **Question 1.4.** Reload the model (`load_course_model()`) and train 40 steps on the reviews alone
# (`batches_from_examples(encode_reviews, data.load("sentiment_train"), 16)`). Predict first: does the letter
# prompt's continuation change? Does the held-out pretraining loss grow more or less than in 1.5?
#
# ### BEGIN SOLUTION
# The letter prompt keeps its pretraining-style continuation: nothing in the reviews shows the letter template.
# The held-out pretraining loss grows less than in 1.5, because the review loss covers only the label token,
# so far fewer tokens pull on the weights. Fine-tuning changes what the data asks for, and a little of
# everything else.
# ### END SOLUTION
#
# **Question 1.5.** Why did the embedding rows of some tokens not change at all, when every other weight did?
#
# ### BEGIN SOLUTION
# An embedding row only receives a gradient when its token appears in the batch's input. Tokens that never
# occur in the letters or reviews get a zero gradient on every step, and AdamW (with no weight decay here)
# leaves a weight with zero gradient exactly where it was. The output embedding (`lm_head`) is different: every
# row gets a gradient at every position, through the softmax.
# ### END SOLUTION

# %%
from course_utils.checks import summary

summary()

# %% [markdown]
# ## Summary
# - The pipeline: pre-training → instruction tuning → alignment → **domain** → **task** fine-tuning. You work
#   at the end of it, adapting a capable model.
# - A few dozen full fine-tuning steps (seconds on a CPU) took the course model from chance to near-perfect
#   sentiment and taught it the letter template, on every data order we tried.
# - A loss above ln(vocabulary) means *confidently wrong* tokens, not ignorance.
# - It also forgot: held-out pretraining text became less predictable on every run, although the one question
#   we asked by hand still got its old answer. Measure forgetting; do not eyeball it.
# - Nearly every weight moved, each by a small fraction: fine-tuning adapts, it does not rebuild.
#
# Next: chapter 02, why full fine-tuning of a 7B model does not fit your GPU.
