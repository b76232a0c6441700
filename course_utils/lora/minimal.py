"""All of LoRA in one small layer. Read this first: the rest of the package adds bookkeeping, not math.

    h = W0 x + B(A(dropout(x))) * alpha / r        A: in -> r, B: r -> out, W0 frozen

B starts at zero, so at step 0 the layer computes exactly W0 x and training starts from the pretrained model.
The names are PEFT's (base_layer, lora_A, lora_B, lora_dropout), so this layer's state_dict keys are the keys of a
PEFT adapter file. LoRALinear (layer.py) is this layer holding several named adapters; tests/test_lora_minimal.py
proves the two give the same init, outputs and gradients.
"""
import math

import torch
import torch.nn as nn


class MinimalLoRALinear(nn.Module):
    def __init__(self, base_layer: nn.Linear, r: int = 8, alpha: float = 8, dropout: float = 0.0):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)  # W0 never trains: that is the point
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False)
        # A is drawn after B is built, PEFT's order, so the same seed gives PEFT's A: U(+-1/sqrt(in_features)).
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)  # Delta W = B A = 0 at step 0
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()  # on the adapter's input only
        self.scaling = alpha / r
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)
        if self.merged:  # W0 already holds Delta W: adding the adapter path would count it twice
            return h
        return h + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling  # two thin matmuls, never B @ A

    def delta_weight(self) -> torch.Tensor:
        """Delta W = (B @ A) * scaling, shape (out_features, in_features), rank <= r."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """W0 <- W0 + Delta W: afterwards inference costs one matmul, as without LoRA."""
        if self.merged:
            raise RuntimeError("Already merged: merging again would add Delta W twice. Fix: unmerge() first.")
        self.base_layer.weight += self.delta_weight()
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            raise RuntimeError("Not merged, so there is nothing to unmerge. Fix: merge() first.")
        self.base_layer.weight -= self.delta_weight()
        self.merged = False
