"""`TFLiteModel`: runs a `.tflite` file with the LiteRT interpreter, taking and giving
float NumPy arrays whatever the file's input and output types."""

import os
import warnings

import numpy as np

from keras_dnnopt.utils.validation import check_number

LITERT_RUNTIME = "litert"
TF_LITE_RUNTIME = "tf.lite"


def _check_file(path, name="path"):
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(
            f"Argument `{name}` must be a path (str or os.PathLike) to a .tflite file. "
            f"Received: {name}={path!r} of type {type(path).__name__}"
        ) from None
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Argument `{name}` must name an existing .tflite file (for example one "
            f"written by `keras_dnnopt.export.export_tflite`). Received: {name}={path!r}, "
            "which " + ("is a folder" if os.path.isdir(path) else "does not exist")
        )
    return path


def _interpreter_class():
    """The LiteRT `Interpreter`, or `tf.lite.Interpreter` when `ai-edge-litert` is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from keras_dnnopt.backend import tf

        warnings.warn(
            "ai-edge-litert is not installed, so keras_dnnopt runs .tflite files with the "
            "deprecated `tf.lite.Interpreter`. Install LiteRT with "
            "`pip install keras_dnnopt[litert]` (or `pip install ai-edge-litert`).",
            stacklevel=3,
        )
        return tf.lite.Interpreter, TF_LITE_RUNTIME
    return Interpreter, LITERT_RUNTIME


def _shape_text(signature):
    return "(" + ", ".join("None" if d < 0 else str(int(d)) for d in signature) + ")"


def _quantization(detail):
    """The (scale, zero_point) of a tensor, or (0.0, 0) when it is not quantized."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)


