"""Knowledge distillation on scikit-learn's digits: accuracy and step time.

Data: `sklearn.datasets.load_digits` (1797 real 8x8 grayscale digits, pixels / 16), a
stratified 70/30 train/test split (`random_state=0`). Models (`keras_dnnopt.models`,
logits out): the teacher is `mobilenet_v1(alpha=--teacher-alpha)` trained once, the
student `mobilenet_v1(alpha=--student-alpha)`, batch-norm momentum 0.9. Every student
run uses the same epochs, batch size and schedule: Adam with `WarmupCosineDecay(--lr,
decay_steps, warmup_steps=one epoch)`.

1. Accuracy, over `--seeds` seeds (the seed fixes the student's initialisation and the
   data order): the student from scratch (plain `fit`), distilled with our `Distiller`
   (live teacher), distilled with our `Distiller` fed by `cache_teacher_outputs`, and on
   Keras 3 distilled with `keras.distillation.Distiller` (`LogitsDistillation(T, loss=
   keras.losses.KLDivergence())`, same `T` and the same weight on the hard loss). The
   test accuracy of the final epoch is reported, mean and std over seeds.
2. Step time of one training step at batch `--batch` after `--warmup` untimed steps,
   interleaved configurations, median over `--repeats` runs: the student alone, our
   Distiller with the live teacher and with cached teacher outputs, and Keras'
   Distiller; ratios against the student alone.

Prints Markdown tables, the exact command and the versions.

Run (Keras 3; add TF_USE_LEGACY_KERAS=1 for tf_keras, where Keras' Distiller is absent):

    python benchmarks/bench_distillation.py
    python benchmarks/bench_distillation.py --seeds 5 --epochs 40
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_dnnopt.backend import KERAS_NAME, USING_TF_KERAS, keras, tf  # noqa: E402
from keras_dnnopt.distillation import Distiller, cache_teacher_outputs  # noqa: E402
from keras_dnnopt.models import mobilenet_v1  # noqa: E402
from keras_dnnopt.schedules import WarmupCosineDecay  # noqa: E402

from _common import digits_split, fast_batchnorm, print_footer  # noqa: E402


def sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_model(alpha, seed):
    keras.utils.set_random_seed(seed)
    return fast_batchnorm(mobilenet_v1(input_shape=(8, 8, 1), num_classes=10, alpha=alpha,
                                       classifier_activation=None))


def optimizer(args, steps_per_epoch, epochs):
    schedule = WarmupCosineDecay(args.lr, decay_steps=steps_per_epoch * epochs,
                                 warmup_steps=steps_per_epoch)
    return keras.optimizers.Adam(schedule)


def train_dataset(x, y, batch, seed):
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch)
            .prefetch(tf.data.AUTOTUNE))


def accuracy(model, x, y):
    return float(np.mean(model.predict(x, batch_size=256, verbose=0).argmax(-1) == y))


def student_run(kind, args, teacher, data, seed):
    """Trains one student; returns its test accuracy."""
    x_train, x_test, y_train, y_test = data
    steps = -(-len(x_train) // args.batch)
    student = make_model(args.student_alpha, seed)
    opt = optimizer(args, steps, args.epochs)
    if kind == "scratch":
        model = student
        model.compile(opt, loss=sparse_ce())
        fit_data = train_dataset(x_train, y_train, args.batch, seed)
    elif kind == "ours (live)":
        model = Distiller(teacher, student, temperature=args.temperature, alpha=args.alpha)
        model.compile(opt, loss=sparse_ce())
        fit_data = train_dataset(x_train, y_train, args.batch, seed)
    elif kind == "ours (cached)":
        model = Distiller(teacher, student, temperature=args.temperature, alpha=args.alpha)
        model.compile(opt, loss=sparse_ce())
        fit_data = cache_teacher_outputs(teacher, x_train, y_train, batch_size=args.batch,
                                         seed=seed)
    else:  # keras.distillation.Distiller
        model = keras_distiller(teacher, student, args)
        model.compile(opt, loss=sparse_ce())
        fit_data = train_dataset(x_train, y_train, args.batch, seed)
    model.fit(fit_data, epochs=args.epochs, verbose=0)
    return accuracy(student, x_test, y_test)


def keras_distiller(teacher, student, args):
    from keras.distillation import Distiller as KerasDistiller
    from keras.distillation import LogitsDistillation

    # loss=KLDivergence() matters: the default "kl_divergence" string becomes a plain
    # function applied to logits (no softmax, no T^2) in Keras 3.15.
    return KerasDistiller(
        teacher, student,
        distillation_losses=LogitsDistillation(args.temperature, loss=keras.losses.KLDivergence()),
        student_loss_weight=args.alpha)


class _Timer(keras.callbacks.Callback):
    """Times from the start of batch `warmup` to the end of the epoch."""

    def __init__(self, warmup):
        super().__init__()
        self.warmup = warmup
        self.seconds = None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.warmup:
            self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self._start


def timing(args, teacher, data, kinds):
    x_train, _, y_train, _ = data
    total = args.warmup + args.steps
    models = {}
    for kind in kinds:
        student = make_model(args.student_alpha, 0)
        opt = keras.optimizers.Adam(1e-3)
        live = train_dataset(x_train, y_train, args.batch, 0).repeat()
        if kind == "student alone":
            model, fit_data = student, live
        elif kind == "ours, live teacher":
            model = Distiller(teacher, student, temperature=args.temperature, alpha=args.alpha)
            fit_data = live
        elif kind == "ours, cached outputs":
            model = Distiller(teacher, student, temperature=args.temperature, alpha=args.alpha)
            fit_data = cache_teacher_outputs(teacher, x_train, y_train, batch_size=args.batch,
                                             seed=0).repeat()
        else:
            model, fit_data = keras_distiller(teacher, student, args), live
        model.compile(opt, loss=sparse_ce())
        models[kind] = (model, fit_data)
    times = {kind: [] for kind in kinds}
    for _ in range(args.repeats):
        for kind, (model, fit_data) in models.items():
            timer = _Timer(args.warmup)
            model.fit(fit_data, epochs=1, steps_per_epoch=total, verbose=0, callbacks=[timer])
            times[kind].append(timer.seconds / args.steps)
    return {kind: statistics.median(values) for kind, values in times.items()}, times


def run(args):
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    clock = time.perf_counter()
    data = digits_split()
    x_train, x_test, y_train, y_test = data
    steps = -(-len(x_train) // args.batch)

    teacher = make_model(args.teacher_alpha, 1000)
    teacher.compile(optimizer(args, steps, args.teacher_epochs), loss=sparse_ce())
    teacher.fit(train_dataset(x_train, y_train, args.batch, 1000), epochs=args.teacher_epochs,
                verbose=0)
    teacher_acc = accuracy(teacher, x_test, y_test)

    kinds = ["scratch", "ours (cached)"] + (["ours (live)"] if args.live_accuracy else [])
    if not USING_TF_KERAS and not args.skip_keras:
        kinds.append("keras.distillation.Distiller")
    results = {kind: [] for kind in kinds}
    for seed in range(args.seeds):
        for kind in kinds:
            results[kind].append(student_run(kind, args, teacher, data, seed))

    time_kinds = ["student alone", "ours, live teacher", "ours, cached outputs"]
    if not USING_TF_KERAS and not args.skip_keras:
        time_kinds.append("keras.distillation.Distiller")
    medians, all_times = timing(args, teacher, data, time_kinds)

    print(f"\nDistillation on digits ({len(x_train)} train / {len(x_test)} test, 8x8x1), "
          f"{KERAS_NAME} (TF {tf.__version__}); started {started}\n")
    print(f"Teacher mobilenet_v1(alpha={args.teacher_alpha}), {teacher.count_params():,} "
          f"params, {args.teacher_epochs} epochs: test accuracy {100 * teacher_acc:.2f}%. "
          f"Student mobilenet_v1(alpha={args.student_alpha}), "
          f"{make_model(args.student_alpha, 0).count_params():,} params; {args.epochs} epochs, "
          f"batch {args.batch}, Adam + WarmupCosineDecay({args.lr}), T={args.temperature}, "
          f"alpha (hard-loss weight)={args.alpha}.\n")
    if args.seeds:
        print(f"| student ({args.seeds} seeds) | test accuracy mean | std | min..max | "
              f"vs scratch |")
        print("|---|---:|---:|---:|---:|")
    base = np.mean(results["scratch"]) if args.seeds else 0.0
    for kind, accs in results.items() if args.seeds else ():
        accs = np.array(accs) * 100
        delta = "-" if kind == "scratch" else f"{accs.mean() - 100 * base:+.2f} pts"
        print(f"| {kind} | {accs.mean():.2f}% | {accs.std(ddof=1) if len(accs) > 1 else 0:.2f} "
              f"| {accs.min():.2f}..{accs.max():.2f} | {delta} |")

    print(f"\nStep time, batch {args.batch}, {args.steps} timed steps after {args.warmup}, "
          f"median of {args.repeats} interleaved runs\n")
    print("| configuration | median step (ms) | min..max (ms) | vs student alone |")
    print("|---|---:|---:|---:|")
    alone = medians["student alone"]
    for kind, median in medians.items():
        spread = f"{1e3 * min(all_times[kind]):.2f}..{1e3 * max(all_times[kind]):.2f}"
        print(f"| {kind} | {1e3 * median:.2f} | {spread} | {median / alone:.2f}x |")
    if "keras.distillation.Distiller" in medians:
        ratio = medians["ours, live teacher"] / medians["keras.distillation.Distiller"]
        print(f"\nOurs (live teacher) / keras.distillation.Distiller step time: {ratio:.2f}x")

    print_footer(f" ({time.perf_counter() - clock:.0f} s)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3,
                        help="student seeds for the accuracy table; 0 measures step time only")
    parser.add_argument("--epochs", type=int, default=20, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--teacher-alpha", type=float, default=1.0)
    parser.add_argument("--student-alpha", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.1, help="weight of the hard loss")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per timing run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per timing run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--live-accuracy", action="store_true",
                        help="also train our Distiller with the live teacher for the accuracy "
                             "table (the cached run computes the same losses, at the cost of "
                             "the student alone)")
    parser.add_argument("--skip-keras", action="store_true",
                        help="leave out keras.distillation.Distiller (Keras 3 only anyway)")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
