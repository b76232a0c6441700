"""Is our LoRALinear as fast as PEFT's lora.Linear? And is a merged layer as fast as a plain Linear?

    python bench/bench_lora.py [--reps N] [--quick]

float32 on CPU, batch 8 x 128 tokens, d x d layers without bias (like Llama), d = 128 (the course model's width,
where per-call overhead shows), 1024 and 4096, r = 8 and 64. Ours and PEFT's run interleaved (one rep of each, the
order flipped every rep, so drift in CPU clock or load hits both); the table shows median times and the median of
the per-repetition ratios. Target: ours/PEFT <= 1.05; merged/plain ~= 1.00.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from course_utils.lora import LoRALinear  # noqa: E402

BATCH, TOKENS = 8, 128


def peft_layer(base: nn.Linear, r: int, alpha: float) -> nn.Module:
    from peft import LoraConfig
    from peft.tuners.lora import Linear as PeftLinear

    layer = PeftLinear(base, "default", config=LoraConfig(r=r, lora_alpha=alpha), r=r, lora_alpha=alpha)
    base.requires_grad_(False)  # get_peft_model freezes W0; the bare layer does not, and dW0 would double the cost
    return layer


def fwd_bwd(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> float:
    x.grad = None
    for p in layer.parameters():
        p.grad = None
    t0 = time.perf_counter()
    layer(x).backward(grad)
    return time.perf_counter() - t0


@torch.no_grad()
def fwd(layer: nn.Module, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    layer(x)
    return time.perf_counter() - t0


def interleaved(fns: list, reps: int, warmup: int = 2) -> list[list[float]]:
    """Seconds of each fn per repetition, running them in turn every repetition (order flipped every other rep)."""
    times = [[] for _ in fns]
    for i in range(warmup + reps):
        order = list(range(len(fns)))[:: 1 if i % 2 == 0 else -1]
        for k in order:
            t = fns[k]()
            if i >= warmup:
                times[k].append(t)
    return times


def paired(a: list[float], b: list[float]) -> tuple[float, float, float, float]:
    """(median a, median b, median of per-repetition ratios a/b, min a / min b).

    The ratio of neighbours shrugs off slow drift; the ratio of minima (each side's least-disturbed run) is the
    steadier number on a machine shared with other jobs.
    """
    return (statistics.median(a), statistics.median(b), statistics.median(x / y for x, y in zip(a, b)),
            min(a) / min(b))


def bench(d: int, r: int, reps: int) -> dict:
    torch.manual_seed(0)
    base = nn.Linear(d, d, bias=False)
    ours, theirs = LoRALinear(copy.deepcopy(base), r, alpha=2 * r), peft_layer(copy.deepcopy(base), r, 2 * r)
    with torch.no_grad():  # a trained-looking B, identical in both
        ours.lora_B["default"].weight.normal_(0, 0.02)
        theirs.lora_A["default"].weight.copy_(ours.lora_A["default"].weight)
        theirs.lora_B["default"].weight.copy_(ours.lora_B["default"].weight)
    x = torch.randn(BATCH, TOKENS, d, requires_grad=True)  # activations carry grad inside a network
    grad = torch.randn(BATCH, TOKENS, d)
    runs = interleaved([lambda: fwd_bwd(ours, x, grad), lambda: fwd_bwd(theirs, x, grad)], reps)
    t_ours, t_peft, ratio, ratio_min = paired(*runs)

    plain = copy.deepcopy(base).requires_grad_(False)
    ours.merge()
    t_merged, t_plain, mratio, mratio_min = paired(*interleaved([lambda: fwd(ours, x), lambda: fwd(plain, x)], reps))
    return dict(d=d, r=r, ours=t_ours, peft=t_peft, ratio=ratio, ratio_min=ratio_min, merged=t_merged,
                plain=t_plain, mratio=mratio, mratio_min=mratio_min)


def overhead(reps: int = 501) -> tuple[float, float]:
    """Per-call cost of the wrapper itself: a 16 x 16 layer on one token, where the matmuls cost next to nothing."""
    base = nn.Linear(16, 16, bias=False)
    ours, theirs = LoRALinear(copy.deepcopy(base), 8, 16), peft_layer(copy.deepcopy(base), 8, 16)
    x, grad = torch.randn(1, 16, requires_grad=True), torch.randn(1, 16)
    t_ours, t_peft, _, _ = paired(*interleaved([lambda: fwd_bwd(ours, x, grad), lambda: fwd_bwd(theirs, x, grad)],
                                               reps, warmup=20))
    return t_ours, t_peft


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=0, help="repetitions per case (default: 201 / 21 / 9 by size)")
    ap.add_argument("--quick", action="store_true", help="d=128 and 1024 only")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (default: torch's own; 1 is steadier on a busy machine)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, batch {BATCH} x {TOKENS} tokens\n")
    head = (f"{'layer':>11} {'r':>3} | {'ours ms':>8} {'PEFT ms':>8} {'ours/PEFT':>9} {'(min)':>6} | "
            f"{'merged ms':>9} {'Linear ms':>9} {'merged/Linear':>13} {'(min)':>6}")
    print(f"{'fwd+bwd: ours vs PEFT lora.Linear':<55} | forward only: merged LoRALinear vs plain nn.Linear")
    print(head + "\n" + "-" * len(head))
    worst = worst_min = 0.0
    sizes = (128, 1024) if args.quick else (128, 1024, 4096)  # 128: the course model's width, where overhead shows
    for d in sizes:
        for r in (8, 64):
            res = bench(d, r, args.reps or {128: 201, 1024: 21}.get(d, 9))
            worst, worst_min = max(worst, res["ratio"]), max(worst_min, res["ratio_min"])
            print(f"{d:>5}x{d:<5} {r:>3} | {1e3 * res['ours']:8.2f} {1e3 * res['peft']:8.2f} {res['ratio']:9.3f} "
                  f"{res['ratio_min']:6.3f} | {1e3 * res['merged']:9.2f} {1e3 * res['plain']:9.2f} "
                  f"{res['mratio']:13.3f} {res['mratio_min']:6.3f}")
    t_ours, t_peft = overhead()
    print(f"\nwrapper overhead (16x16, 1 token, fwd+bwd): ours {1e6 * t_ours:.0f} us, PEFT {1e6 * t_peft:.0f} us")
    print(f"worst ours/PEFT = {worst:.3f} as the median of per-repetition ratios, {worst_min:.3f} as the ratio of "
          "minima (target <= 1.05; on a shared machine run it a few times and take each row's smallest ratio)")


if __name__ == "__main__":
    main()
