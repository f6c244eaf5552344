"""What the `dnnopt` commands share: the lists they accept, the help formatter, argument
types, model loading, `--data`/`--dataset` loading and the quiet TensorFlow start-up.

Nothing here imports TensorFlow at module level: building the parser (and so `dnnopt
--help`) must stay cheap. A test checks that the lists equal the package's own.
"""

import argparse
import contextlib
import os
import re
import sys
import tempfile
import textwrap

from keras_dnnopt.cli._errors import UsageError

BUILDERS = ("mobilenet_v1", "mobilenet_v2", "plain_cnn")
DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "diabetes")
# Sample shapes of the named datasets, to refuse a mismatch before any download.
DATASET_SHAPES = {"digits": (8, 8, 1), "mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1),
                  "cifar10": (32, 32, 3)}
QUANTIZATION_MODES = ("none", "dynamic", "float16", "int8", "int8_full")
INT8_MODES = ("int8", "int8_full")
OPTIMIZERS = ("sgd", "adam")
SUGGESTION_METHODS = ("steepest", "min_loss")
NPZ_INPUT_KEYS = ("x", "inputs", "images")
NPZ_LABEL_KEYS = ("y", "labels")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                    argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help (but not an unset None or a flag's False),
    and epilog examples kept as written."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def add_subcommand(sub, name, func, help, description, epilog):
    """Adds the subcommand `name` (running `func(args)`) with wrapped description paragraphs
    (separated by blank lines) and an epilog kept as written."""
    description = "\n\n".join(textwrap.fill(" ".join(p.split()), width=78)
                              for p in description.split("\n\n"))
    parser = sub.add_parser(name, help=help, description=description, epilog=epilog,
                            formatter_class=HelpFormatter)
    parser.set_defaults(func=func, command_parser=parser)
    return parser


# ------------------------------------------------------------------ argument types
# argparse turns an `ArgumentTypeError` into a usage error (exit status 2) that names the
# argument: "dnnopt export: error: argument --runs: must be ... Received: '0'".
def parse_shape(text):
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


def positive_int(text, allow_zero=False):
    try:
        value = int(text)
    except ValueError:
        value = None
    low = 0 if allow_zero else 1
    if value is None or value < low:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}. Received: {text!r}")
    return value


def non_negative_int(text):
    return positive_int(text, allow_zero=True)


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"must be a finite number > 0, e.g. 1e-3. Received: {text!r}")
    return value


def unit_interval(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1). Received: {text!r}")
    return value


def existing_file(text):
    if not os.path.isfile(text):
        why = "is a folder" if os.path.isdir(text) else "does not exist"
        raise argparse.ArgumentTypeError(f"must be an existing file. Received: {text!r}, which "
                                         f"{why}")
    return text


def model_or_builder(text):
    if text in BUILDERS:
        return text
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(
            f"must be a model file (.keras or .h5) or one of {', '.join(BUILDERS)}. "
            f"Received: {text!r} (no such file)"
        )
    return text


