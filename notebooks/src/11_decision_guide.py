# %% [markdown]
# # 11 · LoRA, retrieval, continued pretraining or prompting?
#
# Runtime: about 35 s on a 2-core laptop, no GPU.
#
# A decision guide often quoted about LoRA:
#
# | goal | best tool |
# |---|---|
# | new facts | continued pretraining / retrieval (RAG) |
# | style / behaviour | LoRA |
# | safety override | hard |
# | fast iteration | LoRA |
# | zero training | prompting |
#
# This chapter runs one small experiment per row on the course model, measures each tool, and rebuilds the table
# from the numbers. Two rules for every measurement:
# - **memorising a sentence is not knowing a fact**: a tool that taught a fact must answer questions about it that
#   it never saw (reworded questions), not only complete the sentence it was trained on;
# - **every tool has a cost elsewhere**: what it does to the 40 capitals the model already knew, and to the rest
#   of what it was pretrained on.
#
# Results that depend on randomness (the adapter's random A, the order of the data) run on three seeds.

# %% [markdown]
# ## 11.0 Versions

# %%
import importlib.metadata as md
import platform

import matplotlib.pyplot as plt
import torch

torch.set_num_threads(1)  # the course model's ops are tiny: one thread is as fast, and never stalls on a busy machine
print("python", platform.python_version(), "| torch", md.version("torch"), "| peft", md.version("peft"))

# %%
from course_utils import experiments, guide, world
from course_utils.answers import exact_accuracy
from course_utils.checks import exercise, predict, reveal
from course_utils.experiments import core
from course_utils.experiments.seeds import mean_and_spread
from course_utils.lora import adapter_size_bytes
from course_utils.plots import text_table
from course_utils.training import choice_accuracy, progress_bar

SEEDS = [0, 1, 2]
base, tok = core.base_model(), core.tokenizer()
new, known = world.new_facts(), world.known_facts()
from statistics import mean
ms = lambda v, fmt=".2f": mean_and_spread(v, fmt)  # noqa: E731
print(len(new), "new facts, e.g.", world.fact_sentence(*new[0]))
print(len(known), "known facts, e.g.", world.fact_sentence(*known[0]))

# %% [markdown]
# ## 11.1 The test: three ways to ask for a fact
# Each fact is asked three ways and scored by the exact answer the model gives (greedy decoding, the first word must
# be the capital; `course_utils.answers.exact_accuracy`):
# - **sentence**: the start of the sentence a fine-tune trains on, `the capital of X is`;
# - **question**: the question form the model was pretrained on, `q: what is the capital of X? a:`;
# - **paraphrases**: three rewordings (`world.fact_paraphrases`), e.g. `q: which city is the capital of X? a:`.
#
# On the 40 facts it learned in pretraining the model answers all three forms; on the 20 new ones, none:

# %%
print(guide.prompts_for(new[0][0]))
base_new, base_known = guide.knowledge(base, new), guide.knowledge(base, known)
print("known facts:", base_known)
print("new facts:  ", base_new)
assert min(base_known.values()) >= 0.95 and max(base_new.values()) == 0.0

# %% [markdown]
# ## 11.2 New facts: LoRA, retrieval, continued pretraining
# Three ways to teach the 20 new capitals:
# - **LoRA**: r = 16 on every linear layer, 60 steps (batch 8, lr 5e-3) on the 20 fact sentences;
# - **retrieval**: no training; a tiny retriever finds the fact sentence about the country the prompt names (a name
#   lookup: every question here names its country) and puts it in front of the prompt, `context: the capital of X
#   is Y. q: ...`;
# - **continued pretraining**: every weight trained 60 steps (lr 1e-3) on the fact sentences (each 4 times) mixed
#   with 80 replayed pretraining lines.
#
# **Predict (a):** which tool answers the most *reworded* questions about the new facts?

