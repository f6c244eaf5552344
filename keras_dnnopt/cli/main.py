"""`dnnopt`: the keras_dnnopt command line.

Subcommands (`dnnopt COMMAND --help` documents every option, its default and an example):

    dnnopt optimize ...                    the whole optimization chain on a dataset
                                           (`keras_dnnopt.cli.optimize`)
    dnnopt info                            which TensorFlow and Keras are in use, and how
                                           to switch
    dnnopt profile MODEL [options]         the profiler's table for a saved model file
                                           (.keras / .h5) or a builder name
                                           (mobilenet_v1, mobilenet_v2, plain_cnn)
    dnnopt export MODEL OUT.tflite [opts]  a saved model to a .tflite file, float or
                                           quantized (`--quantization int8 --data digits`),
                                           optionally scored under LiteRT (`--evaluate`)
    dnnopt benchmark FILE.tflite [opts]    LiteRT latency and file size (raw, gzipped)
    dnnopt lr-find [options]               the learning-rate range test on a dataset, its
                                           suggested learning rate and its plot

Data for `export --data`: a dataset name (`digits`, `mnist`, `fashion_mnist`, `cifar10`)
or a folder of class subfolders, loaded by `keras_dnnopt.data.load_dataset`, or a `.npy`
file of inputs, or a `.npz` file with an input array `x` (or `inputs`, `images`) and
optionally labels `y` (or `labels`). The samples are fed to the model as loaded (raw
pixels: 0..16 for digits, 0..255 for the others), which suits a model whose normalisation
is one of its layers; `--normalize` applies the dataset's per-channel normaliser (adapted
on its training split) for a model trained on normalised inputs.

Exit status: 0 on success, 2 for a usage error (argparse's message, naming the argument
and the value), 1 for a failure while running, printed as one line
`dnnopt: error: ...` without a traceback (set `DNNOPT_TRACEBACK=1` to see it).
"""

import argparse
import json
import os
import sys
import textwrap

# Kept here rather than imported so that `dnnopt --help` does not import TensorFlow; a
# test checks that they equal the package's own lists.
BUILDERS = ("mobilenet_v1", "mobilenet_v2", "plain_cnn")
DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
# Sample shapes of the named datasets, to refuse a mismatch before any download.
_DATASET_SHAPES = {"digits": (8, 8, 1), "mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1),
                   "cifar10": (32, 32, 3)}
QUANTIZATION_MODES = ("none", "dynamic", "float16", "int8", "int8_full")
_INT8_MODES = ("int8", "int8_full")
OPTIMIZERS = ("sgd", "adam")
SUGGESTION_METHODS = ("steepest", "min_loss")
# Layers of a TF-MOT quantization-aware model: such a model needs no calibration data.
_QAT_LAYERS = ("QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer")
_NPZ_INPUT_KEYS = ("x", "inputs", "images")
_NPZ_LABEL_KEYS = ("y", "labels")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                     argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help (but not an unset None or a flag's False),
    and epilog examples kept as written."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


# ------------------------------------------------------------------ argument types
# argparse turns an `ArgumentTypeError` into a usage error (exit status 2) that names the
# argument: "dnnopt export: error: argument --runs: must be ... Received: '0'".
def _parse_shape(text):
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(
            f"--input-shape must be comma-separated positive integers such as 224,224,3. "
            f"Received: {text!r}"
        )
    return shape


def _positive_int(text, allow_zero=False):
    try:
        value = int(text)
    except ValueError:
        value = None
    low = 0 if allow_zero else 1
    if value is None or value < low:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}. Received: {text!r}")
    return value


def _non_negative_int(text):
    return _positive_int(text, allow_zero=True)


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"must be a finite number > 0, e.g. 1e-3. Received: {text!r}")
    return value


def _unit_interval(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1). Received: {text!r}")
    return value


def _existing_file(text):
    if not os.path.isfile(text):
        why = "is a folder" if os.path.isdir(text) else "does not exist"
        raise argparse.ArgumentTypeError(f"must be an existing file. Received: {text!r}, which "
                                         f"{why}")
    return text


def _model_or_builder(text):
    if text in BUILDERS:
        return text
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(
            f"must be a model file (.keras or .h5) or one of {', '.join(BUILDERS)}. "
            f"Received: {text!r} (no such file)"
        )
    return text


