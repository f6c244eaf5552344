"""`load_dataset`: a named, folder or `.npz` dataset (images or tabular features,
classification or regression), deduplicated, split and piped."""

import os
import zipfile

import numpy as np

from keras_dnnopt.backend import USING_TF_KERAS, keras
from keras_dnnopt.data.dedup import deduplicate as _deduplicate
from keras_dnnopt.data.normalization import adapt_normalizer
from keras_dnnopt.data.pipeline import make_pipeline, resolve_augmentation
from keras_dnnopt.data.splits import stratified_split
from keras_dnnopt.utils.validation import check_choice, check_number

_TF_DATASETS = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_FASHION_FILES = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
                  "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_DIGIT_NAMES = tuple(str(i) for i in range(10))
_FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot")
_CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                "ship", "truck")

# name -> (keras.datasets module, class names, [(file under <cache>/datasets, URL)]).
# The cache file names are those each Keras' loader looks for before downloading.
_REMOTE = {
    "mnist": ("mnist", _DIGIT_NAMES, [("mnist.npz", _TF_DATASETS + "mnist.npz")]),
    "fashion_mnist": ("fashion_mnist", _FASHION_NAMES,
                      [(os.path.join("fashion-mnist", f), _TF_DATASETS + f)
                       for f in _FASHION_FILES]),
    "cifar10": ("cifar10", _CIFAR_NAMES,
                [("cifar-10-batches-py.tar.gz" if USING_TF_KERAS
                  else "cifar-10-batches-py-target_archive", _CIFAR_URL)]),
}
# The bundled regression set (scikit-learn's, needs no download).
_REGRESSION_NAMES = ("diabetes",)
DATASET_NAMES = ("digits", *_REMOTE, *_REGRESSION_NAMES)
TASKS = ("classification", "regression")
# The arrays an `.npz` data file may hold, x with its y.
NPZ_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


class Dataset:
    """What `load_dataset` returns: pipelines, arrays and what was done to the data.

    Attributes:
        name: the dataset name, folder or `.npz` file.
        task: `"classification"` or `"regression"`.
        train, validation, test: batched `tf.data.Dataset`s of `(inputs, targets)`
            (`validation` / `test` are None when their split is 0). `train` is shuffled
            every epoch and augmented when asked; all three are normalised when asked.
        x_train, y_train, x_val, y_val, x_test, y_test: the split samples as float32
            arrays, before augmentation and normalisation, and their targets: int64
            labels for classification, float32 `(n,)` (one target) or `(n, k)`
            arrays for regression.
        input_shape: the shape of one sample, `(height, width, channels)` for images,
            `(features,)` for tabular data.
        num_classes: the number of classes; None for regression.
        class_names: the class names, index = label; `[]` for regression.
        num_outputs: the number of model outputs: `num_classes` for classification,
            the number of targets `k` for regression.
        target_mean, target_std: for regression, the mean and standard deviation (floored
            at 1e-6) of the training split's targets, one float each over all targets
            (pass them to `keras_dnnopt.models.mlp`); None for classification.
        dedup_report: the `DedupReport` of the duplicate removal, or None when skipped;
            with given test / validation sets its indices count the test samples first,
            then the validation samples, then the training samples.
        normalizer: the `Normalization` layer adapted on `x_train`, or None.
        augmentation: the augmentation applied to `train`, or None (always None for
            tabular data).
    """

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __repr__(self):
        lengths = {s: getattr(self, "y_" + s) for s in ("train", "val", "test")}
        sizes = ", ".join(f"{s}={0 if y is None else len(y)}" for s, y in lengths.items())
        head = (f"num_classes={self.num_classes}" if self.task == "classification"
                else f"num_outputs={self.num_outputs}")
        return (f"<Dataset {self.name!r} ({self.task}): {sizes}, "
                f"input_shape={self.input_shape}, {head}>")


