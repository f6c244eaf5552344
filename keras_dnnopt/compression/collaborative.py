"""Collaborative optimization: quantization-aware training that keeps what pruning or
clustering gave the model (PQAT, CQAT, PCQAT).

Plain QAT fine-tunes every weight, so the zeros of a pruned model and the shared values of
a clustered one drift away within a few steps. TF-MOT's collaborative schemes
(`tfmot.experimental.combine`) keep them: this module maps the `scheme=` argument of
`keras_dnnopt.compression.quantize` to them, and checks that the model has what the scheme
is meant to preserve.

- `"default"`: `Default8BitQuantizeScheme`, plain QAT, keeps nothing;
- `"pqat"`: `Default8BitPrunePreserveQuantizeScheme`, keeps the zeros (sparsity);
- `"cqat"`: `Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=False)`, keeps the
  clusters (at most `number_of_clusters` values per kernel, per channel once quantized);
- `"pcqat"`: `Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)`, keeps both.

The pipelines (tf_keras):

- PQAT: prune (`prune`, or TF-MOT's `prune_low_magnitude`), train, then
  `quantize(model, scheme="pqat")`.
- CQAT: `cluster(model, k)`, train, then `quantize(model, scheme="cqat")`.
- PCQAT: prune, train, `cluster(model, k, preserve_sparsity=True)`, train, then
  `quantize(model, scheme="pcqat")`.

Pruning and clustering wrappers left in the model are stripped by `quantize` first (TF-MOT
needs the plain layers, whose zeros and shared values it then reads).

On Keras 3 the same schemes are native (`_qat_native`): `"pqat"` multiplies each kernel by
a mask of its nonzero weights, `"cqat"` gives each clustered kernel (`is_clustered`) the
native clustering's `SnapToClusters` constraint, one trainable centroid per shared value,
and `"pcqat"` does both, the zeros' cluster held at zero.

Reference:
    - [TF-MOT collaborative optimization](
      https://www.tensorflow.org/model_optimization/guide/combine/collaborative_optimization)
    - [Han et al., 2016. Deep Compression](https://arxiv.org/abs/1510.00149)
"""

import numpy as np

from keras_dnnopt.compression._tfmot_support import import_tfmot

QUANTIZE_SCHEMES = ("default", "pqat", "cqat", "pcqat")

_KERNEL_ATTRIBUTES = ("kernel", "depthwise_kernel", "pointwise_kernel")


def quantize_scheme(scheme):
    """The TF-MOT `QuantizeScheme` of a `scheme=` name (one of `QUANTIZE_SCHEMES`)."""
    tfmot = import_tfmot()
    if scheme == "default":
        return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()
    if scheme == "pqat":
        return tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    return tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(
        preserve_sparsity=(scheme == "pcqat"))


def strip_compression_wrappers(model):
    """Removes TF-MOT pruning and clustering wrappers (the weights they hold stay)."""
    tfmot = import_tfmot()
    # The wrapper classes are not in TF-MOT's public API.
    from tensorflow_model_optimization.python.core.clustering.keras.cluster_wrapper import (
        ClusterWeights,
    )
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (
        PruneLowMagnitude,
    )

    if any(isinstance(layer, PruneLowMagnitude) for layer in model.layers):
        model = tfmot.sparsity.keras.strip_pruning(model)
    if any(isinstance(layer, ClusterWeights) for layer in model.layers):
        model = tfmot.clustering.keras.strip_clustering(model)
    return model


def _kernels(model, selected):
    for layer in model.layers:
        if selected is not None and layer.name not in selected:
            continue
        for attribute in _KERNEL_ATTRIBUTES:
            weight = getattr(layer, attribute, None)
            if weight is not None and hasattr(weight, "numpy"):
                yield layer.name, np.asarray(weight.numpy())


def is_clustered(kernel):
    """Whether a kernel (an array) holds shared values: it was clustered."""
    # A clustered kernel shares its values: at most half as many unique values as weights
    # (and at most 1024, TF-MOT's limit). A float kernel of n values has about n (a few
    # float32 values may coincide by chance in a large kernel).
    return np.unique(kernel).size <= min(1024, kernel.size // 2)


def check_scheme_input(model, scheme, selected):
    """Checks that a pruned (clustered) model is given to a sparsity (cluster) preserving
    scheme: with nothing to keep, TF-MOT silently falls back to plain QAT.

    Raises:
        ValueError: for `"pqat"`/`"pcqat"` when no selected kernel has a zero, or
            `"cqat"`/`"pcqat"` when no selected kernel is clustered (at most
            half as many unique values as weights).
    """
    if scheme == "default":
        return
    kernels = list(_kernels(model, selected))
    if scheme in ("pqat", "pcqat") and not any((k == 0).any() for _, k in kernels):
        raise ValueError(
            f"Argument `scheme={scheme!r}` keeps the zeros of a pruned model, but no kernel "
            f"of model {model.name!r} has a zero weight. Prune it first "
            "(`keras_dnnopt.compression.prune` or `tfmot.sparsity.keras.prune_low_magnitude`, "
            "then train), or use scheme='default'."
        )
    if scheme in ("cqat", "pcqat") and not any(is_clustered(k) for _, k in kernels):
        raise ValueError(
            f"Argument `scheme={scheme!r}` keeps the clusters of a clustered model, but no "
            f"kernel of model {model.name!r} has shared values (at most half as many unique "
            "values as weights). Cluster it first "
            "(`keras_dnnopt.compression.cluster`, then train), or use scheme='default'."
        )
