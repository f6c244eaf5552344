"""`ReportData`: the content of the report card, checked, computed and formatted.

`ReportData.from_card(card, out_dir)` validates the run's card (a plain JSON-able dict: the
stages with their metrics, the environment, the dataset, the config, the plots and notes),
computes each stage's metrics with their ratios to the baseline (the rows that
`keras_dnnopt.pipeline.report.ratio_rows` returns), the final model's row and the summary,
and formats what the report shows: the stage table's cells (`format_value`), the
one-sentence comparison, the plots in order with their captions and, given the output
folder, each plot as a `data:` URI. `as_dict()` is the content of `metrics.json` and
`to_json()` its text; the templates of `keras_dnnopt.pipeline.report` render `report.md`
and `report.html` from the rest. Nothing here writes a file or escapes text for HTML or
markdown.
"""

import base64
import copy
import dataclasses
import json
import math
import numbers
import os
import urllib.parse
from collections.abc import Mapping

import numpy as np

# The metrics of the stage table, in column order: (key, column title, kind).
METRICS = (
    ("accuracy", "Accuracy", "fraction"),
    ("f1_macro", "Macro F1", "fraction"),
    ("params", "Params", "count"),
    ("macs", "MACs", "count"),
    ("size_bytes", "Size", "bytes"),
    ("size_gzip_bytes", "Size gz", "bytes"),
    ("latency_ms", "Latency (ms)", "ms"),
)
# A regression run's table: its errors in the targets' units take the place of accuracy.
REGRESSION_METRICS = (
    ("rmse", "RMSE", "number"),
    ("mae", "MAE", "number"),
    ("r2", "R²", "number"),
) + METRICS[2:]
HEADERS = tuple(title for _, title, _ in METRICS) + ("Time (s)",)


def metrics_of(task):
    """The stage table's metrics for a card's `task` (classification when absent)."""
    return REGRESSION_METRICS if task == "regression" else METRICS
BASELINE = "baseline"
DEFAULT_TITLE = "dnnopt report"
# The usual plots, in report order, with their captions; any other key follows, captioned
# by its name.
PLOT_CAPTIONS = {
    "training": "Training curves and learning rate, stage after stage",
    "sparsity": "Per-layer sparsity of the pruned model",
    "confusion": "Confusion matrix of the final model (test set)",
    "gradcam": "Grad-CAM heatmaps of test images: baseline and final model",
    "pareto_size": "Search: accuracy against file size, the budget and the chosen model",
    "pareto_latency": "Search: accuracy against latency, the budget and the chosen model",
}
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".svg": "image/svg+xml", ".webp": "image/webp"}
MISSING = "—"


# --------------------------------------------------------------------------- the card


