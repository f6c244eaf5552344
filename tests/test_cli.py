import json

import pytest

from keras_dnnopt.backend import KERAS_NAME, keras
from keras_dnnopt.cli.main import main


def test_info_names_the_keras_in_use(capsys):
    assert main(["info"]) == 0
    assert KERAS_NAME in capsys.readouterr().out


def test_profile_builder_json_matches_the_model(capsys):
    from keras_dnnopt import models

    assert main(["profile", "mobilenet_v1", "--input-shape", "32,32,3", "--num-classes", "10",
                 "--alpha", "0.25", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    model = models.mobilenet_v1(input_shape=(32, 32, 3), num_classes=10, alpha=0.25)
    assert data["params"] == model.count_params()
    assert data["macs"] > 0


def test_profile_saved_model_file(tmp_path, capsys):
    model = keras.Sequential([keras.Input(shape=(8, 8, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    path = tmp_path / "m.keras"
    model.save(str(path))
    assert main(["profile", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Conv2D" in out and f"{model.count_params():,}" in out


def test_profile_rejects_missing_file_and_bad_shape(capsys):
    with pytest.raises(SystemExit, match="Received: 'nope.keras'"):
        main(["profile", "nope.keras"])
    with pytest.raises(SystemExit):
        main(["profile", "mobilenet_v1", "--input-shape", "32,x,3"])
    assert "--input-shape must be comma-separated" in capsys.readouterr().err
