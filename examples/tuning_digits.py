"""Tuning: a few trials of keras-tuner's RandomSearch over MobileNets, then cross-validation.

On scikit-learn's 8x8 digits: `keras_dnnopt.tuning.MobileNetHyperModel` describes the
search space (restricted here to keep the run short: MobileNetV1 at width 0.25, its
depth, the learning rate and the schedule), `keras_dnnopt.tuning.RandomSearch`
(keras-tuner's, bridged so that tf_keras models work too) runs `--trials` trials scored
on the validation split, and `cross_validate` re-trains the best configuration on
`--folds` stratified folds to show how much its accuracy varies from split to split.
Finally the best model is scored on the test split. Runs offline in one to two minutes
on a 2-core CPU, on either Keras:

    python examples/tuning_digits.py                          # Keras 3
    TF_USE_LEGACY_KERAS=1 python examples/tuning_digits.py    # tf_keras (Keras 2)
    python examples/tuning_digits.py --trials 6 --epochs 8 --out /tmp/tuning

The trials are kept in `--out` (keras-tuner's `directory`; each run starts afresh).
The last line reads `Result: best_val_accuracy=0.94 cv_accuracy=0.95+-0.01 test_accuracy=0.94`.
"""

import argparse
import os

import numpy as np

from keras_dnnopt import tuning
from keras_dnnopt.backend import KERAS_NAME, keras
from keras_dnnopt.data import load_dataset


def load_digits(seed):
    """Digits split 70/10/20 (stratified, duplicates removed), pixels scaled to [0, 1]."""
    data = load_dataset("digits", validation_split=0.1, test_split=0.2, normalize=False,
                        seed=seed)
    scale = lambda x: (x / 16.0).astype("float32")  # noqa: E731
    return ((scale(data.x_train), data.y_train), (scale(data.x_val), data.y_val),
            (scale(data.x_test), data.y_test))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="RandomSearch trials")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of every trial")
    parser.add_argument("--folds", type=int, default=3, help="cross-validation folds")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=os.path.join("runs", "examples", "tuning"),
                        help="keras-tuner's directory for the trials")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), val_data, (x_test, y_test) = load_digits(args.seed)
    print(f"Keras in use: {KERAS_NAME}")

    # A single value fixes a dimension, a list restricts it, a dict gives a range.
    # A trial is a few hundred steps: batch-norm momentum 0.9 lets the moving statistics
    # settle in time (with Keras' 0.99 every trial would score at chance).
    hypermodel = tuning.MobileNetHyperModel(
        input_shape=(8, 8, 1), num_classes=10, batch_norm_momentum=0.9,
        architecture="mobilenet_v1", alpha=0.25, num_blocks=[3, 5, 7],
        dropout=0.1, activation="relu6", l2=0.0, optimizer="adam",
        learning_rate={"min_value": 1e-3, "max_value": 1e-2, "sampling": "log"},
        schedule=["constant", "warmup_cosine"], batch_size=args.batch_size,
        epochs=args.epochs, num_train_samples=len(x_train))
    tuner = tuning.RandomSearch(
        hypermodel, objective="val_accuracy", max_trials=args.trials, seed=args.seed,
        directory=args.out, project_name="mobilenet_digits", overwrite=True)
    tuner.search(x_train, y_train, validation_data=val_data, verbose=0)

    print("\n| trial | alpha | blocks | learning rate | schedule | val accuracy |")
    print("|---|---:|---:|---:|---|---:|")
    trials = sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id)
    for trial in trials:
        hp = trial.hyperparameters.values
        score = trial.score if trial.score is not None else float("nan")
        print(f"| {trial.trial_id} | {hp['alpha']} | {hp['mobilenet_v1_num_blocks']} | "
              f"{hp['learning_rate']:.4g} | {hp['schedule']} | {score:.4f} |")
    best_trial = tuner.oracle.get_best_trials(1)[0]
    best_hp = best_trial.hyperparameters
    print(f"\nBest: {best_hp.values}")

    # How stable is the best configuration? k stratified folds of train + validation.
    x_pool = np.concatenate([x_train, val_data[0]])
    y_pool = np.concatenate([y_train, val_data[1]])
    cv = tuning.cross_validate(lambda: hypermodel.build(best_hp), x_pool, y_pool,
                               k=args.folds, epochs=best_hp.get("epochs"),
                               batch_size=best_hp.get("batch_size"), seed=args.seed)
    folds = ", ".join(f"{m['accuracy']:.4f}" for m in cv.fold_metrics)
    print(f"{args.folds}-fold cross-validation accuracy: {cv.mean['accuracy']:.4f} +- "
          f"{cv.std['accuracy']:.4f} (folds: {folds})")

    best_model = tuner.get_best_models(1)[0]
    test_accuracy = best_model.evaluate(x_test, y_test, verbose=0)[1]
    print(f"Best model, test accuracy {test_accuracy:.4f}; trials in {args.out}")
    print(f"Result: best_val_accuracy={best_trial.score:.4f} "
          f"cv_accuracy={cv.mean['accuracy']:.4f}+-{cv.std['accuracy']:.4f} "
          f"test_accuracy={test_accuracy:.4f}")
    return test_accuracy


if __name__ == "__main__":
    main()
