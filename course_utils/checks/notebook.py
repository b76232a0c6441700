"""Predictions and exercises in the chapters. The student commits to an answer before the measurement; the check
after it says how close the answer was, and why when it was far off.

    predict("7B fp16 weights, GiB", guess)              # guess: a number or one of `choices`; None = not yet
    ... the measurement ...
    reveal("7B fp16 weights, GiB", measured, rtol=0.2, why="2 bytes x 7e9 / 1024^3")
    exercise("3.1 Adam bytes", answer, expected=8, hint="m and v, fp32 each")

Nothing here raises: an unanswered prediction or exercise prints "not answered yet", and an answer whose code
fails prints the error, so a student who skips an exercise still runs the rest of the chapter (Run All).
"""
from __future__ import annotations

import math
import numbers

_predictions: dict[str, object] = {}
_results: dict[str, str] = {}  # exercise name -> "correct" | "wrong" | "not answered"


def _missing(value) -> bool:
    return value is None or value is Ellipsis


def _fmt(x, spec: str | None = None) -> str:
    """Strings quoted, whole numbers with thousands separators (1,066,112), other numbers in `spec` (4 digits)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return repr(x) if isinstance(x, str) else str(x)
    if spec is None:
        spec = "," if isinstance(x, numbers.Integral) or (float(x).is_integer() and abs(x) < 1e15) else ".4g"
    return format(x, spec)


def _as_choice(value) -> str:
    return str(value).strip().lower()


def _close(got, expected, rtol: float, atol: float) -> bool:
    if isinstance(expected, str) or isinstance(got, str):
        return _as_choice(got) == _as_choice(expected)
    if isinstance(expected, (list, tuple)):
        return (isinstance(got, (list, tuple)) and len(got) == len(expected)
                and all(_close(g, e, rtol, atol) for g, e in zip(got, expected)))
    try:
        got, expected = float(got), float(expected)
    except (TypeError, ValueError):
        return False
    return math.isclose(got, expected, rel_tol=rtol, abs_tol=atol)


def predict(name: str, guess, choices=None) -> None:
    """Record a prediction under `name` (a number, or one of `choices`). None means "not answered yet"."""
    if _missing(guess):
        _predictions.pop(name, None)
        pick = f" (one of {list(choices)})" if choices is not None else ""
        print(f"⏳ {name}: not answered yet. Write your prediction{pick} in this cell, run it, then run on.")
        return
    if choices is not None and _as_choice(guess) not in [_as_choice(c) for c in choices]:
        _predictions.pop(name, None)
        print(f"⚠️ {name}: {guess!r} is not one of the choices {list(choices)}. Pick one and run this cell again.")
        return
    _predictions[name] = guess
    print(f"📝 {name}: you predict {_fmt(guess)}.")


class Verdict(str):
    """reveal()'s result ("close", "far" or "not answered"): a plain string for code that branches on it, which
    shows nothing when it ends a cell (reveal has printed its message already)."""

    def _ipython_display_(self) -> None:
        pass


def reveal(name: str, measured, rtol: float = 0.25, atol: float = 0.0, why: str = "", fmt: str | None = None) -> Verdict:
    """Compare the measurement with the prediction recorded under `name`: "close", "far" or "not answered".

    Numbers count as close within rtol (relative) or atol (absolute); choices must match. `why` is the one
    sentence shown when the prediction was far off: what the measurement depends on.
    """
    shown = _fmt(measured, fmt)
    if name not in _predictions:
        print(f"⏳ {name}: not answered yet (no prediction recorded). Measured: {shown}.")
        return Verdict("not answered")
    guess = _predictions[name]
    if _close(guess, measured, rtol, atol):
        print(f"🎯 {name}: you predicted {_fmt(guess)}, measured {shown}: close.")
        return Verdict("close")
    print(f"🤔 {name}: you predicted {_fmt(guess)}, measured {shown}: far off." + (f" {why}" if why else ""))
    return Verdict("far")


def exercise(name: str, answer, expected, rtol: float = 1e-3, atol: float = 0.0, hint: str = "",
             choices=None, why: dict | None = None) -> None:
    """✅ or ❌ for an exercise's answer: a value, or a function of no arguments that computes it.

    Numbers match within rtol/atol, strings ignoring case and surrounding spaces, lists element by element. A
    function that raises NotImplementedError (the stub) counts as not answered; any other error is shown.
    `why` maps a likely wrong answer to the sentence that says why it is wrong (matched like the answer): a
    multiple-choice question can then teach from each wrong pick, before the hint, without naming the right one.
    """
    if callable(answer):
        try:
            answer = answer()
        except NotImplementedError:
            answer = None
        except Exception as e:  # noqa: BLE001 - the student's code: report it, never stop Run All
            _results[name] = "wrong"
            print(f"❌ {name}: your code raised {type(e).__name__}: {e}" + (f" Hint: {hint}" if hint else ""))
            return
    if _missing(answer):
        _results[name] = "not answered"
        print(f"⏳ {name}: not answered yet.")
        return
    if choices is not None and _as_choice(answer) not in [_as_choice(c) for c in choices]:
        _results[name] = "wrong"
        print(f"❌ {name}: {answer!r} is not one of the choices {list(choices)}.")
        return
    if _close(answer, expected, rtol, atol):
        _results[name] = "correct"
        print(f"✅ {name}: {_fmt(answer)} is right.")
        return
    _results[name] = "wrong"
    reason = next((text for wrong, text in (why or {}).items() if _close(answer, wrong, rtol, atol)), "")
    print(f"❌ {name}: {_fmt(answer)} is not it." + (f" {reason}" if reason else "")
          + (f" Hint: {hint}" if hint else ""))


def summary() -> None:
    """One line: how many exercises of this session are right, wrong, not answered yet."""
    counts = {k: sum(v == k for v in _results.values()) for k in ("correct", "wrong", "not answered")}
    print(f"Exercises: {counts['correct']} right, {counts['wrong']} to revisit, {counts['not answered']} not answered yet.")
