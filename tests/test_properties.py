"""Property-based tests (Hypothesis) of the schedules, the builders, pruning and export.

Arguments are drawn by Hypothesis instead of listed by hand:

- every schedule of `keras_dnnopt.schedules`: valid arguments give finite values equal to a
  NumPy float64 closed form written here (not taken from the package) at drawn steps;
  invalid ones raise `ValueError` naming the argument and showing the value;
- the builders (`mobilenet_v1`, `mobilenet_v2`, `plain_cnn`): `alpha`, `depth_multiplier`,
  inputs from 8x8 to 224x224 with 1 or 3 channels build a model with output
  `(None, classes)`; invalid ones raise `ValueError` naming the argument;
- `compression.prune` / `PruningCallback`: invalid sparsity and step arguments raise
  `ValueError` naming the argument; valid ones reach the target sparsity;
- `export.export_tflite`: invalid options raise `ValueError` naming the argument before
  any conversion work.

Profiles (`HYPOTHESIS_PROFILE`): `ci` (the default: derandomized, so every run draws the
same examples, no example database, no deadline) and `thorough` (random, 10x the examples,
for a local bug hunt: `HYPOTHESIS_PROFILE=thorough pytest tests/test_properties.py`).
"""

import inspect
import math
import os
import tempfile
import types
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from keras_dnnopt import compression, models, schedules
from keras_dnnopt.backend import keras
from keras_dnnopt.export import QUANTIZATION_MODES, export_tflite
from keras_dnnopt.export import tflite as tflite_module

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, max_examples=40,
    suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile(
    "thorough", derandomize=False, database=None, deadline=None, max_examples=400,
    suppress_health_check=[HealthCheck.too_slow], print_blob=True)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
SCALE = 10 if PROFILE == "thorough" else 1


def examples(n):
    """`n` examples for a slow test under the `ci` profile, more under `thorough`."""
    return settings(max_examples=n * SCALE)


def f32(value):
    """A parameter as the schedules hold it on the device: rounded to float32."""
    return float(np.float32(value))


# ------------------------------------------------------------------------------------------
# Schedules: closed forms in NumPy float64.
# ------------------------------------------------------------------------------------------


def warmup_then(step, lr, warmup, decay):
    if step < warmup:
        return lr * step / warmup
    return decay(step - warmup)


def closed_cosine(step, learning_rate, decay_steps, warmup_steps=0, alpha=0.0):
    def decay(s):
        cosine = 0.5 * (1.0 + np.cos(np.pi * min(s, decay_steps) / decay_steps))
        return learning_rate * (alpha + (1.0 - alpha) * cosine)
    return warmup_then(step, learning_rate, warmup_steps, decay)


def restart_cycle(s, first_decay_steps, t_mul):
    """(cycle index, position in the cycle in [0, 1)) of `s` steps after the warm-up."""
    if t_mul == 1.0:
        i = math.floor(s / first_decay_steps)
        return i, (s - i * first_decay_steps) / first_decay_steps
    i, start, length = 0, 0.0, float(first_decay_steps)
    while s >= start + length:
        start, length, i = start + length, length * t_mul, i + 1
    return i, (s - start) / length


def closed_restarts(step, learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0,
                    warmup_steps=0):
    def decay(s):
        i, position = restart_cycle(s, first_decay_steps, t_mul)
        cosine = 0.5 * f32(m_mul) ** i * (1.0 + np.cos(np.pi * position))
        return learning_rate * (alpha + (1.0 - alpha) * cosine)
    return warmup_then(step, learning_rate, warmup_steps, decay)


def closed_step(step, learning_rate, boundaries, gamma=0.1, warmup_steps=0):
    def decay(s):
        return learning_rate * f32(gamma) ** sum(1 for b in boundaries if s >= b)
    return warmup_then(step, learning_rate, warmup_steps, decay)


def closed_exponential(step, learning_rate, decay_steps, decay_rate, staircase=False,
                       warmup_steps=0):
    def decay(s):
        exponent = math.floor(s / decay_steps) if staircase else s / decay_steps
        return learning_rate * f32(decay_rate) ** exponent
    return warmup_then(step, learning_rate, warmup_steps, decay)


