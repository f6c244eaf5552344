"""Exact-duplicate removal by hashing each sample's bytes."""

import hashlib

import numpy as np


class DedupReport:
    """What `deduplicate` found and removed.

    Attributes:
        num_input: the number of samples received.
        num_output: the number of samples kept.
        duplicate_groups: groups of indices (into the input) of identical samples that
            all carry the same label; the first index of each group is kept.
        conflict_groups: groups of indices of identical samples carrying different
            labels; every sample of such a group is dropped (see `deduplicate`).
        kept_indices: the indices of the input kept, in order.
    """

    def __init__(self, num_input, kept_indices, duplicate_groups, conflict_groups):
        self.num_input = int(num_input)
        self.kept_indices = np.asarray(kept_indices, dtype=np.int64)
        self.duplicate_groups = [np.asarray(g, dtype=np.int64) for g in duplicate_groups]
        self.conflict_groups = [np.asarray(g, dtype=np.int64) for g in conflict_groups]

    @property
    def num_output(self):
        return len(self.kept_indices)

    @property
    def num_duplicates_removed(self):
        """Extra copies removed from groups with a consistent label."""
        return sum(len(g) - 1 for g in self.duplicate_groups)

    @property
    def num_conflicts_removed(self):
        """Samples removed because identical copies had different labels."""
        return sum(len(g) for g in self.conflict_groups)

    def to_dict(self):
        return {
            "num_input": self.num_input,
            "num_output": self.num_output,
            "num_duplicates_removed": self.num_duplicates_removed,
            "num_conflicts_removed": self.num_conflicts_removed,
            "duplicate_groups": [g.tolist() for g in self.duplicate_groups],
            "conflict_groups": [g.tolist() for g in self.conflict_groups],
        }

    def __str__(self):
        return (
            f"Deduplication: {self.num_input} samples in, {self.num_output} kept; "
            f"{self.num_duplicates_removed} duplicate copies removed from "
            f"{len(self.duplicate_groups)} groups, {self.num_conflicts_removed} samples "
            f"removed from {len(self.conflict_groups)} groups with conflicting labels"
        )

    def __repr__(self):
        return f"<DedupReport {self}>"


def _digest(sample):
    return hashlib.blake2b(np.ascontiguousarray(sample).tobytes(), digest_size=16).digest()


def deduplicate(x, y=None):
    """Removes exact duplicate samples, found by hashing each sample's bytes.

    Samples are grouped by a BLAKE2b hash of their raw bytes (all samples share one
    dtype and shape, so equal bytes mean equal samples). Within a group:

    - if every copy has the same label (or `y` is None), the first copy is kept and the
      others are removed (reported in `duplicate_groups`);
    - if the copies carry different labels, the whole group is dropped: no label can be
      trusted, and keeping any copy would teach the model one arbitrary answer. These
      groups are reported separately (`conflict_groups`) so that they can be inspected
      or relabelled.

    Args:
        x: the samples, an array of shape `(n, ...)`.
        y: the labels, an array of length `n` (class ids, one-hot rows or targets), or
            None to deduplicate `x` alone. Defaults to None.

    Returns:
        `(x_clean, y_clean, report)`: the kept samples and labels (`y_clean` is None when
        `y` is), in their original order, and a `DedupReport`.

    Raises:
        ValueError: if `x` has no sample axis or `y` does not have one label per sample.

    Example:

    >>> x = np.array([[1, 2], [3, 4], [1, 2], [5, 6], [5, 6]])
    >>> y = np.array([0, 1, 0, 2, 1])
    >>> x_clean, y_clean, report = deduplicate(x, y)
    >>> x_clean.tolist(), y_clean.tolist()
    ([[1, 2], [3, 4]], [0, 1])
    >>> [g.tolist() for g in report.duplicate_groups], [g.tolist() for g in report.conflict_groups]
    ([[0, 2]], [[3, 4]])
    """
    x = np.asarray(x)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(
            f"Argument `x` must be a non-empty array of samples. Received: x with shape {x.shape}"
        )
    if y is not None:
        y = np.asarray(y)
        if y.ndim < 1 or len(y) != len(x):
            raise ValueError(
                "Arguments `x` and `y` must have the same number of samples. Received: "
                f"len(x)={len(x)}, y with shape {y.shape}"
            )
    groups = {}
    for i in range(len(x)):
        groups.setdefault(_digest(x[i]), []).append(i)

    keep = np.ones(len(x), dtype=bool)
    duplicate_groups, conflict_groups = [], []
    for members in groups.values():
        if len(members) == 1:
            continue
        labels = None if y is None else {_digest(y[i]) for i in members}
        if labels is not None and len(labels) > 1:
            conflict_groups.append(members)
            keep[members] = False
        else:
            duplicate_groups.append(members)
            keep[members[1:]] = False
    kept = np.flatnonzero(keep)
    report = DedupReport(len(x), kept, duplicate_groups, conflict_groups)
    return x[kept], (None if y is None else y[kept]), report
