"""Training toward prunable channels, and pruning channels step by step.

- `GroupLasso`: a kernel regularizer, the sum over output channels of the L2 norm of each
  filter (Wen et al., 2016): it drives whole filters to zero, which `prune_channels`
  then removes for free.
- `with_channel_sparsity(model, bn_gamma_l1=..., group_lasso=...)`: a copy of a model with
  an L1 penalty on every batch norm's gamma (network slimming, Liu et al., 2017) and/or
  `GroupLasso` on its kernels, to train before `prune_channels(criterion="bn_gamma")`.
  Keras only attaches regularizers when a layer is made, so the copy is rebuilt from the
  layers' configs, the weights copied.
- `prune_channels_iteratively(model, x, y, target_macs, steps=...)`: prune a fraction,
  fine-tune (distilling from the unpruned model with `keras_dnnopt.distillation.Distiller`
  by default), repeat until the MAC budget, with a progress bar; iterative pruning loses
  less than one large step (Han et al., 2015; Molchanov et al., 2017).

References:
    - [Wen et al., 2016. Learning Structured Sparsity in Deep Neural Networks](
      https://arxiv.org/abs/1608.03665)
    - [Liu et al., 2017. Learning Efficient Convolutional Networks through Network
      Slimming](https://arxiv.org/abs/1708.06519)
"""

from keras_dnnopt.backend import check_model, keras, register_serializable, tf
from keras_dnnopt.compression._tfmot_support import flatten_model

_KERNEL_LAYERS = ("Conv1D", "Conv2D", "Conv3D", "Dense", "SeparableConv1D", "SeparableConv2D")


def _check_strength(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"Argument `{name}` must be a number >= 0 (the penalty's weight). "
                         f"Received: {name}={value!r}")
    return float(value)


@register_serializable
class GroupLasso(keras.regularizers.Regularizer):
    """`strength * sum over output channels of ||filter||_2`: whole filters go to zero.

    The output channels are the kernel's last axis (Conv and Dense kernels).

    Args:
        strength: the penalty's weight, >= 0. Defaults to 1e-4.

    Example:

    ```python
    keras.layers.Conv2D(32, 3, kernel_regularizer=GroupLasso(1e-4))
    ```
    """

    def __init__(self, strength=1e-4):
        self.strength = _check_strength("strength", strength)

    def __call__(self, kernel):
        kernel = tf.convert_to_tensor(kernel)
        axes = list(range(len(kernel.shape) - 1))
        # The small epsilon keeps the gradient finite at an all-zero filter.
        norms = tf.sqrt(tf.reduce_sum(tf.square(kernel), axis=axes) + 1e-12)
        return self.strength * tf.reduce_sum(norms)

    def get_config(self):
        return {"strength": self.strength}


def with_channel_sparsity(model, bn_gamma_l1=1e-4, group_lasso=0.0):
    """A copy of `model` whose training drives channels toward removable.

    Args:
        model: a functional or Sequential model of the Keras in use (built); the blocks of
            `keras_dnnopt.layers` are unrolled into built-in layers.
        bn_gamma_l1: the L1 penalty on each batch norm's gamma (network slimming), >= 0.
            Defaults to 1e-4.
        group_lasso: the `GroupLasso` strength on the Conv/Dense kernels, >= 0; the layers
            that write the model's outputs are left alone. Defaults to 0.

    Returns:
        A new model with the same weights and the regularizers, to compile and train;
        then `prune_channels(trained, ..., criterion="bn_gamma")` (or `"l1"` after group
        lasso).

    Raises:
        ValueError: for a negative strength, or both strengths 0.
    """
    check_model(model)
    bn_gamma_l1 = _check_strength("bn_gamma_l1", bn_gamma_l1)
    group_lasso = _check_strength("group_lasso", group_lasso)
    if bn_gamma_l1 == 0 and group_lasso == 0:
        raise ValueError("Arguments `bn_gamma_l1` and `group_lasso` are both 0: nothing would "
                         "change. Give one of them a positive strength.")
    flat, _ = flatten_model(model, always=True)
    output_layers = {tensor._keras_history[0].name for tensor in flat.outputs}  # noqa: SLF001

    def clone(layer):
        config = layer.get_config()
        kind = type(layer).__name__
        if kind == "BatchNormalization" and bn_gamma_l1 and layer.scale:
            config["gamma_regularizer"] = keras.regularizers.L1(bn_gamma_l1)
        elif kind in _KERNEL_LAYERS and group_lasso and layer.name not in output_layers:
            key = "pointwise_regularizer" if kind.startswith("Separable") else (
                "kernel_regularizer")
            config[key] = GroupLasso(group_lasso)
        return type(layer).from_config(config)

    copy = keras.models.clone_model(flat, clone_function=clone)
    for new, old in zip(copy.layers, flat.layers, strict=True):
        new.set_weights(old.get_weights())
    return copy


