"""keras_dnnopt.data: datasets, deduplication, stratified splits, normalisation,
augmentation and pipelines, checked against independent NumPy/scikit-learn references."""

import os

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold

from keras_dnnopt.backend import USING_TF_KERAS, keras, tf
from keras_dnnopt.data import (
    DATASET_NAMES,
    adapt_normalizer,
    augmentation_layers,
    deduplicate,
    load_dataset,
    make_pipeline,
    stratified_split,
)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return data.images.astype("float32")[..., None], data.target


def _batches(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


# ---------------------------------------------------------------- load_dataset


def test_digits_shapes_splits_and_stratification(digits):
    x_all, y_all = digits
    data = load_dataset("digits", validation_split=0.1, test_split=0.2, batch_size=64,
                        normalize=False, seed=0)
    assert data.input_shape == (8, 8, 1)
    assert data.num_classes == 10 and data.class_names == [str(i) for i in range(10)]
    sizes = [len(data.y_train), len(data.y_val), len(data.y_test)]
    assert sum(sizes) == len(y_all) == 1797
    assert sizes[2] == round(0.2 * 1797) and sizes[1] == round(0.1 / 0.8 * (1797 - sizes[2]))
    for x in (data.x_train, data.x_val, data.x_test):
        assert x.dtype == np.float32 and x.shape[1:] == (8, 8, 1)
        assert x.min() == 0.0 and x.max() == 16.0
    # Every image is in exactly one split (no overlap, nothing lost).
    joined = np.concatenate([data.x_train, data.x_val, data.x_test]).reshape(1797, -1)
    assert len(np.unique(joined, axis=0)) == len(np.unique(x_all.reshape(1797, -1), axis=0))
    # Class proportions kept in every split: within one sample of the exact share.
    overall = np.bincount(y_all, minlength=10) / len(y_all)
    for y in (data.y_train, data.y_val, data.y_test):
        np.testing.assert_array_less(np.abs(np.bincount(y, minlength=10) - overall * len(y)),
                                     1.0 + 1e-9)
    x, y = _batches(data.test)
    assert x.shape == (sizes[2], 8, 8, 1)
    np.testing.assert_array_equal(y, data.y_test)  # evaluation pipelines keep the order


def test_normalizer_is_adapted_on_training_split_only():
    data = load_dataset("digits", validation_split=0.2, test_split=0.2, seed=1)
    mean = np.asarray(data.normalizer.mean).reshape(-1)
    variance = np.asarray(data.normalizer.variance).reshape(-1)
    np.testing.assert_allclose(mean, [data.x_train.mean()], rtol=1e-5)
    np.testing.assert_allclose(variance, [data.x_train.var()], rtol=1e-4)
    held_out = np.concatenate([data.x_val, data.x_test])
    assert abs(held_out.mean() - data.x_train.mean()) > 1e-3  # statistics would differ
    # The test pipeline is standardised with the training statistics.
    x, _ = _batches(data.test)
    expected = (data.x_test - data.x_train.mean()) / np.sqrt(data.x_train.var())
    np.testing.assert_allclose(x, expected, atol=1e-4)
    assert abs(x.mean()) > 1e-4  # not re-standardised on its own statistics


def test_training_pipeline_augments_and_reshuffles_each_epoch():
    data = load_dataset("digits", validation_split=0.1, test_split=0.1, normalize=False,
                        augment=True, batch_size=256, seed=0)
    x1, y1 = _batches(data.train)
    x2, y2 = _batches(data.train)
    assert sorted(y1.tolist()) == sorted(data.y_train.tolist())
    assert not np.array_equal(y1, y2)  # a new order every epoch
    assert x1.shape == data.x_train.shape
    # Augmented: no training image comes out unchanged, so the batch is not a permutation
    # of the raw training images.
    raw = {image.tobytes() for image in data.x_train}
    unchanged = sum(image.tobytes() in raw for image in x1)
    assert unchanged < 0.05 * len(x1)
    # Validation and test are never augmented.
    np.testing.assert_array_equal(_batches(data.validation)[0], data.x_val)
    np.testing.assert_array_equal(_batches(data.test)[0], data.x_test)


def test_zero_splits_give_no_pipeline():
    data = load_dataset("digits", validation_split=0.0, test_split=0.0, normalize=False)
    assert data.validation is None and data.test is None and data.x_val is None
    assert len(data.y_train) == 1797


def _fake_mnist(n_train=100, n_test=10):
    rng = np.random.default_rng(0)
    return ((rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), np.arange(n_train) % 10),
            (rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), np.arange(n_test) % 10))


