"""Streaming F1 and RMSE metrics for `compile`, the same on Keras 3 and tf_keras.

Keras 3 ships `F1Score` for one-hot labels only and tf_keras' differs in details, so
`F1Score` here accumulates a confusion matrix itself and takes sparse or one-hot labels
alike; `RootMeanSquaredError` is written alongside so that both metrics save, load and
behave the same on either Keras.
"""

from keras_dnnopt.backend import keras, register_serializable, tf
from keras_dnnopt.utils.validation import check_choice, check_number


@register_serializable
class F1Score(keras.metrics.Metric):
    """Multi-class F1 score accumulated over batches, from sparse or one-hot labels.

    Each batch adds to a `num_classes x num_classes` confusion matrix (rows: true class,
    columns: predicted class = argmax of `y_pred`, so probabilities and logits give the
    same result). The result is computed from the whole matrix, so it is the F1 of
    everything seen since the last reset, not an average of batch F1s. Per class,
    `F1 = 2 TP / (2 TP + FP + FN)` (0 when the class is never true nor predicted).

    Args:
        num_classes: the number of classes, an integer >= 2.
        average: `"macro"` (unweighted mean over the classes that occur in the labels or
            predictions, as scikit-learn's `f1_score(average="macro")`), `"weighted"`
            (weighted by each class's number of true samples) or None (a vector of
            per-class scores). Defaults to `"macro"`.
        name: the metric name. Defaults to `"f1_score"`.
        dtype: the result dtype. Defaults to `"float32"`.

    Labels: `y_true` of shape `(batch,)` or `(batch, 1)` holds class ids; `y_true` of the
    same shape as `y_pred` `(batch, num_classes)` is one-hot (or soft; argmax is used).

    Raises:
        ValueError: if `num_classes < 2` or `average` is unknown.

    Example:

    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
    ...               metrics=[F1Score(num_classes=10)])  # doctest: +SKIP
    >>> metric = F1Score(num_classes=3)
    >>> metric.update_state([0, 1, 2, 2], [[.9, .1, 0], [.2, .7, .1], [.1, .8, .1], [0, 0, 1]])
    >>> round(float(metric.result()), 4)
    0.7778

    Reference:
        van Rijsbergen, Information Retrieval, 1979 (the F-measure).
    """

    def __init__(self, num_classes, average="macro", name="f1_score", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = check_number("num_classes", num_classes, low=2, integer=True)
        self.average = check_choice("average", average, ("macro", "weighted", None))
        self.confusion = self.add_weight(
            name="confusion", shape=(self.num_classes, self.num_classes),
            initializer="zeros", dtype="float64")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.convert_to_tensor(y_true)
        predicted = tf.argmax(tf.reshape(y_pred, [-1, self.num_classes]), axis=-1)
        if y_true.shape.rank == y_pred.shape.rank and y_true.shape[-1] == self.num_classes:
            labels = tf.argmax(tf.reshape(y_true, [-1, self.num_classes]), axis=-1)
        else:
            labels = tf.reshape(tf.cast(y_true, tf.int64), [-1])
        weights = None
        if sample_weight is not None:
            weights = tf.reshape(tf.cast(sample_weight, tf.float64), [-1])
            weights = tf.broadcast_to(weights, tf.shape(labels))
        batch = tf.math.confusion_matrix(labels, predicted, num_classes=self.num_classes,
                                         weights=weights, dtype=tf.float64)
        self.confusion.assign_add(batch)

    def result(self):
        confusion = tf.convert_to_tensor(self.confusion)
        true_positive = tf.linalg.diag_part(confusion)
        support = tf.reduce_sum(confusion, axis=1)  # true samples per class
        predicted = tf.reduce_sum(confusion, axis=0)
        denominator = support + predicted  # 2 TP + FP + FN
        f1 = tf.math.divide_no_nan(2.0 * true_positive, denominator)
        if self.average is None:
            return tf.cast(f1, self.dtype)
        if self.average == "weighted":
            score = tf.math.divide_no_nan(tf.reduce_sum(f1 * support), tf.reduce_sum(support))
        else:
            present = tf.cast(denominator > 0, tf.float64)
            score = tf.math.divide_no_nan(tf.reduce_sum(f1 * present), tf.reduce_sum(present))
        return tf.cast(score, self.dtype)

    def reset_state(self):
        self.confusion.assign(tf.zeros_like(self.confusion))

    def get_config(self):
        return {"num_classes": self.num_classes, "average": self.average, "name": self.name,
                "dtype": _dtype_name(self.dtype)}


@register_serializable
class RootMeanSquaredError(keras.metrics.Metric):
    """Root mean squared error accumulated over batches: `sqrt(sum((y - p)^2) / count)`.

    The sums run over every element of every batch since the last reset (float64
    accumulators), so the result equals the RMSE of all the data seen at once, not a
    mean of batch RMSEs.

    Args:
        name: the metric name. Defaults to `"rmse"`.
        dtype: the result dtype. Defaults to `"float32"`.

    Example:

    >>> metric = RootMeanSquaredError()
    >>> metric.update_state([[0.0], [1.0]], [[1.0], [1.0]])
    >>> metric.update_state([[2.0]], [[0.0]])
    >>> round(float(metric.result()), 4)  # sqrt((1 + 0 + 4) / 3)
    1.291
    >>> model.compile("adam", loss="mse", metrics=[RootMeanSquaredError()])  # doctest: +SKIP
    """

    def __init__(self, name="rmse", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_weight(name="total", shape=(), initializer="zeros",
                                     dtype="float64")
        self.count = self.add_weight(name="count", shape=(), initializer="zeros",
                                     dtype="float64")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.cast(tf.convert_to_tensor(y_pred), tf.float64)
        y_true = tf.cast(tf.convert_to_tensor(y_true), tf.float64)
        if y_true.shape.rank == 1 and y_pred.shape.rank == 2:
            y_true = tf.expand_dims(y_true, -1)  # (batch,) targets for a (batch, 1) output
        squared = tf.square(y_true - y_pred)
        squared = tf.reshape(squared, [tf.shape(squared)[0], -1])
        per_sample = tf.ones_like(squared)
        if sample_weight is not None:
            weights = tf.reshape(tf.cast(sample_weight, tf.float64), [-1, 1])
            squared = squared * weights
            per_sample = per_sample * weights
        self.total.assign_add(tf.reduce_sum(squared))
        self.count.assign_add(tf.reduce_sum(per_sample))

    def result(self):
        mean = tf.math.divide_no_nan(tf.convert_to_tensor(self.total),
                                     tf.convert_to_tensor(self.count))
        return tf.cast(tf.sqrt(mean), self.dtype)

    def reset_state(self):
        self.total.assign(tf.zeros_like(self.total))
        self.count.assign(tf.zeros_like(self.count))

    def get_config(self):
        return {"name": self.name, "dtype": _dtype_name(self.dtype)}


def _dtype_name(dtype):
    return getattr(dtype, "name", dtype)
