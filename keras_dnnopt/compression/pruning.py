"""Magnitude pruning with one API on both Kerases: `prune`, `PruningCallback`,
`strip_pruning`.

On tf_keras the work is TF-MOT's (`prune_low_magnitude`, `PolynomialDecay` /
`ConstantSparsity`, `UpdatePruningStep`, `PruningSummaries`, `sparsity_m_by_n`); on
Keras 3, which TF-MOT refuses, a native `PruneLowMagnitude` wrapper follows the same
formulas (see `_pruning_native` and `_pruning_masks`). Both Kerases prune the same
kernels (see `_prunable`) and both give a pruned model whose wrapped layers are named
`prune_low_magnitude_{layer}`.
"""

import importlib.util
import os

from keras_dnnopt.backend import USING_TF_KERAS, check_model, keras, tf
from keras_dnnopt.compression._prunable import (
    is_graph_model,
    is_pruning_wrapper,
    iter_layers,
    prunable_weights,
    pruning_implementation,
    supports_pruning,
)
from keras_dnnopt.utils.validation import check_choice, check_number

SCHEDULES = ("polynomial", "constant")
STRUCTURES = ("unstructured", "2:4")


# ------------------------------------------------------------------ helpers


def _check_graph_model(model, function_name):
    if not is_graph_model(model):
        student = " (for a Distiller, pass `distiller.student`)" if hasattr(
            model, "student") else ""
        raise ValueError(
            f"`{function_name}` needs a functional or Sequential model, whose layers it "
            f"can clone{student}. Received: model {model.name!r} of class "
            f"{type(model).__name__} (a subclassed model)")
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not model.built or not inputs:
        raise ValueError(
            f"`{function_name}` needs a built model. Received: model {model.name!r}, not "
            "built: give a Sequential model a `keras.Input(shape)` first.")


def _fresh_copy(layer, copies):
    new = layer.__class__.from_config(layer.get_config())
    copies.append((layer, new))
    return new


def _clone(model, layer_fn, copies):
    """Clones a graph model (nested graph models recursively) with `layer_fn`."""

    def clone_function(layer):
        if isinstance(layer, keras.Model):
            if not is_graph_model(layer):
                raise ValueError(
                    f"Layer {layer.name!r} of the model is a subclassed model, whose layers "
                    "cannot be cloned. Build it as a functional or Sequential model.")
            return _clone(layer, layer_fn, copies)
        if isinstance(layer, keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        return layer_fn(layer)

    return keras.models.clone_model(model, clone_function=clone_function)


def _copy_weights(copies):
    for source, target in copies:
        target.set_weights(source.get_weights())


def _wrappers(model):
    return [layer for layer in iter_layers(model) if is_pruning_wrapper(layer)]


def _check_steps(schedule, begin_step, end_step, frequency):
    begin_step = check_number("begin_step", begin_step, low=0, integer=True)
    frequency = check_number("frequency", frequency, low=1, integer=True)
    if end_step is None:
        if schedule == "polynomial":
            raise ValueError(
                "Argument `end_step` is required with schedule='polynomial' (the step at "
                "which the sparsity reaches `target_sparsity`). Received: end_step=None")
        return begin_step, -1, frequency
    end_step = check_number("end_step", end_step, integer=True)
    if end_step <= begin_step:
        raise ValueError(
            f"Argument `end_step` must be > begin_step ({begin_step}). "
            f"Received: end_step={end_step}")
    if schedule == "polynomial" and (end_step - begin_step) % frequency:
        raise ValueError(
            "Argument `end_step` must be `begin_step` plus a multiple of `frequency` with "
            "schedule='polynomial': masks are only updated every `frequency` steps from "
            "`begin_step`, so otherwise the last update falls before `end_step` and the "
            f"target sparsity is never reached. Received: begin_step={begin_step}, "
            f"end_step={end_step}, frequency={frequency}; e.g. end_step="
            f"{begin_step + (end_step - begin_step) // frequency * frequency or frequency}")
    return begin_step, end_step, frequency


def _check_block_size(block_size):
    if (not isinstance(block_size, (tuple, list)) or len(block_size) != 2
            or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0
                       for b in block_size)):
        raise ValueError(
            "Argument `block_size` must be a tuple of 2 integers > 0, e.g. (1, 1) "
            f"(unstructured) or (1, 4). Received: block_size={block_size!r}")
    return tuple(block_size)


