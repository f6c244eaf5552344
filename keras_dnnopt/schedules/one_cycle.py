"""The 1cycle policy (Smith & Topin), and its phase arithmetic as a public helper."""

from keras_dnnopt.backend import keras, register_serializable, tf
from keras_dnnopt.schedules.base import (
    as_float_step,
    check_number,
    check_rate,
    check_steps,
    cosine_anneal,
    linear_anneal,
)
from keras_dnnopt.utils.validation import check_choice

ANNEAL_STRATEGIES = ("cos", "linear")


def _check_one_cycle(total_steps, pct_start, anneal_strategy):
    total_steps = check_steps("total_steps", total_steps)
    pct_start = check_number("pct_start", pct_start, low=0.0, high=1.0, low_inclusive=False,
                             high_inclusive=False)
    if pct_start * total_steps <= 1.0:
        raise ValueError(
            "Argument `pct_start` must give the first phase more than one step: "
            "pct_start * total_steps > 1 (raise `total_steps` or `pct_start`). "
            f"Received: pct_start={pct_start!r}, total_steps={total_steps!r}"
        )
    check_choice("anneal_strategy", anneal_strategy, ANNEAL_STRATEGIES)
    return total_steps, pct_start


def one_cycle_value(step, start, peak, end, total_steps, pct_start=0.3, anneal_strategy="cos"):
    """The value of a two-phase 1cycle curve at `step`: `start -> peak -> end`.

    The same phase arithmetic as PyTorch's `OneCycleLR` (`three_phase=False`). With
    `P = pct_start * total_steps - 1` (the last step of phase 1), `E = total_steps - 1`
    and `t = min(max(step, 0), E)`:

        t <= P:  anneal(start, peak, t / P)
        t >  P:  anneal(peak, end, (t - P) / (E - P))

    where `anneal(a, b, f)` is `b + (a - b) / 2 * (1 + cos(pi * f))` for `"cos"` and
    `a + (b - a) * f` for `"linear"`. After `total_steps` the value stays at `end`.

    `OneCycle` calls it with `(initial, max, min)` learning rates; a 1cycle momentum
    callback calls it with `(max_momentum, base_momentum, max_momentum)` to cycle the
    momentum inversely (high -> low -> high).

    Args:
        step: the optimizer step: a Python number or an int or float tensor/variable.
        start: the value at step 0, a float.
        peak: the value at the end of phase 1 (step `P`), a float.
        end: the value at step `total_steps - 1` and after, a float.
        total_steps: the length of the cycle in steps, an integer > 0.
        pct_start: the fraction of `total_steps` spent in phase 1, in (0, 1), with
            `pct_start * total_steps > 1`. Defaults to 0.3.
        anneal_strategy: `"cos"` or `"linear"`. Defaults to `"cos"`.

    Returns:
        The value, a float32 scalar tensor (`float(...)` gives a Python float).

    Raises:
        ValueError: if an argument is out of range.

    Example:

    >>> [round(float(one_cycle_value(s, 0.95, 0.85, 0.95, total_steps=11, pct_start=0.5)), 4)
    ...  for s in (0, 2.25, 4.5, 7.25, 10, 20)]
    [0.95, 0.9, 0.85, 0.9, 0.95, 0.95]

    Reference:
        Smith & Topin, [Super-Convergence: Very Fast Training of Neural Networks Using
        Large Learning Rates](https://arxiv.org/abs/1708.07120), 2018.
    """
    total_steps, pct_start = _check_one_cycle(total_steps, pct_start, anneal_strategy)
    start = check_number("start", start)
    peak = check_number("peak", peak)
    end = check_number("end", end)
    anneal = cosine_anneal if anneal_strategy == "cos" else linear_anneal
    phase1_end = float(pct_start * total_steps - 1.0)
    last = float(total_steps - 1)
    step = tf.minimum(as_float_step(step), last)
    rising = anneal(start, peak, tf.minimum(step / phase1_end, 1.0))
    # The fraction of phase 2 done, from the steps left: exactly 1 at the last step even
    # when phase 2 is a fraction of a step long (`step - phase1_end` rounds in float32).
    left = tf.clip_by_value((last - step) / (last - phase1_end), 0.0, 1.0)
    falling = anneal(peak, end, 1.0 - left)
    return tf.where(step <= phase1_end, rising, falling)


