"""Structured channel pruning (`prune_channels`) against an unpruned MobileNetV2, a thinner
one trained from scratch and unstructured magnitude pruning: MACs, size, LiteRT latency and
accuracy, over several seeds.

On scikit-learn's digits (8x8x1, pixels / 16; one stratified 80/20 split, `random_state=0`,
for every seed), upsampled with `tf.image.resize` (bilinear) to `--input-size` (default
16x16x1, so that the latency is measurable and the model keeps two stride-2 stages), the
package's MobileNetV2 (`keras_dnnopt.models.mobilenet_v2((S, S, 1), num_classes=10,
alpha=--alpha, batch_norm_momentum=0.9)`, softmax output), each seed of `--seeds`
(0, 1, ...) gives these rows:

- unpruned: trained `--epochs` (Adam, `--learning-rate`, batch `--batch-size`);
- channels 0.5x / 0.3x MACs: `prune_channels(unpruned, target_macs=0.5 (0.3),
  round_to=--round-to)` (L1 criterion), its Keras test accuracy right after pruning, then
  `--finetune` epochs (Adam, `--finetune-learning-rate`) distilled from the unpruned model
  (`keras_dnnopt.distillation.Distiller(teacher=unpruned, student=pruned, temperature=4,
  alpha=0.1, from_logits=False)`);
- thinner from scratch: `mobilenet_v2(..., alpha=a)` with the `a` (searched on a grid
  below `--alpha`) whose MACs are closest to 0.5x the unpruned model's, trained from scratch
  on labels only for the same budget: `--epochs` at `--learning-rate`, then `--finetune` at
  `--finetune-learning-rate`;
- magnitude 50% / magnitude `--sparse-sparsity` (85%): `prune(unpruned, target_sparsity,
  end_step=...)` (polynomial schedule, reaching the target at ~70% of the fine-tuning
  steps), `--finetune` epochs distilled from the unpruned model as above with
  `PruningCallback()`, then `strip_pruning`. For the sparse row the float file is also
  converted with `converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]`
  (`export_tflite` has no such mode: the benchmark calls the TFLite converter itself, built
  as `export_tflite` builds it).

Columns (mean +- std over the seeds): the MACs ratio to the unpruned model
(`keras_dnnopt.profiling.profile(model).macs`, batch norm folded), parameters, the float and
int8 file sizes (`export_tflite(model, path)` and `export_tflite(..., quantization="int8",
representative_data=x_train[:300], calibration_steps=300)`; raw KiB and gzipped KiB of the
float file), the LiteRT latency of both files at batch 1, 1 thread (XNNPACK, the default
delegate; `benchmark_tflite`: the median of `--latency-rounds` medians of `--latency-runs`
inferences, the files of one seed measured in turn, round after round, so that the load of
the machine falls on all of them alike) and its ratio to the unpruned file of the same seed
(median over seeds), the Keras accuracy right after pruning (before fine-tuning) and the
test accuracy of the float and int8 `.tflite` files (`evaluate_tflite`). A second table
compares, for the `--sparse-sparsity` row, the dense float file with the sparse one.

Then a verdict per target: at 0.5x MACs, float and int8 latency <= 0.6x the unpruned
model's (median over seeds of the per-seed ratio) and float TFLite accuracy within 1 point
of the unpruned model's (mean over seeds); whether pruning beats the thinner model trained
from scratch; whether 50% magnitude pruning and the sparse file are faster than dense.
Latencies are measured on a shared machine: other jobs add noise (the rounds spread it).

    python benchmarks/bench_channel_pruning.py --json /tmp/channel_pruning_keras3.json
    TF_USE_LEGACY_KERAS=1 python benchmarks/bench_channel_pruning.py

A quick check: `python benchmarks/bench_channel_pruning.py --seeds 1 --epochs 1 --finetune
1` (about 7 minutes on 2 shared cores, either Keras: most of it is tracing 7 trainings and
converting 11 files; after 1 epoch MobileNetV2 still predicts one class, so its accuracies
mean nothing). A seed with the defaults takes about 8 minutes there (`--seeds 2`: 16 min).
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_dnnopt.backend import KERAS_NAME, USING_TF_KERAS, keras, tf  # noqa: E402
from keras_dnnopt.compression import (  # noqa: E402
    PruningCallback,
    channel_pruning_plan,
    prune,
    strip_pruning,
)
from keras_dnnopt.distillation import Distiller  # noqa: E402
from keras_dnnopt.export import (  # noqa: E402
    benchmark_tflite,
    evaluate_tflite,
    export_tflite,
    file_sizes,
)
from keras_dnnopt.export.tflite import _make_converter  # noqa: E402
from keras_dnnopt.models import mobilenet_v2  # noqa: E402
from keras_dnnopt.profiling import profile  # noqa: E402

from _common import digits_split, litert_version, machine_line, print_footer  # noqa: E402

UNPRUNED, THIN = "unpruned", "thinner from scratch"
KERAS3, TF_KERAS = "Keras 3", "tf_keras"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3,
                        help="number of seeds (0, 1, ...). Default 3.")
    parser.add_argument("--epochs", type=int, default=4, help="float training epochs")
    parser.add_argument("--finetune", type=int, default=2,
                        help="fine-tuning epochs after pruning (and extra epochs of the "
                             "thinner model)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--finetune-learning-rate", type=float, default=1e-3)
    parser.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width")
    parser.add_argument("--input-size", type=int, default=16,
                        help="digits are upsampled to this square size")
    parser.add_argument("--round-to", type=int, default=8,
                        help="prune_channels keeps a multiple of this many channels")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.3],
                        help="target_macs fractions for prune_channels")
    parser.add_argument("--sparse-sparsity", type=float, default=0.85,
                        help="sparsity of the row exported with TFLite's sparse path")
    parser.add_argument("--latency-runs", type=int, default=100)
    parser.add_argument("--latency-rounds", type=int, default=5)
    parser.add_argument("--json", metavar="PATH",
                        help="also write the rows to this file (after every seed)")
    parser.add_argument("--report", metavar="JSON",
                        help="print the tables and verdict of a --json file (no training)")
    return parser.parse_args()


# ------------------------------------------------------------------------------ helpers
def load_data(size):
    x_train, x_test, y_train, y_test = digits_split(test_size=0.2, random_state=0)

    def resize(x):
        return tf.image.resize(x, (size, size), method="bilinear").numpy().astype("float32")

    return resize(x_train), resize(x_test), y_train, y_test


def build(args, alpha):
    shape = (args.input_size, args.input_size, 1)
    return mobilenet_v2(shape, num_classes=10, alpha=alpha, batch_norm_momentum=0.9)


def train(model, x, y, epochs, learning_rate, batch_size, callbacks=None):
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    if epochs:
        model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0,
                  callbacks=callbacks or [])
    return model


def distill(teacher, student, x, y, args, callbacks=None):
    """`--finetune` epochs of `student`, distilled from `teacher` (both end in a softmax)."""
    distiller = Distiller(teacher, student, temperature=4.0, alpha=0.1, from_logits=False)
    distiller.compile(keras.optimizers.Adam(args.finetune_learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if args.finetune:
        distiller.fit(x, y, batch_size=args.batch_size, epochs=args.finetune, verbose=0,
                      callbacks=callbacks or [])
    return distiller.student


def copy_model(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def keras_accuracy(model, x, y):
    predictions = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(predictions, axis=-1) == y))


def macs_of(model):
    return int(profile(model).macs)


def closest_alpha(args, target_macs):
    """The width on a grid below `--alpha` whose MobileNetV2 has MACs closest to
    `target_macs`: `(alpha, macs, {alpha: macs})`."""
    grid = [round(a, 3) for a in np.arange(0.1, args.alpha, 0.025)]
    found = {alpha: macs_of(build(args, alpha)) for alpha in grid}
    alpha = min(found, key=lambda a: (abs(found[a] - target_macs), -a))
    return alpha, found[alpha], found


def export_sparse(model, path):
    """A float file through TFLite's sparse path. `export_tflite` has no sparsity mode, so
    the converter is made as it makes it (`from_keras_model` on tf_keras, a SavedModel on
    Keras 3) and given `optimizations = [EXPERIMENTAL_SPARSITY]`."""
    with tempfile.TemporaryDirectory(prefix="bench_sparse_") as tmp:
        converter = _make_converter(model, os.path.join(tmp, "saved_model"))
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        content = converter.convert()
    with open(path, "wb") as f:
        f.write(content)
    return path


def magnitude_prune(unpruned, sparsity, x, y, args):
    steps = math.ceil(len(x) / args.batch_size) * max(args.finetune, 1)
    frequency = max(1, steps // 10)
    end_step = max(frequency, int(0.7 * steps) // frequency * frequency)
    pruned = prune(copy_model(unpruned), target_sparsity=sparsity, end_step=end_step,
                   frequency=frequency)
    pruned = distill(unpruned, pruned, x, y, args, callbacks=[PruningCallback()])
    return strip_pruning(pruned)


def kernel_sparsity(model):
    zeros = total = 0
    for layer in model.layers:
        if type(layer).__name__ in ("Conv2D", "Dense"):
            kernel = np.asarray(layer.kernel.numpy())
            zeros += int(np.sum(kernel == 0))
            total += kernel.size
    return zeros / max(total, 1)


# ------------------------------------------------------------------------------ one seed
def run_seed(seed, args, data, thin_alpha, folder, start):
    x_train, x_test, y_train, y_test = data
    representative = x_train[:300]

    def log(text):
        print(f"[{time.perf_counter() - start:.0f} s] seed {seed}: {text}", file=sys.stderr,
              flush=True)

    keras.utils.set_random_seed(seed)
    unpruned = train(build(args, args.alpha), x_train, y_train, args.epochs,
                     args.learning_rate, args.batch_size)
    base_macs = macs_of(unpruned)
    log(f"unpruned trained ({base_macs:,} MACs)")
    models = {UNPRUNED: (unpruned, None)}

    for target in args.targets:
        keras.utils.set_random_seed(seed)
        plan = channel_pruning_plan(unpruned, target_macs=target, round_to=args.round_to)
        pruned = plan.apply()
        after = keras_accuracy(pruned, x_test, y_test)
        pruned = distill(unpruned, pruned, x_train, y_train, args)
        models[f"channels {target:g}x MACs"] = (pruned, after)
        log(f"channels {target:g}x: plan {plan.macs / plan.macs_before:.3f} of the MACs, "
            f"accuracy after pruning {after:.4f}")

    keras.utils.set_random_seed(seed)
    # One `fit` (no second compile and trace): `--learning-rate` for `--epochs`, then
    # `--finetune-learning-rate` for `--finetune` epochs.
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch, lr: args.learning_rate if epoch < args.epochs
        else args.finetune_learning_rate)
    thin = train(build(args, thin_alpha), x_train, y_train, args.epochs + args.finetune,
                 args.learning_rate, args.batch_size, callbacks=[schedule])
    models[THIN] = (thin, None)
    log(f"thinner alpha={thin_alpha:g} trained")

    sparse_name = f"magnitude {args.sparse_sparsity:.0%}"
    for sparsity, name in ((0.5, "magnitude 50%"), (args.sparse_sparsity, sparse_name)):
        keras.utils.set_random_seed(seed)
        models[name] = (magnitude_prune(unpruned, sparsity, x_train, y_train, args), None)
        log(f"{name} fine-tuned")

    files = {}
    for name, (model, _) in models.items():
        stem = os.path.join(folder, f"{seed}_{len(files)}")
        export_tflite(model, stem + "_float.tflite")
        files[(name, "float")] = stem + "_float.tflite"
        if name.startswith("magnitude"):
            continue  # float only: int8 of a dense-kernel model tells nothing new here
        export_tflite(model, stem + "_int8.tflite", quantization="int8",
                      representative_data=representative, calibration_steps=300)
        files[(name, "int8")] = stem + "_int8.tflite"
    files[(sparse_name, "sparse")] = export_sparse(
        models[sparse_name][0], os.path.join(folder, f"{seed}_sparse.tflite"))
    log(f"{len(files)} files exported; timing")

    latencies = {key: [] for key in files}
    for _ in range(args.latency_rounds):
        for key, path in files.items():
            result = benchmark_tflite(path, threads=1, runs=args.latency_runs, warmup=20,
                                      batch_size=1)
            latencies[key].append(result.median_ms)

    rows = []
    for name, (model, after) in models.items():
        row = {"method": name, "seed": seed, "macs": macs_of(model),
               "macs_ratio": macs_of(model) / base_macs,
               "params": int(model.count_params()), "kernel_sparsity": kernel_sparsity(model),
               "accuracy_after_pruning": after,
               "keras_accuracy": keras_accuracy(model, x_test, y_test)}
        if name == THIN:
            row["alpha"] = thin_alpha
        for kind in ("float", "int8", "sparse"):
            if (name, kind) not in files:
                continue
            path = files[(name, kind)]
            sizes = file_sizes(path)
            row[f"{kind}_size_bytes"] = sizes.size_bytes
            row[f"{kind}_gzipped_bytes"] = sizes.gzipped_size_bytes
            row[f"{kind}_latency_ms"] = float(np.median(latencies[(name, kind)]))
            row[f"{kind}_accuracy"] = evaluate_tflite(path, (x_test, y_test))["accuracy"]
        rows.append(row)
    base = rows[0]
    for row in rows:
        for kind in ("float", "int8", "sparse"):
            if f"{kind}_latency_ms" in row:
                reference = base["float_latency_ms"] if kind == "sparse" else (
                    base[f"{kind}_latency_ms"])
                row[f"{kind}_latency_ratio"] = row[f"{kind}_latency_ms"] / reference
        if "sparse_latency_ms" in row:
            row["sparse_vs_dense"] = row["sparse_latency_ms"] / row["float_latency_ms"]
    return rows


# ------------------------------------------------------------------------------ table
def mean_std(values, scale=1.0, digits=2):
    values = np.asarray([v for v in values if v is not None], dtype=np.float64) * scale
    if not len(values):
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def median(values, digits=3):
    values = [v for v in values if v is not None]
    return f"{float(np.median(values)):.{digits}f}" if values else "-"


def grouped(rows):
    groups = {}
    for row in rows:
        groups.setdefault(row["method"], []).append(row)
    return groups


def print_table(result):
    groups = grouped(result["rows"])
    print(f"\n{result['keras']}: MobileNetV2 alpha={result['args']['alpha']}, "
          f"{result['args']['input_size']}x{result['args']['input_size']}x1, unpruned "
          f"{groups[UNPRUNED][0]['macs']:,} MACs; thinner alpha={result['thin_alpha']:g} "
          f"({result['thin_macs_ratio']:.3f}x MACs)\n")
    print("| method | seeds | MACs ratio | params | float KiB | float gz KiB | int8 KiB "
          "| float ms b1 | float ratio | int8 ms b1 | int8 ratio | Keras acc. after "
          "pruning (%) | float TFLite acc. (%) | int8 TFLite acc. (%) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, rows in groups.items():
        def col(key, rows=rows):
            return [row.get(key) for row in rows]

        label = f"{name} (alpha={result['thin_alpha']:g})" if name == THIN else name
        print(f"| {label} | {len(rows)} | {mean_std(col('macs_ratio'), digits=3)} "
              f"| {mean_std(col('params'), digits=0)} "
              f"| {mean_std(col('float_size_bytes'), 1 / 1024, 1)} "
              f"| {mean_std(col('float_gzipped_bytes'), 1 / 1024, 1)} "
              f"| {mean_std(col('int8_size_bytes'), 1 / 1024, 1)} "
              f"| {mean_std(col('float_latency_ms'), digits=4)} "
              f"| {median(col('float_latency_ratio'))} "
              f"| {mean_std(col('int8_latency_ms'), digits=4)} "
              f"| {median(col('int8_latency_ratio'))} "
              f"| {mean_std(col('accuracy_after_pruning'), 100)} "
              f"| {mean_std(col('float_accuracy'), 100)} "
              f"| {mean_std(col('int8_accuracy'), 100)} |")
    for name, rows in groups.items():
        if "sparse_latency_ms" not in rows[0]:
            continue
        def col(key, rows=rows):
            return [row.get(key) for row in rows]

        print(f"\n{name} (kernel sparsity {mean_std(col('kernel_sparsity'), 100, 1)}%): "
              "dense float file vs `EXPERIMENTAL_SPARSITY` float file, LiteRT with XNNPACK, "
              "batch 1, 1 thread\n")
        print("| file | KiB | gz KiB | ms b1 | ratio to dense (median) | TFLite acc. (%) |")
        print("|---|---|---|---|---|---|")
        print(f"| dense | {mean_std(col('float_size_bytes'), 1 / 1024, 1)} "
              f"| {mean_std(col('float_gzipped_bytes'), 1 / 1024, 1)} "
              f"| {mean_std(col('float_latency_ms'), digits=4)} | 1.000 "
              f"| {mean_std(col('float_accuracy'), 100)} |")
        print(f"| sparse | {mean_std(col('sparse_size_bytes'), 1 / 1024, 1)} "
              f"| {mean_std(col('sparse_gzipped_bytes'), 1 / 1024, 1)} "
              f"| {mean_std(col('sparse_latency_ms'), digits=4)} "
              f"| {median(col('sparse_vs_dense'))} "
              f"| {mean_std(col('sparse_accuracy'), 100)} |")


def verdict(ok, text):
    print(f"- {'met' if ok else 'MISSED'}: {text}")


def print_verdict(result):
    groups = grouped(result["rows"])
    base = groups[UNPRUNED]
    base_acc = float(np.mean([row["float_accuracy"] for row in base]))
    half = next((name for name in groups if name.startswith("channels 0.5x")), None)
    print("\nVerdict:")
    if half is None:
        print("- n/a: no 0.5x MACs row (`--targets` lacks 0.5)")
    else:
        rows = groups[half]
        for kind in ("float", "int8"):
            ratio = float(np.median([row[f"{kind}_latency_ratio"] for row in rows]))
            verdict(ratio <= 0.6, f"{half}: {kind} latency <= 0.6x unpruned: {ratio:.3f}x "
                    "(median over seeds; per seed "
                    + ", ".join(f"{row[f'{kind}_latency_ratio']:.3f}" for row in rows) + ")")
        acc = float(np.mean([row["float_accuracy"] for row in rows]))
        verdict(acc >= base_acc - 0.01, f"{half}: float TFLite accuracy within 1 point of "
                f"unpruned: {100 * acc:.2f}% vs {100 * base_acc:.2f}% "
                f"({100 * (acc - base_acc):+.2f} points)")
        thin_acc = float(np.mean([row["float_accuracy"] for row in groups[THIN]]))
        thin_ratio = float(np.median([row["float_latency_ratio"] for row in groups[THIN]]))
        prune_ratio = float(np.median([row["float_latency_ratio"] for row in rows]))
        print(f"- {'pruning beats' if acc > thin_acc else 'pruning does NOT beat'} the "
              f"thinner model from scratch (alpha={result['thin_alpha']:g}, "
              f"{result['thin_macs_ratio']:.3f}x MACs): {100 * acc:.2f}% vs "
              f"{100 * thin_acc:.2f}% ({100 * (acc - thin_acc):+.2f} points); float latency "
              f"ratio {prune_ratio:.3f}x vs {thin_ratio:.3f}x")
    for name, rows in groups.items():
        if not name.startswith("magnitude"):
            continue
        ratio = float(np.median([row["float_latency_ratio"] for row in rows]))
        acc = float(np.mean([row["float_accuracy"] for row in rows]))
        print(f"- {name}: MACs on paper {rows[0]['macs_ratio']:.3f}x, float latency "
              f"{ratio:.3f}x unpruned ({'a speed-up' if ratio < 0.95 else 'no speed-up'}, "
              f"as expected of dense kernels), float file "
              f"{np.mean([r['float_size_bytes'] for r in rows]) / 1024:.1f} KiB "
              f"({np.mean([r['float_gzipped_bytes'] for r in rows]) / 1024:.1f} KiB "
              f"gzipped), accuracy {100 * acc:.2f}% ({100 * (acc - base_acc):+.2f} points)")
        if "sparse_vs_dense" in rows[0]:
            sparse = float(np.median([row["sparse_vs_dense"] for row in rows]))
            faster = "faster" if sparse < 0.95 else "NOT faster"
            print(f"- {name}, TFLite sparse file: {faster} than the dense file on this CPU "
                  f"(XNNPACK, 1 thread): {sparse:.3f}x its latency (median over seeds), "
                  f"{np.mean([r['sparse_size_bytes'] for r in rows]) / 1024:.1f} KiB vs "
                  f"{np.mean([r['float_size_bytes'] for r in rows]) / 1024:.1f} KiB")


def print_report(result):
    print_table(result)
    print_verdict(result)
    print(f"\n- {result['keras']} ({result['keras_version']}), TensorFlow "
          f"{result['tensorflow']}, LiteRT {result['litert']}; seeds {result['seeds']}; test "
          f"{result['test_size']} images, train {result['train_size']}; "
          f"{result['seconds']:.0f} s; `{result['command']}`; {result['machine']}; "
          "latencies on a shared machine (other jobs add noise)")


def main():
    args = parse_args()
    if args.report:
        with open(args.report, encoding="utf-8") as f:
            print_report(json.load(f))
        print_footer()
        return
    data = load_data(args.input_size)
    start = time.perf_counter()
    base_macs = macs_of(build(args, args.alpha))
    thin_alpha, thin_macs, searched = closest_alpha(args, 0.5 * base_macs)
    print(f"[{time.perf_counter() - start:.0f} s] thinner model: alpha={thin_alpha:g}, "
          f"{thin_macs / base_macs:.3f}x MACs (searched "
          + ", ".join(f"{a:g}: {m / base_macs:.3f}" for a, m in searched.items()) + ")",
          file=sys.stderr, flush=True)
    env = "TF_USE_LEGACY_KERAS=1 " if USING_TF_KERAS else ""
    result = {
        "keras": TF_KERAS if USING_TF_KERAS else KERAS3,
        "keras_version": KERAS_NAME,
        "tensorflow": tf.__version__,
        "litert": litert_version(),
        "seeds": [],
        "args": {k: v for k, v in vars(args).items() if k not in ("json", "report")},
        "thin_alpha": thin_alpha,
        "thin_macs_ratio": thin_macs / base_macs,
        "alpha_search": {str(a): m / base_macs for a, m in searched.items()},
        "test_size": int(len(data[3])),
        "train_size": int(len(data[2])),
        "command": f"{env}python {' '.join(sys.argv)}",
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            result["rows"].extend(run_seed(seed, args, data, thin_alpha, folder, start))
            result["seeds"].append(seed)
            result["machine"] = machine_line()
            result["seconds"] = round(time.perf_counter() - start, 1)
            if args.json:  # after every seed, so that an interrupted run keeps its seeds
                with open(args.json, "w", encoding="utf-8") as f:
                    json.dump(result, f, indent=1)
    print_report(result)
    print_footer(f" (rows written to `{args.json}`)" if args.json else "")


if __name__ == "__main__":
    main()
