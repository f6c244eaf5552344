"""Random search vs Hyperband vs Bayesian optimisation on digits, then cross-validation.

Each tuner searches the same `MobileNetHyperModel` space (MobileNetV1 on scikit-learn's
8x8x1 digits: width 0.25/0.5, 2 to 6 blocks, dropout, optimizer, learning rate, schedule,
batch size, epochs) with the same trial budget (`--trials`; Hyperband with `factor=3`
and `max_epochs=8`, the space's largest `epochs`, capped at the same number of trials;
Bayesian optimisation after 3 random trials). Epochs are 4 or 8 and batches 16 or 32, so
that batch-norm statistics settle (a few dozen steps leave validation near chance). The
data: 1000 training, 400 validation (the objective, `val_accuracy`) and 397 test images,
one fixed shuffle. Reported per tuner: the best validation accuracy, the test accuracy
of the returned model, the wall time of the search, and the epochs trained in total.
Then the best configuration overall is cross-validated (`cross_validate`, stratified,
`--folds` folds over training + validation images) for its mean and standard deviation.
Prints Markdown tables, the exact command and the versions.

Run (Keras 3; add TF_USE_LEGACY_KERAS=1 for tf_keras):

    python benchmarks/bench_tuning.py
    python benchmarks/bench_tuning.py --trials 10 --folds 5
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
from keras_dnnopt.tuning import MobileNetHyperModel, cross_validate, tune  # noqa: E402


def digits(seed):
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images[..., None] / 16.0).astype("float32")
    y = data.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return (x[:1000], y[:1000]), (x[1000:1400], y[1000:1400]), (x[1400:], y[1400:])


def hypermodel():
    return MobileNetHyperModel(
        (8, 8, 1), 10, architecture="mobilenet_v1", alpha=[0.25, 0.5],
        num_blocks={"min_value": 2, "max_value": 6}, dropout=[0.0, 0.2],
        activation=["relu", "relu6"], l2=[0.0, 1e-4],
        learning_rate={"min_value": 1e-3, "max_value": 3e-2, "sampling": "log"},
        batch_size=[16, 32], epochs=[4, 8], num_train_samples=1000)


def epochs_trained(tuner):
    total = 0
    for trial in tuner.oracle.trials.values():
        values = trial.hyperparameters.values
        if "tuner/epochs" in values:
            total += values["tuner/epochs"] - values["tuner/initial_epoch"]
        else:
            total += values["epochs"]
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    train, val, test = digits(args.seed)
    rows, best = [], None
    for kind in ("random", "hyperband", "bayesian"):
        # Hyperband: factor 3 and max_epochs 8 make exactly 6 trials (3 at 3 epochs, the best
        # resumed to 8, 2 at 8). Bayesian: 3 random trials, then guided ones.
        extra = {"hyperband": {"factor": 3}, "bayesian": {"num_initial_points": 3}}.get(kind, {})
        start = time.perf_counter()
        model, hp, tuner = tune(*train, validation_data=val, tuner=kind,
                                max_trials=args.trials, hypermodel=hypermodel(),
                                seed=args.seed, directory=tempfile.mkdtemp(),
                                overwrite=True, **extra)
        seconds = time.perf_counter() - start
        score = tuner.oracle.get_best_trials(1)[0].score
        test_acc = model.evaluate(*test, verbose=0, return_dict=True)["accuracy"]
        rows.append((kind, len(tuner.oracle.trials), epochs_trained(tuner), score, test_acc,
                     seconds))
        if best is None or score > best[0]:
            best = (score, kind, hp, tuner.hypermodel)
        keras.backend.clear_session()

    score, kind, hp, best_hypermodel = best
    x_all = np.concatenate([train[0], val[0]])
    y_all = np.concatenate([train[1], val[1]])
    start = time.perf_counter()
    result = cross_validate(lambda: best_hypermodel.build(hp), x_all, y_all, k=args.folds,
                            epochs=hp.values.get("tuner/epochs", hp.values["epochs"]),
                            batch_size=hp.values["batch_size"],
                            seed=args.seed)
    cv_seconds = time.perf_counter() - start

    print(f"\nTuning on digits (1000 train / 400 val / 397 test), {KERAS_NAME} "
          f"(TF {tf.__version__}), {args.trials} trials per tuner\n")
    print("| tuner | trials | epochs trained | best val acc | test acc of best | time (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind_, trials, epochs, val_acc, test_acc, seconds in rows:
        print(f"| {kind_} | {trials} | {epochs} | {val_acc:.3f} | {test_acc:.3f} | "
              f"{seconds:.0f} |")
    shown = {k: v for k, v in hp.values.items() if not k.startswith("tuner/")}
    print(f"\nBest configuration ({kind}): `{shown}`\n")
    print(f"| {args.folds}-fold CV of the best (1400 images) | mean | std |")
    print("|---|---:|---:|")
    for name in result.mean:
        print(f"| {name} | {result.mean[name]:.3f} | {result.std[name]:.3f} |")
    print(f"\nPer-fold accuracy: {[round(m['accuracy'], 3) for m in result.fold_metrics]}, "
          f"{cv_seconds:.0f} s")
    env = "TF_USE_LEGACY_KERAS=1 " if USING_TF_KERAS else ""
    print(f"\nCommand: `{env}python {' '.join(shlex.quote(a) for a in sys.argv)}`")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
          f"(shared), Python {platform.python_version()}")


if __name__ == "__main__":
    main()