def _select(model, layers):
    """The names of the layers to prune, checked."""
    all_layers = list(iter_layers(model))
    if any(is_pruning_wrapper(layer) for layer in all_layers):
        raise ValueError(
            f"Model {model.name!r} is already pruned (it holds pruning wrappers). Strip it "
            "with `strip_pruning` first, or keep training it with `PruningCallback`.")
    prunable = [layer.name for layer in all_layers
                if supports_pruning(layer) and prunable_weights(layer)]
    if layers is None:
        if not prunable:
            raise ValueError(
                f"Model {model.name!r} has no prunable layer (convolution, dense, "
                "separable convolution, embedding, a keras_dnnopt block or a layer with "
                "`get_prunable_weights`).")
        return set(prunable)
    if isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError(
            "Argument `layers` must be None (every prunable layer) or a non-empty list of "
            f"layer names. Received: layers={layers!r}")
    by_name = {layer.name: layer for layer in all_layers}
    selected = set()
    for name in layers:
        if isinstance(name, keras.layers.Layer):
            name = name.name
        if name not in by_name:
            raise ValueError(
                f"Argument `layers` names a layer that is not in model {model.name!r}: "
                f"{name!r}. Prunable layers of the model: {prunable}. "
                f"Received: layers={list(layers)!r}")
        if name not in prunable:
            layer = by_name[name]
            raise ValueError(
                f"Argument `layers` names layer {name!r} ({type(layer).__name__}), which has "
                "no prunable kernel (pruning sparsifies convolution, dense and pointwise "
                "kernels, as TF-MOT does; not depthwise kernels, biases or normalization). "
                f"Prunable layers of the model: {prunable}. Received: layers={list(layers)!r}")
        selected.add(name)
    return selected


def _check_structure_fits(model, selected, block_size, structure):
    for layer in iter_layers(model):
        if layer.name not in selected:
            continue
        for weight_name, weight in prunable_weights(layer):
            rank = len(weight.shape)
            if structure == "2:4" and rank not in (2, 4):
                raise ValueError(
                    "structure='2:4' applies to rank-2 (dense) and rank-4 (Conv2D) kernels. "
                    f"Received: layer {layer.name!r} with {weight_name} of shape "
                    f"{tuple(weight.shape)}. Leave it out with `layers=`.")
            if block_size != (1, 1) and rank != 2:
                raise ValueError(
                    f"Argument `block_size` other than (1, 1) applies to rank-2 (dense) "
                    f"kernels only (as in TF-MOT). Received: block_size={block_size} and "
                    f"layer {layer.name!r} with {weight_name} of shape {tuple(weight.shape)}. "
                    "Select the dense layers with `layers=`.")


# ------------------------------------------------------------------ public API


