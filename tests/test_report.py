"""Tests of the report card of `dnnopt optimize` (keras_dnnopt.pipeline.report and .plots).

The card is synthetic, its plots real PNGs drawn by the plot helpers from small arrays.
The ratios and the summary are checked against hand-computed values, the markdown table
and the HTML against independent parsers (row counts, each image's bytes decoded back from
its data URI), the atomic writing by making a write fail, and the HTML's self-containment
by rendering it alone (its folder without the plots) in headless Chromium with the
network features off: the page reports how many images decoded, and a screenshot shows
something drawn.
"""

import base64
import configparser
import fnmatch
import importlib.resources
import json
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from keras_dnnopt.pipeline import report as report_module
from keras_dnnopt.pipeline.plots import plot_gradcam_grid, plot_training_curves
from keras_dnnopt.pipeline.report import ratio_rows, write_report
from keras_dnnopt.pipeline.report_data import ReportData

matplotlib = pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = "/usr/bin/chromium"
SCRIPT_TITLE = "Student <script>alert('x')</script> & co"

BASELINE = {"accuracy": 0.975, "f1_macro": 0.974, "params": 215000, "macs": 1200000,
            "size_bytes": 860000, "size_gzip_bytes": 790000, "latency_ms": 0.21}
FINAL = {"accuracy": 0.969, "f1_macro": 0.968, "params": 54000, "macs": 300000,
         "size_bytes": 232200, "size_gzip_bytes": 197500, "latency_ms": 0.0945}

HISTORIES = {
    "baseline": {"loss": [2.0, 1.2, 0.8], "val_loss": [2.1, 1.3, 0.9],
                 "accuracy": [0.4, 0.7, 0.9], "val_accuracy": [0.35, 0.65, 0.85],
                 "learning_rate": [0.1, 0.01, 0.0005]},
    "quantization": {},  # trains no epoch: takes no room on the x axis
    "distillation": {"loss": [0.9, 0.6], "acc": [0.8, 0.9], "learning_rate": [0.01, 0.005]},
}


def make_plots(folder):
    """Four real PNGs under `folder/plots`, drawn by the helpers; returns card['plots']."""
    from keras_dnnopt.visualization import plot_confusion_matrix, plot_sparsity

    rng = np.random.default_rng(0)
    plots = os.path.join(folder, "plots")
    plot_training_curves(HISTORIES, save_path=os.path.join(plots, "training.png"))
    plot_sparsity({"conv": 0.5, "dense": 0.8}, save_path=os.path.join(plots, "sparsity.png"))
    plot_confusion_matrix(rng.integers(0, 9, size=(3, 3)),
                          save_path=os.path.join(plots, "confusion.png"))
    plot_gradcam_grid(rng.uniform(0, 16, size=(3, 8, 8, 1)),
                      {"Baseline": rng.uniform(size=(3, 8, 8)),
                       "Final": rng.uniform(size=(3, 4, 4))},
                      save_path=os.path.join(plots, "gradcam.png"), labels=[1, 2, 3])
    return {name: f"plots/{name}.png" for name in ("training", "sparsity", "confusion",
                                                   "gradcam")}


def make_card(plots=None):
    return {
        "title": "dnnopt optimize: digits",
        "created": "2026-11-25T15:00:00Z",
        "command": "dnnopt optimize --dataset digits --out runs/demo",
        "environment": {"keras": "Keras 3.15.0", "tensorflow": "2.21.0",
                        "keras_dnnopt": "0.1.0", "machine": "test"},
        "dataset": {"name": "digits", "input_shape": [8, 8, 1], "num_classes": 10,
                    "num_train": 1293, "num_val": 144, "num_test": 360,
                    "duplicates_removed": 1, "augmentation": "rotation 0.05, zoom 0.1"},
        "config": {"baseline": {"model": "mobilenet_v1", "epochs": 20},
                   "pruning": {"final_sparsity": 0.5}},
        "stages": [
            {"name": "data", "title": "Data", "summary": "digits, deduplicated",
             "seconds": 0.8, "metrics": {"num_train": 1293}},
            {"name": "baseline", "title": "Baseline (teacher)", "seconds": 95.2,
             "summary": "mobilenet_v1 alpha 1.0, 20 epochs, warm-up cosine",
             "artifact": "stages/2_baseline/model.keras", "metrics": dict(BASELINE)},
            {"name": "student", "title": SCRIPT_TITLE, "seconds": 30.0,
             "metrics": {"accuracy": 0.95, "params": 54000, "latency_ms": None,
                         "size_bytes": 0}},
            {"name": "export", "title": "TFLite export", "seconds": 3.1,
             "artifact": "stages/7_export/model.tflite", "metrics": dict(FINAL)},
        ],
        "final": "export",
        "plots": plots or {},
        "notes": ["QAT is not available on Keras 3; full-integer post-training "
                  "quantization was used.", "Docs: https://example.com/not-a-link",
                  "The deployable file: `model <int8>.tflite`."],
        "seconds": 131.0,
    }


