"""`export_tflite`: a Keras model to a `.tflite` file, float or quantized, on both Kerases."""

import contextlib
import dataclasses
import importlib
import os
import sys
import tempfile
import warnings

import numpy as np

from keras_dnnopt.backend import USING_TF_KERAS, check_model, keras, tf
from keras_dnnopt.export.benchmark import gzipped_size
from keras_dnnopt.utils.validation import check_choice, check_number

QUANTIZATION_MODES = ("none", "dynamic", "float16", "int8", "int8_full")
_INT8_MODES = ("int8", "int8_full")


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What `export_tflite` wrote.

    Attributes:
        path: the `.tflite` file written.
        quantization: the quantization mode (`"none"`, `"dynamic"`, `"float16"`,
            `"int8"` or `"int8_full"`).
        size_bytes: the file's size in bytes.
        gzipped_size_bytes: its size gzipped at level 9 (see `file_sizes`).
        stripped: the training wrappers removed before conversion, e.g.
            `("pruning",)`; empty when there were none.
        names_stripped: whether the tensor names were left out of the file
            (`strip_names=True`).
    """

    path: str
    quantization: str
    size_bytes: int
    gzipped_size_bytes: int
    stripped: tuple = ()
    names_stripped: bool = False

    def to_dict(self):
        data = dataclasses.asdict(self)
        data["stripped"] = list(self.stripped)
        return data

    def __str__(self):
        stripped = f", stripped {', '.join(self.stripped)}" if self.stripped else ""
        if self.names_stripped:
            stripped += ", tensor names left out"
        return (
            f"{self.path} ({self.quantization}): {self.size_bytes:,} bytes, "
            f"{self.gzipped_size_bytes:,} gzipped{stripped}"
        )


def strip_tensor_names(content):
    """`content` (the bytes of a `.tflite` file) without its tensor names.

    The converter names every tensor after the Keras ops fused into it
    (`model/block7_pointwise_act/Relu6;model/block7_pointwise_bn/...`): in a small model
    these strings are a third or more of the file (9 KB of a 21 KB int8 MobileNet). The
    interpreter needs none of them: tensors are found by index, and the signature (its
    input and output names) is kept, so `get_signature_runner()` still works. The ops,
    weights and quantization parameters are untouched, so outputs are bit-identical.

    TFLite's own `flatbuffer_utils.strip_strings` also drops the signatures (which the
    LiteRT signature runner and `keras_dnnopt.export.TFLiteModel` users rely on), so this
    clears the tensor names only, through the same flatbuffer reader and writer.
    """
    try:
        from tensorflow.lite.tools import flatbuffer_utils
    except ImportError as error:  # pragma: no cover - part of every TensorFlow wheel
        raise ImportError("Leaving tensor names out of a .tflite file needs "
                          "`tensorflow.lite.tools.flatbuffer_utils` (in the TensorFlow "
                          "wheel); export with strip_names=False instead.") from error
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            tensor.name = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


# ----------------------------------------------------------------------------- path
def _check_path(path):
    """Validates the destination before any conversion work."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(
            "Argument `path` must be a file path (str or os.PathLike), e.g. "
            f"'model.tflite'. Received: path={path!r} of type {type(path).__name__}"
        ) from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path or path.endswith(os.sep) or os.path.isdir(path):
        raise ValueError(
            "Argument `path` must name a file (e.g. 'out/model.tflite'), not a folder. "
            f"Received: path={path!r}"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"The folder of argument `path` does not exist: {folder!r}. Create it first "
            f"(e.g. `os.makedirs({folder!r})`) or choose an existing folder. "
            f"Received: path={path!r}"
        )
    if not os.access(folder, os.W_OK):
        raise PermissionError(
            f"The folder of argument `path` is not writable: {folder!r}. "
            f"Received: path={path!r}"
        )
    return path


def _write_atomically(path, content):
    """Writes `content` to a temporary file next to `path`, then renames it over `path`
    (`os.replace` is atomic on one file system): a failure never leaves a half-written
    file, and never touches a file already at `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                    dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the usual mode.
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp_path)
        raise


# ---------------------------------------------------------------------- model inputs
def _input_specs(model):
    """`[(per-sample shape with None, numpy dtype), ...]` of the model's inputs, or None
    when the model has no defined inputs (e.g. an unbuilt subclassed model)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    specs = []
    for tensor in inputs:
        shape = tuple(None if d is None else int(d) for d in tuple(tensor.shape)[1:])
        dtype = getattr(tensor.dtype, "name", tensor.dtype)
        specs.append((shape, np.dtype(str(dtype))))
    return specs


