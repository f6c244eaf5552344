"""Step-time overhead of the keras_dnnopt callbacks in `model.fit`.

Trains a small MobileNet (`keras_dnnopt.models.mobilenet_v1(input_shape=(32, 32, 3),
num_classes=10, alpha=0.25)`) with SGD(momentum=0.9) on one repeated random batch of
64, with no callback and with each callback alone (LearningRateMonitor,
OneCycleMomentum, GradientNormMonitor, ThroughputMonitor). Every run is one `fit` of
`--warmup + --steps` steps: the warm-up steps absorb the (re)tracing, the last `--steps`
are timed from the start of the first timed batch to the end of the epoch (the timer has
no `on_train_batch_end` hook, which would change Keras 3's callback dispatch).
Configurations are interleaved within each repeat, and the median over `--repeats` of
the mean step time is reported with its overhead against no callback. Prints a
Markdown table, the exact command and the versions.

Run (Keras 3; add TF_USE_LEGACY_KERAS=1 for tf_keras):

    python benchmarks/bench_callback_overhead.py
    python benchmarks/bench_callback_overhead.py --steps 300 --warmup 20 --repeats 5
"""

import argparse
import os
import platform
import shlex
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_dnnopt.backend import KERAS_NAME, keras, tf  # noqa: E402
from keras_dnnopt.callbacks import (  # noqa: E402
    GradientNormMonitor,
    LearningRateMonitor,
    OneCycleMomentum,
    ThroughputMonitor,
)
from keras_dnnopt.models import mobilenet_v1  # noqa: E402

BATCH = 64


class _Timer(keras.callbacks.Callback):
    """Times from the start of batch `warmup` to the end of the epoch."""

    def __init__(self, warmup):
        super().__init__()
        self.warmup = warmup
        self.seconds = None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.warmup:
            self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self._start


def configurations(total):
    return {
        "none": lambda: [],
        "LearningRateMonitor": lambda: [LearningRateMonitor()],
        "OneCycleMomentum": lambda: [OneCycleMomentum(total)],
        "GradientNormMonitor": lambda: [GradientNormMonitor(frequency=50)],
        "ThroughputMonitor": lambda: [ThroughputMonitor()],
    }


def run(args):
    keras.utils.set_random_seed(0)
    model = mobilenet_v1(input_shape=(32, 32, 3), num_classes=10, alpha=0.25)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(BATCH,))
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(2)

    configs = configurations(args.warmup + args.steps)
    times = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, make in configs.items():
            timer = _Timer(args.warmup)
            model.fit(dataset, epochs=1, steps_per_epoch=args.warmup + args.steps,
                      shuffle=False, verbose=0, callbacks=[*make(), timer])
            times[name].append(timer.seconds / args.steps)

    base = statistics.median(times["none"])
    print(f"\nCallback overhead, {KERAS_NAME} (TF {tf.__version__}), mobilenet_v1(alpha=0.25) "
          f"on 32x32x3, batch {BATCH}, {args.steps} timed steps x {args.repeats} repeats\n")
    print("| callback | median step (ms) | min..max (ms) | overhead vs none | <= 2% |")
    print("|---|---:|---:|---:|:---:|")
    for name, values in times.items():
        median = statistics.median(values)
        overhead = 100.0 * (median / base - 1.0)
        ok = "" if name == "none" else ("yes" if overhead <= 2.0 else "no")
        spread = f"{1e3 * min(values):.2f}..{1e3 * max(values):.2f}"
        print(f"| {name} | {1e3 * median:.2f} | {spread} | "
              f"{'-' if name == 'none' else f'{overhead:+.1f}%'} | {ok} |")
    env = "TF_USE_LEGACY_KERAS=1 " if os.environ.get("TF_USE_LEGACY_KERAS") == "1" else ""
    print(f"\nCommand: `{env}python {' '.join(shlex.quote(a) for a in sys.argv)}`")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"devices: {[d.device_type for d in tf.config.list_physical_devices()]}; "
          f"Python {platform.python_version()}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