@pytest.fixture(scope="module")
def plotted(tmp_path_factory):
    """A folder with the four plots, copied into each test's own output folder."""
    folder = tmp_path_factory.mktemp("plots")
    return folder, make_plots(str(folder))


@pytest.fixture
def run_dir(tmp_path, plotted):
    source, plots = plotted
    shutil.copytree(os.path.join(source, "plots"), tmp_path / "run" / "plots")
    return tmp_path / "run", plots


class TagCollector(HTMLParser):
    """Every start tag with its attributes, and the text inside `<td>` cells by row."""

    def __init__(self):
        super().__init__()
        self.tags, self.rows, self._row, self._in_td = [], [], None, False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._row.append("")
            self._in_td = True

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag in ("td", "th"):
            self._in_td = False

    def handle_data(self, data):
        if self._in_td and self._row:
            self._row[-1] += data


def parse_html(text):
    parser = TagCollector()
    parser.feed(text)
    return parser


def read(path):
    with open(path, "rb") as stream:
        return stream.read()


def strict_json(path):
    def no_constant(name):
        raise ValueError(f"not strict JSON: {name}")

    with open(path, encoding="utf-8") as stream:
        return json.load(stream, parse_constant=no_constant)


# --------------------------------------------------------------------------- ratios


def test_ratio_rows_against_hand_computed_values():
    rows = ratio_rows(make_card())
    assert [row["name"] for row in rows] == ["data", "baseline", "student", "export"]
    export = rows[3]
    assert export["size_bytes_ratio"] == pytest.approx(232200 / 860000)
    assert export["size_gzip_bytes_ratio"] == pytest.approx(197500 / 790000)
    assert export["latency_ms_ratio"] == pytest.approx(0.0945 / 0.21)
    assert export["params_ratio"] == pytest.approx(54000 / 215000)
    assert export["macs_ratio"] == pytest.approx(0.25)
    assert export["accuracy_ratio"] == pytest.approx(0.969 / 0.975)
    assert export["f1_macro_ratio"] == pytest.approx(0.968 / 0.974)
    baseline = rows[1]
    assert all(baseline[f"{key}_ratio"] == pytest.approx(1.0) for key in BASELINE)
    student = rows[2]
    assert student["params_ratio"] == pytest.approx(54000 / 215000)
    assert student["latency_ms"] is None and student["latency_ms_ratio"] is None  # None
    assert student["size_bytes"] == 0 and student["size_bytes_ratio"] is None  # zero
    assert student["macs"] is None and student["macs_ratio"] is None  # missing
    data = rows[0]
    assert data["num_train"] == 1293 and data["num_train_ratio"] is None  # not in baseline
    assert data["accuracy"] is None and data["accuracy_ratio"] is None
    assert data["title"] == "Data" and data["seconds"] == pytest.approx(0.8)


def test_ratio_rows_without_baseline_or_with_zero_baseline():
    card = make_card()
    del card["stages"][1]
    assert all(row[f"{key}_ratio"] is None for row in ratio_rows(card) for key in BASELINE)
    card = make_card()
    card["stages"][1]["metrics"]["latency_ms"] = 0.0
    card["stages"][1]["metrics"]["macs"] = float("nan")
    export = ratio_rows(card)[3]
    assert export["latency_ms_ratio"] is None and export["macs_ratio"] is None
    assert export["size_bytes_ratio"] == pytest.approx(232200 / 860000)