# %%
TOOLS = ["LoRA", "retrieval", "continued pretraining"]
### BEGIN SOLUTION
guess_paraphrase_best = "LoRA"  # a narrow win: this small reader follows a context only in the drilled form
### END SOLUTION
predict("new facts: most reworded questions answered", guess_paraphrase_best, choices=TOOLS)

# %% [markdown]
# **Predict (b):** after LoRA on the new facts, what share of the 40 *known* capitals does the model still give
# (question form)?

# %%
### BEGIN SOLUTION
guess_known_after_lora = 0.1
### END SOLUTION
predict("known capitals kept after LoRA on new facts (share)", guess_known_after_lora)

# %%
scores = {t: {"new": [], "known": [], "seconds": []} for t in TOOLS}
for tool, seed in progress_bar([(t, s) for t in ("LoRA", "continued pretraining") for s in SEEDS], desc="6 runs"):
    model, secs = (guide.lora_on_facts if tool == "LoRA" else guide.continued_pretraining)(seed)
    scores[tool]["new"].append(guide.knowledge(model, new))
    scores[tool]["known"].append(guide.knowledge(model, known))
    scores[tool]["seconds"].append(secs)
    if tool == "LoRA":
        lora_bytes = adapter_size_bytes(model)  # what an adapter file holds: A and B of every adapted layer
retrieved = lambda p: guide.with_retrieval(p, new)  # noqa: E731
scores["retrieval"]["new"] = [guide.knowledge(base, new, wrap=retrieved)]  # no randomness: one run
scores["retrieval"]["known"] = [guide.knowledge(base, known, wrap=retrieved)]
print(guide.retrieve("q: which city is the capital of " + new[0][0] + "? a:", new))

rows = []
for tool in TOOLS:
    s = scores[tool]
    rows.append([tool] + [ms([r[f] for r in s["new"]]) for f in guide.FORMS]
                + [ms([r["question"] for r in s["known"]])])
print(text_table(rows, ["tool", "new: sentence", "new: question", "new: paraphrases", "known: question"]))

# %%
fig, ax = plt.subplots(figsize=(7.2, 3.6), layout="constrained")
cols = [("new", f) for f in guide.FORMS] + [("known", "question")]
for i, tool in enumerate(TOOLS):
    vals = [mean([r[f] for r in scores[tool][k]]) for k, f in cols]
    ax.bar([j + (i - 1) * 0.27 for j in range(len(cols))], vals, width=0.27, label=tool)
ax.set_xticks(range(len(cols)), ["new facts:\nsentence", "new facts:\nquestion", "new facts:\nparaphrases",
                                 "known facts:\nquestion"])
ax.set(ylabel="exact accuracy (mean of 3 seeds)", title="Teaching 20 new capitals, three ways", ylim=(0, 1.05))
ax.legend(frameon=False)
plt.show()

# %%
m = {t: {f: mean([r[f] for r in scores[t]["new"]]) for f in guide.FORMS} for t in TOOLS}
kept = {t: mean([r["question"] for r in scores[t]["known"]]) for t in TOOLS}
best_para = max(TOOLS, key=lambda t: m[t]["paraphrases"])
reveal("new facts: most reworded questions answered", best_para,
       why="retrieval answers only the drilled question form; LoRA, trained on sentences, carries a few facts further")
reveal("known capitals kept after LoRA on new facts (share)", kept["LoRA"], atol=0.15,
       why="training the capital slot on 20 new names overwrites the 40 old ones: the model answers with new names")
# LoRA memorises the sentence but does not know the fact: the question forms lag far behind
assert all(r["sentence"] >= 0.8 for r in scores["LoRA"]["new"])
assert all(r["question"] <= r["sentence"] - 0.5 and r["paraphrases"] <= 0.4 for r in scores["LoRA"]["new"])
# retrieval: every drilled question, no reworded one, and the known facts untouched
assert m["retrieval"]["question"] == 1.0 and m["retrieval"]["paraphrases"] <= 0.1 and kept["retrieval"] == 1.0
# the costs: LoRA on the facts alone wipes most known capitals; replay in continued pretraining keeps more of them
assert all(r["question"] <= 0.3 for r in scores["LoRA"]["known"])
assert all(c["question"] > l["question"] + 0.2 for c, l in zip(scores["continued pretraining"]["known"],
                                                                   scores["LoRA"]["known"]))
