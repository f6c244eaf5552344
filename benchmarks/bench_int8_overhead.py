"""Why a small int8 MobileNet file is more than a quarter of its float file: the size per width.

A full-int8 TFLite file stores each weight in one byte (0.25x the float32 file) plus, for
every output channel of every convolution kernel and bias, a float32 scale and an int64 zero
point (per-channel quantization), and the graph. The channel count grows with the width
multiplier alpha and the weights with alpha squared, so the ratio falls toward 0.25x as the
model widens. This script measures it for `mobilenet_v1(input_shape=(8, 8, 1),
num_classes=10, alpha, min_feature_size=2)`, the model of `bench_compression.py`; the
biases and batch-norm vectors get random values (as after training: an untrained model's
identical zero/one vectors are stored once, which flatters its file). File sizes do not
depend on training otherwise; accuracy is measured in `bench_compression.py`.

Run (either Keras):

    python benchmarks/bench_int8_overhead.py --alphas 0.5 1.0 1.25 1.5
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_dnnopt.backend import KERAS_NAME, keras, tf  # noqa: E402
from keras_dnnopt.export import export_tflite  # noqa: E402
from keras_dnnopt.models import mobilenet_v1  # noqa: E402

from _common import print_footer  # noqa: E402


def quantization_parameter_count(path):
    """The number of (scale, zero point) pairs stored in a TFLite file."""
    from ai_edge_litert.interpreter import Interpreter  # the package's [litert] extra

    interpreter = Interpreter(model_path=path)
    return sum(len(t["quantization_parameters"]["scales"])
               for t in interpreter.get_tensor_details())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.5, 1.0, 1.25, 1.5])
    parser.add_argument("--min-feature-size", type=int, default=2)
    args = parser.parse_args(argv)
    rng = np.random.RandomState(0)
    calibration = rng.rand(50, 8, 8, 1).astype("float32")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for alpha in args.alphas:
            keras.utils.set_random_seed(0)
            model = mobilenet_v1(input_shape=(8, 8, 1), num_classes=10, alpha=alpha,
                                 min_feature_size=args.min_feature_size)
            model.set_weights([w + rng.uniform(0.05, 0.1, w.shape).astype("float32")
                               if w.ndim == 1 else w for w in model.get_weights()])
            fp = export_tflite(model, os.path.join(tmp, "f.tflite"), quantization="none")
            q_path = os.path.join(tmp, "q.tflite")
            q8 = export_tflite(model, q_path, quantization="int8_full",
                               representative_data=calibration)
            pairs = quantization_parameter_count(q_path)
            rows.append((alpha, model.count_params(), fp.size_bytes, q8.size_bytes, pairs))
    print(f"\nFull-int8 vs float32 TFLite file, mobilenet_v1 on 8x8x1, 10 classes, "
          f"min_feature_size={args.min_feature_size}, {KERAS_NAME} (TF {tf.__version__})\n")
    print("| alpha | params | float KiB | int8 KiB | int8 / float | quantization pairs "
          "| their bytes (12 each) / float file |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for alpha, params, fp, q8, pairs in rows:
        print(f"| {alpha} | {params:,} | {fp / 1024:.1f} | {q8 / 1024:.1f} | {q8 / fp:.4f}x "
              f"| {pairs:,} | {12 * pairs / fp:.4f}x |")
    print_footer()


if __name__ == "__main__":
    main()
