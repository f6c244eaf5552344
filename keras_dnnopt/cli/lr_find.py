"""`dnnopt lr-find`: the learning-rate range test on a dataset, its suggested learning rate
and its plot."""

import json
import os

from keras_dnnopt.cli._common import (
    BUILDERS,
    DATASET_SHAPES,
    DATASETS,
    OPTIMIZERS,
    SUGGESTION_METHODS,
    add_subcommand,
    build_model,
    check_dataset_shape,
    dataset_for,
    dataset_source,
    load_model_file,
    model_or_builder,
    non_negative_int,
    positive_float,
    positive_int,
    single_input_shape,
    unit_interval,
    writable_folder_problem,
)
from keras_dnnopt.cli._errors import UsageError


def add_parser(sub):
    """Registers `dnnopt lr-find` on an argparse subparsers object."""
    lr = add_subcommand(
        sub, "lr-find", run,
        help="Run the learning-rate range test on a dataset.",
        description=(
            "The learning-rate range test (keras_dnnopt.callbacks.LRFinder): train on the "
            "dataset's training split while the learning rate grows exponentially from "
            "--min-lr to --max-lr over --steps steps (stopping early when the loss "
            "diverges), print the suggested learning rate and optionally plot the curve. "
            "The model's weights are not saved. The inputs are normalised per channel "
            "unless --no-normalize is given. SGD uses momentum 0.9. The loss is sparse "
            "categorical cross-entropy, on probabilities when the model ends with a "
            "softmax and on logits otherwise."
        ),
        epilog="Examples:\n  dnnopt lr-find --dataset digits --model mobilenet_v1 "
               "--alpha 0.5 --plot lr_find.png\n"
               "  dnnopt lr-find --dataset mnist --model model.keras --optimizer adam "
               "--min-lr 1e-6 --max-lr 1 --json",
    )
    lr.add_argument("--dataset", metavar="DATASET", type=dataset_source, default="digits",
                    help=f"a dataset name ({', '.join(DATASETS)}) or a folder of class "
                         "subfolders (read at the input size of a --model file, at 256x256 "
                         "RGB for a builder)")
    lr.add_argument("--model", metavar="MODEL", type=model_or_builder, default="mobilenet_v1",
                    help=f"a builder ({', '.join(BUILDERS)}) or a saved model file whose "
                         "input and output fit the dataset")
    lr.add_argument("--alpha", metavar="ALPHA", type=positive_float, default=1.0,
                    help="width multiplier for a builder")
    lr.add_argument("--batch-size", metavar="N", type=positive_int, default=32,
                    help="samples per step")
    lr.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS, help="the optimizer")
    lr.add_argument("--min-lr", metavar="LR", type=positive_float, default=1e-7,
                    help="the first learning rate")
    lr.add_argument("--max-lr", metavar="LR", type=positive_float, default=10.0,
                    help="the last learning rate (> --min-lr)")
    lr.add_argument("--steps", metavar="N", type=positive_int, default=100,
                    help="training steps of the sweep (>= 3)")
    lr.add_argument("--smoothing", metavar="S", type=unit_interval, default=0.98,
                    help="factor of the exponential moving average of the loss")
    lr.add_argument("--suggestion", default="steepest", choices=SUGGESTION_METHODS,
                    help="steepest: where the smoothed loss falls fastest; min_loss: the "
                         "learning rate of the lowest smoothed loss / 10")
    lr.add_argument("--no-normalize", action="store_true",
                    help="feed raw pixels (for a model that normalises inside)")
    lr.add_argument("--seed", metavar="N", type=non_negative_int, default=0,
                    help="seed of the data split, shuffling and weights")
    lr.add_argument("--plot", default=None, metavar="PNG",
                    help="save the loss curve to this image file (needs matplotlib: "
                         "pip install keras_dnnopt[viz])")
    lr.add_argument("--json", action="store_true",
                    help="print the suggestion and the recorded curve as JSON")
    return lr


def _ends_with_softmax(model):
    layer = model.layers[-1] if model.layers else None
    if layer is None:
        return False
    if type(layer).__name__ == "Softmax":
        return True
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation)) == "softmax"