def prune(model, target_sparsity, begin_step=0, end_step=None, schedule="polynomial",
          frequency=100, block_size=(1, 1), structure="unstructured", layers=None):
    """Wraps the prunable layers of a model for magnitude pruning during training.

    Magnitude pruning zeroes the weights of smallest magnitude, gradually, while training
    goes on, so that the network adapts to the loss of each (Zhu & Gupta 2017). Each
    pruned kernel gets a mask; every `frequency` steps from `begin_step` to `end_step`
    the mask is recomputed to keep the largest `1 - s` of the weights, with `s` the
    scheduled sparsity, and the kernel is multiplied by its mask at every training step:

    - `"polynomial"`: `s = target * (1 - (1 - p)^3)`, with
      `p = clip((step - begin_step) / (end_step - begin_step), 0, 1)` (fast at first, then
      slower, reaching `target_sparsity` at `end_step`);
    - `"constant"`: `s = target_sparsity` at every update (`end_step=None`: forever).

    Steps count training batches from 1. With `structure="2:4"` the masks keep the 2
    largest of each group of 4 consecutive weights along the input channels (50%, the
    pattern NVIDIA's sparse tensor cores run fast; Mishra et al. 2021); they are set at the
    first step and kept (as TF-MOT does), whatever the schedule. With `block_size` other
    than (1, 1), dense kernels are pruned by blocks, scored by their mean magnitude.

    Pruned kernels: those of `Conv1D/2D/3D(Transpose)`, `Dense`, `Embedding`, the pointwise
    kernels of `SeparableConv1D/2D`, and the `Conv2D` kernels inside the blocks of
    `keras_dnnopt.layers` (`get_prunable_weights`): TF-MOT's choice, which leaves
    depthwise kernels, biases and batch-norm weights dense.

    On tf_keras this is TF-MOT's `prune_low_magnitude` with its `PolynomialDecay` or
    `ConstantSparsity` schedule (`sparsity_m_by_n=(2, 4)` for 2:4); on Keras 3, which
    TF-MOT does not accept, a native wrapper with the same formulas. The result is a new,
    uncompiled model (the input model is left untouched); compile it, train it with
    `PruningCallback()` among the callbacks, then `strip_pruning` it. A pruned model saves
    and loads in the `.keras` format, masks and step included (on tf_keras load it inside
    `tfmot.sparsity.keras.prune_scope()`).

    Args:
        model: a functional or Sequential `keras.Model` of the Keras in use (nested
            functional/Sequential models are pruned too).
        target_sparsity: the final fraction of zeros in each pruned kernel, in (0, 1);
            0.5 with `structure="2:4"`.
        begin_step: the first step at which masks are computed, an int >= 0. Defaults
            to 0.
        end_step: the last step at which masks are computed, an int > `begin_step`;
            required with `"polynomial"`, where it must be `begin_step` plus a multiple
            of `frequency` (the step where `target_sparsity` is reached). None with
            `"constant"`: prune until training ends. Defaults to None.
        schedule: `"polynomial"` or `"constant"`. Defaults to `"polynomial"`.
        frequency: masks are recomputed every `frequency` steps, an int >= 1. Defaults
            to 100.
        block_size: `(height, width)` of the blocks of rank-2 (dense) kernels pruned
            together. Defaults to (1, 1) (single weights).
        structure: `"unstructured"` or `"2:4"`. Defaults to `"unstructured"`.
        layers: None (every prunable layer), or a list of names of the layers to prune
            (a block's name prunes its convolutions). Defaults to None.

    Returns:
        A new `keras.Model` whose pruned layers are wrapped (`prune_low_magnitude_{name}`).

    Raises:
        ValueError: for `target_sparsity` outside (0, 1) (or not 0.5 with 2:4), a
            negative `begin_step`, `end_step <= begin_step` (or missing with
            `"polynomial"`), `frequency < 1`, an unknown `schedule` or `structure`, a bad
            `block_size`, `layers` naming a missing or unprunable layer, a model with no
            prunable layer, an already pruned model, or a subclassed model.
        TypeError: if `model` is not a model of the Keras in use.

    Example:

    ```python
    pruned = prune(model, target_sparsity=0.8, begin_step=0, end_step=1000,
                   frequency=100)
    pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=5, callbacks=[PruningCallback()])
    small = strip_pruning(pruned)
    print(sparsity_report(small))
    ```

    Reference:
        - [Zhu & Gupta, 2017. To prune, or not to prune: exploring the efficacy of
          pruning for model compression](https://arxiv.org/abs/1710.01878)
        - [Mishra et al., 2021. Accelerating Sparse Deep Neural Networks](
          https://arxiv.org/abs/2104.08378) (2:4 structured sparsity)
    """
    check_model(model, "model")
    schedule = check_choice("schedule", schedule, SCHEDULES)
    structure = check_choice("structure", structure, STRUCTURES)
    target_sparsity = check_number("target_sparsity", target_sparsity, low=0, high=1,
                                   low_inclusive=False, high_inclusive=False)
    if structure == "2:4" and target_sparsity != 0.5:
        raise ValueError(
            "Argument `target_sparsity` must be 0.5 with structure='2:4' (two of every four "
            f"weights are zero). Received: target_sparsity={target_sparsity}")
    begin_step, end_step, frequency = _check_steps(schedule, begin_step, end_step, frequency)
    block_size = _check_block_size(block_size)
    if structure == "2:4" and block_size != (1, 1):
        raise ValueError(
            "Argument `block_size` must be (1, 1) with structure='2:4' (the 2:4 pattern "
            f"is its own structure). Received: block_size={block_size}")
    _check_graph_model(model, "prune")
    selected = _select(model, layers)
    _check_structure_fits(model, selected, block_size, structure)

    params = dict(target_sparsity=target_sparsity, begin_step=begin_step, end_step=end_step,
                  schedule=schedule, frequency=frequency, block_size=block_size,
                  structure=structure)
    implementation = pruning_implementation()
    copies = []

    def layer_fn(layer):
        new = _fresh_copy(layer, copies)
        return implementation.wrap_layer(new, params) if layer.name in selected else new

    pruned = _clone(model, layer_fn, copies)
    _copy_weights(copies)
    return pruned


