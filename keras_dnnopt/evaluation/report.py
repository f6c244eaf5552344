"""`evaluate_report`: classification or regression metrics of a Keras model or a TFLite file."""

import os

import numpy as np

from keras_dnnopt.backend import check_model, tf
from keras_dnnopt.utils.validation import check_choice, check_number

TASKS = ("classification", "regression")


class EvaluationReport:
    """The metrics `evaluate_report` computed; `print(report)` shows them as a table.

    Attributes:
        task: `"classification"` or `"regression"`.
        num_samples: the number of samples evaluated.
        metrics: the overall metrics, a dict of floats. Classification: `accuracy`,
            `precision_macro`, `recall_macro`, `f1_macro`; regression: `mse`, `rmse`,
            `mae`, `r2`.
        per_class: classification only, a dict `class name -> {"precision", "recall",
            "f1", "support"}`; None for regression.
        confusion_matrix: classification only, an int array, rows = true class, columns
            = predicted class; None for regression.
        class_names: the class names (classification), else None.
    """

    def __init__(self, task, num_samples, metrics, per_class=None, confusion_matrix=None,
                 class_names=None):
        self.task = task
        self.num_samples = int(num_samples)
        self.metrics = metrics
        self.per_class = per_class
        self.confusion_matrix = confusion_matrix
        self.class_names = class_names

    def __getitem__(self, key):
        return self.metrics[key]

    def to_dict(self):
        """The report as plain Python types (JSON-serialisable)."""
        result = {"task": self.task, "num_samples": self.num_samples,
                  "metrics": {k: float(v) for k, v in self.metrics.items()}}
        if self.task == "classification":
            result["per_class"] = {name: dict(values) for name, values in self.per_class.items()}
            result["confusion_matrix"] = self.confusion_matrix.tolist()
            result["class_names"] = list(self.class_names)
        return result

    def __str__(self):
        lines = [f"Evaluation ({self.task}, {self.num_samples} samples)"]
        lines += [f"  {name:<16}{value:.4f}" for name, value in self.metrics.items()]
        if self.task == "classification":
            width = max(8, *(len(n) for n in self.class_names))
            lines.append(f"  {'class':<{width}}  precision  recall     f1  support")
            for name, values in self.per_class.items():
                lines.append(f"  {name:<{width}}  {values['precision']:9.4f}  "
                             f"{values['recall']:6.4f}  {values['f1']:.4f}  "
                             f"{values['support']:7d}")
            lines.append("  confusion matrix (rows: true, columns: predicted):")
            lines += ["    " + " ".join(f"{v:5d}" for v in row) for row in self.confusion_matrix]
        return "\n".join(lines)

    def __repr__(self):
        shown = ", ".join(f"{k}={v:.4f}" for k, v in self.metrics.items())
        return f"<EvaluationReport {self.task}: {shown}>"


def _predictor(model, batch_size):
    """A function `x -> numpy predictions` for a Keras model or a `.tflite` path."""
    if isinstance(model, (str, os.PathLike)):
        # A path: an exported TFLite file.
        path = os.fspath(model)
        if not path.endswith(".tflite") or not os.path.isfile(path):
            raise ValueError(
                "Argument `model` must be a Keras model or the path of an existing `.tflite` "
                f"file. Received: model={path!r}"
            )
        from keras_dnnopt.export import TFLiteModel  # lazy: needs the `litert` extra

        interpreter = TFLiteModel(path)
        return lambda x: np.asarray(interpreter.predict(x, batch_size=batch_size))
    check_model(model, "model")
    if len(model.outputs or []) > 1:
        raise ValueError(
            "Argument `model` must have a single output to evaluate. Received: a model with "
            f"{len(model.outputs)} outputs"
        )
    return lambda x: np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


def _collect(data):
    """`(x, y)` arrays from a tuple or a `tf.data.Dataset` of `(x, y)` batches."""
    if isinstance(data, tf.data.Dataset):
        xs, ys = [], []
        for element in data.as_numpy_iterator():
            if not isinstance(element, tuple) or len(element) < 2:
                raise ValueError(
                    "Argument `data` must yield `(x, y)` batches with targets to evaluate "
                    f"against. Received: a dataset with element spec {data.element_spec}"
                )
            xs.append(element[0])
            ys.append(element[1])
        if not xs:
            raise ValueError("Argument `data` must not be empty. Received: an empty dataset")
        return np.concatenate(xs), np.concatenate(ys)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return np.asarray(data[0]), np.asarray(data[1])
    raise ValueError(
        "Argument `data` must be a tuple `(x, y)` of arrays or a `tf.data.Dataset` of "
        f"`(x, y)` batches. Received: data of type {type(data).__name__}"
    )


def _class_ids(values, name):
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim == 2:
        return np.argmax(values, axis=1)
    if values.ndim != 1:
        raise ValueError(f"Argument `{name}` must hold class ids or one row of class scores "
                         f"per sample. Received: shape {values.shape}")
    return values


