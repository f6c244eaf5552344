"""A deployment budget: the limits a model of `dnnopt optimize` must meet.

`Budget(max_size="64KB", max_latency="2ms", max_macs="5M", min_accuracy=0.97)` holds any
subset of the limits, each parsed from a number or a string with a unit:

- sizes: `B`, `KB`/`MB`/`GB` (powers of 1000) and `KiB`/`MiB`/`GiB` (powers of 1024);
- durations: `us`, `ms`, `s`, `m`/`min` (a bare number is milliseconds for a latency, seconds
  for a time budget);
- counts: `K`, `M`, `G` (powers of 1000).

Size is the exported `.tflite` file's bytes; latency is the LiteRT median at batch 1 on this
machine, measured on the exported file; MACs are the profiler's; accuracy (classification)
and RMSE (regression, in the targets' units) are measured on the held-out test split.
"""

import math
import re

_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

SIZE_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
              "kib": 1024, "mib": 1024**2, "gib": 1024**3}
TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
COUNT_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def _parse(value, name, units, default_unit, what):
    """A positive number from `value` (a number, or a string with one of `units`)."""
    if isinstance(value, bool):
        raise ValueError(f"Argument `{name}` must be {what}. Received: {name}={value!r}")
    if isinstance(value, (int, float)):
        number, factor = float(value), units[default_unit]
    elif isinstance(value, str):
        match = re.fullmatch(_NUMBER + r"\s*([A-Za-z]*)", value.strip())
        unit = match.group(2).lower() if match else None
        if match is None or unit not in units and not (unit == "" and default_unit in units):
            raise ValueError(f"Argument `{name}` must be {what}. Received: {name}={value!r}")
        number = float(match.group(1))
        factor = units[unit] if unit else units[default_unit]
    else:
        raise ValueError(f"Argument `{name}` must be {what}. Received: {name}={value!r}")
    result = number * factor
    if not math.isfinite(result) or result <= 0:
        raise ValueError(f"Argument `{name}` must be > 0. Received: {name}={value!r}")
    return result


def parse_size(value, name="max_size"):
    """Bytes from `64KB`, `1.5MiB`, `4096` (bytes) or a number."""
    return _parse(value, name, SIZE_UNITS, "b",
                  "a size such as 64KB, 1.5MiB or 4096 (bytes; units B, KB, MB, GB, KiB, "
                  "MiB, GiB)")


def parse_duration(value, name="max_latency", default_unit="ms"):
    """Seconds from `2ms`, `500us`, `20m`, or a number in `default_unit`."""
    return _parse(value, name, TIME_UNITS, default_unit,
                  f"a duration such as 2ms, 500us, 1.5s or 20m (a bare number is "
                  f"{ {'ms': 'milliseconds', 's': 'seconds'}.get(default_unit, default_unit)})")


def parse_count(value, name="max_macs"):
    """A count from `5M`, `300K`, `1.2G` or a number."""
    return _parse(value, name, COUNT_UNITS, "",
                  "a count such as 5M, 300K, 1.2G or 5000000")


def format_size(num_bytes):
    if num_bytes >= 1024**2:
        return f"{num_bytes / 1024**2:.2f} MiB"
    if num_bytes >= 1024:
        return f"{num_bytes / 1024:.1f} KiB"
    return f"{int(num_bytes)} B"


def format_count(count):
    for factor, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if count >= factor:
            return f"{count / factor:.2f}{unit}"
    return f"{int(count)}"


def _fraction(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0.0 < float(value) <= 1.0):
        raise ValueError(f"Argument `{name}` must be a number in (0, 1] (a fraction: 0.97 is "
                         f"97%). Received: {name}={value!r}")
    return float(value)


