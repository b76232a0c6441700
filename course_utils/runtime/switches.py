"""On/off environment switches (COURSE_BNB_GUARD, COURSE_NF4_NATIVE, ...), read one way everywhere."""
from __future__ import annotations

import os

_OFF = ("0", "false", "off", "no")
_ON = ("1", "true", "on", "yes")


def enabled(name: str, default: bool = True) -> bool:
    """Whether switch `name` is on. Unset or empty means `default`; anything unrecognised is an error, so a typo
    such as COURSE_BNB_GUARD=of cannot silently leave a guard on."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise ValueError(f"{name}={os.environ[name]!r} is not an on/off value. "
                     f"Fix: set {name} to one of {_ON + _OFF}, or unset it (default: {'on' if default else 'off'}).")
