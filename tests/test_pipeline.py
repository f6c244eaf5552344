"""`dnnopt optimize` (keras_dnnopt.pipeline): configuration, resume, atomic stages, and one
real run of the whole chain on a digits-sized budget, under the Keras in use."""

import json
import os

import numpy as np
import pytest

from keras_dnnopt.backend import USING_TF_KERAS
from keras_dnnopt.cli.main import main
from keras_dnnopt.pipeline import STAGES, ConfigError, defaults, load_config, optimize, validate
from keras_dnnopt.pipeline import stages as stage_module
from keras_dnnopt.pipeline.config import CHAIN, stage_fingerprint

# -- configuration ---------------------------------------------------------------------


def _write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_validate_and_cover_every_stage():
    config = defaults()
    validate(config)
    assert config["stages"] == list(CHAIN)
    assert config["dataset"] == "digits"


def test_yaml_file_changes_only_what_it_names(tmp_path):
    path = _write(tmp_path, "prune:\n  target_sparsity: 0.8\nbaseline: {epochs: 3}\n")
    config = load_config(path)
    assert config["prune"]["target_sparsity"] == 0.8
    assert config["baseline"]["epochs"] == 3
    assert config["prune"]["epochs"] == defaults()["prune"]["epochs"]
    assert config["distill"] == defaults()["distill"]


def test_command_line_overrides_win_over_the_file(tmp_path):
    path = _write(tmp_path, "seed: 3\n")
    assert load_config(path, {"seed": 5})["seed"] == 5


@pytest.mark.parametrize("text, match", [
    ("epochz: 3\n", r"unknown key `epochz`. Allowed keys: dataset, seed"),
    ("prune:\n  sparsity: 0.5\n", r"unknown key `prune.sparsity`. Allowed keys in `prune`: "
                                  r"target_sparsity"),
    ("prune:\n  target_sparsity: 1.5\n",
     r"`prune.target_sparsity` must be a number > 0.0 and < 1.0. "
     r"Received: prune.target_sparsity=1.5"),
    ("quantize: {method: fp8}\n",
     r"`quantize.method` must be one of 'auto', 'qat', 'ptq'. Received: quantize.method='fp8'"),
    ("baseline: {epochs: 2.5}\n", r"`baseline.epochs` must be an integer >= 1"),
    ("baseline: {epochs: true}\n", r"`baseline.epochs` must be an integer >= 1"),
    ("data: {augment: 'yes'}\n", r"`data.augment` must be true or false"),
    ("stages: [data, compile]\n", r"`stages` must be a list of stage names from data, "
                                  r"baseline"),
    ("baseline: 3\n", r"`baseline` must be a section"),
    ("dataset: imagenet\n", r"`dataset` must be one of digits, mnist.*Received: "
                            r"dataset='imagenet'"),
    ("- 1\n- 2\n", r"must be a mapping"),
])
def test_bad_keys_and_values_are_named_with_what_is_allowed(tmp_path, text, match):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path)
    assert path in str(info.value)  # the file is named too


def test_boundaries_of_a_value_both_sides(tmp_path):
    load_config(None, {"prune": {"target_sparsity": 0.99}})
    with pytest.raises(ConfigError, match="target_sparsity=1.0"):
        load_config(None, {"prune": {"target_sparsity": 1.0}})
    load_config(None, {"student": {"epochs": 0}})
    with pytest.raises(ConfigError, match="student.epochs=-1"):
        load_config(None, {"student": {"epochs": -1}})


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "prune: [unclosed\n"))


def test_stages_run_in_chain_order_and_always_load_the_data():
    config = load_config(None, {"stages": ["export", "baseline"]})
    assert config["stages"] == ["data", "baseline", "export"]


def test_fingerprint_follows_upstream_changes_only():
    config = defaults()
    changed = load_config(None, {"prune": {"target_sparsity": 0.7}})
    for stage in ("data", "baseline", "student", "distill"):
        assert stage_fingerprint(config, stage) == stage_fingerprint(changed, stage)
    for stage in ("prune", "quantize", "export"):
        assert stage_fingerprint(config, stage) != stage_fingerprint(changed, stage)