def prune_channels_iteratively(model, x, y, target_macs, steps=3, epochs=2, distill=True,
                               optimizer="adam", learning_rate=1e-3, loss=None,
                               batch_size=32, validation_data=None, verbose=1,
                               **prune_kwargs):
    """Prunes channels in `steps` steps toward `target_macs`, fine-tuning after each.

    The MAC budget of step `k` is `macs * (target / macs) ** (k / steps)` (the same
    fraction removed at each step); each step prunes the current model with
    `prune_channels` and fine-tunes it `epochs` epochs, distilling from the unpruned
    `model` (`keras_dnnopt.distillation.Distiller`, logits assumed unless the model ends
    in a softmax) or on the labels alone.

    Args:
        model: the trained, unpruned model (functional or Sequential, built); unchanged.
        x, y: the training data (arrays).
        target_macs: the final budget: an int (MACs per sample) or a float in (0, 1) (a
            fraction of the model's MACs).
        steps: the number of prune + fine-tune steps, >= 1. Defaults to 3.
        epochs: fine-tuning epochs per step, >= 0. Defaults to 2.
        distill: fine-tune by distillation from `model` (True) or on labels (False).
            Defaults to True.
        optimizer: a Keras optimizer name (made afresh per step with `learning_rate`).
            Defaults to `"adam"`.
        learning_rate: the fine-tuning learning rate. Defaults to 1e-3.
        loss: the supervised loss; defaults to sparse categorical cross-entropy (from
            logits unless the model ends in a softmax).
        batch_size: the batch size. Defaults to 32.
        validation_data: `(x_val, y_val)`, evaluated after each step. Defaults to None.
        verbose: 1 for a progress bar over the steps, 0 for none. Defaults to 1.
        **prune_kwargs: `criterion`, `round_to`, `exclude`, `per_layer` of
            `prune_channels`.

    Returns:
        A tuple `(pruned_model, log)`: the final plain model, and one dict per step
        (`step`, `macs`, `params`, `loss` and, with validation data, `val_accuracy`).

    Raises:
        ValueError: for a bad `steps`/`epochs`, a `target_macs` out of reach, or a bad
            pruning argument (from `prune_channels`).
    """
    from keras_dnnopt.compression.channel_pruning import _check_target, channel_pruning_plan
    from keras_dnnopt.profiling import profile

    check_model(model)
    for name, value, low in (("steps", steps, 1), ("epochs", epochs, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"Argument `{name}` must be an int >= {low}. Received: "
                             f"{name}={value!r}")
    macs = profile(model).macs
    budget = _check_target(target_macs, macs)
    from_logits = not _ends_in_softmax(model)
    loss = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    bar = keras.utils.Progbar(steps, stateful_metrics=["macs", "val_accuracy"],
                              verbose=verbose)
    current, log = model, []
    for step in range(1, steps + 1):
        goal = int(macs * (budget / macs) ** (step / steps))
        plan = channel_pruning_plan(current, target_macs=max(goal, budget), **prune_kwargs)
        current = plan.apply()
        history = _fine_tune(model, current, x, y, epochs, distill, optimizer, learning_rate,
                             loss, batch_size, from_logits)
        entry = {"step": step, "macs": int(profile(current).macs),
                 "params": int(current.count_params()),
                 "loss": float(history[-1]) if history else None}
        if validation_data is not None:
            current.compile(loss=loss, metrics=["accuracy"])
            entry["val_accuracy"] = float(current.evaluate(
                *validation_data, batch_size=batch_size, verbose=0)[1])
        log.append(entry)
        bar.update(step, [(k, entry[k]) for k in ("macs", "val_accuracy") if k in entry])
    return current, log


def _ends_in_softmax(model):
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "") == "softmax" or type(last).__name__ == "Softmax"


def _fine_tune(teacher, student, x, y, epochs, distill, optimizer, learning_rate, loss,
               batch_size, from_logits):
    if epochs == 0:
        return []
    opt = keras.optimizers.get(optimizer)
    opt.learning_rate = learning_rate
    if distill:
        from keras_dnnopt.distillation import Distiller

        trainer = Distiller(teacher=teacher, student=student, from_logits=from_logits)
        trainer.compile(optimizer=opt, loss=loss)
    else:
        trainer = student
        trainer.compile(optimizer=opt, loss=loss)
    history = trainer.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    return history.history.get("loss", [])
