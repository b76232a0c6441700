"""Recipe v2 of the course model (scripts/build_course_model.py --recipe v2): a base that reads its context.

Its only change is the tokenizer: invented names split into their syllables, so a new fact's city is two
familiar tokens, the same ones in the context and in the answer, which the model can learn to copy.
"""
from __future__ import annotations

import json

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


@pytest.mark.slow
def test_build_script_recipe_v2(tmp_path):
    import subprocess
    import sys

    from course_utils.manifest import verify_manifest
    from course_utils.models import load_course_model
    from course_utils.paths import REPO_ROOT

    out = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "build_course_model.py"), "--quick", "--recipe", "v2",
                          "--threads", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert verify_manifest(tmp_path) == []
    _, tok = load_course_model(tmp_path / "course_model")
    city = world.new_facts()[0][1]
    assert len(tok(" " + city, add_special_tokens=False).input_ids) == 2, "the saved tokenizer keeps the syllable split"
    assert json.loads((tmp_path / "course_model" / "pretrain_log.json").read_text())["recipe"] == "v2"
