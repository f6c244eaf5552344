"""Tests of keras_dnnopt.schedules against independent NumPy (float64) closed forms.

Parametrized over `(schedule_cls, kwargs, numpy_reference)` the way timm's
tests/test_scheduler.py parametrizes its schedulers. The references below are written
from the papers' formulas (and PyTorch's `OneCycleLR` loop for 1cycle), not imported
from the package. Every case is evaluated at every integer step from 0 to past its end
(so every warm-up, decay, boundary and cycle edge and its neighbours), at explicitly
listed edges, at fractional steps and far past the end.
"""

import math
from fractions import Fraction

import numpy as np
import pytest

from keras_dnnopt.backend import USING_TF_KERAS, keras, tf
from keras_dnnopt.schedules import (
    CyclicalLearningRate,
    OneCycle,
    StepDecay,
    WarmupCosineDecay,
    WarmupCosineRestarts,
    WarmupExponentialDecay,
    WarmupPolynomialDecay,
    WarmupSchedule,
    one_cycle_value,
    scale_learning_rate,
)
from tests.helpers import assert_config_round_trip, save_and_load

TOL = {"rtol": 1e-6, "atol": 1e-6}


# --------------------------------------------------------------------------------------
# Independent NumPy float64 references.
# --------------------------------------------------------------------------------------


def _with_warmup(step, learning_rate, warmup_steps, decay):
    if step < warmup_steps:
        return learning_rate * step / warmup_steps
    return decay(step - warmup_steps)


def ref_cosine(step, learning_rate, decay_steps, warmup_steps=0, alpha=0.0, name=None):
    def decay(s):
        s = min(s, decay_steps)
        return learning_rate * (alpha + (1 - alpha) * 0.5 * (1 + np.cos(np.pi * s / decay_steps)))

    return _with_warmup(step, learning_rate, warmup_steps, decay)


def ref_restarts(step, learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0,
                 warmup_steps=0, name=None):
    # Walk the cycles one by one in exact rational arithmetic (t_mul read as the decimal
    # it was written as), so that a restart on an integer step is exact.
    def decay(s):
        s = Fraction(s)
        i, start, length = 0, Fraction(0), Fraction(first_decay_steps)
        while s >= start + length:
            start, length, i = start + length, length * Fraction(repr(t_mul)), i + 1
        f = float((s - start) / length)
        return learning_rate * (alpha + (1 - alpha) * m_mul**i * 0.5 * (1 + np.cos(np.pi * f)))

    return _with_warmup(step, learning_rate, warmup_steps, decay)


def ref_step(step, learning_rate, boundaries, gamma=0.1, warmup_steps=0, name=None):
    return _with_warmup(step, learning_rate, warmup_steps,
                        lambda s: learning_rate * gamma ** sum(s >= b for b in boundaries))


def ref_exponential(step, learning_rate, decay_steps, decay_rate, staircase=False,
                    warmup_steps=0, name=None):
    def decay(s):
        exponent = np.floor(s / decay_steps) if staircase else s / decay_steps
        return learning_rate * decay_rate**exponent

    return _with_warmup(step, learning_rate, warmup_steps, decay)


def ref_polynomial(step, learning_rate, decay_steps, end_learning_rate=0.0, power=1.0,
                   warmup_steps=0, name=None):
    def decay(s):
        s = min(s, decay_steps)
        return (learning_rate - end_learning_rate) * (1 - s / decay_steps) ** power + (
            end_learning_rate)

    return _with_warmup(step, learning_rate, warmup_steps, decay)


def _torch_anneal(strategy, start, end, pct):
    if strategy == "cos":
        return end + (start - end) / 2.0 * (np.cos(np.pi * pct) + 1)
    return (end - start) * pct + start


def ref_one_cycle_curve(step, start, peak, end, total_steps, pct_start=0.3,
                        anneal_strategy="cos"):
    # PyTorch's OneCycleLR.get_lr (three_phase=False), with steps past the end held.
    step = min(step, total_steps - 1)
    phases = [
        {"end_step": float(pct_start * total_steps) - 1, "start": start, "end": peak},
        {"end_step": total_steps - 1, "start": peak, "end": end},
    ]
    start_step = 0
    for i, phase in enumerate(phases):
        end_step = phase["end_step"]
        if step <= end_step or i == len(phases) - 1:
            pct = (step - start_step) / (end_step - start_step)
            return _torch_anneal(anneal_strategy, phase["start"], phase["end"], pct)
        start_step = phase["end_step"]
    raise AssertionError("unreachable")