def _shape_text(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + \
        ("," if len(shape) == 1 else "") + ")"


# ------------------------------------------------------------- representative data
_REPRESENTATIVE_HELP = (
    "a NumPy array of input samples (n, *input_shape), a tf.data.Dataset of inputs or "
    "(inputs, labels), or a function returning an iterable of them (the TFLite "
    "`representative_dataset` convention: each item a list with one array per input)"
)


def _element_inputs(element, num_inputs):
    """The model inputs inside one element of a dataset or generator."""
    if isinstance(element, dict):
        raise ValueError(
            f"Argument `representative_data` must be {_REPRESENTATIVE_HELP}. "
            "Received: an element that is a dict (keys "
            f"{sorted(element)}); pass the input arrays in the model's input order."
        )
    if isinstance(element, (tuple, list)):
        items = list(element)
        if items and isinstance(items[0], (tuple, list)) and len(items[0]) == num_inputs:
            return list(items[0])  # ((x1, x2), y)
        if num_inputs > 1 and len(items) >= num_inputs:
            return items[:num_inputs]  # (x1, x2) or (x1, x2, y)
        if num_inputs == 1 and items:
            return [items[0]]  # [x], (x,) or (x, y)
        raise ValueError(
            f"Argument `representative_data` must give {num_inputs} input array(s) per "
            f"element. Received: an element of {len(items)} item(s)"
        )
    return [element]


def _as_array(value):
    if isinstance(value, (tf.Tensor, tf.Variable)):
        value = value.numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Argument `representative_data` must be {_REPRESENTATIVE_HELP}. "
            f"Received: an input of type {type(value).__name__} ({error})"
        ) from error
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(
            f"Argument `representative_data` must hold numbers. Received: an input of "
            f"dtype {array.dtype}"
        )
    return array


def _matches(expected, shape):
    """Whether `shape` fits `expected` (None matches any size)."""
    return len(shape) == len(expected) and all(
        want is None or want == have for want, have in zip(expected, shape, strict=True))


def _split_samples(arrays, specs):
    """One element's input arrays -> a list of single samples (each a list of arrays
    with a batch dimension of 1), checking every shape against the model's inputs."""
    batches = []
    for index, array in enumerate(arrays):
        if specs is None:
            batches.append(array if array.ndim else array[None])
            continue
        shape, _ = specs[index]
        if _matches(shape, array.shape):
            array = array[None]  # one sample without a batch dimension
        elif not (array.ndim == len(shape) + 1 and _matches(shape, array.shape[1:])):
            which = f" for input {index}" if len(specs) > 1 else ""
            raise ValueError(
                f"Argument `representative_data` must hold samples of the model's input "
                f"shape {_shape_text(shape)}{which} (with or without a leading batch "
                f"dimension). Received: an array of shape {tuple(array.shape)}"
            )
        batches.append(array)
    counts = {int(b.shape[0]) for b in batches}
    if len(counts) != 1:
        raise ValueError(
            "Argument `representative_data` must give the same number of samples for "
            f"every input. Received: {sorted(counts)} samples"
        )
    count = counts.pop()
    # Float samples go to the converter as float32 (the model's float input type).
    batches = [b.astype(np.float32) if np.issubdtype(b.dtype, np.floating) or specs is None
               or np.issubdtype(specs[i][1], np.floating) else b
               for i, b in enumerate(batches)]
    return [[b[i:i + 1] for b in batches] for i in range(count)]


def _collect_representative(data, specs, calibration_steps):
    """Takes up to `calibration_steps` samples from `data`, validated and ready for
    the converter (each a list of float32 arrays of batch 1)."""
    num_inputs = len(specs) if specs else 1
    if isinstance(data, tf.data.Dataset):
        elements = iter(data)
    elif callable(data):
        elements = iter(data())
    elif isinstance(data, (np.ndarray, tf.Tensor)) or (
            isinstance(data, (list, tuple)) and num_inputs > 1
            and len(data) == num_inputs and all(hasattr(a, "shape") for a in data)):
        elements = iter([data])  # A whole array of samples (one per input).
    elif isinstance(data, (list, tuple)) or hasattr(data, "__next__"):
        elements = iter(data)  # A list of samples, or an iterator/generator object.
    else:
        raise ValueError(
            f"Argument `representative_data` must be {_REPRESENTATIVE_HELP}. "
            f"Received: representative_data of type {type(data).__name__}"
        )
    samples = []
    for element in elements:
        arrays = [_as_array(a) for a in _element_inputs(element, num_inputs)]
        samples.extend(_split_samples(arrays, specs))
        if len(samples) >= calibration_steps:
            break
    if not samples:
        raise ValueError(
            "Argument `representative_data` must hold at least one sample. Received: an "
            "empty dataset"
        )
    return samples[:calibration_steps]


