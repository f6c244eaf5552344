"""Model profiler: parameters, MACs and weight bytes, per layer and in total."""

import dataclasses
import math

from keras_dnnopt.backend import USING_TF_KERAS, check_model, keras, tf
from keras_dnnopt.profiling import macs as macs_lib
from keras_dnnopt.utils.validation import check_shape

BYTES_PER_PARAM = {"float32": 4, "float16": 2, "int8": 1}


@dataclasses.dataclass
class LayerProfile:
    """The profile of one layer of a model.

    Attributes:
        name: the layer name; sublayers of nested models and composite blocks are
            prefixed with the parent's name (`"block_1/depthwise"`).
        class_name: the layer class name.
        output_shape: the output shape of the layer's first call (batch dim None), or
            a list of shapes for several outputs.
        params: number of weights (scalars) the layer owns.
        trainable_params: trainable part of `params`.
        non_trainable_params: non-trainable part of `params`.
        macs: multiply-accumulates per sample, summed over the layer's calls in the
            model (a shared layer called twice counts twice); 0 when unknown.
        macs_known: False when the profiler cannot count the layer's MACs (a custom
            layer it cannot see into, or undefined input dimensions).
        calls: how many times the layer is called in the model.
        in_total: whether `macs` count towards the model's total (False for batch
            normalization unless `profile(..., count_batchnorm=True)`: it folds into
            the preceding convolution at inference).
    """

    name: str
    class_name: str
    output_shape: object
    params: int
    trainable_params: int
    non_trainable_params: int
    macs: int
    macs_known: bool = True
    calls: int = 1
    in_total: bool = True

    def to_dict(self):
        """The profile as plain JSON-serializable data."""
        data = dataclasses.asdict(self)
        data["output_shape"] = _jsonable_shape(self.output_shape)
        return data


@dataclasses.dataclass
class ModelProfile:
    """The profile of a model: per-layer rows and totals.

    Attributes:
        name: the model name.
        layers: list of `LayerProfile`, in graph order.
        params, trainable_params, non_trainable_params: totals (equal to
            `model.count_params()` and its parts).
        macs: total multiply-accumulates per sample (batch 1), batch normalization
            left out unless `count_batchnorm=True` was passed.
        batchnorm_macs: the MACs of the batch-normalization layers (one per output
            element), whether or not they are in `macs`.
        bytes: weight bytes of all parameters stored as float32, float16 and int8,
            e.g. `{"float32": 16_000_000, "float16": 8_000_000, "int8": 4_000_000}`.
        macs_complete: False when some layer's MACs are unknown (marked "?").
    """

    name: str
    layers: list
    params: int
    trainable_params: int
    non_trainable_params: int
    macs: int
    bytes: dict
    macs_complete: bool = True
    batchnorm_macs: int = 0
    count_batchnorm: bool = False

    @property
    def flops(self):
        """Floating-point operations, counted as 2 per MAC."""
        return 2 * self.macs

    def to_dict(self):
        """The profile as plain JSON-serializable data."""
        return {
            "name": self.name,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "macs": self.macs,
            "macs_complete": self.macs_complete,
            "batchnorm_macs": self.batchnorm_macs,
            "count_batchnorm": self.count_batchnorm,
            "bytes": dict(self.bytes),
            "layers": [row.to_dict() for row in self.layers],
        }

    def summary(self, print_fn=None, max_name_width=40):
        """Prints the table (layer, type, output shape, params, MACs, share of MACs).

        Args:
            print_fn: the function that prints the table. Defaults to `print`.
            max_name_width: longer layer names are shortened. Defaults to 40.
        """
        (print_fn or print)(self._table(max_name_width))

    def __str__(self):
        return self._table()

    def _table(self, max_name_width=40):
        header = ("Layer (type)", "Output shape", "Params", "MACs", "% MACs")
        rows = []
        for row in self.layers:
            name = row.name
            if len(name) > max_name_width:
                name = "..." + name[-(max_name_width - 3):]
            label = f"{name} ({row.class_name})"
            if row.macs_known:
                macs = f"{row.macs:,}"
                if not row.in_total:
                    share = "folded"
                else:
                    share = f"{100.0 * row.macs / self.macs:.1f}%" if self.macs else "-"
            else:
                macs, share = "?", "?"
            calls = f" x{row.calls}" if row.calls > 1 else ""
            rows.append((label, _format_shape(row.output_shape) + calls, f"{row.params:,}",
                         macs, share))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        aligns = ("<", "<", ">", ">", ">")

        def line(cells):
            cells = zip(cells, aligns, widths, strict=True)
            return "  ".join(f"{c:{a}{w}}" for c, a, w in cells).rstrip()

        rule = "=" * len(line(header))
        out = [f'Profile of model "{self.name}" (per sample, batch 1)', rule, line(header),
               "-" * len(rule)]
        out += [line(r) for r in rows]
        out.append(rule)
        out.append(f"Total params: {self.params:,}")
        out.append(f"Trainable params: {self.trainable_params:,}")
        out.append(f"Non-trainable params: {self.non_trainable_params:,}")
        total = f"Total MACs: {self.macs:,} ({_human(self.macs)})"
        if not self.macs_complete:
            total += "  (incomplete: '?' marks layers whose MACs are unknown)"
        out.append(total)
        if self.batchnorm_macs:
            how = "included" if self.count_batchnorm else (
                "not included: folded into the convolutions at inference")
            out.append(f"Batch-norm MACs: {self.batchnorm_macs:,} "
                       f"({_human(self.batchnorm_macs)}, {how})")
        out.append("Weight bytes: " + ", ".join(
            f"{kind} {_human_bytes(n)}" for kind, n in self.bytes.items()))
        out.append(rule)
        return "\n".join(out)