def ref_one_cycle(step, max_learning_rate, total_steps, pct_start=0.3, div_factor=25.0,
                  final_div_factor=1e4, anneal_strategy="cos", name=None):
    initial = max_learning_rate / div_factor
    return ref_one_cycle_curve(step, initial, max_learning_rate, initial / final_div_factor,
                               total_steps, pct_start, anneal_strategy)


def ref_cyclical(step, initial_learning_rate, maximal_learning_rate, step_size,
                 mode="triangular", gamma=1.0, name=None):
    cycle = np.floor(1 + step / (2 * step_size))
    x = abs(step / step_size - 2 * cycle + 1)
    scale = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1),
             "exp_range": gamma**step}[mode]
    return initial_learning_rate + (maximal_learning_rate - initial_learning_rate) * max(
        0.0, 1 - x) * scale


# --------------------------------------------------------------------------------------
# Cases: (schedule_cls, kwargs, numpy_reference, horizon, edges).
# `horizon`: every integer step in [0, horizon) is checked; it reaches past the end.
# `edges`: the boundaries of the case, listed so that the intent is explicit.
# --------------------------------------------------------------------------------------

CASES = [
    (WarmupCosineDecay, dict(learning_rate=0.1, decay_steps=100), ref_cosine, 130,
     [0, 1, 99, 100, 101]),
    (WarmupCosineDecay, dict(learning_rate=0.1, decay_steps=100, warmup_steps=10, alpha=0.1),
     ref_cosine, 140, [0, 9, 10, 11, 109, 110, 111]),
    (WarmupCosineDecay, dict(learning_rate=1.0, decay_steps=7, warmup_steps=1, alpha=1.0),
     ref_cosine, 20, [0, 1, 2, 7, 8, 9]),
    (WarmupCosineRestarts, dict(learning_rate=0.1, first_decay_steps=10), ref_restarts, 160,
     [0, 9, 10, 11, 29, 30, 31, 69, 70, 71, 149, 150, 151]),
    (WarmupCosineRestarts, dict(learning_rate=0.1, first_decay_steps=10, t_mul=1.0, m_mul=0.5,
                                alpha=0.1, warmup_steps=5),
     ref_restarts, 60, [0, 4, 5, 6, 14, 15, 16, 24, 25, 26]),
    (WarmupCosineRestarts, dict(learning_rate=0.5, first_decay_steps=8, t_mul=1.5, m_mul=0.8,
                                warmup_steps=3),
     ref_restarts, 140, [2, 3, 4, 10, 11, 12, 22, 23, 24, 40, 41, 42, 67, 68, 69, 107, 108]),
    (WarmupCosineRestarts, dict(learning_rate=1.0, first_decay_steps=10, t_mul=1.1),
     ref_restarts, 60, [9, 10, 11, 20, 21, 22, 33, 34]),
    (WarmupCosineRestarts, dict(learning_rate=1.0, first_decay_steps=7, t_mul=3.0, alpha=0.05),
     ref_restarts, 300, [6, 7, 8, 27, 28, 29, 90, 91, 92, 279, 280, 281]),
    (StepDecay, dict(learning_rate=0.1, boundaries=[30, 60, 80]), ref_step, 100,
     [0, 29, 30, 31, 59, 60, 61, 79, 80, 81]),
    (StepDecay, dict(learning_rate=0.4, boundaries=[1, 5], gamma=0.5, warmup_steps=4),
     ref_step, 20, [0, 3, 4, 5, 6, 8, 9, 10]),
    (StepDecay, dict(learning_rate=0.2, boundaries=[], warmup_steps=3), ref_step, 10,
     [0, 2, 3, 4]),
    (WarmupExponentialDecay, dict(learning_rate=0.1, decay_steps=10, decay_rate=0.5),
     ref_exponential, 60, [0, 9, 10, 11]),
    (WarmupExponentialDecay, dict(learning_rate=0.1, decay_steps=10, decay_rate=0.96,
                                  staircase=True, warmup_steps=5),
     ref_exponential, 60, [0, 4, 5, 6, 14, 15, 16, 24, 25, 26]),
    (WarmupPolynomialDecay, dict(learning_rate=0.1, decay_steps=50), ref_polynomial, 70,
     [0, 49, 50, 51]),
    (WarmupPolynomialDecay, dict(learning_rate=0.1, decay_steps=50, end_learning_rate=0.01,
                                 power=0.9, warmup_steps=8),
     ref_polynomial, 80, [0, 7, 8, 9, 57, 58, 59]),
    (WarmupPolynomialDecay, dict(learning_rate=0.05, decay_steps=20, end_learning_rate=0.1,
                                 power=2.0),
     ref_polynomial, 30, [0, 19, 20, 21]),
    (OneCycle, dict(max_learning_rate=0.1, total_steps=100), ref_one_cycle, 120,
     [0, 28, 29, 30, 98, 99, 100, 101]),
    (OneCycle, dict(max_learning_rate=1.0, total_steps=50, pct_start=0.25, div_factor=10.0,
                    final_div_factor=100.0, anneal_strategy="linear"),
     ref_one_cycle, 60, [0, 11, 11.5, 12, 48, 49, 50]),
    (OneCycle, dict(max_learning_rate=0.01, total_steps=10, pct_start=0.5), ref_one_cycle, 15,
     [0, 3, 4, 5, 8, 9, 10]),
    (CyclicalLearningRate, dict(initial_learning_rate=0.01, maximal_learning_rate=0.1,
                                step_size=10), ref_cyclical, 70,
     [0, 9, 10, 11, 19, 20, 21, 29, 30, 31, 39, 40, 41]),
    (CyclicalLearningRate, dict(initial_learning_rate=0.001, maximal_learning_rate=0.006,
                                step_size=5, mode="triangular2"), ref_cyclical, 50,
     [0, 4, 5, 6, 9, 10, 11, 14, 15, 16, 19, 20, 21]),
    (CyclicalLearningRate, dict(initial_learning_rate=0.01, maximal_learning_rate=0.1,
                                step_size=8, mode="exp_range", gamma=0.99), ref_cyclical, 60,
     [0, 7, 8, 9, 15, 16, 17, 23, 24, 25]),
    (CyclicalLearningRate, dict(initial_learning_rate=0.05, maximal_learning_rate=0.05,
                                step_size=3), ref_cyclical, 10, [0, 3, 6]),
]
CASE_IDS = [f"{cls.__name__}-{i}" for i, (cls, *_rest) in enumerate(CASES)]