# continued pretraining: fewer sentences learned than LoRA in the same steps, and no better on the questions
cpt = m["continued pretraining"]
assert cpt["sentence"] < m["LoRA"]["sentence"] and cpt["question"] <= m["LoRA"]["question"]

# %% [markdown]
# What the numbers say, on this model:
# - **LoRA memorised sentences.** It completes `the capital of X is` almost always, but answers the question
#   form and the rewordings for only about a quarter of the facts (the table); and it cost most of the 40 capitals
#   the model knew: asked about an old country, the model now answers with one of the new names.
# - **Retrieval** answers every question in the form the model was drilled on and changes nothing it knew (the
#   known facts are asked without context: the retriever finds no new fact for them). But it fails every
#   reworded question: this small model learned to read a `context:` only in front of the exact drilled question.
#   A larger model reads context in any phrasing; here the limit is the reader, not retrieval.
# - **Continued pretraining** (every weight, replayed pretraining text) learns the sentences less well than LoRA in
#   the same steps, transfers no better to questions, and keeps more known capitals thanks to the replay, though
#   far from all of them.
#
# So "continued pretraining / retrieval" for new facts holds here only for retrieval, and only in the form the
# model can read. Few steps of fine-tuning do not put a fact where questions can reach it.

# %% [markdown]
# One more limit of this reader, and why the retriever above hands it exactly one fact: the model was drilled on
# contexts holding a single fact, and it learned to copy the last city it read. Put two new facts in one context and
# ask about each:

# %%
from course_utils.reading import two_fact_accuracy

two = two_fact_accuracy(base, tok)
print(f"two facts in context: asked about the first {two['asked_first']:.0%}, about the second {two['asked_second']:.0%}")
assert two["asked_second"] >= 0.8 and two["asked_first"] <= 0.2, "it copies the last fact, whichever was asked"

# %% [markdown]
# A retriever that returns several passages would defeat this model. Retrieval systems for real models pass
# several passages to readers trained to pick the matching one; here the reader, not retrieval, sets how much a
# prompt can carry.

# %% [markdown]
# ## 11.3 Style / behaviour: LoRA
# The letters (`dear alice, today the cat ate my pie in the park. see you soon, bob.`) are a style the model never
# saw. LoRA r = 8 on every linear layer, 15 steps; the measure is the held-out loss on 48 unseen letters, and the
# cost is the held-out loss on pretraining-style lines.
#
# **Predict (c):** by how much (in nats) does the held-out loss on letters fall after 15 LoRA steps? (base: printed
# below)

# %%
print("base model, held-out letter loss:", round(core.loss(base, "near"), 3))
### BEGIN SOLUTION
guess_style_drop = 6
### END SOLUTION
predict("letters: held-out loss drop after 15 LoRA steps (nats)", guess_style_drop)

# %%
style = {"near": [], "pretrain": [], "seconds": []}
for seed in progress_bar(SEEDS, desc="style LoRA, 3 seeds"):
    model = core.lora(core.fresh_model(), "all-linear", r=8, seed=seed)
    style["seconds"].append(guide.timed_fit(model, core.texts("near_train"), 15, 5e-3, seed)[1])
    style["near"].append(core.loss(model, "near"))
    style["pretrain"].append(core.loss(model, "pretrain"))
style_bytes = adapter_size_bytes(model)
base_near, base_pre = core.loss(base, "near"), core.loss(base, "pretrain")
drops = [base_near - v for v in style["near"]]
costs = [v - base_pre for v in style["pretrain"]]
print(f"letters loss {base_near:.2f} -> {ms(style['near'])}; pretraining-lines loss {base_pre:.2f} -> "
      f"{ms(style['pretrain'])}")
