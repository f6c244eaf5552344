"""Magnitude pruning for Keras 3, built natively (TF-MOT only accepts tf_keras models).

The design follows TF-MOT's `PruneLowMagnitude` so that both Kerases prune alike: each
pruned layer is wrapped in a `PruneLowMagnitude` layer (named
`prune_low_magnitude_{layer}`), which owns one mask and one threshold per prunable
kernel and a pruning step counter, all saved with the model (a `.keras` checkpoint taken
during pruning resumes where it stopped). In a training call the wrapper, in the graph:

1. increments its pruning step (1 at the first batch);
2. at the steps the schedule selects, recomputes each mask from the kernel's current
   magnitudes and the scheduled sparsity (`_pruning_masks`);
3. multiplies each kernel by its mask (so the kernels the optimizer updated at the
   previous step are masked again before they are used);
4. calls the wrapped layer.

The kernels are masked again by `PruningCallback` at the end of each epoch and of
training, and by `strip_pruning`, so that what is saved or exported is sparse. Inference
calls (`training=False`) only call the wrapped layer. Working in the graph rather than in
a callback's `on_train_batch_end` keeps the schedule exact with `steps_per_execution > 1`
and inside a `Distiller`'s or any custom `train_step`.
"""

import re

from keras_dnnopt.backend import keras, register_serializable, tf
from keras_dnnopt.compression._prune_base import prunable_weights
from keras_dnnopt.compression._pruning_masks import (
    block_mask,
    m_by_n_mask,
    magnitude_mask,
    schedule_sparsity,
)


def _slug(name):
    # Keras 3 variable names cannot hold "/".
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


@register_serializable
class PruneLowMagnitude(keras.layers.Wrapper):
    """Keras 3 wrapper that prunes the kernels of a layer during training.

    Made by `keras_dnnopt.compression.prune`; not meant to be created directly.

    Args:
        layer: the layer to prune (a built-in layer of the registry or a layer with
            `get_prunable_weights`).
        target_sparsity, begin_step, end_step, schedule, frequency, block_size,
            structure: as in `keras_dnnopt.compression.prune` (already validated; an
            `end_step` of -1 prunes forever).
        **kwargs: base layer arguments. The name defaults to
            `"prune_low_magnitude_{layer.name}"`.
    """

    def __init__(self, layer, target_sparsity=0.5, begin_step=0, end_step=-1,
                 schedule="constant", frequency=100, block_size=(1, 1),
                 structure="unstructured", **kwargs):
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        super().__init__(layer, **kwargs)
        self.target_sparsity = float(target_sparsity)
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.schedule = schedule
        self.frequency = int(frequency)
        self.block_size = tuple(int(b) for b in block_size)
        self.structure = structure
        self.pruning_vars = []

    def build(self, input_shape=None):
        super().build(input_shape)
        self.pruning_vars = []
        for name, weight in prunable_weights(self.layer):
            mask = self.add_weight(name=f"{_slug(name)}_mask", shape=weight.shape,
                                   initializer="ones", dtype=weight.dtype, trainable=False)
            threshold = self.add_weight(name=f"{_slug(name)}_threshold", shape=(),
                                        initializer="zeros", dtype=weight.dtype,
                                        trainable=False)
            self.pruning_vars.append((weight, mask, threshold))
        # Counts the training calls; 0 until the first one (TF-MOT uses -1 and needs its
        # callback to set 0; here the callback is not needed for the masks to follow the
        # schedule).
        self.pruning_step = self.add_weight(name="pruning_step", shape=(), dtype="int64",
                                            initializer="zeros", trainable=False)

    def schedule_at(self, step):
        """`(should_prune, sparsity)` of this wrapper's schedule at pruning step `step`."""
        return schedule_sparsity(step, schedule=self.schedule,
                                 target_sparsity=self.target_sparsity,
                                 begin_step=self.begin_step, end_step=self.end_step,
                                 frequency=self.frequency)

    def _new_mask(self, weight, sparsity):
        if self.structure == "2:4":
            return tf.constant(0.0, weight.dtype), m_by_n_mask(weight, (2, 4))
        if self.block_size != (1, 1):
            return block_mask(weight, sparsity, self.block_size)
        return magnitude_mask(weight, sparsity)

    def _update_masks(self, step):
        if self.structure == "2:4":
            # As TF-MOT: N:M masks are set once, at the first step, and kept.
            should_prune, sparsity = tf.equal(step, 1), tf.constant(0.5, tf.float32)
        else:
            should_prune, sparsity = self.schedule_at(step)

        def update():
            for weight, mask, threshold in self.pruning_vars:
                new_threshold, new_mask = self._new_mask(tf.convert_to_tensor(weight),
                                                         sparsity)
                mask.assign(new_mask)
                threshold.assign(new_threshold)
            return tf.constant(True)

        tf.cond(should_prune, update, lambda: tf.constant(False))

    def apply_masks(self):
        """Multiplies each prunable kernel by its mask."""
        for weight, mask, _ in self.pruning_vars:
            weight.assign(tf.convert_to_tensor(weight) * tf.convert_to_tensor(mask))

    def call(self, inputs, training=None):
        if training:
            self.pruning_step.assign(self.pruning_step + 1)
            self._update_masks(tf.convert_to_tensor(self.pruning_step))
            self.apply_masks()
        return self.layer(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(target_sparsity=self.target_sparsity, begin_step=self.begin_step,
                      end_step=self.end_step, schedule=self.schedule,
                      frequency=self.frequency, block_size=list(self.block_size),
                      structure=self.structure)
        return config


def wrapper_class():
    return PruneLowMagnitude


def apply_masks(wrapper):
    """Multiplies the kernels of a wrapper by their masks."""
    wrapper.apply_masks()


def scheduled_sparsity(wrapper):
    """The sparsity the wrapper's schedule gives at its current step."""
    return float(wrapper.schedule_at(int(wrapper.pruning_step.numpy()))[1])


def wrap_layer(layer, params):
    """Wraps `layer` for pruning with the validated `prune` parameters."""
    return PruneLowMagnitude(layer, **params)


def write_summaries(writer, wrappers, step):
    """Writes TF-MOT's pruning summaries: the scheduled sparsity, and the sparsity and
    threshold of each mask."""
    with writer.as_default():
        if wrappers:
            current = int(wrappers[0].pruning_step.numpy())
            tf.summary.scalar("sparsity", wrappers[0].schedule_at(current)[1], step=step)
        for wrapper in wrappers:
            for (name, _), (_, mask, threshold) in zip(prunable_weights(wrapper.layer),
                                                       wrapper.pruning_vars, strict=True):
                tag = f"{wrapper.name}/{name}"
                tf.summary.scalar(f"{tag}/mask/sparsity",
                                  1.0 - tf.reduce_mean(tf.convert_to_tensor(mask)), step=step)
                tf.summary.scalar(f"{tag}/threshold", tf.convert_to_tensor(threshold),
                                  step=step)
    writer.flush()