PERIODIC = (WarmupCosineRestarts, CyclicalLearningRate)


def _steps(horizon, edges, periodic=False):
    integer = set(range(horizon)) | {int(e) for e in edges if float(e).is_integer()}
    fractional = {0.5, 1.5, horizon / 3 + 0.25} | {e for e in edges if not float(e).is_integer()}
    # Far past the end: a settled schedule must sit at its final value. (A periodic one
    # is still cycling there; float32 keeps its phase to ~1e-6 only for some 1e5 steps.)
    far = {horizon * 10} if periodic else {horizon * 10, 10**6}
    return sorted(integer | fractional | far)


def _evaluate(schedule, steps):
    return np.array([float(schedule(tf.constant(s, tf.float32))) for s in steps])


@pytest.mark.parametrize(("schedule_cls", "kwargs", "reference", "horizon", "edges"), CASES,
                         ids=CASE_IDS)
def test_matches_numpy_reference(schedule_cls, kwargs, reference, horizon, edges):
    schedule = schedule_cls(**kwargs)
    steps = _steps(horizon, edges, periodic=issubclass(schedule_cls, PERIODIC))
    expected = np.array([reference(float(s), **kwargs) for s in steps])
    np.testing.assert_allclose(_evaluate(schedule, steps), expected, **TOL)


@pytest.mark.parametrize(("schedule_cls", "kwargs", "reference", "horizon", "edges"), CASES,
                         ids=CASE_IDS)
def test_step_types_and_dtype(schedule_cls, kwargs, reference, horizon, edges):
    schedule = schedule_cls(**kwargs)
    step = max(int(e) for e in edges)
    expected = reference(float(step), **kwargs)
    candidates = [
        step,
        np.int64(step),
        tf.constant(step, tf.int32),
        tf.constant(step, tf.int64),
        tf.constant(step, tf.float64),
        tf.Variable(step, dtype=tf.int64),
        tf.Variable(float(step), dtype=tf.float32),
    ]
    for candidate in candidates:
        value = schedule(candidate)
        assert value.dtype == tf.float32
        assert value.shape == ()
        np.testing.assert_allclose(float(value), expected, **TOL)
    graph_fn = tf.function(schedule)
    np.testing.assert_allclose(float(graph_fn(tf.constant(step, tf.int64))), expected, **TOL)