def test_chain_missing_what_a_stage_needs_is_refused_before_training(tmp_path):
    config = load_config(None, {"stages": ["data", "student", "distill"]})
    with pytest.raises(ConfigError, match="`distill`, which needs the teacher"):
        optimize(config, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "stages")


def test_auto_quantization_is_qat_on_both_kerases():
    assert stage_module.quantize_method(defaults()) == "qat"
    assert stage_module.quantize_method(load_config(None, {"quantize": {"method": "ptq"}})) == "ptq"
    route, words = stage_module.qat_route()
    assert route == ("tfmot" if USING_TF_KERAS else "native")
    assert ("TF-MOT" in words) == USING_TF_KERAS


# -- resume and atomic stages, with stand-in stage functions ------------------------------

class _Recorder:
    """Stand-in stages: each writes a file and records that it ran."""

    def __init__(self, fail_at=None, interrupt_at=None):
        self.ran = []
        self.fail_at = fail_at
        self.interrupt_at = interrupt_at

    def functions(self):
        def make(stage):
            def fake(run, workdir):
                self.ran.append(stage)
                with open(os.path.join(workdir, "part.txt"), "w") as handle:
                    handle.write("half")
                if stage == self.interrupt_at:
                    raise KeyboardInterrupt
                if stage == self.fail_at:
                    raise ValueError("boom")
                extra = {}
                if stage == "data":
                    extra = {"dataset": {"name": "digits"}}
                if stage == "quantize":
                    extra = {"method": "ptq"}
                return {"summary": stage, "metrics": {"accuracy": 0.5} if stage != "data"
                        else {}, "extra": extra}
            return fake
        return {stage: make(stage) for stage in STAGES}


@pytest.fixture
def fake_chain(monkeypatch):
    def install(recorder):
        monkeypatch.setattr(stage_module, "STAGE_FUNCTIONS", recorder.functions())
        return recorder
    # The report itself is tested in test_report.py; here only what was run matters.
    monkeypatch.setattr("keras_dnnopt.pipeline.runner.write_card",
                        lambda run, records, command, seconds: {"stages": list(records)})
    return install


def _stage_folders(out):
    return sorted(name for name in os.listdir(out / "stages"))


def test_second_run_reuses_every_finished_stage(tmp_path, fake_chain):
    config = load_config(None, {"report": {"plots": False}})
    first = fake_chain(_Recorder())
    optimize(config, str(tmp_path), log=lambda _: None)
    assert first.ran == list(CHAIN)
    second = fake_chain(_Recorder())
    lines = []
    optimize(config, str(tmp_path), log=lines.append)
    assert second.ran == []
    assert sum("reused" in line for line in lines) == len(CHAIN)


def test_force_redoes_every_stage(tmp_path, fake_chain):
    config = defaults()
    fake_chain(_Recorder())
    optimize(config, str(tmp_path), log=lambda _: None)
    again = fake_chain(_Recorder())
    optimize(config, str(tmp_path), force=True, log=lambda _: None)
    assert again.ran == list(CHAIN)


def test_changed_setting_redoes_its_stage_and_what_follows(tmp_path, fake_chain):
    fake_chain(_Recorder())
    optimize(defaults(), str(tmp_path), log=lambda _: None)
    again = fake_chain(_Recorder())
    lines = []
    optimize(load_config(None, {"prune": {"epochs": 2}}), str(tmp_path), overwrite=True,
             log=lines.append)
    assert again.ran == ["prune", "quantize", "export"]
    assert any("redoing" in line for line in lines)


def test_changed_setting_is_refused_without_overwrite(tmp_path, fake_chain):
    from keras_dnnopt.pipeline.runner import ConfigChanged

    fake_chain(_Recorder())
    optimize(defaults(), str(tmp_path), log=lambda _: None)
    again = fake_chain(_Recorder())
    with pytest.raises(ConfigChanged, match=r"another configuration \(changed: prune.epochs "
                                            r"8 -> 2\)") as info:
        optimize(load_config(None, {"prune": {"epochs": 2}}), str(tmp_path), log=print)
    assert info.value.changes == ["prune.epochs"]
    assert again.ran == []
    # Output-only settings do not count as a change.
    optimize(load_config(None, {"verbose": "quiet"}), str(tmp_path), log=lambda _: None)
    assert again.ran == []


