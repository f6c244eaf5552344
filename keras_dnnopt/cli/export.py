"""`dnnopt export`: a saved model to a .tflite file, float or quantized, optionally scored
under LiteRT on `--data`."""

import json
import os
import sys

from keras_dnnopt.cli._common import (
    DATASET_SHAPES,
    DATASETS,
    INT8_MODES,
    NPZ_INPUT_KEYS,
    NPZ_LABEL_KEYS,
    QUANTIZATION_MODES,
    add_subcommand,
    check_dataset_shape,
    data_source,
    dataset_for,
    existing_file,
    fits,
    load_model_file,
    output_file,
    positive_int,
    single_input_shape,
)
from keras_dnnopt.cli._errors import UsageError

# Layers of a TF-MOT quantization-aware model: such a model needs no calibration data.
_QAT_LAYERS = ("QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer")


def add_parser(sub):
    """Registers `dnnopt export` on an argparse subparsers object."""
    exp = add_subcommand(
        sub, "export", run,
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
    exp.add_argument("model", metavar="MODEL", type=existing_file,
                     help="the saved model file (.keras or .h5)")
    exp.add_argument("output", metavar="OUT.tflite", type=output_file,
                     help="the .tflite file to write (its folder must exist)")
    exp.add_argument("--quantization", default="none", choices=QUANTIZATION_MODES,
                     help="quantization mode")
    exp.add_argument("--data", metavar="DATA", type=data_source, default=None,
                     help="representative data (for int8 / int8_full) and evaluation data: "
                          f"{', '.join(DATASETS)}, a folder of class subfolders, or a "
                          ".npy/.npz file")
    exp.add_argument("--calibration-steps", metavar="N", type=positive_int, default=100,
                     help="samples of --data used to calibrate int8 / int8_full")
    exp.add_argument("--normalize", action="store_true",
                     help="feed --data (a dataset name or folder) through the dataset's "
                          "per-channel normaliser, adapted on its training split")
    exp.add_argument("--evaluate", action="store_true",
                     help="print the LiteRT accuracy and loss of the file (and the Keras "
                          "model's accuracy) on the labelled --data")
    exp.add_argument("--strip-names", action="store_true",
                     help="leave the tensor names out of the file: same ops and outputs, "
                          "fewer bytes (the signature is kept)")
    exp.add_argument("--json", action="store_true", help="print the result as JSON")
    return exp


# ------------------------------------------------------------------------ --data
def _is_array_file(source):
    return source.lower().endswith((".npy", ".npz")) and not os.path.isdir(source)


def _npz_arrays(path):
    import numpy as np

    with np.load(path) as archive:
        keys = list(archive.keys())
        x_key = next((k for k in NPZ_INPUT_KEYS if k in keys), None)
        if x_key is None and len(keys) == 1:
            x_key = keys[0]
        if x_key is None:
            raise UsageError(
                f"argument --data: the .npz file must hold its inputs as one of "
                f"{', '.join(NPZ_INPUT_KEYS)} (and labels as y or labels), or hold a "
                f"single array. Received: {path!r} with arrays {keys}"
            )
        y_key = next((k for k in NPZ_LABEL_KEYS if k in keys), None)
        return archive[x_key], (archive[y_key] if y_key else None)


def _normalized(dataset, x):
    import numpy as np

    if dataset.normalizer is None or x is None:
        return x
    return np.asarray(dataset.normalizer(x), dtype="float32")


def _export_data(args, model):
    """`(calibration inputs, (x, y) to evaluate on or None, description)` from --data."""
    import numpy as np

    source = args.data
    expected = single_input_shape(model)
    if _is_array_file(source):
        try:
            if source.lower().endswith(".npy"):
                x, y = np.load(source), None
            else:
                x, y = _npz_arrays(source)
        except UsageError:
            raise
        except Exception as error:  # numpy raises several kinds for a broken file
            raise UsageError(f"argument --data: could not read {source!r} with numpy: "
                             f"{error}") from error
        if args.evaluate and y is None:
            raise UsageError(
                f"argument --evaluate: needs labels, and --data {source!r} holds inputs only; "
                "give a dataset name, a folder, or a .npz file with arrays x and y"
            )
        x = np.asarray(x)
        if y is not None and len(y) != len(x):
            raise UsageError(f"argument --data: the .npz file {source!r} holds {len(x)} "
                             f"inputs but {len(y)} labels; they must be as many")
        if expected is not None and not fits(expected, tuple(x.shape[1:])):
            raise UsageError(
                f"argument --data: {source!r} holds samples of shape {tuple(x.shape[1:])}, "
                f"but the model expects inputs of shape {expected} (None: any size)"
            )
        rng = np.random.default_rng(0)
        calibration = x[rng.permutation(len(x))[:args.calibration_steps]]
        return calibration, (None if y is None else (x, y)), f"{len(x)} samples of {source}"

    check_dataset_shape(source, DATASET_SHAPES.get(source), expected, "--data")
    dataset = dataset_for(source, expected, args.normalize)
    check_dataset_shape(source, dataset.input_shape, expected, "--data")
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


def _check_flags(args):
    """Flags that contradict each other, refused before any model is loaded."""
    if args.evaluate and args.data is None:
        raise UsageError("argument --evaluate: needs labelled --data (a dataset name, a "
                         "folder, or a .npz file with x and y)")
    if args.normalize and args.data is None:
        raise UsageError("argument --normalize: applies to --data, which is not given")
    if args.data is not None and _is_array_file(args.data):
        if args.normalize:
            raise UsageError(
                "argument --normalize: applies to a dataset name or folder given to --data, "
                "not to a .npy/.npz file, whose samples are fed as they are. Received: "
                f"--data {args.data!r}"
            )
        if args.evaluate and args.data.lower().endswith(".npy"):
            raise UsageError(
                f"argument --evaluate: needs labels, and --data {args.data!r} holds inputs "
                "only; give a dataset name, a folder, or a .npz file with arrays x and y"
            )


def run(args):
    _check_flags(args)
    int8 = args.quantization in INT8_MODES
    from keras_dnnopt.export import evaluate_tflite, export_tflite

    model = load_model_file(args.model)
    if int8 and args.data is None and not _is_quantization_aware(model):
        raise UsageError(
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
                           calibration_steps=args.calibration_steps,
                           strip_names=args.strip_names)
    evaluation = None
    if args.evaluate:
        if labelled is None:
            raise UsageError(f"argument --evaluate: --data {args.data!r} has no test split "
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
    if result.names_stripped:
        print("  tensor names left out (--strip-names)")
    if evaluation is not None:
        keras_text = ("" if evaluation["keras_accuracy"] is None
                      else f" (Keras model: {evaluation['keras_accuracy']:.4f})")
        print(f"  LiteRT accuracy on {description}: {evaluation['accuracy']:.4f}{keras_text}, "
              f"loss {evaluation['loss']:.4f}, {evaluation['num_samples']} samples")
    return 0
