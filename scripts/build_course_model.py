"""Build the embedded course model and its data, deterministically and offline.

    python scripts/build_course_model.py            # the committed model, bit for bit (7-10 min, 1 thread)
    python scripts/build_course_model.py --quick --out /tmp/x   # reduced rebuild, used by the tests

The model reads its context: its tokenizer never merges across the syllables of an invented name
(course_utils.tokenizer.train_tokenizer's atomic_syllables), so a name the model never saw is 2 familiar
tokens, the same in the prompt and in the answer; the corpus's "context:" drills then teach it to copy a new
fact from its prompt (world.context_question). A plain BPE cuts each unseen name unpredictably, and a model
trained on it did not learn to copy (measure with course_utils.reading.reading_accuracy).

Measured: 1,500 steps took 432-599 s with 1 thread on the shared 2-core machine (load 5-12). One thread is the
default because it reproduces the committed weights bit for bit (thread count changes the order of float sums)
and, on a busy 2-core machine, is also the fastest (no spinning thread barriers).

Steps: generate the tiny world's datasets (course_utils.world) -> train a byte-level BPE tokenizer ->
pretrain a 4-layer Llama on the `pretrain` split -> save_pretrained (safetensors) + the loss curve ->
write the SHA-256 manifest. The log holds no wall-clock time, so the manifest is reproducible too.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_utils import training, world  # noqa: E402
from course_utils.manifest import write_manifest  # noqa: E402
from course_utils.models import tiny_llama  # noqa: E402
from course_utils.paths import ASSETS_DIR  # noqa: E402
from course_utils.tokenizer import train_tokenizer  # noqa: E402

# The model learns to copy from its context around step 600-1000, late in the cosine schedule: at 1200 steps
# 1 seed in 5 had not yet (5% in context), at 1500 steps all 8 seeds tried had (100%).
STEPS = 1500


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ASSETS_DIR, help="assets folder (default: the committed one)")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--n-pretrain", type=int, default=24000)
    ap.add_argument("--quick", action="store_true", help="tiny rebuild to prove the script works (~10 s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="1 reproduces the committed weights bit for bit (and is fastest on a busy machine)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.n_pretrain = 30, 600

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data_dir, model_dir = args.out / "data", args.out / "course_model"
    data_dir.mkdir(parents=True, exist_ok=True)
    datasets = world.build_datasets(n_pretrain=args.n_pretrain, seed=args.seed)
    for name, records in datasets.items():
        with open(data_dir / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in records)

    texts = [r["text"] for r in datasets["pretrain"]]
    tokenizer = train_tokenizer(texts, atomic_syllables=world.SYLLABLES)
    blocks = training.packed_blocks(tokenizer, texts, seq_len=64)
    model = tiny_llama(seed=args.seed)
    result = training.train(model, training.batches_from_blocks(blocks, 32, seed=args.seed), args.steps,
                            lr=3e-3, weight_decay=0.01, warmup=min(100, args.steps // 10), schedule="cosine",
                            progress="pretraining")
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    n_params = sum(p.numel() for p in model.parameters())
    log = {
        "steps": args.steps, "batch": [32, 64], "tokens_seen": args.steps * 32 * 64,
        "corpus_tokens": int(blocks.numel()), "parameters": n_params,
        "final_loss": round(result.final_loss, 4),
        "losses": [round(x, 4) for x in result.losses],
        "torch": torch.__version__,
    }
    (model_dir / "pretrain_log.json").write_text(json.dumps(log))
    write_manifest(args.out)
    print(f"{n_params:,} parameters, final loss {log['final_loss']}, {time.perf_counter() - t0:.0f} s -> {model_dir}")
    return log


if __name__ == "__main__":
    main()
