"""Compression and deployment on scikit-learn's digits: every route to a smaller TFLite file.

Data: `sklearn.datasets.load_digits` (1797 real 8x8 grayscale digits, pixels / 16), a
stratified 70/30 train/test split (`random_state=0`): 1257 training and 540 test images,
so one test image is 0.185 points of accuracy. Model, the same for every row:
`mobilenet_v1(input_shape=(8, 8, 1), num_classes=10, alpha=--alpha,
min_feature_size=--min-feature-size)` (softmax head), batch-norm momentum 0.9. The defaults,
alpha 1.25 with the last two strides kept (8x8 -> 4x4 -> 2x2), give 5.0M parameters: wide
enough that the int8 weights dominate the per-channel quantization parameters TFLite stores
with each convolution (a float32 scale and an int64 zero point per output channel of every
kernel and bias; `bench_int8_overhead.py` measures it per width), for about twice the
training cost of alpha 0.5 with only the last stride (59M vs 32M MACs per image).
The base model trains `--epochs` epochs with Adam and a cosine
decay from `--lr` to 0. The rows that train fine-tune it for
`--finetune` epochs with Adam and a cosine decay from `--lr / --ft-lr-divisor` to 0
(divisor 3 since 2026-12-01, chosen for 80% pruning on a validation split by
`bench_pruning_recipe.py`; the earlier runs used 10 and say so):

- float / dynamic / float16 / int8 PTQ / int8 PTQ full-integer: the base model, exported
  by `keras_dnnopt.export.export_tflite` in each quantization mode (int8 modes calibrated
  on 200 training images);
- float + fine-tune: the same extra epochs without compression, the fair reference of
  every row that fine-tunes (same data, steps and learning rates);
- QAT int8 (tf_keras only: TF-MOT): `keras_dnnopt.compression.quantize`, fine-tuned, int8;
- pruned 50% / 80%: `keras_dnnopt.compression.prune` (polynomial schedule reaching the
  target at `--prune-end` of the fine-tuning, 0.5: the second half recovers at the final
  sparsity; masks updated every `--frequency` steps, 10),
  trained with `PruningCallback` inside a `keras_dnnopt.distillation.Distiller` whose
  teacher is the float base model (KL at temperature 4, alpha 0.1; `--no-distill` trains
  on the labels alone), exported float; pruned 80% + int8: the same model, int8 PTQ;
- clustered 16 + int8: `keras_dnnopt.compression.cluster(16)`, fine-tuned, stripped, int8.

Every accuracy is that of the exported file, run by LiteRT (`evaluate_tflite`). Each of
`--seeds` retrains everything (base model included) with that seed; accuracies are
mean ± standard deviation over the seeds, and the differences ("vs float", "vs float +
ft") are paired per seed. Sizes raw and gzipped (`file_sizes`; the zeros of pruning and
the shared values of clustering shrink only the compressed file: TFLite stores dense
tensors), means over seeds. Latency: first seed only, batch 1, one thread, median of
`--runs` (`benchmark_tflite`); on a loaded machine it is noisy, rerun it on a quiet one.
Ratios are against the float file. The table is printed again after every seed. Nothing
is tuned on the test set: the fine-tuning learning rate was chosen on a validation split
carved from the training images (`bench_pruning_recipe.py`), every other setting was fixed
before the runs.

Targets (issue 4): full-int8 file <= 0.27x the float file; int8 PTQ loses <= 1 point, QAT
<= 0.5; 80% sparsity loses <= 1 point and its gzipped file is <= 0.35x the float file's
gzipped size; pruned + int8 gzipped <= 0.12x; int8 latency below float latency.

Run (Keras 3; add TF_USE_LEGACY_KERAS=1 for tf_keras, where TF-MOT adds QAT):

    python benchmarks/bench_compression.py --seeds 0 1 2

`--pruning-only` trains and exports only the rows of the 80% pruning targets (float, float
+ fine-tune, pruned 80%, pruned 80% + int8), and `--runs 0` skips the latency: what two
runs side by side (one per Keras) can measure without timing each other.
"""