@pytest.mark.parametrize(("schedule_cls", "kwargs", "reference", "horizon", "edges"), CASES,
                         ids=CASE_IDS)
def test_config_round_trip(schedule_cls, kwargs, reference, horizon, edges):
    schedule = schedule_cls(**kwargs, name="my_schedule")
    config = schedule.get_config()
    assert config["name"] == "my_schedule"
    assert {k: config[k] for k in kwargs} == kwargs
    clone = assert_config_round_trip(schedule)
    steps = _steps(horizon, edges)[::7]
    np.testing.assert_allclose(_evaluate(clone, steps), _evaluate(schedule, steps), rtol=0,
                               atol=0)
    revived = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(
        schedule))
    assert type(revived) is schedule_cls and revived.get_config() == config


def test_warmup_schedules_share_the_base():
    for cls in (WarmupCosineDecay, WarmupCosineRestarts, StepDecay, WarmupExponentialDecay,
                WarmupPolynomialDecay):
        assert issubclass(cls, WarmupSchedule)
    for cls in (OneCycle, CyclicalLearningRate):
        assert issubclass(cls, keras.optimizers.schedules.LearningRateSchedule)


def test_keyword_names_and_defaults():
    schedule = WarmupCosineDecay(learning_rate=0.1, decay_steps=10, warmup_steps=2, alpha=0.5)
    assert schedule.get_config() == {"learning_rate": 0.1, "decay_steps": 10, "warmup_steps": 2,
                                     "alpha": 0.5, "name": None}
    assert WarmupCosineRestarts(0.1, 10).get_config() == {
        "learning_rate": 0.1, "first_decay_steps": 10, "t_mul": 2.0, "m_mul": 1.0,
        "alpha": 0.0, "warmup_steps": 0, "name": None}
    assert OneCycle(0.1, 100).get_config() == {
        "max_learning_rate": 0.1, "total_steps": 100, "pct_start": 0.3, "div_factor": 25.0,
        "final_div_factor": 1e4, "anneal_strategy": "cos", "name": None}
    # An integral float step count (e.g. `0.5 * total`) is accepted as an int.
    assert WarmupCosineDecay(0.1, decay_steps=100.0).decay_steps == 100


# --------------------------------------------------------------------------------------
# Agreement with Keras' own schedules where they define the same curve.
# --------------------------------------------------------------------------------------


def test_cosine_matches_keras_cosine_decay_with_warmup():
    keras_schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=40, alpha=0.2, warmup_target=0.3, warmup_steps=10)
    ours = WarmupCosineDecay(0.3, decay_steps=40, warmup_steps=10, alpha=0.2)
    steps = list(range(0, 70))
    np.testing.assert_allclose(_evaluate(ours, steps),
                               [float(keras_schedule(s)) for s in steps], **TOL)


def test_restarts_match_keras_cosine_decay_restarts():
    keras_schedule = keras.optimizers.schedules.CosineDecayRestarts(
        0.2, first_decay_steps=6, t_mul=2.0, m_mul=0.7, alpha=0.1)
    ours = WarmupCosineRestarts(0.2, first_decay_steps=6, t_mul=2.0, m_mul=0.7, alpha=0.1)
    steps = list(range(0, 100))
    np.testing.assert_allclose(_evaluate(ours, steps),
                               [float(keras_schedule(s)) for s in steps], **TOL)


def test_restart_on_exact_step_starts_new_cycle():
    # Keras' float32 log formula puts step 21 at the end of cycle 1 (lr 0); the cycle
    # starts are 0, 10, 21 exactly, so step 21 is a restart (lr 1).
    np.testing.assert_allclose(float(WarmupCosineRestarts(1.0, 10, t_mul=1.1)(21)), 1.0, **TOL)


def test_polynomial_matches_keras_polynomial_decay():
    keras_schedule = keras.optimizers.schedules.PolynomialDecay(
        0.1, decay_steps=30, end_learning_rate=0.001, power=0.9)
    ours = WarmupPolynomialDecay(0.1, decay_steps=30, end_learning_rate=0.001, power=0.9)
    steps = list(range(0, 40))
    np.testing.assert_allclose(_evaluate(ours, steps),
                               [float(keras_schedule(s)) for s in steps], **TOL)


# --------------------------------------------------------------------------------------
# Hand-computed values (a check on the references themselves).
# --------------------------------------------------------------------------------------


