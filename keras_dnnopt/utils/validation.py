"""Argument validation with Keras-style messages.

Every public entry point validates its arguments here, so that a bad value is
reported where it enters, naming the argument, showing the value and saying what
works: ``Argument `decay_steps` must be > 0. Received: decay_steps=0``.
"""

import math
import numbers


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_number(name, value, *, low=None, high=None, low_inclusive=True, high_inclusive=True,
                 integer=False, finite=True):
    """Checks that `value` is a (real or integer) number inside the given bounds.

    NaN is always refused (it compares false with every bound, so it would slip through
    them), and so are `inf` and `-inf` unless `finite=False`.

    Args:
        name: the argument name, for the message.
        value: the value received.
        low, high: bounds, or None for unbounded.
        low_inclusive, high_inclusive: whether each bound itself is allowed.
        integer: whether the value must be an integer.
        finite: whether `inf` and `-inf` are refused. Defaults to True.

    Returns:
        The value (as `int` when `integer`, else as `float`).

    Raises:
        ValueError: if the value is not a number, is NaN or infinite, or is out of bounds.
    """
    kind = "an integer" if integer else "a number"
    if not (_is_integer(value) if integer else _is_number(value)):
        raise ValueError(f"Argument `{name}` must be {kind}. Received: {name}={value!r}")
    if not integer and (math.isnan(value) or (finite and math.isinf(value))):
        raise ValueError(
            f"Argument `{name}` must be a finite number. Received: {name}={value!r}"
        )
    bad_low = low is not None and (value < low if low_inclusive else value <= low)
    bad_high = high is not None and (value > high if high_inclusive else value >= high)
    if bad_low or bad_high:
        raise ValueError(
            f"Argument `{name}` must be {_describe(low, high, low_inclusive, high_inclusive)}. "
            f"Received: {name}={value!r}"
        )
    return int(value) if integer else float(value)


def _describe(low, high, low_inclusive, high_inclusive):
    if low is not None and high is not None:
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        return f"in {left}{low}, {high}{right}"
    if low is not None:
        return f"{'>=' if low_inclusive else '>'} {low}"
    return f"{'<=' if high_inclusive else '<'} {high}"


def check_positive(name, value, *, integer=False, allow_zero=False):
    """Checks `value > 0` (or `>= 0` with `allow_zero`)."""
    return check_number(name, value, low=0, low_inclusive=allow_zero, integer=integer)


def check_choice(name, value, choices):
    """Checks that `value` is one of `choices` and returns it."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(
            f"Argument `{name}` must be one of {allowed}. Received: {name}={value!r}"
        )
    return value


def check_shape(name, value, *, rank=None, min_rank=None):
    """Checks a shape given as a tuple/list of positive ints (None allowed for unknown dims)."""
    if not isinstance(value, (tuple, list)) or not all(
        d is None or (_is_integer(d) and d > 0) for d in value
    ):
        raise ValueError(
            f"Argument `{name}` must be a tuple of positive integers, e.g. (32, 32, 3). "
            f"Received: {name}={value!r}"
        )
    if rank is not None and len(value) != rank:
        raise ValueError(
            f"Argument `{name}` must have {rank} dimensions. Received: {name}={value!r}"
        )
    if min_rank is not None and len(value) < min_rank:
        raise ValueError(
            f"Argument `{name}` must have at least {min_rank} dimensions. "
            f"Received: {name}={value!r}"
        )
    return tuple(value)
