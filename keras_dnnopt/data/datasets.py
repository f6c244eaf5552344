"""`load_dataset`: a named or folder image dataset, deduplicated, split and piped."""

import os

import numpy as np

from keras_dnnopt.backend import USING_TF_KERAS, keras
from keras_dnnopt.data.dedup import deduplicate as _deduplicate
from keras_dnnopt.data.normalization import adapt_normalizer
from keras_dnnopt.data.pipeline import make_pipeline, resolve_augmentation
from keras_dnnopt.data.splits import stratified_split
from keras_dnnopt.utils.validation import check_number

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
DATASET_NAMES = ("digits", *_REMOTE)


class Dataset:
    """What `load_dataset` returns: pipelines, arrays and what was done to the data.

    Attributes:
        name: the dataset name or folder.
        train, validation, test: batched `tf.data.Dataset`s of `(images, labels)`
            (`validation` / `test` are None when their split is 0). `train` is shuffled
            every epoch and augmented when asked; all three are normalised when asked.
        x_train, y_train, x_val, y_val, x_test, y_test: the split samples as float32
            arrays, before augmentation and normalisation, and their int labels.
        input_shape: the shape of one image, `(height, width, channels)`.
        num_classes: the number of classes.
        class_names: the class names, index = label.
        dedup_report: the `DedupReport` of the duplicate removal, or None when skipped;
            with an official test set its indices count the test samples first, then the
            training samples.
        normalizer: the `Normalization` layer adapted on `x_train`, or None.
        augmentation: the augmentation applied to `train`, or None.
    """

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __repr__(self):
        lengths = {s: getattr(self, "y_" + s) for s in ("train", "val", "test")}
        sizes = ", ".join(f"{s}={0 if y is None else len(y)}" for s, y in lengths.items())
        return (f"<Dataset {self.name!r}: {sizes}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes}>")


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