def profile(model, input_shape=None, count_batchnorm=False):
    """Profiles a Keras model: parameters, MACs and weight bytes, per layer and in total.

    Functional and Sequential models are walked through their graph; nested models
    (a Sequential inside a functional model, say) are recursed into, and so are the
    composite layers of keras_dnnopt (any layer with an `unroll(inputs)` method), whose
    built-in sublayers are reported under the block's name (`"block/depthwise"`).
    A custom layer the profiler cannot see into keeps its parameter count and is
    marked with "?" (`macs_known=False`); a subclassed model is reported as one such row.

    MACs (multiply-accumulates) are per sample (batch 1), without bias additions.
    Convolutions, dense, depthwise, separable and transposed convolutions follow the
    usual closed forms; pooling counts pool area per output element (global pooling
    one per input element), Add/Multiply one per output element.

    Batch normalization: each BN layer's row reports one MAC per output element (its
    inference form `x * scale + shift`), but by default these MACs are left out of the
    total, because at inference BN folds into the preceding convolution and costs
    nothing (TFLite and XLA fold it). That is also the papers' convention: counted this
    way `keras.applications.MobileNet` at 224x224 has 568.8M MACs (paper: 569M) and
    `MobileNetV2` 301.1M (paper: 300M); with BN they would be 573.8M and 307.7M
    (+2.6%). Pass `count_batchnorm=True` to include them; `.batchnorm_macs` has them
    either way.

    Args:
        model: a `keras.Model` (functional, Sequential or subclassed) of the Keras in use.
        input_shape: per-sample input shape, e.g. `(224, 224, 3)`. Needed only for a
            model not yet built (a Sequential without an `Input`; it is then built in
            place) or to profile a model whose input has undefined dimensions (a copy
            with that input is profiled). Defaults to None (the model's own input).
        count_batchnorm: whether batch-normalization MACs count towards the total.
            Defaults to False (they fold into the convolutions at inference).

    Returns:
        A `ModelProfile`: `.params`, `.trainable_params`, `.non_trainable_params`,
        `.macs`, `.bytes` (float32/float16/int8 weight bytes), `.layers` (list of
        `LayerProfile`); `print(profile)` shows a table; `.to_dict()` gives JSON data.

    Raises:
        TypeError: if `model` is not a model of the Keras in use.
        ValueError: if the model is not built and `input_shape` is not given, or
            `input_shape` does not match the model's input.

    Example:

    >>> model = keras.applications.MobileNet(weights=None)
    >>> p = keras_dnnopt.profile(model)
    >>> print(p.params, p.macs)   # 4253864 568790528
    >>> print(p)                  # per-layer table
    """
    check_model(model)
    if input_shape is not None:
        input_shape = check_shape("input_shape", input_shape, min_rank=1)
    model = _prepare(model, input_shape)
    seen = set()
    rows = _profile_model(model, "", seen)
    totals = _totals(rows, seen)
    complete = all(r.macs_known for r in rows)
    batchnorm_macs = sum(r.macs for r in rows if r.in_total is False)
    if count_batchnorm:
        for row in rows:
            row.in_total = True
    params = totals["params"]
    return ModelProfile(
        name=model.name,
        layers=rows,
        params=params,
        trainable_params=totals["trainable"],
        non_trainable_params=totals["non_trainable"],
        macs=sum(r.macs for r in rows if r.in_total),
        bytes={kind: params * n for kind, n in BYTES_PER_PARAM.items()},
        macs_complete=complete,
        batchnorm_macs=batchnorm_macs,
        count_batchnorm=bool(count_batchnorm),
    )


