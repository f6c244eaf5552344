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

The card is checked and computed once, into a `ReportData`
(`keras_dnnopt.pipeline.report_data`): its `to_json()` is `metrics.json`, and the Jinja2
templates `templates/report.md.j2` and `templates/report.html.j2` (package data) render
the two others from it. The HTML template is autoescaped: every text of the card reaches
the page HTML-escaped, only the markup the template itself writes is markup. The markdown
one is not (markdown is no HTML), and escapes the card's texts with the filters `md`,
`md_cell`, `code` and `fence`.

The three are rendered in memory first, then each written to a temporary file in
`out_dir` and moved over its target (`os.replace`): a card that cannot be rendered
leaves an earlier report untouched, and a reader never sees a half-written file.
"""

import functools
import html
import os
import re
import tempfile

import jinja2
import markupsafe

from keras_dnnopt.pipeline.report_data import ReportData, format_value

FILE_NAMES = {"metrics": "metrics.json", "markdown": "report.md", "html": "report.html"}
TEMPLATES = {"markdown": "report.md.j2", "html": "report.html.j2"}

# The browser may fetch nothing: images from data: URIs, inline style and script only.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")


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
    return ReportData.from_card(card).stages


# --------------------------------------------------------------------------- markdown


def _md(text):
    """Text for markdown: HTML special characters as entities (a title holding `<script>`
    shows as text), newlines as spaces."""
    return html.escape(str(text), quote=False).replace("\r", " ").replace("\n", " ")


def _md_cell(text):
    """`_md` for a table cell: a `|` is escaped too."""
    return _md(text).replace("|", "\\|")


def _code(text):
    """An inline code span: literal text (no escaping inside), fenced by enough backticks."""
    text = str(text).replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    return f"{ticks} {text} {ticks}" if longest else f"{ticks}{text}{ticks}"


def _fence(text):
    """The fence of a code block holding `text`: more backticks than any run in it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


# --------------------------------------------------------------------------- HTML


class _Text(str):
    """A text bound for the HTML page, escaped the way `html.escape` does.

    Autoescaping escapes each value through its `__html__` when it has one: so the page
    spells `'` and `"` as `&#x27;` and `&quot;`, as the report always has (MarkupSafe alone
    writes `&#39;` and `&#34;`, equally valid). Without autoescaping the text would go out
    raw: the escaping is the autoescaping's.
    """

    __slots__ = ()

    def __html__(self):
        return html.escape(self, quote=True)


def _html_finalize(value):
    """Every `{{ value }}` of the HTML template: Markup as it is, anything else as text."""
    return value if hasattr(value, "__html__") else _Text(value)


def _code_spans(text):
    """Escaped text whose markdown code spans (`like this`) become `<code>` elements."""
    escaped = html.escape(str(text), quote=True)
    return markupsafe.Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped))


@functools.cache
def _environment(kind):
    """The Jinja2 environment of the `"html"` or the `"markdown"` template."""
    html_kind = kind == "html"
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("keras_dnnopt.pipeline", "templates"),
        autoescape=html_kind,
        finalize=_html_finalize if html_kind else None,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    if html_kind:
        environment.filters["code_spans"] = _code_spans
    else:
        environment.filters.update(md=_md, md_cell=_md_cell, code=_code, fence=_fence)
    return environment


def _render(kind, data, **extra):
    return _environment(kind).get_template(TEMPLATES[kind]).render(data=data, **extra)


def render_markdown(data):
    """`report.md` from a `ReportData`."""
    return _render("markdown", data)


def render_html(data):
    """`report.html` from a `ReportData` built with the output folder (its plots are
    embedded as `data:` URIs)."""
    missing = [plot.path for plot in data.figures if plot.data_uri is None]
    if missing:
        raise ValueError(
            "Argument `data` must hold each plot as a data URI: build it with "
            "`ReportData.from_card(card, out_dir)`. Received: data whose plots "
            f"{missing!r} have no data URI"
        )
    return _render("html", data, csp=CSP)


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
    data = ReportData.from_card(card, out_dir)
    contents = {
        FILE_NAMES["metrics"]: data.to_json(),
        FILE_NAMES["markdown"]: render_markdown(data),
        FILE_NAMES["html"]: render_html(data),
    }
    os.makedirs(out_dir, exist_ok=True)
    _write_all(out_dir, contents)
    return {key: os.path.join(out_dir, name) for key, name in FILE_NAMES.items()}


__all__ = ["ReportData", "format_value", "ratio_rows", "write_report"]
