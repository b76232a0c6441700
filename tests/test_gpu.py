"""The GPU path: real bitsandbytes CUDA 4-bit QLoRA on the course model. Skipped where there is no CUDA GPU."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def test_qlora_trains_on_cuda_with_bitsandbytes():
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    from course_utils import data, training
    from course_utils.models import load_course_model

    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.bfloat16)
    model, tok = load_course_model(quantization_config=bnb, device_map={"": 0})
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules="all-linear"))
    rows = data.load("sentiment_train", 64)
    batch = training.encode_pairs(tok, [r["prompt"] for r in rows], [r["label"] for r in rows])
    batch = {k: v.cuda() for k, v in batch.items()}
    model.eval()
    with torch.no_grad():
        before = model(**batch).loss.item()
    result = training.train(model, iter(lambda: batch, None), steps=30, lr=2e-3, progress=False)
    assert result.losses[-1] < before * 0.7
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n and p.requires_grad)