def _keras_home():
    # Keras 3 keeps its files under $KERAS_HOME (default ~/.keras); tf_keras's
    # `get_file` ignores KERAS_HOME and always uses ~/.keras.
    if not USING_TF_KERAS and os.environ.get("KERAS_HOME"):
        return os.path.expanduser(os.environ["KERAS_HOME"])
    return os.path.join(os.path.expanduser("~"), ".keras")


def dataset_cache_paths(name):
    """The `(path, url)` pairs of the files `keras.datasets.<name>` downloads: placing a
    file at its path (downloaded elsewhere from its URL) lets the dataset load offline."""
    return [(os.path.join(_keras_home(), "datasets", file), url)
            for file, url in _REMOTE[name][2]]


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The `digits` dataset comes with scikit-learn: `pip install keras_dnnopt[data]`."
        ) from error
    digits = load_digits()
    x = digits.images.astype("float32")[..., None]  # (1797, 8, 8, 1), pixels 0..16
    return (x, digits.target.astype("int64")), None, _DIGIT_NAMES


def _load_diabetes():
    try:
        from sklearn.datasets import load_diabetes
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The `diabetes` dataset comes with scikit-learn: `pip install keras_dnnopt[data]`."
        ) from error
    diabetes = load_diabetes()  # 442 x 10 features (scaled), a continuous target
    return (diabetes.data.astype("float32"), diabetes.target.astype("float32")), None, ()


def _load_remote(name):
    module, class_names, _ = _REMOTE[name]
    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, module).load_data()
    except Exception as error:
        missing = [(p, u) for p, u in dataset_cache_paths(name) if not os.path.exists(p)]
        if not missing:
            raise
        places = "; ".join(f"{url} -> {path}" for path, url in missing)
        raise OSError(
            f"Could not download the `{name}` dataset (no network?): {error}. To use it "
            f"offline, download each file elsewhere and place it in the Keras cache: "
            f"{places}. (Keras 3 honours KERAS_HOME for the cache folder, tf_keras always "
            f"uses ~/.keras.) Or use `load_dataset('digits')`, which needs no download."
        ) from error

    def prepare(x, y):
        x = np.asarray(x, dtype="float32")
        return (x[..., None] if x.ndim == 3 else x), np.asarray(y).reshape(-1).astype("int64")

    return prepare(x_train, y_train), prepare(x_test, y_test), class_names


def _load_folder(path, image_size, color_mode):
    dataset = keras.utils.image_dataset_from_directory(
        path, labels="inferred", label_mode="int", color_mode=color_mode,
        image_size=tuple(image_size), batch_size=None, shuffle=False)
    class_names = tuple(dataset.class_names)
    images, labels = [], []
    for image, label in dataset.as_numpy_iterator():
        images.append(image)
        labels.append(label)
    if not images:
        raise ValueError(f"Found no images in the folder {path!r}.")
    return (np.stack(images).astype("float32"), np.asarray(labels, dtype="int64")), None, \
        class_names


def _npz_error(path, problem, received):
    return ValueError(f"Argument `name` (data file {path!r}): {problem}. Received: {received}")


def _check_npz_x(path, key, x):
    if x.dtype.kind not in "biuf":
        raise _npz_error(path, f"`{key}` must hold numbers", f"{key} of dtype {x.dtype}")
    if x.ndim not in (2, 3, 4):
        raise _npz_error(
            path, f"`{key}` must have rank 2 (samples, features), 3 (samples, height, "
            "width: grayscale images) or 4 (samples, height, width, channels)",
            f"{key} with shape {x.shape}")
    if x.size == 0:
        raise _npz_error(path, f"`{key}` must not be empty", f"{key} with shape {x.shape}")
    x = x.astype("float32")
    if not np.isfinite(x).all():
        raise _npz_error(path, f"`{key}` must hold finite values",
                         f"{key} with {int((~np.isfinite(x)).sum())} NaN or infinite values")
    return x[..., None] if x.ndim == 3 else x


