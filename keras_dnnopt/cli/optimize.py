"""`dnnopt optimize`: the whole chain on a dataset, with a report card of every stage."""

import argparse
import os

from keras_dnnopt.cli._errors import UsageError

EPILOG = """\
stages: data (load, de-duplicate, normalise, split, augment) -> baseline (the teacher,
warm-up cosine schedule) -> student (a narrower MobileNet, trained alone as a reference)
-> distill -> prune (with distillation) -> quantize (QAT on tf_keras, full-integer PTQ on
Keras 3) -> export (TFLite, evaluated with LiteRT).

Every run leaves its deployable model as OUT/model.tflite, and the Keras model it was
exported from as OUT/model.keras (read it back with keras_dnnopt.load_model).

budget: any of --max-size, --max-latency, --max-macs, --min-accuracy replaces the chain
after the baseline by a search for the most accurate model within the limits: width,
input resolution, channel pruning ratio, quantization (int8 PTQ/QAT, float16) and
distillation. Candidates that cannot fit are dropped before training (their MACs, file
size and latency are measured untrained); the rest go through successive halving (short
training for many, full training for the best). Size is the .tflite file's bytes, latency
the LiteRT median at batch 1 on this machine. The report shows the Pareto front and every
candidate. When nothing fits, it names the binding limit and the closest candidate and
the command exits with status 3. Every finished trial is saved: a rerun continues.

Each stage is saved as it finishes (OUT/stages/<n>_<stage>/). Interrupted (Ctrl-C) or
killed, the same command again skips the finished stages and continues the stage in
progress from its last finished epoch; the results equal an uninterrupted run's. The same
command with the same --seed gives the same numbers on the same machine and versions (CPU).
A rerun with other settings in the same OUT is refused unless --overwrite is given (then
unchanged stages are still reused) or --force (every stage redone). The report card is
OUT/report.html, OUT/report.md and OUT/metrics.json.

examples:
  dnnopt optimize --dataset digits --out runs/demo
  dnnopt optimize --dataset fashion_mnist --out runs/fashion --config run.yaml
  dnnopt optimize --dataset path/to/images --out runs/mine     (one subfolder per class)
  dnnopt optimize --print-config > run.yaml                    (every setting, to edit)
  dnnopt optimize --max-size 64KB --max-latency 2ms --trials 12 --time-budget 20m
  dnnopt optimize --data mine.npz --model mine.keras --max-size 32KB   (your model and data)
  dnnopt optimize --dataset diabetes --task regression --max-rmse 60   (tabular regression)
"""


def add_parser(subparsers):
    """Registers the `optimize` subcommand on an argparse subparsers object."""
    from keras_dnnopt.cli._common import DATASETS as DATASET_NAMES  # no TensorFlow

    parser = subparsers.add_parser(
        "optimize",
        help="Run the whole chain on a dataset: train, distill, prune, quantize, export, report.",
        description=("From a dataset to a deployable int8 TFLite model, with a report card "
                     "of every stage."),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dataset", default=None,
        help=f"a dataset name ({', '.join(DATASET_NAMES)}) or a folder with one subfolder "
             "of images per class (default: digits, or the config file's)")
    parser.add_argument(
        "--data", default=None, metavar="DATA.npz",
        help="your own data: a .npz file of arrays x_train, y_train and optionally x_val, "
             "y_val, x_test, y_test (images (n, h, w[, c]) or tabular rows (n, features))")
    parser.add_argument(
        "--task", default=None, choices=("classification", "regression"),
        help="classification (class ids as labels; the default) or regression (float "
             "targets, scored by RMSE; tabular data)")
    parser.add_argument(
        "--model", default=None, metavar="MODEL.keras",
        help="start from your own trained .keras model: it is the baseline (its score is "
             "the reference) and it is pruned, quantized and exported itself, not rebuilt")
    parser.add_argument("--out", default=os.path.join("runs", "dnnopt"),
                        help="the output folder (default: runs/dnnopt)")
    parser.add_argument("--config", default=None, metavar="RUN.yaml",
                        help="a YAML file of settings to change (see --print-config)")
    parser.add_argument("--force", action="store_true",
                        help="redo every stage instead of reusing finished ones (implies "
                             "--overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="accept an OUT made with other settings: the stages they change "
                             "(and those after) are redone, the others reused")
    parser.add_argument("--stages", default=None,
                        help="comma-separated stages to run, e.g. data,baseline,export "
                             "(default: all, or the config file's)")
    parser.add_argument("--seed", type=int, default=None, help="the random seed (default: 0)")
    parser.add_argument("--verbose", default=None, choices=("auto", "bars", "lines", "quiet"),
                        help="training output: progress bars, one line per epoch, or none "
                             "(default: auto = bars on a terminal, lines otherwise)")
    budget = parser.add_argument_group(
        "budget", "limits of the deployed model; any of them runs the search (see below)")
    budget.add_argument("--max-size", default=None, metavar="SIZE",
                        help="the largest .tflite file, e.g. 64KB, 1.5MiB, 20000 (bytes)")
    budget.add_argument("--max-latency", default=None, metavar="TIME",
                        help="the slowest LiteRT latency at batch 1, e.g. 2ms, 500us")
    budget.add_argument("--max-macs", default=None, metavar="COUNT",
                        help="the most multiply-accumulates per input, e.g. 5M, 300K")
    budget.add_argument("--min-accuracy", default=None, metavar="FRACTION",
                        help="the lowest test accuracy, e.g. 0.97")
    budget.add_argument("--max-rmse", default=None, metavar="NUMBER",
                        help="regression: the largest test RMSE, in the targets' units")
    budget.add_argument("--trials", type=int, default=None, metavar="N",
                        help="candidates trained at the first fidelity (default: 12)")
    budget.add_argument("--time-budget", default=None, metavar="TIME",
                        help="stop starting trials after this long, e.g. 20m, 1h, 900 (s)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration as YAML and exit")
    parser.set_defaults(func=run)
    return parser


