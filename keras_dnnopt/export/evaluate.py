"""Checking an exported `.tflite` file: its accuracy and loss (`evaluate_tflite`), and
its agreement with the Keras model it came from (`compare_outputs`)."""

import dataclasses

import numpy as np

from keras_dnnopt.backend import check_model, keras, tf
from keras_dnnopt.export.runner import TFLiteModel
from keras_dnnopt.utils.validation import check_number

_DATA_HELP = (
    "a tuple `(x, y)` of arrays or a tf.data.Dataset of `(x, y)` elements (batched or not)"
)


def _to_numpy(value):
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return value.numpy()
    return np.asarray(value)


def _dataset_arrays(dataset, sample_rank):
    """Collects a dataset of `x` or `(x, y[, w])` into arrays `(x, y or None)`."""
    xs, ys = [], []
    for element in dataset:
        if isinstance(element, (tuple, list)):
            xs.append(_to_numpy(element[0]))
            ys.append(_to_numpy(element[1]) if len(element) > 1 else None)
        elif isinstance(element, dict):
            raise ValueError(
                f"Argument `data` must be {_DATA_HELP}. Received: a dataset of dicts"
            )
        else:
            xs.append(_to_numpy(element))
            ys.append(None)
    if not xs:
        raise ValueError(f"Argument `data` must hold at least one sample. Received: {dataset}")
    batched = xs[0].ndim == sample_rank + 1
    join = np.concatenate if batched else np.stack
    x = join(xs)
    y = None if any(v is None for v in ys) else join(ys)
    return x, y


def _sample_rank(runner):
    """The rank of one input sample of the file (its input rank without the batch)."""
    shape = runner.input_shape
    return len(shape[0] if isinstance(shape, list) else shape) - 1


def _split_data(data, sample_rank, need_labels):
    if isinstance(data, tf.data.Dataset):
        x, y = _dataset_arrays(data, sample_rank)
    elif isinstance(data, (tuple, list)) and len(data) in (2, 3):
        x, y = _to_numpy(data[0]), _to_numpy(data[1])
    elif not need_labels and hasattr(data, "shape"):
        x, y = _to_numpy(data), None
    else:
        raise ValueError(
            f"Argument `data` must be {_DATA_HELP}"
            + (" (or an array `x` of inputs)" if not need_labels else "")
            + f". Received: data of type {type(data).__name__}"
        )
    if need_labels and y is None:
        raise ValueError(
            f"Argument `data` must give labels: {_DATA_HELP}. Received: inputs without "
            "labels"
        )
    if y is not None and len(y) != len(x):
        raise ValueError(
            "Argument `data` must hold as many labels as inputs. Received: "
            f"{len(x)} inputs and {len(y)} labels"
        )
    return x, y


def _looks_like_probabilities(predictions):
    """Whether each row is a probability distribution (softmax output, possibly
    quantized to 1/256 steps), rather than logits."""
    if predictions.min() < 0.0 or predictions.max() > 1.0 + 1e-6:
        return False
    if predictions.shape[-1] == 1:
        return True
    return bool(np.all(np.abs(predictions.sum(axis=-1) - 1.0) <= 0.05))


def _sparse_labels(y, predictions):
    """Integer class ids from sparse or one-hot labels, and whether they were one-hot."""
    classes = predictions.shape[-1]
    if y.ndim == predictions.ndim and y.shape[-1] == classes and classes > 1:
        return np.argmax(y, axis=-1), True
    if y.ndim == predictions.ndim and y.shape[-1] == 1:
        y = y[..., 0]
    if y.ndim != predictions.ndim - 1:
        raise ValueError(
            "The labels in argument `data` must be integer class ids of shape (n,) or "
            f"one-hot of shape (n, {classes}). Received: labels of shape {tuple(y.shape)}"
        )
    return y.astype(np.int64), False


def evaluate_tflite(path, data, loss=None, batch_size=None, num_threads=None):
    """Measures the accuracy and loss of a `.tflite` file on labelled data.

    Runs the file through `TFLiteModel` (LiteRT) and scores its float (dequantized)
    outputs. Labels may be integer class ids or one-hot; a single-unit output is
    scored as binary classification (threshold 0.5 on probabilities, 0 on logits).

    Args:
        path: the `.tflite` file.
        data: a tuple `(x, y)` of NumPy arrays, or a `tf.data.Dataset` of `(x, y)`
            elements, batched or not.
        loss: None for cross-entropy (sparse or categorical to match the labels; on
            probabilities when every output row is a distribution, such as a softmax
            output, otherwise on logits), or a Keras loss (name, instance or function
            `loss(y_true, y_pred)`), applied to the labels as given. Defaults to None.
        batch_size: samples per inference (see `TFLiteModel.predict`), or None for all
            at once. Defaults to None.
        num_threads: interpreter threads, or None for the default. Defaults to None.

    Returns:
        A dict `{"accuracy": float, "loss": float, "num_samples": int}`, like
        `model.evaluate(..., return_dict=True)`.

    Raises:
        FileNotFoundError: if `path` is not an existing file.
        ValueError: for data without labels, labels of the wrong shape or count, or
            inputs of the wrong shape.

    Example:

    >>> evaluate_tflite("model_int8.tflite", (x_test, y_test))
    {'accuracy': 0.96, 'loss': 0.13, 'num_samples': 360}
    """
    runner = TFLiteModel(path, num_threads=num_threads)
    x, y = _split_data(data, _sample_rank(runner), need_labels=True)
    predictions = runner.predict(x, batch_size=batch_size)
    if isinstance(predictions, list):
        raise ValueError(
            f"evaluate_tflite scores files with one output; {path!r} has "
            f"{len(predictions)}. Use `TFLiteModel(path).predict(x)` and score them yourself."
        )
    probabilities = _looks_like_probabilities(predictions)
    if predictions.shape[-1] == 1:
        labels = y.reshape(len(y)).astype(np.float32)
        threshold = 0.5 if probabilities else 0.0
        accuracy = float(np.mean((predictions[:, 0] > threshold) == (labels > 0.5)))
        default_loss = keras.losses.BinaryCrossentropy(from_logits=not probabilities)
        y_for_loss = labels[:, None]
    else:
        labels, one_hot = _sparse_labels(y, predictions)
        accuracy = float(np.mean(np.argmax(predictions, axis=-1) == labels))
        loss_class = (keras.losses.CategoricalCrossentropy if one_hot
                      else keras.losses.SparseCategoricalCrossentropy)
        default_loss = loss_class(from_logits=not probabilities)
        y_for_loss = y
    if loss is None:
        loss_fn = default_loss
    elif isinstance(loss, str):
        loss_fn = keras.losses.get(loss)
    elif callable(loss):
        loss_fn = loss
    else:
        raise ValueError(
            "Argument `loss` must be None, a Keras loss name, a keras.losses.Loss or a "
            f"function loss(y_true, y_pred). Received: loss={loss!r}"
        )
    value = loss_fn(tf.convert_to_tensor(y_for_loss), tf.convert_to_tensor(predictions))
    return {
        "accuracy": accuracy,
        "loss": float(np.mean(_to_numpy(value))),
        "num_samples": int(len(x)),
    }


