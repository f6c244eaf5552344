"""`MobileNetHyperModel`: a keras-tuner search space over this package's MobileNets."""

import math
import numbers

import keras_tuner as kt

from keras_dnnopt.backend import check_model, keras, tf
from keras_dnnopt.layers.activations import SUPPORTED_ACTIVATIONS
from keras_dnnopt.models import mobilenet_v1, mobilenet_v2
from keras_dnnopt.schedules import OneCycle, StepDecay, WarmupCosineDecay
from keras_dnnopt.utils.validation import (
    check_choice,
    check_number,
    check_positive,
    check_shape,
)

# The builders and their number of blocks (13 separable blocks; 17 inverted residuals).
ARCHITECTURES = {"mobilenet_v1": (mobilenet_v1, 13), "mobilenet_v2": (mobilenet_v2, 17)}
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "warmup_cosine", "step", "one_cycle")

_DEFAULTS = {
    "architecture": list(ARCHITECTURES),
    "alpha": [0.25, 0.5, 0.75, 1.0],
    "dropout": {"min_value": 0.0, "max_value": 0.5, "step": 0.1},
    "activation": ["relu", "relu6", "hard_swish"],
    "l2": [0.0, 1e-5, 1e-4, 1e-3],
    "optimizer": list(OPTIMIZERS),
    "learning_rate": {"min_value": 1e-4, "max_value": 1e-1, "sampling": "log"},
    "schedule": list(SCHEDULES),
    "batch_size": [16, 32, 64, 128],
    "epochs": [5, 10, 20],
}
_RANGE_KEYS = ("min_value", "max_value", "step", "sampling")


def _is_scalar(value):
    return isinstance(value, (str, numbers.Number)) and not isinstance(value, bool)


