"""course_utils.deploy: interleaved timing finds a known slowdown, and the zoo's memory adds up from the tensors."""
from __future__ import annotations

import copy
import time

import pytest
import torch

from course_utils.deploy import adapter_bytes, interleaved_timings, median_ratio, zoo_memory


def test_interleaved_timings_measure_a_known_slowdown_in_rotating_order():
    calls = []

    def spinner(name, seconds):
        def run():  # busy, not asleep: the default clock counts this thread's CPU time
            calls.append(name)
            t0 = time.thread_time()
            while time.thread_time() - t0 < seconds:
                pass
        return run

    times = interleaved_timings({"fast": spinner("fast", 0.002), "slow": spinner("slow", 0.006)}, rounds=9, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"fast": 9, "slow": 9}
    assert calls[:6] == ["fast", "slow", "slow", "fast", "fast", "slow"], "one call each per round, order rotated"
    assert 2.5 < median_ratio(times, "slow", "fast") < 3.6, "3x by construction"
    asleep = interleaved_timings({"a": lambda: time.sleep(0.003), "b": lambda: None}, rounds=3, warmup=0)
    assert max(asleep["a"]) < 0.002, "sleeping is not CPU time"
    with pytest.raises(ValueError, match="at least two"):
        interleaved_timings({"one": lambda: None})
    with pytest.raises(KeyError, match="no timings named"):
        median_ratio(times, "slow", "base")


def test_zoo_memory_counts_each_adapter_once_and_the_base_once():
    from peft import LoraConfig, get_peft_model

    from course_utils.lora import add_lora
    from course_utils.models import load_course_model

    base, _ = load_course_model()
    base_bytes = sum(p.numel() * p.element_size() for p in base.parameters()) + \
        sum(b.numel() * b.element_size() for b in base.buffers())
    ours = add_lora(copy.deepcopy(base), "all-linear", r=4, alpha=8, adapter_name="poet")
    add_lora(ours, ["q_proj", "v_proj"], r=8, alpha=16, adapter_name="coder")
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules="all-linear"), adapter_name="poet")
    theirs.add_adapter("coder", LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    q, mlp = 128 + 128, 3 * (128 + 352)  # r (in + out) per layer: 4 attention projections of 128, 3 MLP ones
    want = {"poet": 4 * 4 * (4 * q + mlp) * 4, "coder": 4 * 8 * 2 * q * 4}  # 4 layers, float32
    for model in (ours, theirs):
        assert adapter_bytes(model) == want
        zoo = zoo_memory(model)
        assert zoo == {"base": base_bytes, "adapters": want, "zoo": base_bytes + sum(want.values()),
                       "merged_copies": 2 * base_bytes}
    with pytest.raises(ValueError, match="no adapters"):
        zoo_memory(base)