def _classification(y, predictions, class_names):
    if predictions.ndim >= 2 and predictions.shape[-1] == 1:
        # One output unit: a sigmoid probability (threshold 0.5) or a logit (threshold 0).
        scores = predictions.reshape(-1)
        threshold = 0.5 if scores.min() >= 0.0 and scores.max() <= 1.0 else 0.0
        predicted = (scores > threshold).astype(np.int64)
        num_outputs = 2
    else:
        predicted = _class_ids(predictions.reshape(len(predictions), -1), "predictions")
        num_outputs = predictions.shape[-1]
    labels = _class_ids(y, "y").astype(np.int64)
    if labels.min() < 0:
        raise ValueError(f"Argument `y` must hold class ids >= 0. Received: min={labels.min()}")
    num_classes = max(num_outputs, int(labels.max()) + 1,
                      len(class_names) if class_names is not None else 0)
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    elif len(class_names) != num_classes:
        raise ValueError(
            f"Argument `class_names` must name all {num_classes} classes. Received: "
            f"{len(class_names)} names: {list(class_names)!r}"
        )
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_positive = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Undefined ratios (a class never predicted or never true) count as 0, as
        # scikit-learn's zero_division=0.
        precision = np.where(predicted_count > 0, true_positive / predicted_count, 0.0)
        recall = np.where(support > 0, true_positive / support, 0.0)
        denominator = support + predicted_count
        f1 = np.where(denominator > 0, 2.0 * true_positive / denominator, 0.0)
    # Macro averages over the classes present in the labels or the predictions, as
    # scikit-learn does by default.
    present = denominator > 0
    metrics = {
        "accuracy": float(true_positive.sum() / len(labels)),
        "precision_macro": float(precision[present].mean()),
        "recall_macro": float(recall[present].mean()),
        "f1_macro": float(f1[present].mean()),
    }
    per_class = {
        str(name): {"precision": float(p), "recall": float(r), "f1": float(f),
                    "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
    }
    return EvaluationReport("classification", len(labels), metrics, per_class, confusion,
                            [str(n) for n in class_names])


def _regression(y, predictions):
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    predictions = np.asarray(predictions, dtype=np.float64).reshape(len(predictions), -1)
    if y.shape != predictions.shape:
        raise ValueError(
            "The model's outputs and the targets `y` must have the same size per sample. "
            f"Received: outputs of shape {predictions.shape}, y of shape {y.shape}"
        )
    error = predictions - y
    mse = float(np.mean(error**2))
    # R^2 per output, then averaged (scikit-learn's multioutput="uniform_average"); a
    # constant target gives R^2 = 1 for a perfect fit, else 0 (scikit-learn's convention).
    residual = np.sum(error**2, axis=0)
    total = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(total > 0, 1.0 - residual / total, np.where(residual == 0, 1.0, 0.0))
    metrics = {"mse": mse, "rmse": float(np.sqrt(mse)), "mae": float(np.mean(np.abs(error))),
               "r2": float(np.mean(r2))}
    return EvaluationReport("regression", len(y), metrics)


def evaluate_report(model, data, task="classification", class_names=None, batch_size=None):
    """Evaluates a Keras model or an exported TFLite file and reports the usual metrics.

    Classification: accuracy, macro precision, recall and F1, the same per class, and
    the confusion matrix. The predicted class is the argmax of the outputs (probabilities
    or logits alike); a single output unit is read as binary (a probability thresholded
    at 0.5, or a logit at 0). Regression: MSE, RMSE, MAE and R^2 (averaged over outputs).
    The metrics are computed with NumPy from all predictions at once.

    Args:
        model: a Keras model of the Keras in use, or the path of a `.tflite` file (run
            with `keras_dnnopt.export.TFLiteModel`, which needs `pip install
            keras_dnnopt[litert]`).
        data: `(x, y)` arrays, or a `tf.data.Dataset` of `(x, y)` batches (e.g.
            `load_dataset(...).test`). `y` holds class ids or one-hot rows for
            classification, targets for regression.
        task: `"classification"` or `"regression"`. Defaults to `"classification"`.
        class_names: names of the classes, index = class id. Defaults to None (`"0"`,
            `"1"`, ...).
        batch_size: the prediction batch size. Defaults to None (Keras' default, 32; the
            TFLite model's own batch size).

    Returns:
        An `EvaluationReport` (`.metrics`, `.per_class`, `.confusion_matrix`,
        `.to_dict()`; `print(report)` gives a table).

    Raises:
        ValueError: if `task` is unknown, `x` and `y` differ in length, `model` is a path
            that is not an existing `.tflite` file, or `class_names` has the wrong length.
        TypeError: if `model` is not a Keras model of the Keras in use.

    Example:

    >>> data = load_dataset("digits")
    >>> report = evaluate_report(model, data.test, class_names=data.class_names)  # doctest: +SKIP
    >>> report.metrics["f1_macro"]  # doctest: +SKIP
    >>> print(evaluate_report("model.tflite", (x_test, y_test)))  # doctest: +SKIP
    """
    task = check_choice("task", task, TASKS)
    if batch_size is not None:
        batch_size = check_number("batch_size", batch_size, low=1, integer=True)
    if class_names is not None:
        if task != "classification":
            raise ValueError(
                "Argument `class_names` applies to classification only. Received: "
                f"task={task!r}, class_names={class_names!r}"
            )
        class_names = list(class_names)
    predict = _predictor(model, batch_size)
    x, y = _collect(data)
    if len(x) != len(y):
        raise ValueError(
            "Arguments `x` and `y` of `data` must have the same number of samples. "
            f"Received: len(x)={len(x)}, len(y)={len(y)}"
        )
    if len(x) == 0:
        raise ValueError("Argument `data` must hold at least one sample. Received: 0 samples")
    predictions = predict(x.astype(np.float32) if x.dtype == np.float64 else x)
    if len(predictions) != len(x):
        raise ValueError(
            f"The model returned {len(predictions)} predictions for {len(x)} samples."
        )
    if task == "classification":
        return _classification(y, predictions, class_names)
    return _regression(y, predictions)

