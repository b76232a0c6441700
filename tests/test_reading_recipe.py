"""The course model's tokenizer, which is what lets the model read its context.

Invented names split into their syllables, so a new fact's city is two familiar tokens, the same ones in the
context and in the answer, which the model can learn to copy (tests/test_course_model.py measures that it does).
"""
from __future__ import annotations

import pytest

from course_utils import data, world
from course_utils.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def syllable_tok():
    return train_tokenizer(world.pretrain_lines(1500), atomic_syllables=world.SYLLABLES)


def test_new_names_are_their_syllables(syllable_tok):
    tok = syllable_tok
    for country, city in world.new_facts():
        pieces = [tok.decode([i]).strip() for i in tok(" " + city, add_special_tokens=False).input_ids]
        assert "".join(pieces) == city and all(p in world.SYLLABLES for p in pieces), (city, pieces)
        prompt = tok(world.context_question(country, city), add_special_tokens=False).input_ids
        answer = tok(" " + city, add_special_tokens=False).input_ids
        assert any(prompt[i:i + len(answer)] == answer for i in range(len(prompt))), "context holds the answer's tokens"


def test_ordinary_words_are_not_split(syllable_tok):
    pre = syllable_tok.backend_tokenizer.pre_tokenizer
    words = [w for w, _ in pre.pre_tokenize_str("the yellow bellow kate lovely sun milk. sentiment: positive")]
    assert words == ["the", "Ġyellow", "Ġbellow", "Ġkate", "Ġlovely", "Ġsun", "Ġmilk", ".", "Ġsentiment", ":",
                     "Ġpositive"]


def test_default_corpus_is_the_committed_one():
    assert world.pretrain_lines(40) == data.texts("pretrain", 40)


def test_committed_tokenizer_splits_names_into_syllables(course_model):
    _, tok = course_model
    for _, city in world.new_facts():
        pieces = [tok.decode([i]).strip() for i in tok(" " + city, add_special_tokens=False).input_ids]
        assert "".join(pieces) == city and all(p in world.SYLLABLES for p in pieces), (city, pieces)