def closed_polynomial(step, learning_rate, decay_steps, end_learning_rate=0.0, power=1.0,
                      warmup_steps=0):
    def decay(s):
        remaining = 1.0 - min(s, decay_steps) / decay_steps
        return (learning_rate - end_learning_rate) * remaining ** power + end_learning_rate
    return warmup_then(step, learning_rate, warmup_steps, decay)


def closed_one_cycle_curve(step, start, peak, end, total_steps, pct_start=0.3,
                           anneal_strategy="cos"):
    # PyTorch's OneCycleLR, two phases; held at `end` after the last step.
    def anneal(a, b, fraction):
        if anneal_strategy == "cos":
            return b + (a - b) / 2.0 * (1.0 + np.cos(np.pi * fraction))
        return a + (b - a) * fraction
    last = total_steps - 1
    phase1_end = pct_start * total_steps - 1
    t = min(max(step, 0.0), last)
    if t <= phase1_end:
        return anneal(start, peak, t / phase1_end)
    return anneal(peak, end, (t - phase1_end) / (last - phase1_end))


def closed_one_cycle(step, max_learning_rate, total_steps, pct_start=0.3, div_factor=25.0,
                     final_div_factor=1e4, anneal_strategy="cos"):
    initial = max_learning_rate / div_factor
    return closed_one_cycle_curve(step, initial, max_learning_rate, initial / final_div_factor,
                                  total_steps, pct_start, anneal_strategy)


def closed_cyclical(step, initial_learning_rate, maximal_learning_rate, step_size,
                    mode="triangular", gamma=1.0):
    cycle = math.floor(1 + step / (2 * step_size))
    x = abs(step / step_size - 2 * cycle + 1)
    scale = {"triangular": 1.0, "triangular2": 0.5 ** (cycle - 1),
             "exp_range": f32(gamma) ** step}[mode]
    return initial_learning_rate + (maximal_learning_rate - initial_learning_rate) * max(
        0.0, 1.0 - x) * scale


# ------------------------------------------------------------------------------------------
# Schedules: strategies of valid arguments.
# ------------------------------------------------------------------------------------------

rates = st.floats(1e-6, 10.0)
fractions = st.floats(0.0, 1.0)
factors = st.floats(1e-3, 1.0)  # decay factors: (0, 1]
lengths = st.integers(1, 100_000)


@st.composite
def warmup_and_decay(draw):
    decay_steps = draw(lengths)
    return draw(st.integers(0, decay_steps)), decay_steps


@st.composite
def cosine_args(draw):
    warmup, decay = draw(warmup_and_decay())
    return dict(learning_rate=draw(rates), decay_steps=decay, warmup_steps=warmup,
                alpha=draw(fractions))


@st.composite
def restarts_args(draw):
    return dict(learning_rate=draw(rates), first_decay_steps=draw(st.integers(1, 1000)),
                t_mul=draw(st.one_of(st.just(1.0), st.floats(1.05, 3.0))),
                m_mul=draw(factors), alpha=draw(fractions),
                warmup_steps=draw(st.integers(0, 1000)))


@st.composite
def step_args(draw):
    boundaries = sorted(draw(st.sets(st.integers(1, 100_000), max_size=5)))
    return dict(learning_rate=draw(rates), boundaries=boundaries,
                gamma=draw(st.floats(1e-3, 10.0)), warmup_steps=draw(st.integers(0, 1000)))


@st.composite
def exponential_args(draw):
    return dict(learning_rate=draw(rates), decay_steps=draw(lengths), decay_rate=draw(factors),
                staircase=draw(st.booleans()), warmup_steps=draw(st.integers(0, 1000)))


@st.composite
def polynomial_args(draw):
    warmup, decay = draw(warmup_and_decay())
    return dict(learning_rate=draw(rates), decay_steps=decay,
                end_learning_rate=draw(st.one_of(st.just(0.0), rates)),
                power=draw(st.floats(0.05, 5.0)), warmup_steps=warmup)


@st.composite
def one_cycle_args(draw):
    total = draw(st.integers(2, 100_000))
    pct = draw(st.floats(0.01, 0.99))
    assume(pct * total > 1.0 + 1e-6)
    return dict(max_learning_rate=draw(rates), total_steps=total, pct_start=pct,
                div_factor=draw(st.floats(1.0, 1e3)), final_div_factor=draw(st.floats(1.0, 1e5)),
                anneal_strategy=draw(st.sampled_from(["cos", "linear"])))