def _check_npz_y(path, key, y, task):
    if y.dtype.kind not in "biuf":
        raise _npz_error(path, f"`{key}` must hold numbers", f"{key} of dtype {y.dtype}")
    if y.size == 0:
        raise _npz_error(path, f"`{key}` must not be empty", f"{key} with shape {y.shape}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise _npz_error(path, f"`{key}` must hold finite values",
                         f"{key} with {int((~np.isfinite(y)).sum())} NaN or infinite values")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if task == "regression":
        if y.ndim not in (1, 2):
            raise _npz_error(path, f"`{key}` must hold one target per sample, shape (n,) or "
                             "(n, k)", f"{key} with shape {y.shape}")
        return y.astype("float32")
    if y.ndim != 1:
        raise _npz_error(path, f"`{key}` must hold one integer class label per sample, shape "
                         "(n,)", f"{key} with shape {y.shape}")
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        example = y[y != np.round(y)][0]
        raise _npz_error(path, f"`{key}` hold non-integer targets, which look like "
                         "regression: pass task='regression'", f"{key} values such as {example}")
    if y.min() < 0:
        raise _npz_error(path, f"`{key}` must hold class labels >= 0 (0 to num_classes - 1)",
                         f"{key} with the label {y.min()}")
    return y.astype("int64")