def writable_folder_problem(folder):
    """None when a file can be created in `folder` (tried for real: a probe file is created
    and removed), else why not, e.g. "Permission denied"."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".dnnopt-probe-"):
            pass
    except OSError as error:
        return error.strerror or str(error)
    return None


def output_file(text):
    """A file to write: not a folder, in a folder that exists and takes new files."""
    if not text or text.endswith(os.sep) or os.path.isdir(text):
        raise argparse.ArgumentTypeError(
            f"must name a file such as out/model.tflite, not a folder. Received: {text!r}")
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(
            f"must be in an existing folder; {folder!r} does not exist (create it first). "
            f"Received: {text!r}"
        )
    problem = writable_folder_problem(folder)
    if problem is not None:
        raise argparse.ArgumentTypeError(
            f"cannot write into the folder {folder!r} ({problem}). Received: {text!r}")
    return text


def data_source(text):
    if text in DATASETS or os.path.isdir(text):
        return text
    if text.lower().endswith((".npy", ".npz")):
        return existing_file(text)
    raise argparse.ArgumentTypeError(
        f"must be a dataset name ({', '.join(DATASETS)}), a folder with one subfolder of "
        f"images per class, or a .npy/.npz file of inputs. Received: {text!r}"
    )


def dataset_source(text):
    if text in DATASETS or os.path.isdir(text):
        return text
    raise argparse.ArgumentTypeError(
        f"must be a dataset name ({', '.join(DATASETS)}) or a folder with one subfolder of "
        f"images per class. Received: {text!r}"
    )


# ------------------------------------------------------------------------ models
def load_model_file(path, argument="MODEL"):
    """Loads a saved model with the package's custom objects; a file that does not load is
    a `UsageError` naming `argument`.

    A `.keras` file goes through `keras_dnnopt.export.saving.load_model` (it loads every
    model the package makes, TF-MOT wrappers included); any other file (`.h5`) through
    `keras.models.load_model` after importing the package's registering modules, retried
    on tf_keras inside TF-MOT's scopes.
    """
    try:
        from keras_dnnopt.export.saving import load_model
    except ImportError:
        load_model = None
    if load_model is not None and path.lower().endswith(".keras"):
        try:
            return load_model(path, compile=False)
        except UsageError:
            raise
        except Exception as error:  # Keras raises many kinds for a broken file
            raise _unloadable(path, argument, error) from error
    return _load_model_fallback(path, argument)


def _unloadable(path, argument, error):
    detail = " ".join(str(error).split()) or type(error).__name__
    if len(detail) > 300:
        detail = detail[:300] + "..."
    return UsageError(
        f"argument {argument}: could not load the model file {path!r}: {detail}. Is it a "
        ".keras or .h5 file saved by the Keras in use (`dnnopt info`; switch with "
        "TF_USE_LEGACY_KERAS=1)?"
    )


def _load_model_fallback(path, argument):
    import importlib

    try:
        from keras_dnnopt.export.saving import import_registering_modules
    except ImportError:
        def import_registering_modules():
            for name in ("layers", "schedules", "callbacks", "distillation", "compression",
                         "evaluation", "models"):
                importlib.import_module(f"keras_dnnopt.{name}")

    import_registering_modules()  # registers the package's serializable classes
    from keras_dnnopt.backend import USING_TF_KERAS, keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001  (Keras raises many kinds for a broken file)
        failure = error
    if USING_TF_KERAS:
        try:
            import tensorflow_model_optimization as tfmot

            with tfmot.quantization.keras.quantize_scope(), \
                    tfmot.sparsity.keras.prune_scope(), tfmot.clustering.keras.cluster_scope():
                return keras.models.load_model(path, compile=False)
        except Exception as error:  # noqa: BLE001
            # The scopes know more classes: their error tells what is really wrong (e.g.
            # TF-MOT's QAT models reload from .h5 but not from .keras files).
            failure = error
    raise _unloadable(path, argument, failure) from failure


def build_model(name, input_shape, num_classes, alpha):
    from keras_dnnopt import models

    return getattr(models, name)(input_shape=tuple(input_shape), num_classes=num_classes,
                                 alpha=alpha)


def single_input_shape(model):
    """The per-sample input shape of a one-input model (None for unknown sizes)."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        return None
    return tuple(None if d is None else int(d) for d in tuple(inputs[0].shape)[1:])


def fits(expected, shape):
    return expected is None or (len(expected) == len(shape) and all(
        e is None or e == s for e, s in zip(expected, shape, strict=True)))


def check_dataset_shape(source, shape, expected, option):
    if shape is not None and expected is not None and not fits(expected, shape):
        raise UsageError(
            f"argument {option}: {source!r} gives samples of shape {shape}, but the model "
            f"expects inputs of shape {expected}: use data of the model's input shape"
        )


def dataset_for(name, input_shape, normalize, batch_size=32, seed=0):
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


# ------------------------------------------------------- TensorFlow's start-up logs
# What TensorFlow prints on stderr while it is imported and finds its devices: glog-style
# INFO/WARNING lines (oneDNN, cudart_stub, cpu_feature_guard, ...), absl's pre-init notice,
# the cpu_feature_guard's continuation line, and the CUDA start-up errors of a machine
# without a GPU. absl logs before `absl::InitializeLog()` regardless of TF_CPP_MIN_LOG_LEVEL,
# so setting that variable alone does not hide them.
_START_UP_NOISE = re.compile(
    r"^(?:[IW]\d{4} \d+:\d+:\d+\.\d+ +\d+ \S+:\d+\] "
    r"|E\d{4} \d+:\d+:\d+\.\d+ +\d+ cuda_\w+\.cc:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] )"
)


def start_tensorflow(verbose=False):
    """Imports TensorFlow (and finds its devices) with its start-up log lines hidden.

    Unless `verbose` or the user set `TF_CPP_MIN_LOG_LEVEL` (their choice is kept), sets it
    to "2" and filters the start-up lines out of stderr while TensorFlow starts; any other
    line written meanwhile is passed on. Does nothing when TensorFlow is already imported.
    """
    if "tensorflow" in sys.modules or verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    with _stderr_filtered(_START_UP_NOISE):
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA's start-up errors come here, not at import


@contextlib.contextmanager
def _stderr_filtered(pattern):
    """File descriptor 2 goes to a temporary file inside the block (C++ logs bypass
    `sys.stderr`); afterwards its lines not matching `pattern` are written to stderr."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to filter
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(True)
                    if not pattern.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
