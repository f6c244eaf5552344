"""The report card's own plots: the training curves of the whole run and a Grad-CAM grid.

`dnnopt optimize` draws four pictures. Two come straight from `keras_dnnopt.visualization`
(`plot_confusion_matrix` for the final model, `plot_sparsity` for the pruned one); the two
here compose several models in one figure, which those single-model plots do not:

- `plot_training_curves`: the loss, accuracy and learning rate of every training stage,
  epochs concatenated stage after stage on a shared x axis, one colour per stage.
- `plot_gradcam_grid`: a few test images, then one row of Grad-CAM overlays per model
  (`keras_dnnopt.visualization.overlay_heatmap`), e.g. the baseline's and the final model's.

Both draw with matplotlib's object-oriented API off-screen (`new_figure`) and save the PNG
atomically (`save_figure`: a temporary file in the same folder, then `os.replace`).
"""

from collections.abc import Mapping

import numpy as np

from keras_dnnopt.utils.figures import (
    check_save_path,
    new_figure,
    require_matplotlib,
    save_figure,
)
from keras_dnnopt.visualization import overlay_heatmap

# The history keys read for each panel, first found wins (Keras 3 logs `accuracy`, tf_keras
# may log `acc`; a Distiller compiled with a named metric logs that name).
LOSS_KEYS = ("loss",)
ACCURACY_KEYS = ("accuracy", "sparse_categorical_accuracy", "categorical_accuracy", "acc")
LEARNING_RATE_KEYS = ("learning_rate", "lr")
RMSE_KEYS = ("rmse", "root_mean_squared_error")  # a regression run's middle panel
MAX_GRID_COLUMNS = 32


def _series(stage, key, values):
    """A history entry as a list of floats (non-finite kept as NaN: a diverged epoch)."""
    try:
        array = np.asarray(values, dtype="float64")
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Argument `histories` must map each stage to `{{name: [value per epoch]}}`. "
            f"Received: histories[{stage!r}][{key!r}]={values!r}"
        ) from error
    if array.ndim > 1:
        raise ValueError(
            f"Argument `histories` must hold one value per epoch (a flat list). Received: "
            f"histories[{stage!r}][{key!r}] of shape {array.shape}"
        )
    return np.atleast_1d(array)


def _first(history, keys, prefix=""):
    for key in keys:
        if prefix + key in history:
            return prefix + key
    return None


def _check_histories(histories):
    if not isinstance(histories, Mapping):
        raise TypeError(
            "Argument `histories` must be a dict `{stage name: {metric: [value per epoch]}}`"
            f" (each a `History.history`). Received: histories of type "
            f"{type(histories).__name__}"
        )
    stages = {}
    for stage, history in histories.items():
        if not isinstance(stage, str):
            raise ValueError(
                f"Argument `histories` must be keyed by stage names (str). Received: key "
                f"{stage!r}"
            )
        history = getattr(history, "history", history)  # a keras.callbacks.History too
        if history is None:
            history = {}
        if not isinstance(history, Mapping):
            raise TypeError(
                f"Argument `histories` must map each stage to a dict of per-epoch lists. "
                f"Received: histories[{stage!r}] of type {type(history).__name__}"
            )
        stages[stage] = {str(k): _series(stage, k, v) for k, v in history.items()}
    epochs = {stage: max((len(v) for v in h.values()), default=0)
              for stage, h in stages.items()}
    if not any(epochs.values()):
        raise ValueError(
            "Argument `histories` holds no epoch: give at least one stage with a non-empty "
            f"history. Received: histories with stages {list(histories)!r}"
        )
    return stages, epochs


