"""`FeatureMatch`: which intermediate student layer imitates which teacher layer (a hint).

The `Distiller` reads each pair's outputs in the same forward passes it already runs,
passes the student's through a learned projection when the channel counts differ
(a 1x1 convolution for image features, a dense layer otherwise, as in FitNets), and
adds `weight * mean((projection(student_feature) - teacher_feature)^2)` to the loss.
"""

from keras_dnnopt.backend import keras, register_serializable
from keras_dnnopt.utils.validation import check_number


@register_serializable
class FeatureMatch:
    """A student layer trained to reproduce a teacher layer's output (feature distillation).

    Args:
        student_layer: the name of a layer of the student (a functional or Sequential
            model); its output is matched.
        teacher_layer: the name of a layer of the teacher whose output is the target.
        weight: the weight of this feature loss in the total loss, a number >= 0. The
            feature loss is added on top of `alpha * student_loss + (1 - alpha) *
            distillation_loss`. Defaults to 1.0.

    Raises:
        ValueError: if a layer name is not a non-empty string or `weight < 0`.

    Example:

    ```python
    distiller = Distiller(teacher, student, feature_matches=[
        FeatureMatch("student_block_3", "teacher_block_6", weight=0.5)])
    ```

    Reference:
        Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015.
        https://arxiv.org/abs/1412.6550
    """

    def __init__(self, student_layer, teacher_layer, weight=1.0):
        for arg, value in (("student_layer", student_layer), ("teacher_layer", teacher_layer)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"Argument `{arg}` must be a layer name (a non-empty string). "
                                 f"Received: {arg}={value!r}")
        self.student_layer = student_layer
        self.teacher_layer = teacher_layer
        self.weight = check_number("weight", weight, low=0)

    def get_config(self):
        return {"student_layer": self.student_layer, "teacher_layer": self.teacher_layer,
                "weight": self.weight}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return (f"FeatureMatch(student_layer={self.student_layer!r}, "
                f"teacher_layer={self.teacher_layer!r}, weight={self.weight})")


def as_feature_match(value):
    """A `FeatureMatch` from one, a `(student_layer, teacher_layer[, weight])` tuple or a dict."""
    if isinstance(value, FeatureMatch):
        return value
    if isinstance(value, dict):
        return FeatureMatch(**value)
    if isinstance(value, (list, tuple)) and len(value) in (2, 3):
        return FeatureMatch(*value)
    raise ValueError(
        "Each entry of `feature_matches` must be a FeatureMatch, a (student_layer, "
        f"teacher_layer[, weight]) tuple or a dict. Received: {value!r}")


def layer_output_shape(model, layer_name, role):
    """The output shape of a named layer of a functional/Sequential model, with a clear error."""
    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        names = [layer.name for layer in model.layers]
        raise ValueError(
            f"The {role} has no layer named {layer_name!r} (FeatureMatch.{role}_layer). "
            f"Its layers are: {names}") from None
    try:
        output = layer.output
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"Cannot read the output of {role} layer {layer_name!r}: feature matching needs a "
            f"functional or Sequential {role} whose layer is called exactly once. ({error})"
        ) from None
    return layer, tuple(output.shape)


def make_projection(student_shape, teacher_shape, name):
    """The learned projection from the student feature to the teacher's, or None if equal.

    A 1x1 `Conv2D` for rank-4 (image) features, a `Dense` on the last axis otherwise.
    Only the channel (last) axis may differ; other dimensions must agree.
    """
    if len(student_shape) != len(teacher_shape) or any(
            s is not None and t is not None and s != t
            for s, t in zip(student_shape[1:-1], teacher_shape[1:-1], strict=True)):
        raise ValueError(
            f"Feature match {name!r}: the student feature has shape {student_shape} and the "
            f"teacher feature {teacher_shape}; they may differ only in the last (channel) "
            "axis, which a learned projection maps. Pick layers of the same spatial size.")
    if student_shape[-1] == teacher_shape[-1]:
        return None
    if teacher_shape[-1] is None:
        raise ValueError(f"Feature match {name!r}: the teacher feature's channel axis must be "
                         f"known. Received: teacher feature shape {teacher_shape}")
    if len(student_shape) == 4:
        layer = keras.layers.Conv2D(teacher_shape[-1], 1, name=name)
    else:
        layer = keras.layers.Dense(teacher_shape[-1], name=name)
    layer.build(student_shape)
    return layer
