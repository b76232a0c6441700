"""Does the course model read its context? One measurement, shared by chapter 00 and the tests.

The new facts (world.new_facts) were never in pretraining. Asked plainly, the model can only guess (near chance);
given the fact in a `context:` line (world.context_question), it answers by copying the city from its prompt.
The gap between the two is what retrieval-augmented prompting relies on, and what fine-tuning on facts is
compared against.
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