def test_numpy_values_are_converted():
    card = make_card()
    card["stages"][3]["metrics"] = {k: np.float32(v) if isinstance(v, float) else np.int64(v)
                                    for k, v in FINAL.items()}
    card["config"]["mean"] = np.zeros(2)
    export = ratio_rows(card)[3]
    assert type(export["params"]) is float and export["params"] == 54000
    assert export["size_bytes_ratio"] == pytest.approx(232200 / 860000)


# --------------------------------------------------------------------------- metrics.json


def test_metrics_json_summary_and_final(run_dir):
    folder, plots = run_dir
    paths = write_report(folder, make_card(plots))
    assert paths == {"metrics": str(folder / "metrics.json"),
                     "markdown": str(folder / "report.md"),
                     "html": str(folder / "report.html")}
    metrics = strict_json(paths["metrics"])
    assert set(metrics) >= {"title", "created", "environment", "dataset", "config", "stages",
                            "final", "summary"}
    assert metrics["title"] == "dnnopt optimize: digits"
    assert metrics["dataset"]["input_shape"] == [8, 8, 1]
    assert metrics["config"]["pruning"] == {"final_sparsity": 0.5}
    assert len(metrics["stages"]) == 4
    assert metrics["final"]["name"] == "export"
    assert metrics["final"]["size_bytes"] == 232200
    summary = metrics["summary"]
    assert summary["size_ratio"] == pytest.approx(232200 / 860000)
    assert summary["size_gzip_ratio"] == pytest.approx(197500 / 790000)
    assert summary["accuracy_change"] == pytest.approx(-0.6)
    assert summary["latency_ratio"] == pytest.approx(0.45)
    assert metrics["seconds"] == 131.0 and len(metrics["notes"]) == 3


def test_final_defaults_to_the_last_stage_and_nan_becomes_null(tmp_path):
    card = make_card()
    card["final"] = None
    card["stages"][3]["metrics"]["latency_ms"] = float("nan")
    metrics = strict_json(write_report(tmp_path, card)["metrics"])
    assert metrics["final"]["name"] == "export"
    assert metrics["final"]["latency_ms"] is None and metrics["summary"]["latency_ratio"] is None
    card["final"] = "student"
    summary = strict_json(write_report(tmp_path, card)["metrics"])["summary"]
    assert summary["accuracy_change"] == pytest.approx(-2.5)
    assert summary["size_ratio"] is None  # the student's size is 0


def test_empty_run_writes_a_report(tmp_path):
    paths = write_report(tmp_path, {"title": "nothing yet", "stages": []})
    metrics = strict_json(paths["metrics"])
    assert metrics["final"] is None and metrics["summary"]["size_ratio"] is None
    assert "nothing to compare" in read(paths["markdown"]).decode()


# --------------------------------------------------------------------------- markdown


def test_markdown_table_has_one_row_per_stage(run_dir):
    folder, plots = run_dir
    text = read(write_report(folder, make_card(plots))["markdown"]).decode()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Stage |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    assert header == ["Stage", "Accuracy", "Macro F1", "Params", "MACs", "Size", "Size gz",
                      "Latency (ms)", "Time (s)"]
    body = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        body.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    assert len(body) == 4 and all(len(row) == len(header) for row in body)
    assert [row[0] for row in body][:2] == ["Data", "Baseline (teacher)"]
    export = dict(zip(header, body[3], strict=True))
    assert export["Size"] == "226.8 KiB (0.27x)"
    assert export["Size gz"] == "192.9 KiB (0.25x)"
    assert export["Latency (ms)"] == "0.095 (0.45x)"
    assert export["Accuracy"] == "96.90% (−0.60 pt)"
    assert export["Params"] == "54.0 k (0.25x)"
    assert dict(zip(header, body[0], strict=True))["Accuracy"] == "—"
    assert "0.27x the baseline's file size" in text and "loses 0.60 points" in text
    for path in plots.values():
        assert f"]({path})" in text
    assert "```json" in text and '"final_sparsity": 0.5' in text
    assert "QAT is not available on Keras 3" in text


# --------------------------------------------------------------------------- HTML