def strip_pruning(model):
    """Removes the pruning wrappers of a model, keeping the sparse kernels.

    The kernels are multiplied by their masks first, so the result holds exactly the
    sparsity the masks give even if training stopped between two epochs. The result is a
    new, plain model of the original layers (an independent copy: training the pruned
    model further does not change it), uncompiled, that saves, loads and exports as any
    model. On tf_keras the wrappers are removed by TF-MOT's `strip_pruning`.

    Args:
        model: a functional or Sequential `keras.Model` (typically from `prune`, after
            training); a model without wrappers gives a plain copy.

    Returns:
        A new `keras.Model` without pruning wrappers.

    Raises:
        ValueError: for a subclassed model (for a `Distiller`, strip `distiller.student`).
        TypeError: if `model` is not a model of the Keras in use.

    Example:

    ```python
    small = strip_pruning(pruned)
    small.save("pruned.keras")
    ```
    """
    check_model(model, "model")
    _check_graph_model(model, "strip_pruning")
    implementation = pruning_implementation()
    for wrapper in _wrappers(model):
        implementation.apply_masks(wrapper)
    if USING_TF_KERAS:
        model = implementation.strip(model)  # TF-MOT's; shares its layers with `model`
    copies = []

    def layer_fn(layer):
        return _fresh_copy(layer.layer if is_pruning_wrapper(layer) else layer, copies)

    stripped = _clone(model, layer_fn, copies)
    _copy_weights(copies)
    return stripped