def test_hand_computed_values():
    cosine = WarmupCosineDecay(0.1, decay_steps=100, warmup_steps=10)
    assert float(cosine(0)) == 0.0
    np.testing.assert_allclose([float(cosine(s)) for s in (5, 10, 60, 110, 10**5)],
                               [0.05, 0.1, 0.05, 0.0, 0.0], **TOL)
    np.testing.assert_allclose(
        [float(StepDecay(1.0, [2, 4], gamma=0.5)(s)) for s in (1, 2, 3, 4, 9)],
        [1.0, 0.5, 0.5, 0.25, 0.25], **TOL)
    # PyTorch OneCycleLR(max_lr=1, total_steps=10, pct_start=0.5, div_factor=4,
    # final_div_factor=2, anneal_strategy="linear"): 0.25 -> 1.0 over steps 0..4,
    # then 1.0 -> 0.125 over steps 4..9.
    one_cycle = OneCycle(1.0, 10, pct_start=0.5, div_factor=4.0, final_div_factor=2.0,
                         anneal_strategy="linear")
    np.testing.assert_allclose([float(one_cycle(s)) for s in (0, 2, 4, 9, 50)],
                               [0.25, 0.625, 1.0, 0.125, 0.125], **TOL)
    clr = CyclicalLearningRate(0.001, 0.101, step_size=2, mode="triangular2")
    np.testing.assert_allclose([float(clr(s)) for s in (0, 1, 2, 4, 6, 10)],
                               [0.001, 0.051, 0.101, 0.001, 0.051, 0.026], **TOL)


# --------------------------------------------------------------------------------------
# one_cycle_value, the public helper shared with the 1cycle momentum callback.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("anneal_strategy", ["cos", "linear"])
def test_one_cycle_value_cycles_momentum_inversely(anneal_strategy):
    total_steps, pct_start = 40, 0.4
    steps = list(range(0, 50)) + [14.5, 15.5]
    values = [float(one_cycle_value(s, 0.95, 0.85, 0.95, total_steps, pct_start,
                                    anneal_strategy)) for s in steps]
    expected = [ref_one_cycle_curve(s, 0.95, 0.85, 0.95, total_steps, pct_start,
                                    anneal_strategy) for s in steps]
    np.testing.assert_allclose(values, expected, **TOL)
    assert min(values) == pytest.approx(0.85, abs=1e-6)  # the low point at step 15
    np.testing.assert_allclose(values[15], 0.85, **TOL)
    # OneCycle is the same curve with (initial, max, min) learning rates.
    schedule = OneCycle(2.5, total_steps, pct_start, div_factor=25.0, final_div_factor=10.0,
                        anneal_strategy=anneal_strategy)
    np.testing.assert_allclose(
        [float(schedule(s)) for s in steps],
        [float(one_cycle_value(s, 0.1, 2.5, 0.01, total_steps, pct_start, anneal_strategy))
         for s in steps], **TOL)


def test_one_cycle_value_accepts_tensors_and_validates():
    value = one_cycle_value(tf.Variable(3, dtype=tf.int64), 0.0, 1.0, 0.0, total_steps=11,
                            pct_start=0.5, anneal_strategy="linear")
    assert value.dtype == tf.float32
    np.testing.assert_allclose(float(value), 3 / 4.5, **TOL)
    with pytest.raises(ValueError, match="Argument `anneal_strategy` must be one of"):
        one_cycle_value(0, 0.95, 0.85, 0.95, 100, anneal_strategy="cosine")
    with pytest.raises(ValueError, match="Argument `total_steps` must be"):
        one_cycle_value(0, 0.95, 0.85, 0.95, 0)
    with pytest.raises(ValueError, match="Argument `start` must be a number"):
        one_cycle_value(0, "high", 0.85, 0.95, 100)


# --------------------------------------------------------------------------------------
# scale_learning_rate.
# --------------------------------------------------------------------------------------


