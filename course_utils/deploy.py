"""Merge, swap, deploy (chapter 12): timing inference side by side, and what a zoo of adapters costs in memory.

    interleaved_timings(fns, rounds)      CPU seconds per call of each function, measured in turns (one call of
                                          each per round, the order rotated every round)
    median_ratio(timings, name, ref)      the median over rounds of t[name] / t[ref]: a slowdown that survives a
                                          busy machine
    adapter_bytes(model)                  {adapter name: bytes of its tensors}, for a PEFT or a course_utils model
    zoo_memory(model)                     one base with its adapters vs one merged copy of the base per adapter

Why interleave: on a shared machine the load changes over seconds. Timing A fifty times and then B fifty times
puts A and B in different load periods, and the comparison measures the neighbours. One call of each per round puts
the calls of a round milliseconds apart, so a slowdown hits them alike and their ratio cancels it; the median over
rounds then drops the rounds that another process interrupted. Rotating the order keeps "always runs first" (cold
caches) from favouring one of them.

Why CPU time: wall-clock time also counts the moments the operating system gave the core to another program, which
on an oversubscribed machine is most of a short call (measured: the median merged / base ratio of two identical
models swung from 1.0 to 2.9 with the wall clock, at a load of 8 on 2 cores). The CPU time of the calling thread
(`time.thread_time`) counts only this thread's own work; with torch.set_num_threads(1) that is all the work of a
forward pass, and what the wall clock would show on an idle machine. Pass clock=time.perf_counter for wall time.
"""
from __future__ import annotations

import re
import statistics
import time
from typing import Callable, Mapping

import torch
import torch.nn as nn

# Where PEFT and course_utils.lora keep an adapter's tensors: `...q_proj.lora_A.<name>.weight`, and PEFT's trained
# copies of whole modules `...lm_head.modules_to_save.<name>.weight`.
_ADAPTER_KEY = re.compile(r"\.(?:lora_A|lora_B|lora_embedding_A|lora_embedding_B|modules_to_save)\.([^.]+)(?:\.|$)")


def interleaved_timings(fns: Mapping[str, Callable[[], object]], rounds: int = 50, warmup: int = 2,
                        clock: Callable[[], float] = time.thread_time) -> dict[str, list[float]]:
    """{name: [seconds of its call in round 0, round 1, ...]}: every function once per round, in rotating order.

    `warmup` rounds run first and are not recorded (first calls allocate memory and fill caches). The functions run
    under torch.no_grad(): this is inference timing. `clock` defaults to this thread's CPU time (see the module's
    docstring); work done in other threads or processes is not counted.
    """
    names = list(fns)
    if len(names) < 2:
        raise ValueError(f"interleaved_timings compares functions, got {len(names)}. Fix: pass at least two, e.g. "
                         "{'base': lambda: base(**batch), 'merged': lambda: merged(**batch)}.")
    if rounds < 3 or warmup < 0:
        raise ValueError(f"rounds={rounds}, warmup={warmup}: a median needs rounds >= 3 (use 30 or more on a busy "
                         "machine) and warmup >= 0. Fix: e.g. rounds=50, warmup=2.")
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for i in range(warmup + rounds):
            k = i % len(names)
            for name in names[k:] + names[:k]:
                t0 = clock()
                fns[name]()
                if i >= warmup:
                    times[name].append(clock() - t0)
    return times


def median_ratio(timings: Mapping[str, list[float]], name: str, reference: str) -> float:
    """Median over rounds of timings[name][i] / timings[reference][i]: how many times slower `name` is."""
    for key in (name, reference):
        if key not in timings:
            raise KeyError(f"no timings named {key!r}; there are {list(timings)}.")
    return statistics.median(a / b for a, b in zip(timings[name], timings[reference]))


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def adapter_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of each adapter's tensors in memory, by adapter name (LoRA A and B, and PEFT's modules_to_save)."""
    out: dict[str, int] = {}
    for key, t in [*model.named_parameters(), *model.named_buffers()]:
        m = _ADAPTER_KEY.search(key)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + _bytes(t)
    return out


def zoo_memory(model: nn.Module) -> dict:
    """What serving every adapter of `model` costs: one shared base plus the adapters, or a merged copy per adapter.

    Returns {"base": bytes of everything that is not an adapter, "adapters": adapter_bytes(model),
    "zoo": base + all adapters, "merged_copies": one base-sized model per adapter}. Merging changes values, not
    shapes, so a merged copy is exactly as large as the base. Tensors sharing storage (tied embeddings) count once.
    """
    seen, base = set(), 0
    for key, t in [*model.named_parameters(), *model.named_buffers()]:
        if _ADAPTER_KEY.search(key):
            continue
        storage = t.untyped_storage()
        ptr = (storage.data_ptr(), storage.nbytes())
        if ptr in seen and storage.data_ptr():
            continue
        seen.add(ptr)
        base += _bytes(t)
    adapters = adapter_bytes(model)
    if not adapters:
        raise ValueError("this model holds no adapters (no lora_A.<name> tensors). Fix: pass the PeftModel (or the "
                         "course_utils.lora model) after loading the adapters, before merge_and_unload.")
    return {"base": base, "adapters": adapters, "zoo": base + sum(adapters.values()),
            "merged_copies": base * len(adapters)}
