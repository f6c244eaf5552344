"""The report card of `dnnopt optimize`: `metrics.json`, `report.md` and `report.html`.

`write_report(out_dir, card)` turns the run's card (a plain JSON-able dict: the stages
with their metrics, the environment, the dataset, the config, the plots and notes) into
three files in `out_dir`:

- `metrics.json`: the machine-readable card, each stage's metrics with their ratios to
  the baseline (`ratio_rows`), the final model's row and a summary.
- `report.md`: the card for a repository or a terminal; plots are linked by path.
- `report.html`: the same, self-contained: CSS inline, each plot embedded as a
  `data:` URI, no external font, script or link, and a Content-Security-Policy that
  forbids the browser any network fetch, so it opens the same offline, mailed or archived.

The three are rendered in memory first, then each written to a temporary file in
`out_dir` and moved over its target (`os.replace`): a card that cannot be rendered
leaves an earlier report untouched, and a reader never sees a half-written file.
"""

import base64
import html
import json
import math
import numbers
import os
import re
import tempfile
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
BASELINE = "baseline"
FILE_NAMES = {"metrics": "metrics.json", "markdown": "report.md", "html": "report.html"}
# The usual plots, in report order, with their captions; any other key follows, captioned
# by its name.
PLOT_CAPTIONS = {
    "training": "Training curves and learning rate, stage after stage",
    "sparsity": "Per-layer sparsity of the pruned model",
    "confusion": "Confusion matrix of the final model (test set)",
    "gradcam": "Grad-CAM heatmaps of test images: baseline and final model",
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


def _baseline_stage(stages):
    return next((stage for stage in stages if stage["name"] == BASELINE), None)


def _rows(card):
    stages = card["stages"]
    baseline = _baseline_stage(stages)
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
        standard = [key for key, _, _ in METRICS]
        for key in standard:
            row[key] = _number(metrics.get(key))
        extra = [key for key in metrics if key not in row]
        for key in extra:
            row[key] = metrics[key]
        for key in standard + [k for k in extra if _number(metrics[k]) is not None]:
            row[f"{key}_ratio"] = _ratio(metrics.get(key), reference.get(key))
        rows.append(row)
    return rows


def ratio_rows(card):
    """The card's stages as table rows, each metric with its ratio to the baseline.

    Each row holds the stage's `name`, `title`, `summary`, `seconds`, `artifact`, its
    metrics (`accuracy`, `f1_macro`, `params`, `macs`, `size_bytes`, `size_gzip_bytes`,
    `latency_ms` always present, None when missing or not a finite number; any other
    metric as given) and, for each standard or numeric metric, `<metric>_ratio`: the value
    divided by the baseline stage's value (the stage named `"baseline"`), None when
    either is missing or zero (or there is no baseline).

    Args:
        card: the run's card, a dict with `stages`: a list of `{"name": str, "metrics":
            {...}, ...}` in run order (see `write_report`).

    Returns:
        A list of dicts, one per stage, in the card's order.

    Raises:
        TypeError: if `card` is not a dict, or holds a value that is not JSON-able.
        ValueError: if a stage has no str `name`, a name repeats, or `final` names no
            stage.

    Example:

    ```python
    card = {"stages": [
        {"name": "baseline", "metrics": {"size_bytes": 800_000, "accuracy": 0.97}},
        {"name": "export", "metrics": {"size_bytes": 200_000, "accuracy": 0.96}}]}
    ratio_rows(card)[1]["size_bytes_ratio"]  # 0.25
    ```
    """
    return _rows(_check_card(card))


def _final_row(card, rows):
    if not rows:
        return None
    name = card.get("final")
    if name is None:
        return rows[-1]
    return next(row for row in rows if row["name"] == name)


def _summary(rows, final):
    baseline = next((row for row in rows if row["name"] == BASELINE), None)
    summary = {"baseline": baseline["name"] if baseline else None,
               "final": final["name"] if final else None,
               "size_ratio": None, "size_gzip_ratio": None, "accuracy_change": None,
               "latency_ratio": None}
    if baseline is None or final is None:
        return summary
    summary["size_ratio"] = final["size_bytes_ratio"]
    summary["size_gzip_ratio"] = final["size_gzip_bytes_ratio"]
    summary["latency_ratio"] = final["latency_ms_ratio"]
    if final["accuracy"] is not None and baseline["accuracy"] is not None:
        summary["accuracy_change"] = (final["accuracy"] - baseline["accuracy"]) * 100.0
    return summary


def _metrics(card):
    """The content of `metrics.json` for a checked card."""
    rows = _rows(card)
    final = _final_row(card, rows)
    return {
        "title": card.get("title"),
        "created": card.get("created"),
        "command": card.get("command"),
        "seconds": _number(card.get("seconds")),
        "environment": card.get("environment") or {},
        "dataset": card.get("dataset") or {},
        "config": card.get("config") or {},
        "stages": rows,
        "final": final,
        "summary": _summary(rows, final),
        "plots": card["plots"],
        "notes": card["notes"],
    }


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
    return f"{value:g}"


def _comparison(row, baseline, key, kind):
    """The part after the value: the change in points for accuracy and F1 (a ratio of
    two accuracies near 1 says little), the ratio otherwise; empty for the baseline."""
    if baseline is None or row is baseline:
        return ""
    if kind == "fraction":
        value, reference = _number(row[key]), _number(baseline[key])
        if value is None or reference is None:
            return ""
        change = (value - reference) * 100.0
        return f"({change:+.2f} pt)".replace("-", "−")
    ratio = row.get(f"{key}_ratio")
    return "" if ratio is None else f"({ratio:.2f}x)"


def _cells(rows):
    """Per row: the stage title and, per metric, `(value, comparison)` strings."""
    baseline = next((row for row in rows if row["name"] == BASELINE), None)
    table = []
    for row in rows:
        cells = [(format_value(row[key], kind), _comparison(row, baseline, key, kind))
                 for key, _, kind in METRICS]
        cells.append((format_value(row["seconds"], "seconds"), ""))
        table.append((row, cells))
    return table


HEADERS = [title for _, title, _ in METRICS] + ["Time (s)"]


def _sentence(metrics):
    """One paragraph: the final model against the baseline."""
    summary, rows = metrics["summary"], metrics["stages"]
    final = metrics["final"]
    baseline = next((row for row in rows if row["name"] == BASELINE), None)
    if final is None:
        return "No stage has finished: there is nothing to compare yet."
    if baseline is None:
        return (f"The final model is that of stage “{final['title']}”; no baseline stage "
                "ran, so there is no comparison.")
    if final is baseline:
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
    if summary["latency_ratio"] is not None:
        parts.append(f"runs in {summary['latency_ratio']:.2f}x the baseline's LiteRT latency "
                     f"at batch 1 ({format_value(final['latency_ms'], 'ms')} ms vs "
                     f"{format_value(baseline['latency_ms'], 'ms')} ms)")
    subject = f"The final model (stage “{final['title']}”)"
    if not parts:
        return f"{subject} has no metric in common with the baseline to compare."
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + ", and " + parts[-1]
    return f"{subject} {listed}."


def _ordered_plots(plots):
    known = [name for name in PLOT_CAPTIONS if name in plots]
    return known + [name for name in plots if name not in PLOT_CAPTIONS]


def _caption(name):
    return PLOT_CAPTIONS.get(name, name.replace("_", " ").capitalize())


def _config_text(config):
    return json.dumps(config, indent=2, ensure_ascii=False, allow_nan=False)


# --------------------------------------------------------------------------- markdown


def _md(text):
    """Text for markdown: HTML special characters as entities (a title holding `<script>`
    shows as text), newlines as spaces."""
    return html.escape(str(text), quote=False).replace("\r", " ").replace("\n", " ")


def _md_cell(text):
    return _md(text).replace("|", "\\|")


def _md_items(mapping):
    return [f"- **{_md(key)}**: {_md(value)}" for key, value in mapping.items()]


def _code(text):
    """An inline code span: literal text (no escaping inside), fenced by enough backticks."""
    text = str(text).replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    return f"{ticks} {text} {ticks}" if longest else f"{ticks}{text}{ticks}"


def _fence(text):
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(metrics):
    """`report.md` from the content of `metrics.json`."""
    lines = [f"# {_md(metrics['title'] or 'dnnopt report')}", ""]
    if metrics["created"]:
        lines.append(f"Created {_md(metrics['created'])}.")
    if metrics["seconds"] is not None:
        lines.append(f"Total time {format_value(metrics['seconds'], 'seconds')} s.")
    if metrics["command"]:
        lines += ["", f"Command: {_code(metrics['command'])}"]
    lines += ["", "## Summary", "", _md(_sentence(metrics)), ""]
    lines += ["## Stages", "", "| Stage | " + " | ".join(HEADERS) + " |",
              "|:--|" + "--:|" * len(HEADERS)]
    for row, cells in _cells(metrics["stages"]):
        texts = [f"{value} {comparison}".strip() for value, comparison in cells]
        lines.append(f"| {_md_cell(row['title'])} | " + " | ".join(texts) + " |")
    lines += ["", "Ratios are to the baseline; accuracy and macro F1 show the change in "
              "percentage points (pt). Size is the model file, raw and gzipped; latency is "
              "LiteRT at batch 1.", ""]
    described = [row for row in metrics["stages"] if row["summary"] or row["artifact"]]
    for row in described:
        text = f"- **{_md(row['title'])}**"
        if row["summary"]:
            text += f": {_md(row['summary'])}"
        if row["artifact"]:
            text += f" ({_code(row['artifact'])})"
        lines.append(text)
    if described:
        lines.append("")
    if metrics["environment"]:
        lines += ["## Environment", "", *_md_items(metrics["environment"]), ""]
    if metrics["dataset"]:
        lines += ["## Dataset", "", *_md_items(metrics["dataset"]), ""]
    if metrics["plots"]:
        lines += ["## Plots", ""]
        for name in _ordered_plots(metrics["plots"]):
            path = urllib.parse.quote(metrics["plots"][name].replace("\\", "/"))
            lines += [f"### {_md(_caption(name))}", "", f"![{_md(_caption(name))}]({path})", ""]
    if metrics["notes"]:
        lines += ["## Notes", "", *[f"- {_md(note)}" for note in metrics["notes"]], ""]
    config = _config_text(metrics["config"])
    fence = _fence(config)
    lines += ["## Configuration", "", f"{fence}json", config, fence, ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 72rem; padding: 0 1rem; color: #1d1f21; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
h3 { font-size: 1rem; }
.meta { color: #555; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
            font-size: 0.9em; }
pre { background: #f6f8fa; padding: 0.8rem; overflow-x: auto; border-radius: 4px; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { padding: 0.35rem 0.6rem; border-bottom: 1px solid #e3e3e3; text-align: right;
         white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f4f6; }
tr.baseline td { background: #fafafa; }
tr.final td { font-weight: 600; }
.cmp { display: block; color: #666; font-size: 0.8em; }
.table-wrap { overflow-x: auto; }
.summary { background: #eef6ee; border-left: 4px solid #4a9a4a; padding: 0.6rem 0.9rem; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dt { font-weight: 600; }
dd { margin: 0; }
"""

# Marks the body once every image has loaded, so a headless browser (the tests) can tell
# that the embedded images decoded. Inline, so the page stays self-contained.
SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; });
  document.body.setAttribute("data-images-loaded", String(loaded.length));
});
"""

# The browser may fetch nothing: images from data: URIs, inline style and script only.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")


def _e(text):
    return html.escape(str(text), quote=True)


def _e_code(text):
    """Escaped text whose markdown code spans (`like this`) become `<code>` elements."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text))


def _html_items(mapping):
    items = "".join(f"<dt>{_e(key)}</dt><dd>{_e(value)}</dd>" for key, value in mapping.items())
    return f"<dl>{items}</dl>"


def _data_uri(out_dir, relative):
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


def render_html(metrics, out_dir):
    """`report.html` from the content of `metrics.json`, with the plots (read from
    `out_dir`) embedded as `data:` URIs."""
    title = metrics["title"] or "dnnopt report"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{CSS}</style>",
        f"<script>{SCRIPT}</script>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
    ]
    meta = []
    if metrics["created"]:
        meta.append(f"Created {_e(metrics['created'])}")
    if metrics["seconds"] is not None:
        meta.append(f"total time {_e(format_value(metrics['seconds'], 'seconds'))} s")
    if metrics["command"]:
        meta.append(f"command <code>{_e(metrics['command'])}</code>")
    if meta:
        parts.append(f'<p class="meta">{" · ".join(meta)}</p>')
    parts += ["<h2>Summary</h2>", f'<p class="summary" id="summary">{_e(_sentence(metrics))}</p>',
              "<h2>Stages</h2>", '<div class="table-wrap">', '<table id="stages">',
              "<thead><tr><th>Stage</th>"]
    parts.append("".join(f"<th>{_e(header)}</th>" for header in HEADERS) + "</tr></thead>")
    parts.append("<tbody>")
    final_name = metrics["final"]["name"] if metrics["final"] else None
    for row, cells in _cells(metrics["stages"]):
        classes = [c for c, on in (("baseline", row["name"] == BASELINE),
                                   ("final", row["name"] == final_name)) if on]
        attributes = f' data-stage="{_e(row["name"])}"'
        if classes:
            attributes += f' class="{" ".join(classes)}"'
        tds = "".join(
            f"<td>{_e(value)}" + (f'<span class="cmp">{_e(cmp)}</span>' if cmp else "") + "</td>"
            for value, cmp in cells)
        parts.append(f"<tr{attributes}><td>{_e(row['title'])}</td>{tds}</tr>")
    parts += ["</tbody>", "</table>", "</div>",
              '<p class="meta">Ratios are to the baseline; accuracy and macro F1 show the '
              "change in percentage points (pt). Size is the model file, raw and gzipped; "
              "latency is LiteRT at batch 1.</p>"]
    described = [row for row in metrics["stages"] if row["summary"] or row["artifact"]]
    if described:
        parts.append("<ul>")
        for row in described:
            item = f"<li><strong>{_e(row['title'])}</strong>"
            if row["summary"]:
                item += f": {_e(row['summary'])}"
            if row["artifact"]:
                item += f" (<code>{_e(row['artifact'])}</code>)"
            parts.append(item + "</li>")
        parts.append("</ul>")
    if metrics["environment"]:
        parts += ["<h2>Environment</h2>", _html_items(metrics["environment"])]
    if metrics["dataset"]:
        parts += ["<h2>Dataset</h2>", _html_items(metrics["dataset"])]
    if metrics["plots"]:
        parts.append("<h2>Plots</h2>")
        for name in _ordered_plots(metrics["plots"]):
            caption = _caption(name)
            source = _data_uri(out_dir, metrics["plots"][name])
            parts.append(
                f'<figure id="plot-{_e(name)}"><img src="{source}" alt="{_e(caption)}">'
                f"<figcaption>{_e(caption)}</figcaption></figure>")
    if metrics["notes"]:
        parts += ["<h2>Notes</h2>", "<ul>"]
        parts += [f"<li>{_e_code(note)}</li>" for note in metrics["notes"]]
        parts.append("</ul>")
    parts += ["<h2>Configuration</h2>",
              f"<pre><code>{_e(_config_text(metrics['config']))}</code></pre>",
              "</body>", "</html>", ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------- writing


def _write_all(out_dir, contents):
    """Writes `{file name: text}` into `out_dir`: every text to a temporary file first,
    then each moved over its target (`os.replace`, atomic on one file system); on any
    failure the temporary files are removed."""
    temporaries = {}
    try:
        for name, text in contents.items():
            handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir)
            temporaries[name] = temporary
            with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
                stream.write(text)
            # mkstemp makes the file private (0600); a report is for reading: keep the
            # mode of the file it replaces, else rw-r--r--.
            target = os.path.join(out_dir, name)
            mode = os.stat(target).st_mode & 0o777 if os.path.exists(target) else 0o644
            os.chmod(temporary, mode)
        for name in list(temporaries):
            os.replace(temporaries[name], os.path.join(out_dir, name))
            del temporaries[name]
    finally:
        for temporary in temporaries.values():
            if os.path.exists(temporary):
                os.remove(temporary)


def write_report(out_dir, card):
    """Writes the report card of a run: `metrics.json`, `report.md` and `report.html`.

    The stage table has one row per stage with its accuracy, macro F1, parameters, MACs,
    file size raw and gzipped and LiteRT latency at batch 1, each beside its ratio to the
    baseline (for accuracy and F1, the change in points); a one-sentence summary compares
    the final model with the baseline; then the environment, the dataset, the plots, the
    notes and the resolved config. `report.html` is self-contained (inline CSS, plots as
    base64 `data:` URIs, no network fetch allowed by its Content-Security-Policy) and all
    its text is HTML-escaped.

    All three are rendered before any is written, then written atomically (a temporary
    file in `out_dir`, then `os.replace`): a card that fails to render leaves an earlier
    report as it was, with no temporary file behind.

    Args:
        out_dir: the run's output folder (created if missing); plot paths are relative
            to it.
        card: a JSON-able dict (NumPy numbers and paths are converted; a NaN becomes
            null):
            - `title`, `created`, `command`: str.
            - `environment`, `dataset`: flat dicts shown as lists; `config`: the resolved
              run config (nested dict), shown as JSON.
            - `stages`: the finished stages in run order, each `{"name", "title",
              "summary", "seconds", "artifact", "metrics": {"accuracy", "f1_macro",
              "params", "macs", "size_bytes", "size_gzip_bytes", "latency_ms"}}`; any
              metric may be missing or None (shown "—"). The stage named `"baseline"`
              is the reference of the ratios.
            - `final`: the name of the stage holding the final model, or None for the
              last stage.
            - `plots`: `{"training", "sparsity", "confusion", "gradcam", ...: path}`,
              image files relative to `out_dir`; any may be absent.
            - `notes`: a list of str.

    Returns:
        A dict `{"metrics": path, "markdown": path, "html": path}`.

    Raises:
        TypeError: if `card` is not a dict or holds a value that is not JSON-able (the
            message says where).
        ValueError: for a stage without a name, a repeated name, a `final` naming no
            stage, or a plot path that is absolute, leaves `out_dir` or is no image.
        FileNotFoundError: if a plot named in the card is not in `out_dir`.

    Example:

    ```python
    card = {"title": "dnnopt optimize: digits", "final": "export", "stages": [
        {"name": "baseline", "metrics": {"accuracy": 0.975, "size_bytes": 860_000}},
        {"name": "export", "metrics": {"accuracy": 0.969, "size_bytes": 232_000}}]}
    paths = write_report("runs/demo", card)  # runs/demo/report.html, ...
    ```
    """
    if not isinstance(out_dir, (str, os.PathLike)) or not os.fspath(out_dir):
        raise ValueError(
            f"Argument `out_dir` must be a folder path (str or os.PathLike). Received: "
            f"out_dir={out_dir!r}"
        )
    out_dir = os.fspath(out_dir)
    metrics = _metrics(_check_card(card))
    contents = {
        FILE_NAMES["metrics"]: json.dumps(metrics, indent=2, ensure_ascii=False,
                                          allow_nan=False) + "\n",
        FILE_NAMES["markdown"]: render_markdown(metrics),
        FILE_NAMES["html"]: render_html(metrics, out_dir),
    }
    os.makedirs(out_dir, exist_ok=True)
    _write_all(out_dir, contents)
    return {key: os.path.join(out_dir, name) for key, name in FILE_NAMES.items()}


__all__ = ["write_report", "ratio_rows"]