def _output_file(text):
    """A file to write: not a folder, in a folder that exists."""
    if not text or text.endswith(os.sep) or os.path.isdir(text):
        raise argparse.ArgumentTypeError(
            f"must name a file such as out/model.tflite, not a folder. Received: {text!r}")
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(
            f"must be in an existing folder; {folder!r} does not exist (create it first). "
            f"Received: {text!r}"
        )
    return text


def _data_source(text):
    if text in DATASETS or os.path.isdir(text):
        return text
    if text.lower().endswith((".npy", ".npz")):
        return _existing_file(text)
    raise argparse.ArgumentTypeError(
        f"must be a dataset name ({', '.join(DATASETS)}), a folder with one subfolder of "
        f"images per class, or a .npy/.npz file of inputs. Received: {text!r}"
    )


def _dataset_source(text):
    if text in DATASETS or os.path.isdir(text):
        return text
    raise argparse.ArgumentTypeError(
        f"must be a dataset name ({', '.join(DATASETS)}) or a folder with one subfolder of "
        f"images per class. Received: {text!r}"
    )


# ------------------------------------------------------------------------- parser
def _add_subcommand(sub, name, func, help, description, epilog):
    # The raw formatter keeps the epilog's example lines; the description's paragraphs
    # (separated by blank lines) are wrapped here.
    description = "\n\n".join(textwrap.fill(" ".join(p.split()), width=78)
                               for p in description.split("\n\n"))
    parser = sub.add_parser(name, help=help, description=description, epilog=epilog,
                            formatter_class=_HelpFormatter)
    parser.set_defaults(func=func, command_parser=parser)
    return parser