def test_html_is_self_contained_with_embedded_images(run_dir):
    folder, plots = run_dir
    text = read(write_report(folder, make_card(plots))["html"]).decode()
    parsed = parse_html(text)
    for tag, attrs in parsed.tags:
        for name in ("src", "href", "srcset", "action", "poster", "data"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "file:")), (tag, name, value)
        assert tag not in ("link", "iframe", "object", "embed", "base")
        if tag == "script":
            assert "src" not in attrs
    assert not re.search(r"url\(|@import", text)
    images = [attrs for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) == len(plots)
    decoded = set()
    for attrs in images:
        assert attrs["alt"]
        prefix = "data:image/png;base64,"
        assert attrs["src"].startswith(prefix)
        decoded.add(base64.b64decode(attrs["src"][len(prefix):]))
    assert decoded == {read(folder / path) for path in plots.values()}
    tables = [attrs for tag, attrs in parsed.tags if tag == "table"]
    assert tables == [{"id": "stages"}]
    stage_rows = [attrs for tag, attrs in parsed.tags if tag == "tr" and "data-stage" in attrs]
    assert [attrs["data-stage"] for attrs in stage_rows] == ["data", "baseline", "student",
                                                             "export"]
    assert "https://example.com" in text  # the note's text, never as a link
    assert "<code>model &lt;int8&gt;.tflite</code>" in text  # a code span in a note
    assert "total time 131.0 s" in text


def test_text_is_escaped(run_dir):
    folder, plots = run_dir
    card = make_card(plots)
    card["environment"]["machine"] = '"><img src=x onerror=alert(1)>'
    paths = write_report(folder, card)
    page = read(paths["html"]).decode()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "Student &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in page
    parsed = parse_html(page)
    assert sum(tag == "script" for tag, _ in parsed.tags) == 1  # the page's own, inline
    assert sum(tag == "img" for tag, _ in parsed.tags) == len(plots)
    rows = [row for row in parsed.rows if row and row[0].startswith("Student")]
    assert rows[0][0] == SCRIPT_TITLE  # the browser shows the title as it was written
    markdown = read(paths["markdown"]).decode()
    assert "<script>" not in markdown and "Student &lt;script&gt;" in markdown


def test_html_autoescapes_every_text_of_the_card(run_dir):
    folder, plots = run_dir
    attack = "<script>alert(1)</script> & co"
    card = make_card(plots)
    card["title"] = attack
    card["notes"].append(f"{attack} and `{attack}`")
    card["config"]["pruning"]["schedule"] = attack
    card["stages"][0]["name"] = attack
    paths = write_report(folder, card)
    page = read(paths["html"]).decode()
    assert "<script>alert(1)</script>" not in page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co"
    assert f"<title>{escaped}</title>" in page and f"<h1>{escaped}</h1>" in page
    assert f"<li>{escaped} and <code>{escaped}</code></li>" in page  # the note
    assert f"&quot;schedule&quot;: &quot;{escaped}&quot;" in page  # the config
    assert f'<tr data-stage="{escaped}">' in page  # the stage name, in an attribute
    parsed = parse_html(page)
    assert sum(tag == "script" for tag, _ in parsed.tags) == 1  # the page's own, inline
    assert [attrs["data-stage"] for tag, attrs in parsed.tags
            if tag == "tr" and "data-stage" in attrs][0] == attack
    markdown, config = read(paths["markdown"]).decode().split("## Configuration")
    assert "<script>" not in markdown and f"# {escaped}" in markdown
    assert f'"schedule": "{attack}"' in config  # literal in its code block


# --------------------------------------------------------------------------- ReportData


def test_report_data_is_the_content_of_metrics_json(run_dir):
    folder, plots = run_dir
    card = make_card(plots)
    card["stages"][3]["metrics"]["latency_ms"] = np.float32("nan")
    card["config"]["mean"] = np.zeros(2)
    paths = write_report(folder, card)
    text = read(paths["metrics"]).decode()
    data = ReportData.from_card(card)
    assert data.as_dict() == json.loads(text)
    assert list(data.as_dict()) == list(json.loads(text))  # the same key order
    assert ReportData.from_card(card, folder).to_json() == text  # byte for byte
    assert [plot.data_uri for plot in data.figures] == [None] * len(plots)  # no out_dir
    changed = data.as_dict()
    changed["stages"][0]["name"] = "changed"
    assert data.stages[0]["name"] == "data"  # as_dict() is a copy
    row = data.rows[3]
    assert (row.name, row.classes, row.cells[4].text) == ("export", "final",
                                                          "226.8 KiB (0.27x)")
    assert data.rows[1].classes == "baseline"
    assert data.sentence.endswith("and loses 0.60 points of accuracy (96.90% vs 97.50%).")
    with pytest.raises(ValueError, match=r"ReportData\.from_card\(card, out_dir\)"):
        report_module.render_html(data)