def test_keras_dataset_adds_channel_axis_and_uses_official_test(monkeypatch):
    train, test = _fake_mnist()
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: (train, test))
    data = load_dataset("mnist", validation_split=0.2, normalize=False, seed=0)
    assert data.input_shape == (28, 28, 1) and data.num_classes == 10
    np.testing.assert_array_equal(data.x_test, test[0][..., None].astype("float32"))
    assert len(data.y_train) + len(data.y_val) == 100 and len(data.y_val) == 20


def test_offline_error_names_cache_path_and_url(monkeypatch, tmp_path):
    def offline():
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- "
                        "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    home = tmp_path / ("home/.keras" if USING_TF_KERAS else "keras_home")
    expected = os.path.join(str(home), "datasets", "mnist.npz")
    with pytest.raises(OSError, match="Could not download the `mnist` dataset") as info:
        load_dataset("mnist")
    message = str(info.value)
    assert expected in message
    assert "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz" in message
    assert "Temporary failure in name resolution" in message


def test_offline_error_not_raised_when_file_is_cached(monkeypatch, tmp_path):
    def broken():
        raise ValueError("corrupt file")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    cached = tmp_path / ".keras" / "datasets" if USING_TF_KERAS else tmp_path / "datasets"
    cached.mkdir(parents=True)
    (cached / "mnist.npz").write_bytes(b"")
    monkeypatch.setattr(keras.datasets.mnist, "load_data", broken)
    with pytest.raises(ValueError, match="corrupt file"):  # the loader's own error
        load_dataset("mnist")


def test_folder_of_class_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(6):
            image = rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)
            png = tf.io.encode_png(image).numpy()
            (tmp_path / name / f"{i}.png").write_bytes(png)
            written[image.astype("float32").tobytes()] = name
    data = load_dataset(str(tmp_path), validation_split=0.25, test_split=0.25,
                        image_size=(8, 8), color_mode="grayscale", normalize=False,
                        batch_size=4)
    assert data.class_names == ["cat", "dog"] and data.num_classes == 2
    assert data.input_shape == (8, 8, 1)
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val),
                 (data.x_test, data.y_test)):
        for image, label in zip(x, y, strict=True):
            assert written[image.tobytes()] == data.class_names[label]
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 12


@pytest.mark.parametrize("name", ["imagenet", "MNIST", "no/such/folder"])
def test_unknown_dataset_lists_valid_names(name):
    with pytest.raises(ValueError, match="must be one of 'digits', 'mnist', 'fashion_mnist'"):
        load_dataset(name)
    assert DATASET_NAMES == ("digits", "mnist", "fashion_mnist", "cifar10", "diabetes")


@pytest.mark.parametrize("kwargs, match", [
    ({"validation_split": -0.1}, r"`validation_split` must be in \[0.0, 1.0\)"),
    ({"validation_split": 1.0}, r"`validation_split` must be in \[0.0, 1.0\)"),
    ({"test_split": 1.0}, r"`test_split` must be in \[0.0, 1.0\)"),
    ({"validation_split": 0.5, "test_split": 0.5}, "must add up to less than 1"),
    ({"batch_size": 0}, "`batch_size` must be >= 1"),
    ({"normalize": "minmax"}, "`normalize` must be True"),
])
def test_load_dataset_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("digits", **kwargs)


def test_load_dataset_splits_just_inside_the_bounds():
    data = load_dataset("digits", validation_split=0.45, test_split=0.45, normalize=False)
    assert 0 < len(data.y_train) < 0.15 * 1797


# ---------------------------------------------------------------- deduplicate


def test_deduplicate_digits_with_injected_duplicates(digits):
    x, y = digits[0][:200], digits[1][:200]
    consistent = [3, 17, 17, 42]  # 17 twice: a group of three
    conflicting = [5, 60]
    flipped = (y[conflicting] + 1) % 10
    x_dirty = np.concatenate([x, x[consistent], x[conflicting]])
    y_dirty = np.concatenate([y, y[consistent], flipped])
    assert len(np.unique(x.reshape(200, -1), axis=0)) == 200  # the base has no duplicates

    x_clean, y_clean, report = deduplicate(x_dirty, y_dirty)
    assert report.num_input == 206
    assert report.num_duplicates_removed == 4
    assert report.num_conflicts_removed == 4  # both copies of each conflicting image
    assert sorted(g.tolist() for g in report.duplicate_groups) == [[3, 200], [17, 201, 202],
                                                                   [42, 203]]
    assert sorted(g.tolist() for g in report.conflict_groups) == [[5, 204], [60, 205]]
    keep = np.setdiff1d(np.arange(200), conflicting)
    np.testing.assert_array_equal(x_clean, x[keep])
    np.testing.assert_array_equal(y_clean, y[keep])
    np.testing.assert_array_equal(report.kept_indices, keep)
    assert report.to_dict()["num_output"] == 198
    assert "198 kept" in str(report)