def test_stage_lines_of_stages_without_numbers_say_what_they_did(tmp_path, fake_chain):
    fake_chain(_Recorder())
    lines = []
    optimize(defaults(), str(tmp_path), log=lines.append)
    done = [line for line in lines if "done in" in line]
    assert all(not line.rstrip().endswith(":") for line in done), done
    assert done[0].endswith(": data")  # the stand-in data stage's summary


def test_interrupt_names_the_stage_and_keeps_its_folder_in_progress(tmp_path, fake_chain):
    from keras_dnnopt.pipeline.runner import Interrupted

    fake_chain(_Recorder(interrupt_at="student"))
    with pytest.raises(Interrupted, match=r"^interrupted during student; run the same "
                                          r"command again to resume$"):
        optimize(defaults(), str(tmp_path), log=lambda _: None)
    assert (tmp_path / ".partial" / "3_student" / "part.txt").is_file()
    resumed = fake_chain(_Recorder())
    optimize(defaults(), str(tmp_path), log=lambda _: None)
    assert resumed.ran == ["student", "distill", "prune", "quantize", "export"]
    assert not os.listdir(tmp_path / ".partial")


def test_out_that_cannot_be_created_names_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as info:
        main(["optimize", "--stages", "data", "--out", str(blocker / "sub")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dnnopt optimize: error: --out: cannot create the folder"), err
    assert str(blocker / "sub") in err


def test_pipeline_does_not_import_the_package_root():
    import ast
    import pathlib

    folder = pathlib.Path(stage_module.__file__).parent
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "keras_dnnopt":
                pytest.fail(f"{path.name}:{node.lineno} imports from the package root")


def test_failed_stage_keeps_what_finished_and_leaves_no_partial_folder(tmp_path, fake_chain):
    from keras_dnnopt.pipeline import StageFailed

    fake_chain(_Recorder(fail_at="prune"))
    with pytest.raises(StageFailed, match="Stage `prune` failed: ValueError: boom"):
        optimize(defaults(), str(tmp_path), log=lambda _: None)
    assert _stage_folders(tmp_path) == ["1_data", "2_baseline", "3_student", "4_distill"]
    resumed = fake_chain(_Recorder())
    optimize(defaults(), str(tmp_path), log=lambda _: None)
    assert resumed.ran == ["prune", "quantize", "export"]


def test_interrupted_stage_leaves_no_half_written_file(tmp_path, fake_chain):
    fake_chain(_Recorder(interrupt_at="distill"))
    with pytest.raises(KeyboardInterrupt):
        optimize(defaults(), str(tmp_path), log=lambda _: None)
    assert _stage_folders(tmp_path) == ["1_data", "2_baseline", "3_student"]
    for folder in _stage_folders(tmp_path):
        record = json.loads((tmp_path / "stages" / folder / "stage.json").read_text())
        assert record["stage"] == folder.split("_", 1)[1]


def test_temporaries_of_a_killed_run_are_cleaned_at_the_next_start(tmp_path, fake_chain):
    leftover = tmp_path / "stages" / ".tmp-prune-abc"
    leftover.mkdir(parents=True)
    (leftover / "model.keras").write_text("half")
    fake_chain(_Recorder())
    optimize(defaults(), str(tmp_path), log=lambda _: None)
    assert not leftover.exists()


def test_out_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "report.txt"
    target.write_text("mine")
    with pytest.raises(ValueError, match="`out` must be a folder"):
        optimize(defaults(), str(target))
    assert target.read_text() == "mine"


# -- command line ----------------------------------------------------------------------

def test_print_config_is_a_valid_config_file(tmp_path, capsys):
    assert main(["optimize", "--print-config", "--dataset", "digits"]) == 0
    text = capsys.readouterr().out
    path = _write(tmp_path, text)
    assert load_config(path) == defaults()


def test_bad_config_file_fails_with_one_line_naming_the_key(tmp_path, capsys):
    path = _write(tmp_path, "prune: {target_sparsity: 2}\n")
    with pytest.raises(SystemExit) as info:  # bad input: exit status 2 (cli/main.py)
        main(["optimize", "--config", path, "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "prune.target_sparsity" in err and "Received: prune.target_sparsity=2" in err
    assert not (tmp_path / "o").exists()


def test_bad_stage_list_on_the_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:  # bad input: exit status 2 (cli/main.py)
        main(["optimize", "--stages", "data,tune", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert "`stages` must be a list of stage names" in capsys.readouterr().err


# -- one real run of the chain ---------------------------------------------------------

TINY = {
    "batch_size": 128,
    "verbose": "quiet",
    "data": {"augment": True},
    "baseline": {"alpha": 0.25, "epochs": 2, "warmup_epochs": 1},
    "student": {"alpha": 0.25, "epochs": 1},
    "distill": {"epochs": 1},
    "prune": {"epochs": 1, "target_sparsity": 0.5, "frequency": 2},
    "quantize": {"epochs": 1, "calibration_steps": 2},
    "export": {"latency_runs": 3},
    "report": {"gradcam_images": 2},
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("optimize")
    lines = []
    card = optimize(load_config(None, TINY), str(out), command="test", log=lines.append)
    return out, card, lines


def test_real_chain_writes_every_stage_and_the_report(tiny_run):
    out, card, lines = tiny_run
    assert _stage_folders(out) == [f"{i}_{s}" for i, s in enumerate(CHAIN, start=1)]
    for name in ("report.md", "report.html", "metrics.json", "config.yaml",
                 "model_int8_full.tflite"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    names = [row["name"] for row in metrics["stages"]]
    assert names == list(CHAIN)
    assert set(card["plots"]) == {"training", "sparsity", "confusion", "gradcam"}
    assert sum(line.startswith("[") and "done in" in line for line in lines) == len(CHAIN)


def test_real_chain_metrics_are_measured_not_copied(tiny_run):
    out, _, _ = tiny_run
    rows = {row["name"]: row for row in json.loads((out / "metrics.json").read_text())["stages"]}
    baseline, final = rows["baseline"], rows["export"]
    # The int8 file is a fraction of the float file of the same network...
    assert final["size_bytes"] < 0.5 * rows["prune"]["size_bytes"]
    # ...and pruning to 50% shows in the gzipped float file, not the raw one.
    assert rows["prune"]["size_gzip_bytes"] < 0.8 * rows["distill"]["size_gzip_bytes"]
    assert abs(rows["prune"]["size_bytes"] - rows["distill"]["size_bytes"]) < 0.05 * rows[
        "distill"]["size_bytes"]
    assert 0.45 <= rows["prune"]["sparsity"] <= 0.55
    for row in (baseline, rows["distill"], rows["prune"], final):
        assert 0.0 <= row["accuracy"] <= 1.0 and row["latency_ms"] > 0
        assert row["params"] > 0 and row["macs"] > 0
    assert final["size_bytes_ratio"] == pytest.approx(
        final["size_bytes"] / baseline["size_bytes"])


def test_real_chain_exported_file_is_what_the_report_scores(tiny_run):
    from keras_dnnopt.evaluation import evaluate_report
    from keras_dnnopt.pipeline.stages import Run
    from keras_dnnopt.pipeline.store import StageStore

    out, _, _ = tiny_run
    config = load_config(str(out / "config.yaml"))
    run = Run(config, StageStore(str(out), STAGES))
    report = evaluate_report(str(out / "model_int8_full.tflite"), run.dataset.test)
    rows = {row["name"]: row for row in json.loads((out / "metrics.json").read_text())["stages"]}
    assert report["accuracy"] == pytest.approx(rows["export"]["accuracy"])
    quantize = json.loads((out / "stages" / "6_quantize" / "stage.json").read_text())
    assert quantize["extra"]["method"] == "qat"
    assert quantize["extra"]["route"] == ("tfmot" if USING_TF_KERAS else "native")
    report = (out / "report.md").read_text()
    assert "Quantization route: quantization-aware training" in report
    assert ("TF-MOT (tf_keras)" in report) == USING_TF_KERAS
    heatmaps = np.load(out / "stages" / "7_export" / "gradcam.npy")
    assert heatmaps.shape[0] == 2 and 0.0 <= heatmaps.min() and heatmaps.max() <= 1.0


def test_every_run_leaves_model_keras_and_model_tflite(tiny_run):
    from keras_dnnopt import load_model
    from keras_dnnopt.export import compare_outputs
    from keras_dnnopt.pipeline.stages import Run
    from keras_dnnopt.pipeline.store import StageStore

    out, _, _ = tiny_run
    # OUT/model.tflite is the chain's final file; OUT/model.keras the model it came from
    # (the QAT model), which loads back and agrees with the file.
    assert (out / "model.tflite").read_bytes() == (out / "model_int8_full.tflite").read_bytes()
    model = load_model(str(out / "model.keras"), compile=False)
    run = Run(load_config(str(out / "config.yaml")), StageStore(str(out), STAGES))
    agreement = compare_outputs(model, str(out / "model.tflite"),
                                run.normalized(run.dataset.x_test))
    assert agreement.top1_agreement >= 0.95
    assert "`model.tflite`, exported from `model.keras`" in (out / "report.md").read_text()


def test_real_chain_resumes_without_training(tiny_run, monkeypatch):
    out, _, _ = tiny_run
    recorder = _Recorder()
    monkeypatch.setattr(stage_module, "STAGE_FUNCTIONS", recorder.functions())
    before = (out / "metrics.json").read_text()
    optimize(load_config(None, TINY), str(out), command="test", log=lambda _: None)
    assert recorder.ran == []
    after = json.loads((out / "metrics.json").read_text())
    assert [row["accuracy"] for row in after["stages"]] == [
        row["accuracy"] for row in json.loads(before)["stages"]]


def test_a_folder_of_class_subfolders_is_a_dataset(tmp_path, capsys):
    from keras_dnnopt.backend import tf

    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    for name in ("cat", "dog"):
        (images / name).mkdir(parents=True)
        for i in range(10):
            png = tf.io.encode_png(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).numpy()
            (images / name / f"{i}.png").write_bytes(png)
    config = _write(tmp_path, "data: {image_size: [12, 12], validation_split: 0.2}\n")
    out = tmp_path / "out"
    assert main(["optimize", "--dataset", str(images), "--stages", "data", "--config", config,
                 "--out", str(out)]) == 0
    record = json.loads((out / "stages" / "1_data" / "stage.json").read_text())
    dataset = record["extra"]["dataset"]
    assert dataset["class_names"] == ["cat", "dog"]
    assert dataset["input_shape"] == [12, 12, 3]
    assert dataset["num_train"] + dataset["num_val"] + dataset["num_test"] == 20
    assert "[1/1] data" in capsys.readouterr().out


class _Steps:
    steps_per_epoch = 10


def _lr(schedule, step):
    return float(schedule(step)) if callable(schedule) else float(schedule)


@pytest.mark.parametrize("kind", ["warmup_cosine", "step", "one_cycle", "constant"])
def test_every_schedule_choice_peaks_at_the_learning_rate(kind):
    schedule = stage_module._schedule(_Steps(), 0.1, epochs=4, warmup_epochs=1, kind=kind)
    values = [_lr(schedule, step) for step in range(41)]
    assert max(values) == pytest.approx(0.1, rel=1e-5)
    if kind == "constant":
        assert min(values) == pytest.approx(0.1)
    else:
        assert values[-1] < 0.1 * 0.2  # ends well below its peak


def test_step_schedule_divides_by_ten_at_half_and_three_quarters():
    schedule = stage_module._schedule(_Steps(), 0.1, epochs=4, warmup_epochs=1, kind="step")
    assert _lr(schedule, 19) == pytest.approx(0.1)
    assert _lr(schedule, 21) == pytest.approx(0.01)
    assert _lr(schedule, 31) == pytest.approx(0.001)


def test_schedule_choice_is_validated(tmp_path):
    with pytest.raises(ConfigError, match=r"`baseline.schedule` must be one of 'warmup_cosine', "
                                          r"'step', 'one_cycle', 'constant'"):
        load_config(_write(tmp_path, "baseline: {schedule: cosine}\n"))
