"""`sparsity_report`: the fraction of zeros in each prunable kernel of a model."""

import collections

import numpy as np

from keras_dnnopt.backend import check_model
from keras_dnnopt.compression._prunable import (
    is_pruning_wrapper,
    iter_layers,
    prunable_weights,
)

SparsityRow = collections.namedtuple(
    "SparsityRow", ["layer", "weight", "shape", "sparsity", "zeros", "size", "pruned"])
SparsityRow.__doc__ = """One kernel of a `SparsityReport`.

Fields: `layer` (the layer's name, without the `prune_low_magnitude_` of a wrapper),
`weight` (`"kernel"`, `"pointwise_kernel"`, or `"{sublayer}/kernel"` in a block), `shape`
(a tuple), `sparsity` (the fraction of zeros, in [0, 1]), `zeros` and `size` (counts),
`pruned` (whether the layer is wrapped for pruning; False in a stripped model).
"""


class SparsityReport:
    """The per-kernel and overall sparsity of a model, from `sparsity_report`.

    Attributes:
        layers: a list of `SparsityRow`s (layer name, weight name, shape, sparsity,
            zeros, size, pruned), one per prunable kernel, in the order of the model's
            layers.
        overall: the fraction of zeros over all those kernels together (weighted by
            size), a float in [0, 1]; 0.0 for a model with no prunable kernel.

    `str(report)` is a table; `to_dict()` a JSON-ready dict.
    """

    def __init__(self, rows):
        self.layers = list(rows)
        total = sum(row.size for row in self.layers)
        self.overall = (sum(row.zeros for row in self.layers) / total) if total else 0.0

    def to_dict(self):
        """Returns `{"overall": float, "layers": [{"layer", "weight", "shape",
        "sparsity", "zeros", "size", "pruned"}, ...]}` (shapes as lists)."""
        return {
            "overall": self.overall,
            "layers": [dict(row._asdict(), shape=list(row.shape)) for row in self.layers],
        }

    def __getitem__(self, layer_name):
        """The rows of the layer named `layer_name` (a list; a block has several)."""
        rows = [row for row in self.layers if row.layer == layer_name]
        if not rows:
            names = sorted({row.layer for row in self.layers})
            raise KeyError(f"No prunable kernel in a layer named {layer_name!r}. "
                           f"Layers with one: {names}")
        return rows

    def __str__(self):
        lines = ["| layer | weight | shape | size | sparsity |", "|---|---|---|---|---|"]
        for row in self.layers:
            lines.append(f"| {row.layer}{' (pruned)' if row.pruned else ''} | {row.weight} | "
                         f"{row.shape} | {row.size} | {row.sparsity:.2%} |")
        size = sum(row.size for row in self.layers)
        lines.append(f"| **overall** | | | {size} | {self.overall:.2%} |")
        return "\n".join(lines)

    def __repr__(self):
        return f"<SparsityReport overall={self.overall:.4f} kernels={len(self.layers)}>"


def _row(layer_name, weight_name, values, pruned):
    values = np.asarray(values)
    zeros = int(np.count_nonzero(values == 0))
    return SparsityRow(layer_name, weight_name, tuple(values.shape),
                       zeros / values.size if values.size else 0.0, zeros, int(values.size),
                       pruned)


def sparsity_report(model):
    """Reports the fraction of zero weights in each prunable kernel of a model.

    The kernels are those pruning sparsifies (see `prune`): the kernels of convolutions
    and dense layers, the pointwise kernels of separable convolutions, and the `Conv2D`
    kernels inside the blocks of `keras_dnnopt.layers` (not depthwise kernels, biases or
    batch-norm weights). Works on plain, pruned (wrapped) and stripped models, nested
    models included; for a wrapped layer it reports the kernel times its mask, i.e. what
    `strip_pruning` will give.

    Args:
        model: a `keras.Model` of the Keras in use.

    Returns:
        A `SparsityReport`, with `.layers` (rows of layer name, weight name, shape,
        sparsity, ...), `.overall`, `to_dict()` and a printable table.

    Raises:
        TypeError: if `model` is not a model of the Keras in use.

    Example:

    ```python
    report = sparsity_report(strip_pruning(pruned_model))
    print(report)              # a table, one row per kernel
    report.overall             # e.g. 0.8
    report["dense"][0].sparsity
    ```
    """
    check_model(model, "model")
    rows = []
    for layer in iter_layers(model):
        if is_pruning_wrapper(layer):
            for (name, _), (weight, mask, _) in zip(prunable_weights(layer.layer),
                                                    layer.pruning_vars, strict=True):
                values = np.asarray(weight.numpy()) * np.asarray(mask.numpy())
                rows.append(_row(layer.layer.name, name, values, True))
        else:
            for name, weight in prunable_weights(layer):
                rows.append(_row(layer.name, name, weight.numpy(), False))
    return SparsityReport(rows)
