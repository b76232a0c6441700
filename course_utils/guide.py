"""Chapter 11's decision guide, measured: which tool teaches the course model what (new facts, a style, an override
of its prior), at what cost to what it knew, in how much time and how many bytes.

    knowledge(model, facts)           exact-answer accuracy on each fact asked three ways: the trained sentence's
                                      prefix, the usual question, and reworded questions (world.fact_paraphrases)
    retrieve(prompt, facts)           the tiny retriever: the fact sentence whose country the prompt names
    with_retrieval(prompt, facts)     the prompt with that sentence in front of it, in the "context:" form
    lora_on_facts(seed)               LoRA trained on the fact sentences                       -> (model, seconds)
    continued_pretraining(seed)       every weight trained on the fact sentences + replayed pretraining lines
    override(seed, targets, r)        LoRA on the 8 answers that contradict the prior          -> (model, seconds)
    timed_fit(model, items, ...)      core.fit, timed                                          -> (model, seconds)
    prior_scores(model)               exact accuracy on the override answers, on the rest of the prior, on known facts

"Memorising a sentence is not knowing a fact": a fine-tune is scored on the sentence it saw *and* on questions it
never saw, and on the known facts it must not lose. Every function copies the course model; the loaded one is
never trained. The settings (steps, learning rates) are the smallest at which each tool shows its behaviour on
this model; chapter 11 states them next to the numbers.
"""
from __future__ import annotations

import time

from . import world
from .answers import exact_accuracy
from .experiments import core

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]
FORMS = ("sentence", "question", "paraphrases")


def prompts_for(country: str) -> dict[str, list[str]]:
    """The three ways a fact is asked: the trained sentence's prefix, the usual question, rewordings."""
    return {"sentence": [world.fact_prefix(country)], "question": [world.fact_question(country)],
            "paraphrases": world.fact_paraphrases(country)}


def knowledge(model, facts, wrap=None) -> dict[str, float]:
    """{form: exact accuracy} over `facts` [(country, capital)]; `wrap(prompt)` rewrites each prompt (retrieval)."""
    tok, out = core.tokenizer(), {}
    for form in FORMS:
        ps, ans = [], []
        for country, city in facts:
            for p in prompts_for(country)[form]:
                ps.append(wrap(p) if wrap else p)
                ans.append(city)
        out[form] = exact_accuracy(model, tok, ps, ans)
    return out


def retrieve(prompt: str, facts) -> str:
    """The fact sentence about the country the prompt names (the longest match wins), or '' if none.

    A name lookup is all the retriever this world needs: every question names its country. Real retrieval
    (embeddings, BM25) replaces this line; what the model does with the retrieved text is the same.
    """
    hits = [(country, city) for country, city in facts if country in prompt]
    if not hits:
        return ""
    country, city = max(hits, key=lambda h: len(h[0]))
    return world.fact_sentence(country, city)


def with_retrieval(prompt: str, facts) -> str:
    found = retrieve(prompt, facts)
    return world.in_context(found, prompt) if found else prompt


def timed_fit(model, items, steps, lr, seed, batch_size=8):
    t0 = time.perf_counter()
    core.fit(model, items, steps, lr, seed, batch_size=batch_size)
    return model, time.perf_counter() - t0


def fact_sentences(facts) -> list[str]:
    return [world.fact_sentence(c, k) for c, k in facts]


def lora_on_facts(seed: int, steps: int = 60, lr: float = 5e-3, r: int = 16):
    """LoRA (r=16, every linear layer) trained on the 20 new fact sentences only."""
    m = core.lora(core.fresh_model(), "all-linear", r=r, seed=seed)
    return timed_fit(m, fact_sentences(world.new_facts()), steps, lr, seed)


def continued_pretraining(seed: int, steps: int = 60, lr: float = 1e-3, replay: int = 80):
    """Every weight trained on the new fact sentences (each 4 times) mixed with `replay` pretraining lines."""
    m = core.fresh_model().requires_grad_(True)
    mix = 4 * fact_sentences(world.new_facts()) + core.texts("pretrain")[:replay]
    return timed_fit(m, mix, steps, lr, seed)


def override(seed: int, targets="all-linear", r: int = 16, steps: int = 20, lr: float = 3e-3):
    """LoRA on the 8 answers that contradict the prior (prior_resists' recipe, any targets and rank)."""
    m = core.lora(core.fresh_model(), targets, r=r, seed=seed)
    return timed_fit(m, core.pairs("override"), steps, lr, seed)


def prior_scores(model) -> dict[str, float]:
    """Exact accuracy on the override answers, on the prior it must not touch (sounds, opposites), on known facts."""
    tok = core.tokenizer()
    over = world.override_pairs()
    overridden = {q for q, _ in over}
    rest = [(q, a) for q, a in world.prior_pairs() if q not in overridden]
    known = world.known_facts()
    return {"override": exact_accuracy(model, tok, [q for q, _ in over], [a for _, a in over]),
            "rest of prior": exact_accuracy(model, tok, [q for q, _ in rest], [a for _, a in rest]),
            "known facts": exact_accuracy(model, tok, [world.fact_question(c) for c, _ in known],
                                          [k for _, k in known])}
