"""Rewrites a CNN with depthwise-separable convolutions in place of full convolutions."""

import dataclasses

import numpy as np

from keras_dnnopt.backend import USING_TF_KERAS, check_model, keras
from keras_dnnopt.profiling import profile
from keras_dnnopt.utils.validation import check_choice, check_number

_CONV_FAMILY = (
    "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
    "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D",
)
_SKIP_REASONS = {
    "DepthwiseConv1D": "depthwise convolution",
    "DepthwiseConv2D": "depthwise convolution",
    "SeparableConv1D": "already separable",
    "SeparableConv2D": "already separable",
    "Conv1DTranspose": "transposed convolution",
    "Conv2DTranspose": "transposed convolution",
    "Conv3DTranspose": "transposed convolution",
    "Conv1D": "not Conv2D (Conv1D)",
    "Conv3D": "not Conv2D (Conv3D)",
}


@dataclasses.dataclass
class ReplacedLayer:
    """One `Conv2D` replaced by a `SeparableConv2D` of the same name.

    Attributes:
        name: the layer name (kept by the replacement).
        kernel_size: the kernel size.
        in_channels: input channels.
        filters: output channels.
        params_before: parameters of the `Conv2D`.
        params_after: parameters of the `SeparableConv2D`.
        approximation_error: relative Frobenius error `|W - W'| / |W|` of the kernel the
            separable layer was initialised to represent (None with `weights=None`).
    """

    name: str
    kernel_size: tuple
    in_channels: int
    filters: int
    params_before: int
    params_after: int
    approximation_error: float = None


@dataclasses.dataclass
class SkippedLayer:
    """A convolution left as it was, and why."""

    name: str
    class_name: str
    reason: str


@dataclasses.dataclass
class SeparableVariantReport:
    """What `separable_variant` changed, and the parameters and MACs it saved.

    Attributes:
        replaced: list of `ReplacedLayer`.
        skipped: list of `SkippedLayer` (convolutions left alone, with the reason).
        params_before, params_after: total parameters of the old and new model.
        macs_before, macs_after: total MACs per sample (from `keras_dnnopt.profile`).
        weights: the `weights` argument used (`"approximate"` or None).
    """

    replaced: list
    skipped: list
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    weights: str = "approximate"

    @property
    def params_saved(self):
        return self.params_before - self.params_after

    @property
    def macs_saved(self):
        return self.macs_before - self.macs_after

    def to_dict(self):
        """The report as plain JSON-serializable data."""
        data = dataclasses.asdict(self)
        for row in data["replaced"]:
            row["kernel_size"] = list(row["kernel_size"])
        data["params_saved"] = self.params_saved
        data["macs_saved"] = self.macs_saved
        return data

    def __str__(self):
        lines = [f"separable_variant: {len(self.replaced)} Conv2D replaced by SeparableConv2D "
                 f"(weights={self.weights!r}), {len(self.skipped)} convolutions kept"]
        for r in self.replaced:
            kernel = "x".join(str(k) for k in r.kernel_size)
            error = ("" if r.approximation_error is None
                     else f", kernel approximation error {r.approximation_error:.1%}")
            lines.append(f"  replaced {r.name}: {kernel}, {r.in_channels}->{r.filters}, "
                         f"params {r.params_before:,} -> {r.params_after:,}{error}")
        for s in self.skipped:
            lines.append(f"  kept     {s.name} ({s.class_name}): {s.reason}")
        params_share = _share(self.params_saved, self.params_before)
        macs_share = _share(self.macs_saved, self.macs_before)
        lines.append(f"Params: {self.params_before:,} -> {self.params_after:,} "
                     f"(saved {self.params_saved:,}, {params_share})")
        lines.append(f"MACs:   {self.macs_before:,} -> {self.macs_after:,} "
                     f"(saved {self.macs_saved:,}, {macs_share})")
        return "\n".join(lines)