@st.composite
def cyclical_args(draw):
    low = draw(rates)
    return dict(initial_learning_rate=low, maximal_learning_rate=low * draw(st.floats(1.0, 100.0)),
                step_size=draw(st.integers(1, 10_000)),
                mode=draw(st.sampled_from(["triangular", "triangular2", "exp_range"])),
                gamma=draw(st.floats(0.9, 1.0)))


def _length(kwargs):
    """The steps over which a schedule changes, to draw steps around it."""
    ends = [kwargs.get("warmup_steps", 0) + kwargs.get(key, 0)
            for key in ("decay_steps", "first_decay_steps")]
    ends += [kwargs.get("warmup_steps", 0) + max(kwargs.get("boundaries") or [0])]
    ends += [kwargs.get("total_steps", 0), 2 * kwargs.get("step_size", 0)]
    return max(ends) + 1


def _peak(kwargs):
    return max(kwargs.get(key, 0.0) for key in ("learning_rate", "end_learning_rate",
                                                  "max_learning_rate", "maximal_learning_rate"))


# (class, strategy of its valid arguments, closed form)
SCHEDULES = [
    (schedules.WarmupCosineDecay, cosine_args(), closed_cosine),
    (schedules.WarmupCosineRestarts, restarts_args(), closed_restarts),
    (schedules.StepDecay, step_args(), closed_step),
    (schedules.WarmupExponentialDecay, exponential_args(), closed_exponential),
    (schedules.WarmupPolynomialDecay, polynomial_args(), closed_polynomial),
    (schedules.OneCycle, one_cycle_args(), closed_one_cycle),
    (schedules.CyclicalLearningRate, cyclical_args(), closed_cyclical),
]
SCHEDULE_IDS = [cls.__name__ for cls, _, _ in SCHEDULES]


def test_every_schedule_is_fuzzed():
    base = keras.optimizers.schedules.LearningRateSchedule
    public = {getattr(schedules, name) for name in schedules.__all__}
    classes = {obj for obj in public if isinstance(obj, type) and issubclass(obj, base)}
    classes.discard(schedules.WarmupSchedule)  # abstract: `_decay` is the subclass's
    assert classes == {cls for cls, _, _ in SCHEDULES}


def _steps(length):
    """Steps drawn around the schedule (integers and quarter steps, exact in float32), and
    far past it."""
    return st.lists(st.one_of(st.integers(0, 3 * length), st.integers(0, 1_000_000),
                              st.integers(0, 12 * length).map(lambda q: q / 4),
                              st.integers(0, 4_000_000).map(lambda q: q / 4)),
                    min_size=1, max_size=8)


def _near_a_restart(kwargs, step):
    """Whether `step` is within float32's resolution of a restart whose position is not
    an integer step (t_mul != 1): there the cycle is ambiguous in float32."""
    if kwargs["t_mul"] == 1.0 or step < kwargs["warmup_steps"]:
        return False
    _, position = restart_cycle(step - kwargs["warmup_steps"], kwargs["first_decay_steps"],
                                kwargs["t_mul"])
    return min(position, 1.0 - position) < 1e-4


@pytest.mark.parametrize(("schedule_cls", "arguments", "closed_form"), SCHEDULES,
                         ids=SCHEDULE_IDS)
@settings(max_examples=60 * SCALE)
@given(data=st.data())
def test_schedule_matches_its_closed_form(schedule_cls, arguments, closed_form, data):
    kwargs = data.draw(arguments, label="kwargs")
    schedule = schedule_cls(**kwargs)
    for step in data.draw(_steps(_length(kwargs)), label="steps"):
        if schedule_cls is schedules.WarmupCosineRestarts and _near_a_restart(kwargs, step):
            continue
        value = float(schedule(step))
        assert math.isfinite(value), f"{schedule_cls.__name__}({kwargs})({step}) = {value}"
        expected = closed_form(step, **kwargs)
        np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-6 * _peak(kwargs),
                                   err_msg=f"{schedule_cls.__name__}({kwargs})({step})")


