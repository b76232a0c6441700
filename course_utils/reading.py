"""Does the course model read its context? One measurement, shared by chapter 00 and the tests.

The new facts (world.new_facts) were never in pretraining. Asked plainly, the model can only guess (near chance);
given the fact in a `context:` line (world.context_question), it answers by copying the city from its prompt.
The gap between the two is what retrieval-augmented prompting relies on, and what fine-tuning on facts is
compared against.

Its limit: the drills put one fact in each context, and the model learned to copy the city it read last. With two
facts in one context it answers the question about the second one and not the first (`two_fact_accuracy`), so a
retriever for this model must put the one matching fact in front of the question (chapter 11's does).
"""
from __future__ import annotations

from course_utils import training, world


def reading_accuracy(model, tokenizer, facts=None) -> dict:
    """Exact-answer accuracy on `facts` (default: the held-out new facts), with and without the fact in context.

    Greedy decoding, first word of the answer against the city: deterministic, so notebooks can assert it.
    """
    facts = world.new_facts() if facts is None else list(facts)
    cities = [city for _, city in facts]
    return {
        "n_facts": len(facts),
        "in_context": training.answer_accuracy(model, tokenizer, [world.context_question(c, k) for c, k in facts], cities),
        "without_context": training.answer_accuracy(model, tokenizer, [world.fact_question(c) for c, _ in facts], cities),
    }


def two_fact_accuracy(model, tokenizer, facts=None) -> dict:
    """Exact-answer accuracy with two new facts in one context, the asked one first or second.

    Each fact is paired with the next one in the list, so both cities in the context are names the model never saw
    in pretraining and only reading can tell them apart.
    """
    facts = world.new_facts() if facts is None else list(facts)
    cities = [city for _, city in facts]
    out = {}
    for position in ("first", "second"):
        prompts = []
        for i, (country, city) in enumerate(facts):
            asked, other = world.fact_sentence(country, city), world.fact_sentence(*facts[(i + 1) % len(facts)])
            pair = (asked, other) if position == "first" else (other, asked)
            prompts.append(world.in_context(" ".join(pair), world.fact_question(country)))
        out[f"asked_{position}"] = training.answer_accuracy(model, tokenizer, prompts, cities)
    return out