def _share(part, whole):
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def separable_variant(model, weights="approximate", min_kernel_size=2, depth_multiplier=1,
                      exclude=None):
    """Rewrites a CNN, replacing each full `Conv2D` by a depthwise-separable one.

    Every eligible `Conv2D` (exactly that class, groups 1, kernel at least
    `min_kernel_size` in some dimension) becomes a `keras.layers.SeparableConv2D` of the
    same name with the same filters, kernel size, strides, padding, data format,
    dilation, activation and bias; the kernel initializer, regularizer and constraint
    go to both the depthwise and the pointwise kernel. Every other layer is kept, with
    a copy of its weights. The original model is not modified. The model is rebuilt
    with `keras.models.clone_model`, so Sequential and functional models (also nested
    ones) work; subclassed models cannot be cloned.

    With `weights="approximate"` each separable layer starts from the best
    factorisation of the original kernel `W[kh, kw, Cin, Cout]` it can represent: for
    each input channel `c` the matrix `W[:, :, c, :]` reshaped to `(kh*kw, Cout)` is
    replaced by its rank-`depth_multiplier` truncated SVD, `sum_j s_j u_j v_j^T`, with
    depthwise kernel `sqrt(s_j) u_j` and pointwise row `sqrt(s_j) v_j` (the bias is
    copied). A kernel that is rank-1 per input channel is reproduced exactly; in general
    the new model starts close to the old one and needs fine-tuning.

    Args:
        model: a Sequential or functional `keras.Model` of the Keras in use.
        weights: `"approximate"` (initialise from the original kernels, see above) or
            None (fresh initialisation). Defaults to `"approximate"`.
        min_kernel_size: a `Conv2D` is replaced when its largest kernel dimension is at
            least this; 1x1 convolutions are never replaced (separating them saves
            nothing). Must be >= 2. Defaults to 2.
        depth_multiplier: depthwise channels per input channel of the new layers.
            Defaults to 1.
        exclude: names of `Conv2D` layers to keep as they are (e.g. the stem
            convolution). Defaults to None.

    Returns:
        A tuple `(new_model, report)`: the rewritten model (same inputs and output
        shapes) and a `SeparableVariantReport` listing the replaced and skipped layers
        and the parameters and MACs before and after (printable).

    Raises:
        TypeError: if `model` is not a model of the Keras in use.
        ValueError: for a subclassed model, a bad argument, or a layer that cannot be
            re-created from its config.

    Example:

    >>> new_model, report = keras_dnnopt.models.separable_variant(model)
    >>> print(report)
    >>> new_model.compile(...); new_model.fit(...)  # fine-tune

    Reference:
        - [Howard et al., 2017, MobileNets: Efficient Convolutional Neural Networks for
          Mobile Vision Applications](https://arxiv.org/abs/1704.04861)
        - [Chollet, 2017, Xception: Deep Learning with Depthwise Separable
          Convolutions](https://arxiv.org/abs/1610.02357)
    """
    check_model(model)
    weights = check_choice("weights", weights, ("approximate", None))
    min_kernel_size = check_number("min_kernel_size", min_kernel_size, low=2, integer=True)
    depth_multiplier = check_number("depth_multiplier", depth_multiplier, low=1, integer=True)
    if exclude is None:
        exclude = ()
    elif isinstance(exclude, str) or not all(isinstance(n, str) for n in exclude):
        raise ValueError(
            "Argument `exclude` must be a list of layer names. "
            f"Received: exclude={exclude!r}"
        )
    before = profile(model)
    state = _Rewrite(weights, min_kernel_size, depth_multiplier, frozenset(exclude))
    new_model = state.rewrite(model)
    after = profile(new_model)
    report = SeparableVariantReport(
        replaced=state.replaced, skipped=state.skipped,
        params_before=before.params, params_after=after.params,
        macs_before=before.macs, macs_after=after.macs, weights=weights,
    )
    return new_model, report


def _is_clonable(model):
    if isinstance(model, keras.Sequential):
        return True
    if USING_TF_KERAS:
        return bool(getattr(model, "_is_graph_network", False))
    return hasattr(model, "_nodes_by_depth")