def test_templates_ship_as_package_data():
    templates = importlib.resources.files("keras_dnnopt.pipeline").joinpath("templates")
    names = sorted(item.name for item in templates.iterdir() if item.name.endswith(".j2"))
    assert names == ["report.html.j2", "report.md.j2"]
    assert all(templates.joinpath(name).is_file() for name in names)
    setup = configparser.ConfigParser()
    setup.read(os.path.join(os.path.dirname(__file__), os.pardir, "setup.cfg"))
    patterns = setup.get("options.package_data", "keras_dnnopt.pipeline").split()
    for name in names:  # a wheel or sdist built from setup.cfg carries each template
        assert any(fnmatch.fnmatch(f"templates/{name}", pattern) for pattern in patterns)


# --------------------------------------------------------------------------- atomic


def snapshot(folder):
    return {name: read(folder / name) for name in sorted(os.listdir(folder))
            if os.path.isfile(folder / name)}


def test_failed_render_leaves_the_report_untouched(run_dir):
    folder, plots = run_dir
    write_report(folder, make_card(plots))
    before = snapshot(folder)
    card = make_card(plots)
    card["title"] = "a new title"
    card["config"]["callback"] = object()
    with pytest.raises(TypeError, match=r"card\['config'\]\['callback'\] is of type object"):
        write_report(folder, card)
    assert snapshot(folder) == before  # same files, same bytes, no temporary file
    del card["config"]["callback"]
    write_report(folder, card)  # the other side: a good card replaces the report
    after = snapshot(folder)
    assert set(after) == set(before) and after["report.md"] != before["report.md"]


def test_failed_write_leaves_no_temporary_file(run_dir, monkeypatch):
    folder, plots = run_dir
    write_report(folder, make_card(plots))
    before = snapshot(folder)

    def broken_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(report_module.os, "replace", broken_replace)
    card = make_card(plots)
    card["title"] = "a new title"
    with pytest.raises(OSError, match="disk full"):
        write_report(folder, card)
    assert snapshot(folder) == before


def test_written_files_are_readable_by_others(tmp_path):
    paths = write_report(tmp_path, make_card())
    for path in paths.values():
        assert os.stat(path).st_mode & 0o044 == 0o044


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("card, error, match", [
    ([1, 2], TypeError, "Argument `card` must be a dict"),
    ({"stages": "baseline"}, ValueError, r"must hold `stages`, a list"),
    ({"stages": [{"title": "no name"}]}, ValueError, r"non-empty str `name`"),
    ({"stages": [{"name": "a"}, {"name": "a"}]}, ValueError, "stage 'a' twice"),
    ({"stages": [{"name": "a", "metrics": [1]}]}, ValueError, r"`metrics` as a dict"),
    ({"stages": [{"name": "a"}], "final": "b"}, ValueError, r"card\['final'\]='b'"),
    ({"stages": [], "plots": {"x": "/abs/x.png"}}, ValueError, "inside the output folder"),
    ({"stages": [], "plots": {"x": "../x.png"}}, ValueError, "inside the output folder"),
    ({"stages": [], "plots": {"x": 3}}, ValueError, r"`plots` as a dict"),
    ({"stages": [], "plots": {"x": "x.txt"}}, ValueError, "as images"),
    ({"stages": [], "plots": {"x": "missing.png"}}, FileNotFoundError, "'missing.png'"),
    ({"stages": [], "config": {1j: 2}}, TypeError, "key of type complex"),
])
def test_invalid_cards(tmp_path, card, error, match):
    with pytest.raises(error, match=match):
        write_report(tmp_path, card)
    assert os.listdir(tmp_path) == []


