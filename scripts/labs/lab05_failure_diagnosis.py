"""Lab 05 -- failure diagnosis: four broken LoRA fine-tunes of the course model, each with one or two planted faults
from the course's failure library (course_utils.experiments), some of them not announced by the symptom.

For each, students name the fault(s) from a list of labelled choices (graded by hidden tests against salted digests
computed here: the release holds no answer) and fix the config so the saved adapter reaches a mark set from the
reference fix on three seeds (_expected_faults.py, which also checks that no broken or half-fixed config passes).
"""
from textwrap import dedent, indent

import _expected_faults as E
from _cells import GRADING_NOTE, answer, code, md, setup_cell, tests

_REF = E.reference_runs()
_CHOICES = "\n".join(f"    * **{k}.** {v}" for k, v in E.CHOICES.items()).strip()
_MARK = {n: _REF[n]["letters_mark"] for n in E.BROKEN}
_ORDINARY_MARK = _REF[4]["ordinary_mark"]


def _spread(values) -> str:
    return f"{min(values):.2f}–{max(values):.2f}"


def _config(n: int) -> str:
    body = ",\n".join(f"    {k!r}: {v!r}" for k, v in E.BROKEN[n].items()).replace("'", '"')
    return f"config_{n} = {{\n{body},\n}}"


def _fix(n: int) -> str:
    items = ", ".join(f"{k!r}: {v!r}" for k, v in E.FIXES[n].items()).replace("'", '"')
    return f"fixed_{n} = {{**config_{n}, {items}}}"


def _diagnosis(n: int, points: int):
    letters = ", ".join(f'"{c}"' for c in E.FAULTS[n])
    return [
        answer(f"diagnose_{n}", f'''
        ### BEGIN SOLUTION
        diagnosis_{n} = {{{letters}}}
        ### END SOLUTION
        '''),
        tests(f"diagnose_{n}_tests", points, f'''
        check_value("diagnosis_{n}: a set of one or two letters from the list", well_formed(diagnosis_{n}), True,
                    hint='write e.g. diagnosis_{n} = {{"X"}} or {{"X", "Y"}}, with capital letters from the list of faults')
        print("Whether it names the planted fault(s) is checked when grading.")
        ''', f'''
        import hashlib

        _named_{n} = "".join(sorted(diagnosis_{n}))
        assert hashlib.sha256((_SALT + _named_{n}).encode()).hexdigest() == _WANT, (
            "diagnosis_{n} does not name exactly the fault(s) planted in fine-tune {n}")
        ''', expected={"_SALT": E.salt(n), "_WANT": E.digest(n, E.FAULTS[n])}),
    ]


def _fix_cells(n: int, points: int, task: str, extra_visible: str = "", extra_hidden: str = ""):
    """Task n.2: the fix, run in the answer cell; the test checks its numbers, the hidden test reruns it on seed 1
    with a private copy of the training script."""
    mark = _MARK[n]
    hidden_runner = E.runner(f"_graded_fine_tune_{n}")
    return [
        md(task),
        answer(f"fix_config_{n}", f'''
        ### BEGIN SOLUTION
        {_fix(n)}
        ### END SOLUTION
        run_fixed_{n} = fine_tune(fixed_{n})
        report(run_fixed_{n})
        '''),
        tests(f"fix_config_{n}_tests", points, dedent(f'''
        check_value("steps (the budget is fixed)", fixed_{n}["steps"], {E.STEPS},
                    hint="fix the fault(s), not the budget: keep {E.STEPS} steps")
        check_value("held-out loss on letters below {mark}", run_fixed_{n}.letters_loss < {mark}, True,
                    hint=f"the saved adapter scores {{run_fixed_{n}.letters_loss:.3f}}; " + ask(run_fixed_{n}))
        ''') + dedent(extra_visible), hidden_runner + "\n\n" + dedent(f'''
        assert fixed_{n}["steps"] == {E.STEPS}, "the fix changed the number of steps: keep the budget"
        _rerun_{n} = _graded_fine_tune_{n}(fixed_{n}, seed=1)
        assert _rerun_{n}.letters_loss < {mark}, (
            f"trained again on another seed, the fix reaches {{_rerun_{n}.letters_loss:.3f}} on letters, the mark is "
            "{mark}: " + ask(_rerun_{n}))
        ''') + dedent(extra_hidden)),
    ]


def _section(n: int, title: str, story: str, run_note: str = ""):
    return [
        md(f"## {n}. {title}\n\n" + dedent(story).strip("\n")),
        code(f"""
        {indent(_config(n), " " * 8).strip()}
        run_{n} = fine_tune(config_{n})
        report(run_{n})
        """),
    ] + ([md(run_note)] if run_note else [])


