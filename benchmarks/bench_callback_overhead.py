"""Step-time overhead of the keras_dnnopt callbacks in `model.fit`.

Trains a small MobileNet (`keras_dnnopt.models.mobilenet_v1(input_shape=(32, 32, 3),
num_classes=10, alpha=0.25)`) with SGD(momentum=0.9) on one repeated random batch of
64, with no callback and with each callback alone (LearningRateMonitor,
OneCycleMomentum, GradientNormMonitor, ThroughputMonitor), and, for comparison,
OneCycleMomentum as it was before it computed the momentum once per optimizer step.

Two methods (`--method fit|ab|both`):

- `ab`, step-level A/B in one process, the one that resolves 2%: whole `fit` runs differ
  by 10% or more from one another on a 2-core machine even when it is quiet. For each
  callback, the train function traced without it (A) and the one traced with its
  patches, wrapped in its batch hooks (B), run alternately on the same model, in a
  random order within each pair, as `fit`'s loop calls them; its epoch hooks run every
  `--steps` B steps and are timed. Overhead: `mean(B - A) / mean(A)` plus the epoch
  hooks per step, with a 95% bootstrap interval over the `--pairs` pairs.
- `fit`, whole `fit` runs, end to end: each run is one `fit` of `--epochs` epochs of
  `--steps` steps; the first epoch absorbs the (re)tracing and is not timed; each later
  epoch gives a per-step time, and the run's figure is the median of those. The timer
  only hooks `on_epoch_begin`/`on_epoch_end` (a batch hook would change how both Kerases
  dispatch steps); it is the last callback, so the epoch-end work of the callback under
  test is counted. Each repeat runs every configuration once, in a fresh random order
  (fixed seed); the overhead is paired within a repeat, `t(callback) / t(none) - 1`,
  median and interquartile range (IQR) over repeats, of wall time and of process CPU
  time. Also the number of graph nodes each callback adds to the traced train function
  (its graph and the functions it calls), a noise-free figure. (`perf stat -e
  instructions` is not supported in the container this was written on.)

Prints a Markdown table, the exact command and the versions.

Run (Keras 3; add TF_USE_LEGACY_KERAS=1 for tf_keras):

    python benchmarks/bench_callback_overhead.py --method ab --pairs 600 --steps 20
    python benchmarks/bench_callback_overhead.py --method fit --repeats 15 --epochs 4 --steps 20
"""

import argparse
import os
import random
import statistics
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

from _common import print_footer  # noqa: E402

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


def model_and_data():
    """The compiled model (seed 0) and one random batch repeated forever."""
    keras.utils.set_random_seed(0)
    model = mobilenet_v1(input_shape=(32, 32, 3), num_classes=10, alpha=0.25)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(BATCH,))
    return model, tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(2)


def run(args):
    model, dataset = model_and_data()

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


def _sync(logs):
    """Waits for the step's results (the train function may return before they exist)."""
    for value in tf.nest.flatten(logs):
        if hasattr(value, "numpy"):
            value.numpy()
    return logs


def _step_with(patched, callbacks, iterator, step):
    """B: the patched step inside the callbacks' batch hooks, as `fit` runs it (seconds)."""
    start = time.perf_counter()
    for callback in callbacks:
        callback.on_train_batch_begin(step)
    logs = dict(_sync(patched(iterator)))
    for callback in callbacks:
        callback.on_train_batch_end(step, logs)
    return time.perf_counter() - start


def _step_without(plain, iterator):
    """A: the step traced without any callback (seconds)."""
    start = time.perf_counter()
    _sync(plain(iterator))
    return time.perf_counter() - start


