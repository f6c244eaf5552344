"""`dnnopt optimize`: the whole chain on a dataset, with a report card of every stage."""

import argparse
import os

EPILOG = """\
stages: data (load, de-duplicate, normalise, split, augment) -> baseline (the teacher,
warm-up cosine schedule) -> student (a narrower MobileNet, trained alone as a reference)
-> distill -> prune (with distillation) -> quantize (QAT on tf_keras, full-integer PTQ on
Keras 3) -> export (TFLite, evaluated with LiteRT).

Each stage is saved as it finishes (OUT/stages/<n>_<stage>/); running the command again
reuses finished stages whose configuration has not changed. The report card is
OUT/report.html, OUT/report.md and OUT/metrics.json.

examples:
  dnnopt optimize --dataset digits --out runs/demo
  dnnopt optimize --dataset fashion_mnist --out runs/fashion --config run.yaml
  dnnopt optimize --dataset path/to/images --out runs/mine     (one subfolder per class)
  dnnopt optimize --print-config > run.yaml                    (every setting, to edit)
"""


def add_parser(subparsers):
    """Registers the `optimize` subcommand on an argparse subparsers object."""
    from keras_dnnopt.data.datasets import DATASET_NAMES

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
    parser.add_argument("--out", default=os.path.join("runs", "dnnopt"),
                        help="the output folder (default: runs/dnnopt)")
    parser.add_argument("--config", default=None, metavar="RUN.yaml",
                        help="a YAML file of settings to change (see --print-config)")
    parser.add_argument("--force", action="store_true",
                        help="redo every stage instead of reusing finished ones")
    parser.add_argument("--stages", default=None,
                        help="comma-separated stages to run, e.g. data,baseline,export "
                             "(default: all, or the config file's)")
    parser.add_argument("--seed", type=int, default=None, help="the random seed (default: 0)")
    parser.add_argument("--verbose", default=None, choices=("auto", "bars", "lines", "quiet"),
                        help="training output: progress bars, one line per epoch, or none "
                             "(default: auto = bars on a terminal, lines otherwise)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration as YAML and exit")
    parser.set_defaults(func=run)
    return parser


def _overrides(args):
    overrides = {}
    if args.dataset is not None:
        overrides["dataset"] = args.dataset
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.verbose is not None:
        overrides["verbose"] = args.verbose
    if args.stages is not None:
        overrides["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    return overrides


def run(args):
    import sys

    from keras_dnnopt.pipeline.config import load_config

    config = load_config(args.config, _overrides(args))
    if args.print_config:
        import yaml

        sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
        return 0
    from keras_dnnopt.pipeline.runner import optimize

    command = "dnnopt " + " ".join(sys.argv[1:]) if sys.argv[1:] else "dnnopt optimize"
    optimize(config, args.out, force=args.force, command=command,
             log=lambda text: print(text, flush=True))
    return 0
