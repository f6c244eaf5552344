"""`dnnopt optimize` under a budget (keras_dnnopt.pipeline.budget / search): the units of
a budget, the Pareto front, and a real search on digits (candidates dropped before
training, successive halving, the chosen file measured again, OUT/model.keras and
OUT/model.tflite, resuming after an interruption, and the exit status 3 when nothing
fits), under the Keras in use."""

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_dnnopt.cli.main import main
from keras_dnnopt.pipeline import Budget, ConfigError, load_config, optimize
from keras_dnnopt.pipeline import search as search_module
from keras_dnnopt.pipeline.budget import (
    COUNT_UNITS,
    SIZE_UNITS,
    TIME_UNITS,
    parse_count,
    parse_duration,
    parse_size,
)
from keras_dnnopt.pipeline.plots import pareto_front
from keras_dnnopt.pipeline.runner import BudgetNotMet

# -- units -------------------------------------------------------------------------------

_POSITIVE = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(number=_POSITIVE, unit=st.sampled_from(sorted(SIZE_UNITS)), upper=st.booleans())
def test_sizes_parse_to_bytes_in_every_unit_and_case(number, unit, upper):
    text = f"{number!r}{unit.upper() if upper else unit}"
    assert parse_size(text) == pytest.approx(number * SIZE_UNITS[unit])


@settings(max_examples=60, deadline=None)
@given(number=_POSITIVE, unit=st.sampled_from(sorted(TIME_UNITS)))
def test_durations_parse_to_seconds(number, unit):
    assert parse_duration(f"{number!r} {unit}") == pytest.approx(number * TIME_UNITS[unit])


@settings(max_examples=40, deadline=None)
@given(number=_POSITIVE, unit=st.sampled_from(sorted(COUNT_UNITS)))
def test_counts_parse_with_k_m_g(number, unit):
    assert parse_count(f"{number!r}{unit}") == pytest.approx(number * COUNT_UNITS[unit])


def test_bare_numbers_take_the_default_unit():
    assert parse_size(4096) == 4096
    assert parse_duration(2) == pytest.approx(2e-3)  # a latency: milliseconds
    assert parse_duration("90", default_unit="s") == 90  # a time budget: seconds
    assert Budget(max_latency=2).max_latency_ms == pytest.approx(2.0)


@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet="0123456789.-eXyz kKmMgGbBi", min_size=0, max_size=8))
def test_bad_sizes_are_refused_naming_the_argument_and_value(text):
    try:
        value = parse_size(text, name="max_size")
    except ValueError as error:
        assert "`max_size`" in str(error) and repr(text) in str(error)
    else:
        assert value > 0 and np.isfinite(value)


@pytest.mark.parametrize("kwargs, match", [
    ({"max_size": "64XB"}, r"`max_size` must be a size such as 64KB.*Received: max_size='64XB'"),
    ({"max_size": 0}, r"`max_size` must be > 0. Received: max_size=0"),
    ({"max_latency": "-2ms"}, r"`max_latency` must be a duration"),
    ({"max_macs": True}, r"`max_macs` must be a count"),
    ({"min_accuracy": 97}, r"`min_accuracy` must be a number in \(0, 1\].*=97"),
    ({"min_accuracy": 0.0}, r"`min_accuracy` must be a number in \(0, 1\]"),
])
def test_bad_budgets_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Budget(**kwargs)


def test_budget_limits_both_sides_of_each_boundary():
    budget = Budget(max_size="1KiB", max_latency="1ms", max_macs="1K", min_accuracy=0.9)
    at_limit = {"size_bytes": 1024, "latency_ms": 1.0, "macs": 1000, "accuracy": 0.9}
    assert budget.violations(at_limit) == []
    over = {"size_bytes": 1025, "latency_ms": 1.01, "macs": 1001, "accuracy": 0.899}
    assert [name for name, _, _ in budget.violations(over)] == [
        "max_size", "max_latency", "max_macs", "min_accuracy"]
    assert [name for name, _, _ in budget.violations({})] == [
        "max_size", "max_latency", "max_macs", "min_accuracy"]  # unmeasured is not met
    assert not Budget() and Budget(max_size=1)
    assert Budget.from_dict(budget.to_dict()) == budget