def _check_flags(args):
    """Contradicting numbers and a --plot that cannot be written, before any training."""
    if args.max_lr <= args.min_lr:
        raise UsageError(f"argument --max-lr: must be > --min-lr. Received: --min-lr "
                         f"{args.min_lr:g} --max-lr {args.max_lr:g}")
    if args.steps < 3:
        raise UsageError("argument --steps: must be >= 3 (the suggestion needs 3 points). "
                         f"Received: {args.steps}")
    if args.plot is not None:
        # Before any training: a missing matplotlib or a bad file name fails at once.
        from keras_dnnopt.utils.figures import check_save_path, require_matplotlib

        require_matplotlib("dnnopt lr-find --plot")
        try:
            check_save_path(args.plot, "--plot")
        except ValueError as error:
            raise UsageError(f"argument --plot: {error}") from None
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            raise UsageError(f"argument --plot: must be in an existing folder; {folder!r} "
                             f"does not exist. Received: {args.plot!r}")
        problem = writable_folder_problem(folder)
        if problem is not None:
            raise UsageError(f"argument --plot: cannot write into the folder {folder!r} "
                             f"({problem}). Received: {args.plot!r}")


def run(args):
    _check_flags(args)
    from keras_dnnopt.backend import keras
    from keras_dnnopt.callbacks import LRFinder

    finder = LRFinder(min_learning_rate=args.min_lr, max_learning_rate=args.max_lr,
                      num_steps=args.steps, smoothing=args.smoothing)
    keras.utils.set_random_seed(args.seed)
    model = None if args.model in BUILDERS else load_model_file(args.model, "--model")
    if model is not None:
        check_dataset_shape(args.dataset, DATASET_SHAPES.get(args.dataset),
                            single_input_shape(model), "--dataset")
    data = dataset_for(args.dataset, single_input_shape(model) if model else None,
                       not args.no_normalize, batch_size=args.batch_size, seed=args.seed)
    if model is None:
        model = build_model(args.model, data.input_shape, data.num_classes, args.alpha)
    else:
        expected = single_input_shape(model)
        if expected is None:
            raise UsageError(f"argument --model: {args.model!r} must have one input to "
                             f"train on --dataset {args.dataset!r}")
        check_dataset_shape(args.dataset, data.input_shape, expected, "--dataset")
        classes = model.outputs[0].shape[-1] if len(model.outputs) == 1 else None
        if classes != data.num_classes:
            raise UsageError(f"argument --model: {args.model!r} has {classes} outputs, but "
                             f"--dataset {args.dataset!r} has {data.num_classes} classes")
    optimizer = (keras.optimizers.SGD(learning_rate=args.min_lr, momentum=0.9)
                 if args.optimizer == "sgd" else keras.optimizers.Adam(learning_rate=args.min_lr))
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=not _ends_with_softmax(model)))
    # The training pipeline shuffles every epoch itself.
    finder.find(model, data.train, shuffle=False)
    suggestion = finder.suggestion(args.suggestion)
    if args.plot is not None:
        from keras_dnnopt.visualization import plot_lr_finder

        plot_lr_finder(finder, save_path=args.plot)
    if args.json:
        print(json.dumps({
            "suggested_learning_rate": suggestion, "method": args.suggestion,
            "steps": len(finder.losses), "plot": args.plot,
            "learning_rates": finder.learning_rates[:len(finder.losses)],
            "losses": finder.losses, "smoothed_losses": finder.smoothed_losses,
        }, indent=2))
        return 0
    stopped = ("" if len(finder.losses) >= args.steps
               else f", stopped early as the loss diverged after {len(finder.losses)} steps")
    print(f"LR range test of {args.model} on {args.dataset}: {args.min_lr:g} to "
          f"{args.max_lr:g} over {args.steps} steps ({args.optimizer}, batch "
          f"{args.batch_size}{stopped})")
    print(f"Suggested learning rate ({args.suggestion}): {suggestion:.3g}")
    if args.plot is not None:
        print(f"Plot: {args.plot}")
    return 0