# ------------------------------------------------------------------ wrappers (TF-MOT)
def _flat_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers") and not hasattr(layer, "layer"):
            yield from _flat_layers(layer)


def _strip_training_wrappers(model):
    """Removes pruning/clustering wrappers, returning `(model, stripped_names, is_qat)`.

    QAT (quantize) wrappers stay: the converter reads their learned ranges."""
    stripped = []
    if USING_TF_KERAS:
        if "tensorflow_model_optimization" not in sys.modules:
            return model, (), False  # No TF-MOT wrapper can exist before TF-MOT is imported.
        from tensorflow_model_optimization.python.core.clustering.keras import cluster_wrapper
        from tensorflow_model_optimization.python.core.quantization.keras import (
            quantize_layer,
            quantize_wrapper,
        )
        from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

        layers = list(_flat_layers(model))
        is_qat = any(isinstance(layer, (quantize_wrapper.QuantizeWrapper,
                                        quantize_layer.QuantizeLayer)) for layer in layers)
        if any(isinstance(layer, pruning_wrapper.PruneLowMagnitude) for layer in layers):
            import tensorflow_model_optimization as tfmot

            model = tfmot.sparsity.keras.strip_pruning(model)
            stripped.append("pruning")
        if any(isinstance(layer, cluster_wrapper.ClusterWeights) for layer in layers):
            import tensorflow_model_optimization as tfmot

            model = tfmot.clustering.keras.strip_clustering(model)
            stripped.append("clustering")
        return model, tuple(stripped), is_qat

    # Keras 3: TF-MOT cannot wrap a Keras 3 model; the only wrappers are those of the
    # native pruning of `keras_dnnopt.compression`, when that package is present. Its
    # `strip_pruning` copies any model (and refuses subclassed ones), so it is called
    # only for a model that holds its wrappers.
    if "keras_dnnopt.compression" not in sys.modules:
        return model, (), False  # Its wrappers cannot exist before it is imported.
    try:
        compression = importlib.import_module("keras_dnnopt.compression")
    except ImportError:
        return model, (), False
    # The native quantization-aware layers stay, as TF-MOT's do: their fake-quant ops carry
    # the learned ranges the converter reads.
    qat = sys.modules.get("keras_dnnopt.compression._qat_native")
    is_qat = qat is not None and qat.is_quantized(model)
    strip = getattr(compression, "strip_pruning", None)
    if strip is None:
        return model, (), is_qat
    is_pruned = getattr(compression, "is_pruned", None)
    pruned = is_pruned(model) if is_pruned is not None else any(
        _is_compression_wrapper(layer) for layer in _flat_layers(model))
    if not pruned:
        return model, (), is_qat
    return strip(model), ("pruning",), is_qat


def _is_compression_wrapper(layer):
    """Whether `layer` is a wrapper made by `keras_dnnopt.compression` (Keras 3 pruning)."""
    module = type(layer).__module__ or ""
    return isinstance(layer, keras.layers.Wrapper) and module.startswith(
        "keras_dnnopt.compression")


# ---------------------------------------------------------------------- conversion
def _make_converter(model, saved_model_dir):
    if USING_TF_KERAS:
        return tf.lite.TFLiteConverter.from_keras_model(model)
    # Keras 3: export a SavedModel and convert that; `from_keras_model` /
    # `from_concrete_functions` on Keras 3 models gave NaN outputs for MobileNetV2.
    model.export(saved_model_dir, format="tf_saved_model", verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)


def _configure(converter, quantization, samples):
    if quantization == "none":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if samples is not None:
        def representative_dataset():
            yield from samples

        converter.representative_dataset = representative_dataset
    if quantization == "int8_full":
        if samples is not None:
            # Integer kernels only. A QAT model without representative data keeps the
            # default op set: the converter refuses TFLITE_BUILTINS_INT8 without
            # calibration data even though the QAT ranges make it unnecessary.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter


def _convert(model, quantization, samples):
    with tempfile.TemporaryDirectory(prefix="keras_dnnopt_export_") as tmp:
        converter = _make_converter(model, os.path.join(tmp, "saved_model"))
        return _configure(converter, quantization, samples).convert()


