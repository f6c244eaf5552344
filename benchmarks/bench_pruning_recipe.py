"""Choosing the fine-tuning recipe of 80% pruning on a validation split, not on the test set.

`bench_compression.py` measured 80% pruning on Keras 3 at -1.67 points against float + the
same fine-tuning (five seeds; target -1), with a recipe fixed before any run: fine-tuning at
`--lr / 10`, the target sparsity reached at half the fine-tuning, masks updated every 10
steps. Trying other recipes against the test figures would tune on the test set, so this
script compares recipes on a validation split carved from the training data only: the
1257 training images of `_common.digits_split()` split again, stratified 70/30
(`random_state=1`), 879 to train and 378 to validate (1 image = 0.265 points); the 540
test images are never loaded.

Per seed: the base model of `bench_compression.py` (`train_base`, 10 epochs), then per
recipe, from that base: float + fine-tune (`fine_tune`), and 80% pruning distilled from the
base (`prune` + `PruningCallback` inside the `Distiller` of `fine_tune`), stripped; both
scored on the validation images with Keras. A recipe is `end=E,freq=F,div=D,ft=N`: target
reached at E of the N fine-tuning epochs, masks every F steps, fine-tuning at lr / D.
Printed: one JSON line per seed and recipe, then per recipe the mean and standard
deviation over seeds of pruned minus float + fine-tune (points). The recipe with the best
mean becomes `bench_compression.py`'s default; the test set then measures it once.

Run (Keras 3; recorded in benchmarks/results/bench_pruning_recipe_keras3.txt):

    python benchmarks/bench_pruning_recipe.py --seeds 0 1 2 --recipes \
        end=0.5,freq=10,div=10,ft=8 end=0.5,freq=10,div=3,ft=8 \
        end=0.75,freq=5,div=3,ft=8 end=0.75,freq=5,div=10,ft=8
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from keras_dnnopt.backend import KERAS_NAME  # noqa: E402
from keras_dnnopt.compression import (  # noqa: E402
    PruningCallback,
    prune,
    sparsity_report,
    strip_pruning,
)

from _common import digits_split, print_footer  # noqa: E402
from bench_compression import (  # noqa: E402
    build_parser,
    copy_model,
    fine_tune,
    prune_end_step,
    train_base,
)

KEYS = {"end": ("prune_end", float), "freq": ("frequency", int),
        "div": ("ft_lr_divisor", float), "ft": ("finetune", int)}


def recipe(text):
    """`end=0.5,freq=10,div=3,ft=8` -> {"prune_end": 0.5, "frequency": 10, ...}."""
    try:
        pairs = dict(item.split("=") for item in text.split(","))
        if set(pairs) != set(KEYS):
            raise ValueError
        return {KEYS[k][0]: KEYS[k][1](v) for k, v in pairs.items()}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"recipe {text!r}: expected end=FRACTION,freq=STEPS,div=DIVISOR,ft=EPOCHS, "
            "e.g. end=0.5,freq=10,div=3,ft=8") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--recipes", nargs="+", default=["end=0.5,freq=10,div=10,ft=8"],
                        help="end=FRACTION,freq=STEPS,div=DIVISOR,ft=EPOCHS each")
    parser.add_argument("--out", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    try:
        recipes = [(text, recipe(text)) for text in args.recipes]
    except argparse.ArgumentTypeError as error:
        parser.error(f"--recipes: {error}")

    clock = time.perf_counter()
    x_train, _, y_train, _ = digits_split()  # the test images are dropped here
    x_fit, x_val, y_fit, y_val = train_test_split(x_train, y_train, test_size=0.3,
                                                  stratify=y_train, random_state=1)

    def accuracy(model):
        predictions = model.predict(x_val, verbose=0, batch_size=256)
        return float(np.mean(np.argmax(predictions, -1) == y_val))

    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        base = train_base(build_parser().parse_args([]), seed, x_fit, y_fit)
        base_accuracy = accuracy(base)
        for text, settings in recipes:
            flags = build_parser().parse_args([])
            vars(flags).update(settings)
            float_ft = accuracy(fine_tune(flags, seed, copy_model(base), x_fit, y_fit))
            model = prune(base, target_sparsity=0.8, end_step=prune_end_step(flags, len(x_fit)),
                          frequency=flags.frequency)
            stripped = strip_pruning(fine_tune(flags, seed, model, x_fit, y_fit,
                                               [PruningCallback()], teacher=base))
            pruned = accuracy(stripped)
            row = dict(keras=KERAS_NAME, seed=seed, recipe=text, base=base_accuracy,
                       float_ft=float_ft, pruned=pruned, delta=100 * (pruned - float_ft),
                       sparsity=sparsity_report(stripped).overall)
            rows.append(row)
            print(json.dumps(row), f"{time.perf_counter() - start:.0f}s", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f)
    print(f"\nPruned 80% minus float + fine-tune on {len(x_val)} validation images, points "
          f"({KERAS_NAME}, seeds {' '.join(map(str, args.seeds))}):\n")
    for text, _ in recipes:
        deltas = [row["delta"] for row in rows if row["recipe"] == text]
        spread = np.std(deltas, ddof=1) if len(deltas) > 1 else 0.0
        print(f"{text}: mean {np.mean(deltas):+.2f} sd {spread:.2f} "
              f"(seeds: {', '.join(f'{d:+.2f}' for d in deltas)})")
    print_footer(f" ({time.perf_counter() - clock:.0f} s)")


if __name__ == "__main__":
    main()