def plot_training_curves(histories, save_path=None):
    """Plots the training curves of a multi-stage run: loss, accuracy and learning rate.

    Three panels stacked on a shared x axis: the loss, the accuracy and the learning rate.
    The stages' epochs are concatenated in the order given (the first epoch of a stage
    follows the last of the stage before), so the whole run reads left to right; each
    stage has its own colour, dotted lines mark where a stage starts, training values are
    solid lines and validation values (`val_` keys) dashed. The learning rate is drawn on
    a log scale when it spans more than two decades. A stage without any epoch (one that
    does not train, e.g. post-training quantization) takes no room; a key that a stage
    does not log is simply not drawn.

    Written for the report card: `plot_history` draws one history per figure, this draws
    several stages on common axes.

    Args:
        histories: a dict `{stage name: history}` in run order, each history a
            `keras.callbacks.History` or its `.history` dict `{"loss": [...],
            "val_loss": [...], "accuracy": [...], "val_accuracy": [...],
            "learning_rate": [...]}` (one value per epoch; any key may be missing;
            `acc`/`sparse_categorical_accuracy` and `lr` are read too).
        save_path: a file to save the figure to (PNG unless the extension says
            otherwise), written atomically, or None. Defaults to None.

    Returns:
        The matplotlib `Figure`. Each line's label is `"<stage>"` (training) or
        `"<stage> (val)"`, its x data the run-wide epoch numbers (from 1).

    Raises:
        TypeError: if `histories` (or one of its values) is not a dict.
        ValueError: if no stage holds an epoch, or a value is not a flat list of numbers.
        ImportError: if matplotlib is missing (`pip install keras_dnnopt[viz]`).

    Example:

    ```python
    teacher_history = teacher.fit(x, y, validation_split=0.1, epochs=5)
    student_history = distiller.fit(x, y, validation_split=0.1, epochs=5)
    plot_training_curves({"baseline": teacher_history, "distillation": student_history},
                         save_path="plots/training.png")
    ```
    """
    require_matplotlib("plot_training_curves")
    check_save_path(save_path)
    stages, epochs = _check_histories(histories)
    figure, axes = new_figure("plot_training_curves", figsize=(8.0, 8.5), nrows=3, ncols=1)
    for ax in axes[1:]:
        ax.sharex(axes[0])
    regression = not any(_first(h, ACCURACY_KEYS) for h in stages.values()) and any(
        _first(h, RMSE_KEYS) for h in stages.values())
    panels = (("loss", LOSS_KEYS),
              ("RMSE", RMSE_KEYS) if regression else ("accuracy", ACCURACY_KEYS),
              ("learning rate", LEARNING_RATE_KEYS))
    colours = [f"C{i % 10}" for i in range(len(stages))]
    offset, drawn = 0, [False, False, False]
    starts = []
    for colour, (stage, history) in zip(colours, stages.items(), strict=True):
        if not epochs[stage]:
            continue
        starts.append((offset, stage))
        for index, (ax, (_, keys)) in enumerate(zip(axes, panels, strict=True)):
            prefixes = ("",) if index == 2 else ("", "val_")
            for prefix in prefixes:
                key = _first(history, keys, prefix)
                if key is None:
                    continue
                values = history[key]
                x = offset + np.arange(1, len(values) + 1)
                label = stage if prefix == "" else f"{stage} (val)"
                ax.plot(x, values, color=colour, linestyle="-" if prefix == "" else "--",
                        marker="o", markersize=2.5, label=label)
                drawn[index] = True
        offset += epochs[stage]
    for ax, (title, _), has_data in zip(axes, panels, drawn, strict=True):
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        for start, _stage in starts[1:]:
            ax.axvline(start + 0.5, color="0.5", linestyle=":", linewidth=1.0)
        if not has_data:
            ax.text(0.5, 0.5, f"no {title} logged", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
    learning_rates = [v for stage, history in stages.items()
                      if (key := _first(history, LEARNING_RATE_KEYS)) is not None
                      for v in history[key]]
    positive = [v for v in learning_rates if np.isfinite(v) and v > 0]
    if positive and len(positive) == len(learning_rates) and max(positive) / min(positive) > 100:
        axes[2].set_yscale("log")
    if drawn[0] or drawn[1]:
        # One legend, on the panel with the most lines: stage colours, solid/dashed styles.
        legend_ax = max(axes[:2], key=lambda ax: len(ax.get_lines()))
        legend_ax.legend(fontsize="small", ncols=min(3, max(1, len(starts))))
    axes[2].set_xlabel("epoch (whole run, stage after stage)")
    axes[0].set_xlim(0.5, offset + 0.5)
    figure.tight_layout()
    save_figure(figure, save_path)
    return figure


# --------------------------------------------------------------------------- Grad-CAM grid


def _check_images(images):
    try:
        array = np.asarray(images, dtype="float32")
    except (TypeError, ValueError) as error:
        raise ValueError(
            "Argument `images` must be an array of images (n, height, width, channels). "
            f"Received: images of type {type(images).__name__}"
        ) from error
    if array.ndim == 3:
        array = array[..., None]  # (n, h, w) grayscale
    if array.ndim != 4 or array.shape[-1] not in (1, 3) or array.shape[0] == 0:
        raise ValueError(
            "Argument `images` must be a non-empty batch (n, height, width, 1 or 3), or "
            f"(n, height, width) grayscale. Received: images.shape={np.shape(images)}"
        )
    if array.shape[0] > MAX_GRID_COLUMNS:
        raise ValueError(
            f"Argument `images` must hold at most {MAX_GRID_COLUMNS} images (one column "
            f"each); pick a few. Received: images.shape={array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("Argument `images` must hold finite numbers (no NaN or inf).")
    return array


def _check_rows(rows, count):
    if not isinstance(rows, Mapping) or not rows:
        raise ValueError(
            "Argument `rows` must be a non-empty dict `{row title: heatmaps (n, height, "
            f"width) in [0, 1]}}`, e.g. {{'Baseline': maps, 'Final': maps}}. Received: "
            f"rows={rows!r}"
        )
    checked = {}
    for title, heatmaps in rows.items():
        if not isinstance(title, str):
            raise ValueError(f"Argument `rows` must be keyed by titles (str). Received: {title!r}")
        array = np.asarray(heatmaps, dtype="float32")
        if array.ndim == 4 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim != 3 or array.shape[0] != count:
            raise ValueError(
                f"Argument `rows` must hold one heatmap per image: shape ({count}, height, "
                f"width). Received: rows[{title!r}].shape={np.shape(heatmaps)}"
            )
        if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0:
            raise ValueError(
                f"Argument `rows` must hold heatmaps with values in [0, 1] (as `grad_cam` "
                f"gives). Received: rows[{title!r}] with values in "
                f"[{np.nanmin(array)}, {np.nanmax(array)}]"
            )
        checked[title] = array
    return checked


def _check_labels(labels, count):
    if labels is None:
        return None
    labels = list(labels)
    if len(labels) != count:
        raise ValueError(
            f"Argument `labels` must hold one label per image ({count}). Received: "
            f"{len(labels)} labels"
        )
    return [str(v.item() if isinstance(v, np.generic) else v) for v in labels]


def _unit(image):
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def plot_gradcam_grid(images, rows, save_path=None, labels=None, alpha=0.45):
    """Plots a grid of images and, under them, one row of Grad-CAM overlays per model.

    The first row shows the images (each rescaled to [0, 1] by its own range; grayscale
    in gray), then each entry of `rows` adds a row of `overlay_heatmap(image, heatmap)`,
    titled with its key on the left. One column per image.

    Args:
        images: the images, `(n, height, width, channels)` with 1 or 3 channels (or
            `(n, height, width)`), any range; at most 32.
        rows: an ordered dict `{title: heatmaps}`, each `(n, h, w)` with values in [0, 1]
            (e.g. `grad_cam(model, images)`), resized to the images when their size
            differs. E.g. `{"Baseline": teacher_maps, "Final": final_maps}`.
        save_path: a file to save the figure to (PNG unless the extension says
            otherwise), written atomically, or None. Defaults to None.
        labels: one label per image shown above it (e.g. the true classes), or None.
            Defaults to None.
        alpha: the weight of the heatmap in each overlay, in [0, 1]. Defaults to 0.45.

    Returns:
        The matplotlib `Figure`, with `1 + len(rows)` rows of `n` axes, each holding one
        image (`axes[r * n + c].get_images()[0]`).

    Raises:
        ValueError: for images or heatmaps of the wrong shape, heatmap values outside
            [0, 1], a label count not matching the images, or `alpha` outside [0, 1].
        ImportError: if matplotlib is missing (`pip install keras_dnnopt[viz]`).

    Example:

    ```python
    maps = {"Baseline": grad_cam(teacher, x[:6]), "Final": grad_cam(student, x[:6])}
    plot_gradcam_grid(x[:6], maps, labels=y[:6], save_path="plots/gradcam.png")
    ```
    """
    require_matplotlib("plot_gradcam_grid")
    check_save_path(save_path)
    array = _check_images(images)
    count = array.shape[0]
    heatmaps = _check_rows(rows, count)
    labels = _check_labels(labels, count)
    nrows = 1 + len(heatmaps)
    side = 1.6 if count > 4 else 2.0
    figure, axes = new_figure("plot_gradcam_grid",
                              figsize=(0.6 + side * count, 0.3 + side * nrows),
                              nrows=nrows, ncols=count)
    for column in range(count):
        ax = axes[column]
        image = _unit(array[column])
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(image, interpolation="nearest")
        if labels is not None:
            ax.set_title(f"label {labels[column]}", fontsize="small")
    for row, (title, maps) in enumerate(heatmaps.items(), start=1):
        for column in range(count):
            picture = overlay_heatmap(array[column], maps[column], alpha=alpha)
            axes[row * count + column].imshow(picture, interpolation="nearest")
        axes[row * count].set_ylabel(title, fontsize="medium")
    axes[0].set_ylabel("image", fontsize="medium")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle("Grad-CAM", fontsize="medium")
    figure.tight_layout()
    save_figure(figure, save_path)
    return figure


__all__ = ["plot_training_curves", "plot_gradcam_grid"]


# --------------------------------------------------------------------------- Pareto front

PARETO_MEASURES = {"size_bytes": ("file size (KiB)", 1 / 1024, "max_size"),
                   "latency_ms": ("LiteRT latency at batch 1 (ms)", 1.0, "max_latency_ms")}


def pareto_front(points):
    """The indices of the points `(cost, accuracy)` that no other point beats on both
    (lower or equal cost and higher or equal accuracy, one strictly), by rising cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for index in order:
        if points[index][1] > best:
            front.append(index)
            best = points[index][1]
    return front


def plot_pareto(trials, measure, budget=None, chosen=None, save_path=None):
    """Plots the accuracy (regression: the RMSE) of a search's candidates against their
    file size or latency.

    Every trained candidate is a point (its validation accuracy at the fidelity it reached,
    larger markers for more epochs); the Pareto front of the full-fidelity candidates is
    a step line, the budget's limits are drawn as lines (a vertical one for the size or
    latency limit, a horizontal one for the accuracy floor) and the chosen model is a star.

    Args:
        trials: the search's candidate rows (dicts with `val_accuracy`, `size_bytes`,
            `latency_ms`, `fidelity`, `key`).
        measure: `"size_bytes"` or `"latency_ms"`, the x axis.
        budget: a `keras_dnnopt.pipeline.Budget` whose limits are drawn, or None.
        chosen: the chosen candidate's key, or None.
        save_path: a file to save the figure to, written atomically, or None.

    Returns:
        The matplotlib `Figure`, or None when no candidate was trained (nothing to draw).

    Raises:
        ValueError: for a `measure` other than the two above.
    """
    if measure not in PARETO_MEASURES:
        raise ValueError(f"Argument `measure` must be one of {', '.join(PARETO_MEASURES)}. "
                         f"Received: measure={measure!r}")
    require_matplotlib("plot_pareto")
    check_save_path(save_path)
    label, scale, limit_name = PARETO_MEASURES[measure]
    # A regression search scores its candidates by RMSE, lower is better.
    score = "val_accuracy" if any(row.get("val_accuracy") is not None for row in trials) \
        else "val_rmse"
    sign = 1.0 if score == "val_accuracy" else -1.0
    points = [row for row in trials
              if row.get(score) is not None and row.get(measure) is not None]
    if not points:
        return None
    figure, axes = new_figure("plot_pareto", figsize=(6.5, 4.5))
    ax = axes[0]
    full = max(row["fidelity"] for row in points)
    for fidelity in sorted({row["fidelity"] for row in points}):
        group = [row for row in points if row["fidelity"] == fidelity]
        ax.scatter([row[measure] * scale for row in group],
                   [row[score] for row in group],
                   s=14 + 40 * fidelity / full, alpha=0.75,
                   label=f"{fidelity} epochs")
    finals = [row for row in points if row["fidelity"] == full]
    front = pareto_front([(row[measure], sign * row[score]) for row in finals])
    if front:
        ax.step([finals[i][measure] * scale for i in front],
                [finals[i][score] for i in front], where="post", color="0.3",
                linewidth=1.0, label="Pareto front (full training)")
    limits = budget.to_dict() if budget is not None else {}
    if limits.get(limit_name) is not None:
        ax.axvline(limits[limit_name] * scale, color="C3", linestyle="--", label="budget")
    if limits.get("min_accuracy") is not None:
        ax.axhline(limits["min_accuracy"], color="C3", linestyle=":", label="accuracy floor")
    if limits.get("max_rmse") is not None:
        ax.axhline(limits["max_rmse"], color="C3", linestyle=":", label="RMSE limit")
    picked = [row for row in points if row["key"] == chosen and row["fidelity"] == full]
    if picked:
        ax.scatter([picked[0][measure] * scale], [picked[0][score]], marker="*",
                   s=220, color="gold", edgecolors="black", zorder=5, label="chosen")
    ax.set_xlabel(label)
    ax.set_ylabel(f"validation {'accuracy' if sign > 0 else 'RMSE'} of the exported file")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    figure.tight_layout()
    save_figure(figure, save_path)
    return figure