def _plain(value, where):
    """`value` as plain JSON types (dict with str keys, list, str, finite float, int,
    bool, None). NumPy scalars and arrays and paths are converted; a non-finite float
    becomes None (strict JSON has no NaN); anything else raises a `TypeError` naming
    where it sits in the card."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return _plain(value.item(), where)
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), where)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        plain = {}
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise TypeError(
                    f"Argument `card` must be JSON-able: {where} has a key of type "
                    f"{type(key).__name__} ({key!r}); use str keys."
                )
            name = key if isinstance(key, str) else json.dumps(key)
            plain[name] = _plain(item, f"{where}[{key!r}]")
        return plain
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(
        f"Argument `card` must be JSON-able (dicts, lists, str, numbers, bools, None): "
        f"{where} is of type {type(value).__name__}. Received: {where}={value!r}"
    )


def _check_card(card):
    """Validates the card and returns a plain copy of it (`_plain`)."""
    if not isinstance(card, Mapping):
        raise TypeError(
            "Argument `card` must be a dict (title, stages, final, plots, ...). Received: "
            f"card of type {type(card).__name__}"
        )
    card = _plain(card, "card")
    stages = card.get("stages") or []
    if not isinstance(stages, list):
        raise ValueError(
            "Argument `card` must hold `stages`, a list of dicts {'name', 'metrics', ...}. "
            f"Received: card['stages']={stages!r}"
        )
    names = []
    for index, stage in enumerate(stages):
        name = stage.get("name") if isinstance(stage, dict) else None
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"Argument `card` must hold stages that are dicts with a non-empty str "
                f"`name`. Received: card['stages'][{index}]={stage!r}"
            )
        if name in names:
            raise ValueError(
                f"Argument `card` must name each stage once. Received: stage {name!r} twice "
                f"in card['stages']"
            )
        metrics = stage.get("metrics")
        if metrics is not None and not isinstance(metrics, dict):
            raise ValueError(
                f"Argument `card` must hold each stage's `metrics` as a dict or None. "
                f"Received: card['stages'][{index}]['metrics']={metrics!r}"
            )
        names.append(name)
    final = card.get("final")
    if final is not None and final not in names:
        raise ValueError(
            f"Argument `card` must name an existing stage as `final` (or None for the last "
            f"stage): one of {names!r}. Received: card['final']={final!r}"
        )
    plots = card.get("plots") or {}
    if not isinstance(plots, dict) or not all(isinstance(p, str) for p in plots.values()):
        raise ValueError(
            "Argument `card` must hold `plots` as a dict {name: path relative to out_dir}. "
            f"Received: card['plots']={plots!r}"
        )
    for name, path in plots.items():
        parts = path.replace("\\", "/").split("/")
        if os.path.isabs(path) or ".." in parts or not path:
            raise ValueError(
                "Argument `card` must give each plot as a path inside the output folder, "
                f"relative to it (e.g. 'plots/training.png'). Received: "
                f"card['plots'][{name!r}]={path!r}"
            )
    notes = card.get("notes") or []
    if isinstance(notes, str):
        notes = [notes]
    card["notes"] = [str(note) for note in notes]
    card["stages"], card["plots"] = stages, plots
    return card


# --------------------------------------------------------------------------- ratios


def _number(value):
    """A finite float, or None for anything else (missing, None, a bool, NaN, a str)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _ratio(value, reference):
    value, reference = _number(value), _number(reference)
    if value is None or reference is None or value == 0 or reference == 0:
        return None
    return value / reference


def _rows(card):
    """The ratio rows of a checked card (see `keras_dnnopt.pipeline.report.ratio_rows`)."""
    stages = card["stages"]
    baseline = next((stage for stage in stages if stage["name"] == BASELINE), None)
    reference = (baseline or {}).get("metrics") or {}
    rows = []
    for stage in stages:
        metrics = stage.get("metrics") or {}
        row = {
            "name": stage["name"],
            "title": stage.get("title") or stage["name"],
            "summary": stage.get("summary"),
            "seconds": _number(stage.get("seconds")),
            "artifact": stage.get("artifact"),
        }
        standard = [key for key, _, _ in metrics_of(card.get("task"))]
        for key in standard:
            row[key] = _number(metrics.get(key))
        extra = [key for key in metrics if key not in row]
        for key in extra:
            row[key] = metrics[key]
        for key in standard + [k for k in extra if _number(metrics[k]) is not None]:
            row[f"{key}_ratio"] = _ratio(metrics.get(key), reference.get(key))
        rows.append(row)
    return rows


def _summary(baseline, final):
    summary = {"baseline": baseline["name"] if baseline else None,
               "final": final["name"] if final else None,
               "size_ratio": None, "size_gzip_ratio": None, "accuracy_change": None,
               "latency_ratio": None, "rmse_ratio": None}
    if baseline is None or final is None:
        return summary
    summary["size_ratio"] = final["size_bytes_ratio"]
    summary["size_gzip_ratio"] = final["size_gzip_bytes_ratio"]
    summary["latency_ratio"] = final["latency_ms_ratio"]
    if final.get("accuracy") is not None and baseline.get("accuracy") is not None:
        summary["accuracy_change"] = (final["accuracy"] - baseline["accuracy"]) * 100.0
    summary["rmse_ratio"] = final.get("rmse_ratio")
    return summary


# --------------------------------------------------------------------------- formatting


def _format_count(value):
    if abs(value) >= 1e9:
        return f"{value / 1e9:.2f} G"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f} M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.1f} k"
    return f"{value:.0f}"