# Cases Hypothesis found (`thorough` profile), kept so that the default run checks them.
FOUND = [
    # Equal cycles far from 0: the cycle was taken from `step / first_decay_steps` with a
    # slack growing with the step, 0.4 of a cycle here (1.0 instead of 0.146).
    (schedules.WarmupCosineRestarts, dict(learning_rate=1.0, first_decay_steps=1, t_mul=1.0,
                                          m_mul=1.0, alpha=0.0, warmup_steps=0), 401243.75),
    (schedules.WarmupCosineRestarts, dict(learning_rate=0.1, first_decay_steps=7, t_mul=1.0,
                                          m_mul=1.0, alpha=0.0, warmup_steps=0), 999996.75),
    # The position in the cycle from `step / step_size - 2 * cycle`: 1.333496 for 1.333333.
    (schedules.CyclicalLearningRate, dict(initial_learning_rate=1.0, maximal_learning_rate=2.0,
                                          step_size=3, mode="triangular", gamma=1.0), 13277),
    # A phase 2 shorter than one step: the last step was not exactly at the end rate.
    (schedules.OneCycle, dict(max_learning_rate=0.75, total_steps=7, pct_start=0.99,
                              div_factor=1.0, final_div_factor=69.0, anneal_strategy="linear"),
     6),
]


@pytest.mark.parametrize(("schedule_cls", "kwargs", "step"), FOUND,
                         ids=[f"{c.__name__}-{s}" for c, _, s in FOUND])
def test_cases_found_by_fuzzing(schedule_cls, kwargs, step):
    closed_form = {cls: form for cls, _, form in SCHEDULES}[schedule_cls]
    np.testing.assert_allclose(float(schedule_cls(**kwargs)(step)), closed_form(step, **kwargs),
                               rtol=1e-4, atol=1e-6 * _peak(kwargs))


@settings(max_examples=60 * SCALE)
@given(kwargs=one_cycle_args(), start=st.floats(0.0, 1.0), step=st.integers(0, 200_000))
def test_one_cycle_value_matches_its_closed_form(kwargs, start, step):
    peak, end = kwargs["max_learning_rate"], kwargs["max_learning_rate"] / 7.0
    value = float(schedules.one_cycle_value(step, start, peak, end, kwargs["total_steps"],
                                            kwargs["pct_start"], kwargs["anneal_strategy"]))
    expected = closed_one_cycle_curve(step, start, peak, end, kwargs["total_steps"],
                                      kwargs["pct_start"], kwargs["anneal_strategy"])
    np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-6 * max(start, peak))


@given(base_lr=rates, batch_size=st.integers(1, 65536), base=st.integers(1, 65536))
def test_scale_learning_rate_is_linear(base_lr, batch_size, base):
    assert schedules.scale_learning_rate(base_lr, batch_size, base) == pytest.approx(
        base_lr * batch_size / base, rel=1e-12)


# ------------------------------------------------------------------------------------------
# Schedules: invalid arguments.
# ------------------------------------------------------------------------------------------

not_numbers = st.sampled_from(["0.1", None, True, [0.1], float("nan")])
infinite = st.sampled_from([float("inf"), float("-inf")])


def non_positive():
    return st.one_of(st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
                     not_numbers, infinite)


def bad_steps(allow_zero=False):
    """Not a number of steps: negative (or 0), fractional, not a number, infinite."""
    below = st.integers(max_value=-1 if allow_zero else 0)
    fractional = st.floats(-1e6, 1e6).filter(lambda v: not float(v).is_integer())
    return st.one_of(below, fractional, not_numbers, infinite)


def outside(low, high, low_inclusive=True, high_inclusive=True):
    below = st.floats(max_value=low, exclude_max=low_inclusive, allow_nan=False,
                      allow_infinity=True)
    above = st.floats(min_value=high, exclude_min=high_inclusive, allow_nan=False,
                      allow_infinity=True)
    return st.one_of(below, above, not_numbers)


_VALID = {
    schedules.WarmupCosineDecay: dict(learning_rate=0.1, decay_steps=100, warmup_steps=10),
    schedules.WarmupCosineRestarts: dict(learning_rate=0.1, first_decay_steps=10),
    schedules.StepDecay: dict(learning_rate=0.1, boundaries=[10, 20]),
    schedules.WarmupExponentialDecay: dict(learning_rate=0.1, decay_steps=10, decay_rate=0.5),
    schedules.WarmupPolynomialDecay: dict(learning_rate=0.1, decay_steps=100, warmup_steps=10),
    schedules.OneCycle: dict(max_learning_rate=0.1, total_steps=100),
    schedules.CyclicalLearningRate: dict(initial_learning_rate=0.01, maximal_learning_rate=0.1,
                                         step_size=10),
}

