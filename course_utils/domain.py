"""Your own data (chapter 14): the JSONL format a fine-tune reads, the checks that catch a bad file, a split, and the
evaluation that compares a fine-tune with its base model.

The format, one JSON object per line (UTF-8; blank lines are skipped; other keys, e.g. "id", are ignored):

    {"prompt": "song: a slow folk song with piano about the cold soup in the park. mood:", "completion": "sad"}

- `prompt`      the text the model reads. End it with a cue the completion follows ("mood:", "answer:"), the same
                in every line: the model learns the format from it.
- `completion`  what the model should write next. Training joins it to the prompt with one space and ends it with
                the tokenizer's end-of-sequence token; the loss covers only the completion (encode_pairs).

Why each check exists (load_examples runs them all and names every bad line in one error, so one edit fixes all):
- bad JSON, a missing field, a value that is not text, an empty text: the line would crash training or teach nothing;
- too long: encode_pairs cuts a sequence at `max_tokens`, and the cut falls on the completion, the very tokens the
  loss is about. Counted in the model's tokens, since characters say little (a new word can take 5 tokens);
- label imbalance (a warning; an error with strict=True): where completions are labels, always answering the
  commonest one scores its share, and a fine-tune can look good by learning only that;
- duplicates (a warning; an error with strict=True): a copy on each side of the split is a test the model has
  seen, and held-out accuracy looks better than it is.

    >>> from course_utils import domain
    >>> model, tokenizer = domain.load_base("lora")      # or "qlora": a 4-bit base (bitsandbytes)
    >>> examples = domain.load_examples("my_data.jsonl", tokenizer, max_tokens=64)
    >>> train, held_out = domain.split(examples)
    >>> domain.evaluate(model, tokenizer, held_out, max_tokens=64)   # {"loss": ..., "accuracy": ...}
    >>> domain.batches(tokenizer, train)                 # training batches for course_utils.training.train

The bundled example (`write_music_example`, song descriptions -> mood) is written at run time by
course_utils.world.music_moods rather than committed with the course's checksummed data: it takes milliseconds,
is the same file every time, and then goes through exactly the path a user's own file takes.
"""
from __future__ import annotations

import json
import math
import random
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

FIELDS = ("prompt", "completion")
EXAMPLE_LINE = '{"prompt": "song: a fast rock song with drums about the sweet cake in the park. mood:", "completion": "happy"}'
MAX_RATIO = 3.0  # commonest label / rarest label above this: imbalanced
MIN_EXAMPLES = 10  # fewer cannot give both a training set and a held-out set worth a number
SHOWN = 10  # problems listed in one error; the rest are counted


class DataError(ValueError):
    """A data file that cannot be trained on. `problems` holds (line number, what is wrong and the fix)."""

    def __init__(self, path, problems: list[tuple[int, str]]):
        self.path, self.problems = Path(path), problems
        total = len(problems)
        lines = [f"  line {n}: {msg}" if n else f"  {msg}" for n, msg in problems[:SHOWN]]
        if total > SHOWN:
            lines.append(f"  ... and {total - SHOWN} more")
        super().__init__(f"{self.path}: {total} problem{'s' * (total > 1)}, nothing was loaded:\n" + "\n".join(lines))


class DataWarning(UserWarning):
    """Trainable, but a result on it may mislead: label imbalance, duplicates."""


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str
    line: int  # 1-based, in the file it came from: every message names it

    def as_json(self) -> dict:
        return {"prompt": self.prompt, "completion": self.completion}


def write_jsonl(path, records) -> Path:
    """Write records (dicts or Examples) one per line, the format load_examples reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.as_json() if isinstance(r, Example) else r, ensure_ascii=False) + "\n")
    return path


def write_music_example(folder, n: int = 240, seed: int = 0) -> Path:
    """The bundled example, `music_moods.jsonl`, written from course_utils.world.music_moods (deterministic)."""
    from .world import music_moods

    return write_jsonl(Path(folder) / "music_moods.jsonl", music_moods(n, seed))


def _parse_line(raw: bytes) -> tuple[dict | None, str | None]:
    """(record, None) or (None, the problem and its fix)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, (f"not UTF-8 text (byte {e.start + 1}). Fix: save the file as UTF-8 (an editor's "
                      "'Save with encoding', or iconv -t UTF-8).")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        return None, (f"not valid JSON ({e.msg} at column {e.colno}). Fix: one JSON object per line, with double "
                      f"quotes, e.g. {EXAMPLE_LINE}")
    if not isinstance(record, dict):
        return None, (f"a JSON {type(record).__name__}, not an object. Fix: write "
                      '{"prompt": "...", "completion": "..."} on this line.')
    for key in FIELDS:
        if key not in record:
            has = ", ".join(f'"{k}"' for k in record) or "no keys"
            return None, (f'no "{key}" field (it has {has}). Fix: every line needs "prompt" and "completion"; '
                          "rename the field that holds it.")
        if not isinstance(record[key], str):
            return None, (f'"{key}" is {json.dumps(record[key])}, not text. Fix: write it as a string, '
                          f'e.g. "{key}": "{record[key]}".')
        if not record[key].strip():
            return None, f'"{key}" is empty. Fix: write the text, or delete the line.'
    return record, None