import argparse
import json
import os
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
from keras_dnnopt.distillation import Distiller  # noqa: E402
from keras_dnnopt.export import (  # noqa: E402
    benchmark_tflite,
    evaluate_tflite,
    export_tflite,
)
from keras_dnnopt.models import mobilenet_v1  # noqa: E402

from _common import digits_split, fast_batchnorm, print_footer  # noqa: E402

FLOAT, FLOAT_FT = "float", "float + fine-tune"
RECIPE = ("epochs", "finetune", "batch", "lr", "ft_lr_divisor", "prune_end", "frequency",
          "no_distill", "alpha", "min_feature_size")


def adam(lr, steps):
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps))


def base_model(alpha=1.25, min_feature_size=2):
    """The untrained model of every row, batch-norm momentum 0.9."""
    return fast_batchnorm(mobilenet_v1(input_shape=(8, 8, 1), num_classes=10, alpha=alpha,
                                       min_feature_size=min_feature_size))


def copy_model(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def train_base(args, seed, x, y):
    """The base model of every row, seeded with `seed`: `args.epochs` epochs, Adam with a
    cosine decay from `args.lr` to 0."""
    keras.utils.set_random_seed(seed)
    base = base_model(args.alpha, args.min_feature_size)
    steps = args.epochs * int(np.ceil(len(x) / args.batch))
    base.compile(optimizer=adam(args.lr, steps), loss="sparse_categorical_crossentropy",
                 metrics=["accuracy"])
    base.fit(x, y, batch_size=args.batch, epochs=args.epochs, verbose=0)
    return base


def fine_tune(args, seed, model, x, y, callbacks=(), teacher=None):
    """Fine-tunes `model` (returned) `args.finetune` epochs, Adam with a cosine decay from
    `args.lr / args.ft_lr_divisor` to 0, reseeded with `seed` first; with a `teacher`, inside
    a `Distiller` (KL at temperature 4, alpha 0.1)."""
    keras.utils.set_random_seed(seed)
    trained = model
    if teacher is not None:  # the float model teaches the pruned student
        trained = Distiller(teacher, model, temperature=4.0, alpha=0.1, from_logits=False)
    steps = args.finetune * int(np.ceil(len(x) / args.batch))
    trained.compile(optimizer=adam(args.lr / args.ft_lr_divisor, steps),
                    loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    trained.fit(x, y, batch_size=args.batch, epochs=args.finetune, verbose=0,
                callbacks=list(callbacks))
    return model


def prune_end_step(args, n_train):
    """The step at which pruning reaches its target: `args.prune_end` of the fine-tuning
    steps, rounded down to a multiple of `args.frequency`."""
    steps = args.finetune * int(np.ceil(n_train / args.batch))
    return int(steps * args.prune_end) // args.frequency * args.frequency


def run_seed(args, seed, data, with_latency):
    """Trains every variant for one seed; returns {row: (acc, raw, gz, ms or None, sparsity)}."""
    x_train, x_test, y_train, y_test = data
    calibration = x_train[:200]
    base = train_base(args, seed, x_train, y_train)
    end_step = prune_end_step(args, len(x_train))

    def finetune(model, callbacks=(), teacher=None):
        return fine_tune(args, seed, model, x_train, y_train, callbacks, teacher)

    variants = [(FLOAT, lambda: base, "none")]
    if not args.pruning_only:
        variants += [
            ("dynamic range", lambda: base, "dynamic"),
            ("float16", lambda: base, "float16"),
            ("int8 PTQ", lambda: base, "int8"),
            ("int8 PTQ, full-integer I/O", lambda: base, "int8_full"),
        ]
    variants.append((FLOAT_FT, lambda: finetune(copy_model(base)), "none"))
    if USING_TF_KERAS and not args.pruning_only:
        variants.append(("QAT int8", lambda: finetune(quantize(base)), "int8"))
    pruned = {}

    def pruned_model(target):
        if target not in pruned:
            # Seeded here too: Keras 3 draws the seeds of the clone's random layers (dropout)
            # when prune() clones the model, so without it the pruned rows would depend on
            # which rows ran before.
            keras.utils.set_random_seed(seed)
            model = prune(base, target_sparsity=target, end_step=end_step,
                          frequency=args.frequency)
            pruned[target] = finetune(model, [PruningCallback()],
                                      teacher=None if args.no_distill else base)
        return pruned[target]

    if not args.pruning_only:
        variants.append(("pruned 50%", lambda: pruned_model(0.5), "none"))
    variants += [
        ("pruned 80%", lambda: pruned_model(0.8), "none"),
        ("pruned 80% + int8", lambda: pruned_model(0.8), "int8"),
    ]
    if not args.pruning_only:
        variants.append(
            ("clustered 16 + int8",
             lambda: strip_clustering(finetune(cluster(base, number_of_clusters=16))), "int8"))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, make, mode) in enumerate(variants):
            model = make()
            path = os.path.join(tmp, f"{i}.tflite")
            exported = export_tflite(model, path, quantization=mode,
                                     representative_data=calibration if "int8" in mode else None)
            accuracy = evaluate_tflite(path, (x_test, y_test))["accuracy"]
            latency = (benchmark_tflite(path, threads=1, runs=args.runs, warmup=20).median_ms
                       if with_latency else None)
            sparsity = sparsity_report(model).overall if name.startswith("pruned") else None
            results[name] = (accuracy, exported.size_bytes, exported.gzipped_size_bytes,
                             latency, sparsity)
    return results, base.count_params()


def mean_std(values):
    values = np.asarray(values, dtype="float64")
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return values.mean(), std


def print_table(per_seed, args, params, n_train, n_test, clock):
    seeds = args.seeds[:len(per_seed)]
    names = list(per_seed[0])
    acc = {n: np.array([100 * r[n][0] for r in per_seed]) for n in names}
    raw = {n: np.mean([r[n][1] for r in per_seed]) for n in names}
    gz = {n: np.mean([r[n][2] for r in per_seed]) for n in names}
    lat = {n: per_seed[0][n][3] for n in names}
    print(f"\nCompression on digits ({n_train} train / {n_test} test, 8x8x1; 1 test image = "
          f"{100 / n_test:.3f} pts), mobilenet_v1(alpha={args.alpha}, min_feature_size="
          f"{args.min_feature_size}) {params:,} params, {KERAS_NAME} (TF {tf.__version__}); "
          f"{args.epochs} epochs + {args.finetune} fine-tuning at lr / {args.ft_lr_divisor:g}; "
          f"pruning reaches its target at {args.prune_end:.0%} of the fine-tuning, masks "
          f"updated every {args.frequency} steps"
          f"{'' if args.no_distill else ' (pruning distilled from the float model)'}; "
          f"seeds {' '.join(map(str, seeds))} (mean ± std)\n")
    print("| variant | accuracy (file) | vs float | vs float + ft | raw KiB | raw ratio "
          "| gzip KiB | gzip ratio | LiteRT batch-1 ms | latency ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def latency(n):
        if lat[n] is None:
            return "not measured | -"
        return f"{lat[n]:.3f} | {lat[n] / lat[FLOAT]:.2f}x"

    for n in names:
        sparsity = per_seed[0][n][4]
        label = n if sparsity is None else f"{n} (kernels {sparsity:.1%} zero)"
        a, sa = mean_std(acc[n])
        d, sd = mean_std(acc[n] - acc[FLOAT])
        f, sf = mean_std(acc[n] - acc[FLOAT_FT])
        print(f"| {label} | {a:.2f} ± {sa:.2f}% | {d:+.2f} ± {sd:.2f} | {f:+.2f} ± {sf:.2f} "
              f"| {raw[n] / 1024:.1f} | {raw[n] / raw[FLOAT]:.3f}x | {gz[n] / 1024:.1f} "
              f"| {gz[n] / gz[FLOAT]:.3f}x | {latency(n)} |")

    def delta(n, ref):
        return mean_std(acc[n] - acc[ref])[0]

    checks = []  # (target, measured, met), for the rows this run has
    if "int8 PTQ, full-integer I/O" in acc:
        r = raw["int8 PTQ, full-integer I/O"] / raw[FLOAT]
        checks.append(("full-int8 file <= 0.27x float", f"{r:.3f}x", r <= 0.27))
    if "int8 PTQ" in acc:
        d = delta("int8 PTQ", FLOAT)
        checks.append(("int8 PTQ loses <= 1 pt (vs float)", f"{d:+.2f}", d >= -1))
    if "QAT int8" in acc:
        d = delta("QAT int8", FLOAT_FT)
        checks.append(("QAT loses <= 0.5 pt (vs float + ft)", f"{d:+.2f}", d >= -0.5))
    d, r = delta("pruned 80%", FLOAT_FT), gz["pruned 80%"] / gz[FLOAT]
    checks.append(("80% sparsity loses <= 1 pt (vs float + ft)", f"{d:+.2f}", d >= -1))
    checks.append(("80% sparsity gzipped <= 0.35x", f"{r:.3f}x", r <= 0.35))
    r = gz["pruned 80% + int8"] / gz[FLOAT]
    checks.append(("pruned + int8 gzipped <= 0.12x", f"{r:.3f}x", r <= 0.12))
    if "int8 PTQ" in acc and lat[FLOAT] is not None:
        r = lat["int8 PTQ"] / lat[FLOAT]
        checks.append(("int8 latency < float (batch 1)", f"{r:.2f}x", r < 1))
    print("\n| target | measured (mean) | verdict |\n|---|---:|---|")
    for target, measured, ok in checks:
        print(f"| {target} | {measured} | {'met' if ok else '**missed**'} |")
    print_footer(f" ({time.perf_counter() - clock:.0f} s so far)")


def build_parser():
    """The flags of this benchmark (`bench_pruning_recipe.py` reuses the recipe's)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=1.25)
    parser.add_argument("--min-feature-size", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--finetune", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--ft-lr-divisor", type=float, default=3,
                        help="fine-tuning starts at --lr divided by this")
    parser.add_argument("--prune-end", type=float, default=0.5,
                        help="fraction of the fine-tuning steps at which pruning reaches "
                             "its target sparsity")
    parser.add_argument("--frequency", type=int, default=10,
                        help="pruning masks are updated every this many steps")
    parser.add_argument("--runs", type=int, default=200,
                        help="timed LiteRT runs per file (first seed; 0: no latency)")
    parser.add_argument("--pruning-only", action="store_true",
                        help="train and export only the rows of the 80%% pruning targets: float, "
                             "float + fine-tune, pruned 80%%, pruned 80%% + int8")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--no-distill", action="store_true",
                        help="prune on the labels alone (no float teacher)")
    parser.add_argument("--save", help="also write the per-seed results to this JSON file")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="train nothing: print the table of runs saved with --save, in "
                             "the order given (latency from the first; pass --seeds to "
                             "label files saved without their seeds)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    clock = time.perf_counter()
    data = digits_split()
    if args.merge:
        per_seed, seeds = [], []
        for path in args.merge:
            with open(path) as f:
                saved = json.load(f)
            per_seed += saved["per_seed"]
            seeds += saved.get("seeds", [])
            vars(args).update(saved.get("recipe", {}))  # files saved before it: pass the flags
            params = saved["params"]
        args.seeds = seeds if len(seeds) == len(per_seed) else args.seeds
        print_table(per_seed, args, params, len(data[0]), len(data[1]), clock)
        return
    per_seed = []
    for i, seed in enumerate(args.seeds):
        results, params = run_seed(args, seed, data, with_latency=i == 0 and args.runs > 0)
        per_seed.append(results)
        if args.save:
            with open(args.save, "w") as f:
                json.dump({"params": params, "seeds": args.seeds[:len(per_seed)],
                           "recipe": {k: vars(args)[k] for k in RECIPE},
                           "per_seed": per_seed}, f)
        print_table(per_seed, args, params, len(data[0]), len(data[1]), clock)


if __name__ == "__main__":
    main()
