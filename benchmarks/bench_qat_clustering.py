"""Quantization-aware training and weight clustering on digits: accuracy and size of the
int8 TFLite files they give, against the float model and post-training int8.

Trains a small MobileNet (`keras_dnnopt.models.mobilenet_v1(input_shape=(8, 8, 1),
num_classes=10, alpha=--alpha)`) on scikit-learn's digits (stratified 80/20 split, fixed
seed) for `--epochs`, then from that same float model:

- float: the float TFLite file;
- PTQ int8: full-integer post-training quantization (500 training images as the
  representative data), int8 kernels and activations, float input/output;
- QAT int8 (tf_keras): `keras_dnnopt.compression.quantize`, `--finetune` epochs, converted
  with `Optimize.DEFAULT`;
- clustered float / + PTQ int8: `cluster(model, --clusters)` (TF-MOT on tf_keras, native on
  Keras 3), `--finetune` epochs, `strip_clustering`, then converted float and PTQ int8;
- CQAT int8 (tf_keras): the clustered model through `quantize(..., scheme="cqat")`,
  `--finetune` epochs.

Each row gives the test accuracy of the TFLite file (LiteRT, batch 1), its size raw and
gzipped (level 9), and the ratios to the float file. Prints a Markdown table, the exact
command and the versions.

Run (tf_keras for every row; Keras 3 gives the rows that work there):

    TF_USE_LEGACY_KERAS=1 python benchmarks/bench_qat_clustering.py
    python benchmarks/bench_qat_clustering.py --epochs 30 --finetune 5
"""

import argparse
import gzip
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_dnnopt.backend import KERAS_NAME, USING_TF_KERAS, keras, tf  # noqa: E402
from keras_dnnopt.compression import cluster, quantize, strip_clustering  # noqa: E402
from keras_dnnopt.models import mobilenet_v1  # noqa: E402

from _common import digits_split, print_footer  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--finetune", type=int, default=3)
    parser.add_argument("--clusters", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def train(model, x, y, epochs, learning_rate):
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return model


def convert(model, mode, representative=None):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode in ("int8", "ptq"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "ptq":
        def dataset():
            for sample in representative:
                yield [sample[None]]

        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def tflite_accuracy(content, x, y):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=content)
    runner.allocate_tensors()
    inp, out = runner.get_input_details()[0], runner.get_output_details()[0]
    correct = 0
    for sample, label in zip(x, y, strict=True):
        runner.set_tensor(inp["index"], sample[None].astype(inp["dtype"]))
        runner.invoke()
        correct += int(np.argmax(runner.get_tensor(out["index"])[0]) == label)
    return correct / len(y)


def main():
    args = parse_args()
    keras.utils.set_random_seed(args.seed)
    x_train, x_test, y_train, y_test = digits_split(test_size=0.2, random_state=args.seed)
    model = mobilenet_v1(input_shape=(8, 8, 1), num_classes=10, alpha=args.alpha)
    train(model, x_train, y_train, args.epochs, 3e-3)
    keras_accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    representative = x_train[:500]

    files = {"float": convert(model, "float"),
             "PTQ int8": convert(model, "ptq", representative)}
    if USING_TF_KERAS:
        qat = train(quantize(model), x_train, y_train, args.finetune, 1e-4)
        files["QAT int8"] = convert(qat, "int8")
    clustered = train(cluster(model, args.clusters), x_train, y_train, args.finetune, 1e-4)
    stripped = strip_clustering(clustered)
    files[f"clustered {args.clusters} float"] = convert(stripped, "float")
    files[f"clustered {args.clusters} + PTQ int8"] = convert(stripped, "ptq", representative)
    if USING_TF_KERAS:
        cqat = train(quantize(stripped, scheme="cqat"), x_train, y_train, args.finetune, 1e-4)
        files[f"CQAT {args.clusters} int8"] = convert(cqat, "int8")

    base = files["float"]
    base_gz = len(gzip.compress(base, 9))
    base_accuracy = tflite_accuracy(base, x_test, y_test)
    print(f"Float Keras model test accuracy: {keras_accuracy:.4f}\n")
    print("| model | test accuracy | vs float (points) | raw KiB | raw ratio | gzip KiB "
          "| gzip ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, content in files.items():
        accuracy = tflite_accuracy(content, x_test, y_test)
        gz = len(gzip.compress(content, 9))
        print(f"| {name} | {accuracy:.4f} | {100 * (accuracy - base_accuracy):+.2f} "
              f"| {len(content) / 1024:.1f} | {len(content) / len(base):.3f} "
              f"| {gz / 1024:.1f} | {gz / base_gz:.3f} |")
    if not USING_TF_KERAS:
        print("| QAT int8, CQAT int8 | n/a: TF-MOT needs tf_keras | | | | | |")
    print(f"\n{KERAS_NAME}, TensorFlow {tf.__version__}; test set {len(y_test)} images, "
          f"train {len(y_train)}")
    print_footer()


if __name__ == "__main__":
    main()
