"""`Distiller`: knowledge distillation through the ordinary `compile` / `fit` / `evaluate`.

One `train_step` serves both Kerases. It does not go through Keras' compiled loss
(whose API, reduction and per-replica scaling differ between Keras 3 and tf_keras):
the student loss given to `compile` and the distillation losses are computed per
sample, weighted by the sample weights and reduced the way Keras reduces a loss
(`sum(loss * weight) / batch_size` per replica), and the gradient of the replica's loss
divided by the number of replicas is summed across replicas by the optimizer. The
logged values are `keras.metrics.Mean` trackers owned by the Distiller (weighted by the
batch size, as Keras' own loss tracker is) plus the compiled metrics, returned through
`metrics`/`get_metrics_result`, so that `tf.distribute` aggregates them like any
metric instead of logging one replica's raw tensor.
"""

import copy

import numpy as np

from keras_dnnopt.backend import (
    USING_TF_KERAS,
    check_model,
    keras,
    register_serializable,
    tf,
)
from keras_dnnopt.distillation.cache import check_built, split_cached_inputs
from keras_dnnopt.distillation.feature_match import (
    FeatureMatch,
    as_feature_match,
    layer_output_shape,
    make_projection,
)
from keras_dnnopt.distillation.losses import (
    DISTILLATION_LOSSES,
    kl_distillation_loss,
    mean_logits,
    mse_distillation_loss,
    per_sample_loss,
)
from keras_dnnopt.utils.validation import check_number, check_positive

_BUILTIN_LOSSES = {"kl": kl_distillation_loss, "mse": mse_distillation_loss}


