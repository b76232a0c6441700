"""Intrinsic dimension: train a model only inside a random d-dimensional subspace of its D parameters.

Li et al. (2018) write theta = theta0 + P theta_d, with theta0 the starting weights (frozen), P a fixed random
D x d matrix with unit-norm columns, and only the d numbers theta_d trained. The smallest d that reaches 90% of
full training's result is d90, the task's "intrinsic dimension" for that model.

A dense P is out of the question even for the tiny course model: D ~ 1.07M and d = 1,000 would be 4 GB of
float32. `RandomSubspace` uses the sparsest random projection instead: every parameter is tied to ONE of the d
coordinates, with a random sign. The D parameters are split into d random groups of (almost) equal size n_j and
column j of P is +-1/sqrt(n_j) on group j, zero elsewhere. So the columns are exactly unit-norm and orthogonal
(P^T P = I), P costs one index and one coefficient per parameter (~13 MB, whatever d is), and P theta_d is a
single gather. Li et al. used dense, sparse and Fastfood projections and found the choice barely matters.
The real model is used unchanged through `torch.func.functional_call`: its own weights are theta0.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn as nn
from torch.func import functional_call

from .surgery import eval_mode, train_mode


def dense_projection_bytes(D: int, d: int, bytes_per_value: int = 4) -> int:
    """What a dense D x d float32 P would cost: the reason we do not build one."""
    return D * d * bytes_per_value


class RandomSubspace(nn.Module):
    """`model` re-parametrised as theta0 + P theta_d; only `theta_d` (d numbers, starting at 0) is trainable.

    Call it like the model (it returns the model's output), hand it to `course_utils.training.train`, or to
    `choice_accuracy`: at theta_d = 0 it IS the model. `include(name, param)` restricts the subspace to some
    parameters (default: all of them); excluded ones stay frozen at theta0.
    """

    def __init__(self, model: nn.Module, d: int, seed: int = 0, include=None):
        super().__init__()
        self.model = model.requires_grad_(False)  # theta0: the model's own weights, never updated
        self.names = [n for n, p in model.named_parameters() if include is None or include(n, p)]
        if not self.names:
            raise ValueError("`include` selected no parameter, so there would be nothing to move. "
                             "Fix: pass include=None (all parameters) or a filter that keeps some names.")
        shapes = dict(model.named_parameters())
        self.shapes = [shapes[n].shape for n in self.names]
        self.sizes = [shapes[n].numel() for n in self.names]
        self.D = sum(self.sizes)
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or not 1 <= d <= self.D:
            raise ValueError(f"d must be a whole number from 1 to D = {self.D:,} (the parameters in the subspace's "
                             f"span), got d={d!r}. Fix: pick d on a log grid such as 1, 10, 100, 1000.")
        self.d = int(d)
        g = torch.Generator().manual_seed(seed)
        # A random balanced partition: parameter i belongs to coordinate group[i]; every group has n_j ~ D/d members.
        group = torch.randperm(self.D, generator=g) % self.d
        sign = torch.randint(0, 2, (self.D,), generator=g).float() * 2 - 1
        n_j = torch.bincount(group, minlength=self.d).float()
        self.register_buffer("group", group, persistent=False)
        self.register_buffer("coef", sign / n_j[group].sqrt(), persistent=False)  # unit-norm columns
        self.theta_d = nn.Parameter(torch.zeros(self.d))

    def delta(self) -> torch.Tensor:
        """P theta_d as one flat vector of length D (a gather: no D x d matrix anywhere)."""
        return self.theta_d.index_select(0, self.group) * self.coef

    def params(self) -> dict[str, torch.Tensor]:
        """theta0 + P theta_d, as the name -> tensor dict functional_call expects."""
        params = dict(self.model.named_parameters())
        for name, shape, piece in zip(self.names, self.shapes, self.delta().split(self.sizes)):
            params[name] = params[name] + piece.view(shape)
        return params

    def forward(self, *args, **kwargs):
        return functional_call(self.model, self.params(), args, kwargs)

    def projection_column(self, j: int) -> torch.Tensor:
        """Column j of P (length D), for checking its norm and orthogonality; never needed to train."""
        col = torch.zeros(self.D)
        mask = self.group == j
        col[mask] = self.coef[mask]
        return col

    def extra_repr(self) -> str:
        return f"D={self.D:,}, d={self.d:,}, trainable={self.d:,} ({100 * self.d / self.D:.4f}% of D)"


def fraction_of_full(score: float, base: float, full: float) -> float:
    """How much of full fine-tuning's improvement over the untuned model a run recovers (0 = base, 1 = full).

    Normalising by the improvement, not the raw score, is what makes models comparable: a task both start at
    50% on (chance) and full fine-tuning takes to 100% counts 75% accuracy as 0.5 of the way, not as "75%".
    """
    gain = full - base
    if not gain > 0:
        raise ValueError(f"full fine-tuning did not improve on the base (base={base:.4f}, full={full:.4f}), so "
                         "'fraction of full' is undefined. Fix: train the full baseline longer or with a better "
                         "learning rate, or pick a task the base model cannot already do.")
    return (score - base) / gain


def intrinsic_dimension(ds, fractions, threshold: float = 0.9):
    """d_int (d90 by default): the smallest measured d whose run reached `threshold` of full fine-tuning.

    Returns None if no d on the grid got there (the intrinsic dimension is beyond the sweep).
    """
    ds, fractions = list(ds), list(fractions)
    if len(ds) != len(fractions) or not ds:
        raise ValueError(f"need one fraction per d, got {len(ds)} d values and {len(fractions)} fractions. "
                         "Fix: pass the grid and the matching results of the sweep.")
    hits = [d for d, f in sorted(zip(ds, fractions)) if f >= threshold]
    return hits[0] if hits else None


def log_grid(lo: int, hi: int, n: int) -> list[int]:
    """n roughly log-spaced whole numbers from lo to hi (duplicates removed), the usual d sweep."""
    if not 1 <= lo < hi or n < 2:
        raise ValueError(f"need 1 <= lo < hi and n >= 2, got lo={lo}, hi={hi}, n={n}. Fix: e.g. log_grid(1, 1000, 8).")
    step = (math.log(hi) - math.log(lo)) / (n - 1)
    return sorted({round(math.exp(math.log(lo) + i * step)) for i in range(n)})


class ChoiceTask:
    """A classification task read off the next token, as `training.choice_accuracy` scores it.

    The model's logits for each choice's first token at the end of the prompt are the class scores, and the
    training loss is the cross-entropy over those scores only. So a sweep measures how well a subspace learns
    to *tell the classes apart*, not how well it learns to spell the label words (the base model may never have
    seen them: that is a format cost, the same for every model, and it would swamp the curve).
    """

    def __init__(self, tokenizer, prompts, answers, choices=None):
        from .training import _pad

        self.choices = sorted(set(answers)) if choices is None else list(choices)
        first = [tokenizer(" " + c, add_special_tokens=False).input_ids[0] for c in self.choices]
        if len(set(first)) < len(first):
            raise ValueError(f"choices {self.choices} share a first token, so their scores would be the same logit. "
                             "Fix: pick label words that start with different tokens.")
        unknown = sorted(set(answers) - set(self.choices))
        if unknown:
            raise ValueError(f"answers {unknown} are not among the choices {self.choices}. Fix: add them to `choices`.")
        enc = [tokenizer(p).input_ids for p in prompts]
        batch = _pad(enc, enc, tokenizer.pad_token_id)
        self.input_ids, self.attention_mask = batch["input_ids"], batch["attention_mask"]
        self.last = self.attention_mask.sum(1) - 1
        self.choice_ids = torch.tensor(first)
        self.targets = torch.tensor([self.choices.index(a) for a in answers])

    def __len__(self) -> int:
        return len(self.targets)

    def scores(self, model, idx=None) -> torch.Tensor:
        """(n, n_choices) logits of the choices' first tokens at each prompt's last position."""
        idx = torch.arange(len(self)) if idx is None else idx
        ids, mask = self.input_ids[idx], self.attention_mask[idx]
        n = int(mask.sum(1).max())  # trim padding columns this batch does not need
        logits = model(input_ids=ids[:, :n], attention_mask=mask[:, :n]).logits
        return logits[torch.arange(len(idx)), self.last[idx]][:, self.choice_ids]

    def loss(self, model, idx=None) -> torch.Tensor:
        idx = torch.arange(len(self)) if idx is None else idx
        return torch.nn.functional.cross_entropy(self.scores(model, idx), self.targets[idx])

    @torch.no_grad()
    def accuracy(self, model) -> float:
        with eval_mode(model):
            return (self.scores(model).argmax(1) == self.targets).float().mean().item()


def train_choice(model: nn.Module, task: ChoiceTask, steps: int, lr: float, batch_size: int = 32, seed: int = 0):
    """Adam on whatever in `model` requires grad (all weights: full fine-tuning; theta_d: a RandomSubspace).

    Returns the loss per step. Batches are random draws from the task's examples, the same for the same seed,
    so every run of a sweep sees the same data in the same order.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing in this model requires grad, so training would change nothing. Fix: for full "
                         "fine-tuning call model.requires_grad_(True); for a subspace wrap it in RandomSubspace.")
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    with train_mode(model):
        for _ in range(steps):
            idx = torch.randint(0, len(task), (batch_size,), generator=g)
            loss = task.loss(model, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses
