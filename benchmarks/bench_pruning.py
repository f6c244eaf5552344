"""Magnitude pruning on scikit-learn's digits: accuracy, sparsity, file size, step time.

Data: `sklearn.datasets.load_digits` (1797 real 8x8 grayscale digits, pixels / 16), a
stratified 70/30 train/test split (`random_state=0`). Model: `mobilenet_v1(input_shape=
(8, 8, 1), num_classes=10, alpha=--alpha, classifier_activation=None)`, trained
`--epochs` epochs with Adam(`--lr`), batch-norm momentum 0.9. Each configuration then
fine-tunes a copy of that trained model for `--finetune` more epochs (Adam(`--lr` / 10)):

- `dense`: plain fine-tuning (the reference: the same training budget, no pruning);
- `50%`, `80%`: `prune(..., schedule="polynomial", end_step=` two thirds of the
  fine-tuning steps `, frequency=--frequency)` with `PruningCallback`, then
  `strip_pruning`;
- `2:4`: `prune(..., structure="2:4")`.

Reported per configuration: test accuracy of the stripped model, the overall sparsity of
the prunable kernels (`sparsity_report`), the float TFLite file raw and gzipped (the
zeros only shrink the compressed file; TFLite keeps dense tensors), their ratio to the
dense file, and the median training step time (ms) of the last fine-tuning epoch (the
pruning wrappers' overhead; the CPU is shared, so ratios matter more than absolutes).

Run (Keras 3; add TF_USE_LEGACY_KERAS=1 for tf_keras, where TF-MOT does the pruning):

    python benchmarks/bench_pruning.py
"""

import argparse
import gzip
import os
import shlex
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_dnnopt.backend import KERAS_NAME, USING_TF_KERAS, keras, tf  # noqa: E402
from keras_dnnopt.compression import (  # noqa: E402
    PruningCallback,
    prune,
    sparsity_report,
    strip_pruning,
)
from keras_dnnopt.models import mobilenet_v1  # noqa: E402

from _common import digits_split, fast_batchnorm, machine_line  # noqa: E402


class StepTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def compile_model(model, lr):
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def copy_model(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def tflite_sizes(model):
    with tempfile.TemporaryDirectory() as tmp:
        if USING_TF_KERAS:
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
        else:
            model.export(os.path.join(tmp, "saved"), verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(os.path.join(tmp, "saved"))
        content = converter.convert()
    return len(content), len(gzip.compress(content, compresslevel=9))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--finetune", type=int, default=9)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--frequency", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    x_train, x_test, y_train, y_test = digits_split()
    base = fast_batchnorm(mobilenet_v1(input_shape=(8, 8, 1), num_classes=10,
                                       alpha=args.alpha, classifier_activation=None))
    base = compile_model(base, args.lr)
    base.fit(x_train, y_train, batch_size=args.batch, epochs=args.epochs, verbose=0)
    steps = args.finetune * int(np.ceil(len(x_train) / args.batch))
    end_step = (2 * steps // 3) // args.frequency * args.frequency

    configs = [("dense", None), ("50%", dict(target_sparsity=0.5)),
               ("80%", dict(target_sparsity=0.8)),
               ("2:4", dict(target_sparsity=0.5, structure="2:4"))]
    rows = []
    for name, kwargs in configs:
        keras.utils.set_random_seed(args.seed)
        timer = StepTimer()
        if kwargs is None:
            model = compile_model(copy_model(base), args.lr / 10)
            callbacks = [timer]
        else:
            model = compile_model(prune(base, end_step=end_step, frequency=args.frequency,
                                        **kwargs), args.lr / 10)
            callbacks = [PruningCallback(), timer]
        model.fit(x_train, y_train, batch_size=args.batch, epochs=args.finetune, verbose=0,
                  callbacks=callbacks)
        final = strip_pruning(model) if kwargs is not None else model
        final = compile_model(final, args.lr)
        accuracy = final.evaluate(x_test, y_test, verbose=0)[1]
        raw, zipped = tflite_sizes(final)
        rows.append((name, accuracy, sparsity_report(final).overall, raw, zipped,
                     statistics.median(timer.times) * 1000))

    dense = rows[0]
    print(f"Pruning on digits, mobilenet_v1(alpha={args.alpha}) at 8x8x1, {KERAS_NAME}, "
          f"{'TF-MOT' if USING_TF_KERAS else 'native Keras 3 pruning'}; "
          f"{machine_line()}\n")
    print("| config | test accuracy | sparsity | .tflite KB | gzipped KB | gzipped / dense "
          "| step ms | step / dense |")
    print("|---|---|---|---|---|---|---|---|")
    for name, accuracy, sparsity, raw, zipped, step in rows:
        print(f"| {name} | {accuracy:.4f} | {sparsity:.1%} | {raw / 1024:.1f} | "
              f"{zipped / 1024:.1f} | {zipped / dense[4]:.2f}x | {step:.1f} | "
              f"{step / dense[5]:.2f}x |")
    env = "TF_USE_LEGACY_KERAS=1 " if USING_TF_KERAS else ""
    print(f"\nCommand: {env}python {shlex.join(sys.argv)}")
    print(f"Versions: tensorflow {tf.__version__}, {KERAS_NAME}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
