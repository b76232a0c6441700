"""Fast proxy for the course model's pretraining recipe: does the model *read its context*?

    python scripts/probe_reading.py --steps 1500 --eval-every 300     # recipe v2: v1 corpus, syllable tokenizer
    python scripts/probe_reading.py --tok bpe --steps 1200            # the committed model's recipe (v1)
    python scripts/probe_reading.py --eval /tmp/v2/course_model       # score a built model

Builds data + tokenizer, pretrains for N steps (1 thread by default; --device cuda for sweeps) and prints, at every --eval-every:
in-context accuracy on world.new_facts() (facts never in pretraining, given in the prompt), the same questions
without context (should stay near chance), known facts, and the prior. Greedy decode, exact match of the answer.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_utils import training, world  # noqa: E402
from course_utils.models import tiny_llama  # noqa: E402
from course_utils.tokenizer import train_tokenizer  # noqa: E402


# An alternative corpus tried here (--data v2): more varied reading drills (several facts with distractors, 2-3
# syllable names, plain repetition). Measured worse than v1's corpus with the syllable tokenizer: kept to reproduce.
READING_MIX = {"story": 0.40, "prior": 0.15, "known": 0.12, "ctx1": 0.08, "ctxn": 0.15, "repeat": 0.10}


def fresh_name(rng: random.Random, taken: set) -> str:
    """An invented name that is none of the world's countries or capitals (so new facts stay unseen)."""
    while True:
        w = world._word(rng, rng.choice((2, 2, 3)))
        if w not in taken:
            return w


def _reading_drill(rng: random.Random, kind: str, taken: set) -> str:
    if kind == "repeat":
        # plain copying of unseen names: the cheapest signal that grows induction heads early
        ws = " ".join(fresh_name(rng, taken) for _ in range(rng.randint(1, 4)))
        return f"say: {ws}. {ws}."
    n = 1 if kind == "ctx1" else rng.randint(2, 4)
    facts = []
    while len(facts) < n:
        c, k = fresh_name(rng, taken), fresh_name(rng, taken)
        if c != k and c not in {f[0] for f in facts}:
            facts.append((c, k))
    country, city = rng.choice(facts)
    lines = [world.fact_sentence(c, k) for c, k in facts]
    if kind == "ctxn" and rng.random() < 0.3:
        lines.insert(rng.randrange(len(lines) + 1), world.story_sentence(rng))  # a distractor that is no fact
    return f"context: {' '.join(lines)} {world.fact_question(country)} {city}."


def pretrain_lines_v2(n_lines: int, seed: int = 0, mix: dict | None = None) -> list[str]:
    """Like pretrain_lines, plus context-reading drills (one fact, several facts, plain repetition)."""
    mix = READING_MIX if mix is None else mix
    rng = random.Random(seed)
    prior, known = world.prior_pairs(), world.known_facts()
    taken = {w for pair in world.invented_countries() for w in pair}
    kinds, weights = list(mix), list(mix.values())
    lines = []
    for _ in range(n_lines):
        kind = rng.choices(kinds, weights)[0]
        if kind == "story":
            lines.append(" ".join(world.story_sentence(rng) for _ in range(rng.randint(3, 6))))
        elif kind == "prior":
            lines.append(" ".join(f"{q} {a}." for q, a in rng.sample(prior, 3)))
        elif kind == "known":
            country, city = rng.choice(known)
            if rng.random() < 0.5:
                lines.append(f"{world.fact_sentence(country, city)} {world.fact_question(country)} {city}.")
            else:
                lines.append(f"{world.fact_question(country)} {city}. {world.story_sentence(rng)}")
        else:
            lines.append(_reading_drill(rng, kind, taken))
    return lines


def pretrain_lines_multi(n_lines: int, seed: int = 0, reading: float = 0.12, max_facts: int = 3) -> list[str]:
    """v1's corpus, except that each context drill states 1..max_facts facts and asks about one of them, so
    copying "the city after 'is'" is not enough: the model has to find the asked country (--data v1n)."""
    lines = world.pretrain_lines(n_lines, seed, reading)
    rng = random.Random(seed + 12345)
    out = []
    for line in lines:
        if line.startswith("context: "):
            facts = [(world._word(rng, 2), world._word(rng, 2)) for _ in range(rng.randint(1, max_facts))]
            country, city = rng.choice(facts)
            ctx = " ".join(world.fact_sentence(c, k) for c, k in facts)
            line = f"context: {ctx} {world.fact_question(country)} {city}."
        out.append(line)
    return out