def test_deduplicate_without_labels_and_in_load_dataset(digits, monkeypatch):
    x = digits[0][:20]
    x_clean, y_clean, report = deduplicate(np.concatenate([x, x[:3]]))
    assert y_clean is None and len(x_clean) == 20 and report.num_duplicates_removed == 3
    # load_dataset deduplicates before splitting, so no image is in two splits.
    train = (np.concatenate([x[:, :, :, 0]] * 2).astype("uint8"), np.arange(40) % 10)
    test = (x[:5, :, :, 0].astype("uint8"), np.arange(5) % 10)
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: (train, test))
    data = load_dataset("mnist", validation_split=0.0, normalize=False)
    assert data.dedup_report.num_input == 45 and data.dedup_report.num_output == 20
    # Images in both sets stay in the test set and leave the training set.
    assert len(data.y_test) == 5 and len(data.y_train) == 15
    train_images = {image.tobytes() for image in data.x_train}
    assert not any(image.tobytes() in train_images for image in data.x_test)


def test_deduplicate_length_mismatch():
    with pytest.raises(ValueError, match="same number of samples. Received: len.x.=3"):
        deduplicate(np.zeros((3, 2)), np.zeros(4))


# ---------------------------------------------------------------- stratified_split


def test_stratified_hold_out_keeps_proportions():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    train, test = stratified_split(y, test_size=0.3, seed=0)
    np.testing.assert_array_equal(np.bincount(y[test]), [15, 9, 6])
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 100
    # A different seed picks different samples with the same proportions.
    _, other = stratified_split(y, test_size=0.3, seed=1)
    assert not np.array_equal(test, other)
    np.testing.assert_array_equal(np.bincount(y[other]), [15, 9, 6])
    # One-hot labels give the same split.
    _, from_one_hot = stratified_split(np.eye(3)[y], test_size=0.3, seed=0)
    np.testing.assert_array_equal(from_one_hot, test)


def test_stratified_k_fold_matches_sklearn_fold_counts(digits):
    y = digits[1][:300]
    folds = stratified_split(y, n_splits=5, seed=0)
    reference = StratifiedKFold(n_splits=5).split(np.zeros(len(y)), y)
    ours = sorted(np.bincount(y[val], minlength=10).tolist() for _, val in folds)
    theirs = sorted(np.bincount(y[val], minlength=10).tolist() for _, val in reference)
    assert ours == theirs
    validation = np.concatenate([val for _, val in folds])
    np.testing.assert_array_equal(np.sort(validation), np.arange(len(y)))  # each sample once
    for train, val in folds:
        assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(y)


def test_stratified_split_too_few_samples_per_class():
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    assert len(stratified_split(y, n_splits=2, seed=0)) == 2  # 2 folds: fine
    with pytest.raises(ValueError, match=r"\(class 2 has 2\), so that every fold holds every "
                                         r"class. Received: n_splits=3"):
        stratified_split(y, n_splits=3)
    with pytest.raises(ValueError, match="`n_splits` must be >= 2. Received: n_splits=1"):
        stratified_split(y, n_splits=1)
    with pytest.raises(ValueError, match="at least 2 samples of every class"):
        stratified_split(np.array([0, 0, 1]), test_size=0.5)


@pytest.mark.parametrize("test_size", [0.0, 1.0, -0.2])
def test_stratified_split_bad_test_size(test_size):
    y = np.repeat([0, 1], 10)
    with pytest.raises(ValueError, match=r"`test_size` must be in \(0.0, 1.0\)"):
        stratified_split(y, test_size=test_size)
    assert len(stratified_split(y, test_size=0.1)[1]) == 2  # just inside


def test_stratified_split_needs_exactly_one_mode():
    with pytest.raises(ValueError, match="exactly one of `test_size`"):
        stratified_split([0, 1, 0, 1])
    with pytest.raises(ValueError, match="exactly one of `test_size`"):
        stratified_split([0, 1, 0, 1], test_size=0.5, n_splits=2)