def test_valid_card_boundaries(tmp_path):
    (tmp_path / "x.png").write_bytes(PNG_SIGNATURE)
    write_report(tmp_path, {"stages": [{"name": "a"}], "final": "a",
                            "plots": {"x": "x.png"}, "config": {1: 2}})
    assert strict_json(tmp_path / "metrics.json")["config"] == {"1": 2}
    with pytest.raises(ValueError, match="Argument `out_dir` must be a folder path"):
        write_report("", {"stages": []})


# --------------------------------------------------------------------------- plots


def test_training_curves_concatenate_the_stages(tmp_path):
    path = tmp_path / "deep" / "training.png"
    figure = plot_training_curves(HISTORIES, save_path=path)
    assert read(path).startswith(PNG_SIGNATURE)
    assert os.listdir(path.parent) == ["training.png"]  # no temporary file left
    loss, accuracy, learning_rate = figure.axes
    lines = {ax.get_title(): {line.get_label(): line for line in ax.get_lines()
                              if not line.get_label().startswith("_")}
             for ax in figure.axes}
    assert set(lines["loss"]) == {"baseline", "baseline (val)", "distillation"}
    np.testing.assert_array_equal(lines["loss"]["baseline"].get_xdata(), [1, 2, 3])
    # the quantization stage has no epoch: distillation follows the baseline directly
    np.testing.assert_array_equal(lines["loss"]["distillation"].get_xdata(), [4, 5])
    np.testing.assert_allclose(lines["loss"]["baseline (val)"].get_ydata(), [2.1, 1.3, 0.9])
    assert lines["loss"]["baseline (val)"].get_linestyle() == "--"
    np.testing.assert_allclose(lines["accuracy"]["distillation"].get_ydata(), [0.8, 0.9])
    assert lines["loss"]["baseline"].get_color() == lines["accuracy"]["baseline"].get_color()
    assert lines["loss"]["baseline"].get_color() != lines["loss"]["distillation"].get_color()
    np.testing.assert_allclose(lines["learning rate"]["distillation"].get_ydata(),
                               [0.01, 0.005])
    assert learning_rate.get_yscale() == "log"  # 0.1 .. 0.0005 spans > 2 decades
    assert loss.get_xlim() == (0.5, 5.5) and accuracy.get_xlim() == (0.5, 5.5)


def test_training_curves_linear_learning_rate_and_missing_panels():
    figure = plot_training_curves({"baseline": {"loss": [1.0, 0.5],
                                                "learning_rate": [0.1, 0.002]}})
    assert figure.axes[2].get_yscale() == "linear"  # spans < 2 decades
    assert "no accuracy logged" in [text.get_text() for text in figure.axes[1].texts]


@pytest.mark.parametrize("histories, error, match", [
    ([1], TypeError, "Argument `histories` must be a dict"),
    ({"a": [1]}, TypeError, r"histories\['a'\] of type list"),
    ({"a": {}, "b": {"loss": []}}, ValueError, "holds no epoch"),
    ({"a": {"loss": [[1, 2], [3, 4]]}}, ValueError, "flat list"),
    ({"a": {"loss": ["x"]}}, ValueError, r"histories\['a'\]\['loss'\]"),
    ({1: {"loss": [1.0]}}, ValueError, "keyed by stage names"),
])
def test_training_curves_errors(histories, error, match):
    with pytest.raises(error, match=match):
        plot_training_curves(histories)