_HELPERS = '''
FAULT_LETTERS = set("ABCDEFGH")


def report(run):
    """The signals to read after a fine-tune, the ones a failure shows up in."""
    rises = sum(b > a for a, b in zip(run.losses, run.losses[1:]))
    kinds = ", ".join(sorted({name.rsplit(".", 1)[-1] for name in run.layers}))
    print(f"adapters on {len(run.layers)} of the 28 linear layers ({kinds})")
    print(f"trainable parameters: {run.trainable:,} of {run.total:,} ({run.trainable / run.total:.1%})")
    print(f"ordinary-text loss before training: {run.ordinary_before:.3f} (the base model: {base_ordinary:.3f})")
    print("training loss, step by step:", " ".join(f"{v:.2f}" for v in run.losses), f"(rose on {rises} steps)")
    print(f"the saved adapter on a fresh base, held-out loss: letters {run.letters_loss:.3f}, "
          f"ordinary text {run.ordinary_loss:.3f}")


def ask(run):
    """What a test says when a fix misses its mark: it points at a signal that is still off, not at a setting."""
    rises = sum(b > a for a, b in zip(run.losses, run.losses[1:]))
    if run.ordinary_before > base_ordinary + 0.01:
        return ("before its first step the adapted model already does worse than the base on ordinary text: "
                "what should an adapter add to a layer before it has trained?")
    if len(run.layers) < 28:
        return (f"only {len(run.layers)} of the 28 linear layers have an adapter (print run.layers): which layers "
                "did the recipe mean to adapt?")
    if run.trainable > run.total / 2:
        return (f"{run.trainable / run.total:.0%} of the parameters trained, and only the adapter is saved: where "
                "did the rest of the training go?")
    if rises:
        return (f"the training loss rose on {rises} of {len(run.losses) - 1} steps instead of falling steadily: "
                "what sets the size of every update?")
    return (f"the training loss falls steadily but slowly (to {run.losses[-1]:.2f}): what decides how much one "
            "update of an adapter changes its layer?")


def well_formed(diagnosis):
    """A diagnosis is a set of one or two capital letters from the list of faults."""
    return isinstance(diagnosis, set) and 1 <= len(diagnosis) <= 2 and diagnosis <= FAULT_LETTERS
'''

