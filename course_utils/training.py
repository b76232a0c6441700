"""One small training loop for everything: pretraining the course model, full fine-tuning, LoRA and QLoRA.

Only parameters with requires_grad=True are handed to the optimizer, so the same loop does full fine-tuning
(everything trainable) and LoRA (only adapters trainable) -- the difference is entirely in the model.
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field

import torch

from .surgery import eval_mode, train_mode

IGNORE = -100  # the label value torch's cross-entropy skips


def encode_texts(tokenizer, texts, max_len: int = 64) -> dict:
    """Right-padded causal-LM batch: every text is `<bos> text <eos>`; pad positions get label -100."""
    ids = [tokenizer(t).input_ids[: max_len - 1] + [tokenizer.eos_token_id] for t in texts]
    return _pad(ids, [list(x) for x in ids], tokenizer.pad_token_id)


def encode_pairs(tokenizer, prompts, answers, max_len: int = 64) -> dict:
    """Prompt/answer batch whose loss covers only the answer tokens (the usual instruction-tuning recipe)."""
    ids, labels = [], []
    for p, a in zip(prompts, answers):
        p_ids = tokenizer(p).input_ids
        a_ids = tokenizer(" " + a.strip(), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        seq = (p_ids + a_ids)[:max_len]
        ids.append(seq)
        labels.append(([IGNORE] * len(p_ids) + a_ids)[:max_len])
    return _pad(ids, labels, tokenizer.pad_token_id)


def _pad(ids, labels, pad_id) -> dict:
    n = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), n), pad_id, dtype=torch.long)
    lab = torch.full((len(ids), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(ids), n), dtype=torch.long)
    for i, (x, y) in enumerate(zip(ids, labels)):
        input_ids[i, : len(x)] = torch.tensor(x)
        lab[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": lab}


def packed_blocks(tokenizer, texts, seq_len: int = 64) -> torch.Tensor:
    """Concatenate `<bos> doc <eos>` streams and cut into fixed blocks: no padding wasted in pretraining."""
    stream = []
    for t in texts:
        stream += tokenizer(t).input_ids + [tokenizer.eos_token_id]
    n = len(stream) // seq_len
    return torch.tensor(stream[: n * seq_len]).view(n, seq_len)


def batches_from_blocks(blocks: torch.Tensor, batch_size: int, seed: int = 0):
    """Endless shuffled batches of packed blocks."""
    g = torch.Generator().manual_seed(seed)
    while True:
        for idx in torch.randperm(len(blocks), generator=g).split(batch_size):
            if len(idx) == batch_size:
                x = blocks[idx]
                yield {"input_ids": x, "labels": x}


def batches_from_examples(encode_fn, items, batch_size: int, seed: int = 0):
    """Endless shuffled batches built by `encode_fn(list_of_items)` (e.g. a partial of encode_pairs)."""
    rng = random.Random(seed)
    items = list(items)
    while True:
        rng.shuffle(items)
        for i in range(0, len(items) - batch_size + 1, batch_size):
            yield encode_fn(items[i : i + batch_size])


def progress_bar(iterable, desc: str = "", leave: bool = False):
    """tqdm (a widget in Jupyter) that honours TQDM_DISABLE=1, which tqdm's notebook bar ignores.

    Notebooks and the test suite run with TQDM_DISABLE=1 so stored outputs stay free of progress bars.
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=leave, disable=os.environ.get("TQDM_DISABLE") == "1")


@dataclass
class TrainResult:
    losses: list = field(default_factory=list)
    lrs: list = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        tail = self.losses[-10:]
        return sum(tail) / len(tail)


def trainable_parameters(model):
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            "No parameter of this model requires gradients, so training would change nothing. "
            "For LoRA call add_lora(...) first; for full fine-tuning call model.requires_grad_(True)."
        )
    return params


def train(model, batches, steps: int, lr: float = 1e-3, weight_decay: float = 0.0, warmup: int = 0,
          schedule: str = "constant", clip: float | None = 1.0, optimizer=None, progress: bool | str = True,
          seed: int = 0) -> TrainResult:
    """Train for `steps` batches with AdamW on the trainable parameters; returns the loss curve.

    `progress` shows a tqdm bar (a string becomes its description). Non-finite loss stops with an error
    rather than silently producing a NaN model.
    """
    torch.manual_seed(seed)
    params = trainable_parameters(model)
    opt = optimizer or torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def lr_at(step):
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        return 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    result = TrainResult()
    bar = range(steps)
    if progress:
        bar = progress_bar(bar, desc=progress if isinstance(progress, str) else "training")
    it = iter(batches)
    with train_mode(model):
        for step in bar:
            batch = next(it)
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"Loss became {loss.item()} at step {step}. Lower the learning rate (now {lr}), keep gradient "
                    "clipping on, and on CPU train in float32 (float16 overflows without a loss scaler)."
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            sched.step()
            result.losses.append(loss.item())
            result.lrs.append(sched.get_last_lr()[0])
            if progress and step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    return result


@torch.no_grad()
def eval_loss(model, batch) -> float:
    """Mean next-token loss on one encoded batch (eval mode, no dropout)."""
    with eval_mode(model):
        return model(**batch).loss.item()


@torch.no_grad()
def generate(model, tokenizer, prompt: str, max_new_tokens: int = 24, stop_at_eos: bool = True) -> str:
    """Greedy continuation of `prompt` (deterministic, so notebooks can store and compare it)."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(next(model.parameters()).device)
    with eval_mode(model):
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id if stop_at_eos else None,
        )
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def first_word(text: str) -> str:
    words = text.strip().replace(".", " ").replace(",", " ").split()
    return words[0] if words else ""


def answer_accuracy(model, tokenizer, prompts, answers, max_new_tokens: int = 3) -> float:
    """Fraction of prompts whose greedy answer's first word equals the expected answer."""
    hits = sum(first_word(generate(model, tokenizer, p, max_new_tokens)) == a.strip() for p, a in zip(prompts, answers))
    return hits / len(prompts)


@torch.no_grad()
def choice_accuracy(model, tokenizer, prompts, answers, choices=None) -> float:
    """Batched: does the model put more probability on the right answer's first token than on the others?

    One forward pass for all prompts, so it is fast enough to call inside a sweep. `choices` defaults to the
    set of distinct answers (e.g. positive/negative).
    """
    choices = sorted(set(answers)) if choices is None else list(choices)
    first = [tokenizer(" " + c, add_special_tokens=False).input_ids[0] for c in choices]
    if len(set(first)) < len(first):
        raise ValueError(f"choices {choices} share a first token; choice_accuracy needs distinct first tokens")
    enc = [tokenizer(p).input_ids for p in prompts]
    batch = _pad(enc, enc, tokenizer.pad_token_id)
    with eval_mode(model):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    last = batch["attention_mask"].sum(1) - 1
    scores = logits[torch.arange(len(prompts)), last][:, first]
    pred = [choices[i] for i in scores.argmax(1).tolist()]
    return sum(p == a for p, a in zip(pred, answers)) / len(answers)