@register_serializable
class Distiller(keras.Model):
    """Trains a student to imitate a (frozen) teacher as well as the labels.

    The loss minimised is

        alpha * student_loss + (1 - alpha) * distillation_loss + sum_i w_i * feature_loss_i

    where `student_loss` is the loss given to `compile` (labels vs. the student's
    outputs), `distillation_loss` compares the student's outputs to the teacher's, and
    the feature losses are those of `feature_matches`. `alpha` is the weight of the
    supervised (hard-label) loss, as in Keras' distillation example: `alpha=0` learns from
    the teacher only, `alpha=1` ignores it. With `"kl"` the teacher's softened outputs
    `softmax(t / T)` are the targets of the student's `softmax(s / T)`, and the KL
    divergence is scaled by `T^2` (Hinton et al. 2015). With several teachers their
    softened outputs are averaged (an ensemble teacher).

    The teachers are frozen: they are called with `training=False` (batch-norm moving
    statistics and dropout untouched) outside the gradient tape, and only the student's
    (and the feature projections') variables are updated. `call`, `predict` and
    `evaluate`'s metrics use the student; after `fit`, `distiller.student` is an
    ordinary model to save and deploy. The teachers are not the Distiller's weights
    (`distiller.weights`, the optimizer and training checkpoints hold the student's and
    the projections'; the `.keras` file holds the teachers too), so a teacher built and
    trained earlier, outside a `tf.distribute` strategy's scope, is distilled into a
    student built inside it as it is: it stays on its device and is not changed.

    Logs `loss`, `student_loss`, `distillation_loss` (and `feature_loss` with feature
    matches) and every compiled metric, computed on the student's outputs; validation
    logs the same with the `val_` prefix. Sample weights and class weights weight every
    term per sample. Data prepared by `cache_teacher_outputs` skips the teacher forward
    pass.

    Args:
        teacher: a built `keras.Model` giving logits (or probabilities, see
            `from_logits`), or a list of them (an ensemble).
        student: a `keras.Model` with the same output shape as the teacher(s).
        temperature: the softmax temperature of the soft targets, a number > 0.
            Defaults to 4.0.
        alpha: the weight of the student's supervised loss, in [0, 1]; the distillation
            loss gets `1 - alpha`. Defaults to 0.1.
        distillation_loss: `"kl"` (soft-target KL divergence times `T^2`), `"mse"` (mean
            squared error between logits; the mean logits of an ensemble), or a callable
            `fn(teacher_logits, student_logits)` returning per-sample losses (or a scalar,
            then sample weights do not apply to it); with several teachers it receives
            their mean logits. Defaults to `"kl"`.
        feature_matches: a list of `FeatureMatch` (or `(student_layer, teacher_layer[,
            weight])` tuples): intermediate student layers trained to reproduce teacher
            layers through a learned projection when the channel counts differ. Needs
            functional or Sequential models and a single teacher. Defaults to None.
        from_logits: whether the teacher(s) and student output logits (True) or
            probabilities (False, e.g. a final softmax; their logarithms are used as
            logits). Defaults to True.
        name: the model name. Defaults to `"distiller"`.
        **kwargs: passed to `keras.Model`.

    Raises:
        ValueError: if `alpha` is outside [0, 1], `temperature <= 0`, a teacher is not
            built, the output shapes differ, `distillation_loss` is unknown, or a feature
            match names a missing layer or incompatible shapes.
        TypeError: if a teacher or the student is not a model of the Keras in use.

    Example:

    ```python
    distiller = Distiller(teacher, student, temperature=4.0, alpha=0.1)
    distiller.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    distiller.fit(x_train, y_train, epochs=10, validation_data=(x_val, y_val))
    distiller.student.save("student.keras")
    ```

    Reference:
        Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015.
        https://arxiv.org/abs/1503.02531
    """

    def __init__(self, teacher, student, temperature=4.0, alpha=0.1, distillation_loss="kl",
                 feature_matches=None, from_logits=True, name="distiller", **kwargs):
        teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
        if not teachers:
            raise ValueError("Argument `teacher` must be a model or a non-empty list of "
                             "models. Received: teacher=[]")
        check_model(student, "student")
        for model in teachers:
            check_model(model, "teacher")
            check_built(model, "teacher")
        self._check_output_shapes(teachers, student)
        temperature = check_positive("temperature", temperature)
        alpha = check_number("alpha", alpha, low=0, high=1)
        if not callable(distillation_loss) and distillation_loss not in DISTILLATION_LOSSES:
            raise ValueError(
                "Argument `distillation_loss` must be one of 'kl', 'mse' or a callable "
                "fn(teacher_logits, student_logits). "
                f"Received: distillation_loss={distillation_loss!r}")
        matches = [as_feature_match(m) for m in (feature_matches or [])]
        if matches and len(teachers) > 1:
            raise ValueError(
                "Argument `feature_matches` needs a single teacher (whose layers are named). "
                f"Received: {len(teachers)} teachers")

        super().__init__(name=name, **kwargs)
        # The teachers are held out of sight of Keras' and TensorFlow's variable tracking
        # (see `_Frozen`): they are not the Distiller's weights, so neither the optimizer
        # nor the distribution strategy sees them.
        self._frozen = _Frozen(teachers)
        self.student = student
        self.temperature = temperature
        self.alpha = alpha
        self.distillation_loss = distillation_loss
        self.feature_matches = matches
        self.from_logits = bool(from_logits)
        self._distillation_fn = _BUILTIN_LOSSES.get(distillation_loss, distillation_loss)
        self._student_loss_fn = None
        self._build_feature_extractors()

        self._total_loss_tracker = _LossTracker(name="loss")
        self._student_loss_tracker = _LossTracker(name="student_loss")
        self._distillation_loss_tracker = _LossTracker(name="distillation_loss")
        self._feature_loss_tracker = _LossTracker(name="feature_loss") if matches else None
        # Teachers, student and projections already hold their weights, so the Distiller is
        # built: without this `save_weights`, `ModelCheckpoint(save_weights_only=True)` and
        # keras-tuner's checkpoints refuse it as "not yet built".
        if student.built:
            self.built = True

    @property
    def teacher(self):
        """The teacher, or the list of teachers of an ensemble."""
        return self.teachers[0] if len(self.teachers) == 1 else list(self.teachers)

    @property
    def teachers(self):
        """The list of teachers (one for a single teacher)."""
        return list(self._frozen.teachers)

    @property
    def _teacher_extractor(self):
        return self._frozen.extractor

    # ----------------------------------------------------------------- setup

    @staticmethod
    def _check_output_shapes(teachers, student):
        student_shape = _output_shape(student)
        for model in teachers:
            teacher_shape = _output_shape(model)
            if student_shape is None or teacher_shape is None:
                continue
            if not _compatible(teacher_shape, student_shape):
                raise ValueError(
                    "The teacher and the student must have the same output shape (one logit "
                    f"per class). Received: teacher {model.name!r} output shape "
                    f"{teacher_shape}, student {student.name!r} output shape {student_shape}")

    def _build_feature_extractors(self):
        self._student_extractor = None
        self._frozen.extractor = None
        self.projections = []
        if not self.feature_matches:
            return
        teacher = self.teachers[0]
        student_outputs, teacher_outputs = [], []
        for i, match in enumerate(self.feature_matches):
            s_layer, s_shape = layer_output_shape(self.student, match.student_layer, "student")
            t_layer, t_shape = layer_output_shape(teacher, match.teacher_layer, "teacher")
            student_outputs.append(s_layer.output)
            teacher_outputs.append(t_layer.output)
            self.projections.append(
                make_projection(s_shape, t_shape, name=f"{self.name}_projection_{i}"))
        self._student_extractor = keras.Model(
            self.student.inputs, [self.student.outputs[0], *student_outputs],
            name=f"{self.student.name}_features")
        self._frozen.extractor = keras.Model(
            teacher.inputs, [teacher.outputs[0], *teacher_outputs],
            name=f"{teacher.name}_features")

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, weighted_metrics=None,
                **kwargs):
        """Configures the Distiller for training, like `keras.Model.compile`.

        Args:
            optimizer: the optimizer of the student (and feature projections).
                Defaults to `"rmsprop"`.
            loss: the student's supervised loss (labels vs. student outputs): a Keras loss
                object, name or function. Needed unless `alpha == 0`. Defaults to None.
            metrics: metrics of the student's outputs, as in `keras.Model.compile`.
                Defaults to None.
            weighted_metrics: metrics weighted by sample/class weights. Defaults to None.
            **kwargs: other `keras.Model.compile` arguments (`run_eagerly`,
                `steps_per_execution`, `jit_compile`, ...). `loss_weights` is not supported.

        Raises:
            ValueError: if `loss` is None while `alpha > 0`, or `loss_weights` is given.
        """
        if loss is None and self.alpha > 0:
            raise ValueError(
                "Argument `loss` (the student's supervised loss) is required when alpha > 0. "
                f"Received: loss=None, alpha={self.alpha}")
        if kwargs.pop("loss_weights", None) is not None:
            raise ValueError("Argument `loss_weights` is not supported by Distiller: weigh the "
                             "terms with `alpha` and `FeatureMatch.weight`.")
        self._student_loss_fn = None if loss is None else keras.losses.get(loss)
        super().compile(optimizer=optimizer, loss=None, metrics=metrics,
                        weighted_metrics=weighted_metrics, **kwargs)

    @property
    def metrics(self):
        trackers = [self._total_loss_tracker, self._student_loss_tracker,
                    self._distillation_loss_tracker]
        if self._feature_loss_tracker is not None:
            trackers.append(self._feature_loss_tracker)
        if USING_TF_KERAS:
            compiled = getattr(self, "compiled_metrics", None)
            trackers += list(compiled.metrics) if compiled is not None else []
        else:
            compiled = getattr(self, "_compile_metrics", None)
            trackers += [compiled] if compiled is not None else []
        return trackers

    # ----------------------------------------------------------------- steps

    def call(self, inputs, training=None):
        inputs, _ = split_cached_inputs(inputs)
        return self.student(inputs, training=training)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, cached = split_cached_inputs(x)
        teacher_logits, teacher_features = self._teacher_outputs(x, cached)
        variables = self._distilled_variables()
        with tf.GradientTape() as tape:
            y_pred, student_features = self._student_outputs(x, training=True)
            total, _ = self._compute_losses(y, y_pred, sample_weight, teacher_logits,
                                    student_features, teacher_features, update=True)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = total / float(replicas) if replicas > 1 else total
            if not USING_TF_KERAS:
                scaled = self.optimizer.scale_loss(scaled)
        if USING_TF_KERAS:
            self.optimizer.minimize(scaled, variables, tape=tape)
        else:
            gradients = tape.gradient(scaled, variables)
            self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, cached = split_cached_inputs(x)
        teacher_logits, teacher_features = self._teacher_outputs(x, cached)
        y_pred, student_features = self._student_outputs(x, training=False)
        self._compute_losses(y, y_pred, sample_weight, teacher_logits, student_features,
                     teacher_features, update=True)
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Updates the compiled metrics on the student's outputs and returns all logs."""
        if y is not None:
            return super().compute_metrics(x, y, y_pred, sample_weight)
        return self.get_metrics_result()

    def _distilled_variables(self):
        variables = list(self.student.trainable_variables)
        for projection in self.projections:
            if projection is not None:
                variables += list(projection.trainable_variables)
        return variables

    def _teacher_outputs(self, x, cached):
        if cached is not None:
            if self.feature_matches:
                raise ValueError(
                    "Feature matching needs the live teacher: cached teacher outputs hold the "
                    "final outputs only. Fit on the uncached data, or drop `feature_matches`.")
            cached = tf.convert_to_tensor(cached)
            if cached.shape.rank is None or cached.shape[1] != len(self.teachers):
                raise ValueError(
                    f"The cached teacher outputs have shape {tuple(cached.shape)}: "
                    f"expected (batch, {len(self.teachers)}, ...), one slot per teacher of this "
                    "Distiller. Cache them with the same list of teachers.")
            logits = [self._to_logits(t) for t in tf.unstack(cached, axis=1)]
            return logits, []
        if self._teacher_extractor is not None:
            outputs = self._teacher_extractor(x, training=False)
            logits = [self._to_logits(outputs[0])]
            features = [tf.stop_gradient(tf.cast(f, tf.float32)) for f in outputs[1:]]
            return logits, features
        logits = [self._to_logits(model(x, training=False)) for model in self.teachers]
        return logits, []

    def _student_outputs(self, x, training):
        if self._student_extractor is not None:
            outputs = self._student_extractor(x, training=training)
            return outputs[0], list(outputs[1:])
        return self.student(x, training=training), []

    def _to_logits(self, outputs):
        outputs = tf.stop_gradient(tf.cast(outputs, tf.float32))
        if self.from_logits:
            return outputs
        return tf.math.log(tf.maximum(outputs, 1e-12))

    def _compute_losses(self, y, y_pred, sample_weight, teacher_logits, student_features,
                teacher_features, update):
        student_logits = tf.cast(y_pred, tf.float32)
        _check_logit_shapes(teacher_logits, student_logits)
        if not self.from_logits:
            student_logits = tf.math.log(tf.maximum(student_logits, 1e-12))
        batch = tf.shape(student_logits)[0]
        weights = None
        if sample_weight is not None:
            weights = tf.reshape(tf.cast(sample_weight, tf.float32), [-1])

        if self._student_loss_fn is not None and y is not None:
            student_loss = _reduce(per_sample_loss(self._student_loss_fn, y, y_pred), weights)
        elif self.alpha > 0:
            raise ValueError("The Distiller needs labels `y` when alpha > 0 (it was compiled "
                             f"with alpha={self.alpha}). Received: data without labels")
        else:
            student_loss = tf.zeros([], tf.float32)
        distill_loss = self._distillation_term(teacher_logits, student_logits, weights)
        total = self.alpha * student_loss + (1.0 - self.alpha) * distill_loss

        feature_loss = tf.zeros([], tf.float32)
        for match, projection, s_feat, t_feat in zip(
                self.feature_matches, self.projections, student_features, teacher_features,
                strict=True):
            s_feat = tf.cast(s_feat, tf.float32)
            if projection is not None:
                s_feat = tf.cast(projection(s_feat), tf.float32)
            per_sample = tf.reduce_mean(tf.reshape(tf.square(s_feat - t_feat), [batch, -1]),
                                        axis=1)
            feature_loss += match.weight * _reduce(per_sample, weights)
        total += feature_loss
        if self.student.losses:
            total += tf.add_n([tf.cast(loss, tf.float32) for loss in self.student.losses])

        if update:
            count = tf.cast(batch, tf.float32)
            self._total_loss_tracker.update_state(total, sample_weight=count)
            self._student_loss_tracker.update_state(student_loss, sample_weight=count)
            self._distillation_loss_tracker.update_state(distill_loss, sample_weight=count)
            if self._feature_loss_tracker is not None:
                self._feature_loss_tracker.update_state(feature_loss, sample_weight=count)
        return total, {"student_loss": student_loss, "distillation_loss": distill_loss,
                       "feature_loss": feature_loss}

    def _distillation_term(self, teacher_logits, student_logits, weights):
        if self.distillation_loss in DISTILLATION_LOSSES:
            values = self._distillation_fn(teacher_logits, student_logits, self.temperature)
            return _reduce(values, weights)
        fn = self._distillation_fn
        target = mean_logits(teacher_logits)
        values = fn.call(target, student_logits) if isinstance(fn, keras.losses.Loss) else fn(
            target, student_logits)
        values = tf.cast(values, tf.float32)
        if values.shape.rank == 0:
            return values
        if values.shape.rank > 1:
            values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
        return _reduce(values, weights)

    # ----------------------------------------------------------------- config

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        teachers = [serialize(model) for model in self.teachers]
        loss = self.distillation_loss
        return {
            "name": self.name,
            "trainable": self.trainable,
            "teacher": teachers[0] if len(teachers) == 1 else teachers,
            "student": serialize(self.student),
            "temperature": self.temperature,
            "alpha": self.alpha,
            "distillation_loss": loss if isinstance(loss, str) else serialize(loss),
            "feature_matches": [m.get_config() for m in self.feature_matches],
            "from_logits": self.from_logits,
        }

    def get_compile_config(self):
        """The arguments of `compile`, the student's loss included, as saved in `.keras`.

        Keras' own compile configuration holds what `Distiller.compile` passed to
        `keras.Model.compile`: the optimizer, metrics and options, but `loss=None` (the
        student's loss is applied in `train_step`, not by Keras' compiled loss). The saved
        configuration puts the student's loss back, so that `load_model` compiles the
        Distiller as it was (`compile_from_config`). Its other settings (`alpha`,
        `temperature`, `distillation_loss`, feature matches) are constructor arguments,
        saved by `get_config`.

        Returns:
            A dict of serialized `compile` arguments; `{}` (Keras 3) or None (tf_keras)
            when the Distiller is not compiled.
        """
        config = super().get_compile_config()
        if not config:
            return config
        config = dict(config)
        loss = self._student_loss_fn
        config["loss"] = None if loss is None else keras.saving.serialize_keras_object(loss)
        return config

    def compile_from_config(self, config):
        """Compiles the Distiller from `get_compile_config()`'s output, as `load_model` does.

        Both Kerases call it when a `.keras` file holding a compile configuration is loaded
        with `compile=True`; their default skips a model whose `compile` is overridden
        ("`compile()` was not called as part of model loading"), which left a loaded
        Distiller uncompiled. The optimizer is built on the Distiller's trainable variables
        (the student's and the projections', as in `fit`), so that the saved optimizer
        state loads into it.

        Args:
            config: the dict returned by `get_compile_config`.
        """
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        optimizer = getattr(self, "optimizer", None)
        # tf_keras' legacy optimizers (`keras.optimizers.legacy`) build their slots lazily.
        if self.built and isinstance(optimizer, keras.optimizers.Optimizer):
            optimizer.build(self.trainable_variables)

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)  # Keras' deserialization pops from nested dicts
        deserialize = keras.saving.deserialize_keras_object
        teacher = config.pop("teacher")
        config["teacher"] = ([deserialize(t) for t in teacher] if isinstance(teacher, list)
                             else deserialize(teacher))
        config["student"] = deserialize(config.pop("student"))
        if not isinstance(config["distillation_loss"], str):
            config["distillation_loss"] = deserialize(config["distillation_loss"])
        config["feature_matches"] = [FeatureMatch.from_config(m)
                                     for m in config.get("feature_matches") or []]
        return cls(**config)


