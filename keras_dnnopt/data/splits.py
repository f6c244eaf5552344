"""Stratified splitting: hold-out splits and k folds that keep each class's proportion."""

import numpy as np

from keras_dnnopt.utils.validation import check_number


def _labels_1d(y):
    """Class labels as a 1-D array: sparse labels as they are, one-hot rows by argmax."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:
        y = np.argmax(y, axis=1)
    if y.ndim != 1:
        raise ValueError(
            "Argument `y` must hold one class label per sample: a 1-D array of labels or a "
            f"2-D one-hot array. Received: y with shape {y.shape}"
        )
    if len(y) == 0:
        raise ValueError("Argument `y` must hold at least one label. Received: an empty `y`")
    return y


def _apportion(counts, total):
    """Splits `total` among classes in proportion to `counts` (largest remainder), so the
    parts add up to `total` exactly."""
    exact = counts * (total / counts.sum())
    parts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - parts), kind="stable")
    parts[order[: total - parts.sum()]] += 1
    return parts


def stratified_split(y, test_size=None, *, n_splits=None, seed=None):
    """Splits sample indices so that every part keeps the class proportions of `y`.

    Two modes, chosen by which argument is given:

    - `test_size`: one hold-out split. Returns `(train_indices, test_indices)`, with
      `round(test_size * len(y))` test samples shared among the classes in proportion
      to their size (largest remainder), and at least one sample of every class on
      each side.
    - `n_splits`: k-fold cross-validation. Returns a list of `n_splits` pairs
      `(train_indices, validation_indices)`; every sample is in exactly one
      validation fold, and each class is dealt round-robin over the folds, so fold
      sizes per class differ by at most one (as scikit-learn's `StratifiedKFold`).

    Indices are shuffled within each class with `seed` first and are returned sorted.

    Args:
        y: the labels, a 1-D array of class ids, a `(n, 1)` array, or one-hot `(n, C)`.
        test_size: the fraction of samples held out, a float in (0, 1).
        n_splits: the number of folds, an integer >= 2 and no more than the number of
            samples of the smallest class.
        seed: the seed of the shuffle, an int or None. Defaults to None (fresh entropy).

    Returns:
        `(train_indices, test_indices)` for `test_size`, or a list of `n_splits`
        `(train_indices, validation_indices)` pairs for `n_splits`; int64 arrays.

    Raises:
        ValueError: if both or neither of `test_size` and `n_splits` are given, if
            `test_size` is not in (0, 1), if `n_splits < 2`, if a class has fewer
            samples than `n_splits` (or than 2 for a hold-out split), or if `y` is not
            1-D labels or one-hot.

    Example:

    >>> y = np.array([0] * 8 + [1] * 4)
    >>> train, test = stratified_split(y, test_size=0.25, seed=0)
    >>> np.bincount(y[test]).tolist()
    [2, 1]
    >>> folds = stratified_split(y, n_splits=4, seed=0)
    >>> [np.bincount(y[val]).tolist() for _, val in folds]
    [[2, 1], [2, 1], [2, 1], [2, 1]]
    """
    if (test_size is None) == (n_splits is None):
        raise ValueError(
            "Pass exactly one of `test_size` (a hold-out split) and `n_splits` (k folds). "
            f"Received: test_size={test_size!r}, n_splits={n_splits!r}"
        )
    labels = _labels_1d(y)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(inverse == c)) for c in range(len(classes))]
    smallest = int(counts.min())
    smallest_class = classes[int(np.argmin(counts))].item()

    if n_splits is not None:
        n_splits = check_number("n_splits", n_splits, low=2, integer=True)
        if n_splits > smallest:
            raise ValueError(
                f"Argument `n_splits` must be <= the number of samples of the smallest class "
                f"(class {smallest_class!r} has {smallest}), so that every fold holds every "
                f"class. Received: n_splits={n_splits}"
            )
        folds = [[] for _ in range(n_splits)]
        offset = 0
        for members in per_class:
            # Deal each class round-robin, continuing where the previous class stopped,
            # so that fold sizes stay balanced overall as well as per class.
            for i, index in enumerate(members):
                folds[(offset + i) % n_splits].append(index)
            offset += len(members)
        everything = np.arange(len(labels))
        result = []
        for fold in folds:
            validation = np.sort(np.asarray(fold, dtype=np.int64))
            train = np.setdiff1d(everything, validation).astype(np.int64)
            result.append((train, validation))
        return result

    test_size = check_number("test_size", test_size, low=0.0, high=1.0,
                             low_inclusive=False, high_inclusive=False)
    if smallest < 2:
        raise ValueError(
            f"Stratified splitting needs at least 2 samples of every class in `y`; class "
            f"{smallest_class!r} has {smallest}. Remove that class or gather more samples."
        )
    n = len(labels)
    n_test = int(round(test_size * n))
    if not len(classes) <= n_test <= n - len(classes):
        raise ValueError(
            f"Argument `test_size` must leave at least one sample of each of the "
            f"{len(classes)} classes on both sides: with {n} samples it must give between "
            f"{len(classes)} and {n - len(classes)} test samples. Received: "
            f"test_size={test_size} ({n_test} test samples)"
        )
    parts = _apportion(counts, n_test)
    # Keep one sample of every class on each side, moving any surplus to the largest classes.
    parts = np.clip(parts, 1, counts - 1)
    while parts.sum() != n_test:
        step = 1 if parts.sum() < n_test else -1
        room = (counts - 1 - parts) if step > 0 else (parts - 1)
        candidates = np.flatnonzero(room > 0)
        parts[candidates[np.argmax(counts[candidates])]] += step
    test = np.concatenate([members[:k] for members, k in zip(per_class, parts, strict=True)])
    train = np.concatenate([members[k:] for members, k in zip(per_class, parts, strict=True)])
    return np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)
