"""One settings schema for every entry point: dataclasses whose fields carry their rules.

A setting is a dataclass field made with :func:`setting`, which writes down once, in the
field's metadata, what its value must be: an interval such as ``"[0, 1)"``, a set of
choices, a positive multiple, a list's length, or not being empty. :func:`from_table`
builds such a dataclass from a TOML table (nested dataclasses and lists of them
included), refusing unknown keys and wrong types; :func:`check` applies every field's
rule. Both raise :class:`InputError` naming the key, with the message made from the rule
itself, so a bound and what the user reads about it cannot drift apart.

The camera's settings (``vcam_harmonize.config.CameraConfig``) and the training config
(``vcam_harmonize.training.config.TrainConfig``) are both built this way; a check across
fields (a frame's total size, a metric that must exist) stays with its class.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import MISSING, dataclass
from typing import Any, NamedTuple, get_args, get_origin, get_type_hints

from vcam_harmonize.models.errors import InputError

__all__ = ["Interval", "Rule", "check", "from_table", "parse_interval", "setting"]

_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
_INTERVAL = re.compile(r"([\[(])\s*(-?inf|[-+.\deE]+)\s*,\s*(inf|[-+.\deE]+)\s*([\])])")
_TYPES = {str: "str", int: "int", float: "float", bool: "bool"}


class Interval(NamedTuple):
    """Numbers from ``low`` to ``high``; an open end leaves the bound itself out."""

    low: float
    high: float
    low_open: bool
    high_open: bool

    def holds(self, value: object) -> bool:
        """Whether ``value`` is a number (not a bool) inside the interval."""
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


def parse_interval(text: str) -> Interval:
    """``"[0, 1)"``, ``"(0, 240]"``, ``"[1, inf)"``... as an :class:`Interval`."""
    match = _INTERVAL.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an interval: {text!r} (write it as [low, high) or (0, inf))")
    left, low, high, right = match.groups()
    return Interval(float(low), float(high), left == "(", right == ")")


@dataclass(frozen=True)
class Rule:
    """What a setting's value must be, beyond its type (every part optional).

    Args:
        within: an interval, e.g. ``"[0, 1)"`` or ``"[1, inf)"``; for a list, of its items.
        zero: what 0 means where ``within`` is ``"[0, inf)"`` (``"auto"``: the message
            reads "must be 0 (auto) or more").
        multiple_of: the value must be a positive multiple of this.
        choices: the strings allowed.
        length: a list must have exactly this many items.
        nonempty: a string must not be ``""``; a list needs at least one entry.
    """

    within: str = ""
    zero: str = ""
    multiple_of: int = 0
    choices: tuple[str, ...] = ()
    length: int = 0
    nonempty: bool = False

    def __post_init__(self) -> None:
        if self.within:
            parse_interval(self.within)  # a malformed interval fails at import time

    @property
    def interval(self) -> Interval | None:
        return parse_interval(self.within) if self.within else None

    def problem(self, key: str, value: Any) -> str | None:
        """The message for a ``value`` of ``key`` that breaks this rule, else None."""
        interval = self.interval
        if isinstance(value, list):
            if self.nonempty and not value:
                return f"at least one [[{key}]] entry is needed"
            if (self.length and len(value) != self.length) or (
                    interval is not None and not all(interval.holds(v) for v in value)):
                count = _NUMBER_WORDS.get(self.length, str(self.length))
                return f"{key} needs {count} numbers" + (f" in {self.within}" if interval
                                                         else "")
            return None
        if self.nonempty and value == "":
            return f"{key} is empty"
        if self.choices and value not in self.choices:
            return f"{key} must be one of {', '.join(self.choices)}"
        if self.multiple_of and not (value > 0 and value % self.multiple_of == 0):
            return f"{key} must be a positive multiple of {self.multiple_of}"
        if interval is not None and not interval.holds(value):
            return f"{key} must be {_describe(interval, self.within, self.zero)}"
        return None


def _describe(interval: Interval, text: str, zero: str) -> str:
    """How the message names an interval: "in [0, 1]", "positive", "0 (auto) or more"."""
    if not math.isinf(interval.high):
        return f"in {text.strip()}"
    if interval.low == 0 and interval.low_open:
        return "positive"
    low = f"{interval.low:g}" + (f" ({zero})" if zero and interval.low == 0 else "")
    return f"{low} or more" if not interval.low_open else f"more than {low}"


def setting(default: Any = MISSING, *, factory: Any = MISSING, within: str = "",
            zero: str = "", multiple_of: int = 0, choices: tuple[str, ...] = (),
            length: int = 0, nonempty: bool = False, number_as_text: bool = False) -> Any:
    """A dataclass field with its :class:`Rule` (see there for the arguments).

    ``factory`` makes a mutable default (a list); ``number_as_text`` lets a string
    setting be written as a TOML integer (``device = 0`` means camera 0).
    """
    rule = Rule(within, zero, multiple_of, tuple(choices), length, nonempty)
    metadata: dict[str, Any] = {"rule": rule}
    if number_as_text:
        metadata["number_as_text"] = True
    return dataclasses.field(default=default, default_factory=factory, metadata=metadata)


def from_table(cls: type, data: Any, source: str = "config", where: str = "") -> Any:
    """An instance of the dataclass ``cls`` from the TOML table ``data``.

    Unknown keys and values of the wrong type are :class:`InputError` naming the key
    (``where`` is the dotted place of ``data`` in the file, "" at the top; ``source``
    begins the message: a path, "command line", "config"). Integers are taken for
    floats; the rules are not checked here (:func:`check`).
    """
    if not isinstance(data, dict):
        raise InputError(f"{source}: {where or 'top level'} must be a table, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            place = f"{where}.{key}" if where else key
            raise InputError(f"{source}: unknown key {place!r} (known: "
                             f"{', '.join(sorted(fields))})")
    hints = get_type_hints(cls)
    return cls(**{key: _convert(hints[key], value, source, f"{where}.{key}" if where else key,
                                fields[key].metadata.get("number_as_text", False))
                  for key, value in data.items()})


def _convert(hint: Any, value: Any, source: str, where: str, number_as_text: bool) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_table(hint, value, source, where)
    if get_origin(hint) is list:
        (item,) = get_args(hint)
        if not isinstance(value, list):
            raise InputError(f"{source}: {where} must be a list, got {value!r}")
        return [_convert(item, v, source, f"{where}[{i}]", False) for i, v in enumerate(value)]
    if hint not in _TYPES:
        raise TypeError(f"settings of type {hint!r} are not supported ({where})")
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if hint is float and is_int:
        return float(value)
    if hint is str and is_int and number_as_text:
        return str(value)
    if not isinstance(value, hint) or (hint is not bool and isinstance(value, bool)):
        raise InputError(f"{source}: {where} must be {_TYPES[hint]}, got {value!r}")
    return value


def check(settings: Any, source: str = "config", where: str = "") -> Any:
    """Apply every field's rule to the dataclass instance ``settings`` (nested ones and
    lists of them too); the first value that breaks one is an :class:`InputError`.
    Returns ``settings``."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        key = f"{where}.{f.name}" if where else f.name
        rule = f.metadata.get("rule")
        message = rule.problem(key, value) if rule is not None else None
        if message:
            raise InputError(f"{source}: {message}")
        if dataclasses.is_dataclass(value):
            check(value, source, key)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    check(item, source, f"{key}[{i}]")
    return settings