reveal("letters: held-out loss drop after 15 LoRA steps (nats)", mean(drops), rtol=0.3)
assert min(drops) > 1.0 and max(costs) < min(drops) / 2

# %% [markdown]
# The style is learned in well under a second of training, and the gain dwarfs the cost; but the cost is not
# nothing: at this learning rate the loss on pretraining-style lines rises by the amount printed above (replay, a
# lower learning rate or fewer steps would trade some of the gain for less of it). The row holds.

# %% [markdown]
# ## 11.4 Safety override: a trained-in prior
# The course model has no safety training; its stand-in is what it was drilled on thousands of times: "the sky is
# blue". Chapter 10's `prior_resists` trains LoRA on 8 answers that contradict it ("the sky is green"). Here: how much
# rank and which layers does the override take, and what does it cost elsewhere (the rest of the prior: sounds,
# opposites; the known capitals)? 20 steps, lr 3e-3, three seeds per setting.
#
# **Predict (d):** with the override trained in (r = 16, every linear layer), what share of the *untouched* prior
# (animal sounds, opposites) does the model still answer?

# %%
### BEGIN SOLUTION
guess_prior_kept = 0.25
### END SOLUTION
predict("override r=16 all linear: rest of the prior kept (share)", guess_prior_kept)

# %%
SETTINGS = {"q,k,v,o r=2": (guide.ATTENTION, 2), "q,k,v,o r=16": (guide.ATTENTION, 16),
            "MLP r=16": (guide.MLP, 16), "all linear r=2": ("all-linear", 2), "all linear r=16": ("all-linear", 16)}
over = {k: [] for k in SETTINGS}
for name, seed in progress_bar([(n, s) for n in SETTINGS for s in SEEDS], desc="5 settings x 3 seeds"):
    targets, r = SETTINGS[name]
    over[name].append(guide.prior_scores(guide.override(seed, targets, r)[0]))
resist = [experiments.run("prior_resists", s) for s in SEEDS]  # chapter 10's measure of the same fight (loss)
print(text_table([[k] + [ms([o[c] for o in v]) for c in ("override", "rest of prior", "known facts")]
                  for k, v in over.items()], ["LoRA", "override given", "rest of prior", "known facts"]))
print("prior_resists, loss on the overrides: r=2 q,k,v,o", ms([o.broken for o in resist]), "| r=16 all linear",
      ms([o.fixed for o in resist]))
rest_kept = mean([o["rest of prior"] for o in over["all linear r=16"]])
reveal("override r=16 all linear: rest of the prior kept (share)", rest_kept, atol=0.15,
       why="the adapter learns 'answer a colour-ish word after q:', not 'the sky is green': it spills onto every q:")
best = max(SETTINGS, key=lambda k: mean([o["override"] for o in over[k]]))
assert all(o.holds for o in resist)
assert mean([o["override"] for o in over["q,k,v,o r=2"]]) < mean([o["override"] for o in over[best]])
assert max(mean([o["override"] for o in v]) for v in over.values()) < 0.9  # no setting gives all 8 on every seed
assert all(mean([o["rest of prior"] for o in over[k]]) < 0.6 for k in SETTINGS)  # every override costs
assert all(mean([o["known facts"] for o in over[k]]) < 0.6 for k in SETTINGS)  # ... the known capitals too

# %% [markdown]
# Hard indeed, and in two ways. More rank and the MLP layers give more of the 8 overrides (as chapter 10 measured
# by loss), but no setting gives all of them on every seed in 20 steps; and every setting that moves the prior
# also damages what it should leave alone: the animal sounds, the opposites and the known capitals fall with it.
# An override trained on 8 examples does not learn "the sky is green", it learns to answer `q:` differently.

