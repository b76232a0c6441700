"""The embedded course model: checksummed, loads fast through from_pretrained, actually pretrained."""
from __future__ import annotations

import json

import pytest
import torch

from course_utils import data, training, world
from course_utils.manifest import verify_manifest
from course_utils.models import LINEAR_NAMES, load_course_model
from course_utils.paths import ASSETS_DIR, MODEL_DIR


def test_manifest_matches_committed_assets():
    assert verify_manifest() == []


def test_tampering_is_detected(tmp_path):
    import shutil

    copy = tmp_path / "assets"
    shutil.copytree(ASSETS_DIR, copy)
    with open(copy / "data" / "prior.jsonl", "a") as f:
        f.write('{"prompt": "q: injected? a:", "answer": "yes"}\n')
    problems = verify_manifest(copy)
    assert problems == ["data/prior.jsonl: checksum mismatch"]
    with pytest.raises(RuntimeError, match="git checkout -- course_utils/assets"):
        verify_manifest(copy, raise_on_error=True)


def test_architecture_has_the_names_the_course_teaches(course_model):
    model, _ = course_model
    names = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(LINEAR_NAMES) | {"lm_head"} == names
    assert model.config.model_type == "llama"
    assert (MODEL_DIR / "model.safetensors").stat().st_size < 20 * 2**20


def test_pretraining_was_recorded_and_converged():
    log = json.loads((MODEL_DIR / "pretrain_log.json").read_text())
    assert len(log["losses"]) == log["steps"]
    assert log["losses"][0] > 6.0, "training starts near ln(vocab) = 6.9"
    assert log["final_loss"] < 1.2


def test_generates_recognisable_text(course_model):
    model, tok = course_model
    prior = data.load("prior")
    acc = training.answer_accuracy(model, tok, [r["prompt"] for r in prior], [r["answer"] for r in prior])
    assert acc >= 0.9, f"the base model should know its world facts, got {acc:.0%}"
    text = training.generate(model, tok, "the cat", max_new_tokens=12)
    assert any(w in text.split() for w in ("in", "the", "likes", "sat", "ran")), text


def test_knows_known_facts_not_new_ones(course_model):
    model, tok = course_model
    def acc(rows):
        return training.answer_accuracy(model, tok, [f"q: what is the capital of {r['country']}? a:" for r in rows],
                                        [r["capital"] for r in rows])
    assert acc(data.load("facts_known")) >= 0.8
    assert acc(data.load("facts_new")) <= 0.1


def test_reads_new_facts_from_its_context(course_model):
    from course_utils.reading import reading_accuracy

    r = reading_accuracy(*course_model)
    print(f"{r['n_facts']} held-out new facts: {r['in_context']:.0%} exact in context, "
          f"{r['without_context']:.0%} without context")
    assert r["n_facts"] >= 20
    assert r["in_context"] >= 0.8, f"the model should copy a new fact from its context, got {r}"
    assert r["without_context"] <= 0.1, f"without the context it can only guess (chance 1/{r['n_facts']}), got {r}"


def test_with_two_facts_in_context_it_copies_the_last_one(course_model):
    """The limit the README and course_utils.reading state: the model reads one fact, the last one it saw."""
    from course_utils.reading import two_fact_accuracy

    r = two_fact_accuracy(*course_model)
    print(f"two facts in context: asked about the first {r['asked_first']:.0%}, the second {r['asked_second']:.0%}")
    assert r["asked_second"] >= 0.8 and r["asked_first"] <= 0.2, r


@pytest.mark.slow
def test_build_script_still_works(tmp_path):
    import subprocess
    import sys

    from course_utils.paths import REPO_ROOT

    out = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "build_course_model.py"), "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert verify_manifest(tmp_path) == []
    model, tok = load_course_model(tmp_path / "course_model")
    assert model.config.num_hidden_layers == 4
    log = json.loads((tmp_path / "course_model" / "pretrain_log.json").read_text())
    assert log["losses"][-1] < log["losses"][0]
    city = world.new_facts()[0][1]
    assert len(tok(" " + city, add_special_tokens=False).input_ids) == 2, "the saved tokenizer keeps the syllable split"