# ----------------------------------------------------------------------------- graph


def _graph_of(model):
    """The object holding the model's node graph, or None (subclassed / unbuilt)."""
    if USING_TF_KERAS:
        if not getattr(model, "_is_graph_network", False):
            return None
        return model
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return model if hasattr(model, "_nodes_by_depth") else None


def _model_inputs(model):
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return inputs or None


def _shape(tensor):
    return tuple(None if d is None else int(d) for d in tensor.shape)


def _prepare(model, input_shape):
    """Builds an unbuilt model, or substitutes a copy with the requested input shape."""
    inputs = _model_inputs(model)
    if inputs is None or _graph_of(model) is None:
        if model.built and inputs is not None:
            return model
        if isinstance(model, keras.Sequential) or not model.built:
            if input_shape is None:
                raise ValueError(
                    f"Model {model.name!r} is not built, so its layer shapes are unknown. "
                    "Build it first (start a Sequential with `keras.Input(shape)`, or call "
                    "`model.build((None, *input_shape))`), or pass `input_shape`, e.g. "
                    "`profile(model, input_shape=(224, 224, 3))`. Received: input_shape=None"
                )
            model.build((None, *input_shape))
        return model
    if input_shape is None:
        return model
    if len(inputs) != 1:
        raise ValueError(
            "Argument `input_shape` is supported for single-input models only; model "
            f"{model.name!r} has {len(inputs)} inputs. Received: input_shape={input_shape}"
        )
    own = _shape(inputs[0])[1:]
    if own == input_shape:
        return model
    if len(own) != len(input_shape) or any(
        o is not None and o != n for o, n in zip(own, input_shape, strict=True)
    ):
        raise ValueError(
            f"Argument `input_shape` must match the input of model {model.name!r}, "
            f"{own} (None: any size). Received: input_shape={input_shape}"
        )
    return _with_input_shape(model, input_shape)


def _with_input_shape(model, input_shape):
    """A copy of a functional/Sequential model on an input of a more defined shape."""
    new_input = keras.Input(shape=input_shape, dtype=model.inputs[0].dtype)
    try:
        return keras.models.clone_model(model, input_tensors=new_input)
    except Exception as error:  # a custom layer without get_config, say
        raise ValueError(
            f"Could not re-create model {model.name!r} on input_shape={input_shape} to "
            f"profile it ({type(error).__name__}: {error}). Build the model on a fully "
            "defined input shape instead."
        ) from error


def _calls(graph):
    """Ordered mapping layer -> list of (input shapes, output shapes), for the nodes of
    this graph only (a layer shared with another model keeps its other calls out)."""
    calls = {}
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            layer = node.layer if USING_TF_KERAS else node.operation
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if USING_TF_KERAS:
                inputs = node.keras_inputs
            else:
                inputs = node.input_tensors
            outputs = tf.nest.flatten(node.output_tensors)
            calls.setdefault(id(layer), (layer, []))[1].append(
                ([_shape(t) for t in inputs], [_shape(t) for t in outputs])
            )
    return list(calls.values())


# ----------------------------------------------------------------------------- rows


def _weight_counts(layer, seen):
    """Trainable and non-trainable scalars of `layer`'s weights not counted before."""
    counts = [0, 0]
    for index, weights in enumerate((layer.trainable_weights, layer.non_trainable_weights)):
        for w in weights:
            key = id(w)
            if key in seen:
                continue
            seen.add(key)
            counts[index] += math.prod(int(d) for d in w.shape)
    return counts


