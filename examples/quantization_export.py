"""Quantization and export: float and quantized `.tflite` files, their accuracy, size and speed.

On scikit-learn's 8x8 digits: trains a small MobileNetV1, then exports it with
`keras_dnnopt.export.export_tflite` as float32 (`none`), dynamic-range (`dynamic`),
`float16` and full-integer (`int8_full`, calibrated on training images) post-training
quantization (PTQ). It also fine-tunes a quantization-aware (QAT) copy made by
`keras_dnnopt.compression.quantize` (TF-MOT on tf_keras, the package's native QAT on
Keras 3) and exports it to int8 with no representative data. For each file:
`evaluate_tflite` (accuracy through LiteRT), `compare_outputs` (agreement with the Keras
model), raw and gzipped size, and `benchmark_tflite` (median latency, batch 1, 1 thread).
Runs offline in one to two minutes on a 2-core CPU, on either Keras:

    python examples/quantization_export.py                          # Keras 3
    TF_USE_LEGACY_KERAS=1 python examples/quantization_export.py    # tf_keras
    python examples/quantization_export.py --epochs 5 --out /tmp/quant

Needs the LiteRT interpreter (`pip install keras_dnnopt[litert]`; without it the
`tf.lite.Interpreter` fallback is used). The last line reads
`Result: keras=0.83 none=0.83 dynamic=0.84 float16=0.83 int8_full=0.84 qat_int8=...`
(test accuracies of the Keras model and of each file).
"""

import argparse
import os

from keras_dnnopt import compression, export, models
from keras_dnnopt.backend import KERAS_NAME, keras
from keras_dnnopt.data import load_dataset

PTQ_MODES = ("none", "dynamic", "float16", "int8_full")


def load_digits(seed):
    """Digits split 70/10/20 (stratified, duplicates removed), pixels scaled to [0, 1]."""
    data = load_dataset("digits", validation_split=0.1, test_split=0.2, normalize=False,
                        seed=seed)
    scale = lambda x: (x / 16.0).astype("float32")  # noqa: E731
    return ((scale(data.x_train), data.y_train), (scale(data.x_val), data.y_val),
            (scale(data.x_test), data.y_test))


def compile_model(model, learning_rate):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--qat-epochs", type=int, default=2,
                        help="quantization-aware fine-tuning epochs (tf_keras only)")
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--calibration-samples", type=int, default=200)
    parser.add_argument("--benchmark-runs", type=int, default=100)
    parser.add_argument("--out", default=os.path.join("runs", "examples", "quantization"),
                        help="folder for the .tflite files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    train_data, val_data, test_data = load_digits(args.seed)
    print(f"Keras in use: {KERAS_NAME}")
    # Few training steps: a faster batch-norm momentum than 0.99 lets the moving
    # statistics follow; min_feature_size=2 (a 2x2 last map) keeps the MACs low.
    model = compile_model(models.mobilenet_v1((8, 8, 1), num_classes=10, alpha=args.alpha,
                                              dropout=0.1, batch_norm_momentum=0.9,
                                              min_feature_size=2),
                          args.learning_rate)
    model.fit(*train_data, validation_data=val_data, epochs=args.epochs,
              batch_size=args.batch_size, verbose=0)
    accuracies = {"keras": model.evaluate(*test_data, verbose=0)[1]}

    os.makedirs(args.out, exist_ok=True)
    # (name, Keras model the file comes from, export result)
    exported = []
    for mode in PTQ_MODES:
        result = export.export_tflite(
            model, os.path.join(args.out, f"mobilenet_{mode}.tflite"), quantization=mode,
            representative_data=(train_data[0][:args.calibration_samples]
                                 if mode == "int8_full" else None))
        exported.append((mode, model, result))

    # QAT: fake-quantized copy (batch norm folded), fine-tuned a little at a low rate
    # (TF-MOT on tf_keras, keras_dnnopt's native QAT on Keras 3); no representative data.
    qat = compile_model(compression.quantize(model), args.learning_rate / 10)
    qat.fit(*train_data, validation_data=val_data, epochs=args.qat_epochs,
            batch_size=args.batch_size, verbose=0)
    result = export.export_tflite(qat, os.path.join(args.out, "mobilenet_qat_int8.tflite"),
                                  quantization="int8")
    exported.append(("qat_int8", qat, result))

    print("\n| file | quantization | test accuracy | top-1 agreement | max abs diff | bytes | "
          "gzipped | latency ms (median) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, source, result in exported:
        scores = export.evaluate_tflite(result.path, test_data)
        agreement = export.compare_outputs(source, result.path, test_data[0])
        latency = export.benchmark_tflite(result.path, threads=1, runs=args.benchmark_runs)
        accuracies[name] = scores["accuracy"]
        print(f"| {os.path.basename(result.path)} | {result.quantization} | "
              f"{scores['accuracy']:.4f} | {agreement.top1_agreement:.4f} | "
              f"{agreement.max_abs_diff:.2e} | {result.size_bytes:,} | "
              f"{result.gzipped_size_bytes:,} | {latency.median_ms:.4f} |")
    none_size = exported[0][2].size_bytes
    int8_size = dict((n, r) for n, _, r in exported)["int8_full"].size_bytes
    print(f"\nKeras model test accuracy {accuracies['keras']:.4f}; int8_full file is "
          f"{none_size / int8_size:.1f}x smaller than float32 ({latency.runtime} runtime). "
          f"Files in {args.out}")
    print("Result: " + " ".join(f"{k}={v:.4f}" for k, v in accuracies.items()))
    return accuracies


if __name__ == "__main__":
    main()
