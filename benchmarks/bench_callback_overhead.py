"""Step-time overhead of the keras_dnnopt callbacks in `model.fit`.

Trains a small MobileNet (`keras_dnnopt.models.mobilenet_v1(input_shape=(32, 32, 3),
num_classes=10, alpha=0.25)`) with SGD(momentum=0.9) on one repeated random batch of
64, with no callback and with each callback alone (LearningRateMonitor,
OneCycleMomentum, GradientNormMonitor, ThroughputMonitor), and, for comparison,
OneCycleMomentum as it was before it computed the momentum once per optimizer step.

Built for a noisy, shared machine:

- Every run is one `fit` of `--epochs` epochs of `--steps` steps. The first epoch
  absorbs the (re)tracing and is not timed; each later epoch gives a per-step time
  (epoch time / steps), and the run's figure is the median of those. The timer only
  hooks `on_epoch_begin`/`on_epoch_end` (a batch hook would change how both Kerases
  dispatch steps); it is the last callback, so the epoch-end work of the callback under
  test is counted.
- Runs are interleaved: each repeat runs every configuration once, in a fresh random
  order (fixed seed), so a slow spell of the machine hits all of them alike.
- The overhead is paired: in each repeat, `t(callback) / t(none) - 1`; the table gives
  the median over repeats and the interquartile range (IQR), for wall time and for the
  process CPU time (`time.process_time`, all threads), which the other processes of a
  shared machine disturb less.
- A noise-free figure: the number of graph nodes each callback adds to the traced train
  function (its graph and the functions it calls). In-graph work per step is what a
  callback costs once it keeps `fit` asynchronous. (`perf stat -e instructions` is not
  supported in the container this was written on, and TF under callgrind is too slow.)

Prints a Markdown table, the exact command and the versions.

Run (Keras 3; add TF_USE_LEGACY_KERAS=1 for tf_keras):

    python benchmarks/bench_callback_overhead.py
    python benchmarks/bench_callback_overhead.py --repeats 15 --epochs 4 --steps 20
"""

import argparse
import os
import platform
import random
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


class _EpochTimer(keras.callbacks.Callback):
    """Wall and CPU seconds of every epoch; also counts the train function's graph nodes."""

    def __init__(self):
        super().__init__()
        self.wall = []
        self.cpu = []
        self.nodes = None

    def on_epoch_begin(self, epoch, logs=None):
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.wall.append(time.perf_counter() - self._wall)
        self.cpu.append(time.process_time() - self._cpu)
        if self.nodes is None:
            self.nodes = graph_nodes(self.model.train_function)


def graph_nodes(train_function):
    """Nodes of the latest concrete function of the `tf.function` behind `fit`'s train
    function, its function library included (Keras 3 wraps it in a Python closure)."""
    candidates = [train_function] + [
        cell.cell_contents for cell in (getattr(train_function, "__closure__", None) or [])]
    for candidate in candidates:
        concrete = getattr(candidate, "_list_all_concrete_functions", lambda: [])()
        if concrete:
            graph = concrete[-1].graph.as_graph_def()
            return len(graph.node) + sum(len(f.node_def) for f in graph.library.function)
    return None


class _PerVariableOneCycleMomentum(OneCycleMomentum):
    """OneCycleMomentum as it was before it computed the momentum once per step: the
    optimizer's update of every variable computes it again (for the comparison only)."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # The retrace happens at the next step, so the step is traced without the patch.
        self._step_patch.restore()


def configurations(total_steps):
    return {
        "none": lambda: [],
        "LearningRateMonitor": lambda: [LearningRateMonitor()],
        "OneCycleMomentum": lambda: [OneCycleMomentum(total_steps)],
        "OneCycleMomentum, per variable (before)": lambda: [
            _PerVariableOneCycleMomentum(total_steps)],
        "GradientNormMonitor": lambda: [GradientNormMonitor(frequency=50)],
        "ThroughputMonitor": lambda: [ThroughputMonitor()],
    }


def quartiles(values):
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return median, q1, q3


def run(args):
    keras.utils.set_random_seed(0)
    model = mobilenet_v1(input_shape=(32, 32, 3), num_classes=10, alpha=0.25)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(BATCH,))
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(2)

    configs = configurations(args.epochs * args.steps)
    names = list(configs)
    order = random.Random(0)
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    nodes = {}
    for _ in range(args.repeats):
        order.shuffle(names)
        for name in names:
            timer = _EpochTimer()
            model.fit(dataset, epochs=args.epochs, steps_per_epoch=args.steps, shuffle=False,
                      verbose=0, callbacks=[*configs[name](), timer])
            wall[name].append(statistics.median(timer.wall[1:]) / args.steps)
            cpu[name].append(statistics.median(timer.cpu[1:]) / args.steps)
            nodes[name] = timer.nodes

    base_wall, base_cpu = np.array(wall["none"]), np.array(cpu["none"])
    print(f"\nCallback overhead, {KERAS_NAME} (TF {tf.__version__}), mobilenet_v1(alpha=0.25) "
          f"on 32x32x3, batch {BATCH}; {args.repeats} interleaved repeats of "
          f"{args.epochs - 1} timed epochs x {args.steps} steps\n")
    print("| callback | step wall (ms) | wall overhead, median [IQR] | step CPU (ms) "
          "| CPU overhead, median [IQR] | graph nodes added | wall <= 2% |")
    print("|---|---:|---:|---:|---:|---:|:---:|")
    for name in configurations(0):
        w, c = np.array(wall[name]), np.array(cpu[name])
        if name == "none":
            print(f"| none | {1e3 * np.median(w):.2f} | - | {1e3 * np.median(c):.2f} | - | "
                  f"({nodes[name]} nodes) | |")
            continue
        wm, wq1, wq3 = quartiles(100.0 * (w / base_wall - 1.0))
        cm, cq1, cq3 = quartiles(100.0 * (c / base_cpu - 1.0))
        added = nodes[name] - nodes["none"] if None not in (nodes[name], nodes["none"]) else "?"
        ok = "yes" if wm <= 2.0 else "no"
        print(f"| {name} | {1e3 * np.median(w):.2f} | {wm:+.1f}% [{wq1:+.1f}, {wq3:+.1f}] | "
              f"{1e3 * np.median(c):.2f} | {cm:+.1f}% [{cq1:+.1f}, {cq3:+.1f}] | "
              f"{added:+} | {ok} |")
    spread = 100.0 * (np.percentile(base_wall, 75) - np.percentile(base_wall, 25)) / np.median(
        base_wall)
    print(f"\nNo-callback runs alone: wall IQR {spread:.1f}% of their median "
          f"(min..max {1e3 * base_wall.min():.2f}..{1e3 * base_wall.max():.2f} ms).")
    env = "TF_USE_LEGACY_KERAS=1 " if os.environ.get("TF_USE_LEGACY_KERAS") == "1" else ""
    print(f"\nCommand: `{env}python {' '.join(shlex.quote(a) for a in sys.argv)}`")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"devices: {[d.device_type for d in tf.config.list_physical_devices()]}; "
          f"Python {platform.python_version()}; load average at the end: {load}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs per run, the first one untimed (>= 2)")
    parser.add_argument("--repeats", type=int, default=9,
                        help="interleaved runs of every configuration")
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.steps < 1 or args.repeats < 1:
        parser.error("needs --epochs >= 2, --steps >= 1 and --repeats >= 1")
    run(args)


if __name__ == "__main__":
    main()