def test_scale_learning_rate():
    assert scale_learning_rate(0.1, 256) == pytest.approx(0.1)
    assert scale_learning_rate(0.1, batch_size=1024) == pytest.approx(0.4)
    assert scale_learning_rate(0.1, 32) == pytest.approx(0.0125)
    assert scale_learning_rate(0.001, 64, base_batch_size=32) == pytest.approx(0.002)
    assert isinstance(scale_learning_rate(0.1, 512), float)
    with pytest.raises(ValueError, match="Argument `base_lr` must be > 0"):
        scale_learning_rate(0.0, 256)
    with pytest.raises(ValueError, match="Argument `batch_size` must be > 0"):
        scale_learning_rate(0.1, 0)
    with pytest.raises(ValueError, match="Argument `batch_size` must be an integer"):
        scale_learning_rate(0.1, 2.5)
    with pytest.raises(ValueError, match="Argument `base_batch_size` must be > 0"):
        scale_learning_rate(0.1, 256, base_batch_size=0)
    assert scale_learning_rate(1e-9, 1, base_batch_size=1) == pytest.approx(1e-9)


# --------------------------------------------------------------------------------------
# Validation: each boundary from both sides.
# (cls, base kwargs, argument, bad value, good value, message).
# --------------------------------------------------------------------------------------

_COS = dict(learning_rate=0.1, decay_steps=10)
_RST = dict(learning_rate=0.1, first_decay_steps=10)
_STP = dict(learning_rate=0.1, boundaries=[10, 20])
_EXP = dict(learning_rate=0.1, decay_steps=10, decay_rate=0.9)
_POL = dict(learning_rate=0.1, decay_steps=10)
_ONE = dict(max_learning_rate=0.1, total_steps=100)
_CLR = dict(initial_learning_rate=0.01, maximal_learning_rate=0.1, step_size=10)