CELLS = [
    md(f"""
    # Lab 05 — Failure diagnosis: four broken fine-tunes

    Four LoRA fine-tunes of the course model went wrong. Each ran without an error; each has **one or two planted
    faults** in its configuration, and the symptom you are told about does not always point at all of them. For
    each fine-tune you will

    1. **name the fault(s)**, choosing from a list of labelled faults (section 0), and
    2. **fix the configuration**, so that the adapter it saves reaches a pass mark on held-out data.

    All four train the same way (the training script in section 0, which you should read): LoRA on the course
    model, 12 steps on short letters in one house style, then the adapter is saved and loaded onto a fresh copy of
    the base model, as a user would load it. The pass marks come from the reference fixes run on three seeds when
    the lab was built; each leaves room above the worst of them. Each run takes a few seconds.

    **How this lab is graded.** Write your answers where it says `# YOUR CODE HERE` (replace the
    `raise NotImplementedError(...)` line). Each test cell prints a ✅ line per check that passes and stops at the
    first one that fails, with a question that points at what is still wrong. A diagnosis test only checks its
    format: whether it names the planted faults is checked when grading (name exactly the planted ones, no more).
    A fix is trained again on another seed when grading, and must pass the same mark there.
    {GRADING_NOTE}
    """),
    setup_cell(E.IMPORTS + dedent("""
    # PEFT imports bitsandbytes, which on some CPUs warns that an optional kernel package is missing: not needed here
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    """)),
    md("""
    ## 0. The training script and the faults

    The course model, the letters it learns (400 training lines, 48 held-out ones), and 48 held-out lines of
    ordinary text like the text it was pretrained on: the loss on those measures what a fine-tune costs the base
    model.
    """),
    code(E.DATA),
    md("""
    Every fine-tune of this lab runs this script; a configuration decides the rest. Read it: which settings does it
    take, and what does each change? (`peft_targets` asks PEFT which layers `LoraConfig(target_modules=...)` would
    adapt on this model, so the names behave exactly as they do in PEFT.)
    """),
    code(E.RUNNER),
    md("""
    `report(run)` prints the signals to read after a fine-tune; `ask(run)` is the question a test asks when a fix
    misses its mark.
    """),
    code(_HELPERS),
    md(f"""
    **The faults.** Each fine-tune's fault(s) are among these. A diagnosis is a Python set of capital letters, for
    example `diagnosis_1 = {{"X"}}`, or `{{"X", "Y"}}` for a fine-tune with two faults: the settings you would
    change. Some of these faults are planted in no fine-tune.

    {_CHOICES}

    A sound run of this script brings the held-out loss on letters from {_REF["base_letters"]:.2f} (the base model)
    to {_spread(_REF[1]["letters"])} on seeds 0–2, and pays for it on ordinary text: {_REF["base_ordinary"]:.2f} for
    the base model, {_spread(_REF[4]["ordinary"])} after {E.STEPS} steps on letters alone.
    """),
] + _section(1, "Fine-tune 1: a loss that zig-zags", f"""
    The training loss of this run jumps up on some steps instead of falling steadily, and the saved adapter ends far
    above the held-out loss on letters a sound run of the same length reaches.
    """) + [
    md("""
    **Task 1.1.** Set `diagnosis_1` to the set of letters of the fault(s) planted in `config_1`.
    """),
] + _diagnosis(1, 1) + _fix_cells(1, 2, f"""
    **Task 1.2.** Set `fixed_1` to `config_1` with the fault(s) fixed, for example
    `fixed_1 = {{**config_1, "key": value}}` (a copy with `key` replaced). Keep the budget: {E.STEPS} steps. The
    saved adapter's held-out loss on letters must end below **{_MARK[1]}** (the reference fix on seeds 0–2:
    {_spread(_REF[1]["letters"])}).
    """) + _section(2, "Fine-tune 2: a recipe that learns little", """
    This configuration is a recipe that worked well on another model. On the course model it trains without an error
    or a warning, and its training loss falls steadily, but far more slowly than it should: the saved adapter ends
    well above a sound run.
    """) + [
    md("""
    **Task 2.1.** Set `diagnosis_2` to the set of letters of the fault(s) planted in `config_2`.
    """),
] + _diagnosis(2, 1) + _fix_cells(2, 2, f"""
    **Task 2.2.** Set `fixed_2` to `config_2` with the fault(s) fixed ({E.STEPS} steps). The saved adapter's held-out
    loss on letters must end below **{_MARK[2]}** (the reference fix on seeds 0–2: {_spread(_REF[2]["letters"])}).
    """) + _section(3, "Fine-tune 3: more rank, no gain", f"""
    A team's recipe used rank 8 with `lora_alpha` 16: after {E.STEPS} steps its training loss reached
    {_spread(_REF[3]["r8_train_final"])} and its saved adapter {_spread(_REF[3]["r8_letters"])} on held-out
    letters (seeds 0–2). To learn more in the same steps they raised the rank to 64. The training loss now falls
    much lower ({_spread(_REF[3]["broken_train_final"])}), yet the adapter they shipped, loaded onto the base model,
    does worse on held-out letters than the rank-8 one. Read every line of `config_3`, and the whole report.
    """) + [
    md("""
    **Task 3.1.** Set `diagnosis_3` to the set of letters of the fault(s) planted in `config_3`.
    """),
] + _diagnosis(3, 2) + _fix_cells(3, 3, f"""
    **Task 3.2.** Set `fixed_3` to `config_3` with the fault(s) fixed: rank 64 stays, and so do the learning rate and
    the {E.STEPS} steps. The saved adapter's held-out loss on letters must end below **{_MARK[3]}** (the reference fix
    on seeds 0–2: {_spread(_REF[3]["letters"])}).
    """, extra_visible=f'''
    check_value("rank 64 kept", fixed_3["r"], 64, hint="the point of this fine-tune is rank 64: keep it")
    ''', extra_hidden='''
    assert fixed_3["r"] == 64, "the fix must keep rank 64"
    ''') + _section(4, "Fine-tune 4: it forgot", f"""
    This run learns the letters well, but the adapter it saved makes the model much worse on ordinary text:
    {_spread([b[1] for b in _REF[4]["broken"]])} on seeds 0–2, instead of the {_spread(_REF[4]["ordinary"])} a sound
    run of {E.STEPS} steps on letters alone leaves (some forgetting is the normal price of those steps, section 0).
    Where does the rest come from?
    """) + [
    md("""
    **Task 4.1.** Set `diagnosis_4` to the set of letters of the fault(s) planted in `config_4`: what makes this run
    forget more than a sound run of the same data and steps?
    """),
] + _diagnosis(4, 1) + _fix_cells(4, 2, f"""
    **Task 4.2.** Set `fixed_4` to `config_4` with the fault(s) fixed ({E.STEPS} steps, the same data). The saved
    adapter must stay below **{_ORDINARY_MARK}** on ordinary text (the reference fix on seeds 0–2:
    {_spread(_REF[4]["ordinary"])}) and still learn the letters: below **{_MARK[4]}** on them.
    """, extra_visible=f'''
    check_value("held-out loss on ordinary text below {_ORDINARY_MARK}", run_fixed_4.ordinary_loss < {_ORDINARY_MARK},
                True, hint=f"the saved adapter scores {{run_fixed_4.ordinary_loss:.3f}}; " + ask(run_fixed_4))
    ''', extra_hidden=f'''
    assert _rerun_4.ordinary_loss < {_ORDINARY_MARK}, (
        f"trained again on another seed, the fix reaches {{_rerun_4.ordinary_loss:.3f}} on ordinary text, the mark "
        "is {_ORDINARY_MARK}: " + ask(_rerun_4))
    ''') + [
    md("""
    ## What you practised

    * Reading a failure from its signals: a training-loss curve that zig-zags, a count of adapted layers, the share
      of parameters that trained, the loss before the first step, and the saved adapter measured on its own.
    * A symptom names a place to look, not the cause: the same forgetting, or the same slow learning, can come from
      different settings, and one run can hide two faults.
    * A fix is measured the way the failure was, and holds on another seed.
    """),
]