def _build_parser():
    from keras_dnnopt.cli.optimize import add_parser as add_optimize_parser

    parser = argparse.ArgumentParser(
        prog="dnnopt",
        description="keras_dnnopt: make Keras models smaller, faster and better trained.",
        epilog="Run `dnnopt COMMAND --help` for the options of a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_optimize_parser(sub)  # first in the listing: the command most people want

    _add_subcommand(sub, "info", _cmd_info, help="Show TensorFlow and the Keras in use.",
                    description="Show the TensorFlow and Keras versions in use, and how to "
                                "switch between Keras 3 and tf_keras.",
                    epilog="Example:\n  TF_USE_LEGACY_KERAS=1 dnnopt info")

    prof = _add_subcommand(
        sub, "profile", _cmd_profile,
        help="Print parameters, MACs and weight bytes per layer of a model.",
        description="Profile a saved model file (.keras or .h5) or one of the package's "
                    "builders. MACs are multiply-adds per sample.",
        epilog="Examples:\n  dnnopt profile model.keras\n"
               "  dnnopt profile mobilenet_v2 --input-shape 96,96,3 --alpha 0.35 --json",
    )
    prof.add_argument("model", metavar="MODEL", type=_model_or_builder,
                      help=f"a model file, or a builder name: {', '.join(BUILDERS)}")
    prof.add_argument("--input-shape", metavar="SHAPE", type=_parse_shape, default="224,224,3",
                      help="input shape for a builder, comma-separated")
    prof.add_argument("--num-classes", metavar="N", type=_positive_int, default=1000,
                      help="classes for a builder")
    prof.add_argument("--alpha", metavar="ALPHA", type=_positive_float, default=1.0,
                      help="width multiplier for a builder")
    prof.add_argument("--json", action="store_true", help="print the profile as JSON")

    _add_export_parser(sub)
    _add_benchmark_parser(sub)
    _add_lr_find_parser(sub)
    return parser


def _add_export_parser(sub):
    exp = _add_subcommand(
        sub, "export", _cmd_export,
        help="Convert a saved model to a .tflite file, float or quantized.",
        description=(
            "Convert a saved model file (.keras or .h5) to a .tflite file with "
            "keras_dnnopt.export.export_tflite, print its size (raw and gzipped) and, with "
            "--evaluate, its accuracy under LiteRT.\n\n"
            "Quantization modes: none (float32), dynamic (int8 weights), float16 (float16 "
            "weights), int8 (int8 weights and activations, float input/output), int8_full "
            "(integer only, int8 input/output). The int8 modes calibrate activation ranges "
            "on --data (not needed for a quantization-aware model).\n\n"
            "--data: a dataset name or a folder of class subfolders (calibration on its "
            "training split, --evaluate on its test split), or a .npy file of inputs, or a "
            ".npz file with inputs `x` (or `inputs`, `images`) and optional labels `y` (or "
            "`labels`). Samples are fed as loaded (raw pixels: 0..16 for digits, 0..255 "
            "for the others), as suits a model that normalises inside; add --normalize for "
            "a model trained on the dataset's normalised inputs."
        ),
        epilog="Examples:\n"
               "  dnnopt export model.keras model.tflite\n"
               "  dnnopt export model.keras model_int8.tflite --quantization int8 "
               "--data digits --evaluate\n"
               "  dnnopt export model.keras model.tflite --quantization int8_full "
               "--data samples.npy --calibration-steps 200",
    )
    exp.add_argument("model", metavar="MODEL", type=_existing_file,
                     help="the saved model file (.keras or .h5)")
    exp.add_argument("output", metavar="OUT.tflite", type=_output_file,
                     help="the .tflite file to write (its folder must exist)")
    exp.add_argument("--quantization", default="none", choices=QUANTIZATION_MODES,
                     help="quantization mode")
    exp.add_argument("--data", metavar="DATA", type=_data_source, default=None,
                     help="representative data (for int8 / int8_full) and evaluation data: "
                          f"{', '.join(DATASETS)}, a folder of class subfolders, or a "
                          ".npy/.npz file")
    exp.add_argument("--calibration-steps", metavar="N", type=_positive_int, default=100,
                     help="samples of --data used to calibrate int8 / int8_full")
    exp.add_argument("--normalize", action="store_true",
                     help="feed --data (a dataset name or folder) through the dataset's "
                          "per-channel normaliser, adapted on its training split")
    exp.add_argument("--evaluate", action="store_true",
                     help="print the LiteRT accuracy and loss of the file (and the Keras "
                          "model's accuracy) on the labelled --data")
    exp.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_benchmark_parser(sub):
    bench = _add_subcommand(
        sub, "benchmark", _cmd_benchmark,
        help="Measure the LiteRT latency and the size of a .tflite file.",
        description="Time inferences of a .tflite file under the LiteRT interpreter "
                    "(keras_dnnopt.export.benchmark_tflite, random inputs) and report its "
                    "size on disk, raw and gzipped (keras_dnnopt.export.file_sizes).",
        epilog="Examples:\n  dnnopt benchmark model_int8.tflite\n"
               "  dnnopt benchmark model.tflite --threads 4 --runs 200 --json",
    )
    bench.add_argument("file", metavar="FILE.tflite", type=_existing_file,
                       help="the .tflite file")
    bench.add_argument("--threads", metavar="N", type=_positive_int, default=1,
                       help="interpreter threads")
    bench.add_argument("--runs", metavar="N", type=_positive_int, default=50,
                       help="timed inferences")
    bench.add_argument("--warmup", metavar="N", type=_non_negative_int, default=5,
                       help="untimed inferences before the timed ones")
    bench.add_argument("--batch-size", metavar="N", type=_positive_int, default=1,
                       help="samples per inference (a file with a fixed batch dimension "
                            "takes only its own)")
    bench.add_argument("--json", action="store_true",
                       help="print the latency statistics and sizes as JSON")


def _add_lr_find_parser(sub):
    lr = _add_subcommand(
        sub, "lr-find", _cmd_lr_find,
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
    lr.add_argument("--dataset", metavar="DATASET", type=_dataset_source, default="digits",
                    help=f"a dataset name ({', '.join(DATASETS)}) or a folder of class "
                         "subfolders (read at the input size of a --model file, at 256x256 "
                         "RGB for a builder)")
    lr.add_argument("--model", metavar="MODEL", type=_model_or_builder, default="mobilenet_v1",
                    help=f"a builder ({', '.join(BUILDERS)}) or a saved model file whose "
                         "input and output fit the dataset")
    lr.add_argument("--alpha", metavar="ALPHA", type=_positive_float, default=1.0,
                    help="width multiplier for a builder")
    lr.add_argument("--batch-size", metavar="N", type=_positive_int, default=32,
                    help="samples per step")
    lr.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS, help="the optimizer")
    lr.add_argument("--min-lr", metavar="LR", type=_positive_float, default=1e-7,
                    help="the first learning rate")
    lr.add_argument("--max-lr", metavar="LR", type=_positive_float, default=10.0,
                    help="the last learning rate (> --min-lr)")
    lr.add_argument("--steps", metavar="N", type=_positive_int, default=100,
                    help="training steps of the sweep (>= 3)")
    lr.add_argument("--smoothing", metavar="S", type=_unit_interval, default=0.98,
                    help="factor of the exponential moving average of the loss")
    lr.add_argument("--suggestion", default="steepest", choices=SUGGESTION_METHODS,
                    help="steepest: where the smoothed loss falls fastest; min_loss: the "
                         "learning rate of the lowest smoothed loss / 10")
    lr.add_argument("--no-normalize", action="store_true",
                    help="feed raw pixels (for a model that normalises inside)")
    lr.add_argument("--seed", metavar="N", type=_non_negative_int, default=0,
                    help="seed of the data split, shuffling and weights")
    lr.add_argument("--plot", default=None, metavar="PNG",
                    help="save the loss curve to this image file (needs matplotlib: "
                         "pip install keras_dnnopt[viz])")
    lr.add_argument("--json", action="store_true",
                    help="print the suggestion and the recorded curve as JSON")


# ----------------------------------------------------------------------- helpers
class _UsageError(Exception):
    """An invalid combination of arguments found after parsing: exit status 2."""


def _version():
    from keras_dnnopt import __version__

    return __version__


def _load_model_file(path):
    """Loads a saved model with the package's custom objects (registered when
    `keras_dnnopt` is imported); on tf_keras, a model holding TF-MOT wrappers (pruning,
    clustering, quantization-aware training) is loaded inside TF-MOT's scopes."""
    import keras_dnnopt  # noqa: F401  (registers the package's serializable classes)
    from keras_dnnopt.backend import USING_TF_KERAS, keras

    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, TypeError, OSError) as error:
        failure = error
    if USING_TF_KERAS:
        try:
            import tensorflow_model_optimization as tfmot

            with tfmot.quantization.keras.quantize_scope(), \
                    tfmot.sparsity.keras.prune_scope(), tfmot.clustering.keras.cluster_scope():
                return keras.models.load_model(path, compile=False)
        except (ValueError, TypeError, OSError) as error:
            # The scopes know more classes: their error tells what is really wrong (e.g.
            # TF-MOT's QAT models reload from .h5 but not from .keras files).
            failure = error
    raise ValueError(
        f"Could not load the model file {path!r}: {failure}. Is it a .keras or .h5 file "
        "saved by the Keras in use (`dnnopt info`; switch with TF_USE_LEGACY_KERAS=1)?"
    ) from failure