def _profile_model(model, prefix, seen):
    graph = _graph_of(model)
    if graph is None:  # subclassed: opaque
        trainable, non_trainable = _weight_counts(model, seen)
        return [LayerProfile(prefix + model.name, type(model).__name__, None,
                             trainable + non_trainable, trainable, non_trainable, 0, False)]
    rows = []
    for layer, calls in _calls(graph):
        rows.extend(_profile_layer(layer, calls, prefix, seen))
    return rows


def _merge(per_call_rows):
    """Rows of several calls of one nested model/block: MACs add up, by row name."""
    merged = {r.name: r for r in per_call_rows[0]}
    for rows in per_call_rows[1:]:
        for r in rows:
            if r.name in merged:
                base = merged[r.name]
                base.macs += r.macs
                base.macs_known = base.macs_known and r.macs_known
                base.calls += r.calls
    return list(merged.values())


def _profile_layer(layer, calls, prefix, seen):
    name = prefix + layer.name
    if isinstance(layer, keras.Model):
        per_call = [_profile_model(_nested_on(layer, ins), name + "/", seen)
                    for ins, _ in calls]
        return _merge(per_call)
    if callable(getattr(layer, "unroll", None)):
        per_call = [_profile_unrolled(layer, ins, name + "/", seen) for ins, _ in calls]
        rows = _merge(per_call)
        trainable, non_trainable = _weight_counts(layer, seen)  # weights not unrolled
        if trainable or non_trainable:
            rows.append(LayerProfile(name + "/(other weights)", type(layer).__name__, None,
                                     trainable + non_trainable, trainable, non_trainable,
                                     0, True))
        return rows
    trainable, non_trainable = _weight_counts(layer, seen)
    total, known = 0, True
    for ins, outs in calls:
        try:
            macs = macs_lib.layer_macs(layer, ins, outs)
        except macs_lib.UnknownShapeError:
            macs = None
        if macs is None:
            known = False
        else:
            total += int(macs)
    out_shapes = calls[0][1]
    output_shape = out_shapes[0] if len(out_shapes) == 1 else out_shapes
    return [LayerProfile(name, type(layer).__name__, output_shape,
                         trainable + non_trainable, trainable, non_trainable,
                         total, known, len(calls),
                         in_total=not isinstance(layer, keras.layers.BatchNormalization))]


def _nested_on(model, input_shapes):
    """The nested model itself, or a copy on the call's shapes when its own input is
    less defined (e.g. built on (None, None, 3) and called on 224x224 images)."""
    inputs = _model_inputs(model)
    if inputs is None or _graph_of(model) is None or len(inputs) != 1:
        return model
    own, called = _shape(inputs[0]), input_shapes[0]
    if own[1:] == called[1:] or any(d is None for d in called[1:]):
        return model
    return _with_input_shape(model, called[1:])


def _profile_unrolled(layer, input_shapes, prefix, seen):
    if len(input_shapes) != 1 or any(d is None for d in input_shapes[0][1:]):
        raise ValueError(
            f"Cannot profile composite layer {layer.name!r}: `unroll` needs a single "
            f"input of defined shape. Received input shapes: {input_shapes}"
        )
    inp = keras.Input(shape=input_shapes[0][1:])
    temp = keras.Model(inp, layer.unroll(inp), name=layer.name)
    return _profile_model(temp, prefix, seen)


def _totals(rows, seen):
    trainable = sum(r.trainable_params for r in rows)
    non_trainable = sum(r.non_trainable_params for r in rows)
    return {"params": trainable + non_trainable, "trainable": trainable,
            "non_trainable": non_trainable}


# ----------------------------------------------------------------------------- format


def _jsonable_shape(shape):
    if shape is None:
        return None
    if isinstance(shape, list):
        return [_jsonable_shape(s) for s in shape]
    return list(shape)


def _format_shape(shape):
    if shape is None:
        return "?"
    if isinstance(shape, list):
        return ", ".join(_format_shape(s) for s in shape)
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _human(n):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _human_bytes(n):
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