def load_dataset(name="digits", validation_split=0.1, test_split=None, batch_size=32,
                 normalize=True, augment=False, deduplicate=True, seed=0,
                 image_size=(256, 256), color_mode="rgb", cache=True):
    """Loads an image classification dataset as train/validation/test `tf.data` pipelines.

    The data go through, in order: duplicate removal over the whole set (`deduplicate`,
    so no image is in two splits), stratified splitting (`stratified_split`, class
    proportions kept in every split), a normaliser adapted on the training split only
    (`adapt_normalizer`), and `make_pipeline` (cache, per-epoch shuffling of the
    training split, batch-wise augmentation of the training split only, prefetch).

    Datasets:

    - `"digits"`: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), as
      `(8, 8, 1)` float32 with pixels 0..16. Always available; needs no download.
    - `"mnist"`, `"fashion_mnist"` (28x28x1), `"cifar10"` (32x32x3): through
      `keras.datasets`, pixels 0..255. They download on first use; offline, the error
      names the URL of each file and the path in the Keras cache to put it at.
    - a folder path: one subfolder of images per class, read with
      `keras.utils.image_dataset_from_directory` (resized to `image_size`), loaded in
      memory.

    Args:
        name: a dataset name (`"digits"`, `"mnist"`, `"fashion_mnist"`, `"cifar10"`) or a
            folder path. Defaults to `"digits"`.
        validation_split: the fraction of samples for validation, in [0, 1); 0 gives no
            validation split. Defaults to 0.1.
        test_split: the fraction of samples for testing, in [0, 1); 0 gives no test
            split. None uses the official test set where the dataset has one (mnist,
            fashion_mnist, cifar10) and 0.2 otherwise; a number pools everything and
            splits it. The fractions are of the (deduplicated) pool. Defaults to None.
        batch_size: samples per batch, an integer > 0. Defaults to 32.
        normalize: `True` or `"per_channel"` (a `Normalization` layer with per-channel
            mean and variance), `"global"` (one mean and variance), or False (none).
            Adapted on the training split only. Defaults to True.
        augment: the training-split augmentation: False, True (small rotation, zoom and
            translation), a dict of `augmentation_layers` arguments or a callable.
            Defaults to False.
        deduplicate: whether to remove exact duplicates (and drop conflicting-label
            groups) first. Defaults to True.
        seed: the seed of splitting, shuffling and augmentation. Defaults to 0.
        image_size: for a folder, the `(height, width)` images are resized to. Defaults
            to `(256, 256)`.
        color_mode: for a folder, `"rgb"`, `"grayscale"` or `"rgba"`. Defaults to `"rgb"`.
        cache: whether the pipelines cache their samples. Defaults to True.

    Returns:
        A `Dataset` with `.train`, `.validation`, `.test`, the arrays, `input_shape`,
        `num_classes`, `class_names`, `dedup_report`, `normalizer` and `augmentation`.

    Raises:
        ValueError: for an unknown name (listing the valid ones), splits outside [0, 1) or
            adding up to 1 or more, or a class too small to split.
        OSError: when a `keras.datasets` download fails, naming the cache path and URL.

    Example:

    >>> data = load_dataset("digits", validation_split=0.1, test_split=0.2, seed=0)
    >>> data.input_shape, data.num_classes, len(data.x_train) + len(data.x_val) + len(data.x_test)
    ((8, 8, 1), 10, 1797)
    >>> model.fit(data.train, validation_data=data.validation, epochs=5)  # doctest: +SKIP
    """
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
        raise ValueError(f"Argument `name` must be a dataset name or a folder path. "
                         f"Received: name={name!r}")
    if name == "digits":
        pool, official_test, class_names = _load_digits()
    elif name in _REMOTE:
        pool, official_test, class_names = _load_remote(name)
    elif os.path.isdir(name):
        pool, official_test, class_names = _load_folder(name, image_size, color_mode)
    else:
        raise ValueError(
            f"Argument `name` must be one of {', '.join(repr(n) for n in DATASET_NAMES)} or "
            f"an existing folder with one subfolder per class. Received: name={name!r}"
        )

    x, y = pool
    if test_split is not None and official_test is not None:
        x, y = np.concatenate([x, official_test[0]]), np.concatenate([y, official_test[1]])
        official_test = None
    report = None
    if deduplicate:
        if official_test is not None:
            # Deduplicate the official test set and the training set together, test
            # first, so that an image in both is kept in the test set (the benchmark
            # stays whole) and removed from training (no leak).
            n_test = len(official_test[1])
            x_all = np.concatenate([official_test[0], x])
            y_all = np.concatenate([official_test[1], y])
            _, _, report = _deduplicate(x_all, y_all)
            kept = report.kept_indices
            in_test, in_train = kept[kept < n_test], kept[kept >= n_test] - n_test
            x, y = x[in_train], y[in_train]
            official_test = (official_test[0][in_test], official_test[1][in_test])
        else:
            x, y, report = _deduplicate(x, y)

    if official_test is not None:
        x_test, y_test = official_test
    else:
        test_split = 0.2 if test_split is None else test_split
        x_test = y_test = None
        if test_split > 0:
            rest, test = stratified_split(y, test_size=test_split, seed=seed)
            x_test, y_test = x[test], y[test]
            x, y = x[rest], y[rest]
        validation_split = validation_split / (1.0 - test_split)
    x_val = y_val = None
    if validation_split > 0:
        train, val = stratified_split(y, test_size=validation_split, seed=seed + 1)
        x_val, y_val = x[val], y[val]
        x, y = x[train], y[train]

    input_shape = tuple(int(d) for d in x.shape[1:])
    normalizer = adapt_normalizer(x, normalize) if normalize else None
    augmentation = resolve_augmentation(augment, input_shape, seed)

    def pipe(xs, ys, training):
        if xs is None:
            return None
        return make_pipeline(xs, ys, batch_size, training=training,
                             augment=augmentation if training else None, cache=cache,
                             normalizer=normalizer, seed=seed)

    return Dataset(
        name=name, train=pipe(x, y, True), validation=pipe(x_val, y_val, False),
        test=pipe(x_test, y_test, False), x_train=x, y_train=y, x_val=x_val, y_val=y_val,
        x_test=x_test, y_test=y_test, input_shape=input_shape,
        num_classes=len(class_names), class_names=list(class_names), dedup_report=report,
        normalizer=normalizer, augmentation=augmentation,
    )