def step_ab(args):
    """In-process A/B at the step level: for each callback, the train function traced
    without it (A) and the one traced with its patches, wrapped in its batch hooks (B),
    are called alternately, in a random order within each pair, on the same model, as
    `fit`'s loop would call them; its epoch hooks run every `--steps` B steps and are
    timed too. A slow spell of the machine hits both halves of a pair alike, so the
    paired differences resolve far less than the spread between whole `fit` runs."""
    model, dataset = model_and_data()
    iterator = iter(dataset)
    order = random.Random(0)
    boot = np.random.default_rng(0)
    rows = []
    configs = configurations(args.pairs)
    for name, make in configs.items():
        if name == "none" or (args.only and name not in args.only):
            continue
        model.make_train_function(force=True)
        plain = model.train_function
        for _ in range(5):  # traces A before any patch, then warms it
            _sync(plain(iterator))
        callbacks = make()
        for callback in callbacks:
            callback.set_model(model)
            callback.set_params({"epochs": 1, "steps": args.pairs, "verbose": 0})
            callback.on_train_begin()
        patched = model.train_function  # traced at its first call, with the patches
        epoch_seconds = 0.0

        for callback in callbacks:
            callback.on_epoch_begin(0)
        for step in range(5):  # traces B, warms it
            _step_with(patched, callbacks, iterator, step)
        a_times, b_times = [], []
        for step in range(args.pairs):
            if order.random() < 0.5:
                a_times.append(_step_without(plain, iterator))
                b_times.append(_step_with(patched, callbacks, iterator, step))
            else:
                b_times.append(_step_with(patched, callbacks, iterator, step))
                a_times.append(_step_without(plain, iterator))
            if (step + 1) % args.steps == 0:  # an epoch boundary of `fit`
                start = time.perf_counter()
                logs = {}
                for callback in callbacks:
                    callback.on_epoch_end(step // args.steps, logs)
                for callback in callbacks:
                    callback.on_epoch_begin(step // args.steps + 1)
                epoch_seconds += time.perf_counter() - start
        for callback in callbacks:
            callback.on_train_end()
        a, b = np.array(a_times), np.array(b_times)
        diff = b - a
        base = a.mean()
        epoch_share = epoch_seconds / args.pairs
        mean = (diff.mean() + epoch_share) / base
        resampled = boot.integers(0, len(diff), size=(2000, len(diff)))
        means = (diff[resampled].mean(axis=1) + epoch_share) / a[resampled].mean(axis=1)
        low, high = np.percentile(means, [2.5, 97.5])
        median = np.median(diff) / np.median(a)
        rows.append((name, 1e3 * np.median(a), 1e3 * np.median(b), 100 * mean, 100 * low,
                     100 * high, 100 * median, 1e6 * epoch_share))
    print(f"\nStep-level A/B, {KERAS_NAME} (TF {tf.__version__}), mobilenet_v1(alpha=0.25) on "
          f"32x32x3, batch {BATCH}: {args.pairs} alternating pairs per callback, epoch hooks "
          f"every {args.steps} steps\n")
    print("| callback | A: step without (ms, median) | B: step with (ms, median) "
          "| overhead, mean [95% CI] | overhead, median of differences "
          "| epoch hooks per step (us) | <= 2% |")
    print("|---|---:|---:|---:|---:|---:|:---:|")
    for name, a_ms, b_ms, mean, low, high, median, epoch_us in rows:
        verdict = "yes" if high <= 2.0 else ("no" if low > 2.0 else "undecided")
        print(f"| {name} | {a_ms:.2f} | {b_ms:.2f} | {mean:+.2f}% [{low:+.2f}, {high:+.2f}] "
              f"| {median:+.2f}% | {epoch_us:.1f} | {verdict} |")
    print("\n`<= 2%`: yes when the whole 95% interval is at or below 2%, no when it is all "
          "above, undecided otherwise.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs per run, the first one untimed (>= 2)")
    parser.add_argument("--repeats", type=int, default=9,
                        help="interleaved runs of every configuration (--method fit)")
    parser.add_argument("--pairs", type=int, default=400,
                        help="alternating step pairs per callback (--method ab)")
    parser.add_argument("--only", nargs="+", choices=list(configurations(0))[1:],
                        metavar="CALLBACK", help="A/B only these callbacks (--method ab)")
    parser.add_argument("--method", choices=["fit", "ab", "both"], default="both",
                        help="whole `fit` runs, step-level A/B, or both (default)")
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.steps < 1 or args.repeats < 1 or args.pairs < 10:
        parser.error("needs --epochs >= 2, --steps >= 1, --repeats >= 1 and --pairs >= 10")
    if args.method in ("fit", "both"):
        run(args)
    if args.method in ("ab", "both"):
        step_ab(args)
    print_footer()


if __name__ == "__main__":
    main()