class TFLiteModel:
    """A `.tflite` file ready to run, with a Keras-like `predict`.

    Runs the file through LiteRT (`ai_edge_litert.interpreter.Interpreter`), and only
    when `ai-edge-litert` is not installed through the deprecated `tf.lite.Interpreter`
    (with a warning naming the pip extra). `predict` takes and returns float arrays
    whatever the file's types: for a fully integer file (`quantization="int8_full"`)
    it quantizes the input with the input tensor's scale and zero point and
    dequantizes the output with the output tensor's.

    Args:
        path: the `.tflite` file (str or `os.PathLike`).
        num_threads: interpreter threads, an int >= 1, or None for the interpreter's
            default. Defaults to None.

    Attributes:
        path: the file.
        runtime: `"litert"` or `"tf.lite"` (the fallback).
        input_details, output_details: the interpreter's tensor details.

    Raises:
        FileNotFoundError: if `path` is not an existing file.
        ValueError: if `num_threads` is not None or an int >= 1, or the file is not a
            valid TFLite model.

    Example:

    >>> runner = TFLiteModel("model_int8.tflite")
    >>> runner.input_shape, runner.input_dtype
    ((None, 8, 8, 1), dtype('int8'))
    >>> probabilities = runner.predict(x_test)  # float32, like model.predict(x_test)
    """

    def __init__(self, path, num_threads=None):
        self.path = _check_file(path)
        if num_threads is not None:
            num_threads = check_number("num_threads", num_threads, low=1, integer=True)
        self.num_threads = num_threads
        interpreter_class, self.runtime = _interpreter_class()
        try:
            with warnings.catch_warnings():
                # tf.lite's own deprecation warning repeats the one given above.
                warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
                self._interpreter = interpreter_class(model_path=self.path,
                                                      num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ValueError(
                f"Argument `path` must be a valid .tflite file. Received: path={self.path!r}, "
                f"which the interpreter ({self.runtime}) could not load: {error}"
            ) from error
        self.input_details = self._interpreter.get_input_details()
        self.output_details = self._interpreter.get_output_details()
        self._shapes = [tuple(int(d) for d in detail["shape"]) for detail in self.input_details]

    # ----------------------------------------------------------------- description
    def _signature(self, detail):
        signature = detail.get("shape_signature")
        if signature is None or len(signature) == 0:
            signature = detail["shape"]
        return tuple(int(d) for d in signature)

    def _shape_of(self, detail):
        return tuple(None if d < 0 else d for d in self._signature(detail))

    def _single_or_list(self, values):
        return values[0] if len(values) == 1 else list(values)

    @property
    def input_shape(self):
        """The input shape with None for dynamic dimensions, e.g. `(None, 8, 8, 1)`
        (a list of shapes for several inputs)."""
        return self._single_or_list([self._shape_of(d) for d in self.input_details])

    @property
    def output_shape(self):
        """The output shape with None for dynamic dimensions (a list for several)."""
        return self._single_or_list([self._shape_of(d) for d in self.output_details])

    @property
    def input_dtype(self):
        """The file's input type as a NumPy dtype, e.g. `float32` or `int8` (a list for
        several inputs)."""
        return self._single_or_list([np.dtype(d["dtype"]) for d in self.input_details])

    @property
    def output_dtype(self):
        """The file's output type as a NumPy dtype (a list for several outputs)."""
        return self._single_or_list([np.dtype(d["dtype"]) for d in self.output_details])

    @property
    def input_quantization(self):
        """`(scale, zero_point)` of the input, `(0.0, 0)` when not quantized (a list for
        several inputs)."""
        return self._single_or_list([_quantization(d) for d in self.input_details])

    @property
    def output_quantization(self):
        """`(scale, zero_point)` of the output, `(0.0, 0)` when not quantized."""
        return self._single_or_list([_quantization(d) for d in self.output_details])

    @property
    def fixed_batch_size(self):
        """The batch size the file was converted with when it cannot be resized (None
        when the batch dimension is dynamic)."""
        signature = self._signature(self.input_details[0])
        if not signature or signature[0] < 0:
            return None
        return signature[0]

    def __repr__(self):
        return (
            f"<TFLiteModel {self.path!r} ({self.runtime}): input {self.input_shape} "
            f"{self.input_dtype}, output {self.output_shape} {self.output_dtype}>"
        )

    # ------------------------------------------------------------------ conversion
    def _to_input_type(self, index, array):
        """Float values -> the file's input type (quantized when the input is)."""
        detail = self.input_details[index]
        dtype = np.dtype(detail["dtype"])
        if array.dtype == dtype:
            return array
        scale, zero_point = _quantization(detail)
        if np.issubdtype(dtype, np.integer) and scale:
            info = np.iinfo(dtype)
            quantized = np.round(array.astype(np.float64) / scale + zero_point)
            return np.clip(quantized, info.min, info.max).astype(dtype)
        return array.astype(dtype)

    def _to_float(self, index, array):
        """A quantized output -> float32 values; float outputs as float32."""
        detail = self.output_details[index]
        scale, zero_point = _quantization(detail)
        if np.issubdtype(array.dtype, np.integer) and scale:
            return ((array.astype(np.float32) - zero_point) * scale).astype(np.float32)
        if np.issubdtype(array.dtype, np.floating):
            return array.astype(np.float32)
        return array  # An integer output that is not quantized (e.g. class ids).

    def _random_input(self, rng, index, batch_size):
        detail = self.input_details[index]
        signature = self._signature(detail)
        if any(d < 0 for d in signature[1:]):
            raise ValueError(
                f"Input {index} of {self.path!r} has the dynamic shape "
                f"{_shape_text(signature)}; pass `input_data` to measure it."
            )
        fixed = self.fixed_batch_size
        if fixed is not None and batch_size != fixed:
            raise ValueError(
                f"Argument `batch_size` must be {fixed} for {self.path!r}, whose batch "
                f"dimension is fixed. Received: batch_size={batch_size}"
            )
        shape = (batch_size, *signature[1:])
        dtype = np.dtype(detail["dtype"])
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            return rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)

    # ------------------------------------------------------------------- execution
    def prepare(self, arrays):
        """Resizes the input tensors to the shapes of `arrays` when they differ from the
        current ones, and returns the interpreter ready for `set_tensor`/`invoke`."""
        shapes = [tuple(a.shape) for a in arrays]
        if shapes != self._shapes:
            for detail, shape in zip(self.input_details, shapes, strict=True):
                self._interpreter.resize_tensor_input(detail["index"], list(shape),
                                                      strict=True)
            self._interpreter.allocate_tensors()
            self._shapes = shapes
        return self._interpreter

    def _check_inputs(self, x):
        arrays = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(arrays) != len(self.input_details):
            raise ValueError(
                f"Argument `x` must hold {len(self.input_details)} input array(s) for "
                f"{self.path!r}. Received: {len(arrays)} array(s)"
            )
        checked = []
        for index, (array, detail) in enumerate(zip(arrays, self.input_details, strict=True)):
            array = np.asarray(array)
            signature = self._signature(detail)
            expected = _shape_text((-1, *signature[1:]))
            sample_ok = array.ndim == len(signature) and all(
                want < 0 or want == got
                for want, got in zip(signature[1:], array.shape[1:], strict=True)
            )
            if not sample_ok:
                where = f" (input {index})" if len(arrays) > 1 else ""
                raise ValueError(
                    f"Argument `x`{where} must have the shape {expected} of the file's input "
                    f"(a batch of samples). Received: x.shape={tuple(array.shape)}"
                )
            checked.append(array)
        sizes = {int(a.shape[0]) for a in checked}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(
                "Argument `x` must hold the same number (>= 1) of samples in every input. "
                f"Received: batch sizes {sorted(sizes)}"
            )
        return checked, sizes.pop()

    def _run(self, arrays):
        interpreter = self.prepare(arrays)
        for detail, array in zip(self.input_details, arrays, strict=True):
            interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
        return [interpreter.get_tensor(d["index"]) for d in self.output_details]

    def predict(self, x, batch_size=None):
        """Runs the file on `x` and returns its outputs as float arrays.

        Args:
            x: a batch of inputs, a NumPy array (or a list of arrays for several
                inputs) of float values. Quantized integer inputs are quantized with
                the input's scale and zero point; an array already of the file's input
                type (e.g. `int8`) is passed as is.
            batch_size: samples per inference, an int >= 1, or None for all of `x` at
                once. Used when the file's batch dimension is dynamic (the input
                tensor is resized); a file converted with a fixed batch (e.g. 1) runs
                `x` in chunks of that batch whatever `batch_size` says. Defaults to
                None.

        Returns:
            The output as a float32 array of `len(x)` rows (a list for several
            outputs); a quantized output is dequantized.

        Raises:
            ValueError: for an input of the wrong shape or number, or a bad
                `batch_size`.

        Example:

        >>> TFLiteModel("model.tflite").predict(x_test[:8]).shape
        (8, 10)
        """
        if batch_size is not None:
            batch_size = check_number("batch_size", batch_size, low=1, integer=True)
        arrays, total = self._check_inputs(x)
        arrays = [self._to_input_type(i, a) for i, a in enumerate(arrays)]
        fixed = self.fixed_batch_size
        step = fixed or batch_size or total
        chunks = []
        for start in range(0, total, step):
            chunk = [a[start:start + step] for a in arrays]
            count = int(chunk[0].shape[0])
            if fixed is not None and count < fixed:
                # A fixed-batch file needs full batches: pad the last one, drop the padding.
                chunk = [np.concatenate([c, np.repeat(c[-1:], fixed - count, axis=0)])
                         for c in chunk]
            outputs = self._run(chunk)
            chunks.append([o[:count].copy() for o in outputs])
        results = [self._to_float(i, np.concatenate([c[i] for c in chunks]))
                   for i in range(len(self.output_details))]
        return self._single_or_list(results)
