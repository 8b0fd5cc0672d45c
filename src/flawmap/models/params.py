"""Declarative parameter constraints of the detectors.

Every detector parameter is declared once, in the class body, with :func:`param`:
``coreset_ratio: float = param(0.1, Real(0.0, 1.0, low_open=True))`` gives its type (the
annotation), its default and its allowed values (the scikit-learn ``_parameter_constraints``
idea). :class:`flawmap.models.base.Detector` derives the keyword-only constructor,
``param_types()``, ``constraints()``, ``get_params``/``set_params`` and the JSON form from these
declarations, and ``Detector._validate_params`` checks every value before any heavy work
(``create_model``, ``set_params`` and the start of ``fit``). A failed check raises
:class:`~flawmap.errors.ConfigError` naming the parameter, the allowed values and the value given.

Constraints only read values, they never convert them: ``get_params`` returns exactly what was
passed (so ``sklearn.base.clone`` works). Bools are neither integers nor numbers here.
"""

from __future__ import annotations

import abc
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from flawmap.errors import ConfigError

__all__ = [
    "AnyOf",
    "Backbone",
    "Bool",
    "Constraint",
    "Int",
    "NoneOr",
    "OneOf",
    "Param",
    "Real",
    "Seq",
    "Size",
    "Text",
    "check_all",
    "describe_changes",
    "param",
]


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


class Constraint(abc.ABC):
    """One rule a parameter value must satisfy."""

    @abc.abstractmethod
    def accepts(self, value: Any) -> bool:
        """Whether ``value`` satisfies the rule."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The allowed values in words, e.g. ``"an integer >= 1"``."""

    def check(self, name: str, value: Any) -> None:
        """Raise a ConfigError naming ``name`` unless ``value`` is allowed."""
        if not self.accepts(value):
            raise ConfigError(f"{name} must be {self.describe()}, got {value!r}")


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def _within(
    value: float, low: float | None, high: float | None, low_open: bool, high_open: bool
) -> bool:
    if low is not None and (value <= low if low_open else value < low):
        return False
    return not (high is not None and (value >= high if high_open else value > high))


class Int(Constraint):
    """An integer (not a bool) in ``[low, high]``; ``odd`` also asks for an odd one."""

    def __init__(
        self, low: int | None = None, high: int | None = None, *, odd: bool = False
    ) -> None:
        self.low, self.high, self.odd = low, high, odd

    def accepts(self, value: Any) -> bool:
        if _is_bool(value) or not isinstance(value, numbers.Integral):
            return False
        if self.odd and int(value) % 2 == 0:
            return False
        return _within(int(value), self.low, self.high, False, False)

    def describe(self) -> str:
        bounds = _interval(self.low, self.high, False, False)
        return f"an {'odd ' if self.odd else ''}integer{' ' + bounds if bounds else ''}"


class Real(Constraint):
    """A finite number (int or float, not a bool) in an interval; ``*_open`` excludes a bound."""

    def __init__(
        self,
        low: float | None = None,
        high: float | None = None,
        *,
        low_open: bool = False,
        high_open: bool = False,
    ) -> None:
        self.low, self.high = low, high
        self.low_open, self.high_open = low_open, high_open

    def accepts(self, value: Any) -> bool:
        if _is_bool(value) or not isinstance(value, numbers.Real):
            return False
        number = float(value)
        return math.isfinite(number) and _within(
            number, self.low, self.high, self.low_open, self.high_open
        )

    def describe(self) -> str:
        bounds = _interval(self.low, self.high, self.low_open, self.high_open)
        return f"a finite number{' ' + bounds if bounds else ''}"


class Bool(Constraint):
    """``True`` or ``False`` (not 0/1 or a string)."""

    def accepts(self, value: Any) -> bool:
        return _is_bool(value)

    def describe(self) -> str:
        return "True or False"


class OneOf(Constraint):
    """One of a fixed set of values (usually strings)."""

    def __init__(self, *choices: Any) -> None:
        self.choices = choices

    def accepts(self, value: Any) -> bool:
        return any(type(value) is type(c) and value == c for c in self.choices)

    def describe(self) -> str:
        return f"one of {', '.join(repr(c) for c in self.choices)}"


class Text(Constraint):
    """A non-empty ``str`` (names, file and folder paths: pass ``str(path)``)."""

    def __init__(self, what: str = "a non-empty string") -> None:
        self.what = what

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value.strip())

    def describe(self) -> str:
        return self.what


class NoneOr(Constraint):
    """``None`` or a value ``inner`` accepts."""

    def __init__(self, inner: Constraint) -> None:
        self.inner = inner

    def accepts(self, value: Any) -> bool:
        return value is None or self.inner.accepts(value)

    def describe(self) -> str:
        return f"None or {self.inner.describe()}"

    def check(self, name: str, value: Any) -> None:
        if value is None:
            return
        if type(self.inner).check is not Constraint.check:  # the inner rule words its own errors
            self.inner.check(name, value)
        else:
            super().check(name, value)