# (class, argument, strategy of invalid values); everything else as in `_VALID`.
INVALID = [
    (schedules.WarmupCosineDecay, "learning_rate", non_positive()),
    (schedules.WarmupCosineDecay, "decay_steps", bad_steps()),
    (schedules.WarmupCosineDecay, "warmup_steps", bad_steps(allow_zero=True)),
    (schedules.WarmupCosineDecay, "alpha", outside(0.0, 1.0)),
    (schedules.WarmupCosineRestarts, "learning_rate", non_positive()),
    (schedules.WarmupCosineRestarts, "first_decay_steps", bad_steps()),
    (schedules.WarmupCosineRestarts, "t_mul", outside(1.0, math.inf, high_inclusive=False)),
    (schedules.WarmupCosineRestarts, "m_mul", outside(0.0, 1.0, low_inclusive=False)),
    (schedules.WarmupCosineRestarts, "alpha", outside(0.0, 1.0)),
    (schedules.WarmupCosineRestarts, "warmup_steps", bad_steps(allow_zero=True)),
    (schedules.StepDecay, "learning_rate", non_positive()),
    (schedules.StepDecay, "gamma", non_positive()),
    (schedules.StepDecay, "warmup_steps", bad_steps(allow_zero=True)),
    (schedules.WarmupExponentialDecay, "learning_rate", non_positive()),
    (schedules.WarmupExponentialDecay, "decay_steps", bad_steps()),
    (schedules.WarmupExponentialDecay, "decay_rate", outside(0.0, 1.0, low_inclusive=False)),
    (schedules.WarmupExponentialDecay, "staircase", st.sampled_from([0, 1, "yes", None])),
    (schedules.WarmupExponentialDecay, "warmup_steps", bad_steps(allow_zero=True)),
    (schedules.WarmupPolynomialDecay, "learning_rate", non_positive()),
    (schedules.WarmupPolynomialDecay, "decay_steps", bad_steps()),
    (schedules.WarmupPolynomialDecay, "end_learning_rate",
     st.one_of(st.floats(max_value=0.0, exclude_max=True), not_numbers, infinite)),
    (schedules.WarmupPolynomialDecay, "power", non_positive()),
    (schedules.WarmupPolynomialDecay, "warmup_steps", bad_steps(allow_zero=True)),
    (schedules.OneCycle, "max_learning_rate", non_positive()),
    (schedules.OneCycle, "total_steps", bad_steps()),
    (schedules.OneCycle, "pct_start", outside(0.0, 1.0, False, False)),
    (schedules.OneCycle, "div_factor", non_positive()),
    (schedules.OneCycle, "final_div_factor", non_positive()),
    (schedules.OneCycle, "anneal_strategy", st.text(max_size=8).filter(
        lambda s: s not in ("cos", "linear"))),
    (schedules.CyclicalLearningRate, "initial_learning_rate", non_positive()),
    (schedules.CyclicalLearningRate, "maximal_learning_rate",
     st.one_of(st.floats(max_value=0.01, exclude_max=True), not_numbers, infinite)),
    (schedules.CyclicalLearningRate, "step_size", bad_steps()),
    (schedules.CyclicalLearningRate, "mode", st.text(max_size=12).filter(
        lambda s: s not in ("triangular", "triangular2", "exp_range"))),
    (schedules.CyclicalLearningRate, "gamma", outside(0.0, 1.0, low_inclusive=False)),
]


def assert_names(error, arg, value):
    """The message names the argument and shows the value (`repr`), Keras-style."""
    message = str(error.value)
    assert f"`{arg}`" in message, message
    assert f"{arg}={value!r}" in message, message


def test_every_schedule_argument_is_fuzzed():
    for cls in _VALID:
        arguments = set(inspect.signature(cls).parameters) - {"name"}
        covered = {arg for c, arg, _ in INVALID if c is cls}
        assert covered == arguments - {"boundaries"}, cls.__name__  # boundaries: below


@pytest.mark.parametrize(("schedule_cls", "arg", "values"), INVALID,
                         ids=[f"{c.__name__}-{a}" for c, a, _ in INVALID])
@settings(max_examples=15 * SCALE)
@given(data=st.data())
def test_schedule_rejects_invalid_arguments(schedule_cls, arg, values, data):
    value = data.draw(values, label=arg)
    with pytest.raises(ValueError) as error:
        schedule_cls(**{**_VALID[schedule_cls], arg: value})
    assert_names(error, arg, value)


