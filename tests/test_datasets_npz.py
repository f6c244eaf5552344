"""`load_dataset` with `.npz` files, the bundled `diabetes` regression set, tabular data and
`task=`."""

import numpy as np
import pytest

from keras_dnnopt.data import DATASET_NAMES, deduplicate, load_dataset


def _save(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def _tabular(n=40, features=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    return x, (x[:, 0] * 3.0 + 1.0).astype("float32")


def _labels(n, classes=2):
    return np.arange(n) % classes


# ---------------------------------------------------------------- bad files
_X, _Y = _tabular(12)


@pytest.mark.parametrize("arrays, task, match", [
    ({"x_train": _X}, "regression", r"must hold the arrays `x_train` and `y_train`\. "
                                    r"Received: arrays x_train"),
    ({"x_train": _X, "y_train": _Y, "x_extra": _X}, "regression",
     r"unknown array\(s\) x_extra; the allowed ones are x_train, y_train, x_val, y_val, "
     r"x_test, y_test"),
    ({"x_train": _X, "y_train": _Y, "x_val": _X}, "regression",
     r"`x_val` and `y_val` go together"),
    ({"x_train": _X, "y_train": _Y[:10]}, "regression",
     r"same length\. Received: len\(x_train\)=12, y_train with shape \(10,\)"),
    ({"x_train": _X[:, 0], "y_train": _Y}, "regression",
     r"`x_train` must have rank 2 .*Received: x_train with shape \(12,\)"),
    ({"x_train": np.zeros((12, 2, 2, 2, 1)), "y_train": _Y}, "regression", r"must have rank 2"),
    ({"x_train": _X, "y_train": _Y, "x_test": _X[:, :4], "y_test": _Y}, "regression",
     r"`x_test` must have the shape of `x_train`'s\. Received: x_train samples of shape "
     r"\(5,\), x_test samples of shape \(4,\)"),
    ({"x_train": np.array([["a"] * 5] * 12), "y_train": _Y}, "regression",
     r"`x_train` must hold numbers\. Received: x_train of dtype <U1"),
    ({"x_train": _X, "y_train": np.array(["a"] * 12)}, "regression",
     r"`y_train` must hold numbers"),
    ({"x_train": np.zeros((0, 5)), "y_train": np.zeros(0)}, "regression",
     r"`x_train` must not be empty"),
    ({"x_train": np.where(np.eye(12, 5) > 0, np.nan, _X), "y_train": _Y}, "regression",
     r"`x_train` must hold finite values\. Received: x_train with 5 NaN or infinite"),
    ({"x_train": _X, "y_train": np.where(np.arange(12) == 3, np.inf, _Y)}, "regression",
     r"`y_train` must hold finite values"),
    ({"x_train": _X, "y_train": _Y}, "classification",
     r"`y_train` hold non-integer targets, which look like regression: pass "
     r"task='regression'"),
    ({"x_train": _X, "y_train": _labels(12) - 1}, "classification",
     r"class labels >= 0.*Received: y_train with the label -1"),
    ({"x_train": _X, "y_train": np.zeros((12, 2, 2))}, "regression",
     r"`y_train` must hold one target per sample"),
])
def test_bad_files(tmp_path, arrays, task, match):
    path = _save(tmp_path, **arrays)
    with pytest.raises(ValueError, match=r"Argument `name` \(data file '.*data\.npz'\): "):
        load_dataset(path, task=task)
    with pytest.raises(ValueError, match=match):
        load_dataset(path, task=task)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ValueError, match=r"data file '.*nothere\.npz'\): no such file"):
        load_dataset(str(tmp_path / "nothere.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"data file '.*bad\.npz'\): the file must be"):
        load_dataset(str(bad))


def test_integer_valued_float_labels_are_classification(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 3))
    path = _save(tmp_path, x_train=x, y_train=_labels(20).astype("float64"))
    data = load_dataset(path, test_split=0.2, validation_split=0.2, normalize=False)
    assert data.y_train.dtype == np.int64 and data.num_classes == 2


# ---------------------------------------------------------------- good files
def test_given_splits_are_used_as_such(tmp_path):
    x, y = _tabular(60)
    path = _save(tmp_path, x_train=x[:40], y_train=y[:40], x_val=x[40:48], y_val=y[40:48],
                 x_test=x[48:], y_test=y[48:])
    data = load_dataset(path, task="regression", test_split=0.3, normalize=False)
    np.testing.assert_array_equal(data.x_val, x[40:48])
    np.testing.assert_array_equal(data.y_test, y[48:])
    np.testing.assert_array_equal(data.x_train, x[:40])  # nothing drawn from the pool
    assert data.dedup_report.num_input == 60


def test_given_test_only_draws_validation_from_the_pool(tmp_path):
    x, y = _tabular(50)
    path = _save(tmp_path, x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    data = load_dataset(path, task="regression", validation_split=0.25, normalize=False)
    np.testing.assert_array_equal(data.x_test, x[40:])
    assert (len(data.y_train), len(data.y_val)) == (30, 10)


def test_given_validation_only_draws_test_from_the_pool(tmp_path):
    x, y = _tabular(50)
    path = _save(tmp_path, x_train=x[:40], y_train=y[:40], x_val=x[40:], y_val=y[40:])
    data = load_dataset(path, task="regression", test_split=0.25, normalize=False)
    np.testing.assert_array_equal(data.x_val, x[40:])
    assert (len(data.y_train), len(data.y_test)) == (30, 10)


def test_duplicates_across_given_splits_stay_in_test(tmp_path):
    x, y = _tabular(30)
    x_test = np.concatenate([x[:2], x[25:]])
    y_test = np.concatenate([y[:2], y[25:]])
    path = _save(tmp_path, x_train=x[:25], y_train=y[:25], x_test=x_test, y_test=y_test)
    data = load_dataset(path, task="regression", validation_split=0.0, normalize=False)
    assert len(data.y_test) == 7 and len(data.y_train) == 23


def test_rank3_gets_a_channel_axis_and_trains_through_batches(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(40, 6, 6), dtype=np.uint8)
    path = _save(tmp_path, x_train=x, y_train=_labels(40, 4))
    data = load_dataset(path, validation_split=0.2, test_split=0.2, batch_size=8,
                        augment=True)
    assert data.input_shape == (6, 6, 1)
    assert (data.task, data.num_classes, data.num_outputs) == ("classification", 4, 4)
    assert data.class_names == ["0", "1", "2", "3"]
    assert data.target_mean is None and data.target_std is None
    images, labels = next(iter(data.train))
    assert tuple(images.shape) == (8, 6, 6, 1) and labels.dtype.name == "int64"
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 40


def test_tabular_shapes_and_per_feature_normalization(tmp_path):
    x, y = _tabular(50, features=4)
    x = x * np.array([1.0, 10.0, 100.0, 1000.0], "float32") + 5.0
    path = _save(tmp_path, x_train=x, y_train=np.stack([y, -y], axis=1))
    data = load_dataset(path, task="regression", validation_split=0.2, test_split=0.2,
                        batch_size=16)
    assert data.input_shape == (4,)
    assert data.num_outputs == 2 and data.y_train.shape[1] == 2
    assert data.augmentation is None
    features, targets = next(iter(data.train))
    assert tuple(features.shape) == (16, 4) and targets.dtype.name == "float32"
    normalized = np.asarray(data.normalizer(data.x_train))
    np.testing.assert_allclose(normalized.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(normalized.std(axis=0), 1.0, atol=1e-2)


def test_tabular_refuses_augmentation(tmp_path):
    x, y = _tabular()
    path = _save(tmp_path, x_train=x, y_train=y)
    with pytest.raises(ValueError, match=r"`augment` must be False for tabular data"):
        load_dataset(path, task="regression", augment=True)


def test_regression_targets_and_statistics(tmp_path):
    x, y = _tabular(50)
    path = _save(tmp_path, x_train=x, y_train=y[:, None].astype("float64"))
    data = load_dataset(path, task="regression", validation_split=0.2, test_split=0.2)
    assert data.y_train.shape == (len(data.x_train),) and data.y_train.dtype == np.float32
    assert data.num_classes is None and data.class_names == []
    assert data.target_mean == pytest.approx(float(data.y_train.mean()), rel=1e-5)
    assert data.target_std == pytest.approx(float(data.y_train.std()), rel=1e-5)
    constant = _save(tmp_path, "constant.npz", x_train=x, y_train=np.ones(50))
    assert load_dataset(constant, task="regression").target_std == 1e-6


def test_regression_split_is_seeded(tmp_path):
    x, y = _tabular(50)
    path = _save(tmp_path, x_train=x, y_train=y)
    a, b = (load_dataset(path, task="regression", seed=3, normalize=False) for _ in range(2))
    c = load_dataset(path, task="regression", seed=4, normalize=False)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    np.testing.assert_array_equal(a.y_val, b.y_val)
    assert not np.array_equal(a.y_test, c.y_test)
    assert len(a.y_train) + len(a.y_val) + len(a.y_test) == 50


def test_deduplicate_with_float_targets():
    x = np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0], [3.0, 4.0], [5.0, 6.0]])
    y = np.array([0.5, 0.5, 1.0, 1.5, 2.0])
    x_clean, y_clean, report = deduplicate(x, y)
    assert y_clean.tolist() == [0.5, 2.0]
    assert [g.tolist() for g in report.conflict_groups] == [[2, 3]]


# ---------------------------------------------------------------- diabetes and task
def test_diabetes_loads():
    data = load_dataset("diabetes", task="regression", validation_split=0.1, test_split=0.2)
    assert "diabetes" in DATASET_NAMES and DATASET_NAMES[0] == "digits"
    total = len(data.y_train) + len(data.y_val) + len(data.y_test)
    assert total == data.dedup_report.num_output == 442 - (
        data.dedup_report.num_input - data.dedup_report.num_output)
    assert data.input_shape == (10,) and data.num_outputs == 1
    assert len(data.y_test) == round(0.2 * total)
    assert 100 < data.target_mean < 200 and 50 < data.target_std < 100
    features, targets = next(iter(data.train))
    assert tuple(features.shape) == (32, 10) and targets.dtype.name == "float32"


@pytest.mark.parametrize("name, task, match", [
    ("diabetes", "classification", r"`task` must be 'regression' for the dataset "
                                   r"'diabetes'.*pass task='regression'"),
    ("digits", "regression", r"`task` must be 'classification' for the dataset 'digits'"),
    ("digits", "ranking", r"`task` must be one of 'classification', 'regression'"),
])
def test_task_must_match_the_dataset(name, task, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(name, task=task)