# ---------------------------------------------------------------- normalisation


def test_adapt_normalizer_per_channel_and_global(rng):
    x = rng.normal([1.0, -2.0, 5.0], [1.0, 2.0, 3.0], size=(200, 4, 4, 3)).astype("float32")
    out = np.asarray(adapt_normalizer(x)(x))
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1.0, atol=1e-3)
    out = np.asarray(adapt_normalizer(x, mode="global")(x))
    np.testing.assert_allclose((out.mean(), out.std()), (0.0, 1.0), atol=1e-3)
    assert np.ptp(out.mean(axis=(0, 1, 2))) > 1.0  # one statistic for all channels
    with pytest.raises(ValueError, match="`mode` must be one of 'per_channel', 'global'"):
        adapt_normalizer(x, mode="minmax")


# ---------------------------------------------------------------- augmentation / pipeline


def test_augmentation_layers_transform_only_when_training(rng):
    images = rng.uniform(0, 1, (6, 8, 8, 1)).astype("float32")
    augment = augmentation_layers(rotation=0.1, zoom=0.1, translation=0.1, crop=1,
                                  flip="horizontal", input_shape=(8, 8, 1), seed=0)
    names = [type(layer).__name__ for layer in augment.layers]
    assert names == ["RandomRotation", "RandomZoom", "RandomTranslation", "ZeroPadding2D",
                     "RandomCrop", "RandomFlip"]
    trained = np.asarray(augment(images, training=True))
    assert trained.shape == images.shape and not np.allclose(trained, images)
    flip = augmentation_layers(flip="horizontal", seed=0)
    np.testing.assert_array_equal(np.asarray(flip(images, training=False)), images)
    identity = augmentation_layers()
    np.testing.assert_array_equal(np.asarray(identity(images, training=True)), images)


@pytest.mark.parametrize("kwargs, match", [
    ({"rotation": 0.0}, r"`rotation` must be in \(0.0, 0.5\]"),
    ({"rotation": 0.6}, r"`rotation` must be in \(0.0, 0.5\]"),
    ({"zoom": 1.0}, r"`zoom` must be in \(0.0, 1.0\)"),
    ({"translation": -0.1}, r"`translation` must be in \(0.0, 1.0\)"),
    ({"crop": 2}, "`crop` needs the image size"),
    ({"crop": 0, "input_shape": (8, 8, 1)}, "`crop` must be >= 1"),
    ({"flip": "diagonal"}, "`flip` must be one of 'horizontal'"),
])
def test_augmentation_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        augmentation_layers(**kwargs)
    assert augmentation_layers(rotation=0.5, zoom=0.9, crop=1, input_shape=(8, 8, 1))


def test_make_pipeline_order_and_validation(rng):
    x = rng.normal(size=(10, 8, 8, 1)).astype("float32")
    y = np.arange(10)
    batches = list(make_pipeline(x, y, batch_size=4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)  # in order
    shuffled = np.concatenate([b[1] for b in make_pipeline(x, y, 4, training=True, seed=0)])
    assert sorted(shuffled.tolist()) == y.tolist() and not np.array_equal(shuffled, y)
    only_x = next(iter(make_pipeline(x, batch_size=3)))
    assert tuple(only_x.shape) == (3, 8, 8, 1)
    with pytest.raises(ValueError, match=r"same number of samples. Received: len\(x\)=10"):
        make_pipeline(x, y[:9])
    with pytest.raises(ValueError, match="Augmentation belongs to training pipelines only"):
        make_pipeline(x, y, augment=True, training=False)
    with pytest.raises(ValueError, match="`batch_size` must be >= 1. Received: batch_size=0"):
        make_pipeline(x, y, batch_size=0)
    with pytest.raises(ValueError, match="Argument `augment` must be None, a bool"):
        make_pipeline(x, y, training=True, augment="yes")


def test_pipeline_feeds_a_model():
    data = load_dataset("digits", validation_split=0.1, test_split=0.1, augment=True,
                        batch_size=128, seed=0)
    model = keras.Sequential([
        keras.Input(shape=data.input_shape),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(data.num_classes, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(data.train, validation_data=data.validation, epochs=3, shuffle=False,
                        verbose=0)
    assert history.history["val_accuracy"][-1] > 0.3  # well above chance (0.1)