def _format_bytes(value):
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def format_value(value, kind):
    """A metric for the table: a fraction as a percentage, a count with k/M/G, bytes
    with KiB/MiB, milliseconds with 3 decimals; "—" for a missing value."""
    value = _number(value)
    if value is None:
        return MISSING
    if kind == "fraction":
        return f"{value * 100:.2f}%"
    if kind == "count":
        return _format_count(value)
    if kind == "bytes":
        return _format_bytes(value)
    if kind == "ms":
        return f"{value:.3f}"
    if kind == "seconds":
        return f"{value:.1f}"
    if kind == "number":
        return f"{value:.4g}"
    return f"{value:g}"


def _comparison(row, baseline, key, kind):
    """The part after the value: the change in points for accuracy and F1 (a ratio of
    two accuracies near 1 says little), the ratio otherwise; empty for the baseline."""
    if baseline is None or row["name"] == baseline["name"]:
        return ""
    if kind == "fraction":
        value, reference = _number(row[key]), _number(baseline[key])
        if value is None or reference is None:
            return ""
        change = (value - reference) * 100.0
        return f"({change:+.2f} pt)".replace("-", "−")
    ratio = row.get(f"{key}_ratio")
    return "" if ratio is None else f"({ratio:.2f}x)"


def _sentence(summary, baseline, final):
    """One paragraph: the final model against the baseline."""
    if final is None:
        return "No stage has finished: there is nothing to compare yet."
    if baseline is None:
        return (f"The final model is that of stage “{final['title']}”; no baseline stage "
                "ran, so there is no comparison.")
    if final["name"] == baseline["name"]:
        return "The final model is the baseline itself: no optimization stage has finished."
    parts = []
    if summary["size_ratio"] is not None:
        part = (f"takes {summary['size_ratio']:.2f}x the baseline's file size "
                f"({format_value(final['size_bytes'], 'bytes')} vs "
                f"{format_value(baseline['size_bytes'], 'bytes')}")
        if summary["size_gzip_ratio"] is not None:
            part += f"; {summary['size_gzip_ratio']:.2f}x gzipped"
        parts.append(part + ")")
    if summary["accuracy_change"] is not None:
        change = summary["accuracy_change"]
        direction = "gains" if change > 0 else "loses" if change < 0 else "keeps"
        amount = f" {abs(change):.2f} points of" if change else ""
        parts.append(f"{direction}{amount} accuracy "
                     f"({format_value(final['accuracy'], 'fraction')} vs "
                     f"{format_value(baseline['accuracy'], 'fraction')})")
    if summary.get("rmse_ratio") is not None:
        parts.append(f"has {summary['rmse_ratio']:.2f}x the baseline's test RMSE "
                     f"({format_value(final['rmse'], 'number')} vs "
                     f"{format_value(baseline['rmse'], 'number')})")
    if summary["latency_ratio"] is not None:
        parts.append(f"runs in {summary['latency_ratio']:.2f}x the baseline's LiteRT latency "
                     f"at batch 1 ({format_value(final['latency_ms'], 'ms')} ms vs "
                     f"{format_value(baseline['latency_ms'], 'ms')} ms)")
    subject = f"The final model (stage “{final['title']}”)"
    if not parts:
        return f"{subject} has no metric in common with the baseline to compare."
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + ", and " + parts[-1]
    return f"{subject} {listed}."


def _data_uri(out_dir, relative):
    """The image `relative` (a path inside `out_dir`) as a base64 `data:` URI."""
    path = os.path.join(out_dir, *relative.replace("\\", "/").split("/"))
    extension = os.path.splitext(path)[1].lower()
    mime = IMAGE_TYPES.get(extension)
    if mime is None:
        raise ValueError(
            f"Argument `card` must give plots as images ({', '.join(sorted(IMAGE_TYPES))}). "
            f"Received: plot path {relative!r}"
        )
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"The plot {relative!r} named in card['plots'] does not exist in the output "
            f"folder ({path}): write it first, or leave it out of the card."
        ) from error
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# --------------------------------------------------------------------------- the data


@dataclasses.dataclass(frozen=True)
class Cell:
    """One metric of the stage table: its `value` ("226.8 KiB") and its `comparison`
    with the baseline ("(0.27x)", "(−0.60 pt)", or "" for none)."""

    value: str
    comparison: str

    @property
    def text(self):
        """Value and comparison on one line, as the markdown table shows them."""
        return f"{self.value} {self.comparison}".strip()