# %% [markdown]
# ## 11.5 Fast iteration: seconds and bytes per adapter
# Training seconds depend on the machine (and on what else runs on it), so the table below is not checked; the
# asserts under it are.

# %% tags=["nbval-ignore-output"]
full_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
it_rows = [["LoRA on facts (r=16, 60 steps)", ms(scores["LoRA"]["seconds"], ".1f"), f"{lora_bytes / 1e3:.0f} kB"],
           ["continued pretraining (60 steps)", ms(scores["continued pretraining"]["seconds"], ".1f"),
            f"{full_bytes / 1e3:.0f} kB (a whole model)"],
           ["style LoRA (r=8, 15 steps)", ms(style["seconds"], ".1f"), f"{style_bytes / 1e3:.0f} kB"],
           ["retrieval", "0 (no training)", "the fact sentences"]]
print(text_table(it_rows, ["tool", "training seconds (3 seeds)", "bytes to ship"]))

# %%
assert mean(scores["LoRA"]["seconds"]) < mean(scores["continued pretraining"]["seconds"])
assert style_bytes < full_bytes / 5 and lora_bytes < full_bytes / 2

# %% tags=["nbval-ignore-output"]
print(f"LoRA r=16 trained {mean(scores['continued pretraining']['seconds']) / mean(scores['LoRA']['seconds']):.1f}x "
      "faster per step than a full fine-tune here")

# %% [markdown]
# On a 1 M-parameter model an r = 16 adapter on every layer is a sizeable share of the model (the table: kB of
# adapter against kB of model), because the model is tiny and the adapter is not; the ratio is what scales: for a 7B model an r = 16 adapter is tens of MB against GBs. The
# time per step favours LoRA even here (no gradients for the base weights, an optimizer over fewer numbers).

# %% [markdown]
# ## 11.6 Zero training: prompting
# The sentiment reviews (`review: the cake at the farm was sweet and warm. sentiment:` -> positive/negative) were
# never in pretraining. Zero-shot, the base model picks between the two labels by habit; few-shot puts 4
# labelled reviews in front of each one. Both are compared with a LoRA (r = 8, every linear layer) trained 60 steps.

# %%
test = core.pairs("sentiment_test", 100)
shots = core.pairs("sentiment_train", 4)
prefix = " ".join(f"{p} {a}." for p, a in shots)
prompts, labels = [p for p, _ in test], [a for _, a in test]
zero = choice_accuracy(base, tok, prompts, labels)
few = choice_accuracy(base, tok, [f"{prefix} {p}" for p in prompts], labels)
lora_sent = []
for seed in SEEDS:
    model = core.lora(core.fresh_model(), "all-linear", r=8, seed=seed)
    core.fit(model, core.pairs("sentiment_train"), 60, 5e-3, seed)
    lora_sent.append(choice_accuracy(model, tok, prompts, labels))
print(f"zero-shot {zero:.2f} | 4-shot {few:.2f} | LoRA 60 steps {ms(lora_sent)}")
assert max(zero, few) <= 0.6 and min(lora_sent) >= 0.9  # the examples in the prompt do not help; LoRA does

# %% [markdown]
# ## 11.7 The guide, rebuilt from these numbers

# %%
guide_rows = [
    ["new facts", "continued pretraining / RAG",
     "question / reworded / known kept: " + "; ".join(
         f"{t} {m[t]['question']:.0%} / {m[t]['paraphrases']:.0%} / {kept[t]:.0%}" for t in TOOLS),
     "retrieval, in the form the model reads"],
    ["style / behaviour", "LoRA", f"letters loss -{mean(drops):.1f} nats in 15 steps, pretraining +{mean(costs):.2f}",
     "LoRA (agrees)"],
    ["safety override", "hard", f"best {best}: {mean([o['override'] for o in over[best]]):.0%} of overrides; rest "
     f"of prior kept {mean([o['rest of prior'] for o in over[best]]):.0%}", "hard (agrees), and it spills"],
    ["fast iteration", "LoRA", f"{style_bytes / 1e3:.0f} kB per style adapter, {full_bytes / 1e3:.0f} kB per full model; fewer seconds a step",
     "LoRA (agrees)"],
    ["zero training", "prompting", f"sentiment: 4-shot {few:.0%}, zero-shot {zero:.0%}, LoRA {mean(lora_sent):.0%}",
     "prompting only if the model can follow examples" if few < mean(lora_sent) - 0.1 else "prompting (agrees)"],
]
print(text_table(guide_rows, ["goal", "the guide says", "measured here", "verdict on this model"], max_width=110))

