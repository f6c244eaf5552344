"""`OneCycleMomentum`: cycles the optimizer's momentum inversely to a 1cycle learning rate."""

from keras_dnnopt.backend import USING_TF_KERAS, keras
from keras_dnnopt.callbacks._hooks import (
    DynamicHyperparameter,
    base_optimizer,
    model_optimizer,
    retrace,
)
from keras_dnnopt.schedules.one_cycle import one_cycle_value
from keras_dnnopt.utils.patching import MethodPatch
from keras_dnnopt.utils.validation import check_number

# The optimizer attribute that plays the part of momentum, in order of preference.
_MOMENTUM_ATTRIBUTES = ("beta_1", "momentum")
# The optimizer method that runs one whole update (every variable, then `iterations += 1`),
# which a `LossScaleOptimizer` calls on its inner optimizer too.
_STEP_METHOD = "apply_gradients" if USING_TF_KERAS else "apply"


class OneCycleMomentum(keras.callbacks.Callback):
    """Cycles the optimizer's momentum inversely to a 1cycle learning rate.

    At optimizer step `t` the momentum is
    `one_cycle_value(t, max_momentum, base_momentum, max_momentum, total_steps,
    pct_start, anneal_strategy)`: it falls from `max_momentum` to `base_momentum` while
    a `keras_dnnopt.schedules.OneCycle` learning rate with the same `total_steps` and
    `pct_start` rises, then climbs back while the rate falls, and stays at
    `max_momentum` after `total_steps`. The momentum is SGD's (or RMSprop's) `momentum`,
    or `beta_1` for Adam, AdamW and the other Adam variants.

    Keras optimizers keep these as Python floats that are baked into the traced train
    step, so assigning a new float does nothing once `fit` has traced. In
    `on_train_begin` the callback replaces the attribute by a stand-in computed from
    `optimizer.iterations` inside the trace (so it is exact at every step, also with
    `steps_per_execution > 1`), computed once per optimizer step (a few scalar ops that
    the update of every variable reuses), and forces a retrace; `on_train_end` puts the
    configured float back (a model saved during `fit`, e.g. by `ModelCheckpoint`, also
    saves the configured float). Counting steps with the optimizer's `iterations` is what
    keeps it in step with a `OneCycle` learning rate.

    Args:
        total_steps: the length of the cycle in optimizer steps (usually epochs * steps
            per epoch), an integer > 0; the same as the `OneCycle` schedule's.
        base_momentum: the lowest momentum, reached at the peak learning rate, in
            [0, 1). Defaults to 0.85.
        max_momentum: the momentum at the start and end of the cycle, in [0, 1), and
            >= `base_momentum`. Defaults to 0.95.
        pct_start: the fraction of the cycle spent lowering the momentum, in (0, 1),
            with `pct_start * total_steps > 1`. Defaults to 0.3.
        anneal_strategy: `"cos"` or `"linear"`. Defaults to `"cos"`.

    Raises:
        ValueError: if an argument is out of range; at the start of `fit`, if the
            optimizer has no momentum (`beta_1` or `momentum`) attribute, or is an SGD
            or RMSprop created with `momentum=0.0` (it keeps no velocity to apply the
            momentum to: create it with `momentum > 0`, which this callback overrides).

    Example:

    ```python
    steps = epochs * steps_per_epoch
    model.compile(
        optimizer=keras.optimizers.SGD(OneCycle(0.1, total_steps=steps), momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(x, y, epochs=epochs, callbacks=[OneCycleMomentum(total_steps=steps)])
    ```

    Reference:
        Smith, [A disciplined approach to neural network hyper-parameters: Part 1](
        https://arxiv.org/abs/1803.09820), 2018.
    """

    def __init__(self, total_steps, base_momentum=0.85, max_momentum=0.95, pct_start=0.3,
                 anneal_strategy="cos"):
        super().__init__()
        # `one_cycle_value` validates `total_steps`, `pct_start` and `anneal_strategy` with
        # the same messages as the `OneCycle` schedule.
        one_cycle_value(0, 0.0, 0.0, 0.0, total_steps, pct_start, anneal_strategy)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.base_momentum = check_number("base_momentum", base_momentum, low=0.0, high=1.0,
                                          high_inclusive=False)
        self.max_momentum = check_number("max_momentum", max_momentum, low=0.0, high=1.0,
                                         high_inclusive=False)
        if self.base_momentum > self.max_momentum:
            raise ValueError(
                "Argument `base_momentum` must be <= `max_momentum` (the momentum is lowest "
                f"at the peak learning rate). Received: base_momentum={base_momentum!r}, "
                f"max_momentum={max_momentum!r}"
            )
        self.anneal_strategy = anneal_strategy
        self._optimizer = None
        self._attribute = None
        self._configured = None
        self._config_patch = None
        self._step_patch = None

    def momentum_at(self, step):
        """The momentum at optimizer step `step`, a float32 scalar tensor."""
        return one_cycle_value(step, self.max_momentum, self.base_momentum, self.max_momentum,
                               self.total_steps, self.pct_start, self.anneal_strategy)

    def on_train_begin(self, logs=None):
        optimizer = base_optimizer(model_optimizer(self))
        attribute = next((a for a in _MOMENTUM_ATTRIBUTES if hasattr(optimizer, a)), None)
        configured = getattr(optimizer, attribute, None) if attribute else None
        if isinstance(configured, DynamicHyperparameter):  # left over by an interrupted fit
            configured = configured.reference
        if attribute is None or isinstance(configured, bool) or not isinstance(
                configured, (int, float)):
            raise ValueError(
                "OneCycleMomentum needs an optimizer with a float `momentum` (SGD, RMSprop) "
                f"or `beta_1` (Adam, AdamW, ...). Received: optimizer={optimizer!r} with "
                f"{attribute or 'momentum'}={configured!r}"
            )
        if attribute == "momentum" and configured == 0:
            raise ValueError(
                f"OneCycleMomentum cannot cycle the momentum of a {type(optimizer).__name__} "
                "created with `momentum=0.0`: it keeps no velocity. Create it with momentum > 0 "
                "(e.g. `momentum=0.9`; the callback overrides the value during `fit`). "
                f"Received: momentum={configured!r}"
            )
        self._optimizer, self._attribute, self._configured = optimizer, attribute, configured
        momentum = DynamicHyperparameter(lambda: self.momentum_at(optimizer.iterations),
                                         reference=configured)
        setattr(optimizer, attribute, momentum)

        def make_step(step):  # one momentum per optimizer step, not one per variable
            def wrapped(*args, **kwargs):
                with momentum.computed_once():
                    return step(*args, **kwargs)

            return wrapped

        self._step_patch = MethodPatch(optimizer, _STEP_METHOD, make_step)

        def make_get_config(get_config):  # a checkpoint saved during fit: the float
            def wrapped(*args, **kwargs):
                config = get_config(*args, **kwargs)
                if isinstance(config.get(attribute), DynamicHyperparameter):
                    config[attribute] = configured
                return config

            return wrapped

        self._config_patch = MethodPatch(optimizer, "get_config", make_get_config)
        retrace(self.model)

    def on_train_end(self, logs=None):
        if self._optimizer is None:
            return
        setattr(self._optimizer, self._attribute, self._configured)
        self._config_patch.restore()
        self._step_patch.restore()
        self._optimizer = self._config_patch = self._step_patch = None
        retrace(self.model)
