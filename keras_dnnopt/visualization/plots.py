"""Training plots: history, a schedule's curve, a confusion matrix, per-layer sparsity and
the LR finder's curve. Each returns a matplotlib `Figure` (drawn off-screen with the
object-oriented API, whatever pyplot's backend) and can save it (`save_path=`, written
atomically)."""

import collections
import math
import numbers
from collections.abc import Mapping

import numpy as np

from keras_dnnopt.backend import tf
from keras_dnnopt.utils.figures import (
    check_save_path,
    new_figure,
    require_matplotlib,
    save_figure,
)
from keras_dnnopt.utils.validation import check_number

LEARNING_RATE_KEYS = ("learning_rate", "lr")
NORMALIZE_CHOICES = (None, False, True, "true", "pred", "all")


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _start(what, save_path, ax=None, figsize=(6.0, 4.0)):
    """Checks matplotlib and `save_path` at the entry of a plot; a figure and an axes
    (the given `ax`, or a new figure's)."""
    require_matplotlib(what)
    check_save_path(save_path)
    if ax is None:
        figure, axes = new_figure(what, figsize=figsize)
        return figure, axes[0]
    from matplotlib.axes import Axes

    if not isinstance(ax, Axes):
        raise ValueError(
            f"Argument `ax` must be a matplotlib Axes or None. Received: ax={ax!r}")
    return ax.figure, ax


# --------------------------------------------------------------------------- history


def _history_dict(history):
    values = getattr(history, "history", history)
    if not isinstance(values, Mapping):
        raise TypeError(
            "Argument `history` must be a `keras.callbacks.History` (what `fit` returns) or "
            f"its `.history` dict. Received: history of type {type(history).__name__}"
        )
    if not values:
        raise ValueError(
            "Argument `history` is empty: train for at least one epoch. "
            f"Received: history={values!r}"
        )
    series = {}
    for key, entries in values.items():
        try:
            numbers_ = [float(v) for v in np.ravel(np.asarray(entries, dtype="float64"))]
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Argument `history` must map names to lists of numbers. Received: "
                f"history[{key!r}]={entries!r}"
            ) from error
        series[str(key)] = numbers_
    return series


def _history_panels(series):
    """Groups the series into panels: each metric with its `val_` twin, the learning
    rate on its own (last)."""
    panels, learning_rate = {}, []
    for key in series:
        if key in LEARNING_RATE_KEYS:
            learning_rate.append(key)
            continue
        base = key[4:] if key.startswith("val_") and key[4:] in series else key
        panels.setdefault(base, []).append(key)
    ordered = dict(sorted(panels.items(), key=lambda item: item[0] != "loss"))
    if learning_rate:
        ordered["learning rate"] = learning_rate
    return ordered