class _Space:
    """One searched dimension: a fixed value, a list of choices, or an Int/Float range."""

    def __init__(self, name, value, check, integer=False):
        self.name, self.integer = name, integer
        if _is_scalar(value):
            self.kind, self.value = "fixed", check(name, value)
        elif isinstance(value, (list, tuple)):
            if not value:
                raise ValueError(f"Argument `{name}` must list at least one value to choose "
                                 f"from. Received: {name}={value!r}")
            self.kind, self.value = "choice", [check(name, v) for v in value]
        elif isinstance(value, dict):
            unknown = sorted(set(value) - set(_RANGE_KEYS))
            if unknown or "min_value" not in value or "max_value" not in value:
                raise ValueError(
                    f"Argument `{name}` given as a range must be a dict with 'min_value' and "
                    f"'max_value' (and optionally 'step', 'sampling'). Received: {name}={value!r}")
            low, high = check(name, value["min_value"]), check(name, value["max_value"])
            if low > high:
                raise ValueError(f"Argument `{name}` must have min_value <= max_value. "
                                 f"Received: {name}={value!r}")
            check_choice(f"{name}['sampling']", value.get("sampling", "linear"),
                         ("linear", "log", "reverse_log"))
            self.kind, self.value = "range", {**value, "min_value": low, "max_value": high}
        else:
            raise ValueError(
                f"Argument `{name}` must be a value (fixed), a list of values (choices) or a "
                f"dict range {{'min_value': ..., 'max_value': ...}}. Received: {name}={value!r}")

    def values(self):
        """The extreme values of the dimension, for checks across dimensions."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "choice":
            return list(self.value)
        return [self.value["min_value"], self.value["max_value"]]

    def declare(self, hp, name=None):
        name = name or self.name
        if self.kind == "fixed":
            return hp.Fixed(name, self.value)
        if self.kind == "choice":
            return hp.Choice(name, self.value)
        if self.integer:
            return hp.Int(name, step=self.value.get("step", 1),
                          **{k: v for k, v in self.value.items() if k != "step"})
        return hp.Float(name, **self.value)


def _check_float(low=None, high=None, low_inclusive=True, high_inclusive=True):
    def check(name, value):
        return check_number(name, value, low=low, high=high, low_inclusive=low_inclusive,
                            high_inclusive=high_inclusive)
    return check


def _check_int_positive(name, value):
    return check_positive(name, value, integer=True)


def _check_in(choices):
    def check(name, value):
        return check_choice(name, value, choices)
    return check


class MobileNetHyperModel(kt.HyperModel):
    """A keras-tuner `HyperModel` over `mobilenet_v1` / `mobilenet_v2` and their training.

    `build(hp)` returns a compiled MobileNet and `fit(hp, model, ...)` trains it with the
    batch size and number of epochs drawn from `hp`. The search space:

    | hyperparameter | default space |
    |---|---|
    | `architecture` | `"mobilenet_v1"`, `"mobilenet_v2"` |
    | `alpha` (width) | 0.25, 0.5, 0.75, 1.0 |
    | `mobilenet_v1_num_blocks` (depth, active with MobileNetV1) | 7 to 13 |
    | `mobilenet_v2_num_blocks` (depth, active with MobileNetV2) | 9 to 17 |
    | `dropout` | 0.0 to 0.5, step 0.1 |
    | `activation` | `"relu"`, `"relu6"`, `"hard_swish"` |
    | `l2` (kernel L2 factor, 0 for none) | 0, 1e-5, 1e-4, 1e-3 |
    | `optimizer` | `"sgd"` (with `momentum`), `"adam"`, `"adamw"` (with `weight_decay`) |
    | `learning_rate` | 1e-4 to 1e-1, log sampling |
    | `schedule` | `"constant"`, `"warmup_cosine"`, `"step"`, `"one_cycle"` |
    | `batch_size` | 16, 32, 64, 128 |
    | `epochs` | 5, 10, 20 |

    Each argument below fixes or restricts one dimension: a single value fixes it
    (`alpha=0.5`), a list restricts it to choices (`optimizer=["adam", "adamw"]`), a dict
    gives a range (`learning_rate={"min_value": 1e-3, "max_value": 1e-2,
    "sampling": "log"}`; `step` for a grid), and None keeps the default space above.
    (keras-tuner's own way also works: a `hyperparameters=` object given to the tuner with
    `hp.Fixed(...)` entries.)

    Depth: the builders have no depth argument, so `num_blocks=n` keeps the builder's first
    `n` blocks (stem included, with the builder's stride plan) and puts the builder's head
    (global average pooling, `dropout`, dense softmax classifier with the `l2` regularizer)
    on the `n`-th block's output; at full depth (13 or 17 blocks, for MobileNetV2 with its
    1x1 `top` convolution) the model is exactly the builder's.

    Schedules (from `keras_dnnopt.schedules`) span the whole training,
    `epochs * ceil(num_train_samples / batch_size)` steps: `"warmup_cosine"` is
    `WarmupCosineDecay` with a 10% warm-up, `"step"` is `StepDecay` dividing by 10 at 50%
    and 75%, `"one_cycle"` is `OneCycle` peaking at the learning rate. If
    `num_train_samples` is None, `fit` counts the samples of `x` (the batches of a finite
    `tf.data.Dataset`) and recompiles the model with the schedule sized for them. Under
    Hyperband the tuner sets the epochs itself (`max_epochs`), so the `epochs`
    hyperparameter is not used there.

    Args:
        input_shape: the image shape `(height, width, channels)`.
        num_classes: the number of classes, an int >= 1.
        architecture: `"mobilenet_v1"`, `"mobilenet_v2"` or a list of them.
        alpha: the width multiplier(s), > 0.
        num_blocks: the number of blocks kept (see Depth), an int >= 1 and at most the
            smallest block count of the searched architectures.
        dropout: the dropout rate(s) before the classifier, in [0, 1).
        activation: the block activation(s), see `keras_dnnopt.layers`.
        l2: the L2 factor(s) of every kernel, >= 0 (0: no regularizer).
        optimizer: `"sgd"`, `"adam"`, `"adamw"` or a list of them.
        learning_rate: the (peak) learning rate(s), > 0.
        schedule: `"constant"`, `"warmup_cosine"`, `"step"`, `"one_cycle"` or a list.
        batch_size: the batch size(s), ints >= 1.
        epochs: the number(s) of epochs, ints >= 1.
        num_train_samples: the number of training samples, to size the schedules in
            `build`; None counts them in `fit`. Defaults to None.
        momentum: the momentum of SGD, in [0, 1). Defaults to 0.9.
        batch_norm_momentum: the momentum of the models' batch-norm moving statistics, in
            [0, 1). Keras' 0.99 needs thousands of steps to settle; for trials of a few
            hundred steps (small datasets, few epochs) 0.9 keeps validation from sitting at
            chance. Defaults to 0.99.
        weight_decay: the decoupled weight decay of AdamW, >= 0. Defaults to 1e-4.
        loss: the loss given to `compile`. Defaults to
            `"sparse_categorical_crossentropy"` (integer labels; the model outputs
            probabilities).
        metrics: the metrics given to `compile`. Defaults to `["accuracy"]`.
        compile_kwargs: more keyword arguments of `compile`, e.g. `{"jit_compile": True}`
            or `{"run_eagerly": True}` (faster for a few steps of a tiny model, which
            then skip tracing). Defaults to None.
        name: the hypermodel name. Defaults to `"mobilenet_hypermodel"`.
        tunable: whether the hyperparameters are tunable (keras-tuner). Defaults to True.

    Raises:
        ValueError: for a value outside its valid range (e.g. `alpha=0`,
            `optimizer="rmsprop"`, `num_blocks=14` with MobileNetV1), an empty list, or a
            malformed range.

    Example:

    ```python
    hypermodel = MobileNetHyperModel((8, 8, 1), 10, architecture="mobilenet_v1",
                                     optimizer=["adam", "adamw"], epochs=3)
    best_model, best_hp, tuner = keras_dnnopt.tuning.tune(
        x, y, validation_data=(x_val, y_val), hypermodel=hypermodel, max_trials=10)
    ```

    Reference:
        - [Howard et al., 2017. MobileNets](https://arxiv.org/abs/1704.04861)
        - [Sandler et al., 2018. MobileNetV2](https://arxiv.org/abs/1801.04381)
        - [Li et al., 2018. Hyperband](https://arxiv.org/abs/1603.06560)
    """

    def __init__(self, input_shape, num_classes, architecture=None, alpha=None,
                 num_blocks=None, dropout=None, activation=None, l2=None, optimizer=None,
                 learning_rate=None, schedule=None, batch_size=None, epochs=None,
                 num_train_samples=None, momentum=0.9, weight_decay=1e-4,
                 batch_norm_momentum=0.99, loss="sparse_categorical_crossentropy",
                 metrics=("accuracy",),
                 compile_kwargs=None, name="mobilenet_hypermodel", tunable=True):
        super().__init__(name=name, tunable=tunable)
        self.input_shape = check_shape("input_shape", input_shape, rank=3)
        self.num_classes = check_positive("num_classes", num_classes, integer=True)

        def space(arg, value, check, integer=False):
            return _Space(arg, _DEFAULTS[arg] if value is None else value, check, integer)

        self.architecture = space("architecture", architecture, _check_in(tuple(ARCHITECTURES)))
        self.alpha = space("alpha", alpha, _check_float(low=0, low_inclusive=False))
        self.dropout = space("dropout", dropout, _check_float(0, 1, high_inclusive=False))
        self.activation = space("activation", activation, _check_in(SUPPORTED_ACTIVATIONS))
        self.l2 = space("l2", l2, _check_float(low=0))
        self.optimizer = space("optimizer", optimizer, _check_in(OPTIMIZERS))
        self.learning_rate = space("learning_rate", learning_rate,
                                   _check_float(low=0, low_inclusive=False))
        self.schedule = space("schedule", schedule, _check_in(SCHEDULES))
        self.batch_size = space("batch_size", batch_size, _check_int_positive, integer=True)
        self.epochs = space("epochs", epochs, _check_int_positive, integer=True)
        self.num_blocks = self._num_blocks_spaces(num_blocks)
        if num_train_samples is not None:
            num_train_samples = check_positive("num_train_samples", num_train_samples,
                                               integer=True)
        self.num_train_samples = num_train_samples
        self.momentum = check_number("momentum", momentum, low=0, high=1, high_inclusive=False)
        self.weight_decay = check_number("weight_decay", weight_decay, low=0)
        self.batch_norm_momentum = check_number("batch_norm_momentum", batch_norm_momentum,
                                                low=0, high=1, high_inclusive=False)
        self.loss = loss
        self.metrics = list(metrics) if metrics is not None else None
        self.compile_kwargs = dict(compile_kwargs or {})

    def _num_blocks_spaces(self, num_blocks):
        """One depth dimension per searched architecture, `{arch: _Space}`."""
        spaces = {}
        for arch in self.architecture.values():
            total = ARCHITECTURES[arch][1]
            value = num_blocks
            if value is None:
                value = {"min_value": math.ceil(total / 2), "max_value": total}

            def check(name, v, total=total, arch=arch):
                v = check_positive(name, v, integer=True)
                if v > total:
                    raise ValueError(f"Argument `{name}` must be <= {total}, the number of "
                                     f"blocks of {arch}. Received: {name}={v!r}")
                return v

            spaces[arch] = _Space("num_blocks", value, check, integer=True)
        return spaces

    @property
    def max_epochs(self):
        """The largest number of epochs of the space (Hyperband's default `max_epochs`)."""
        return max(self.epochs.values())

    # ------------------------------------------------------------------ build

    def build(self, hp):
        """Builds and compiles the model the hyperparameters `hp` describe."""
        arch = self.architecture.declare(hp)
        num_blocks = None
        for name in self.architecture.values():
            with hp.conditional_scope("architecture", [name]):
                value = self.num_blocks[name].declare(hp, f"{name}_num_blocks")
            if name == arch:
                num_blocks = value
        model = self.build_model(
            arch, alpha=self.alpha.declare(hp), num_blocks=num_blocks,
            dropout=self.dropout.declare(hp), activation=self.activation.declare(hp),
            l2=self.l2.declare(hp))
        # Declared here too so that they are part of the space the tuner sees before `fit`.
        self.optimizer.declare(hp)
        self.learning_rate.declare(hp)
        self.schedule.declare(hp)
        self.batch_size.declare(hp)
        self.epochs.declare(hp)
        steps_per_epoch = 1
        if self.num_train_samples is not None:
            steps_per_epoch = math.ceil(self.num_train_samples / hp.get("batch_size"))
        self.compile_model(hp, model, steps_per_epoch)
        return model

    def build_model(self, architecture, alpha, num_blocks, dropout, activation, l2):
        """Builds (without compiling) the MobileNet of the given architecture and depth."""
        builder, total = ARCHITECTURES[architecture]
        regularizer = float(l2) if l2 else None
        model = builder(input_shape=self.input_shape, num_classes=self.num_classes,
                        alpha=alpha, dropout=dropout, activation=activation,
                        kernel_regularizer=regularizer,
                        batch_norm_momentum=self.batch_norm_momentum)
        if num_blocks == total:
            return model
        # Truncate: keep the first `num_blocks` blocks (layers named `block<i>_...`) and put
        # the builder's head on the last one.
        indices = sorted({int(layer.name[5:].split("_")[0]) for layer in model.layers
                          if layer.name.startswith("block")})
        prefix = f"block{indices[num_blocks - 1]}_"
        last = [layer for layer in model.layers if layer.name.startswith(prefix)][-1]
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(last.output)
        if dropout:
            x = keras.layers.Dropout(dropout, name="dropout")(x)
        outputs = keras.layers.Dense(
            self.num_classes, activation="softmax", name="predictions",
            kernel_regularizer=keras.regularizers.L2(regularizer) if regularizer else None)(x)
        return keras.Model(model.inputs, outputs, name=f"{model.name}_{num_blocks}_blocks")

    # ---------------------------------------------------------------- compile

    def make_schedule(self, hp, total_steps):
        """The learning rate (a float or a `keras_dnnopt.schedules` schedule) of `hp` for a
        training of `total_steps` steps."""
        learning_rate = hp.get("learning_rate")
        name = hp.get("schedule")
        total_steps = max(int(total_steps), 1)
        if name == "warmup_cosine":
            warmup = total_steps // 10
            return WarmupCosineDecay(learning_rate, decay_steps=max(total_steps - warmup, 1),
                                     warmup_steps=warmup)
        if name == "step":
            boundaries = sorted({max(1, round(0.5 * total_steps)),
                                 max(2, round(0.75 * total_steps))})
            return StepDecay(learning_rate, boundaries=boundaries, gamma=0.1)
        if name == "one_cycle":
            # OneCycle needs more than one warm-up step (pct_start * total_steps > 1).
            return OneCycle(learning_rate, total_steps=max(total_steps, 4))
        return learning_rate

    def make_optimizer(self, hp, learning_rate):
        """The optimizer of `hp` with the given learning rate (or schedule)."""
        name = hp.get("optimizer")
        if name == "sgd":
            return keras.optimizers.SGD(learning_rate=learning_rate, momentum=self.momentum)
        if name == "adamw":
            return keras.optimizers.AdamW(learning_rate=learning_rate,
                                          weight_decay=self.weight_decay)
        return keras.optimizers.Adam(learning_rate=learning_rate)

    def compile_model(self, hp, model, steps_per_epoch):
        """Compiles `model` with the optimizer and the learning rate schedule of `hp`, the
        schedule spanning `epochs * steps_per_epoch` steps."""
        check_model(model, "model")
        epochs = hp.values.get("tuner/epochs", hp.get("epochs"))
        schedule = self.make_schedule(hp, epochs * steps_per_epoch)
        model.compile(optimizer=self.make_optimizer(hp, schedule), loss=self.loss,
                      metrics=self.metrics, **self.compile_kwargs)

    # -------------------------------------------------------------------- fit

    def fit(self, hp, model, *args, **kwargs):
        """Trains `model` with the batch size and epochs of `hp` (keyword arguments as for
        `model.fit`; those two are overridden, except the epochs Hyperband sets)."""
        check_model(model, "model")
        x = args[0] if args else kwargs.get("x")
        is_dataset = isinstance(x, tf.data.Dataset)
        if not is_dataset:
            # A tf.data.Dataset comes batched: its own batch size is used.
            kwargs["batch_size"] = hp.get("batch_size")
        if "tuner/epochs" not in hp.values:
            kwargs["epochs"] = hp.get("epochs")
        if self.num_train_samples is None and hp.get("schedule") != "constant":
            steps_per_epoch = None
            if is_dataset and int(x.cardinality()) > 0:
                steps_per_epoch = int(x.cardinality())
            elif x is not None and not is_dataset:
                steps_per_epoch = math.ceil(len(x) / hp.get("batch_size"))
            if steps_per_epoch:
                self.compile_model(hp, model, steps_per_epoch)
        return model.fit(*args, **kwargs)