def _build_model(name, input_shape, num_classes, alpha):
    from keras_dnnopt import models

    return getattr(models, name)(input_shape=tuple(input_shape), num_classes=num_classes,
                                 alpha=alpha)


def _single_input_shape(model):
    """The per-sample input shape of a one-input model (None for unknown sizes)."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        return None
    return tuple(None if d is None else int(d) for d in tuple(inputs[0].shape)[1:])


def _fits(expected, shape):
    return expected is None or (len(expected) == len(shape) and all(
        e is None or e == s for e, s in zip(expected, shape, strict=True)))


def _dataset_for(name, input_shape, normalize, batch_size=32, seed=0):
    """`load_dataset` for a dataset name or folder; a folder is resized to the model's
    input size and read in its number of channels."""
    from keras_dnnopt.data import load_dataset

    kwargs = {}
    if name not in DATASETS and input_shape is not None and len(input_shape) == 3 \
            and None not in input_shape:
        kwargs["image_size"] = input_shape[:2]
        kwargs["color_mode"] = {1: "grayscale", 3: "rgb", 4: "rgba"}.get(input_shape[2], "rgb")
    return load_dataset(name, validation_split=0.0, batch_size=batch_size,
                        normalize="per_channel" if normalize else False, seed=seed, **kwargs)


def _normalized(dataset, x):
    import numpy as np

    if dataset.normalizer is None or x is None:
        return x
    return np.asarray(dataset.normalizer(x), dtype="float32")


def _npz_arrays(path):
    import numpy as np

    with np.load(path) as archive:
        keys = list(archive.keys())
        x_key = next((k for k in _NPZ_INPUT_KEYS if k in keys), None)
        if x_key is None and len(keys) == 1:
            x_key = keys[0]
        if x_key is None:
            raise ValueError(
                f"The .npz file given to --data must hold its inputs as one of "
                f"{', '.join(_NPZ_INPUT_KEYS)} (and labels as y or labels), or hold a "
                f"single array. Received: {path!r} with arrays {keys}"
            )
        y_key = next((k for k in _NPZ_LABEL_KEYS if k in keys), None)
        return archive[x_key], (archive[y_key] if y_key else None)


def _check_dataset_shape(source, shape, expected, option):
    if shape is not None and expected is not None and not _fits(expected, shape):
        raise ValueError(
            f"{option} {source!r} gives samples of shape {shape}, but the model expects "
            f"inputs of shape {expected}: use data of the model's input shape"
        )


def _is_array_file(source):
    return source.lower().endswith((".npy", ".npz")) and not os.path.isdir(source)


def _export_data(args, model):
    """`(calibration inputs, (x, y) to evaluate on or None, description)` from --data."""
    import numpy as np

    source = args.data
    expected = _single_input_shape(model)
    if _is_array_file(source):
        try:
            if source.lower().endswith(".npy"):
                x, y = np.load(source), None
            else:
                x, y = _npz_arrays(source)
        except ValueError:
            raise
        except Exception as error:  # numpy raises several kinds for a broken file
            raise ValueError(f"Could not read --data {source!r} with numpy: {error}") from error
        if args.evaluate and y is None:
            raise _UsageError(
                f"argument --evaluate: needs labels, and --data {source!r} holds inputs only; "
                "give a dataset name, a folder, or a .npz file with arrays x and y"
            )
        x = np.asarray(x)
        if y is not None and len(y) != len(x):
            raise ValueError(f"The .npz file {source!r} holds {len(x)} inputs but {len(y)} "
                             "labels; they must be as many")
        if expected is not None and not _fits(expected, tuple(x.shape[1:])):
            raise ValueError(
                f"--data {source!r} holds samples of shape {tuple(x.shape[1:])}, but the model "
                f"expects inputs of shape {expected} (None: any size)"
            )
        rng = np.random.default_rng(0)
        calibration = x[rng.permutation(len(x))[:args.calibration_steps]]
        return calibration, (None if y is None else (x, y)), f"{len(x)} samples of {source}"

    _check_dataset_shape(source, _DATASET_SHAPES.get(source), expected, "--data")
    dataset = _dataset_for(source, expected, args.normalize)
    _check_dataset_shape(source, dataset.input_shape, expected, "--data")
    rng = np.random.default_rng(0)
    picks = rng.permutation(len(dataset.x_train))[:args.calibration_steps]
    calibration = _normalized(dataset, dataset.x_train[picks])
    labelled = None
    if dataset.x_test is not None:
        labelled = (_normalized(dataset, dataset.x_test), dataset.y_test)
    return calibration, labelled, f"the test split of {source}"


def _is_quantization_aware(model):
    return any(type(layer).__name__ in _QAT_LAYERS for layer in model.layers)


def _keras_accuracy(model, x, y):
    """Top-1 accuracy of the Keras model (None for an output that is not class scores)."""
    import numpy as np

    predictions = np.asarray(model.predict(x, verbose=0, batch_size=256))
    if predictions.ndim != 2 or predictions.shape[-1] < 2:
        return None
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[-1] == predictions.shape[-1]:
        labels = labels.argmax(axis=-1)
    return float(np.mean(predictions.argmax(axis=-1) == labels.reshape(-1)))


# ---------------------------------------------------------------------- commands
def _cmd_info(args):
    from keras_dnnopt.backend import KERAS_NAME, tf

    print(f"keras_dnnopt {_version()}")
    print(f"TensorFlow {tf.__version__}")
    print(f"Keras in use: {KERAS_NAME}")
    print("Switch with TF_USE_LEGACY_KERAS=1 (tf_keras) or leave it unset (Keras 3).")
    return 0


def _cmd_profile(args):
    from keras_dnnopt import profile

    if args.model in BUILDERS:
        model = _build_model(args.model, args.input_shape, args.num_classes, args.alpha)
    else:
        model = _load_model_file(args.model)
    result = profile(model)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result)
    return 0


def _cmd_export(args):
    int8 = args.quantization in _INT8_MODES
    if args.evaluate and args.data is None:
        raise _UsageError("argument --evaluate: needs labelled --data (a dataset name, a "
                          "folder, or a .npz file with x and y)")
    if args.normalize and args.data is None:
        raise _UsageError("argument --normalize: applies to --data, which is not given")
    if args.data is not None and _is_array_file(args.data):
        if args.normalize:
            raise _UsageError(
                "argument --normalize: applies to a dataset name or folder given to --data, "
                "not to a .npy/.npz file, whose samples are fed as they are. Received: "
                f"--data {args.data!r}"
            )
        if args.evaluate and args.data.lower().endswith(".npy"):
            raise _UsageError(
                f"argument --evaluate: needs labels, and --data {args.data!r} holds inputs "
                "only; give a dataset name, a folder, or a .npz file with arrays x and y"
            )
    from keras_dnnopt.export import evaluate_tflite, export_tflite

    model = _load_model_file(args.model)
    if int8 and args.data is None and not _is_quantization_aware(model):
        raise _UsageError(
            f"argument --data: is required for --quantization {args.quantization}, which "
            "calibrates the activation ranges on it: e.g. --data digits, --data DIR or "
            "--data samples.npy (or use --quantization dynamic, which needs none)"
        )
    calibration = labelled = description = None
    if args.data is not None and not int8 and not args.evaluate:
        print(f"note: --data is used by --quantization int8/int8_full and --evaluate; it is "
              f"ignored for --quantization {args.quantization}", file=sys.stderr)
    elif args.data is not None:
        calibration, labelled, description = _export_data(args, model)
    result = export_tflite(model, args.output, quantization=args.quantization,
                           representative_data=calibration if int8 else None,
                           calibration_steps=args.calibration_steps)
    evaluation = None
    if args.evaluate:
        if labelled is None:
            raise _UsageError(f"argument --evaluate: --data {args.data!r} has no test split "
                              "to evaluate on")
        evaluation = evaluate_tflite(result.path, labelled, batch_size=256)
        evaluation["keras_accuracy"] = _keras_accuracy(model, *labelled)
        evaluation["data"] = description
    if args.json:
        data = result.to_dict()
        if evaluation is not None:
            data["evaluation"] = evaluation
        print(json.dumps(data, indent=2))
        return 0
    ratio = result.size_bytes / result.gzipped_size_bytes if result.gzipped_size_bytes else 0
    print(f"Wrote {result.path} ({result.quantization})")
    print(f"  size:    {result.size_bytes:,} bytes")
    print(f"  gzipped: {result.gzipped_size_bytes:,} bytes ({ratio:.2f}x smaller)")
    if result.stripped:
        print(f"  removed training wrappers: {', '.join(result.stripped)}")
    if evaluation is not None:
        keras_text = ("" if evaluation["keras_accuracy"] is None
                      else f" (Keras model: {evaluation['keras_accuracy']:.4f})")
        print(f"  LiteRT accuracy on {description}: {evaluation['accuracy']:.4f}{keras_text}, "
              f"loss {evaluation['loss']:.4f}, {evaluation['num_samples']} samples")
    return 0


def _cmd_benchmark(args):
    from keras_dnnopt.export import benchmark_tflite, file_sizes

    sizes = file_sizes(args.file)
    latency = benchmark_tflite(args.file, threads=args.threads, runs=args.runs,
                               warmup=args.warmup, batch_size=args.batch_size)
    if args.json:
        data = {"path": args.file, **latency.to_dict(), **sizes.to_dict(),
                "compression_ratio": sizes.compression_ratio}
        print(json.dumps(data, indent=2))
        return 0
    def ms(value):  # 4 significant digits: tiny models run in microseconds
        return f"{value:.4g}"

    rows = [
        ("median latency", f"{ms(latency.median_ms)} ms"),
        ("p10 / p90", f"{ms(latency.p10_ms)} / {ms(latency.p90_ms)} ms"),
        ("mean +- std", f"{ms(latency.mean_ms)} +- {ms(latency.std_ms)} ms"),
        ("min / max", f"{ms(latency.min_ms)} / {ms(latency.max_ms)} ms"),
        ("throughput", f"{latency.throughput:,.1f} samples/s"),
        ("size", f"{sizes.size_bytes:,} bytes"),
        ("gzipped", f"{sizes.gzipped_size_bytes:,} bytes ({sizes.compression_ratio:.2f}x)"),
    ]
    print(f"{args.file}: {latency.runtime}, {latency.threads} thread(s), batch "
          f"{latency.batch_size}, {latency.runs} runs after {latency.warmup} warm-up")
    width = max(len(name) for name, _ in rows)
    value_width = max(len(value) for _, value in rows)
    print(f"| {'metric'.ljust(width)} | {'value'.rjust(value_width)} |")
    print(f"|{'-' * (width + 2)}|{'-' * (value_width + 1)}:|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value.rjust(value_width)} |")
    return 0


def _ends_with_softmax(model):
    layer = model.layers[-1] if model.layers else None
    if layer is None:
        return False
    if type(layer).__name__ == "Softmax":
        return True
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation)) == "softmax"


def _cmd_lr_find(args):
    if args.max_lr <= args.min_lr:
        raise _UsageError(f"argument --max-lr: must be > --min-lr. Received: --min-lr "
                          f"{args.min_lr:g} --max-lr {args.max_lr:g}")
    if args.steps < 3:
        raise _UsageError("argument --steps: must be >= 3 (the suggestion needs 3 points). "
                          f"Received: {args.steps}")
    if args.plot is not None:
        # Before any training: a missing matplotlib or a bad file name fails at once.
        from keras_dnnopt.utils.figures import check_save_path, require_matplotlib

        require_matplotlib("dnnopt lr-find --plot")
        try:
            check_save_path(args.plot, "--plot")
        except ValueError as error:
            raise _UsageError(f"argument --plot: {error}") from None
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            raise _UsageError(f"argument --plot: must be in an existing folder; {folder!r} "
                              f"does not exist. Received: {args.plot!r}")
    from keras_dnnopt.backend import keras
    from keras_dnnopt.callbacks import LRFinder

    finder = LRFinder(min_learning_rate=args.min_lr, max_learning_rate=args.max_lr,
                      num_steps=args.steps, smoothing=args.smoothing)
    keras.utils.set_random_seed(args.seed)
    model = None if args.model in BUILDERS else _load_model_file(args.model)
    if model is not None:
        _check_dataset_shape(args.dataset, _DATASET_SHAPES.get(args.dataset),
                             _single_input_shape(model), "--dataset")
    data = _dataset_for(args.dataset, _single_input_shape(model) if model else None,
                        not args.no_normalize, batch_size=args.batch_size, seed=args.seed)
    if model is None:
        model = _build_model(args.model, data.input_shape, data.num_classes, args.alpha)
    else:
        expected = _single_input_shape(model)
        if expected is None:
            raise ValueError(f"--model {args.model!r} must have one input to train on "
                             f"--dataset {args.dataset!r}")
        _check_dataset_shape(args.dataset, data.input_shape, expected, "--dataset")
        classes = model.outputs[0].shape[-1] if len(model.outputs) == 1 else None
        if classes != data.num_classes:
            raise ValueError(f"--model {args.model!r} has {classes} outputs, but --dataset "
                             f"{args.dataset!r} has {data.num_classes} classes")
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


def main(argv=None):
    """Entry point of the `dnnopt` console script.

    Args:
        argv: the arguments (without the program name), or None for `sys.argv[1:]`.

    Returns:
        The exit status: 0 on success, 1 when the command failed (a one-line
        `dnnopt: error: ...` on stderr). Usage errors raise `SystemExit(2)` as argparse does.
    """
    from keras_dnnopt.pipeline.runner import StageFailed

    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except _UsageError as error:
        getattr(args, "command_parser", parser).error(str(error))
    except (ValueError, OSError, ImportError, StageFailed) as error:
        if os.environ.get("DNNOPT_TRACEBACK") == "1":
            raise
        message = " ".join(str(error).split())
        print(f"dnnopt: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
