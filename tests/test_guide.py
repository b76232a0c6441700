"""Fast checks of chapter 11's tools: batched greedy answers equal one-at-a-time decoding, the paraphrases and the
retriever are deterministic and right, and the base model's knowledge profile the chapter builds on."""
import torch

from course_utils import guide, world
from course_utils.answers import exact_accuracy, greedy_answers
from course_utils.experiments import core
from course_utils.training import first_word, generate


def test_batched_greedy_matches_one_at_a_time():
    torch.set_num_threads(1)
    model, tok = core.base_model(), core.tokenizer()
    # prompts of different lengths, so left padding and positions matter
    prompts = [world.fact_question(c) for c, _ in world.known_facts()[:3]] + [
        world.context_question(*world.new_facts()[0]), "q: what color is the sky? a:"]
    assert greedy_answers(model, tok, prompts) == [first_word(generate(model, tok, p, 4)) for p in prompts]


def test_paraphrases_and_retriever():
    assert world.fact_paraphrases("torsu") == world.fact_paraphrases("torsu")
    assert all("torsu" in p and p != world.fact_question("torsu") for p in world.fact_paraphrases("torsu"))
    facts = world.new_facts()
    country, city = facts[3]
    assert guide.retrieve(world.fact_paraphrases(country)[0], facts) == world.fact_sentence(country, city)
    assert guide.retrieve("q: what color is the sky? a:", facts) == ""
    assert guide.with_retrieval(world.fact_question(country), facts) == world.context_question(country, city)


def test_base_knows_old_facts_in_every_form_and_reads_context():
    torch.set_num_threads(1)
    model, tok = core.base_model(), core.tokenizer()
    assert min(guide.knowledge(model, world.known_facts()[:10]).values()) >= 0.9
    assert max(guide.knowledge(model, world.new_facts()[:10]).values()) == 0.0
    new = world.new_facts()[:10]
    assert exact_accuracy(model, tok, [world.context_question(c, k) for c, k in new], [k for _, k in new]) >= 0.9