@torch.no_grad()
def greedy_answers(model, tok, prompts, max_new_tokens=5, device="cpu"):
    """Batched greedy decoding (left-padded), first word of each continuation."""
    enc = [tok(p).input_ids for p in prompts]
    n = max(map(len, enc))
    ids = torch.full((len(enc), n), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(enc):
        ids[i, n - len(e):] = torch.tensor(e)
        mask[i, n - len(e):] = 1
    ids, mask = ids.to(device), mask.to(device)
    model.eval()
    out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model.train()
    return [training.first_word(tok.decode(o[n:], skip_special_tokens=True)) for o in out]


def evaluate(model, tok, device="cpu") -> dict:
    new, known, prior = world.new_facts(), world.known_facts(), world.prior_pairs()

    def acc(prompts, answers):
        got = greedy_answers(model, tok, prompts, device=device)
        return round(sum(g == a for g, a in zip(got, answers)) / len(answers), 3)

    # in context with one distractor fact (another new fact), answer position varying
    distract = [world.fact_sentence(*new[(i + 7) % len(new)]) for i in range(len(new))]
    two = [f"context: {d} {world.fact_sentence(c, k)} {world.fact_question(c)}" if i % 2 else
           f"context: {world.fact_sentence(c, k)} {d} {world.fact_question(c)}"
           for i, ((c, k), d) in enumerate(zip(new, distract))]
    return {
        "ctx": acc([world.context_question(c, k) for c, k in new], [k for _, k in new]),
        "ctx2": acc(two, [k for _, k in new]),
        "noctx": acc([world.fact_question(c) for c, _ in new], [k for _, k in new]),
        "known": acc([world.fact_question(c) for c, _ in known], [k for _, k in known]),
        "prior": acc([q for q, _ in prior], [a for _, a in prior]),
    }


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="v1", choices=["v1", "v2", "v1n"])
    ap.add_argument("--tok", default="syll", choices=["bpe", "syll"])
    ap.add_argument("--mix", default=None, help="JSON dict overriding world.READING_MIX")
    ap.add_argument("--reading", type=float, default=0.12, help="v1 data: share of context drills")
    ap.add_argument("--max-facts", type=int, default=3, help="v1n data: most facts in one context drill")
    ap.add_argument("--n-pretrain", type=int, default=24000)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--final-lr", type=float, default=0.0, help="cosine floor as a fraction of lr")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--inter", type=int, default=352)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--eval", type=Path, default=None, help="only evaluate a saved model folder")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.eval:
        from course_utils.models import load_course_model

        model, tok = load_course_model(args.eval)
        res = evaluate(model, tok)
        print("RESULT", json.dumps(res))
        return res
    t0 = time.perf_counter()
    mix = json.loads(args.mix) if args.mix else None
    if args.data == "v1":
        texts = world.pretrain_lines(args.n_pretrain, args.seed, args.reading)
    elif args.data == "v1n":
        texts = pretrain_lines_multi(args.n_pretrain, args.seed, args.reading, args.max_facts)
    else:
        texts = pretrain_lines_v2(args.n_pretrain, args.seed, mix)
    tok = train_tokenizer(texts, atomic_syllables=world.SYLLABLES if args.tok == "syll" else None)
    blocks = training.packed_blocks(tok, texts, seq_len=args.seq_len)
    model = tiny_llama(seed=args.seed, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                       num_key_value_heads=args.heads, hidden_size=args.hidden, intermediate_size=args.inter)
    model.to(args.device).train()
    n_params = sum(p.numel() for p in model.parameters())
    torch.manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)

    def lr_at(step):
        if step < args.warmup:
            return (step + 1) / args.warmup
        c = 0.5 * (1 + math.cos(math.pi * (step - args.warmup) / max(1, args.steps - args.warmup)))
        return args.final_lr + (1 - args.final_lr) * c

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    batches = training.batches_from_blocks(blocks, args.batch, seed=args.seed)
    losses, evals = [], []
    for step in range(args.steps):
        x = next(batches)["input_ids"].to(args.device)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            ev = {"step": step + 1, "loss": round(sum(losses[-20:]) / len(losses[-20:]), 3), **evaluate(model, tok, args.device)}
            evals.append(ev)
            print(args.tag, json.dumps(ev), flush=True)
    ev = {"step": args.steps, "loss": round(sum(losses[-20:]) / len(losses[-20:]), 3), **evaluate(model, tok, args.device)}
    evals.append(ev)
    res = {"tag": args.tag, **ev, "params": n_params, "corpus_tokens": int(blocks.numel()),
           "seconds": round(time.perf_counter() - t0, 1), "args": vars(args), "curve": evals}
    print("RESULT", json.dumps(res), flush=True)
    return res


if __name__ == "__main__":
    main()
