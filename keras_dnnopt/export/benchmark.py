"""Measuring an exported `.tflite` file: its size on disk (raw and gzipped) and its
latency under the LiteRT interpreter."""

import dataclasses
import gzip

import numpy as np

from keras_dnnopt.export.runner import TFLiteModel, _check_file
from keras_dnnopt.utils.timing import TimedRunsMixin, time_runs
from keras_dnnopt.utils.validation import check_number


@dataclasses.dataclass(frozen=True)
class FileSizes:
    """The size of a file, raw and gzipped.

    Attributes:
        size_bytes: the file's size in bytes.
        gzipped_size_bytes: the size in bytes of the file compressed by gzip at level 9
            (in memory). It shows what pruning and clustering buy: zeros and repeated
            values compress, while the raw `.tflite` file keeps every weight.
    """

    size_bytes: int
    gzipped_size_bytes: int

    @property
    def compression_ratio(self):
        """`size_bytes / gzipped_size_bytes` (how many times smaller gzip makes it)."""
        return self.size_bytes / self.gzipped_size_bytes if self.gzipped_size_bytes else 0.0

    def to_dict(self):
        return dataclasses.asdict(self)


def gzipped_size(content):
    """The size in bytes of `content` (bytes) gzipped at level 9, in memory."""
    # mtime=0 keeps the gzip header, hence the size, independent of the clock.
    return len(gzip.compress(content, compresslevel=9, mtime=0))


def file_sizes(path):
    """Returns the size of a file, raw and gzipped (level 9, in memory).

    The gzipped size is the usual measure of what pruning and weight clustering save
    (TF-MOT reports it the same way): a `.tflite` file stores every weight densely,
    so only a compressor sees the zeros and the shared values.

    Args:
        path: the file (str or `os.PathLike`), typically a `.tflite` file.

    Returns:
        A `FileSizes` with `size_bytes` and `gzipped_size_bytes`.

    Raises:
        FileNotFoundError: if `path` is not an existing file.

    Example:

    >>> sizes = file_sizes("model.tflite")
    >>> print(sizes.size_bytes, sizes.gzipped_size_bytes)
    """
    path = _check_file(path)
    with open(path, "rb") as f:
        content = f.read()
    return FileSizes(size_bytes=len(content), gzipped_size_bytes=gzipped_size(content))


@dataclasses.dataclass(frozen=True)
class TFLiteLatency(TimedRunsMixin):
    """Latency of repeated inferences of a `.tflite` file, in milliseconds.

    Attributes:
        median_ms, p10_ms, p90_ms, mean_ms, std_ms, min_ms, max_ms: statistics of the
            timed runs (percentiles with linear interpolation).
        batch_size: samples per inference.
        threads: interpreter threads.
        runs: number of timed inferences.
        warmup: number of untimed inferences before them.
        runtime: the interpreter used, `"litert"` or `"tf.lite"` (fallback).
        times_ms: every timed inference, in order.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    batch_size: int
    threads: int
    runs: int
    warmup: int
    runtime: str
    times_ms: tuple

    def __str__(self):
        return (
            f"TFLite latency ({self.runtime}, batch {self.batch_size}, {self.threads} "
            f"thread(s), {self.runs} runs after {self.warmup} warm-up): median "
            f"{self.median_ms:.3f} ms (p10 {self.p10_ms:.3f}, p90 {self.p90_ms:.3f}), mean "
            f"{self.mean_ms:.3f} +- {self.std_ms:.3f} ms; {self.throughput:,.1f} samples/s"
        )


def benchmark_tflite(path, threads=1, runs=50, warmup=5, batch_size=1, input_data=None):
    """Measures the latency of a `.tflite` file under the LiteRT interpreter.

    Loads the file with `TFLiteModel` (LiteRT, or `tf.lite.Interpreter` when
    `ai-edge-litert` is missing), sets the input once, then times `runs` inferences one
    after another after `warmup` untimed ones. Each timed inference is
    `set_tensor` + `invoke` + `get_tensor` of every output, in the file's own input and
    output types (no float conversion), as an application on a device would run it.

    Args:
        path: the `.tflite` file.
        threads: interpreter threads, an int >= 1. Defaults to 1 (the usual figure for
            mobile latency, and the least noisy).
        runs: timed inferences, an int >= 1. Defaults to 50.
        warmup: untimed inferences before timing, an int >= 0. Defaults to 5.
        batch_size: samples per inference, an int >= 1. A file with a fixed batch
            dimension (other than the requested one) cannot be resized and raises.
            Defaults to 1.
        input_data: the input to use (float or the file's input type; one array, or a
            list for several inputs) instead of generated random data; `batch_size` is
            then its first dimension. Defaults to None.

    Returns:
        A `TFLiteLatency` (milliseconds; printable; `.to_dict()`).

    Raises:
        FileNotFoundError: if `path` is not an existing file.
        ValueError: for `threads`, `runs`, `batch_size` < 1, `warmup` < 0, or a batch
            size the file cannot take.

    Example:

    >>> result = benchmark_tflite("model_int8.tflite", threads=1, runs=100)
    >>> print(result.median_ms, result.p90_ms)
    """
    threads = check_number("threads", threads, low=1, integer=True)
    runs = check_number("runs", runs, low=1, integer=True)
    warmup = check_number("warmup", warmup, low=0, integer=True)
    batch_size = check_number("batch_size", batch_size, low=1, integer=True)
    runner = TFLiteModel(path, num_threads=threads)
    if input_data is None:
        rng = np.random.default_rng(0)
        arrays = [runner._random_input(rng, index, batch_size)
                  for index in range(len(runner.input_details))]
    else:
        arrays = input_data if isinstance(input_data, (list, tuple)) else [input_data]
        arrays = [runner._to_input_type(index, np.asarray(a)) for index, a in enumerate(arrays)]
        batch_size = int(arrays[0].shape[0])
    interpreter = runner.prepare(arrays)
    input_indices = [d["index"] for d in runner.input_details]
    output_indices = [d["index"] for d in runner.output_details]

    def run_once():
        for index, array in zip(input_indices, arrays, strict=True):
            interpreter.set_tensor(index, array)
        interpreter.invoke()
        for index in output_indices:
            interpreter.get_tensor(index)

    return TFLiteLatency(
        **time_runs(run_once, warmup, runs), batch_size=batch_size, threads=threads,
        runs=runs, warmup=warmup, runtime=runner.runtime,
    )
