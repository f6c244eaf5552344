"""Timing of repeated runs, shared by `profiling.measure_latency` and `export.benchmark_tflite`."""

import dataclasses
import time

import numpy as np


def time_runs(run_once, warmup, runs):
    """Calls `run_once` `warmup` times untimed, then `runs` times timed.

    Returns:
        A dict of the statistics in milliseconds (`median_ms`, `p10_ms`, `p90_ms`,
        `mean_ms`, `std_ms`, `min_ms`, `max_ms`; percentiles with linear interpolation)
        and `times_ms`, the tuple of every timed run.
    """
    for _ in range(warmup):
        run_once()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run_once()
        times.append((time.perf_counter() - start) * 1000.0)
    values = np.asarray(times)
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    return dict(
        median_ms=float(median), p10_ms=float(p10), p90_ms=float(p90),
        mean_ms=float(values.mean()), std_ms=float(values.std()),
        min_ms=float(values.min()), max_ms=float(values.max()),
        times_ms=tuple(float(t) for t in times),
    )


class TimedRunsMixin:
    """What the latency results of `measure_latency` and `benchmark_tflite` share: the
    throughput at the median and the JSON form. For dataclasses with the fields of
    `time_runs` and a `batch_size`."""

    @property
    def throughput(self):
        """Samples per second at the median latency."""
        return 1000.0 * self.batch_size / self.median_ms if self.median_ms > 0 else float("inf")

    def to_dict(self):
        """The result as plain JSON-serializable data (with `throughput`)."""
        data = dataclasses.asdict(self)
        data["times_ms"] = list(self.times_ms)
        data["throughput"] = self.throughput
        return data