@given(boundaries=st.one_of(
    st.lists(st.integers(1, 100), min_size=2).filter(
        lambda b: any(x >= y for x, y in zip(b, b[1:], strict=False))),
    st.lists(st.integers(max_value=0), min_size=1, max_size=3),
    st.sampled_from([5, "10", None, [1.5], [True]])))
def test_step_decay_rejects_invalid_boundaries(boundaries):
    with pytest.raises(ValueError, match=r"`boundaries(\[\d+\])?`") as error:
        schedules.StepDecay(0.1, boundaries=boundaries)
    assert "Received: boundaries" in str(error.value)


@pytest.mark.parametrize("schedule_cls", [schedules.WarmupCosineDecay,
                                          schedules.WarmupPolynomialDecay])
@given(decay_steps=st.integers(1, 10_000), extra=st.integers(1, 10_000))
def test_warmup_longer_than_the_decay_is_refused(schedule_cls, decay_steps, extra):
    warmup_steps = decay_steps + extra
    with pytest.raises(ValueError) as error:
        schedule_cls(0.1, decay_steps=decay_steps, warmup_steps=warmup_steps)
    message = str(error.value)
    assert "`warmup_steps`" in message and "`decay_steps`" in message, message
    assert f"warmup_steps={warmup_steps}, decay_steps={decay_steps}" in message, message
    # The boundary itself (as long a warm-up as the decay) is valid.
    assert float(schedule_cls(0.1, decay_steps=decay_steps, warmup_steps=decay_steps)(
        decay_steps)) == pytest.approx(0.1)


def test_the_issue_example_is_refused():
    with pytest.raises(ValueError, match=r"warmup_steps=50, decay_steps=10"):
        schedules.WarmupCosineDecay(0.1, warmup_steps=50, decay_steps=10)


@given(value=st.one_of(not_numbers, infinite), which=st.sampled_from(["start", "peak", "end"]))
def test_one_cycle_value_rejects_invalid_values(value, which):
    values = {**dict(start=0.1, peak=1.0, end=0.01), which: value}
    with pytest.raises(ValueError) as error:
        schedules.one_cycle_value(3, total_steps=10, **values)
    assert_names(error, which, value)


# ------------------------------------------------------------------------------------------
# Builders.
# ------------------------------------------------------------------------------------------

BUILDERS = {"mobilenet_v1": models.mobilenet_v1, "mobilenet_v2": models.mobilenet_v2,
            "plain_cnn": models.plain_cnn}
sides = st.one_of(st.integers(8, 64), st.sampled_from([96, 128, 160, 224]), st.integers(8, 224))


@st.composite
def builder_args(draw):
    name = draw(st.sampled_from(sorted(BUILDERS)))
    kwargs = dict(input_shape=(draw(sides), draw(sides), draw(st.sampled_from([1, 3]))),
                  num_classes=draw(st.integers(1, 20)),
                  alpha=draw(st.one_of(st.sampled_from([0.25, 0.5, 0.75, 1.0]),
                                       st.floats(0.01, 1.0))))
    if name != "mobilenet_v2":  # MobileNetV2 has no depthwise multiplier
        kwargs["depth_multiplier"] = draw(st.integers(1, 3))
    return name, kwargs


@examples(12)
@given(args=builder_args())
@example(args=("mobilenet_v2", dict(input_shape=(224, 224, 3), num_classes=10, alpha=1.0)))
@example(args=("mobilenet_v1", dict(input_shape=(8, 8, 1), num_classes=2, alpha=0.25,
                                    depth_multiplier=2)))
@example(args=("plain_cnn", dict(input_shape=(224, 8, 3), num_classes=1, alpha=0.01,
                                 depth_multiplier=1)))
def test_builders_build_for_valid_arguments(args):
    name, kwargs = args
    keras.backend.clear_session()
    model = BUILDERS[name](**kwargs)
    assert tuple(model.output_shape) == (None, kwargs["num_classes"])
    assert tuple(model.input_shape) == (None, *kwargs["input_shape"])


bad_shapes = st.one_of(
    st.tuples(sides, sides),  # rank 2
    st.tuples(sides, sides, st.just(3), st.just(1)),  # rank 4
    st.tuples(st.integers(max_value=0), sides, st.sampled_from([1, 3])),
    st.tuples(sides, sides, st.integers(max_value=0)),
    st.tuples(sides, sides, st.none()),
    st.tuples(st.floats(8.5, 9.5), sides, st.just(3)),
    st.sampled_from(["224x224", None, 224]))

