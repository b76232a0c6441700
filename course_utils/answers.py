"""Exact answers by greedy decoding, for many prompts at once: does the model *say* the fact, not merely put some
probability on it?

    greedy_answers(model, tok, prompts)          the first word of each greedy continuation
    exact_accuracy(model, tok, prompts, answers) share of prompts whose first word is exactly the answer

Why not `training.answer_accuracy`: it decodes one prompt at a time through `generate`, which is fine for a handful
of prompts and too slow for the hundreds of (fact x paraphrase) prompts a knowledge test needs. Here all prompts go
through the model together, left-padded (so every prompt's last token sits in the same column), with positions
counted from each prompt's first real token, so the answers are the same as decoding each prompt alone.
Without a KV cache each step re-reads the whole prefix; for a few new tokens on short prompts that is the fast way.
"""
from __future__ import annotations

import torch

from .surgery import eval_mode
from .training import first_word


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts, max_new_tokens: int = 4, batch_size: int = 128) -> list[str]:
    """The first word of the greedy continuation of each prompt (an empty string if the model ends at once)."""
    prompts = list(prompts)
    words = []
    for i in range(0, len(prompts), batch_size):
        words += _greedy_batch(model, tokenizer, prompts[i:i + batch_size], max_new_tokens)
    return words


def _greedy_batch(model, tokenizer, prompts, max_new_tokens):
    enc = [tokenizer(p).input_ids for p in prompts]
    n = max(len(x) for x in enc)
    ids = torch.full((len(enc), n), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(enc), n), dtype=torch.long)
    for j, x in enumerate(enc):
        ids[j, n - len(x):] = torch.tensor(x)
        mask[j, n - len(x):] = 1
    new = []
    with eval_mode(model):
        for _ in range(max_new_tokens):
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
            nxt = logits.argmax(-1)
            new.append(nxt)
            ids = torch.cat([ids, nxt[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(nxt)[:, None]], 1)
    out = torch.stack(new, 1).tolist()
    eos = tokenizer.eos_token_id
    texts = [tokenizer.decode(row[:row.index(eos)] if eos in row else row, skip_special_tokens=True) for row in out]
    return [first_word(t) for t in texts]


def exact_accuracy(model, tokenizer, prompts, answers, max_new_tokens: int = 4) -> float:
    """Share of prompts whose greedy answer's first word is exactly the expected answer."""
    prompts, answers = list(prompts), list(answers)
    if len(prompts) != len(answers) or not prompts:
        raise ValueError(f"exact_accuracy needs as many answers as prompts (got {len(prompts)} and {len(answers)}), "
                         "and at least one. Fix: pass one expected answer per prompt.")
    got = greedy_answers(model, tokenizer, prompts, max_new_tokens)
    return sum(g == a.strip() for g, a in zip(got, answers)) / len(prompts)
