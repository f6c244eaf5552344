"""Compression: pruning (both Kerases), quantization and clustering.

- `prune(model, target_sparsity, ...)`, `PruningCallback`, `strip_pruning(model)`:
  magnitude pruning (polynomial or constant schedule, 2:4 structure, block sparsity),
  through TF-MOT on tf_keras and natively on Keras 3.
- `sparsity_report(model)` -> `SparsityReport`: per-kernel and overall sparsity.
"""

from keras_dnnopt.compression.pruning import PruningCallback, prune, strip_pruning
from keras_dnnopt.compression.sparsity import SparsityReport, SparsityRow, sparsity_report

__all__ = [
    "PruningCallback",
    "SparsityReport",
    "SparsityRow",
    "prune",
    "sparsity_report",
    "strip_pruning",
]

# Quantization-aware training (tf_keras, TF-MOT), the collaborative schemes (PQAT, CQAT,
# PCQAT) and weight clustering (TF-MOT on tf_keras, native on Keras 3).
from keras_dnnopt.compression.clustering import (  # noqa: E402
    CENTROID_INITIALIZATIONS,
    cluster,
    strip_clustering,
)
from keras_dnnopt.compression.collaborative import QUANTIZE_SCHEMES  # noqa: E402
from keras_dnnopt.compression.quantization import quantize  # noqa: E402

__all__ += [
    "CENTROID_INITIALIZATIONS",
    "QUANTIZE_SCHEMES",
    "cluster",
    "quantize",
    "strip_clustering",
]
