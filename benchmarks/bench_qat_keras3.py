"""Quantization-aware training on Keras 3 against float, post-training int8 and TF-MOT QAT:
accuracy, agreement, size and latency of the int8 TFLite files, over several seeds.

On scikit-learn's digits (8x8x1; one stratified 80/20 split, `random_state=0`, for every
seed) and for two architectures, the package's small MobileNet
(`keras_dnnopt.models.mobilenet_v1((8, 8, 1), num_classes=10, alpha=--alpha,
batch_norm_momentum=0.9)`) and a small functional residual CNN (Conv2D+BN+ReLU stem, two
residual `Add` blocks, the second after a stride-2 convolution, GlobalAveragePooling2D,
Dense softmax), each seed of `--seeds` (0, 1, ...) trains a float model for `--epochs`
(Adam, `--learning-rate`, batch `--batch-size`), then from that same float model, with the
same budget of `--finetune` more epochs (Adam, `--finetune-learning-rate`) for every row:

- float fine-tuned: a copy trained `--finetune` epochs in float, exported float
  (`export_tflite(model, path)`);
- PTQ int8: that fine-tuned float model, `export_tflite(..., quantization="int8",
  representative_data=x_train[:500], calibration_steps=500)`;
- QAT int8 (Keras 3) / TF-MOT QAT int8 (tf_keras, TF_USE_LEGACY_KERAS=1):
  `keras_dnnopt.compression.quantize(pretrained float model)` (native fake quantization
  on Keras 3, TF-MOT on tf_keras), `--finetune` epochs, then
  `export_tflite(qat, path, quantization="int8")` with no representative data.

Columns (mean +- std over the seeds): the test accuracy of the `.tflite` file
(`evaluate_tflite`, LiteRT) and of the Keras model it came from, the top-1 agreement on the
test split between that Keras model and its file (`compare_outputs`), the file size
(bytes, KiB) and the LiteRT latency at batch 1, 1 thread (`benchmark_tflite`: the median of
`--latency-rounds` medians of `--latency-runs` inferences, the files of one seed measured in
turn, round after round, so that the load of the machine falls on all of them alike).
Then a verdict on the Keras 3 QAT targets: int8 accuracy within 0.5 point of float
fine-tuned (mean over seeds) and not below PTQ int8; top-1 agreement >= 99% on every seed;
within 0.5 point of TF-MOT QAT (needs both runs, `--merge`); file size within 2% of the PTQ
int8 file; latency no worse than PTQ's (the median over seeds of the per-seed QAT/PTQ
latency ratio <= 1 +
`--latency-tolerance`). The same
checks are printed for TF-MOT QAT on tf_keras, as the reference.

Run once per Keras, then merge:

    TF_USE_LEGACY_KERAS=1 python benchmarks/bench_qat_keras3.py --json /tmp/qat_tf_keras.json
    python benchmarks/bench_qat_keras3.py --json /tmp/qat_keras3.json
    python benchmarks/bench_qat_keras3.py --merge /tmp/qat_tf_keras.json /tmp/qat_keras3.json

A quick check: `python benchmarks/bench_qat_keras3.py --seeds 1 --epochs 1 --finetune 1`.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_dnnopt.backend import KERAS_NAME, USING_TF_KERAS, keras, tf  # noqa: E402
from keras_dnnopt.compression import quantize  # noqa: E402
from keras_dnnopt.export import (  # noqa: E402
    benchmark_tflite,
    compare_outputs,
    evaluate_tflite,
    export_tflite,
    file_sizes,
)
from keras_dnnopt.models import mobilenet_v1  # noqa: E402

from _common import digits_split, litert_version, machine_line, print_footer  # noqa: E402

ARCHITECTURES = ("mobilenet_v1", "residual_cnn")
FLOAT, PTQ, QAT_K3, QAT_TFMOT = ("float fine-tuned", "PTQ int8", "QAT int8",
                                  "TF-MOT QAT int8")
METHODS = (FLOAT, PTQ, QAT_K3, QAT_TFMOT)
KERAS3, TF_KERAS = "Keras 3", "tf_keras"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3,
                        help="number of seeds (0, 1, ...). Default 3.")
    parser.add_argument("--epochs", type=int, default=15, help="float pretraining epochs")
    parser.add_argument("--finetune", type=int, default=3,
                        help="fine-tuning epochs, float and QAT alike")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--finetune-learning-rate", type=float, default=1e-4)
    parser.add_argument("--alpha", type=float, default=0.5, help="MobileNet width")
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES),
                        choices=ARCHITECTURES)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--latency-rounds", type=int, default=5)
    parser.add_argument("--latency-tolerance", type=float, default=0.05,
                        help="int8 QAT latency passes at <= (1 + this) x PTQ's")
    parser.add_argument("--json", metavar="PATH", help="also write the rows to this file")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="print the combined table of these --json files (no training)")
    return parser.parse_args()


# ------------------------------------------------------------------------------ models
def residual_cnn(input_shape=(8, 8, 1), num_classes=10, width=16, momentum=0.9):
    """Stem Conv-BN-ReLU, a residual block at `width`, a stride-2 Conv-BN-ReLU to
    `2 * width`, a residual block there, global average pooling, dense softmax."""
    layers = keras.layers

    def conv_bn(x, filters, strides=1, relu=True, name=None):
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                          name=f"{name}_conv")(x)
        x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x) if relu else x

    def residual_block(x, filters, name):
        shortcut = x
        x = conv_bn(x, filters, name=f"{name}_a")
        x = conv_bn(x, filters, relu=False, name=f"{name}_b")
        x = layers.Add(name=f"{name}_add")([x, shortcut])
        return layers.ReLU(name=f"{name}_out")(x)

    inputs = keras.Input(input_shape)
    x = conv_bn(inputs, width, name="stem")
    x = residual_block(x, width, "res1")
    x = conv_bn(x, 2 * width, strides=2, name="down")
    x = residual_block(x, 2 * width, "res2")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="residual_cnn")


def build(architecture, alpha):
    if architecture == "mobilenet_v1":
        return mobilenet_v1((8, 8, 1), num_classes=10, alpha=alpha, batch_norm_momentum=0.9)
    return residual_cnn()


def train(model, x, y, epochs, learning_rate, batch_size):
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    if epochs:
        model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    return model


def copy_model(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def keras_accuracy(model, x, y):
    predictions = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(predictions, axis=-1) == y))


# ------------------------------------------------------------------------------ one run
def run_seed(architecture, seed, args, data, folder):
    """The rows of one architecture and seed: `{method: row dict}`."""
    x_train, x_test, y_train, y_test = data
    keras.utils.set_random_seed(seed)
    pretrained = train(build(architecture, args.alpha), x_train, y_train, args.epochs,
                       args.learning_rate, args.batch_size)
    pretrained_accuracy = keras_accuracy(pretrained, x_test, y_test)

    qat_method = QAT_TFMOT if USING_TF_KERAS else QAT_K3
    files, errors = {}, {}
    # The QAT copy is made before the float model is fine-tuned (a copy of it as well):
    # both start from the same pretrained weights.
    try:
        keras.utils.set_random_seed(seed)
        qat = quantize(pretrained)
        train(qat, x_train, y_train, args.finetune, args.finetune_learning_rate,
              args.batch_size)
        path = os.path.join(folder, f"{architecture}_{seed}_qat.tflite")
        export_tflite(qat, path, quantization="int8")
        files[qat_method] = (qat, path)
    except Exception as error:  # noqa: BLE001 - reported in the table, traceback on stderr
        print(f"\n{qat_method} failed ({architecture}, seed {seed}):", file=sys.stderr)
        traceback.print_exc()
        errors[qat_method] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"

    keras.utils.set_random_seed(seed)
    finetuned = train(copy_model(pretrained), x_train, y_train, args.finetune,
                      args.finetune_learning_rate, args.batch_size)
    path = os.path.join(folder, f"{architecture}_{seed}_float.tflite")
    export_tflite(finetuned, path)
    files[FLOAT] = (finetuned, path)
    path = os.path.join(folder, f"{architecture}_{seed}_ptq.tflite")
    export_tflite(finetuned, path, quantization="int8", representative_data=x_train[:500],
                  calibration_steps=500)
    files[PTQ] = (finetuned, path)

    latencies = {method: [] for method in files}
    for _ in range(args.latency_rounds):
        for method, (_, path) in files.items():
            result = benchmark_tflite(path, threads=1, runs=args.latency_runs, warmup=20,
                                      batch_size=1)
            latencies[method].append(result.median_ms)

    rows = {}
    for method, (model, path) in files.items():
        sizes = file_sizes(path)
        rows[method] = {
            "architecture": architecture, "method": method, "seed": seed,
            "tflite_accuracy": evaluate_tflite(path, (x_test, y_test))["accuracy"],
            "keras_accuracy": keras_accuracy(model, x_test, y_test),
            "agreement": compare_outputs(model, path, x_test).top1_agreement,
            "size_bytes": sizes.size_bytes,
            "gzipped_size_bytes": sizes.gzipped_size_bytes,
            "latency_ms": float(np.median(latencies[method])),
            "pretrained_keras_accuracy": pretrained_accuracy,
        }
    for method, error in errors.items():
        rows[method] = {"architecture": architecture, "method": method, "seed": seed,
                        "error": error}
    return rows


# ------------------------------------------------------------------------------ table
def mean_std(values, scale=1.0, digits=2):
    values = np.asarray(values, dtype=np.float64) * scale
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def grouped(results):
    """`{(keras, architecture, method): [row, ...]}` in a stable order."""
    groups = {}
    for result in results:
        for row in result["rows"]:
            groups.setdefault((result["keras"], row["architecture"], row["method"]),
                              []).append(row)
    order = {name: i for i, name in enumerate((TF_KERAS, KERAS3))}
    return dict(sorted(groups.items(), key=lambda item: (
        ARCHITECTURES.index(item[0][1]), order[item[0][0]], METHODS.index(item[0][2]))))


def print_table(results):
    print("| Keras | architecture | method | seeds | TFLite test accuracy (%) "
          "| Keras model accuracy (%) | top-1 agreement, Keras vs file (%) | size (bytes) "
          "| size (KiB) | LiteRT latency b1 (median ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (keras_name, architecture, method), rows in grouped(results).items():
        failed = [row for row in rows if "error" in row]
        rows = [row for row in rows if "error" not in row]
        if rows:
            column = {key: [row[key] for row in rows] for key in rows[0]}
            print(f"| {keras_name} | {architecture} | {method} | {len(rows)} "
                  f"| {mean_std(column['tflite_accuracy'], 100)} "
                  f"| {mean_std(column['keras_accuracy'], 100)} "
                  f"| {mean_std(column['agreement'], 100)} "
                  f"| {mean_std(column['size_bytes'], digits=0)} "
                  f"| {mean_std(column['size_bytes'], 1 / 1024, 1)} "
                  f"| {mean_std(column['latency_ms'], digits=4)} |")
        for row in failed:
            print(f"| {keras_name} | {architecture} | {method} | seed {row['seed']} "
                  f"| failed: {row['error']} | | | | | |")


def mean_of(groups, keras_name, architecture, method, key):
    rows = [row for row in groups.get((keras_name, architecture, method), [])
            if "error" not in row]
    return (float(np.mean([row[key] for row in rows])), rows) if rows else (None, [])


def check(ok, text):
    mark = "n/a" if ok is None else ("PASS" if ok else "FAIL")
    print(f"- {mark}: {text}")


def print_verdict(results, latency_tolerance):
    groups = grouped(results)
    kerases = [result["keras"] for result in results]
    for keras_name, qat_method in ((KERAS3, QAT_K3), (TF_KERAS, QAT_TFMOT)):
        if keras_name not in kerases:
            continue
        for architecture in ARCHITECTURES:
            qat, qat_rows = mean_of(groups, keras_name, architecture, qat_method,
                                    "tflite_accuracy")
            flt, _ = mean_of(groups, keras_name, architecture, FLOAT, "tflite_accuracy")
            ptq, _ = mean_of(groups, keras_name, architecture, PTQ, "tflite_accuracy")
            if flt is None:
                continue
            label = "the target" if keras_name == KERAS3 else "reference only"
            print(f"\n{keras_name}, {architecture}: {qat_method} ({label})")
            if qat is None:
                check(False, f"{qat_method} gave no file (see the table and stderr)")
                continue
            check(qat >= flt - 0.005, f"int8 accuracy within 0.5 point of float fine-tuned: "
                  f"{100 * qat:.2f}% vs {100 * flt:.2f}% ({100 * (qat - flt):+.2f} points)")
            check(qat >= ptq, f"int8 accuracy not below PTQ int8: {100 * qat:.2f}% vs "
                  f"{100 * ptq:.2f}% ({100 * (qat - ptq):+.2f} points)")
            agreements = [row["agreement"] for row in qat_rows]
            check(min(agreements) >= 0.99, "top-1 agreement >= 99% on every seed: "
                  + ", ".join(f"{100 * a:.2f}%" for a in agreements))
            if keras_name == KERAS3:
                tfmot, _ = mean_of(groups, TF_KERAS, architecture, QAT_TFMOT,
                                   "tflite_accuracy")
                if tfmot is None:
                    check(None, "within 0.5 point of TF-MOT QAT: needs the tf_keras rows "
                          "(`--merge`)")
                else:
                    diff = qat - tfmot
                    note = " (better)" if diff > 0.005 else ""
                    check(diff >= -0.005, f"int8 accuracy within 0.5 point of TF-MOT QAT: "
                          f"{100 * qat:.2f}% vs {100 * tfmot:.2f}% ({100 * diff:+.2f} "
                          f"points){note}")
            size, _ = mean_of(groups, keras_name, architecture, qat_method, "size_bytes")
            ptq_size, _ = mean_of(groups, keras_name, architecture, PTQ, "size_bytes")
            ratio = size / ptq_size
            check(abs(ratio - 1) <= 0.02, f"file size within 2% of PTQ int8: {size:,.0f} vs "
                  f"{ptq_size:,.0f} bytes (ratio {ratio:.4f})")
            # Paired by seed (the files of one seed are timed in turn), the median of the
            # ratios: one noisy seed on this shared machine does not decide it.
            _, ptq_rows = mean_of(groups, keras_name, architecture, PTQ, "latency_ms")
            ptq_by_seed = {row["seed"]: row["latency_ms"] for row in ptq_rows}
            ratios = [row["latency_ms"] / ptq_by_seed[row["seed"]] for row in qat_rows
                      if row["seed"] in ptq_by_seed]
            ratio = float(np.median(ratios))
            check(ratio <= 1 + latency_tolerance, "latency no worse than PTQ int8: median "
                  f"over seeds of the QAT/PTQ latency ratio {ratio:.3f} (per seed "
                  + ", ".join(f"{r:.3f}" for r in ratios)
                  + f"; tolerance {latency_tolerance:.0%})")


def print_report(results, latency_tolerance):
    print_table(results)
    print("\nVerdict:")
    print_verdict(results, latency_tolerance)
    print()
    for result in results:
        print(f"- {result['keras']} ({result['keras_version']}), TensorFlow "
              f"{result['tensorflow']}, LiteRT {result['litert']}; seeds "
              f"{result['seeds']}; test {result['test_size']} images, train "
              f"{result['train_size']}; `{result['command']}`; {result['machine']}")


def main():
    args = parse_args()
    if args.merge:
        results = []
        for path in args.merge:
            with open(path, encoding="utf-8") as f:
                results.append(json.load(f))
        print_report(results, args.latency_tolerance)
        print_footer()
        return

    data = digits_split(test_size=0.2, random_state=0)
    x_train, x_test, y_train, y_test = data
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for architecture in args.architectures:
            for seed in range(args.seeds):
                print(f"[{time.perf_counter() - start:.0f} s] {architecture} seed {seed}",
                      file=sys.stderr, flush=True)
                for row in run_seed(architecture, seed, args, data, folder).values():
                    rows.append(row)
                    if "error" not in row:
                        print(f"{row['architecture']} seed {seed} {row['method']}: TFLite "
                              f"{row['tflite_accuracy']:.4f}, agreement "
                              f"{row['agreement']:.4f}, {row['size_bytes']} bytes, "
                              f"{row['latency_ms']:.4f} ms", file=sys.stderr, flush=True)
    env = "TF_USE_LEGACY_KERAS=1 " if USING_TF_KERAS else ""
    result = {
        "keras": TF_KERAS if USING_TF_KERAS else KERAS3,
        "keras_version": KERAS_NAME,
        "tensorflow": tf.__version__,
        "litert": litert_version(),
        "seeds": list(range(args.seeds)),
        "args": {k: v for k, v in vars(args).items() if k not in ("json", "merge")},
        "test_size": int(len(y_test)),
        "train_size": int(len(y_train)),
        "command": f"{env}python {' '.join(sys.argv)}",
        "machine": machine_line(),
        "seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    print_report([result], args.latency_tolerance)
    print_footer(f" (rows written to `{args.json}`)" if args.json else "")


if __name__ == "__main__":
    main()