class _LossTracker(keras.metrics.Mean):
    """`keras.metrics.Mean` for a logged loss, whose saved state also loads back under a
    `tf.distribute` strategy on tf_keras.

    tf_keras' `Layer.load_own_variables` assigns the stored `h5py.Dataset` itself; a metric
    variable made under a strategy (a `SyncOnReadVariable`, which divides what it is
    assigned by the replica count) cannot take one, so loading a Distiller's
    `.weights.h5` under a strategy (what keras-tuner's `get_best_models` does with
    `distribution_strategy=`) failed with "unsupported operand type(s) for /: 'Dataset'
    and 'int'". The values are read into NumPy arrays first.
    """

    if USING_TF_KERAS:

        def load_own_variables(self, store):
            super().load_own_variables({key: np.asarray(store[key]) for key in store.keys()})


class _Frozen:
    """Holds the teachers (and the teacher's feature extractor) where neither Keras nor
    TensorFlow tracks them: a plain object, which Keras' tracker, TensorFlow's
    `AutoTrackable` and `tf.Module`'s variable search do not look into.

    Why: the teachers are frozen inputs of the distillation, not the Distiller's weights.
    Tracked, they were: (1) given to the optimizer (Keras 3 builds a slot per trainable
    variable, colocated with it), and (2) checked against the strategy (tf_keras' `compile`
    requires every variable of the model to come from the current `strategy.scope()`), so
    a teacher built and trained outside the scope, the common order of work, failed with
    "`colocate_vars_with` must only be passed a variable created in this
    tf.distribute.Strategy.scope()" (Keras 3) or "... was not created in the distribution
    strategy scope" (tf_keras). Keras' own `keras.distillation.Distiller` avoids the first
    failure by setting `teacher.trainable = False` on the user's model; holding them apart
    avoids both without changing the given teacher. The `.keras` format still saves and
    loads them: both Kerases' savers walk the Distiller's public attributes, and `teacher`
    and `teachers` are properties. Training checkpoints (`save_weights`,
    `tf.train.Checkpoint`, `BackupAndRestore`) hold the student and projections only.
    """

    def __init__(self, teachers):
        self.teachers = tuple(teachers)
        self.extractor = None


def _reduce(per_sample, weights):
    """Keras' default reduction: `sum(loss * weight) / batch_size` (a plain mean unweighted)."""
    if weights is None:
        return tf.reduce_mean(per_sample)
    count = tf.cast(tf.shape(per_sample)[0], tf.float32)
    return tf.reduce_sum(per_sample * weights) / tf.maximum(count, 1.0)


def _output_shape(model):
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    if outputs:
        if len(outputs) != 1:
            raise ValueError(
                f"Distiller models must have a single output. Received: model {model.name!r} "
                f"with {len(outputs)} outputs")
        return tuple(outputs[0].shape)
    return None


def _compatible(shape_a, shape_b):
    if len(shape_a) != len(shape_b):
        return False
    pairs = zip(shape_a[1:], shape_b[1:], strict=True)
    return all(a is None or b is None or a == b for a, b in pairs)


def _check_logit_shapes(teacher_logits, student_logits):
    student_shape = tuple(student_logits.shape)
    for logits in teacher_logits:
        if not _compatible(tuple(logits.shape), student_shape):
            raise ValueError(
                "The teacher and the student must have the same output shape. Received: "
                f"teacher outputs of shape {tuple(logits.shape)}, student outputs of shape "
                f"{student_shape}")