def test_gradcam_grid_draws_images_and_overlays(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.uniform(-3, 5, size=(2, 6, 6, 1))
    maps = {"Baseline": rng.uniform(size=(2, 6, 6)), "Final": rng.uniform(size=(2, 6, 6))}
    figure = plot_gradcam_grid(images, maps, save_path=tmp_path / "g.png", labels=[7, 3],
                               alpha=0.5)
    assert read(tmp_path / "g.png").startswith(PNG_SIGNATURE)
    axes = figure.axes
    assert len(axes) == 6
    assert [axes[0].get_title(), axes[1].get_title()] == ["label 7", "label 3"]
    assert [axes[0].get_ylabel(), axes[2].get_ylabel(), axes[4].get_ylabel()] == [
        "image", "Baseline", "Final"]
    jet = matplotlib.colormaps["jet"]
    for column in range(2):
        image = images[column, ..., 0]
        scaled = (image - image.min()) / (image.max() - image.min())
        np.testing.assert_allclose(axes[column].get_images()[0].get_array(), scaled,
                                   atol=1e-6)
        for row, title in ((1, "Baseline"), (2, "Final")):
            expected = 0.5 * scaled[..., None] + 0.5 * jet(maps[title][column])[..., :3]
            np.testing.assert_allclose(axes[row * 2 + column].get_images()[0].get_array(),
                                       expected, atol=1e-5)


@pytest.mark.parametrize("images, rows, labels, match", [
    (np.zeros((2, 4, 4, 2)), {"A": np.zeros((2, 4, 4))}, None, "1 or 3"),
    (np.zeros((33, 4, 4)), {"A": np.zeros((33, 4, 4))}, None, "at most 32"),
    (np.zeros((2, 4, 4)), {}, None, "non-empty dict"),
    (np.zeros((2, 4, 4)), {"A": np.zeros((3, 4, 4))}, None, r"shape \(2, height, width\)"),
    (np.zeros((2, 4, 4)), {"A": np.full((2, 4, 4), 1.01)}, None, r"values in \[0, 1\]"),
    (np.zeros((2, 4, 4)), {"A": np.zeros((2, 4, 4))}, [1], "one label per image"),
])
def test_gradcam_grid_errors(images, rows, labels, match):
    with pytest.raises(ValueError, match=match):
        plot_gradcam_grid(images, rows, labels=labels)


def test_gradcam_grid_takes_grad_cam_maps_of_a_model():
    from keras_dnnopt.backend import keras
    from keras_dnnopt.visualization import grad_cam

    model = keras.Sequential([
        keras.Input(shape=(8, 8, 1)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])
    images = np.random.default_rng(2).uniform(0, 16, size=(2, 8, 8, 1)).astype("float32")
    maps = grad_cam(model, images)
    figure = plot_gradcam_grid(images, {"Baseline": maps, "Final": maps}, labels=[0, 1])
    assert len(figure.axes) == 6
    assert figure.axes[2].get_images()[0].get_array().shape == (8, 8, 3)


def test_gradcam_grid_boundaries():
    figure = plot_gradcam_grid(np.zeros((1, 4, 4, 3)), {"A": np.ones((1, 4, 4, 1))},
                               labels=["cat"])
    assert len(figure.axes) == 2 and figure.axes[0].get_title() == "label cat"


# --------------------------------------------------------------------------- Chromium


def chromium_or_skip():
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.environ.get("DNNOPT_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"DNNOPT_REQUIRE_CHROMIUM=1 but {CHROMIUM} is absent: "
                    "`apt-get install chromium` (Debian's package) to render report.html.")
    pytest.skip(f"{CHROMIUM} is absent (`apt-get install chromium` to run this test)")


def test_missing_chromium_skips_unless_required(monkeypatch):
    monkeypatch.setitem(globals(), "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("DNNOPT_REQUIRE_CHROMIUM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        chromium_or_skip()
    monkeypatch.setenv("DNNOPT_REQUIRE_CHROMIUM", "1")
    with pytest.raises(pytest.fail.Exception, match="`apt-get install chromium`"):
        chromium_or_skip()


def run_chromium(binary, profile, *arguments):
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               "--virtual-time-budget=5000", "--hide-scrollbars", *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    binary = chromium_or_skip()
    folder, plots = run_dir
    card = make_card(plots)
    write_report(folder, card)
    # Alone in a folder of its own: the images can only come from the page itself.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(folder / "report.html", alone / "report.html")
    url = (alone / "report.html").as_uri()
    dom = run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url)
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert f'data-images-loaded="{len(plots)}"' in body
    parsed = parse_html(dom)
    stage_rows = [attrs["data-stage"] for tag, attrs in parsed.tags
                  if tag == "tr" and "data-stage" in attrs]
    assert stage_rows == [stage["name"] for stage in card["stages"]]
    assert [attrs for tag, attrs in parsed.tags if tag == "table"] == [{"id": "stages"}]
    shot = tmp_path / "shot.png"
    run_chromium(binary, tmp_path / "profile-shot", "--window-size=1000,1400",
                 f"--screenshot={shot}", url)
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (1400, 1000)
    assert float(pixels.std()) > 0.05  # text, table and plots drawn, not a blank page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # the plots' colours
    assert not math.isclose(float(pixels.mean()), 1.0, abs_tol=1e-3)