@dataclasses.dataclass(frozen=True)
class OutputComparison:
    """How closely a `.tflite` file reproduces its Keras model.

    Attributes:
        top1_agreement: the fraction of samples whose top-1 class is the same.
        max_abs_diff: the largest absolute difference between the outputs.
        mean_abs_diff: the mean absolute difference between the outputs.
        num_samples: the number of samples compared.
    """

    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    num_samples: int

    def to_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        return (
            f"top-1 agreement {self.top1_agreement:.4f}, max |diff| {self.max_abs_diff:.3g}, "
            f"mean |diff| {self.mean_abs_diff:.3g} over {self.num_samples} samples"
        )


def compare_outputs(model, path, data, batch_size=None, num_threads=None):
    """Compares a Keras model's outputs with those of a `.tflite` file made from it.

    Runs `model.predict` and `TFLiteModel(path).predict` (dequantized float outputs) on
    the same inputs. A float export should agree to about 1e-5; a quantized one
    differs by about its output quantization step, with a high top-1 agreement on a
    trained model.

    Args:
        model: the `keras.Model` (of the Keras in use) the file was exported from.
        path: the `.tflite` file.
        data: the inputs: an array `x`, a tuple `(x, y)` (labels ignored) or a
            `tf.data.Dataset` of `x` or `(x, y)` elements, batched or not.
        batch_size: samples per inference for both, or None (Keras' default 32 for the
            model, all at once for the file). Defaults to None.
        num_threads: interpreter threads, or None for the default. Defaults to None.

    Returns:
        An `OutputComparison` with `top1_agreement`, `max_abs_diff`, `mean_abs_diff`
        and `num_samples`.

    Raises:
        TypeError: if `model` is not a model of the Keras in use.
        FileNotFoundError: if `path` is not an existing file.
        ValueError: if the inputs do not fit, or the model and file outputs differ in
            number or shape.

    Example:

    >>> comparison = compare_outputs(model, "model.tflite", x_test)
    >>> comparison.top1_agreement, comparison.max_abs_diff
    (1.0, 2.4e-07)
    """
    check_model(model)
    if batch_size is not None:
        batch_size = check_number("batch_size", batch_size, low=1, integer=True)
    runner = TFLiteModel(path, num_threads=num_threads)
    x, _ = _split_data(data, _sample_rank(runner), need_labels=False)
    expected = model.predict(x, batch_size=batch_size, verbose=0)
    actual = runner.predict(x, batch_size=batch_size)
    expected = [_to_numpy(e) for e in tf.nest.flatten(expected)]
    actual = actual if isinstance(actual, list) else [actual]
    if len(expected) != len(actual) or any(
            e.shape != a.shape for e, a in zip(expected, actual, strict=True)):
        raise ValueError(
            f"The outputs of `model` and of the file {path!r} differ: shapes "
            f"{[e.shape for e in expected]} and {[a.shape for a in actual]}. Was the file "
            "exported from this model?"
        )
    diffs = np.concatenate([np.abs(e.astype(np.float64) - a).ravel()
                            for e, a in zip(expected, actual, strict=True)])
    first_expected, first_actual = expected[0], actual[0]
    if first_expected.ndim >= 2 and first_expected.shape[-1] > 1:
        agree = np.argmax(first_expected, axis=-1) == np.argmax(first_actual, axis=-1)
    else:  # One unit: compare the side of the decision threshold (0.5 or 0).
        threshold = 0.5 if _looks_like_probabilities(first_expected) else 0.0
        agree = (first_expected > threshold) == (first_actual > threshold)
    return OutputComparison(
        top1_agreement=float(np.mean(agree)),
        max_abs_diff=float(diffs.max()) if diffs.size else 0.0,
        mean_abs_diff=float(diffs.mean()) if diffs.size else 0.0,
        num_samples=int(len(x)),
    )