def test_budget_in_the_config_is_checked_and_turns_the_search_on(tmp_path):
    config = load_config(None, {"budget": {"max_size": "16KB"}})
    assert config["stages"] == ["data", "baseline", "search"]
    assert load_config(None)["stages"][-1] == "export"  # no budget: the fixed chain
    with pytest.raises(ConfigError, match=r"`budget.max_size` must be null \(no limit\) or "
                                          r"a size.*Received: budget.max_size='16XB'"):
        load_config(None, {"budget": {"max_size": "16XB"}})
    with pytest.raises(ConfigError, match=r"`search.alphas` must be a non-empty list"):
        load_config(None, {"search": {"alphas": []}})
    with pytest.raises(ConfigError, match=r"`stages` includes `search`, which needs a budget"):
        load_config(None, {"stages": ["data", "search"]})


@pytest.mark.parametrize("argv, match", [
    (["--max-size", "64XB"], r"budget.max_size.*Received: budget.max_size='64XB'"),
    (["--min-accuracy", "high"], r"--min-accuracy: must be a fraction"),
    (["--trials", "0"], r"--trials: must be >= 1"),
    (["--time-budget", "soon"], r"search.time_budget"),
])
def test_cli_budget_flags_refuse_bad_values_in_one_line(argv, match, tmp_path, capsys):
    import re

    with pytest.raises(SystemExit) as info:
        main(["optimize", "--out", str(tmp_path / "out"), *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("dnnopt optimize: error: ") and err.count("\n") == 1, err
    assert re.search(match, err), err


# -- the Pareto front and the rungs -------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 50)), min_size=1, max_size=30))
def test_pareto_front_holds_exactly_the_points_nothing_beats(points):
    front = set(pareto_front(points))

    def beats(a, b):
        return a[0] <= b[0] and a[1] >= b[1] and a != b

    for index, point in enumerate(points):
        dominated = any(beats(other, point) for other in points)
        duplicate_first = all(points[j] != point for j in range(index)) or index in front
        if dominated:
            assert index not in front
        elif duplicate_first:
            # an undominated point is on the front (once, for repeated points)
            assert index in front or any(points[j] == point for j in front)


def test_rung_epochs_grow_by_eta_up_to_the_full_budget():
    assert search_module.rung_epochs(12, 3, 3) == [2, 4, 12]
    assert search_module.rung_epochs(9, 3, 3) == [1, 3, 9]
    assert search_module.rung_epochs(2, 3, 3) == [1, 2]  # equal rungs collapse
    assert search_module.rung_epochs(5, 2, 1) == [5]


def _row(key, fidelity, val, test, size):
    return {"key": key, "fidelity": fidelity, "val_accuracy": val, "accuracy": test,
            "size_bytes": size, "latency_ms": 1.0, "macs": 1000}


def test_choose_takes_the_most_accurate_fitting_full_run_or_names_the_closest():
    rows = {r["key"]: r for r in (
        _row("big", 4, 0.99, 0.99, 9000),     # the most accurate, too big
        _row("small", 4, 0.90, 0.91, 4000),
        _row("smaller", 4, 0.95, 0.94, 5000),
        _row("short", 1, 0.97, 0.97, 1000))}  # better, but only trained briefly
    chosen, closest = search_module.choose(rows, Budget(max_size=6000), 4)
    assert chosen["key"] == "smaller" and closest is None
    chosen, closest = search_module.choose(rows, Budget(max_size=6000, min_accuracy=0.96), 4)
    assert chosen is None and closest["key"] in {"smaller", "short"}
    assert search_module.binding_constraints(rows, Budget(max_size=4500, min_accuracy=0.98)) == [
        "min_accuracy", "max_size"]


# -- a real search ---------------------------------------------------------------------

# One width, pruned or not, exported int8 or float16: four structures whose files
# straddle the size limit, so that two cannot fit and are never trained. No baseline (no
# teacher): the budget adds the search after the data.
TINY = {
    "stages": ["data"],
    "export": {"latency_runs": 3},
    "quantize": {"calibration_steps": 2},
    "report": {"gradcam_images": 0},
    "search": {"alphas": [0.1], "prune_ratios": [0.0, 0.5], "removed_blocks": [0],
               "quantizations": ["int8_ptq", "float16"], "distill": [False],
               "trials": 4, "epochs": 2, "rungs": 2, "eta": 2},
}


def _limit(out_dir):
    """A size limit between the smaller and the larger structures of TINY."""
    structures = json.loads((out_dir / "stages" / "8_search" / "trials.json").read_text())[
        "structures"]
    sizes = sorted(value["size_bytes"] for value in structures.values())
    return sizes, (sizes[1] + sizes[2]) / 2


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    # A first run with a limit that binds nothing measures every structure (and trains one).
    loose = load_config(None, {**TINY, "budget": {"max_size": "1GB"},
                               "search": {**TINY["search"], "trials": 1, "rungs": 1}})
    card = optimize(loose, str(out / "loose"), command="test", log=lambda _: None)
    sizes, limit = _limit(out / "loose")
    lines = []
    tight = optimize(load_config(None, TINY), str(out / "tight"), log=lines.append,
                     budget=Budget(max_size=limit))
    return out, card, tight, lines, sizes, limit


def test_search_drops_what_cannot_fit_before_training_and_meets_the_budget(searched):
    out, _, card, lines, sizes, limit = searched
    trials = {row["key"]: row for row in card["search"]["trials"]}
    too_big = [row for row in trials.values() if row["size_bytes"] > limit]
    assert len(too_big) == 2
    for row in too_big:
        assert row["dropped"].startswith("cannot fit before training: size")
        assert row["fidelity"] is None and row["val_accuracy"] is None  # never trained
    chosen = trials[card["search"]["chosen"]]
    assert chosen["fidelity"] == 2 and chosen["size_bytes"] <= limit
    # The chosen file, measured again, meets the budget; it is OUT/model.tflite.
    final = out / "tight" / "model.tflite"
    assert os.path.getsize(final) <= limit
    assert os.path.getsize(final) == chosen["size_bytes"]
    # Successive halving: both fitting candidates at 1 epoch, the better one at 2.
    trained = json.loads((out / "tight" / "stages" / "8_search" / "trials.json").read_text())
    assert sorted(key.split("@")[1] for key in trained["trials"]) == ["1", "1", "2"]
    assert sum("trial " in line and "ETA" in line for line in lines) == 3
    # The progress bar fills up over the trials.
    bars = [line.split("]")[0].split("[")[-1] for line in lines if "ETA" in line]
    assert [bar.count("#") for bar in bars] == [7, 13, 20] and all(len(b) == 20 for b in bars)
    # The report shows the search: its table, the Pareto plots, the budget.
    assert {"pareto_size", "pareto_latency"} <= set(card["plots"])
    report = (out / "tight" / "report.md").read_text()
    assert "## Search under the budget" in report and "cannot fit before training" in report
    html = (out / "tight" / "report.html").read_text()
    assert f'data-candidate="{chosen["key"]}" class="final"' in html


def test_search_is_deterministic_under_the_seed(searched):
    out, _, card, _, _, limit = searched
    again = optimize(load_config(None, TINY), str(out / "again"), log=lambda _: None,
                     budget=Budget(max_size=limit))
    assert again["search"]["chosen"] == card["search"]["chosen"]

    def results(folder):
        state = json.loads((out / folder / "stages" / "8_search" / "trials.json").read_text())
        # Everything but the clock: the time taken and the latency vary run to run.
        return {key: {k: v for k, v in trial.items() if k not in ("seconds", "latency_ms")}
                for key, trial in state["trials"].items()}

    assert results("again") == results("tight")


def test_search_result_is_a_loadable_keras_model_that_agrees_with_its_file(searched):
    from keras_dnnopt import load_model
    from keras_dnnopt.evaluation import evaluate_report
    from keras_dnnopt.pipeline.stages import Run
    from keras_dnnopt.pipeline.store import StageStore

    out, _, card, _, _, _ = searched
    config = load_config(str(out / "tight" / "config.yaml"))
    run = Run(config, StageStore(str(out / "tight"), ("data",)))
    model = load_model(str(out / "tight" / "model.keras"), compile=False)
    keras_report = evaluate_report(model, run.dataset.test)
    file_report = evaluate_report(str(out / "tight" / "model.tflite"), run.dataset.test)
    final = next(row for row in card["stages"] if row["name"] == "search")
    assert file_report["accuracy"] == pytest.approx(final["metrics"]["accuracy"])
    assert abs(keras_report["accuracy"] - file_report["accuracy"]) <= 0.03


def test_nothing_fits_names_the_binding_limit_and_exits_3(searched, capsys):
    out, _, _, _, sizes, _ = searched
    config = load_config(None, {**TINY, "budget": {"max_size": int(sizes[0] - 1)}})
    target = out / "none"
    with pytest.raises(BudgetNotMet) as info:
        optimize(config, str(target), log=lambda _: None)
    assert info.value.binding == ["max_size"] and info.value.closest is not None
    # The report is written all the same, and says why.
    search = json.loads((target / "metrics.json").read_text())["search"]
    assert search["chosen"] is None and search["binding"] == ["max_size"]
    assert "closest" in (target / "report.md").read_text()
    assert not (target / "model.tflite").exists()
    # The command line: exit status 3 and one line (the structures are reused: no training).
    status = main(["optimize", "--out", str(target), "--stages", "data,search",
                   "--max-size", str(int(sizes[0] - 1)), "--config",
                   str(target / "config.yaml")])
    assert status == 3
    assert "no candidate meets the budget" in capsys.readouterr().err


def test_removed_blocks_and_stripped_names_reach_a_budget_the_full_depth_cannot(tmp_path):
    """The 13-block MobileNet cannot fit; the one without its 8 shape-keeping blocks (the
    structure known before training) can, and a size budget leaves the tensor names out
    of its file."""
    from keras_dnnopt.compression import remove_blocks
    from keras_dnnopt.export import TFLiteModel
    from keras_dnnopt.models import mobilenet_v1
    from keras_dnnopt.profiling import profile

    full = mobilenet_v1(input_shape=(8, 8, 1), num_classes=10, alpha=0.1)
    shallow = remove_blocks(full, n=8, criterion="repeats")
    config = load_config(None, {
        **TINY, "budget": {"max_macs": (profile(full).macs + profile(shallow).macs) // 2},
        "search": {**TINY["search"], "removed_blocks": [0, 8, 20], "prune_ratios": [0.0],
                   "quantizations": ["int8_ptq"], "trials": 2, "epochs": 4, "rungs": 1}})
    lines = []
    card = optimize(config, str(tmp_path), log=lines.append)
    rows = {row["key"]: row for row in card["search"]["trials"]}
    # 20 blocks is more than the model has: left out, with why.
    assert set(rows) == {"a0.1-r8-p0-int8_ptq-nokd", "a0.1-r8-b8-p0-int8_ptq-nokd"}
    assert any("left out" in line and "8 removable blocks" in line for line in lines)
    assert rows["a0.1-r8-p0-int8_ptq-nokd"]["dropped"].startswith("cannot fit before")
    chosen = rows[card["search"]["chosen"]]
    assert chosen["key"] == "a0.1-r8-b8-p0-int8_ptq-nokd"
    assert "8 blocks removed" in chosen["describe"]
    # Its MACs were known before training: the structure's profile.
    assert chosen["macs"] == profile(shallow).macs
    assert chosen["accuracy"] > 0.5  # a few epochs of a real model on digits (10 classes)
    final = tmp_path / "model.tflite"
    # No size budget: the file keeps its tensor names (`export.strip_names` unset).
    assert b"block1_pointwise" in final.read_bytes()

    sized = load_config(None, {
        **TINY, "budget": {"max_size": "1GB"},
        "search": {**TINY["search"], "removed_blocks": [8], "prune_ratios": [0.0],
                   "quantizations": ["int8_ptq"], "trials": 1, "epochs": 1, "rungs": 1}})
    card = optimize(sized, str(tmp_path / "sized"), log=lambda _: None)
    content = (tmp_path / "sized" / "model.tflite").read_bytes()
    assert b"block1_pointwise" not in content  # a size budget strips them
    row = next(r for r in card["search"]["trials"] if r["key"] == card["search"]["chosen"])
    assert row["size_bytes"] == len(content)
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    assert TFLiteModel(str(tmp_path / "sized" / "model.tflite")).predict(x).shape == (4, 10)


def test_an_interrupted_search_continues_after_its_last_finished_trial(tmp_path, monkeypatch):
    config = load_config(None, {**TINY, "budget": {"max_size": "1GB"},
                                "search": {**TINY["search"], "quantizations": ["int8_ptq"],
                                           "prune_ratios": [0.0, 0.5], "epochs": 1,
                                           "rungs": 1}})
    real = search_module._Search.evaluate
    calls = []

    def evaluate(self, candidate, epochs, folder):
        calls.append(candidate.key)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, candidate, epochs, folder)

    monkeypatch.setattr(search_module._Search, "evaluate", evaluate)
    from keras_dnnopt.pipeline.runner import Interrupted

    with pytest.raises(Interrupted, match="during search"):
        optimize(config, str(tmp_path), log=lambda _: None)
    first = calls[0]
    calls.clear()
    monkeypatch.setattr(search_module._Search, "evaluate",
                        lambda self, c, e, f: (calls.append(c.key), real(self, c, e, f))[1])
    card = optimize(config, str(tmp_path), log=lambda _: None)
    assert first not in calls and len(calls) == 1  # the finished trial is not trained again
    assert len([row for row in card["search"]["trials"] if row["fidelity"] == 1]) == 2