@dataclasses.dataclass(frozen=True)
class Row:
    """One stage of the stage table: `name`, `title`, its `cells` (one per header), and
    whether it is the baseline or the final model; `summary` and `artifact` as given."""

    name: str
    title: object
    cells: tuple
    is_baseline: bool
    is_final: bool
    summary: object
    artifact: object

    @property
    def classes(self):
        """The row's CSS classes, space-separated: "baseline", "final", both or ""."""
        return " ".join(name for name, on in (("baseline", self.is_baseline),
                                              ("final", self.is_final)) if on)


@dataclasses.dataclass(frozen=True)
class Plot:
    """One plot: its key `name`, `caption`, `path` relative to the output folder and,
    where the output folder was given, the image as a `data:` URI (else None)."""

    name: str
    caption: str
    path: str
    data_uri: object = None

    @property
    def url(self):
        """`path` as a relative URL (forward slashes, percent-encoded) for markdown."""
        return urllib.parse.quote(self.path.replace("\\", "/"))


def _search(search):
    """The search section with each candidate's cells formatted (`cells`), or None.
    Its candidates' rows are as `pipeline.search` writes them."""
    if not search:
        return None
    if not isinstance(search, dict) or not isinstance(search.get("trials", []), list):
        raise ValueError("Argument `card` must hold `search` as a dict with a `trials` list. "
                         f"Received: card['search']={search!r}")
    rows = []
    trials = search.get("trials", [])
    regression = any(row.get("val_rmse") is not None for row in trials) and not any(
        row.get("val_accuracy") is not None for row in trials)
    scores = (("val_rmse", "rmse", "number", "Val. RMSE", "Test RMSE") if regression else
              ("val_accuracy", "accuracy", "fraction", "Val. accuracy", "Test accuracy"))
    for row in trials:
        rows.append({**row, "cells": [
            row.get("describe") or row.get("key") or MISSING,
            format_value(row.get("fidelity"), "count"),
            format_value(row.get(scores[0]), scores[2]),
            format_value(row.get(scores[1]), scores[2]),
            format_value(row.get("macs"), "count"),
            format_value(row.get("size_bytes"), "bytes"),
            format_value(row.get("latency_ms"), "ms"),
            "chosen" if row.get("key") == search.get("chosen") else (
                row.get("dropped") or "kept")]})
    return {**search, "trials": rows,
            "headers": ["Candidate", "Epochs", scores[3], scores[4], "MACs",
                        "Size", "Latency (ms)", "Outcome"]}


