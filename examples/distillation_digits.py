"""Distillation: a large teacher teaches a tiny student, compared with the student alone.

On scikit-learn's 8x8 digits: trains a teacher (a plain `Conv2D` CNN, about 100k
parameters), then trains the same tiny student (a `ConvBlock` and two
`SeparableConvBlock`s of `keras_dnnopt.layers`, about 1k parameters) twice from the same
initial weights, on part of the training split: once on the labels alone, and once with
`keras_dnnopt.distillation.Distiller` (the teacher's soft targets at a temperature, KL
loss, plus the labels). It prints the three test accuracies and sizes. Runs offline in
about a minute on a 2-core CPU, on either Keras:

    python examples/distillation_digits.py                          # Keras 3
    TF_USE_LEGACY_KERAS=1 python examples/distillation_digits.py    # tf_keras (Keras 2)
    python examples/distillation_digits.py --train-fraction 0.3 --epochs 10

The last line reads `Result: teacher=0.96 student_alone=0.80 student_distilled=0.82`
(test accuracies).
"""

import argparse

import numpy as np

import keras_dnnopt
from keras_dnnopt import layers
from keras_dnnopt.backend import KERAS_NAME, keras
from keras_dnnopt.distillation import Distiller


def load_digits(seed, train_fraction):
    """Digits split 70/10/20 (stratified, duplicates removed), pixels scaled to [0, 1];
    then only `train_fraction` of the training split is kept (stratified)."""
    from keras_dnnopt.data import load_dataset, stratified_split

    data = load_dataset("digits", validation_split=0.1, test_split=0.2, normalize=False,
                        seed=seed)
    scale = lambda x: (x / 16.0).astype("float32")  # noqa: E731
    x_train, y_train = scale(data.x_train), data.y_train
    if train_fraction < 1.0:
        keep, _ = stratified_split(y_train, 1.0 - train_fraction, seed=seed)
        x_train, y_train = x_train[keep], y_train[keep]
    return ((x_train, y_train), (scale(data.x_val), data.y_val),
            (scale(data.x_test), data.y_test))


# Both output logits (no softmax): Distiller works on logits (from_logits=True).
def teacher_cnn(width):
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(4 * width, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(10),
    ], name="teacher")


def student_cnn(width):
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.ConvBlock(width, activation="relu", use_batch_norm=False),
        layers.SeparableConvBlock(2 * width, strides=2, activation="relu",
                                  use_batch_norm=False),
        layers.SeparableConvBlock(2 * width, activation="relu", use_batch_norm=False),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ], name="student")


def compile_kwargs(learning_rate):
    return dict(optimizer=keras.optimizers.Adam(learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--teacher-width", type=int, default=32,
                        help="filters of the teacher's first convolution")
    parser.add_argument("--student-width", type=int, default=8,
                        help="filters of the student's first block")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--distill-alpha", type=float, default=0.1,
                        help="weight of the label loss (1 - it for the teacher's)")
    parser.add_argument("--train-fraction", type=float, default=0.5,
                        help="fraction of the training split the students see")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    train_data, val_data, (x_test, y_test) = load_digits(args.seed, 1.0)
    small_train, _, _ = load_digits(args.seed, args.train_fraction)
    print(f"Keras in use: {KERAS_NAME}; teacher trains on {len(train_data[1])} images, "
          f"the students on {len(small_train[1])}")

    teacher = teacher_cnn(args.teacher_width)
    teacher.compile(**compile_kwargs(args.learning_rate))
    teacher.fit(*train_data, validation_data=val_data, epochs=args.teacher_epochs,
                batch_size=args.batch_size, verbose=0)
    results = {"teacher": accuracy(teacher, x_test, y_test)}

    student = student_cnn(args.student_width)
    initial_weights = student.get_weights()

    # The baseline: the student on the labels alone.
    student.compile(**compile_kwargs(args.learning_rate))
    student.fit(*small_train, validation_data=val_data, epochs=args.epochs,
                batch_size=args.batch_size, verbose=0)
    results["student_alone"] = accuracy(student, x_test, y_test)

    # The same student, from the same initial weights, taught by the teacher.
    student.set_weights(initial_weights)
    distiller = Distiller(teacher, student, temperature=args.temperature,
                          alpha=args.distill_alpha, distillation_loss="kl")
    distiller.compile(**compile_kwargs(args.learning_rate))
    distiller.fit(*small_train, validation_data=val_data, epochs=args.epochs,
                  batch_size=args.batch_size, verbose=0)
    results["student_distilled"] = accuracy(distiller.student, x_test, y_test)

    print("\n| model | params | MACs | test accuracy |")
    print("|---|---:|---:|---:|")
    for name, model in (("teacher", teacher), ("student_alone", student),
                        ("student_distilled", distiller.student)):
        prof = keras_dnnopt.profile(model)
        print(f"| {name} | {prof.params:,} | {prof.macs:,} | {results[name]:.4f} |")
    print(f"\nDistillation changed the student's test accuracy by "
          f"{results['student_distilled'] - results['student_alone']:+.4f} "
          f"(T={args.temperature}, alpha={args.distill_alpha}, one seed: rerun with other "
          "--seed values to see the spread).")
    print("Result: " + " ".join(f"{k}={v:.4f}" for k, v in results.items()))
    return results


if __name__ == "__main__":
    main()
