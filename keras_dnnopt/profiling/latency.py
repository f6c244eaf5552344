"""Latency measurement: repeated forward passes after a warm-up."""

import dataclasses

import numpy as np

from keras_dnnopt.backend import check_model, tf
from keras_dnnopt.utils.timing import TimedRunsMixin, time_runs
from keras_dnnopt.utils.validation import check_number, check_shape


@dataclasses.dataclass
class LatencyResult(TimedRunsMixin):
    """Latency of repeated forward passes, in milliseconds.

    Attributes:
        median_ms, p10_ms, p90_ms, mean_ms, std_ms, min_ms, max_ms: statistics of
            the timed runs (percentiles with linear interpolation).
        batch_size: samples per forward pass.
        runs: number of timed passes.
        warmup: number of untimed passes before them.
        use_tf_function: whether the passes ran through a `tf.function`.
        times_ms: every timed pass, in order.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    batch_size: int
    runs: int
    warmup: int
    use_tf_function: bool
    times_ms: tuple

    def __str__(self):
        return (
            f"Latency (batch {self.batch_size}, {self.runs} runs after {self.warmup} "
            f"warm-up): median {self.median_ms:.3f} ms (p10 {self.p10_ms:.3f}, "
            f"p90 {self.p90_ms:.3f}), mean {self.mean_ms:.3f} +- {self.std_ms:.3f} ms, "
            f"min {self.min_ms:.3f} ms; {self.throughput:,.1f} samples/s"
        )


def measure_latency(model, batch_size=1, input_shape=None, warmup=10, runs=50,
                    input_data=None, use_tf_function=True):
    """Measures the latency of a model's forward pass `model(x, training=False)`.

    Runs `warmup` untimed passes (tracing, memory allocation, caches), then `runs`
    timed passes one after another, and reports the median and spread. Each timed pass
    includes copying the outputs to host memory (NumPy), so that the time covers the
    whole computation on any device.

    Args:
        model: a `keras.Model` of the Keras in use.
        batch_size: samples per pass, for generated input. Defaults to 1.
        input_shape: per-sample input shape for generated input, e.g. `(224, 224, 3)`
            (a list of shapes for a multi-input model). Defaults to None: the model's
            input shape, which must then be fully defined.
        warmup: untimed passes before timing. Defaults to 10.
        runs: timed passes. Defaults to 50.
        input_data: the input to use (array, or list of arrays for several inputs)
            instead of generated standard-normal data; `batch_size` and `input_shape`
            are then ignored. Defaults to None.
        use_tf_function: run the pass through `tf.function` (graph mode, as in
            `model.predict`) rather than eagerly. Defaults to True.

    Returns:
        A `LatencyResult` (milliseconds; printable; `.to_dict()`).

    Raises:
        TypeError: if `model` is not a model of the Keras in use.
        ValueError: for bad `batch_size`, `warmup`, `runs` or `input_shape`, or when
            the input shape cannot be worked out.

    Example:

    >>> result = keras_dnnopt.measure_latency(model, batch_size=1, runs=100)
    >>> print(result.median_ms, result.p90_ms)
    """
    check_model(model)
    batch_size = check_number("batch_size", batch_size, low=1, integer=True)
    warmup = check_number("warmup", warmup, low=0, integer=True)
    runs = check_number("runs", runs, low=1, integer=True)
    if input_data is None:
        input_data = _make_input(model, batch_size, input_shape)
    else:
        first = tf.nest.flatten(input_data)[0]
        batch_size = int(np.shape(first)[0]) if np.ndim(first) else 1

    if use_tf_function:
        forward = tf.function(lambda x: model(x, training=False))
    else:
        def forward(x):
            return model(x, training=False)

    def run_once():
        outputs = forward(input_data)
        for tensor in tf.nest.flatten(outputs):
            np.asarray(tensor)

    return LatencyResult(
        **time_runs(run_once, warmup, runs), batch_size=batch_size, runs=runs, warmup=warmup,
        use_tf_function=bool(use_tf_function),
    )


def _make_input(model, batch_size, input_shape):
    inputs = getattr(model, "inputs", None) if model.built else None
    if input_shape is not None:
        shapes = input_shape if input_shape and isinstance(input_shape[0], (tuple, list)) \
            else [input_shape]
        shapes = [check_shape("input_shape", s, min_rank=1) for s in shapes]
        if any(d is None for s in shapes for d in s):
            raise ValueError(
                "Argument `input_shape` must be fully defined (no None) to generate "
                f"input. Received: input_shape={input_shape}"
            )
        dtypes = [t.dtype for t in inputs] if inputs and len(inputs) == len(shapes) \
            else ["float32"] * len(shapes)
    else:
        if not inputs:
            raise ValueError(
                f"Model {model.name!r} has no defined input; pass `input_shape` (per "
                "sample, e.g. (224, 224, 3)) or `input_data`. Received: input_shape=None"
            )
        shapes = [tuple(t.shape)[1:] for t in inputs]
        if any(d is None for s in shapes for d in s):
            raise ValueError(
                f"The input of model {model.name!r} has undefined dimensions {shapes}; "
                "pass a fully defined `input_shape` (per sample) or `input_data`. "
                "Received: input_shape=None"
            )
        dtypes = [t.dtype for t in inputs]
    rng = np.random.default_rng(0)
    data = [_random(rng, (batch_size, *s), d) for s, d in zip(shapes, dtypes, strict=True)]
    return data[0] if len(data) == 1 else data


def _random(rng, shape, dtype):
    """Standard-normal data for float inputs, zeros for integer inputs (token ids)."""
    name = str(getattr(dtype, "name", dtype))
    if name.startswith(("int", "uint", "bool")):
        return np.zeros(shape, dtype=name)
    return rng.standard_normal(shape).astype("float32" if "float" not in name else name)