class PruningCallback(keras.callbacks.Callback):
    """The callback that `fit` needs to train a model made by `prune`.

    On tf_keras it runs TF-MOT's `UpdatePruningStep` (which starts the wrappers' step
    counters and masks the kernels at the end of each epoch; TF-MOT's wrappers refuse to
    train without it) and, with `log_dir`, TF-MOT's `PruningSummaries`. On Keras 3 the
    native wrappers count their steps and update their masks themselves; the callback
    masks the kernels at the start of training and at the end of each epoch and of
    training (so that checkpoints are sparse) and, with `log_dir`, writes the same
    summaries. The summaries (the scheduled sparsity, and each mask's sparsity and
    threshold) go to `{log_dir}/metrics`, for TensorBoard.

    The pruned layers are looked for in the model being trained, its nested models, and
    its `.student` (a `keras_dnnopt.distillation.Distiller` whose student is pruned), or
    in the model given as `model`.

    Args:
        model: the pruned model, when it is not the model being trained nor reachable
            from it. Defaults to None (found from the trained model).
        log_dir: a directory for TensorBoard pruning summaries, or None for none.
            Defaults to None.

    Raises:
        ValueError: for an empty or non-string `log_dir`, or (when training starts) when
            no pruned layer is found.
        ImportError: with `log_dir` when the `tensorboard` package is missing.
        TypeError: if `model` is not a model of the Keras in use.

    Example:

    ```python
    pruned.fit(x, y, epochs=3, callbacks=[PruningCallback(log_dir="logs")])
    # Distilling into a pruned student:
    distiller = Distiller(teacher, prune(student, 0.5, end_step=500))
    distiller.compile(optimizer="adam", loss=loss)
    distiller.fit(x, y, callbacks=[PruningCallback()])
    ```
    """

    def __init__(self, model=None, log_dir=None):
        super().__init__()
        if model is not None:
            check_model(model, "model")
        if log_dir is not None and (not isinstance(log_dir, str) or not log_dir):
            raise ValueError(
                "Argument `log_dir` must be None or a non-empty string (a directory). "
                f"Received: log_dir={log_dir!r}")
        if log_dir is not None and importlib.util.find_spec("tensorboard") is None:
            raise ImportError(
                "PruningCallback(log_dir=...) writes TensorBoard summaries, which need the "
                "`tensorboard` package: `pip install keras_dnnopt[tensorboard]` (or `pip "
                "install tensorboard`). Leave `log_dir=None` to prune without summaries.")
        self._pruned_model = model
        self.log_dir = log_dir
        self._implementation = pruning_implementation()
        self._wrappers = []
        self._forward_to = []
        self._writer = None
        self._params = None

    def _find_pruned_model(self):
        candidates = ([self._pruned_model] if self._pruned_model is not None
                      else [self.model, getattr(self.model, "student", None)])
        for candidate in candidates:
            if isinstance(candidate, keras.Model) and _wrappers(candidate):
                return candidate
        where = ("the model given as `model`" if self._pruned_model is not None else
                 f"model {self.model.name!r} (nor its nested models or `.student`)")
        raise ValueError(
            f"PruningCallback found no pruned layer in {where}. Train the model returned "
            "by `keras_dnnopt.compression.prune`, or pass it as `PruningCallback(model=...)`.")

    def set_params(self, params):
        super().set_params(params)
        self._params = params

    def on_train_begin(self, logs=None):
        pruned_model = self._find_pruned_model()
        self._wrappers = _wrappers(pruned_model)
        if USING_TF_KERAS:
            update = self._implementation.update_pruning_step()
            update.set_model(pruned_model)
            self._forward_to = [update]
            if self.log_dir is not None:
                summaries = self._implementation.pruning_summaries(self.log_dir)
                summaries.set_model(self.model)
                self._forward_to.append(summaries)
            for callback in self._forward_to:
                if self._params is not None:
                    callback.set_params(self._params)
                callback.on_train_begin(logs)
            return
        if self.log_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "metrics"))
        self._mask()

    def _mask(self):
        for wrapper in self._wrappers:
            self._implementation.apply_masks(wrapper)

    def on_epoch_end(self, epoch, logs=None):
        if USING_TF_KERAS:
            self._forward("on_epoch_end", epoch, logs)
            return
        self._mask()
        if self._writer is not None:
            optimizer = getattr(self.model, "optimizer", None)
            step = (int(optimizer.iterations.numpy()) if optimizer is not None
                    else int(self._wrappers[0].pruning_step.numpy()))
            self._implementation.write_summaries(self._writer, self._wrappers, step)

    def on_train_end(self, logs=None):
        if USING_TF_KERAS:
            self._forward("on_train_end", logs)
        self._mask()

    # TF-MOT's PruningSummaries is a TensorBoard callback: it needs every hook.
    def on_epoch_begin(self, epoch, logs=None):
        self._forward("on_epoch_begin", epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._forward("on_train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._forward("on_train_batch_end", batch, logs)

    def on_test_begin(self, logs=None):
        self._forward("on_test_begin", logs)

    def on_test_end(self, logs=None):
        self._forward("on_test_end", logs)

    def _forward(self, hook, *args):
        for callback in self._forward_to:
            getattr(callback, hook)(*args)