INVALID_BUILDER_ARGS = [
    ("alpha", non_positive()),
    ("depth_multiplier", st.one_of(st.integers(max_value=0), st.floats(1.1, 3.9),
                                   st.sampled_from([True, "2", None]))),
    ("input_shape", bad_shapes),
    ("num_classes", st.one_of(st.integers(max_value=0), st.sampled_from([2.5, "10", None]))),
]


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize(("arg", "values"), INVALID_BUILDER_ARGS,
                         ids=[a for a, _ in INVALID_BUILDER_ARGS])
@settings(max_examples=10 * SCALE)
@given(data=st.data())
def test_builders_reject_invalid_arguments(name, arg, values, data):
    if name == "mobilenet_v2" and arg == "depth_multiplier":
        pytest.skip("mobilenet_v2 has no depth_multiplier")
    value = data.draw(values, label=arg)
    kwargs = {**dict(input_shape=(8, 8, 1), num_classes=3, alpha=0.25), arg: value}
    with pytest.raises(ValueError) as error:
        BUILDERS[name](**kwargs)
    assert f"`{arg}`" in str(error.value), str(error.value)
    assert "Received" in str(error.value), str(error.value)


# ------------------------------------------------------------------------------------------
# Pruning.
# ------------------------------------------------------------------------------------------


def tiny_dense():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(12, name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(10, name="out")(x))


INVALID_PRUNE_ARGS = [
    ("target_sparsity", outside(0.0, 1.0, False, False)),
    ("begin_step", bad_steps(allow_zero=True)),
    ("end_step", st.one_of(st.integers(max_value=2), st.floats(3.5, 9.5).filter(
        lambda v: not v.is_integer()), st.sampled_from(["8", True, float("nan")]))),
    ("frequency", bad_steps()),
    ("schedule", st.text(max_size=10).filter(lambda s: s not in ("polynomial", "constant"))),
    ("structure", st.text(max_size=10).filter(lambda s: s not in ("unstructured", "2:4"))),
]


@pytest.mark.parametrize(("arg", "values"), INVALID_PRUNE_ARGS,
                         ids=[a for a, _ in INVALID_PRUNE_ARGS])
@settings(max_examples=15 * SCALE)
@given(data=st.data())
def test_prune_rejects_invalid_arguments(arg, values, data):
    value = data.draw(values, label=arg)
    kwargs = {**dict(target_sparsity=0.5, begin_step=2, end_step=8, frequency=2,
                     schedule="polynomial"), arg: value}
    with pytest.raises(ValueError) as error:
        compression.prune(tiny_dense(), **kwargs)
    assert f"`{arg}`" in str(error.value), str(error.value)
    assert "Received" in str(error.value), str(error.value)


@given(log_dir=st.one_of(st.just(""), st.integers(), st.sampled_from([b"logs", ["logs"]])))
def test_pruning_callback_rejects_invalid_log_dir(log_dir):
    with pytest.raises(ValueError) as error:
        compression.PruningCallback(log_dir=log_dir)
    assert_names(error, "log_dir", log_dir)


@st.composite
def prune_args(draw):
    schedule = draw(st.sampled_from(["polynomial", "constant"]))
    begin = draw(st.integers(0, 2))
    frequency = draw(st.integers(1, 2))
    if schedule == "polynomial":
        end = begin + frequency * draw(st.integers(1, 2))
    else:
        end = draw(st.one_of(st.none(), st.integers(begin + 1, begin + 4)))
    return dict(target_sparsity=draw(st.floats(0.05, 0.95)), begin_step=begin, end_step=end,
                frequency=frequency, schedule=schedule)