@register_serializable
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """The 1cycle learning-rate policy: up to `max_learning_rate`, then far below the start.

    With `initial = max_learning_rate / div_factor` and
    `minimum = initial / final_div_factor`, the rate is
    `one_cycle_value(step, initial, max_learning_rate, minimum, total_steps, pct_start,
    anneal_strategy)`: from `initial` at step 0 it anneals to `max_learning_rate` at step
    `P = pct_start * total_steps - 1`, then to `minimum` at step `total_steps - 1`,
    and stays there. With `anneal(a, b, f)` as in `one_cycle_value` and
    `E = total_steps - 1`:

        step <= P:  anneal(initial, max_learning_rate, step / P)
        step >  P:  anneal(max_learning_rate, minimum, (min(step, E) - P) / (E - P))

    The same values as PyTorch's `OneCycleLR` (two phases), which counts its steps
    the same way as a Keras optimizer's `iterations`.

    Args:
        max_learning_rate: the peak learning rate, a Python float > 0.
        total_steps: the length of the cycle in steps (usually epochs * steps per
            epoch), an integer > 0.
        pct_start: the fraction of the cycle spent increasing the rate, in (0, 1),
            with `pct_start * total_steps > 1`. Defaults to 0.3.
        div_factor: `initial = max_learning_rate / div_factor`, a float > 0. Defaults
            to 25.0.
        final_div_factor: `minimum = initial / final_div_factor`, a float > 0. Defaults
            to 1e4.
        anneal_strategy: `"cos"` (cosine annealing) or `"linear"`. Defaults to `"cos"`.
        name: optional name of the operation. Defaults to `"OneCycle"`.

    Returns:
        A schedule: calling it with the optimizer step gives the learning rate, a
        float32 scalar tensor.

    Raises:
        ValueError: if an argument is out of range.

    Example:

    >>> schedule = OneCycle(0.1, total_steps=101, pct_start=0.5, div_factor=10.0)
    >>> [round(float(schedule(s)), 4) for s in (0, 49.5, 100, 200)]
    [0.01, 0.1, 0.0, 0.0]

    Reference:
        Smith & Topin, [Super-Convergence: Very Fast Training of Neural Networks Using
        Large Learning Rates](https://arxiv.org/abs/1708.07120), 2018.
    """

    def __init__(self, max_learning_rate, total_steps, pct_start=0.3, div_factor=25.0,
                 final_div_factor=1e4, anneal_strategy="cos", name=None):
        super().__init__()
        self.max_learning_rate = check_rate("max_learning_rate", max_learning_rate)
        self.total_steps, self.pct_start = _check_one_cycle(total_steps, pct_start,
                                                            anneal_strategy)
        self.div_factor = check_number("div_factor", div_factor, low=0.0, low_inclusive=False)
        self.final_div_factor = check_number("final_div_factor", final_div_factor, low=0.0,
                                             low_inclusive=False)
        self.anneal_strategy = anneal_strategy
        self.name = name

    @property
    def initial_learning_rate(self):
        """The rate at step 0: `max_learning_rate / div_factor`."""
        return self.max_learning_rate / self.div_factor

    @property
    def min_learning_rate(self):
        """The final rate: `initial_learning_rate / final_div_factor`."""
        return self.initial_learning_rate / self.final_div_factor

    def __call__(self, step):
        with tf.name_scope(self.name or "OneCycle"):
            return one_cycle_value(step, self.initial_learning_rate, self.max_learning_rate,
                                   self.min_learning_rate, self.total_steps, self.pct_start,
                                   self.anneal_strategy)

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "anneal_strategy": self.anneal_strategy,
            "name": self.name,
        }