def plot_history(history, metrics=None, save_path=None):
    """Plots a training history: the loss, each metric and the learning rate, per epoch.

    One panel per quantity: the loss first, each metric with its validation twin
    (`accuracy` and `val_accuracy` together), and the learning rate when the history
    holds one (`learning_rate` or `lr`, logged by `LearningRateMonitor` or
    `ReduceLROnPlateau`; on a log scale when it spans more than two decades). Epochs are
    numbered from 1.

    Args:
        history: a `keras.callbacks.History` (what `model.fit` returns) or its `.history`
            dict `{name: [value per epoch]}`.
        metrics: the panels to draw, by name (`"loss"`, `"accuracy"`,
            `"learning rate"`...), or None for all. Defaults to None.
        save_path: a file to save the figure to (PNG unless the extension says
            otherwise), or None. Defaults to None.

    Returns:
        The matplotlib `Figure`; each line is labelled with its history key.

    Raises:
        TypeError: if `history` is not a `History` or a dict.
        ValueError: for an empty history, non-numeric values, or a name in `metrics`
            the history does not hold (the message lists those it does).
        ImportError: if matplotlib is missing (`pip install keras_dnnopt[viz]`).

    Example:

    ```python
    history = model.fit(x, y, validation_split=0.2, epochs=10)
    plot_history(history, save_path="history.png")
    ```
    """
    require_matplotlib("plot_history")
    check_save_path(save_path)
    series = _history_dict(history)
    panels = _history_panels(series)
    if metrics is not None:
        names = [metrics] if isinstance(metrics, str) else list(metrics)
        unknown = [n for n in names if n not in panels]
        if unknown or not names:
            raise ValueError(
                f"Argument `metrics` must name quantities of the history: "
                f"{', '.join(repr(n) for n in panels)}. Received: metrics={metrics!r}"
            )
        panels = {name: panels[name] for name in names}
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    figure, axes = new_figure("plot_history", figsize=(4.5 * ncols, 3.5 * nrows),
                              nrows=nrows, ncols=ncols)
    for ax, (title, keys) in zip(axes, panels.items(), strict=False):
        for key in keys:
            values = series[key]
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3,
                    label=key)
        if title == "learning rate":
            positive = [v for key in keys for v in series[key] if v > 0]
            spread = len(positive) == sum(len(series[k]) for k in keys) and positive
            if spread and max(positive) / min(positive) > 100:
                ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(True, alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    figure.tight_layout()
    save_figure(figure, save_path)
    return figure


# --------------------------------------------------------------------------- schedule


def schedule_values(schedule, steps):
    """A learning-rate schedule's values at steps `0 .. steps - 1`, a float64 NumPy array.

    The schedule is called once on all the steps when it accepts a vector (checked
    against single calls at the first, middle and last step), else once per step.
    """
    def one(step):
        return float(np.asarray(schedule(tf.constant(step, dtype=tf.int64))))

    values = None
    try:
        vector = np.asarray(schedule(tf.range(steps, dtype=tf.int64)), dtype="float64")
        if vector.shape == (steps,):
            probes = sorted({0, steps // 2, steps - 1})
            if all(math.isclose(vector[i], one(i), rel_tol=1e-6, abs_tol=1e-12)
                   for i in probes):
                values = vector
    except Exception:  # a schedule written for scalar steps (Python or tf.cond branching)
        values = None
    if values is None:
        values = np.asarray([one(step) for step in range(steps)], dtype="float64")
    return values


def plot_schedule(schedule, steps, label=None, ax=None, save_path=None):
    """Plots a learning-rate schedule's curve over `steps` optimizer steps.

    Args:
        schedule: a `keras.optimizers.schedules.LearningRateSchedule` (any: Keras' own,
            those of `keras_dnnopt.schedules`, yours), or any callable mapping a step
            to a learning rate.
        steps: the number of steps to plot, `0 .. steps - 1`, an int >= 1.
        label: the line's label, or None for the schedule's class name. Defaults to None.
        ax: a matplotlib `Axes` to draw into (to compare schedules on one plot), or None
            for a new figure. Defaults to None.
        save_path: a file to save the figure to (PNG unless the extension says
            otherwise), or None. Defaults to None.

    Returns:
        The matplotlib `Figure`; the line's data are the steps and the schedule's values.

    Raises:
        TypeError: if `schedule` is not callable (a constant learning rate has no curve).
        ValueError: if `steps` is not an int >= 1, or the schedule gives a non-finite
            value.
        ImportError: if matplotlib is missing (`pip install keras_dnnopt[viz]`).

    Example:

    ```python
    schedule = keras_dnnopt.schedules.WarmupCosineDecay(0.1, decay_steps=900,
                                                         warmup_steps=100)
    plot_schedule(schedule, 1000, save_path="schedule.png")
    ```
    """
    if not callable(schedule):
        raise TypeError(
            "Argument `schedule` must be a `keras.optimizers.schedules.LearningRateSchedule` "
            f"or a callable step -> learning rate. Received: schedule={schedule!r}"
        )
    steps = check_number("steps", steps, low=1, integer=True)
    if label is not None and not isinstance(label, str):
        raise ValueError(f"Argument `label` must be a str or None. Received: label={label!r}")
    figure, ax = _start("plot_schedule", save_path, ax)
    values = schedule_values(schedule, steps)
    if not np.all(np.isfinite(values)):
        bad = int(np.argmin(np.isfinite(values)))
        raise ValueError(
            f"Argument `schedule` gave a non-finite learning rate at step {bad}: "
            f"{values[bad]}. Received: schedule={schedule!r}"
        )
    ax.plot(np.arange(steps), values, label=label or type(schedule).__name__)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title("Learning-rate schedule")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_figure(figure, save_path)
    return figure


# --------------------------------------------------------------------------- confusion


def _labels(name, values):
    array = np.asarray(values)
    if array.ndim == 2 and name == "y_pred":
        array = np.argmax(array, axis=-1)  # scores or probabilities per class
    if array.ndim == 2 and array.shape[-1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"Argument `{name}` must be a non-empty vector of class indices"
            f"{' (or a matrix of class scores)' if name == 'y_pred' else ''}. "
            f"Received: {name}.shape={array.shape}"
        )
    if not np.issubdtype(array.dtype, np.number) or np.any(array < 0) or np.any(
            array != np.round(array)):
        raise ValueError(
            f"Argument `{name}` must hold class indices, integers >= 0. Received: {name}="
            f"{array[:10]!r}{'...' if array.size > 10 else ''}"
        )
    return array.astype("int64")


def confusion_matrix_from_labels(y_true, y_pred, num_classes=None):
    """Counts `matrix[i, j]`: the samples of class `i` predicted as `j`."""
    y_true, y_pred = _labels("y_true", y_true), _labels("y_pred", y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(
            "Arguments `y_true` and `y_pred` must have the same length. Received: "
            f"len(y_true)={len(y_true)}, len(y_pred)={len(y_pred)}"
        )
    needed = int(max(y_true.max(), y_pred.max())) + 1
    if num_classes is None:
        num_classes = needed
    elif num_classes < needed:
        raise ValueError(
            f"Argument `num_classes` must exceed every label ({needed - 1}). "
            f"Received: num_classes={num_classes}"
        )
    counts = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _matrix_of(matrix):
    """A confusion matrix given directly, or held by a report (duck-typed: a
    `confusion_matrix` attribute or key)."""
    held = getattr(matrix, "confusion_matrix", None)
    if held is None and isinstance(matrix, Mapping):
        held = matrix.get("confusion_matrix")
    if held is not None:
        matrix = held
    try:
        array = np.asarray(matrix, dtype="float64")
    except (TypeError, ValueError) as error:
        raise ValueError(
            "Argument `matrix` must be a square array of counts. Received: matrix of type "
            f"{type(matrix).__name__}"
        ) from error
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.size == 0:
        raise ValueError(
            "Argument `matrix` must be a square (classes, classes) array. Received: "
            f"matrix.shape={array.shape}"
        )
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError("Argument `matrix` must hold finite counts >= 0.")
    return array


def normalize_confusion_matrix(matrix, normalize):
    """Divides by the row sums (`"true"`, also `True`), column sums (`"pred"`) or the
    total (`"all"`), as scikit-learn's `confusion_matrix(normalize=...)`; an empty row or
    column stays 0."""
    if normalize in (None, False):
        return matrix
    mode = "true" if normalize is True else normalize
    if mode == "true":
        totals = matrix.sum(axis=1, keepdims=True)
    elif mode == "pred":
        totals = matrix.sum(axis=0, keepdims=True)
    else:
        totals = np.full((1, 1), matrix.sum())
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def plot_confusion_matrix(matrix=None, y_true=None, y_pred=None, class_names=None,
                          normalize=None, num_classes=None, colormap="Blues", ax=None,
                          save_path=None):
    """Plots a confusion matrix, rows the true classes and columns the predicted ones.

    Give either the matrix (or a report holding one as `confusion_matrix`) or the labels
    `y_true` and `y_pred`. Each cell is annotated with its count (or fraction, when
    normalized) for up to 30 classes.

    Args:
        matrix: a `(classes, classes)` array of counts, `matrix[i, j]` the samples of
            class `i` predicted as `j`; or a report holding one as its
            `confusion_matrix` attribute or key, and its `class_names` if any (such as
            the `EvaluationReport` of `keras_dnnopt.evaluation.evaluate_report`).
            Defaults to None.
        y_true: the true class indices, when `matrix` is None. Defaults to None.
        y_pred: the predicted class indices, or a `(samples, classes)` matrix of scores
            (its argmax is taken), when `matrix` is None. Defaults to None.
        class_names: the names of the classes, one per row, or None for the report's
            `class_names`, else `0, 1, ...`. Defaults to None.
        normalize: None (counts), `"true"` (or True: each row sums to 1, per-class
            recall on the diagonal), `"pred"` (each column sums to 1, precision) or
            `"all"` (the whole matrix sums to 1), as in scikit-learn. Defaults to None.
        num_classes: the number of classes for labels, or None for the largest label
            plus 1 (or `len(class_names)`). Defaults to None.
        colormap: a matplotlib colormap name. Defaults to `"Blues"`.
        ax: a matplotlib `Axes` to draw into, or None for a new figure. Defaults to None.
        save_path: a file to save the figure to (PNG unless the extension says
            otherwise), or None. Defaults to None.

    Returns:
        The matplotlib `Figure`; its image holds the (normalized) matrix.

    Raises:
        ValueError: if neither or both of `matrix` and the labels are given, the matrix
            is not square with counts >= 0, the labels are not class indices or differ
            in length, `class_names` does not have one name per class, or `normalize` is
            not one of the choices.
        ImportError: if matplotlib is missing (`pip install keras_dnnopt[viz]`).

    Example:

    ```python
    plot_confusion_matrix(y_true=y_test, y_pred=model.predict(x_test),
                          class_names=[str(d) for d in range(10)], normalize="true")
    ```
    """
    if normalize not in NORMALIZE_CHOICES or (
            not isinstance(normalize, (bool, type(None))) and not isinstance(normalize, str)):
        raise ValueError(
            "Argument `normalize` must be one of None, 'true' (or True), 'pred', 'all'. "
            f"Received: normalize={normalize!r}"
        )
    if num_classes is not None:
        num_classes = check_number("num_classes", num_classes, low=1, integer=True)
    if class_names is not None:
        if isinstance(class_names, str):
            raise ValueError(
                "Argument `class_names` must be a list of names, one per class. "
                f"Received: class_names={class_names!r}"
            )
        class_names = [str(name) for name in class_names]
        if num_classes is None:
            num_classes = len(class_names)
    has_labels = y_true is not None or y_pred is not None
    if (matrix is None) == (not has_labels) or (has_labels and (y_true is None
                                                                or y_pred is None)):
        raise ValueError(
            "Pass either `matrix`, or both `y_true` and `y_pred`. Received: "
            f"matrix={'given' if matrix is not None else None}, "
            f"y_true={'given' if y_true is not None else None}, "
            f"y_pred={'given' if y_pred is not None else None}"
        )
    if matrix is not None:
        if class_names is None:  # a report's own class names (e.g. `evaluate_report`)
            held = getattr(matrix, "class_names", None)
            if held is None and isinstance(matrix, Mapping):
                held = matrix.get("class_names")
            class_names = None if held is None else [str(name) for name in held]
        counts = _matrix_of(matrix)
    else:
        counts = confusion_matrix_from_labels(y_true, y_pred, num_classes).astype("float64")
    size = counts.shape[0]
    if class_names is not None and len(class_names) != size:
        raise ValueError(
            f"Argument `class_names` must have one name per class ({size}). "
            f"Received: {len(class_names)} names, class_names={class_names!r}"
        )
    names = class_names or [str(i) for i in range(size)]
    figure, ax = _start("plot_confusion_matrix", save_path, ax)
    values = normalize_confusion_matrix(counts, normalize)
    normalized = normalize not in (None, False)
    image = ax.imshow(values, cmap=colormap, vmin=0.0,
                      vmax=1.0 if normalized else max(values.max(), 1.0))
    figure.colorbar(image, ax=ax)
    ax.set_xticks(range(size), labels=names, rotation=45 if size > 10 else 0)
    ax.set_yticks(range(size), labels=names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    mode = "true" if normalize is True else normalize
    ax.set_title(f"Confusion matrix (normalized over {mode})" if normalized
                 else "Confusion matrix")
    if size <= 30:
        threshold = image.norm.vmin + 0.5 * (image.norm.vmax - image.norm.vmin)
        integral = not normalized and np.all(values == np.round(values))
        for (i, j), value in np.ndenumerate(values):
            text = f"{int(value)}" if integral else f"{value:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if value > threshold else "black")
    save_figure(figure, save_path)
    return figure


# --------------------------------------------------------------------------- sparsity


def _row(row):
    """`(name, weight, fraction)` from a row: an object with `name` (or `layer`),
    optionally `weight`, and `sparsity` attributes (a `SparsityRow` of
    `keras_dnnopt.compression`), a dict with those keys, or a `(name, fraction)` pair."""
    if isinstance(row, Mapping):
        get = row.get
    elif isinstance(row, (tuple, list)) and len(row) == 2 and not hasattr(row, "_fields"):
        return row[0], None, row[1]
    else:
        def get(key):
            return getattr(row, key, None)
    name = get("name")
    return (get("layer") if name is None else name), get("weight"), get("sparsity")


def _sparsity_source(report):
    """The report itself, or its `to_dict()` when it has one (and is not a mapping)."""
    to_dict = getattr(report, "to_dict", None)
    if callable(to_dict) and not isinstance(report, Mapping):
        return to_dict()
    return report


def sparsity_rows(report):
    """The `(label, sparsity)` rows of a sparsity report, duck-typed: a mapping
    `{name: fraction}`; an object (or dict) with `layers`, rows having `name` (or
    `layer`), optionally `weight`, and `sparsity` (attributes or keys), such as
    `keras_dnnopt.compression.sparsity_report(model)`; an object with `to_dict()` giving
    either; or a list of rows or `(name, fraction)` pairs. A layer with several rows
    (kernels of a block) is labelled `layer/weight`."""
    source = _sparsity_source(report)
    layers = source.get("layers") if isinstance(source, Mapping) else getattr(
        source, "layers", None)
    if layers is not None:
        triples = [_row(row) for row in layers]
    elif isinstance(source, Mapping):
        triples = [(name, None, fraction) for name, fraction in source.items()]
    elif isinstance(source, (list, tuple)):
        triples = [_row(row) for row in source]
    else:
        raise TypeError(
            "Argument `report` must be a mapping {layer name: sparsity}, an object with "
            "`layers` rows (`name`, `sparsity`), one with `to_dict()`, or a list of rows. "
            f"Received: report of type {type(report).__name__}"
        )
    if not triples:
        raise ValueError("Argument `report` holds no layers. Received: an empty report")
    # A layer with several kernels (a block) gets one bar per kernel, `layer/weight`.
    counts = collections.Counter(name for name, _, _ in triples)
    rows = []
    for name, weight, fraction in triples:
        if not isinstance(name, str) or not _is_number(fraction) or not (
                0.0 <= float(fraction) <= 1.0):
            raise ValueError(
                "Argument `report` must give each layer a name (str) and a sparsity, the "
                f"fraction of zero weights in [0, 1]. Received: name={name!r}, "
                f"sparsity={fraction!r}"
            )
        label = f"{name}/{weight}" if counts[name] > 1 and weight else name
        rows.append((label, float(fraction)))
    return rows


def _overall(report):
    """The overall sparsity a report may hold (`overall_sparsity` or `overall`), or None.
    A plain `{name: fraction}` mapping holds none (its keys are layer names)."""
    for source in (report, _sparsity_source(report)):
        is_mapping = isinstance(source, Mapping)
        if is_mapping and "layers" not in source:
            continue
        for key in ("overall", "overall_sparsity"):
            value = source.get(key) if is_mapping else getattr(source, key, None)
            if _is_number(value) and 0.0 <= value <= 1.0:
                return float(value)
    return None


def plot_sparsity(report, ax=None, save_path=None):
    """Plots the sparsity (fraction of zero weights) of each layer, as horizontal bars.

    Takes the `SparsityReport` of `keras_dnnopt.compression.sparsity_report(model)` or
    any equivalent (duck-typed, see `Args`); an `overall` (or `overall_sparsity`)
    attribute or key, when present, is drawn as a dashed vertical line. A layer with
    several kernels (a block) gets one bar per kernel, labelled `layer/weight`.

    Args:
        report: a `SparsityReport`; a mapping `{layer name: sparsity}`; an object or
            dict whose `layers` are rows with `name` (or `layer`), optionally `weight`,
            and `sparsity` (attributes or keys); an object with a `to_dict()` giving one
            of these; or a list of rows or `(name, sparsity)` pairs. Sparsities are
            fractions in [0, 1].
        ax: a matplotlib `Axes` to draw into, or None for a new figure. Defaults to None.
        save_path: a file to save the figure to (PNG unless the extension says
            otherwise), or None. Defaults to None.

    Returns:
        The matplotlib `Figure`; one bar per layer, its width the layer's sparsity, top
        to bottom in the report's order.

    Raises:
        TypeError: if `report` has none of the accepted forms.
        ValueError: for an empty report, or a row without a str name and a sparsity in
            [0, 1].
        ImportError: if matplotlib is missing (`pip install keras_dnnopt[viz]`).

    Example:

    ```python
    plot_sparsity({"conv1": 0.5, "dense": 0.8}, save_path="sparsity.png")
    ```
    """
    require_matplotlib("plot_sparsity")
    check_save_path(save_path)
    rows = sparsity_rows(report)
    figure, ax = _start("plot_sparsity", save_path, ax,
                        figsize=(6.0, 1.5 + 0.3 * len(rows)))
    names = [name for name, _ in rows]
    fractions = [fraction for _, fraction in rows]
    positions = np.arange(len(rows))
    ax.barh(positions, fractions, color="tab:blue")
    ax.set_yticks(positions, labels=names)
    ax.invert_yaxis()  # the first layer on top
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("sparsity (fraction of zero weights)")
    ax.set_title("Per-layer sparsity")
    overall = _overall(report)
    if overall is not None:
        ax.axvline(overall, color="tab:red", linestyle="--", label=f"overall {overall:.1%}")
        ax.legend(loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    figure.tight_layout()
    save_figure(figure, save_path)
    return figure


# --------------------------------------------------------------------------- LR finder


def plot_lr_finder(finder, ax=None, save_path=None):
    """Plots an `LRFinder`'s curve: loss and smoothed loss against the learning rate.

    Delegates the drawing to `keras_dnnopt.callbacks.LRFinder.plot` (log-scale learning
    rate, raw and smoothed loss, the suggested learning rate as a dashed line), and saves
    the figure atomically.

    Args:
        finder: a `keras_dnnopt.callbacks.LRFinder` whose range test has run.
        ax: a matplotlib `Axes` to draw into, or None for a new figure. Defaults to None.
        save_path: a file to save the figure to (PNG unless the extension says
            otherwise), or None. Defaults to None.

    Returns:
        The matplotlib `Figure`.

    Raises:
        TypeError: if `finder` is not an `LRFinder`.
        ValueError: if the range test has not run (no recorded step).
        ImportError: if matplotlib is missing (`pip install keras_dnnopt[viz]`).

    Example:

    ```python
    finder = LRFinder(1e-5, 1.0, num_steps=100).find(model, x, y)
    plot_lr_finder(finder, save_path="lr_finder.png")
    ```
    """
    from keras_dnnopt.callbacks import LRFinder

    if not isinstance(finder, LRFinder):
        raise TypeError(
            "Argument `finder` must be a `keras_dnnopt.callbacks.LRFinder`. "
            f"Received: finder of type {type(finder).__name__}"
        )
    if not finder.losses:
        raise ValueError(
            "Argument `finder` has recorded no step: run the range test first "
            "(`finder.find(model, x, y)` or `fit(callbacks=[finder])`)."
        )
    figure, ax = _start("plot_lr_finder", save_path, ax)
    finder.plot(ax=ax)
    save_figure(figure, save_path)
    return figure
