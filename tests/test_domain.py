"""course_utils.domain: every bad file is refused with its line named; chapter 14 runs on a user's own file the whole
way (load, split, LoRA, evaluate against the base, save in PEFT's format, reload with PEFT: identical logits)."""
from __future__ import annotations

import json
import re
import warnings

import pytest
import torch

from course_utils import domain, world
from course_utils.domain import DataError, DataWarning

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

GOOD = {"prompt": "song: a fast rock song with drums about the sweet cake in the park. mood:", "completion": "happy"}


def lines_file(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return path


def labelled(n_per_label, labels=("happy", "sad")):
    return [json.dumps({"prompt": f"song {i}: a song about the {lab} cat number {i}. mood:", "completion": lab})
            for lab, n in zip(labels, n_per_label) for i in range(n)]


def test_every_bad_line_is_named_with_its_problem_and_fix(tmp_path, course_model):
    _, tok = course_model
    ok = labelled([6, 6])
    bad = {
        3: ('{"prompt": "song: a slow song. mood:", "completion": "sad"', "not valid JSON"),
        5: ('["song: a slow song. mood:", "sad"]', "a JSON list, not an object"),
        7: ('{"prompt": "song: a slow song. mood:", "label": "sad"}', 'no "completion" field (it has "prompt", "label")'),
        9: ('{"prompt": "song: a slow song. mood:", "completion": 3}', '"completion" is 3, not text'),
        11: ('{"prompt": "   ", "completion": "sad"}', '"prompt" is empty'),
        13: (b'{"prompt": "caf\xe9", "completion": "sad"}', "not UTF-8"),
        15: (json.dumps({"prompt": "song: " + "a very long song " * 40, "completion": "sad"}), "tokens, over the limit of 64"),
    }
    lines = []
    for n in range(1, 16):
        lines.append(bad[n][0] if n in bad else ok.pop())
    path = lines_file(tmp_path, lines)
    with pytest.raises(DataError) as err:
        domain.load_examples(path, tok, max_tokens=64)
    message = str(err.value)
    assert [n for n, _ in err.value.problems] == sorted(bad), message
    assert message.startswith(f"{path}: 7 problems, nothing was loaded")
    for n, (_, words) in bad.items():
        line = re.search(rf"^  line {n}: (.*)$", message, re.M)
        assert line and words in line.group(1) and "Fix:" in line.group(1), (n, message)


@pytest.mark.parametrize("content, what", [(b"", "0 bytes"), (b"\n  \n\n", "4 lines, all blank")])
def test_an_empty_file_is_refused(tmp_path, content, what):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"empty \({what}\)\. Fix: write one example per line"):
        domain.load_examples(path)


def test_missing_file_and_too_few_examples_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file. Fix"):
        domain.load_examples(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="only 3 examples. Fix: at least 10"):
        domain.load_examples(lines_file(tmp_path, [json.dumps(GOOD)] * 3))


def test_imbalance_warns_with_counts_and_strict_refuses(tmp_path):
    path = lines_file(tmp_path, labelled([16, 4]))
    with pytest.warns(DataWarning) as caught:
        domain.load_examples(path)
    message = str(caught[0].message)
    assert f"{path} line 17:" in message and "'happy': 16, 'sad': 4" in message and "scores 80%" in message
    with pytest.raises(DataError, match=r"line 17: labels are imbalanced .* Fix: add examples of the rare labels"):
        domain.load_examples(path, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(domain.load_examples(lines_file(tmp_path, labelled([8, 4]), "ok.jsonl"))) == 12  # 2x: fine


def test_duplicates_name_both_lines(tmp_path):
    rows = labelled([6, 6])
    path = lines_file(tmp_path, rows + [rows[2]])
    with pytest.warns(DataWarning, match="line 13: repeats line 3"):
        domain.load_examples(path)
    with pytest.raises(DataError, match="line 13: repeats line 3"):
        domain.load_examples(path, strict=True)


def test_split_keeps_every_label_on_both_sides_and_is_deterministic(tmp_path):
    examples = domain.load_examples(domain.write_music_example(tmp_path))
    train, test = domain.split(examples, held_out=0.2, seed=0)
    assert len(train) + len(test) == 240 and {e.line for e in train}.isdisjoint({e.line for e in test})
    assert set(domain.label_counts(train)) == set(domain.label_counts(test)) == set(world.MOODS.values())
    assert [e.line for e in domain.split(examples, 0.2, 0)[1]] == [e.line for e in test]
    free_text = [domain.Example(f"q{i}", f"answer {i}", i + 1) for i in range(10)]
    assert not domain.is_labelled(free_text) and len(domain.split(free_text, 0.2)[1]) == 2
    with pytest.raises(ValueError, match="held_out is the fraction"):
        domain.split(examples, held_out=20)


def test_the_bundled_example_is_deterministic_balanced_and_short(tmp_path, course_model):
    _, tok = course_model
    a = domain.write_music_example(tmp_path / "a").read_bytes()
    assert a == domain.write_music_example(tmp_path / "b").read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no imbalance, no duplicates
        examples = domain.load_examples(tmp_path / "a" / "music_moods.jsonl", tok, max_tokens=64)
    assert max(domain.n_tokens(tok, e.prompt, e.completion) for e in examples) <= 40


def test_qlora_base_is_4bit_and_trains(course_model):
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model

    from course_utils.training import train

    model, tok = domain.load_base("qlora")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    examples = [domain.Example(**r, line=i + 1) for i, r in enumerate(world.music_moods(16))]
    losses = train(model, domain.batches(tok, examples, 8), 3, lr=1e-2, progress=False).losses
    assert all(map(torch.isfinite, torch.tensor(losses)))
    with pytest.raises(ValueError, match='method is "lora" or "qlora"'):
        domain.load_base("full")


@pytest.mark.slow
def test_chapter_14_runs_on_a_users_own_file(tmp_path):
    """The chapter itself, its settings cell pointed at a user's file of another domain, run as a script."""
    import subprocess
    import sys

    from course_utils.paths import REPO_ROOT, notebook_env

    rows = [{"prompt": f"the {c} {a} plays the {inst}. family:", "completion": fam}
            for inst, fam in {"violin": "strings", "drums": "drums", "piano": "keys"}.items()
            for c in world.COLORS[:6] for a in world.ANIMALS[:6]]
    mine = domain.write_jsonl(tmp_path / "instruments.jsonl", rows)
    source = (REPO_ROOT / "notebooks" / "src" / "14_your_own_domain.py").read_text()
    settings = {"DATA_FILE = None": f"DATA_FILE = {str(mine)!r}", "STEPS, LR, BATCH = 80,": "STEPS, LR, BATCH = 40,",
                'ADAPTER_DIR = None': f"ADAPTER_DIR = {str(tmp_path / 'my_adapter')!r}"}
    for old, new in settings.items():
        assert source.count(old) == 1, f"the settings cell no longer has {old!r}: update this test"
        source = source.replace(old, new)
    script = tmp_path / "chapter14.py"
    script.write_text(source)
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**notebook_env(), "MPLBACKEND": "Agg"})
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "instruments.jsonl:" in out and "108 examples" in out and "labels: " in out
    assert "reloaded with PEFT: max |logit difference| 0.0" in out
    assert (tmp_path / "my_adapter" / "adapter_model.safetensors").exists()
    accuracy = [float(x) for x in re.findall(r"fine-tuned, seed \d\s+[\d.]+\s+([\d.]+)", out)]
    base = float(re.search(r"base model\s+[\d.]+\s+([\d.]+)", out).group(1))
    assert len(accuracy) == 3 and min(accuracy) > base, out[-2000:]
