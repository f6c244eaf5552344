"""Compression: pruning (both Kerases), quantization and clustering.

- `prune(model, target_sparsity, ...)`, `PruningCallback`, `strip_pruning(model)`:
  magnitude pruning (polynomial or constant schedule, 2:4 structure, block sparsity),
  through TF-MOT on tf_keras and natively on Keras 3.
- `sparsity_report(model)` -> `SparsityReport`: per-kernel and overall sparsity.
- `prune_channels(model, ratio | target_macs, ...)`: structured pruning, whole channels
  removed along a dependency graph (a smaller, faster plain model);
  `channel_pruning_plan` gives the decision and the predicted counts first;
  `remove_blocks(model, n | names)`: whole blocks removed (identity-skip residual
  blocks, shape-keeping plain blocks; `removable_blocks` lists them);
  `with_channel_sparsity` (network slimming, `GroupLasso`) and
  `prune_channels_iteratively` (prune, fine-tune with distillation, repeat).
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
from keras_dnnopt.compression.block_pruning import (  # noqa: E402
    Block,
    ResidualBlock,
    removable_blocks,
    remove_blocks,
    residual_blocks,
)
from keras_dnnopt.compression.channel_pruning import (  # noqa: E402
    ChannelPruningPlan,
    channel_pruning_plan,
    prune_channels,
)
from keras_dnnopt.compression.clustering import (  # noqa: E402
    CENTROID_INITIALIZATIONS,
    cluster,
    strip_clustering,
)
from keras_dnnopt.compression.collaborative import QUANTIZE_SCHEMES  # noqa: E402
from keras_dnnopt.compression.quantization import quantize  # noqa: E402
from keras_dnnopt.compression.slimming import (  # noqa: E402
    GroupLasso,
    prune_channels_iteratively,
    with_channel_sparsity,
)

__all__ += [
    "CENTROID_INITIALIZATIONS",
    "QUANTIZE_SCHEMES",
    "ChannelPruningPlan",
    "Block",
    "GroupLasso",
    "ResidualBlock",
    "channel_pruning_plan",
    "cluster",
    "prune_channels",
    "prune_channels_iteratively",
    "quantize",
    "removable_blocks",
    "remove_blocks",
    "residual_blocks",
    "strip_clustering",
    "with_channel_sparsity",
]