def _overrides(args):
    overrides = {}
    if args.dataset is not None and args.data is not None:
        raise UsageError(f"--data: give either --dataset or --data, not both. Received: "
                         f"--dataset {args.dataset!r} --data {args.data!r}")
    if args.dataset is not None:
        overrides["dataset"] = args.dataset
    if args.data is not None:
        if not (args.data.endswith(".npz") and os.path.isfile(args.data)):
            raise UsageError(f"--data: must be an existing .npz file of arrays (x_train, "
                             f"y_train, ...); for a folder of images use --dataset. "
                             f"Received: {args.data!r}")
        overrides["dataset"] = args.data
    if args.task is not None:
        overrides["task"] = args.task
    if args.model is not None:
        if not (args.model.endswith(".keras") and os.path.isfile(args.model)):
            raise UsageError(f"--model: must be an existing .keras file (a trained model "
                             f"saved by the Keras in use). Received: {args.model!r}")
        overrides["model"] = args.model
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.verbose is not None:
        overrides["verbose"] = args.verbose
    if args.stages is not None:
        overrides["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    budget = {}
    for flag in ("max_size", "max_latency", "max_macs", "min_accuracy", "max_rmse"):
        value = getattr(args, flag)
        if value is None:
            continue
        if flag in ("min_accuracy", "max_rmse"):
            what = ("a fraction in (0, 1], e.g. 0.97" if flag == "min_accuracy"
                    else "a number > 0 in the targets' units, e.g. 55")
            try:
                value = float(value)
            except ValueError:
                raise UsageError(f"--{flag.replace('_', '-')}: must be {what}. "
                                 f"Received: {value!r}") from None
        budget[flag] = value
    if budget:
        overrides["budget"] = budget
    search = {}
    if args.trials is not None:
        if args.trials < 1:
            raise UsageError(f"--trials: must be >= 1. Received: {args.trials}")
        search["trials"] = args.trials
    if args.time_budget is not None:
        search["time_budget"] = args.time_budget
    if search:
        overrides["search"] = search
    return overrides


def run(args):
    import sys

    from keras_dnnopt.pipeline.config import load_config

    config = load_config(args.config, _overrides(args))
    if args.print_config:
        import yaml

        sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
        return 0
    _make_out(args.out)
    from keras_dnnopt.pipeline.runner import BudgetNotMet, ConfigChanged, Interrupted, optimize

    command = "dnnopt " + " ".join(sys.argv[1:]) if sys.argv[1:] else "dnnopt optimize"
    try:
        optimize(config, args.out, force=args.force, overwrite=args.overwrite,
                 command=command, log=lambda text: print(text, flush=True))
    except ConfigChanged as error:
        raise UsageError(f"--out: {error}. Pass --overwrite to redo what the new settings "
                         "change (or use another --out)") from None
    except BudgetNotMet as error:
        print(f"dnnopt optimize: {error}", file=sys.stderr, flush=True)
        return 3
    except Interrupted as error:
        print(str(error), file=sys.stderr, flush=True)
        return 130
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr,
              flush=True)
        return 130
    return 0


def _make_out(out):
    """Creates the output folder, or raises `UsageError` naming `--out`."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out: {out!r} is a file, not a folder; give a folder (it is "
                         "created when missing)")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out: cannot create the folder {out!r} "
                         f"({error.strerror or error})") from None