def n_tokens(tokenizer, prompt: str, completion: str) -> int:
    """Tokens of one training sequence as encode_pairs builds it: prompt, ' ' + completion, end-of-sequence."""
    return (len(tokenizer(prompt).input_ids) + len(tokenizer(" " + completion.strip(), add_special_tokens=False).input_ids)
            + 1)


def context_length(tokenizer, model=None) -> int:
    """The longest sequence the model takes (its position embeddings, else the tokenizer's limit)."""
    limits = [getattr(getattr(model, "config", None), "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    limits = [n for n in limits if isinstance(n, int) and 0 < n < 10**7]  # 10**30: "no limit set"
    return min(limits) if limits else 2048


def is_labelled(examples) -> bool:
    """Are the completions labels (a few values, each repeated) rather than free text? At most one distinct value
    per 4 examples: then imbalance and accuracy per label mean something."""
    return len({e.completion for e in examples}) <= max(1, len(examples) // 4)


def label_counts(examples) -> Counter:
    return Counter(e.completion for e in examples)


def _soft_problems(examples, max_ratio: float) -> list[tuple[int, str]]:
    """Label imbalance and duplicates: (line, message) for each."""
    found = []
    if is_labelled(examples):
        counts = label_counts(examples)
        (top, n_top), n_rare = counts.most_common()[0], min(counts.values())
        if n_top > max_ratio * n_rare:
            first, rare = next((e.line, e.completion) for e in examples if counts[e.completion] == n_rare)
            shown = ", ".join(f"{k!r}: {v}" for k, v in counts.most_common())
            found.append((first, f"labels are imbalanced ({shown}): {top!r} is {n_top / n_rare:.1f}x as common as "
                                 f"{rare!r} (first at this line), over the {max_ratio:g}x this check allows. Always "
                                 f"answering {top!r} already scores {n_top / len(examples):.0%}. Fix: add examples of "
                                 "the rare labels, or drop some of the common ones."))
    seen = {}
    for e in examples:
        key = (e.prompt.strip(), e.completion.strip())
        if key in seen:
            found.append((e.line, f"repeats line {seen[key]}. A copy on each side of the split is a test the model "
                                  "has seen. Fix: delete one of the two."))
        else:
            seen[key] = e.line
    return found


def load_examples(path, tokenizer=None, max_tokens: int | None = None, *, max_ratio: float = MAX_RATIO,
                  strict: bool = False) -> list[Example]:
    """Read and check a JSONL file (the format in this module's docstring); raise DataError naming every bad line.

    With a tokenizer, every example must fit in `max_tokens` (default: the tokenizer's limit). Imbalance and
    duplicates warn (DataWarning); strict=True makes them errors too.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file. Fix: check the path (relative paths start at "
                                f"{Path.cwd()}), or set it to None to use the bundled example.")
    raw_lines = path.read_bytes().split(b"\n")
    examples, problems = [], []
    for n, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        record, problem = _parse_line(raw.rstrip(b"\r"))
        if problem:
            problems.append((n, problem))
        else:
            examples.append(Example(record["prompt"], record["completion"], n))
    if not examples and not problems:
        what = "0 bytes" if not path.stat().st_size else f"{len(raw_lines)} lines, all blank"
        raise DataError(path, [(0, f"the file is empty ({what}). Fix: write one example per line, e.g. "
                                   f"{EXAMPLE_LINE}")])
    if tokenizer is not None:
        limit = max_tokens or context_length(tokenizer)
        for e in examples:
            n = n_tokens(tokenizer, e.prompt, e.completion)
            if n > limit:
                problems.append((e.line, f"{n} tokens, over the limit of {limit}: training would cut the completion "
                                         f"off. Fix: shorten the prompt, or raise max_tokens (the model takes "
                                         f"{context_length(tokenizer)})."))
    if not problems and len(examples) < MIN_EXAMPLES:
        problems.append((0, f"only {len(examples)} examples. Fix: at least {MIN_EXAMPLES}, so that a held-out part "
                            "is left to measure on (a few hundred is a good start)."))
    soft = _soft_problems(examples, max_ratio) if not problems else []
    if strict:
        problems += soft
    problems.sort(key=lambda p: p[0])
    if problems:
        raise DataError(path, problems)
    for n, msg in soft:
        warnings.warn(f"{path} line {n}: {msg}", DataWarning, stacklevel=2)
    return examples


def split(examples, held_out: float = 0.2, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """(train, held_out), shuffled with `seed`; labelled data is split per label, so both parts keep its mix."""
    if not 0 < held_out < 1:
        raise ValueError(f"held_out is the fraction kept for evaluation, got {held_out}. Fix: e.g. 0.2.")
    rng = random.Random(seed)
    groups = defaultdict(list)
    for e in examples:
        groups[e.completion if is_labelled(examples) else ""].append(e)
    train, test = [], []
    for key in sorted(groups):
        group = groups[key][:]
        rng.shuffle(group)
        k = min(len(group) - 1, math.ceil(held_out * len(group)))  # every label keeps one training example
        test += group[:k]
        train += group[k:]
    if not test or not train:
        raise ValueError(f"{len(examples)} examples leave nothing to {'hold out' if not test else 'train on'}. "
                         f"Fix: more examples (at least {MIN_EXAMPLES}).")
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def _normal(text: str) -> str:
    return " ".join(text.strip().strip(".").lower().split())


@torch.no_grad()
def evaluate(model, tokenizer, examples, max_tokens: int = 64, batch_size: int = 32) -> dict:
    """{"loss": mean loss per completion token, "accuracy": share of greedy answers equal to the completion}.

    Accuracy compares what the model writes (greedy, up to the longest completion's length), ignoring case, spaces
    and a final period: a model that ranks the right label first but never writes it does not score.
    """
    from .surgery import eval_mode
    from .training import encode_pairs, generate

    device = next(model.parameters()).device
    total, count = 0.0, 0
    with eval_mode(model):
        for i in range(0, len(examples), batch_size):
            part = examples[i:i + batch_size]
            batch = encode_pairs(tokenizer, [e.prompt for e in part], [e.completion for e in part], max_len=max_tokens)
            batch = {k: v.to(device) for k, v in batch.items()}
            n = int((batch["labels"][:, 1:] != -100).sum())  # the tokens the loss averages over
            total += model(**batch).loss.item() * n
            count += n
    longest = max(len(tokenizer(" " + e.completion, add_special_tokens=False).input_ids) for e in examples)
    hits = sum(_normal(generate(model, tokenizer, e.prompt, longest + 1)) == _normal(e.completion) for e in examples)
    return {"loss": total / count, "accuracy": hits / len(examples)}


def majority_accuracy(train, held_out) -> float:
    """What always answering the training set's commonest completion scores on held_out: the bar to clear."""
    top = label_counts(train).most_common(1)[0][0]
    return sum(e.completion == top for e in held_out) / len(held_out)


def batches(tokenizer, examples, batch_size: int = 16, max_tokens: int = 64, seed: int = 0, device="cpu"):
    """Endless shuffled training batches of prompt/completion pairs (loss on the completions), on `device`."""
    from .training import batches_from_examples, encode_pairs

    def encode(part):
        batch = encode_pairs(tokenizer, [e.prompt for e in part], [e.completion for e in part], max_len=max_tokens)
        return {k: v.to(device) for k, v in batch.items()}

    return batches_from_examples(encode, examples, min(batch_size, len(examples)), seed=seed)


def load_base(method: str = "lora", name_or_path=None):
    """(model, tokenizer) to put adapters on: the course model, or $COURSE_MODEL / `name_or_path` (models.py).

    "lora": weights in float32 on CPU (bfloat16 on a GPU). "qlora": linear weights in 4 bits, NF4 with double
    quantization, loaded by transformers + bitsandbytes and prepared by PEFT's prepare_model_for_kbit_training,
    as QLoRA scripts do. On a GPU the model goes there; on a CPU everything stays float32 (no fast bf16 there).
    """
    from .models import load_course_model

    if method not in ("lora", "qlora"):
        raise ValueError(f'method is "lora" or "qlora", got {method!r}. Fix: METHOD = "lora".')
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    if method == "lora":
        model, tok = load_course_model(name_or_path, dtype=dtype)
        return model.to("cuda" if cuda else "cpu"), tok
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=dtype)
    with warnings.catch_warnings():  # transformers' notes on 4-bit loading, and PEFT asking a deprecated attribute
        warnings.simplefilter("ignore")
        model, tok = load_course_model(name_or_path, quantization_config=config,
                                       **({"device_map": {"": 0}} if cuda else {}))
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model, tok