def _load_npz(path, task):
    """The splits of an `.npz` data file, checked: `(train, val, test, class_names)`,
    `val` / `test` None when the file has none."""
    if not zipfile.is_zipfile(path):
        raise _npz_error(path, "the file must be a NumPy `.npz` archive (np.savez)",
                         "a file that is not a zip archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as error:  # object arrays, which would need pickle
        raise _npz_error(path, "every array must hold numbers (object arrays are not read)",
                         str(error)) from error
    except (OSError, EOFError) as error:
        raise _npz_error(path, "the file must be a NumPy `.npz` archive (np.savez)",
                         str(error)) from error
    received = "arrays " + (", ".join(sorted(arrays)) or "none")
    unknown = sorted(set(arrays) - set(NPZ_KEYS))
    if unknown:
        raise _npz_error(path, f"unknown array(s) {', '.join(unknown)}; the allowed ones are "
                         f"{', '.join(NPZ_KEYS)}", received)
    if "x_train" not in arrays or "y_train" not in arrays:
        raise _npz_error(path, "the file must hold the arrays `x_train` and `y_train`",
                         received)
    splits = {}
    for split in ("train", "val", "test"):
        x_key, y_key = "x_" + split, "y_" + split
        if (x_key in arrays) != (y_key in arrays):
            raise _npz_error(path, f"`{x_key}` and `{y_key}` go together: both or neither",
                             received)
        if x_key not in arrays:
            continue
        x = _check_npz_x(path, x_key, arrays[x_key])
        y = arrays[y_key]
        if y.ndim < 1 or len(y) != len(x):
            raise _npz_error(path, f"`{x_key}` and `{y_key}` must have the same length",
                             f"len({x_key})={len(x)}, {y_key} with shape {y.shape}")
        splits[split] = (x, _check_npz_y(path, y_key, y, task))
    sample_shape = splits["train"][0].shape[1:]
    for split, (x, _) in splits.items():
        if x.shape[1:] != sample_shape:
            raise _npz_error(path, f"the samples of `x_{split}` must have the shape of "
                             "`x_train`'s", f"x_train samples of shape {sample_shape}, "
                             f"x_{split} samples of shape {x.shape[1:]}")
    if task == "regression":
        if len({y.shape[1:] for _, y in splits.values()}) > 1:
            raise _npz_error(path, "every `y` must have the same number of targets",
                             ", ".join(f"y_{split} with shape {y.shape}"
                                       for split, (_, y) in splits.items()))
        class_names = ()
    else:
        num_classes = int(max(y.max() for _, y in splits.values())) + 1
        class_names = tuple(str(i) for i in range(num_classes))
    return splits["train"], splits.get("val"), splits.get("test"), class_names


def _random_split(n, fraction, seed, argument):
    """A seeded random hold-out split of `n` samples (regression targets have no classes
    to stratify by): `(rest, held)`, sorted int64 indices."""
    held = max(1, int(round(fraction * n)))
    if held >= n:
        raise ValueError(
            f"Argument `{argument}` leaves no training samples: {n} samples to split. "
            f"Lower it or use more data. Received: {argument}={fraction}"
        )
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


def load_dataset(name="digits", validation_split=0.1, test_split=None, batch_size=32,
                 normalize=True, augment=False, deduplicate=True, seed=0,
                 image_size=(256, 256), color_mode="rgb", cache=True, task="classification"):
    """Loads a dataset as train/validation/test `tf.data` pipelines.

    The data go through, in order: duplicate removal over the whole set (`deduplicate`,
    so no sample is in two splits), splitting (for classification `stratified_split`,
    class proportions kept in every split; for regression a seeded random permutation),
    a normaliser adapted on the training split only (`adapt_normalizer`), and
    `make_pipeline` (cache, per-epoch shuffling of the training split, batch-wise
    augmentation of the training split only, prefetch).

    Datasets:

    - `"digits"`: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), as
      `(8, 8, 1)` float32 with pixels 0..16. Always available; needs no download.
    - `"mnist"`, `"fashion_mnist"` (28x28x1), `"cifar10"` (32x32x3): through
      `keras.datasets`, pixels 0..255. They download on first use; offline, the error
      names the URL of each file and the path in the Keras cache to put it at.
    - `"diabetes"`: scikit-learn's bundled diabetes *regression* set (442 samples of 10
      scaled features, a continuous target, disease progression after one year); needs
      `task="regression"` and no download.
    - a folder path: one subfolder of images per class, read with
      `keras.utils.image_dataset_from_directory` (resized to `image_size`), loaded in
      memory.
    - the path of an `.npz` file (`np.savez`) holding `x_train` and `y_train`, and
      optionally `x_val` and `y_val`, `x_test` and `y_test` (each x with its y). `x` of
      rank 2 is tabular, `(samples, features)`; rank 3 is grayscale images (a channel
      axis is added); rank 4 is `(samples, height, width, channels)`. For
      classification `y` holds integer labels >= 0 (`num_classes` is the largest + 1);
      for regression, numbers, `(n,)` or `(n, k)`. A given validation or test set is
      used as that split, as an official test set: its fraction is then not drawn from
      the pool (and `validation_split` / `test_split` are not used for it).

    The named image sets and folders are classification sets, `"diabetes"` a regression
    one; `task` must match.

    Args:
        name: a dataset name (`"digits"`, `"mnist"`, `"fashion_mnist"`, `"cifar10"`,
            `"diabetes"`), a folder path or an `.npz` file path. Defaults to `"digits"`.
        validation_split: the fraction of samples for validation, in [0, 1); 0 gives no
            validation split. Defaults to 0.1.
        test_split: the fraction of samples for testing, in [0, 1); 0 gives no test
            split. None uses the official test set where the dataset has one (mnist,
            fashion_mnist, cifar10) and 0.2 otherwise; a number pools everything and
            splits it. The fractions are of the (deduplicated) pool. Defaults to None.
        batch_size: samples per batch, an integer > 0. Defaults to 32.
        normalize: `True` or `"per_channel"` (a `Normalization` layer with per-channel
            mean and variance; per feature for tabular data), `"global"` (one mean and
            variance), or False (none). Adapted on the training split only. Defaults to
            True.
        augment: the training-split augmentation: False, True (small rotation, zoom and
            translation), a dict of `augmentation_layers` arguments or a callable. Images
            only: tabular data take none. Defaults to False.
        deduplicate: whether to remove exact duplicates (and drop groups of identical
            inputs with conflicting labels or targets) first. Defaults to True.
        seed: the seed of splitting, shuffling and augmentation. Defaults to 0.
        image_size: for a folder, the `(height, width)` images are resized to. Defaults
            to `(256, 256)`.
        color_mode: for a folder, `"rgb"`, `"grayscale"` or `"rgba"`. Defaults to `"rgb"`.
        cache: whether the pipelines cache their samples. Defaults to True.
        task: `"classification"` (integer labels) or `"regression"` (float targets).
            Defaults to `"classification"`.

    Returns:
        A `Dataset` with `.train`, `.validation`, `.test`, the arrays, `task`,
        `input_shape`, `num_classes`, `class_names`, `num_outputs`, `target_mean`,
        `target_std`, `dedup_report`, `normalizer` and `augmentation`.

    Raises:
        ValueError: for an unknown name (listing the valid ones), a `task` the dataset
            does not have, splits outside [0, 1) or adding up to 1 or more, a class too
            small to split, augmentation of tabular data, or a bad `.npz` file (naming the
            file and the problem: missing or unknown arrays, lengths or shapes that
            differ, wrong ranks, empty, non-numeric or non-finite arrays, non-integer or
            negative labels for classification).
        OSError: when a `keras.datasets` download fails, naming the cache path and URL.

    Example:

    >>> data = load_dataset("digits", validation_split=0.1, test_split=0.2, seed=0)
    >>> data.input_shape, data.num_classes, len(data.x_train) + len(data.x_val) + len(data.x_test)
    ((8, 8, 1), 10, 1797)
    >>> model.fit(data.train, validation_data=data.validation, epochs=5)  # doctest: +SKIP
    >>> data = load_dataset("diabetes", task="regression", test_split=0.2, seed=0)
    >>> data.input_shape, data.num_outputs, data.num_classes
    ((10,), 1, None)
    """
    task = check_choice("task", task, TASKS)
    validation_split = check_number("validation_split", validation_split, low=0.0, high=1.0,
                                    high_inclusive=False)
    if test_split is not None:
        test_split = check_number("test_split", test_split, low=0.0, high=1.0,
                                  high_inclusive=False)
    if validation_split + (test_split or 0.0) >= 1.0:
        raise ValueError(
            "Arguments `validation_split` and `test_split` must add up to less than 1, to "
            f"leave training samples. Received: validation_split={validation_split}, "
            f"test_split={test_split}"
        )
    batch_size = check_number("batch_size", batch_size, low=1, integer=True)
    seed = check_number("seed", seed, low=0, integer=True)
    if normalize is True:
        normalize = "per_channel"
    if normalize not in (False, None, "per_channel", "global"):
        raise ValueError(
            "Argument `normalize` must be True, 'per_channel', 'global' or False. "
            f"Received: normalize={normalize!r}"
        )

    name = os.fspath(name) if isinstance(name, os.PathLike) else name
    if not isinstance(name, str):
        raise ValueError(f"Argument `name` must be a dataset name, a folder path or an .npz "
                         f"file path. Received: name={name!r}")
    official_val = None
    if name.lower().endswith(".npz") and not os.path.isdir(name):
        if not os.path.isfile(name):
            raise ValueError(f"Argument `name` (data file {name!r}): no such file. "
                             f"Received: name={name!r}")
        pool, official_val, official_test, class_names = _load_npz(name, task)
    else:
        if name in _REGRESSION_NAMES:
            loader_task = "regression"
        elif name in ("digits", *_REMOTE) or os.path.isdir(name):
            loader_task = "classification"
        else:
            raise ValueError(
                f"Argument `name` must be one of {', '.join(repr(n) for n in DATASET_NAMES)}, "
                "an existing folder with one subfolder per class or the path of an .npz "
                f"file. Received: name={name!r}"
            )
        if task != loader_task:
            hint = ("it has continuous targets: pass task='regression'"
                    if loader_task == "regression" else
                    "it has class labels: pass task='classification'")
            raise ValueError(
                f"Argument `task` must be {loader_task!r} for the dataset {name!r}: {hint}. "
                f"Received: task={task!r}"
            )
        if name == "digits":
            pool, official_test, class_names = _load_digits()
        elif name == "diabetes":
            pool, official_test, class_names = _load_diabetes()
        elif name in _REMOTE:
            pool, official_test, class_names = _load_remote(name)
        else:
            pool, official_test, class_names = _load_folder(name, image_size, color_mode)

    x, y = pool
    if pool[0].ndim == 2 and augment is not None and augment is not False:
        raise ValueError(
            f"Argument `augment` must be False for tabular data (samples of shape "
            f"{tuple(pool[0].shape[1:])}): the augmentations are image transforms. "
            f"Received: augment={augment!r}"
        )
    from_file = name.lower().endswith(".npz") and not os.path.isdir(name)
    if test_split is not None and official_test is not None and not from_file:
        # A number pools an official test set; a test set given in a file is kept.
        x, y = np.concatenate([x, official_test[0]]), np.concatenate([y, official_test[1]])
        official_test = None
    report = None
    if deduplicate:
        # Deduplicate the given test and validation sets and the training pool
        # together, in that order, so that a sample in several is kept in the given
        # test set first (the benchmark stays whole), then validation, and removed from
        # training (no leak).
        given = [split for split in (official_test, official_val) if split is not None]
        if given:
            sizes = [len(split[1]) for split in given]
            x_all = np.concatenate([split[0] for split in given] + [x])
            y_all = np.concatenate([split[1] for split in given] + [y])
            _, _, report = _deduplicate(x_all, y_all)
            kept = report.kept_indices
            bounds = np.cumsum([0, *sizes])
            kept_given = [kept[(kept >= lo) & (kept < hi)] - lo
                          for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
            in_train = kept[kept >= bounds[-1]] - bounds[-1]
            x, y = x[in_train], y[in_train]
            given = [(split[0][k], split[1][k])
                     for split, k in zip(given, kept_given, strict=True)]
            if official_test is not None:
                official_test = given.pop(0)
            if official_val is not None:
                official_val = given.pop(0)
        else:
            x, y, report = _deduplicate(x, y)

    def hold_out(y_pool, fraction, split_seed, argument):
        if task == "classification":
            return stratified_split(y_pool, test_size=fraction, seed=split_seed)
        return _random_split(len(y_pool), fraction, split_seed, argument)

    if official_test is not None:
        x_test, y_test = official_test
    else:
        test_split = 0.2 if test_split is None else test_split
        x_test = y_test = None
        if test_split > 0:
            rest, test = hold_out(y, test_split, seed, "test_split")
            x_test, y_test = x[test], y[test]
            x, y = x[rest], y[rest]
        validation_split = validation_split / (1.0 - test_split)
    if official_val is not None:
        x_val, y_val = official_val
    else:
        x_val = y_val = None
        if validation_split > 0:
            train, val = hold_out(y, validation_split, seed + 1, "validation_split")
            x_val, y_val = x[val], y[val]
            x, y = x[train], y[train]

    input_shape = tuple(int(d) for d in x.shape[1:])
    normalizer = adapt_normalizer(x, normalize) if normalize else None
    augmentation = resolve_augmentation(augment, input_shape, seed)
    if task == "regression":
        num_classes, num_outputs = None, 1 if y.ndim == 1 else int(y.shape[1])
        target_mean, target_std = float(np.mean(y)), max(float(np.std(y)), 1e-6)
    else:
        num_classes = num_outputs = len(class_names)
        target_mean = target_std = None

    def pipe(xs, ys, training):
        if xs is None:
            return None
        return make_pipeline(xs, ys, batch_size, training=training,
                             augment=augmentation if training else None, cache=cache,
                             normalizer=normalizer, seed=seed)

    return Dataset(
        name=name, task=task, train=pipe(x, y, True), validation=pipe(x_val, y_val, False),
        test=pipe(x_test, y_test, False), x_train=x, y_train=y, x_val=x_val, y_val=y_val,
        x_test=x_test, y_test=y_test, input_shape=input_shape, num_classes=num_classes,
        class_names=list(class_names), num_outputs=num_outputs, target_mean=target_mean,
        target_std=target_std, dedup_report=report, normalizer=normalizer,
        augmentation=augmentation,
    )
