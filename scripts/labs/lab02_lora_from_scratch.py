"""Lab 02 -- LoRA from scratch: a LoRA linear layer, injected into the course model, trained, merged.

The hidden tests' expected values are computed here from course_utils.lora when the lab is built (_expected.py):
the same deterministic layers, inputs and adapters, run through the reference.
"""
from textwrap import dedent

import _expected as E
from _cells import GRADING_NOTE, answer, code, md, setup_cell, tests

_FORWARD = [(c, E.lora_forward(*c)) for c in [(40, 24, 3, 7, 1), (128, 352, 16, 32, 3)]]
_DROPOUT = [(c, E.lora_dropout(*c)) for c in [(33, 21, 5, 10, 7)]]
_MERGE = [(c, E.lora_merge(*c)) for c in [(96, 40, 2, 1, 11)]]
_ALL_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_MODEL = E.lora_model(_ALL_ATTENTION, r=4, alpha=4, seed=5)


def _helpers(hidden: str) -> str:
    """The hidden test's own copy of the deterministic case builder, then the test."""
    return E.LORA_CASE + E.STUDENT_MAKE + dedent(hidden)


CELLS = [
    md(f"""
    # Lab 02 — LoRA from scratch

    LoRA freezes a pretrained weight `W0` and learns a low-rank update next to it:

    $$h = W_0 x + \\frac{{\\alpha}}{{r}} B A x, \\qquad A \\in \\mathbb{{R}}^{{r \\times \\text{{in}}}},\\;
    B \\in \\mathbb{{R}}^{{\\text{{out}} \\times r}}$$

    You will build it in about 40 lines and check it, number for number, against the course's reference
    (`course_utils.lora`, itself checked against Hugging Face PEFT):

    1. How many parameters LoRA trains
    2. The LoRA layer: init and forward
    3. Dropout: where and when
    4. ΔW, merge and unmerge
    5. Injecting LoRA into the course model's `q_proj` and `v_proj`
    6. Training: only A and B move
    7. Merging the trained adapter: zero inference overhead

    **How this lab is graded.** Write your code where it says `# YOUR CODE HERE` (replace the
    `raise NotImplementedError(...)` line). Each test cell prints a ✅ line per check that passes and stops at the
    first one that fails, with a question that points at the fix. When grading, the tests run again on other
    sizes, ranks and alphas, so avoid hard-coding numbers.
    {GRADING_NOTE}
    """),
    setup_cell("""
    import math

    import torch.nn as nn

    from course_utils.checks import check_lora_layer, check_value
    """),

    # ---------------------------------------------------------------------------------------------- 1
    md("""
    ## 1. How many parameters does LoRA train?

    A full update of a `out x in` weight trains `out * in` numbers. LoRA trains `A` (`r x in`) and `B`
    (`out x r`) instead.

    **Task 1.** The course model's `q_proj` is a 128 × 128 matrix. *Predict*, then set `n_full` (a full update of it)
    and `n_lora` (LoRA with `r = 8`).
    """),
    answer("lora_parameter_count", '''
    ### BEGIN SOLUTION
    n_full = 128 * 128
    n_lora = 8 * (128 + 128)
    ### END SOLUTION
    print(f"full update {n_full:,} parameters, LoRA r=8 {n_lora:,} ({n_lora / n_full:.1%})")
    '''),
    tests("lora_parameter_count_tests", 1, '''
    check_value("n_full", n_full, 16384, hint="a full update trains every entry of the 128 x 128 matrix")
    _ = check_value("n_lora", n_lora, 2048, hint="A has r x in entries and B has out x r: r * (in + out)")
    '''),

    # ---------------------------------------------------------------------------------------------- 2
    md("""
    ## 2. The LoRA layer: init and forward

    `LoRALinear(base, r, alpha, dropout=0.0)` wraps an existing `nn.Linear` called `base`:

    * **freeze** the base (`requires_grad_(False)`): `W0` never trains;
    * `self.lora_A`: an `nn.Parameter` of shape `(r, in_features)`, initialised like an `nn.Linear` weight:
      `nn.init.kaiming_uniform_(A, a=math.sqrt(5))`;
    * `self.lora_B`: an `nn.Parameter` of shape `(out_features, r)`, initialised to **zeros**;
    * `self.scaling = alpha / r`;
    * `self.dropout`: `nn.Dropout(dropout)` (section 3 says where it goes).

    `forward(x)` returns `base(x) + B(A(dropout(x))) * scaling` — never build the `out x in` matrix `B A` here:
    two thin matmuls (`in -> r -> out`) are cheaper.

    *Predict first:* right after `__init__`, how different is the layer's output from `base(x)`?
    """),
    answer("lora_layer", '''
    class LoRALinear(nn.Module):
        """A frozen nn.Linear W0 plus a trainable low-rank update: base(x) + B(A(dropout(x))) * alpha / r."""

        def __init__(self, base, r, alpha, dropout=0.0):
            super().__init__()
            self.base = base
            self.r, self.alpha = r, alpha
            self.merged = False  # section 4
            ### BEGIN SOLUTION
            self.base.requires_grad_(False)
            self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
            self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.scaling = alpha / r
            self.dropout = nn.Dropout(dropout)
            ### END SOLUTION

        def forward(self, x):
            ### BEGIN SOLUTION
            return self.base(x) + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling
            ### END SOLUTION
    '''),
    tests("lora_init", 2, '''
    _layer = LoRALinear(nn.Linear(16, 8), r=4, alpha=8)
    check_value("lora_A shape", tuple(_layer.lora_A.shape), (4, 16), hint="A reads the input: (r, in_features)")
    check_value("lora_B shape", tuple(_layer.lora_B.shape), (8, 4), hint="B writes the output: (out_features, r)")
    check_value("B at init", _layer.lora_B, torch.zeros(8, 4),
                hint="your ΔW is not zero at step 0: which of A or B should start at zero?")
    check_value("base frozen", _layer.base.weight.requires_grad, False,
                hint="freeze W0 with self.base.requires_grad_(False): only A and B train")
    _ = check_value("trainable parameters", sum(p.numel() for p in _layer.parameters() if p.requires_grad), 4 * (16 + 8),
                hint="A and B must be nn.Parameter so that .parameters() (and the optimizer) can see them")
    ''', '''
    for _i, _o, _r, _a in [(40, 24, 3, 7), (128, 352, 16, 32)]:
        _layer = LoRALinear(nn.Linear(_i, _o), r=_r, alpha=_a)
        check_value(f"trainable parameters ({_i}->{_o}, r={_r})",
                    sum(p.numel() for p in _layer.parameters() if p.requires_grad), _r * (_i + _o), verbose=False,
                    hint="use the base's in_features and out_features and the given r, not fixed numbers")
        check_value("scaling", _layer.scaling, _a / _r, verbose=False, hint="scaling = alpha / r")
    '''),
    tests("lora_forward", 2, '''
    checks = check_lora_layer(LoRALinear, skip=("dropout", "delta_weight", "merge"))
    ''', _helpers('''
    for (_i, _o, _r, _a, _seed), _want in _cases:
        _layer, _x = _case(_make, _i, _o, _r, _a, _seed)
        _layer.eval()
        with torch.no_grad():
            _close(_fp(_layer(_x)), _want, f"forward (in={_i}, out={_o}, r={_r}, alpha={_a})",
                   "Use the base's sizes, the given r and alpha, and scaling = alpha / r.")
    '''), expected={"_cases": _FORWARD}),

    # ---------------------------------------------------------------------------------------------- 3
    md("""
    ## 3. Dropout: where and when

    LoRA's dropout acts on the adapter's **input** only — `B(A(dropout(x)))` — so the frozen path `W0 x` is never
    perturbed, and (like all dropout) only in training mode. If your forward already does that, the test below
    passes; otherwise fix your class in section 2 and re-run it.

    *Predict first:* with `B = 0` and `dropout=0.5` in training mode, what does the layer return?
    """),
    tests("lora_dropout", 1, '''
    checks = check_lora_layer(LoRALinear, skip=("delta_weight", "merge"))
    ''', _helpers('''
    for (_i, _o, _r, _a, _seed), _want in _cases:
        _layer, _x = _case(_make, _i, _o, _r, _a, _seed, dropout=0.5)
        _layer.train()
        torch.manual_seed(_seed + 2)
        with torch.no_grad():
            _close(_fp(_layer(_x)), _want, f"train-mode forward with dropout=0.5 (in={_i}, out={_o}, r={_r})",
                   "Apply nn.Dropout(p) once, to x, before A: B(A(dropout(x))) * scaling.")
        _layer.eval()
        with torch.no_grad():
            _y1, _y2 = _layer(_x), _layer(_x)
        assert torch.equal(_y1, _y2), "in eval mode dropout must be off: the same input must give the same output"
    '''), expected={"_cases": _DROPOUT}),

    # ---------------------------------------------------------------------------------------------- 4
    md("""
    ## 4. ΔW, merge and unmerge

    The update LoRA learns is `ΔW = (B @ A) * scaling`, a full `out x in` matrix of rank ≤ r. For inference you
    can **merge** it into the base weight (`W0 ← W0 + ΔW`), after which the layer is a plain linear layer again
    — no extra latency. `unmerge` subtracts it back. While merged, `forward` must use the base alone: adding
    `B(A(x))` as well would count the update twice.

    **Task 4.** Complete the subclass below (it adds methods to your class from section 2). Raise a
    `RuntimeError` when merging twice or unmerging an unmerged layer. Sections 5–7 use this class, so finish it
    before you move on.
    """),
    answer("lora_merge", '''
    class LoRALinear(LoRALinear):
        def delta_weight(self):
            """ΔW = (B @ A) * scaling, shape (out_features, in_features)."""
            ### BEGIN SOLUTION
            return (self.lora_B @ self.lora_A) * self.scaling
            ### END SOLUTION

        @torch.no_grad()
        def merge(self):
            ### BEGIN SOLUTION
            if self.merged:
                raise RuntimeError("already merged: merging again would add ΔW twice")
            self.base.weight += self.delta_weight()
            self.merged = True
            ### END SOLUTION

        @torch.no_grad()
        def unmerge(self):
            ### BEGIN SOLUTION
            if not self.merged:
                raise RuntimeError("not merged: nothing to unmerge")
            self.base.weight -= self.delta_weight()
            self.merged = False
            ### END SOLUTION

        def forward(self, x):
            ### BEGIN SOLUTION
            if self.merged:
                return self.base(x)
            return super().forward(x)
            ### END SOLUTION
    '''),
    tests("lora_delta_weight_and_merge", 2, '''
    checks = check_lora_layer(LoRALinear)
    ''', _helpers('''
    for (_i, _o, _r, _a, _seed), _want in _cases:
        _layer, _x = _case(_make, _i, _o, _r, _a, _seed)
        _layer.eval()
        _w0 = _layer.base.weight.detach().clone()
        with torch.no_grad():
            _close(_fp(_layer.delta_weight()), _want["delta_weight"], f"delta_weight() (in={_i}, out={_o}, r={_r})",
                   "It is (B @ A) * scaling, shape (out_features, in_features).")
            _layer.merge()
            _close(_fp(_layer.base.weight), _want["merged_weight"], "the base weight after merge()",
                   "merge() adds delta_weight() to W0.")
            _close(_fp(_layer(_x)), _want["forward"], "forward after merge()",
                   "Merged, forward uses the base alone: the output must not change.")
            _layer.unmerge()
        assert torch.allclose(_layer.base.weight, _w0, atol=1e-6), "unmerge() must restore W0"
    _layer = LoRALinear(nn.Linear(8, 8), r=2, alpha=4)
    _layer.merge()
    for _what, _call in [("merging twice", _layer.merge), ("unmerging twice", lambda: (_layer.unmerge(), _layer.unmerge()))]:
        try:
            _call()
        except RuntimeError:
            pass
        else:
            raise AssertionError(f"{_what} should raise RuntimeError: it would add or subtract ΔW a second time")
    '''), expected={"_cases": _MERGE}),

    # ---------------------------------------------------------------------------------------------- 5
    md("""
    ## 5. Injecting LoRA into the course model

    The course model is a 4-layer Llama whose attention layers are named exactly like Llama-7B's
    (`model.layers.0.self_attn.q_proj`, ...). The original LoRA paper adapted only `q_proj` and `v_proj`.

    **Task 5.** Write `inject_lora(model, target_names, r, alpha, dropout=0.0)`: freeze every parameter of the
    model, replace each `nn.Linear` whose name ends with one of `target_names` by a `LoRALinear` wrapping it, and
    return the list of full names you replaced. (`model.get_submodule(parent_name)` and `setattr` do the
    replacing.)
    """),
    answer("inject_lora", '''
    def inject_lora(model, target_names=("q_proj", "v_proj"), r=8, alpha=16, dropout=0.0):
        """Freeze `model`, wrap the matching nn.Linear layers in LoRALinear (in place); return their names."""
        ### BEGIN SOLUTION
        model.requires_grad_(False)
        wrapped = []
        for name, module in list(model.named_modules()):
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in target_names:
                parent_name, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent_name), child, LoRALinear(module, r, alpha, dropout))
                wrapped.append(name)
        return wrapped
        ### END SOLUTION
    '''),
    code("""
    from course_utils.lora import add_lora, count_parameters
    from course_utils.models import load_course_model

    model, tokenizer = load_course_model()
    probe = tokenizer(["dear emma, today the cat ate my pear"], return_tensors="pt").input_ids
    with torch.no_grad():
        logits_base = model(probe).logits

    wrapped = inject_lora(model, ("q_proj", "v_proj"), r=8, alpha=16)
    trainable, total = count_parameters(model)
    print(f"wrapped {len(wrapped)} layers, e.g. {wrapped[0]}")
    print(f"trainable {trainable:,} of {total:,} parameters ({trainable / total:.2%})")
    """),
    tests("inject_lora_tests", 2, '''
    _ref_model, _ = load_course_model()
    add_lora(_ref_model, ["q_proj", "v_proj"], r=8, alpha=16)
    check_value("number of wrapped layers", len(wrapped), 8, hint="4 layers x (q_proj, v_proj)")
    check_value("trainable parameters", trainable, count_parameters(_ref_model)[0],
                hint="freeze the whole model first, then wrap: only A and B of the 8 layers should train")
    with torch.no_grad():
        check_value("logits at step 0", model(probe).logits, logits_base, atol=1e-6,
                    hint="B = 0 at init, so the adapted model must give exactly the base model's outputs")
    ''', '''
    _stu, _tok = load_course_model()
    _names = sorted(inject_lora(_stu, ("q_proj", "k_proj", "v_proj", "o_proj"), r=4, alpha=4))
    assert _names == _want["names"], (
        f"wrapped {len(_names)} layers for all four attention projections, expected {len(_want['names'])}: "
        "use target_names, not a fixed ('q_proj', 'v_proj')")
    _trainable = sum(p.numel() for p in _stu.parameters() if p.requires_grad)
    assert _trainable == _want["trainable"], (
        f"{_trainable:,} trainable parameters with r=4 on all attention, expected {_want['trainable']:,}: "
        "use r and alpha from the arguments, and freeze everything else")
    _g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for _n in _names:
            _s = _stu.get_submodule(_n)
            _s.lora_A.copy_(torch.randn(_s.lora_A.shape, generator=_g) * 0.05)
            _s.lora_B.copy_(torch.randn(_s.lora_B.shape, generator=_g) * 0.05)
        _stu.eval()
        _probe = _tok(["dear emma, today the cat ate my pear"], return_tensors="pt").input_ids
        _close(_fp(_stu(_probe).logits), _want["logits"], "logits with given A and B in every wrapped layer",
               "does every wrapped layer use scaling = alpha / r?")
    ''', expected={"_want": _MODEL}),

    # ---------------------------------------------------------------------------------------------- 6
    md("""
    ## 6. Training: only A and B move

    A few steps of AdamW on letters from the course's *near* domain. Only parameters with `requires_grad=True`
    reach the optimizer, so if your layer and `inject_lora` are right, `W0` does not change at all.

    *Predict first:* will the held-out loss go down with ~1.5% of the parameters trainable?
    """),
    code("""
    from functools import partial

    from course_utils import data
    from course_utils.training import batches_from_examples, encode_texts, eval_loss, train

    W0_before = {n: model.get_submodule(n).base.weight.detach().clone() for n in wrapped}
    A_before = {n: model.get_submodule(n).lora_A.detach().clone() for n in wrapped}
    held_out = encode_texts(tokenizer, data.texts("near_test", 64))
    batches = batches_from_examples(partial(encode_texts, tokenizer), data.texts("near_train", 512), batch_size=16)

    loss_before = eval_loss(model, held_out)
    result = train(model, batches, steps=30, lr=5e-3, progress=False)
    loss_after = eval_loss(model, held_out)
    print(f"held-out loss {loss_before:.2f} -> {loss_after:.2f}")
    """, tags=("nbval-ignore-output",)),
    tests("training_moves_only_adapters", 2, '''
    for _n in wrapped:
        _layer = model.get_submodule(_n)
        assert torch.equal(_layer.base.weight, W0_before[_n]), (
            f"{_n}: W0 changed during training. Is the base frozen, and is ΔW added in forward rather than "
            "written into the weight?")
        assert not torch.equal(_layer.lora_A, A_before[_n]) and _layer.lora_B.abs().sum() > 0, (
            f"{_n}: A or B did not change. Are they nn.Parameters with requires_grad=True, used in forward?")
    assert loss_after < loss_before, f"the held-out loss did not go down ({loss_before:.3f} -> {loss_after:.3f})"
    print("✅ W0 unchanged, A and B trained, held-out loss went down")
    '''),

    # ---------------------------------------------------------------------------------------------- 7
    md("""
    ## 7. Merging the trained adapter

    **Task 7.** Write `merge_all(model)` and `unmerge_all(model)`: call `merge()` / `unmerge()` on every
    `LoRALinear` in the model. Merged, the model must give the same outputs as before, with one matmul per layer.
    """),
    answer("merge_all", '''
    def merge_all(model):
        ### BEGIN SOLUTION
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.merge()
        ### END SOLUTION

    def unmerge_all(model):
        ### BEGIN SOLUTION
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.unmerge()
        ### END SOLUTION
    '''),
    code("""
    with torch.no_grad():
        logits_adapter = model(probe).logits
        merge_all(model)
        logits_merged = model(probe).logits
        merged_W = {n: model.get_submodule(n).base.weight.clone() for n in wrapped}
        unmerge_all(model)
        logits_unmerged = model(probe).logits
    print(f"max |merged - adapter| logits: {(logits_merged - logits_adapter).abs().max().item():.1e}")
    """, tags=("nbval-ignore-output",)),
    tests("merge_is_exact", 2, '''
    check_value("logits after merge", logits_merged, logits_adapter, atol=1e-5,
                hint="merged, forward must use W0 + ΔW alone (no second B(A(x)) term)")
    check_value("logits after unmerge", logits_unmerged, logits_adapter, atol=1e-5,
                hint="unmerge subtracts ΔW and switches the adapter path back on")
    for _n in wrapped:
        check_value(f"W0 after unmerge ({_n.split('.', 1)[1]})", model.get_submodule(_n).base.weight,
                    W0_before[_n], atol=1e-6, verbose=False, hint="unmerge() must restore W0 = W - ΔW")
    ''', '''
    for _n in wrapped:
        _s = model.get_submodule(_n)
        with torch.no_grad():
            _expected_W = W0_before[_n] + (_s.lora_B @ _s.lora_A) * (_s.alpha / _s.r)
        assert torch.allclose(merged_W[_n], _expected_W, atol=1e-6), (
            f"merged W ({_n}): merge must add exactly (B @ A) * alpha / r to W0")
    '''),
    md("""
    ## What you built

    * A LoRA layer whose outputs, gradients, ΔW and merge match the reference (and PEFT) number for number.
    * `B = 0` at init makes step 0 reproduce the base model exactly; `A` random gives `B` a gradient.
    * With r = 8 on `q_proj` and `v_proj`, 1.5% of the course model trains and the held-out loss still drops.
    * Merging folds ΔW into W0: same outputs, no adapter code left on the inference path.

    Next: notebook 06 asks *where* to put the adapters (q,v vs all linear layers).
    """),
]