@dataclasses.dataclass(frozen=True)
class ReportData:
    """The report card of a run, ready to render: what `metrics.json` holds and, for the
    templates, the same formatted.

    Build it with `ReportData.from_card(card, out_dir)`. The fields from `title` to `notes`
    are the content of `metrics.json` (`as_dict()`, `to_json()`); the others are derived
    from them for `report.md` and `report.html`.

    Attributes:
        title, created, command: as in the card (None when absent).
        seconds: the run's total time, a float or None.
        environment, dataset, config: dicts as in the card (`{}` when absent).
        stages: the ratio rows, one dict per stage (see
            `keras_dnnopt.pipeline.report.ratio_rows`).
        final: the row of the final model, or None when no stage ran.
        summary: `baseline` and `final` (stage names), `size_ratio`, `size_gzip_ratio`,
            `latency_ratio` and `accuracy_change` (in points), each None when unknown.
        plots: `{name: path relative to the output folder}`.
        notes: a list of str.
        search: the budgeted search (`budget`, `chosen`, `closest`, `binding`, `trials`:
            one row per candidate), or None for a run without one.
        search_table: `search` with each candidate's formatted `cells` and the table's
            `headers`, for the templates (None without a search).
        heading: the title shown, `title` or "dnnopt report".
        total_time: `seconds` formatted ("131.0"), or None.
        sentence: the one-paragraph comparison of the final model with the baseline.
        headers: the metric columns of the stage table (after "Stage").
        rows: the stage table, one `Row` per stage with its formatted `Cell`s.
        figures: the plots in report order, one `Plot` each with its caption.
        config_text: `config` as indented JSON.
    """

    title: object
    created: object
    command: object
    seconds: object
    environment: dict
    dataset: dict
    config: dict
    stages: list
    final: object
    summary: dict
    plots: dict
    notes: list
    search: object
    search_table: object
    heading: str
    total_time: object
    sentence: str
    headers: tuple
    rows: tuple
    figures: tuple
    config_text: str

    # The fields that make `metrics.json`, in its key order.
    JSON_FIELDS = ("title", "created", "command", "seconds", "environment", "dataset",
                   "config", "stages", "final", "summary", "plots", "notes", "search")

    @classmethod
    def from_card(cls, card, out_dir=None):
        """Checks `card` and computes the report from it.

        Args:
            card: the run's card (see `keras_dnnopt.pipeline.report.write_report`).
            out_dir: the output folder the plot paths are relative to; when given, each
                plot is read and held as a `data:` URI (for `report.html`). Defaults to
                None: the plots' data URIs are None.

        Returns:
            A `ReportData`.

        Raises:
            TypeError: if `card` is not a dict or holds a value that is not JSON-able.
            ValueError: for a stage without a name, a repeated name, a `final` naming no
                stage, a plot path that is absolute or leaves `out_dir`, or (with
                `out_dir`) a plot that is no image.
            FileNotFoundError: if `out_dir` is given and a plot is not in it.
        """
        card = _check_card(card)
        stages = _rows(card)
        baseline = next((row for row in stages if row["name"] == BASELINE), None)
        final = None
        if stages:
            name = card.get("final")
            final = stages[-1] if name is None else next(
                row for row in stages if row["name"] == name)
        summary = _summary(baseline, final)
        seconds = _number(card.get("seconds"))
        config = card.get("config") or {}
        rows = []
        metrics = metrics_of(card.get("task"))
        for row in stages:
            cells = [Cell(format_value(row[key], kind), _comparison(row, baseline, key, kind))
                     for key, _, kind in metrics]
            cells.append(Cell(format_value(row["seconds"], "seconds"), ""))
            rows.append(Row(
                name=row["name"], title=row["title"], cells=tuple(cells),
                is_baseline=row["name"] == BASELINE,
                is_final=final is not None and row["name"] == final["name"],
                summary=row["summary"], artifact=row["artifact"]))
        plots = card["plots"]
        ordered = [name for name in PLOT_CAPTIONS if name in plots]
        ordered += [name for name in plots if name not in PLOT_CAPTIONS]
        figures = tuple(
            Plot(name=name,
                 caption=PLOT_CAPTIONS.get(name, name.replace("_", " ").capitalize()),
                 path=plots[name],
                 data_uri=None if out_dir is None else _data_uri(os.fspath(out_dir),
                                                                 plots[name]))
            for name in ordered)
        return cls(
            title=card.get("title"),
            created=card.get("created"),
            command=card.get("command"),
            seconds=seconds,
            environment=card.get("environment") or {},
            dataset=card.get("dataset") or {},
            config=config,
            stages=stages,
            final=final,
            summary=summary,
            plots=plots,
            notes=card["notes"],
            search=card.get("search") or None,
            search_table=_search(card.get("search")),
            heading=card.get("title") or DEFAULT_TITLE,
            total_time=None if seconds is None else format_value(seconds, "seconds"),
            sentence=_sentence(summary, baseline, final),
            headers=tuple(title for _, title, _ in metrics) + ("Time (s)",),
            rows=tuple(rows),
            figures=figures,
            config_text=json.dumps(config, indent=2, ensure_ascii=False, allow_nan=False),
        )

    @property
    def described(self):
        """The rows of the stages that have a `summary` or an `artifact` to list."""
        return tuple(row for row in self.rows if row.summary or row.artifact)

    def as_dict(self):
        """The content of `metrics.json`: plain JSON types, a copy (changing it changes
        nothing here)."""
        return copy.deepcopy({name: getattr(self, name) for name in self.JSON_FIELDS})

    def to_json(self):
        """The text of `metrics.json`: `as_dict()` as strict JSON (no NaN), indented."""
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False,
                          allow_nan=False) + "\n"


__all__ = ["ReportData", "format_value"]