BOUNDARIES = [
    (WarmupCosineDecay, _COS, "learning_rate", 0.0, 1e-8, "`learning_rate` must be > 0"),
    (WarmupCosineDecay, _COS, "decay_steps", 0, 1, "`decay_steps` must be > 0"),
    (WarmupCosineDecay, _COS, "decay_steps", -5, 5, "`decay_steps` must be > 0"),
    (WarmupCosineDecay, _COS, "decay_steps", 2.5, 2.0, "`decay_steps` must be an integer"),
    (WarmupCosineDecay, _COS, "warmup_steps", -1, 0, "`warmup_steps` must be >= 0"),
    (WarmupCosineDecay, _COS, "alpha", -0.01, 0.0, r"`alpha` must be in \[0.0, 1.0\]"),
    (WarmupCosineDecay, _COS, "alpha", 1.01, 1.0, r"`alpha` must be in \[0.0, 1.0\]"),
    (WarmupCosineDecay, _COS, "warmup_steps", 11, 10,
     r"`warmup_steps` must be <= `decay_steps`.*warmup_steps=11, decay_steps=10"),
    (WarmupCosineDecay, _COS, "learning_rate", float("nan"), 0.1, "must be a finite number"),
    (WarmupPolynomialDecay, _POL, "warmup_steps", 11, 10,
     r"`warmup_steps` must be <= `decay_steps`.*warmup_steps=11, decay_steps=10"),
    (OneCycle, _ONE, "max_learning_rate", float("inf"), 1.0, "must be a finite number"),
    (WarmupCosineRestarts, _RST, "first_decay_steps", 0, 1, "`first_decay_steps` must be > 0"),
    (WarmupCosineRestarts, _RST, "t_mul", 0.99, 1.0, "`t_mul` must be >= 1.0"),
    (WarmupCosineRestarts, _RST, "m_mul", 0.0, 0.01, r"`m_mul` must be in \(0.0, 1.0\]"),
    (WarmupCosineRestarts, _RST, "m_mul", 1.01, 1.0, r"`m_mul` must be in \(0.0, 1.0\]"),
    (WarmupCosineRestarts, _RST, "alpha", -0.1, 0.0, r"`alpha` must be in \[0.0, 1.0\]"),
    (WarmupCosineRestarts, _RST, "alpha", 1.1, 1.0, r"`alpha` must be in \[0.0, 1.0\]"),
    (WarmupCosineRestarts, _RST, "warmup_steps", -1, 0, "`warmup_steps` must be >= 0"),
    (StepDecay, _STP, "boundaries", [10, 10], [10, 11], "`boundaries` must be strictly increa"),
    (StepDecay, _STP, "boundaries", [20, 10], [10, 20], "`boundaries` must be strictly increa"),
    (StepDecay, _STP, "boundaries", [0, 5], [1, 5], r"`boundaries\[0\]` must be > 0"),
    (StepDecay, _STP, "boundaries", [5, 7.5], [5, 7], r"`boundaries\[1\]` must be an integer"),
    (StepDecay, _STP, "boundaries", 10, np.array([10]), "`boundaries` must be a list"),
    (StepDecay, _STP, "gamma", 0.0, 1e-3, "`gamma` must be > 0.0"),
    (StepDecay, _STP, "gamma", -0.5, 0.5, "`gamma` must be > 0.0"),
    (StepDecay, _STP, "warmup_steps", -1, 0, "`warmup_steps` must be >= 0"),
    (WarmupExponentialDecay, _EXP, "decay_steps", 0, 1, "`decay_steps` must be > 0"),
    (WarmupExponentialDecay, _EXP, "decay_rate", 0.0, 0.01,
     r"`decay_rate` must be in \(0.0, 1.0\]"),
    (WarmupExponentialDecay, _EXP, "decay_rate", 1.5, 1.0,
     r"`decay_rate` must be in \(0.0, 1.0\]"),
    (WarmupExponentialDecay, _EXP, "staircase", "yes", True, "`staircase` must be a bool"),
    (WarmupExponentialDecay, _EXP, "warmup_steps", -3, 3, "`warmup_steps` must be >= 0"),
    (WarmupPolynomialDecay, _POL, "decay_steps", 0, 1, "`decay_steps` must be > 0"),
    (WarmupPolynomialDecay, _POL, "end_learning_rate", -0.01, 0.0,
     "`end_learning_rate` must be >= 0.0"),
    (WarmupPolynomialDecay, _POL, "power", 0.0, 0.1, "`power` must be > 0.0"),
    (WarmupPolynomialDecay, _POL, "warmup_steps", -1, 0, "`warmup_steps` must be >= 0"),
    (OneCycle, _ONE, "max_learning_rate", 0.0, 1e-6, "`max_learning_rate` must be > 0"),
    (OneCycle, _ONE, "total_steps", 0, 10, "`total_steps` must be > 0"),
    (OneCycle, _ONE, "pct_start", 0.0, 0.02, r"`pct_start` must be in \(0.0, 1.0\)"),
    (OneCycle, _ONE, "pct_start", 1.0, 0.99, r"`pct_start` must be in \(0.0, 1.0\)"),
    (OneCycle, _ONE, "pct_start", 0.01, 0.011, "pct_start \\* total_steps > 1"),
    (OneCycle, _ONE, "div_factor", 0.0, 1.0, "`div_factor` must be > 0.0"),
    (OneCycle, _ONE, "final_div_factor", 0.0, 1.0, "`final_div_factor` must be > 0.0"),
    (OneCycle, _ONE, "anneal_strategy", "cosine", "linear", "`anneal_strategy` must be one of"),
    (CyclicalLearningRate, _CLR, "initial_learning_rate", 0.0, 1e-4,
     "`initial_learning_rate` must be > 0"),
    (CyclicalLearningRate, _CLR, "maximal_learning_rate", 0.0099, 0.01,
     "`maximal_learning_rate` must be >= `initial_learning_rate`"),
    (CyclicalLearningRate, _CLR, "step_size", 0, 1, "`step_size` must be > 0"),
    (CyclicalLearningRate, _CLR, "mode", "triangle", "exp_range", "`mode` must be one of"),
    (CyclicalLearningRate, _CLR, "gamma", 0.0, 1e-3, r"`gamma` must be in \(0.0, 1.0\]"),
    (CyclicalLearningRate, _CLR, "gamma", 1.001, 1.0, r"`gamma` must be in \(0.0, 1.0\]"),
]


@pytest.mark.parametrize(("schedule_cls", "base", "arg", "bad", "good", "match"), BOUNDARIES,
                         ids=[f"{c.__name__}-{a}-{b!r}" for c, _, a, b, *_r in BOUNDARIES])
def test_validation_both_sides(schedule_cls, base, arg, bad, good, match):
    with pytest.raises(ValueError, match=match) as info:
        schedule_cls(**{**base, arg: bad})
    assert f"Received: {arg}" in str(info.value)
    schedule = schedule_cls(**{**base, arg: good})
    assert np.isfinite(float(schedule(3)))


def test_error_message_is_keras_style():
    with pytest.raises(ValueError) as info:
        WarmupCosineDecay(0.1, decay_steps=0)
    assert str(info.value) == "Argument `decay_steps` must be > 0. Received: decay_steps=0"


# --------------------------------------------------------------------------------------
# Use in optimizers, training and saving.
# --------------------------------------------------------------------------------------