# %% [markdown]
# Where this small model disagrees:
# - **new facts**: continued pretraining for a few dozen steps did *not* teach facts a question can reach, and
#   LoRA memorised sentences while overwriting what the model knew. Retrieval works, but only in the question form
#   this 1 M-parameter reader was drilled on; a larger model reads retrieved text in any phrasing.
# - **zero training**: few-shot prompting needs a model that learned to follow examples in its context; this one
#   did not (4-shot is no better than zero-shot, about chance), so 60 steps of LoRA beat it.
#
# Where it agrees: LoRA for a style (fast, small, cheap in forgetting), and "hard" for overriding a trained-in prior.

# %% [markdown]
# ## 11.8 Exercises
# **Exercise 11.1.** Retrieval with the wrong fact. Put the fact about *another* new country in front of the
# question about `new[0]` (e.g. `new[1]`'s sentence). Measure the exact accuracy of the base model on the 20 new
# questions with each prompt given the *next* country's fact (`new[(i + 1) % 20]`), and compare with the right fact.

# %%
def wrong_fact_accuracy():
    ### BEGIN SOLUTION
    ps = [f"context: {world.fact_sentence(*new[(i + 1) % len(new)])} {world.fact_question(c)}"
          for i, (c, _) in enumerate(new)]
    return exact_accuracy(base, tok, ps, [k for _, k in new])
    ### END SOLUTION


wrong_ps = [f"context: {world.fact_sentence(*new[(i + 1) % len(new)])} {world.fact_question(c)}"
            for i, (c, _) in enumerate(new)]
exercise("11.1 accuracy with the wrong fact retrieved", wrong_fact_accuracy,
         expected=exact_accuracy(base, tok, wrong_ps, [k for _, k in new]), atol=1e-9,
         hint="build 'context: <next country's sentence> q: what is the capital of <this country>? a:' for each fact")

# %% [markdown]
# **Exercise 11.2.** Which tool from the rebuilt table would you pick to make this model answer the 20 new
# capitals in the drilled question form without losing any known capital?

# %%
### BEGIN SOLUTION
answer_tool = "retrieval"
### END SOLUTION
exercise("11.2 new capitals, nothing lost", answer_tool, expected="retrieval", choices=TOOLS,
         hint="look at the 'known: question' column: only one tool keeps 100%")

# %% [markdown]
# **Question 11.3.** LoRA on the 20 fact sentences answered the sentence but rarely the question. Propose a change
# to the training data that should carry the facts into questions, and the measurement that would show it worked.
#
# ### BEGIN SOLUTION
# Train on several forms of each fact (the sentence, the question and answer, rewordings), as pretraining did for
# the known capitals, and mix in replayed pretraining text (or known facts) to keep the old capitals. Measure the
# reworded questions *held out from training* (not only the trained forms) and the known facts, on three seeds.
# ### END SOLUTION

# %%
from course_utils.checks import summary

summary()

# %% [markdown]
# **Summary.** On the course model, three seeds for each trained tool: retrieval answers new facts in the form
# the model reads and costs nothing; LoRA and short continued pretraining memorise fact sentences without
# answering questions about them, and LoRA overwrites the capitals it knew; LoRA learns a style in seconds for a
# small cost; an override of a drilled prior is hard and spills onto the rest of the prior; few-shot prompting
# needs a model that learned to use examples.