def export_tflite(model, path, quantization="none", representative_data=None,
                  calibration_steps=100, strip_names=False):
    """Converts a Keras model to a `.tflite` file, optionally quantized.

    Works on both Kerases through `tf.lite.TFLiteConverter`: on tf_keras from the model
    itself (`from_keras_model`), on Keras 3 through a SavedModel written by
    `model.export` (`from_saved_model`). Training wrappers are removed for you:
    TF-MOT pruning and clustering wrappers (tf_keras) by `strip_pruning` /
    `strip_clustering`, the native Keras 3 pruning of `keras_dnnopt.compression` by its
    `strip_pruning`. Quantization-aware (QAT) models convert as they are: the
    converter uses their trained ranges, so they need no representative data.

    The file is written atomically (a temporary file in the same folder, then
    `os.replace`): a failed conversion leaves no partial file and leaves any file
    already at `path` untouched. The destination folder is checked before converting.

    Quantization modes:

    - `"none"`: float32.
    - `"dynamic"`: dynamic-range quantization, int8 weights, float activations.
    - `"float16"`: float16 weights.
    - `"int8"`: int8 weights and activations calibrated on `representative_data`;
      float input/output, and float kernels kept where no int8 one exists.
    - `"int8_full"`: full integer, int8 input and output too (for integer-only
      accelerators); fails when an op has no int8 kernel.

    Args:
        model: a `keras.Model` of the Keras in use (with defined inputs).
        path: the `.tflite` file to write (str or `os.PathLike`); its folder must exist.
        quantization: one of the modes above. Defaults to `"none"`.
        representative_data: calibration inputs for `"int8"` and `"int8_full"`: a NumPy
            array of samples `(n, *input_shape)`, a `tf.data.Dataset` of inputs or
            `(inputs, labels)` (batched or not), or a function returning an iterable
            of them (the TFLite `representative_dataset` convention, each item a list
            with one array per input). Ignored, with a warning, by other modes.
            Defaults to None.
        calibration_steps: the number of samples taken from `representative_data`,
            an int >= 1 (the TFLite guide suggests about 100 to 500). Defaults to 100.
        strip_names: leave the tensor names out of the file (`strip_tensor_names`): the
            same ops, weights and outputs in fewer bytes, for microcontrollers and app
            bundles; the signature is kept. Defaults to False (names kept, for
            debugging and the TFLite analyzer).

    Returns:
        An `ExportResult` with `path`, `quantization`, `size_bytes`,
        `gzipped_size_bytes`, `stripped` and `names_stripped`.

    Raises:
        TypeError: if `model` is not a model of the Keras in use, or `path` is not a
            path.
        ValueError: for an unknown `quantization`, an int8 mode without
            `representative_data` (unless the model is QAT), representative samples of
            the wrong shape, or a `path` that is a folder.
        FileNotFoundError: if the folder of `path` does not exist.

    Example:

    >>> result = export_tflite(model, "model_int8.tflite", quantization="int8_full",
    ...                        representative_data=x_train[:200])
    >>> print(result.size_bytes, result.gzipped_size_bytes)
    >>> TFLiteModel(result.path).predict(x_test)
    """
    check_model(model)
    quantization = check_choice("quantization", quantization, QUANTIZATION_MODES)
    calibration_steps = check_number("calibration_steps", calibration_steps, low=1,
                                     integer=True)
    path = _check_path(path)
    if not isinstance(strip_names, bool):
        raise TypeError(f"Argument `strip_names` must be True or False. Received: "
                        f"strip_names={strip_names!r}")
    model, stripped, is_qat = _strip_training_wrappers(model)

    samples = None
    if quantization in _INT8_MODES:
        if representative_data is None and not is_qat:
            raise ValueError(
                f"Argument `representative_data` is required for quantization="
                f"{quantization!r}: full integer quantization calibrates the activation "
                f"ranges on it. Pass {_REPRESENTATIVE_HELP}, e.g. "
                "representative_data=x_train[:200], or use quantization='dynamic' (no "
                "calibration). Received: representative_data=None"
            )
        if representative_data is not None:
            samples = _collect_representative(representative_data, _input_specs(model),
                                              calibration_steps)
    elif representative_data is not None:
        warnings.warn(
            f"Argument `representative_data` is only used by quantization='int8' or "
            f"'int8_full'; it is ignored for quantization={quantization!r}.",
            stacklevel=2,
        )

    content = _convert(model, quantization, samples)
    if strip_names:
        content = strip_tensor_names(content)
    _write_atomically(path, content)
    return ExportResult(path=path, quantization=quantization, size_bytes=len(content),
                        gzipped_size_bytes=gzipped_size(content), stripped=stripped,
                        names_stripped=strip_names)
