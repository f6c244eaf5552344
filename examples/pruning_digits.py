"""Pruning: train a CNN, prune 80% of its weights, or half its MACs of channels, and measure.

On scikit-learn's 8x8 digits: trains a small dense `Conv2D` CNN, wraps it with
`keras_dnnopt.compression.prune` (magnitude pruning to `--sparsity` with a polynomial
schedule), fine-tunes it with `PruningCallback`, removes the wrappers with `strip_pruning`,
prints `sparsity_report`, and exports both models to float `.tflite` files to compare
their raw and gzipped sizes (a `.tflite` file stores the zeros densely: only a compressor
sees them) and their test accuracies. On tf_keras the pruning is TF-MOT's; on Keras 3 it
is the package's native port of the same schedule. Runs offline in about a minute on a
2-core CPU, on either Keras:

    python examples/pruning_digits.py                          # Keras 3
    TF_USE_LEGACY_KERAS=1 python examples/pruning_digits.py    # tf_keras (Keras 2)
    python examples/pruning_digits.py --sparsity 0.9 --out /tmp/pruning

Then structured pruning: `prune_channels(dense, target_macs=--channel-macs)` removes whole
filters (a new plain model, the kept weights copied), fine-tuned `--prune-epochs` epochs;
its file is smaller raw, not only gzipped.

The last line reads
`Result: dense_accuracy=0.98 pruned_accuracy=0.97 sparsity=0.80 gzip_ratio=3.37
channels_accuracy=0.97 channels_macs_ratio=0.50 channels_size_ratio=0.49`
(gzip_ratio: gzipped dense file size / gzipped pruned file size; the channel ratios:
pruned / dense MACs and raw file size).
"""

import argparse
import math
import os

from keras_dnnopt import compression, export
from keras_dnnopt.backend import KERAS_NAME, keras
from keras_dnnopt.data import load_dataset


def load_digits(seed):
    """Digits split 70/10/20 (stratified, duplicates removed), pixels scaled to [0, 1]."""
    data = load_dataset("digits", validation_split=0.1, test_split=0.2, normalize=False,
                        seed=seed)
    scale = lambda x: (x / 16.0).astype("float32")  # noqa: E731
    return ((scale(data.x_train), data.y_train), (scale(data.x_val), data.y_val),
            (scale(data.x_test), data.y_test))


def cnn(width):
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(4 * width, 3, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(10, activation="softmax"),
    ], name="digits_cnn")


def compile_model(model, learning_rate):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="dense training epochs")
    parser.add_argument("--prune-epochs", type=int, default=6, help="pruning epochs")
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--channel-macs", type=float, default=0.5,
                        help="MAC budget of the channel-pruned model, a fraction")
    parser.add_argument("--width", type=int, default=32,
                        help="filters of the first convolution (doubled twice)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--out", default=os.path.join("runs", "examples", "pruning"),
                        help="folder for the .tflite files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    train_data, val_data, test_data = load_digits(args.seed)
    print(f"Keras in use: {KERAS_NAME}")

    dense = compile_model(cnn(args.width), args.learning_rate)
    dense.fit(*train_data, validation_data=val_data, epochs=args.epochs,
              batch_size=args.batch_size, verbose=0)
    dense_accuracy = dense.evaluate(*test_data, verbose=0)[1]

    # Reach the target over the first 2/3 of fine-tuning, then train with fixed masks.
    # `end_step` must be a multiple of `frequency` past `begin_step`.
    steps_per_epoch = math.ceil(len(train_data[1]) / args.batch_size)
    frequency = max(1, steps_per_epoch // 2)
    end_step = max(1, (2 * args.prune_epochs * steps_per_epoch // 3) // frequency) * frequency
    pruned = compression.prune(dense, target_sparsity=args.sparsity, begin_step=0,
                               end_step=end_step, frequency=frequency)
    compile_model(pruned, args.learning_rate / 4)
    pruned.fit(*train_data, validation_data=val_data, epochs=args.prune_epochs,
               batch_size=args.batch_size, callbacks=[compression.PruningCallback()],
               verbose=0)
    small = compression.strip_pruning(pruned)
    compile_model(small, args.learning_rate)
    pruned_accuracy = small.evaluate(*test_data, verbose=0)[1]
    report = compression.sparsity_report(small)
    print()
    print(report)

    os.makedirs(args.out, exist_ok=True)
    files = {name: export.export_tflite(model, os.path.join(args.out, f"{name}.tflite"))
             for name, model in (("dense", dense), ("pruned", small))}
    print("\n| model | test accuracy | sparsity | .tflite bytes | gzipped bytes |")
    print("|---|---:|---:|---:|---:|")
    dense_sparsity = compression.sparsity_report(dense).overall
    for name, accuracy, sparsity in (("dense", dense_accuracy, dense_sparsity),
                                     ("pruned", pruned_accuracy, report.overall)):
        result = files[name]
        print(f"| {name} | {accuracy:.4f} | {sparsity:.3f} | {result.size_bytes:,} | "
              f"{result.gzipped_size_bytes:,} |")
    gzip_ratio = files["dense"].gzipped_size_bytes / files["pruned"].gzipped_size_bytes
    # The exported file runs the same sparse weights (checked on a few test images).
    agreement = export.compare_outputs(small, files["pruned"].path, test_data[0][:64])
    print(f"\nGzipped, the pruned file is {gzip_ratio:.2f}x smaller; the file agrees with "
          f"the stripped model on {agreement.top1_agreement:.0%} of 64 test images. "
          f"Files in {args.out}")

    # Structured: whole filters removed, so the raw file and the MACs shrink too.
    from keras_dnnopt.profiling import profile

    thin = compile_model(compression.prune_channels(dense, target_macs=args.channel_macs),
                         args.learning_rate / 4)
    thin.fit(*train_data, validation_data=val_data, epochs=args.prune_epochs,
             batch_size=args.batch_size, verbose=0)
    channels_accuracy = thin.evaluate(*test_data, verbose=0)[1]
    thin_file = export.export_tflite(thin, os.path.join(args.out, "channels.tflite"))
    macs_ratio = profile(thin).macs / profile(dense).macs
    size_ratio = thin_file.size_bytes / files["dense"].size_bytes
    print(f"Channel pruning to {args.channel_macs:.0%} of the MACs: "
          f"{macs_ratio:.2f}x MACs, {size_ratio:.2f}x raw file size, test accuracy "
          f"{channels_accuracy:.4f}")
    print(f"Result: dense_accuracy={dense_accuracy:.4f} pruned_accuracy={pruned_accuracy:.4f} "
          f"sparsity={report.overall:.4f} gzip_ratio={gzip_ratio:.2f} "
          f"channels_accuracy={channels_accuracy:.4f} channels_macs_ratio={macs_ratio:.2f} "
          f"channels_size_ratio={size_ratio:.2f}")
    return {"dense": dense_accuracy, "pruned": pruned_accuracy, "sparsity": report.overall,
            "channels": channels_accuracy}


if __name__ == "__main__":
    main()
