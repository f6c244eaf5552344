"""Compression and deployment on scikit-learn's digits: every route to a smaller TFLite file.

Data: `sklearn.datasets.load_digits` (1797 real 8x8 grayscale digits, pixels / 16), a
stratified 70/30 train/test split (`random_state=0`). Model: `mobilenet_v1(input_shape=
(8, 8, 1), num_classes=10, alpha=--alpha)` (softmax head), batch-norm momentum 0.9, trained
`--epochs` epochs with Adam(`--lr`). The compressed variants start from that trained model
and, where they train, fine-tune it for `--finetune` epochs at `--lr / 10`:

- float / dynamic / float16 / int8 PTQ / int8 PTQ full-integer: the trained model, exported
  by `keras_dnnopt.export.export_tflite` in each quantization mode (int8 modes calibrated
  on 200 training images);
- float + fine-tune: the same extra epochs without compression (the fair reference for the
  rows that fine-tune);
- QAT int8 (tf_keras only: TF-MOT): `keras_dnnopt.compression.quantize`, fine-tuned, int8;
- pruned 50% / 80%: `keras_dnnopt.compression.prune` (polynomial schedule ending at two
  thirds of the fine-tuning) + `PruningCallback`, exported float (the wrappers are
  stripped by `export_tflite`); pruned 80% + int8: the same model, int8 PTQ;
- clustered 16 + int8: `keras_dnnopt.compression.cluster(16)`, fine-tuned, stripped, int8
  PTQ.

Every accuracy is that of the exported file, run by LiteRT (`evaluate_tflite`); sizes raw
and gzipped (`file_sizes`; the zeros of pruning and the shared values of clustering shrink
only the compressed file, TFLite stores dense tensors); latency at batch 1, one thread,
median of `--runs` (`benchmark_tflite`). Ratios are against the float file.

Targets (issue 4): full-int8 file <= 0.27x the float file; int8 PTQ loses <= 1 point, QAT
<= 0.5; 80% sparsity loses <= 1 point and its gzipped file is <= 0.35x the float file's
gzipped size; pruned + int8 gzipped <= 0.12x; int8 latency below float latency.

Run (Keras 3; add TF_USE_LEGACY_KERAS=1 for tf_keras, where TF-MOT adds QAT):

    python benchmarks/bench_compression.py
"""

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_dnnopt.backend import KERAS_NAME, USING_TF_KERAS, keras, tf  # noqa: E402
from keras_dnnopt.compression import (  # noqa: E402
    PruningCallback,
    cluster,
    prune,
    quantize,
    sparsity_report,
    strip_clustering,
)
from keras_dnnopt.export import (  # noqa: E402
    benchmark_tflite,
    evaluate_tflite,
    export_tflite,
)
from keras_dnnopt.models import mobilenet_v1  # noqa: E402


def load_digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    return train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)


def compile_model(model, lr):
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def copy_model(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--finetune", type=int, default=6)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--frequency", type=int, default=10)
    parser.add_argument("--runs", type=int, default=200, help="timed LiteRT runs per file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    clock = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    x_train, x_test, y_train, y_test = load_digits_split()
    calibration = x_train[:200]
    base = mobilenet_v1(input_shape=(8, 8, 1), num_classes=10, alpha=args.alpha)
    for layer in base.layers:  # a few hundred steps: Keras' 0.99 momentum would lag
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    compile_model(base, args.lr).fit(x_train, y_train, batch_size=args.batch,
                                     epochs=args.epochs, verbose=0)
    steps = args.finetune * int(np.ceil(len(x_train) / args.batch))
    end_step = (2 * steps // 3) // args.frequency * args.frequency

    def finetune(model, callbacks=()):
        keras.utils.set_random_seed(args.seed)
        compile_model(model, args.lr / 10).fit(
            x_train, y_train, batch_size=args.batch, epochs=args.finetune, verbose=0,
            callbacks=list(callbacks))
        return model

    # (row name, model, quantization mode); models that train are built lazily in order.
    variants = [
        ("float", lambda: base, "none"),
        ("dynamic range", lambda: base, "dynamic"),
        ("float16", lambda: base, "float16"),
        ("int8 PTQ", lambda: base, "int8"),
        ("int8 PTQ, full-integer I/O", lambda: base, "int8_full"),
        ("float + fine-tune", lambda: finetune(copy_model(base)), "none"),
    ]
    if USING_TF_KERAS:
        variants.append(("QAT int8", lambda: finetune(quantize(base)), "int8"))
    pruned = {}

    def pruned_model(target):
        if target not in pruned:
            model = prune(base, target_sparsity=target, end_step=end_step,
                          frequency=args.frequency)
            pruned[target] = finetune(model, [PruningCallback()])
        return pruned[target]

    variants += [
        ("pruned 50%", lambda: pruned_model(0.5), "none"),
        ("pruned 80%", lambda: pruned_model(0.8), "none"),
        ("pruned 80% + int8", lambda: pruned_model(0.8), "int8"),
        ("clustered 16 + int8",
         lambda: strip_clustering(finetune(cluster(base, number_of_clusters=16))), "int8"),
    ]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, make, mode) in enumerate(variants):
            model = make()
            path = os.path.join(tmp, f"{i}.tflite")
            result = export_tflite(model, path, quantization=mode,
                                   representative_data=calibration if "int8" in mode else None)
            scores = evaluate_tflite(path, (x_test, y_test))
            latency = benchmark_tflite(path, threads=1, runs=args.runs, warmup=20)
            sparsity = sparsity_report(model).overall if name.startswith("pruned") else None
            rows.append((name, scores["accuracy"], result.size_bytes,
                         result.gzipped_size_bytes, latency.median_ms, sparsity))

    _, acc0, raw0, gz0, lat0, _ = rows[0]
    print(f"\nCompression on digits ({len(x_train)} train / {len(x_test)} test, 8x8x1), "
          f"mobilenet_v1(alpha={args.alpha}) {base.count_params():,} params, {KERAS_NAME} "
          f"(TF {tf.__version__}); {args.epochs} epochs + {args.finetune} fine-tuning\n")
    print("| variant | accuracy (file) | vs float | raw KiB | raw ratio | gzip KiB | gzip ratio "
          "| LiteRT batch-1 ms | latency ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, acc, raw, gz, lat, sparsity in rows:
        label = name if sparsity is None else f"{name} (kernels {sparsity:.1%} zero)"
        print(f"| {label} | {100 * acc:.2f}% | {100 * (acc - acc0):+.2f} pts | {raw / 1024:.1f} "
              f"| {raw / raw0:.3f}x | {gz / 1024:.1f} | {gz / gz0:.3f}x | {lat:.3f} "
              f"| {lat / lat0:.2f}x |")
    env = "TF_USE_LEGACY_KERAS=1 " if USING_TF_KERAS else ""
    print(f"\nCommand: `{env}python {shlex.join(sys.argv)}` "
          f"({time.perf_counter() - clock:.0f} s)")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