OPTIMIZER_CASES = [
    WarmupCosineDecay(0.1, decay_steps=6, warmup_steps=3, alpha=0.1),
    WarmupCosineRestarts(0.1, first_decay_steps=3, warmup_steps=2),
    StepDecay(0.1, boundaries=[2, 4], gamma=0.5, warmup_steps=2),
    WarmupExponentialDecay(0.1, decay_steps=2, decay_rate=0.5, warmup_steps=1),
    WarmupPolynomialDecay(0.1, decay_steps=5, power=2.0, warmup_steps=2),
    OneCycle(0.1, total_steps=8, pct_start=0.5),
    CyclicalLearningRate(0.01, 0.1, step_size=3, mode="triangular2"),
]


def _mean_output_loss(y_true, y_pred):
    # d(loss)/d(kernel) = mean(x) = 1 for the model below: each SGD step subtracts the lr.
    return tf.reduce_mean(y_pred)


def _unit_model():
    return keras.Sequential([
        keras.Input(shape=(1,)),
        keras.layers.Dense(1, use_bias=False, kernel_initializer="ones"),
    ])


@pytest.mark.parametrize("optimizer_name", ["SGD", "Adam"])
@pytest.mark.parametrize("schedule", OPTIMIZER_CASES, ids=lambda s: type(s).__name__)
def test_drives_optimizer_in_fit(schedule, optimizer_name):
    num_steps = 7
    optimizer = getattr(keras.optimizers, optimizer_name)(learning_rate=schedule)
    model = _unit_model()
    model.compile(optimizer=optimizer, loss=_mean_output_loss)
    x = np.ones((num_steps, 1), "float32")
    model.fit(x, np.zeros_like(x), batch_size=1, epochs=1, shuffle=False, verbose=0)

    assert int(optimizer.iterations.numpy()) == num_steps
    np.testing.assert_allclose(float(schedule(optimizer.iterations)), float(schedule(num_steps)),
                               **TOL)
    # Keras 3's `optimizer.learning_rate` is the rate for the next step, schedule(N);
    # tf_keras's is the rate the last step used, schedule(N - 1).
    expected_step = num_steps - 1 if USING_TF_KERAS else num_steps
    np.testing.assert_allclose(float(optimizer.learning_rate), float(schedule(expected_step)),
                               **TOL)
    # The rates actually applied: step k used schedule(k). SGD subtracts lr * grad with
    # grad = 1; Adam with a constant unit gradient moves by lr up to its epsilon.
    applied = sum(float(schedule(k)) for k in range(num_steps))
    kernel = float(model.get_weights()[0].ravel()[0])
    tolerance = 1e-6 if optimizer_name == "SGD" else 1e-4
    np.testing.assert_allclose(kernel, 1.0 - applied, rtol=0, atol=tolerance)


@pytest.mark.parametrize("schedule", OPTIMIZER_CASES, ids=lambda s: type(s).__name__)
def test_save_and_load_keeps_schedule(schedule, tmp_path):
    model = _unit_model()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule, momentum=0.9),
                  loss="mse")
    x = np.ones((3, 1), "float32")
    model.fit(x, np.zeros_like(x), batch_size=1, epochs=1, verbose=0)

    restored = save_and_load(model, str(tmp_path))
    revived = restored.optimizer._learning_rate
    assert type(revived) is type(schedule)
    assert revived.get_config() == schedule.get_config()
    assert int(restored.optimizer.iterations.numpy()) == 3
    serialized = restored.optimizer.get_config()["learning_rate"]
    assert serialized["config"] == schedule.get_config()
    steps = list(range(0, 12))
    np.testing.assert_allclose(_evaluate(revived, steps), _evaluate(schedule, steps), rtol=0,
                               atol=0)
    # Training goes on from the restored step.
    restored.fit(x, np.zeros_like(x), batch_size=1, epochs=1, verbose=0)
    assert int(restored.optimizer.iterations.numpy()) == 6


def test_large_steps_stay_finite():
    # Far past every end (int64 steps near 2**31), the rate stays finite and, for the
    # schedules that settle, at the final value. (The periodic ones are only
    # float32-accurate in their phase there.)
    for schedule_cls, kwargs, reference, _horizon, _edges in CASES:
        value = float(schedule_cls(**kwargs)(tf.constant(2**31 - 1, tf.int64)))
        assert math.isfinite(value) and value >= 0.0
        if not issubclass(schedule_cls, PERIODIC):
            np.testing.assert_allclose(value, reference(float(2**31 - 1), **kwargs), **TOL)
