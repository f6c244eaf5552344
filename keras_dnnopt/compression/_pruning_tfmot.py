"""Magnitude pruning on tf_keras, through TF-MOT (`tfmot.sparsity.keras`).

`prune` wraps each selected layer with TF-MOT's `prune_low_magnitude` (its
`PruneLowMagnitude` wrapper), with TF-MOT's `PolynomialDecay` or `ConstantSparsity`
schedule, `block_size` and `sparsity_m_by_n=(2, 4)`; `PruningCallback` runs TF-MOT's
`UpdatePruningStep` (and `PruningSummaries`); `strip_pruning` uses TF-MOT's
`strip_pruning`. Imported only when tf_keras is the Keras in use: importing TF-MOT sets
`TF_USE_LEGACY_KERAS=1` in the environment.
"""

import importlib

from keras_dnnopt.backend import tf


def tfmot_sparsity():
    """The `tfmot.sparsity.keras` module."""
    try:
        tfmot = importlib.import_module("tensorflow_model_optimization")
    except ImportError as error:  # pragma: no cover - it is in install_requires
        raise ImportError(
            "Pruning on tf_keras runs through TF-MOT: `pip install "
            "tensorflow-model-optimization` (a dependency of keras_dnnopt; reinstalling "
            "keras_dnnopt brings it)."
        ) from error
    return tfmot.sparsity.keras


def wrapper_class():
    """TF-MOT's wrapper class (not in its public API: `prune_scope()` maps its name)."""
    tfmot_sparsity()
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    return pruning_wrapper.PruneLowMagnitude


def _schedule(params):
    sparsity = tfmot_sparsity()
    if params["schedule"] == "polynomial":
        return sparsity.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=params["target_sparsity"],
            begin_step=params["begin_step"], end_step=params["end_step"], power=3,
            frequency=params["frequency"])
    return sparsity.ConstantSparsity(
        params["target_sparsity"], begin_step=params["begin_step"],
        end_step=params["end_step"], frequency=params["frequency"])


def wrap_layer(layer, params):
    """Wraps `layer` with TF-MOT's `prune_low_magnitude` for the validated `prune`
    parameters."""
    return tfmot_sparsity().prune_low_magnitude(
        layer, pruning_schedule=_schedule(params), block_size=tuple(params["block_size"]),
        sparsity_m_by_n=(2, 4) if params["structure"] == "2:4" else None)


def apply_masks(wrapper):
    """Multiplies the kernels of a TF-MOT wrapper by their masks."""
    wrapper.pruning_obj.weight_mask_op()


def update_pruning_step():
    return tfmot_sparsity().UpdatePruningStep()


def pruning_summaries(log_dir):
    return tfmot_sparsity().PruningSummaries(log_dir=log_dir)


def strip(model):
    """TF-MOT's `strip_pruning` (the result shares its layers with `model`)."""
    return tfmot_sparsity().strip_pruning(model)


def scheduled_sparsity(wrapper):
    """The sparsity the wrapper's schedule gives at its current step."""
    return float(wrapper.pruning_schedule(tf.convert_to_tensor(wrapper.pruning_step))[1])