class _Rewrite:
    def __init__(self, weights, min_kernel_size, depth_multiplier, exclude):
        self.weights = weights
        self.min_kernel_size = min_kernel_size
        self.depth_multiplier = depth_multiplier
        self.exclude = exclude
        self.replaced = []
        self.skipped = []

    def rewrite(self, model):
        if not _is_clonable(model):
            raise ValueError(
                f"separable_variant needs a Sequential or functional model, but model "
                f"{model.name!r} is a subclassed model ({type(model).__name__}), which "
                "keras.models.clone_model cannot rebuild. Write it as a functional or "
                "Sequential model (or replace its Conv2D layers by SeparableConv2D in "
                "its code)."
            )
        if not model.built:
            raise ValueError(
                f"Model {model.name!r} is not built. Build it first (start it with "
                "`keras.Input(shape)` or call `model.build(input_shape)`)."
            )
        pairs = []

        def clone_function(layer):
            if isinstance(layer, keras.Model):
                return self.rewrite(layer)  # weights copied inside
            new, row = self._replacement(layer)
            if new is None:
                new = _clone_layer(layer)
            pairs.append((layer, new, row))
            return new

        new_model = keras.models.clone_model(model, clone_function=clone_function)
        if not new_model.built:
            new_model.build(tuple(model.inputs[0].shape))
        for old, new, row in pairs:
            if row is None:
                new.set_weights(old.get_weights())
                continue
            row.params_after = new.count_params()
            if self.weights == "approximate":
                row.approximation_error = _set_approximate_weights(
                    old, new, self.depth_multiplier)
        return new_model

    def _replacement(self, layer):
        """`(SeparableConv2D, ReplacedLayer)` for an eligible Conv2D, else `(None, None)`
        (recording why a convolution is kept)."""
        family = [n for n in _CONV_FAMILY if isinstance(layer, getattr(keras.layers, n, ()))]
        if not family:
            return None, None
        name, klass = layer.name, type(layer).__name__
        if type(layer) is not keras.layers.Conv2D:
            exact = [n for n in family if type(layer) is getattr(keras.layers, n)]
            if exact:
                reason = _SKIP_REASONS[exact[0]]
            else:
                base = family[-1] if "Conv2D" not in family else "Conv2D"
                reason = f"a subclass of {base}, not exactly Conv2D"
            self.skipped.append(SkippedLayer(name, klass, reason))
            return None, None
        kernel = tuple(int(k) for k in layer.kernel_size)
        groups = getattr(layer, "groups", 1) or 1
        if groups != 1:
            self.skipped.append(SkippedLayer(name, klass, f"grouped convolution (groups={groups})"))
            return None, None
        if max(kernel) < self.min_kernel_size:
            size = "x".join(str(k) for k in kernel)
            reason = (f"{size} kernel" if max(kernel) == 1 else
                      f"{size} kernel, below min_kernel_size={self.min_kernel_size}")
            self.skipped.append(SkippedLayer(name, klass, reason))
            return None, None
        if name in self.exclude:
            self.skipped.append(SkippedLayer(name, klass, "excluded"))
            return None, None
        cfg = layer.get_config()
        new = keras.layers.SeparableConv2D(
            filters=layer.filters,
            kernel_size=kernel,
            strides=cfg["strides"],
            padding=cfg["padding"],
            data_format=cfg["data_format"],
            dilation_rate=cfg["dilation_rate"],
            depth_multiplier=self.depth_multiplier,
            activation=cfg["activation"],
            use_bias=cfg["use_bias"],
            depthwise_initializer=cfg["kernel_initializer"],
            pointwise_initializer=cfg["kernel_initializer"],
            bias_initializer=cfg["bias_initializer"],
            depthwise_regularizer=cfg["kernel_regularizer"],
            pointwise_regularizer=cfg["kernel_regularizer"],
            bias_regularizer=cfg["bias_regularizer"],
            activity_regularizer=cfg["activity_regularizer"],
            depthwise_constraint=cfg["kernel_constraint"],
            pointwise_constraint=cfg["kernel_constraint"],
            bias_constraint=cfg["bias_constraint"],
            trainable=layer.trainable,
            dtype=layer.dtype_policy,
            name=name,
        )
        row = ReplacedLayer(name, kernel, int(layer.kernel.shape[-2]), int(layer.filters),
                            layer.count_params(), None)
        self.replaced.append(row)
        return new, row


def _clone_layer(layer):
    try:
        return layer.__class__.from_config(layer.get_config())
    except Exception as error:
        raise ValueError(
            f"separable_variant could not re-create layer {layer.name!r} "
            f"({type(layer).__name__}) from its config ({type(error).__name__}: {error}). "
            "A custom layer needs a `get_config` that returns its constructor arguments."
        ) from error


def factorize_kernel(kernel, depth_multiplier=1):
    """Best depthwise x pointwise factorisation of a full convolution kernel.

    Args:
        kernel: array `(kh, kw, Cin, Cout)`.
        depth_multiplier: rank kept per input channel.

    Returns:
        `(depthwise, pointwise, error)`: arrays `(kh, kw, Cin, dm)` and
        `(1, 1, Cin * dm, Cout)`, and the relative Frobenius error of the kernel they
        represent.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    kh, kw, cin, cout = kernel.shape
    dm = depth_multiplier
    depthwise = np.zeros((kh, kw, cin, dm))
    pointwise = np.zeros((1, 1, cin * dm, cout))
    residual = 0.0
    for c in range(cin):
        u, s, vt = np.linalg.svd(kernel[:, :, c, :].reshape(kh * kw, cout), full_matrices=False)
        rank = min(dm, len(s))
        root = np.sqrt(s[:rank])
        depthwise[:, :, c, :rank] = (u[:, :rank] * root).reshape(kh, kw, rank)
        # TF's depthwise output channel c * dm + j comes from input channel c.
        pointwise[0, 0, c * dm:c * dm + rank, :] = vt[:rank] * root[:, None]
        residual += float(np.sum(s[rank:] ** 2))
    norm = float(np.sum(kernel ** 2))
    error = float(np.sqrt(residual / norm)) if norm > 0 else 0.0
    return depthwise, pointwise, error


def _set_approximate_weights(old, new, depth_multiplier):
    old_weights = old.get_weights()  # [kernel] or [kernel, bias]
    depthwise, pointwise, error = factorize_kernel(old_weights[0], depth_multiplier)
    values = [depthwise, pointwise, *old_weights[1:]]
    dtypes = [w.dtype for w in new.get_weights()]
    new.set_weights([np.asarray(v, dtype=d) for v, d in zip(values, dtypes, strict=True)])
    return error