class AnyOf(Constraint):
    """A value at least one of ``constraints`` accepts."""

    def __init__(self, *constraints: Constraint) -> None:
        self.constraints = constraints

    def accepts(self, value: Any) -> bool:
        return any(c.accepts(value) for c in self.constraints)

    def describe(self) -> str:
        return " or ".join(c.describe() for c in self.constraints)


class Seq(Constraint):
    """A tuple (or list) of ``length`` (or at least ``min_length``) items ``item`` accepts."""

    def __init__(self, item: Constraint, *, length: int | None = None, min_length: int = 1) -> None:
        self.item, self.length, self.min_length = item, length, min_length

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, tuple | list):
            return False
        if self.length is not None and len(value) != self.length:
            return False
        return len(value) >= self.min_length and all(self.item.accepts(v) for v in value)

    def describe(self) -> str:
        count = f"{self.length} values" if self.length is not None else f"{self.min_length}+ values"
        return f"a tuple of {count}, each {self.item.describe()}"


class Size(Constraint):
    """An image size: a positive int or an ``(H, W)`` pair, within the bounds that
    :mod:`flawmap.data.transforms` sets (its own check is the one that runs)."""

    def accepts(self, value: Any) -> bool:
        try:
            self.check("size", value)
        except ConfigError:
            return False
        return True

    def describe(self) -> str:
        return "a positive int or an (H, W) pair of positive ints"

    def check(self, name: str, value: Any) -> None:
        from flawmap.data.transforms import _normalise_size

        _normalise_size(value, name, allow_none=False)


class Backbone(Constraint):
    """The name of a registered backbone (:func:`flawmap.backbones.list_backbones`)."""

    def accepts(self, value: Any) -> bool:
        from flawmap.backbones.registry import list_backbones

        return isinstance(value, str) and value in list_backbones()

    def describe(self) -> str:
        from flawmap.backbones.registry import list_backbones

        return f"a registered backbone ({', '.join(list_backbones())})"


@dataclass(frozen=True)
class Param:
    """One declared detector parameter (see :func:`param`).

    Attributes:
        default: the value a detector gets when the parameter is not passed (immutable).
        constraint: its allowed values; ``None`` in a subclass re-declaration = the inherited one.
        doc: a one-line description (optional; the class docstring's Args may hold it instead).
    """

    default: Any
    constraint: Constraint | None = None
    doc: str = ""


def param(default: Any, constraint: Constraint | None = None, *, doc: str = "") -> Any:
    """Declare a detector parameter in a class body (its annotation is its type).

    ``lr: float = param(1e-3, Real(0.0, low_open=True))``. A subclass changes an inherited
    parameter's default by declaring it again, e.g. ``epochs: int = param(40)`` (the constraint
    and doc are inherited; the parameter then takes the subclass's place in the order).
    Returns a :class:`Param` (typed ``Any`` so that the annotation stays the value's type).
    """
    return Param(default, constraint, doc)


def merge_params(
    bases: list[dict[str, Param]], own: dict[str, Param], owner: str
) -> dict[str, Param]:
    """The parameters of a class: its bases' (in order) then its own ``own`` declarations.

    A re-declared parameter moves to its new place and inherits a missing constraint and doc.

    Raises:
        TypeError: a new parameter declared without a constraint (a programming error).
    """
    merged: dict[str, Param] = {}
    for table in bases:
        for name, spec in table.items():
            merged.pop(name, None)
            merged[name] = spec
    for name, spec in own.items():
        inherited = merged.pop(name, None)
        if spec.constraint is None:
            if inherited is None:
                raise TypeError(f"{owner}.{name}: param() needs a constraint")
            spec = Param(spec.default, inherited.constraint, spec.doc or inherited.doc)
        merged[name] = spec
    return merged


def check_all(values: dict[str, Any], constraints: dict[str, Constraint]) -> None:
    """Check every value against its constraint; ``values`` without a constraint are an error."""
    missing = sorted(set(values) - set(constraints))
    if missing:
        raise TypeError(f"no constraint declared for parameter(s) {', '.join(missing)}")
    for name, value in values.items():
        constraints[name].check(name, value)


def describe_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``"key: A -> B"`` for every key whose value differs between two parameter dicts."""
    missing = object()
    lines = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key, missing), after.get(key, missing)
        if a != b or (type(a) is not type(b) and not _same_number(a, b)):
            show_a = "(absent)" if a is missing else repr(a)
            show_b = "(absent)" if b is missing else repr(b)
            lines.append(f"{key}: {show_a} -> {show_b}")
    return lines


def _same_number(a: Any, b: Any) -> bool:
    """1 and 1.0 are the same value (JSON does not keep the difference); True and 1 are not."""
    return (
        isinstance(a, numbers.Real)
        and isinstance(b, numbers.Real)
        and not _is_bool(a)
        and not _is_bool(b)
        and a == b
    )