class Budget:
    """The limits a deployed model must meet; any subset, each optional.

    Args:
        max_size: the largest `.tflite` file, in bytes or with a unit (`"64KB"`).
        max_latency: the slowest LiteRT median latency at batch 1, in milliseconds or with a
            unit (`"2ms"`, `"500us"`).
        max_macs: the most multiply-accumulates per image (`"5M"`).
        min_accuracy: the lowest test accuracy, a fraction in (0, 1] (classification).
        max_rmse: the largest test root mean squared error, in the targets' units
            (regression).

    Raises:
        ValueError: naming the argument and the value, for a value that is not positive or
            has an unknown unit.

    Example:

    >>> budget = Budget(max_size="64KB", max_latency="2ms")
    >>> budget.max_size, budget.max_latency_ms
    (64000.0, 2.0)
    """

    FIELDS = ("max_size", "max_latency", "max_macs", "min_accuracy", "max_rmse")

    def __init__(self, max_size=None, max_latency=None, max_macs=None, min_accuracy=None,
                 max_rmse=None):
        self.max_size = None if max_size is None else parse_size(max_size)
        self.max_latency_ms = (None if max_latency is None
                               else parse_duration(max_latency) * 1e3)
        self.max_macs = None if max_macs is None else parse_count(max_macs)
        self.min_accuracy = None if min_accuracy is None else _fraction(min_accuracy,
                                                                        "min_accuracy")
        if max_rmse is not None and (isinstance(max_rmse, bool) or not isinstance(
                max_rmse, (int, float)) or not math.isfinite(max_rmse) or max_rmse <= 0):
            raise ValueError("Argument `max_rmse` must be a number > 0 (in the targets' "
                             f"units). Received: max_rmse={max_rmse!r}")
        self.max_rmse = None if max_rmse is None else float(max_rmse)

    @property
    def max_latency(self):
        return self.max_latency_ms

    def __bool__(self):
        return any(getattr(self, f) is not None for f in
                   ("max_size", "max_latency_ms", "max_macs", "min_accuracy", "max_rmse"))

    def __eq__(self, other):
        return isinstance(other, Budget) and self.to_dict() == other.to_dict()

    def __repr__(self):
        parts = [f"{k}={v!r}" for k, v in self.to_dict().items() if v is not None]
        return f"Budget({', '.join(parts)})"

    def to_dict(self):
        """The limits in base units: bytes, milliseconds, MACs, fractions."""
        return {"max_size": self.max_size, "max_latency_ms": self.max_latency_ms,
                "max_macs": self.max_macs, "min_accuracy": self.min_accuracy,
                "max_rmse": self.max_rmse}

    @classmethod
    def from_dict(cls, values):
        """The inverse of `to_dict` (also accepts the constructor's names)."""
        values = dict(values or {})
        if "max_latency_ms" in values:
            latency = values.pop("max_latency_ms")
            values["max_latency"] = None if latency is None else f"{latency}ms"
        return cls(**values)

    # -- checks ---------------------------------------------------------------------------
    def hardware_violations(self, size_bytes=None, latency_ms=None, macs=None):
        """The limits on size, latency and MACs that the given measures break.

        Returns a list of `(name, measured, limit)` for each broken limit; a measure given
        as None is not checked.
        """
        broken = []
        for name, measured, limit in (("max_size", size_bytes, self.max_size),
                                      ("max_latency", latency_ms, self.max_latency_ms),
                                      ("max_macs", macs, self.max_macs)):
            if limit is not None and measured is not None and measured > limit:
                broken.append((name, measured, limit))
        return broken

    def violations(self, metrics):
        """Every limit `metrics` (keys `size_bytes`, `latency_ms`, `macs`, `accuracy`)
        breaks, as `(name, measured, limit)`. A missing measure breaks its limit."""
        broken = []
        for name, key, limit in (("max_size", "size_bytes", self.max_size),
                                 ("max_latency", "latency_ms", self.max_latency_ms),
                                 ("max_macs", "macs", self.max_macs)):
            if limit is not None and (metrics.get(key) is None or metrics[key] > limit):
                broken.append((name, metrics.get(key), limit))
        if self.min_accuracy is not None and (metrics.get("accuracy") is None
                                              or metrics["accuracy"] < self.min_accuracy):
            broken.append(("min_accuracy", metrics.get("accuracy"), self.min_accuracy))
        if self.max_rmse is not None and (metrics.get("rmse") is None
                                          or metrics["rmse"] > self.max_rmse):
            broken.append(("max_rmse", metrics.get("rmse"), self.max_rmse))
        return broken

    def describe(self):
        """The limits in words, e.g. `size <= 62.5 KiB, latency <= 2.000 ms`."""
        parts = []
        if self.max_size is not None:
            parts.append(f"size <= {format_size(self.max_size)}")
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:.3f} ms")
        if self.max_macs is not None:
            parts.append(f"MACs <= {format_count(self.max_macs)}")
        if self.min_accuracy is not None:
            parts.append(f"accuracy >= {self.min_accuracy:.2%}")
        if self.max_rmse is not None:
            parts.append(f"RMSE <= {self.max_rmse:.4g}")
        return ", ".join(parts) or "no limit"


def describe_violation(name, measured, limit):
    """One violation in words: `size 80.1 KiB > 62.5 KiB`."""
    if name == "max_size":
        return f"size {format_size(measured) if measured is not None else '?'} > " \
               f"{format_size(limit)}"
    if name == "max_latency":
        shown = f"{measured:.3f} ms" if measured is not None else "?"
        return f"latency {shown} > {limit:.3f} ms"
    if name == "max_macs":
        shown = format_count(measured) if measured is not None else "?"
        return f"MACs {shown} > {format_count(limit)}"
    if name == "max_rmse":
        shown = f"{measured:.4g}" if measured is not None else "?"
        return f"RMSE {shown} > {limit:.4g}"
    shown = f"{measured:.2%}" if measured is not None else "?"
    return f"accuracy {shown} < {limit:.2%}"