@examples(8)
@given(kwargs=prune_args())
def test_prune_reaches_the_target_sparsity(kwargs):
    keras.backend.clear_session()
    pruned = compression.prune(tiny_dense(), **kwargs)
    pruned.compile(keras.optimizers.SGD(0.01), "mse", run_eagerly=True)
    # Enough batches (of one sample) to pass the last mask update.
    last_update = kwargs["end_step"] or kwargs["begin_step"] + kwargs["frequency"]
    steps = last_update + kwargs["frequency"] + 1
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps, 6)).astype("float32")
    y = rng.normal(size=(steps, 10)).astype("float32")
    pruned.fit(x, y, batch_size=1, epochs=1, verbose=0,
               callbacks=[compression.PruningCallback()])
    report = compression.sparsity_report(compression.strip_pruning(pruned))
    rows = [row for row in report.layers if row.weight == "kernel"]
    assert {row.layer for row in rows} == {"hidden", "out"}
    for row in rows:
        # A mask keeps round(size * (1 - target)) weights (at least one).
        assert abs(row.sparsity - kwargs["target_sparsity"]) <= 1.0 / row.size + 1e-9, (
            row, kwargs)


# ------------------------------------------------------------------------------------------
# Export options.
# ------------------------------------------------------------------------------------------


def _no_conversion(*args, **kwargs):
    raise AssertionError("the conversion started before the options were checked")


INVALID_EXPORT_ARGS = [
    ("quantization", st.one_of(st.text(max_size=10).filter(
        lambda s: s not in QUANTIZATION_MODES), st.sampled_from([None, 8, "INT8", "fp16"]))),
    ("calibration_steps", bad_steps()),
]


@pytest.mark.parametrize(("arg", "values"), INVALID_EXPORT_ARGS,
                         ids=[a for a, _ in INVALID_EXPORT_ARGS])
@settings(max_examples=20 * SCALE)
@given(data=st.data())
def test_export_rejects_invalid_options_before_converting(arg, values, data):
    value = data.draw(values, label=arg)
    with tempfile.TemporaryDirectory() as folder, \
            mock.patch.object(tflite_module, "_convert", _no_conversion), \
            pytest.raises(ValueError) as error:
        export_tflite(tiny_dense(), os.path.join(folder, "m.tflite"), **{arg: value})
    assert_names(error, arg, value)


@settings(max_examples=10 * SCALE)
@given(quantization=st.sampled_from(["int8", "int8_full"]),
       data=st.one_of(st.none(), st.sampled_from([(4, 5), (4, 6, 1), (4, 3, 2)])))
def test_int8_export_checks_representative_data_before_converting(quantization, data):
    representative = None if data is None else np.zeros(data, "float32")
    with tempfile.TemporaryDirectory() as folder, \
            mock.patch.object(tflite_module, "_convert", _no_conversion), \
            pytest.raises(ValueError, match="`representative_data`"):
        export_tflite(tiny_dense(), os.path.join(folder, "m.tflite"), quantization=quantization,
                      representative_data=representative, calibration_steps=2)


@settings(max_examples=10 * SCALE)
@given(quantization=st.sampled_from(QUANTIZATION_MODES), calibration_steps=st.integers(1, 50))
def test_valid_export_options_reach_the_converter(quantization, calibration_steps):
    """Every valid combination goes through to the converter with its mode (the conversion
    itself is replaced: the real one is the next test's)."""
    seen = types.SimpleNamespace(quantization=None)

    def fake_convert(model, mode, samples):
        seen.quantization = mode
        return b"TFL3"

    representative = np.zeros((8, 6), "float32")
    with tempfile.TemporaryDirectory() as folder, \
            mock.patch.object(tflite_module, "_convert", fake_convert):
        path = os.path.join(folder, "m.tflite")
        kwargs = {}
        if quantization in ("int8", "int8_full"):
            kwargs["representative_data"] = representative
        result = export_tflite(tiny_dense(), path, quantization=quantization,
                               calibration_steps=calibration_steps, **kwargs)
        assert seen.quantization == quantization == result.quantization
        assert os.path.getsize(path) == result.size_bytes == 4


@settings(max_examples=2, derandomize=True)
@given(quantization=st.sampled_from(["dynamic", "int8"]))
def test_valid_export_converts(quantization):
    """A real conversion for a couple of drawn modes (slow: a few seconds each)."""
    from keras_dnnopt.export import TFLiteModel

    model = tiny_dense()
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    with tempfile.TemporaryDirectory() as folder:
        result = export_tflite(model, os.path.join(folder, "m.tflite"), quantization=quantization,
                               representative_data=x if quantization == "int8" else None,
                               calibration_steps=8)
        out = TFLiteModel(result.path).predict(x)
    assert out.shape == (8, 10)
    np.testing.assert_allclose(out, model.predict(x, verbose=0), atol=0.5)
