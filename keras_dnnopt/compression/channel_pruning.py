"""Structured pruning: remove whole channels (filters), so that the model really gets
smaller and faster, on both Kerases.

Magnitude pruning (`prune`) zeroes weights but keeps every one of them in the file and in
every multiply; removing channels changes the shapes themselves. The catch is that channels
are tied across layers: the filters of a convolution are the input channels of the next
one, of the batch norm and the depthwise convolution in between, of every branch of a
residual `Add`, and of a `Dense` after `Flatten` (once per spatial position). This module
builds that dependency graph over the functional graph, as Torch-Pruning's `DependencyGraph`
does for PyTorch (Fang et al., 2023), and removes channels group by group:

1. The model is flattened (`flatten_model`: blocks unrolled, nested models inlined).
2. Each channel of each tensor is an *atom*. A layer that makes new channels (`Conv1D`,
   `Conv2D`, `Dense`, the pointwise half of `SeparableConv2D`) makes new atoms; a layer
   that keeps channels (batch norm, activations, pooling, dropout, padding, a depthwise
   convolution, with its `depth_multiplier` copies) passes its input's atoms on; `Add`,
   `Multiply` and the other merges tie the atoms of their inputs (union-find), so the
   squeeze-and-excitation gate is tied to the features it scales; `Concatenate` lays its
   inputs' atoms side by side; `Flatten` repeats them once per spatial position.
3. The atoms of the model's inputs and outputs, of the layers this module does not know
   (`Reshape`, custom layers...) and of the layers in `exclude` are frozen.
4. The producers whose atoms are tied form one *group* (a residual stage, say); each
   channel of a group gets one importance, the sum over the group's producers of the
   criterion normalized by the producer's mean (so that layers of different scale count
   alike), and the least important channels of each group are removed.
5. A new plain model (built-in layers only, no wrapper) is built with fewer filters, the
   kept channels' weights copied exactly.

`ChannelPruningPlan` holds the decision before any model is built, with the parameter and
MAC counts the result will have (predicted with the profiler's own rules), so that
`target_macs` can search the ratio without building a model per try.

References:
    - [Li et al., 2017. Pruning Filters for Efficient ConvNets](
      https://arxiv.org/abs/1608.08710) (the L1 criterion)
    - [Liu et al., 2017. Learning Efficient Convolutional Networks through Network
      Slimming](https://arxiv.org/abs/1708.06519) (the batch-norm gamma criterion)
    - [Molchanov et al., 2019. Importance Estimation for Neural Network Pruning](
      https://arxiv.org/abs/1906.10771) (the Taylor criterion)
    - [Fang et al., 2023. DepGraph: Towards Any Structural Pruning](
      https://arxiv.org/abs/2301.12900) (dependency groups)
"""

import math
from dataclasses import dataclass, field

import numpy as np

from keras_dnnopt.backend import check_model, keras, tf
from keras_dnnopt.compression._tfmot_support import (
    flatten_model,
    graph_nodes,
    is_symbolic,
    node_parts,
    select_names,
)

CRITERIA = ("l1", "l2", "bn_gamma", "taylor")

# Layers that make new channels: (kernel attribute, input axis, output axis).
_PRODUCERS = {"Conv1D", "Conv2D", "Conv3D", "Dense"}
_SEPARABLE = {"SeparableConv1D", "SeparableConv2D"}
_DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
# Layers whose output channels are their input's, with no weight.
_KEEP = {
    "Activation", "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Dropout",
    "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
    "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D",
}
_MERGE = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
SUPPORTED_LAYERS = tuple(sorted(
    _PRODUCERS | _SEPARABLE | _DEPTHWISE | _KEEP | _MERGE
    | {"BatchNormalization", "Concatenate", "Flatten", "InputLayer"}))


class _Atoms:
    """Union-find over channel atoms."""

    def __init__(self):
        self.parent = []
        self.frozen = set()

    def new(self, n):
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n)

    def find(self, atom):
        root = atom
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[atom] != root:  # path compression
            self.parent[atom], atom = root, self.parent[atom]
        return root

    def union(self, a, b):
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def freeze(self, layout):
        self.frozen.update(int(a) for a in layout)

    def roots(self, layout):
        return np.asarray([self.find(int(a)) for a in layout], dtype="int64")

    def frozen_roots(self):
        return {self.find(a) for a in self.frozen}


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


def _last_dim(tensor):
    shape = tuple(tensor.shape)
    return int(shape[-1]) if shape and shape[-1] is not None else None


def _kind(layer, rank):
    """The role of a layer in the graph: 'producer', 'separable', 'depthwise', 'keep',
    'batch_norm', 'merge', 'concat', 'flatten' or 'other' (its channels frozen)."""
    name = type(layer).__name__
    if type(layer).__module__.split(".")[0] not in ("keras", "tf_keras"):
        return "other"
    if name in _PRODUCERS | _SEPARABLE and (
            not _channels_last(layer) or (getattr(layer, "groups", 1) or 1) != 1):
        return "other"
    if name in _PRODUCERS:
        return "producer"
    if name in _SEPARABLE:
        return "separable"
    if name in _DEPTHWISE:
        return "depthwise" if _channels_last(layer) else "other"
    if name in _KEEP:
        return "keep" if _channels_last(layer) else "other"
    if name == "BatchNormalization":
        axis = layer.axis
        if isinstance(axis, (list, tuple)):
            axis = axis[0] if len(axis) == 1 else None
        return "batch_norm" if axis in (-1, rank - 1) else "other"
    if name in _MERGE:
        return "merge"
    if name == "Concatenate":
        return "concat" if layer.axis in (-1, rank - 1) else "other"
    if name == "Flatten":
        return "flatten" if _channels_last(layer) else "other"
    if name == "Rescaling" and all(isinstance(getattr(layer, a, 0), (int, float))
                                   for a in ("scale", "offset")):
        return "keep"  # one scale and offset for all channels (the hard sigmoid's)
    return "other"


def _as_numpy(variable):
    return np.asarray(variable.numpy())


@dataclass
class _Node:
    layer: object
    args: object
    kwargs: object
    inputs: list  # the KerasTensors read
    outputs: list  # the KerasTensors written
    kind: str


@dataclass
class ChannelPruningPlan:
    """Which channels `prune_channels` keeps, with the counts of the model it will build.

    Attributes:
        model_name: the name of the model planned.
        ratios: `{group: fraction of its channels removed}`, a group named by its first
            producer.
        channels: `{layer name: (channels before, channels after)}` for each layer whose
            output channels change.
        params: the parameter count the pruned model will have (its `count_params()`).
        macs: its MACs per sample, by the profiler's rules (`keras_dnnopt.profiling`).
        params_before, macs_before: the same counts for the model as given.
        groups: `{group: [producer layer names]}`, the producers whose channels are tied.
        frozen: the names of the groups whose channels cannot be removed (read by the
            model's outputs, an unsupported layer or `exclude`).
    """

    model_name: str
    ratios: dict
    channels: dict
    params: int
    macs: int
    params_before: int
    macs_before: int
    groups: dict = field(default_factory=dict)
    frozen: list = field(default_factory=list)
    _graph: object = field(default=None, repr=False, compare=False)
    _kept: object = field(default=None, repr=False, compare=False)

    def apply(self):
        """Builds the pruned model (a new plain Keras model; the given one is unchanged)."""
        return self._graph.build(self._kept)

    def to_dict(self):
        return {"model": self.model_name, "ratios": dict(self.ratios),
                "channels": {k: list(v) for k, v in self.channels.items()},
                "params": self.params, "macs": self.macs,
                "params_before": self.params_before, "macs_before": self.macs_before,
                "groups": {k: list(v) for k, v in self.groups.items()},
                "frozen": list(self.frozen)}


class _ChannelGraph:
    """The channel atoms of every tensor of a flat functional model, and their groups."""

    def __init__(self, flat, exclude):
        self.flat = flat
        self.atoms = _Atoms()
        self.layout = {}  # id(tensor) -> atom array (one per channel of the last axis)
        self.nodes = []
        self.producer_out = {}  # layer name -> its output atoms
        self.unsupported = []
        self.means = {}  # id(tensor) -> mean per channel, when `data` is given
        exclude = exclude or set()
        for tensor in flat.inputs:
            self.layout[id(tensor)] = self._fresh(tensor, frozen=True)
        layer_in = {}
        for node in graph_nodes(flat):
            layer, args, kwargs, outputs = node_parts(node)
            inputs = [t for t in tf.nest.flatten((args, kwargs)) if is_symbolic(t)]
            outputs = tf.nest.flatten(outputs)
            rank = len(inputs[0].shape) if inputs else 0
            kind = _kind(layer, rank) if len(outputs) == 1 else "other"
            if any(id(t) not in self.layout for t in inputs):
                kind = "other"
            if any(_last_dim(t) is None for t in inputs + outputs):
                kind = "other"
            elif type(layer).__name__ == "Reshape" and kind == "other" and len(inputs) == 1 \
                    and _last_dim(inputs[0]) == _last_dim(outputs[0]):
                # A reshape that keeps the last axis ((N, C) -> (N, 1, 1, C), say) only
                # regroups the positions: each channel stays a channel.
                kind = "keep"
            record = _Node(layer, args, kwargs, inputs, outputs, kind)
            self.nodes.append(record)
            # A layer called twice: both calls read the same weights, so their inputs
            # (and, for a producer, outputs) are tied.
            if layer.name in layer_in and kind != "other":
                for a, b in zip(layer_in[layer.name], [self.layout[id(t)] for t in inputs],
                                strict=False):
                    if len(a) == len(b):
                        for x, y in zip(a, b, strict=True):
                            self.atoms.union(x, y)
            else:
                layer_in[layer.name] = [self.layout[id(t)] for t in inputs]
            self._propagate(record, exclude)
        for tensor in flat.outputs:
            self.atoms.freeze(self.layout[id(tensor)])

    def _fresh(self, tensor, frozen=False):
        atoms = self.atoms.new(_last_dim(tensor) or 0)
        if frozen:
            self.atoms.freeze(atoms)
        return atoms

    def _propagate(self, node, exclude):
        layer, kind = node.layer, node.kind
        ins = [self.layout[id(t)] for t in node.inputs]
        out = node.outputs[0] if node.outputs else None
        if kind in ("producer", "separable"):
            if layer.name in self.producer_out:
                atoms = self.producer_out[layer.name]
            else:
                atoms = self.atoms.new(_last_dim(out))
                self.producer_out[layer.name] = atoms
            if layer.name in exclude:
                self.atoms.freeze(atoms)
            self.layout[id(out)] = atoms
        elif kind == "depthwise":
            self.layout[id(out)] = np.repeat(ins[0], layer.depth_multiplier)
        elif kind in ("keep", "batch_norm"):
            self.layout[id(out)] = ins[0]
        elif kind == "merge":
            width = _last_dim(out)
            full = [a for a in ins if len(a) == width]
            for other in full[1:]:
                for x, y in zip(full[0], other, strict=True):
                    self.atoms.union(x, y)
            for a in ins:  # a broadcast input (1 channel, or another width): frozen
                if len(a) != width:
                    self.atoms.freeze(a)
            if not full:
                self.layout[id(out)] = self._fresh(out, frozen=True)
            else:
                self.layout[id(out)] = full[0]
        elif kind == "concat":
            self.layout[id(out)] = np.concatenate(ins)
        elif kind == "flatten":
            shape = tuple(node.inputs[0].shape)
            self.layout[id(out)] = np.tile(ins[0], math.prod(shape[1:-1]))
        else:
            if type(layer).__name__ != "InputLayer":
                self.unsupported.append(f"{layer.name!r} ({type(layer).__name__})")
            for a in ins:
                self.atoms.freeze(a)
            for tensor in node.outputs:
                if _last_dim(tensor) is not None:
                    self.layout[id(tensor)] = self._fresh(tensor, frozen=True)
                else:
                    self.layout[id(tensor)] = np.zeros(0, dtype="int64")

    # -- groups and importance ------------------------------------------------------------

    def groups(self):
        """`{group name: (producer names, sorted unique roots)}`."""
        parent = {name: name for name in self.producer_out}

        def find(name):
            while parent[name] != name:
                name = parent[name]
            return name

        owner = {}
        for name, atoms in self.producer_out.items():
            for root in set(self.atoms.roots(atoms).tolist()):
                if root in owner:
                    a, b = find(owner[root]), find(name)
                    if a != b:
                        parent[b] = a
                else:
                    owner[root] = name
        groups = {}
        for name in self.producer_out:
            groups.setdefault(find(name), []).append(name)
        return {members[0]: (members, np.unique(np.concatenate(
            [self.atoms.roots(self.producer_out[m]) for m in members])))
            for members in groups.values()}

    def importance(self, criterion, data, loss):
        """`{root: importance}` of every root made by a producer."""
        scores = {}

        def add(layout, values):
            values = np.asarray(values, dtype="float64")
            mean = values.mean() if values.size else 0.0
            values = values / mean if mean > 0 else values
            for root, value in zip(self.atoms.roots(layout), values, strict=True):
                scores[root] = scores.get(root, 0.0) + float(value)

        layers = {node.layer.name: node for node in self.nodes}
        gradients = _taylor_gradients(self.flat, data, loss) if criterion == "taylor" else {}
        for name, atoms in self.producer_out.items():
            layer = layers[name].layer
            kernel = layer.pointwise_kernel if type(layer).__name__ in _SEPARABLE else (
                layer.kernel)
            w = _as_numpy(kernel)
            axes = tuple(range(w.ndim - 1))
            if criterion == "l1" or criterion == "bn_gamma":
                add(atoms, np.abs(w).sum(axis=axes))
            elif criterion == "l2":
                add(atoms, np.sqrt((w ** 2).sum(axis=axes)))
            else:
                g = gradients[kernel.path if hasattr(kernel, "path") else kernel.name]
                add(atoms, np.abs((w * g).sum(axis=axes)))
        if criterion == "bn_gamma":
            # Network slimming: the batch norms' |gamma| decide where there is one; the
            # kernels' L1 (above) only breaks the ties of channels with no batch norm.
            for root in scores:
                scores[root] *= 1e-6
            for node in self.nodes:
                if node.kind == "batch_norm" and node.layer.scale:
                    add(self.layout[id(node.inputs[0])],
                        np.abs(_as_numpy(node.layer.gamma)))
        return scores

    # -- the plan and the new model -------------------------------------------------------

    def keep_positions(self, tensor, kept_roots):
        # The union-find is final once the graph is read: each tensor's roots are cached
        # (`target_macs` evaluates many plans).
        cache = self.__dict__.setdefault("_roots", {})
        if id(tensor) not in cache:
            cache[id(tensor)] = self.atoms.roots(self.layout[id(tensor)])
        return np.asarray([p for p, root in enumerate(cache[id(tensor)].tolist())
                           if root in kept_roots or root not in self.removable],
                          dtype="int64")

    def new_layers(self, kept):
        """`{layer name: (new layer, weights)}` and `{id(old tensor): kept positions}`."""
        positions = {}
        for tensor in self.flat.inputs:
            positions[id(tensor)] = self.keep_positions(tensor, kept)
        made = {}
        for node in self.nodes:
            for tensor in node.outputs:
                positions[id(tensor)] = self.keep_positions(tensor, kept)
            layer = node.layer
            if layer.name in made:
                continue
            ins = [positions[id(t)] for t in node.inputs]
            out = positions[id(node.outputs[0])] if node.outputs else None
            mean = self.means.get(id(node.inputs[0])) if node.inputs else None
            made[layer.name] = _pruned_layer(layer, node.kind, ins, out, mean)
        return made, positions

    def measure_means(self, data):
        """The mean activation of each channel (position) at the inputs of the Conv and
        Dense layers, on up to 256 samples of `data`: what a removed channel gave them."""
        tensors = {id(node.inputs[0]): node.inputs[0] for node in self.nodes
                   if node.kind == "producer" and node.inputs}
        if not tensors:
            return
        x = data[0] if isinstance(data, tuple) else data
        if isinstance(x, tf.data.Dataset):
            x = np.concatenate([np.asarray(batch[0] if isinstance(batch, tuple) else batch)
                                for batch in x.take(8)])
        probe = keras.Model(self.flat.inputs, list(tensors.values()))
        values = probe.predict(np.asarray(x)[:256], verbose=0)
        values = values if isinstance(values, list) else [values]
        for key, value in zip(tensors, values, strict=True):
            value = np.asarray(value, dtype="float64")
            self.means[key] = value.reshape(-1, value.shape[-1]).mean(axis=0)

    def build(self, kept):
        made, _ = self.new_layers(kept)
        tensors = {}
        inputs = []
        for tensor in self.flat.inputs:
            new = keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=tensor.name)
            inputs.append(new)
            tensors[id(tensor)] = new
        for node in self.nodes:
            def mapped(structure):
                return tf.nest.map_structure(
                    lambda t: tensors.get(id(t), t) if is_symbolic(t) else t, structure)

            new_layer = made[node.layer.name][0]
            args, kwargs = mapped(node.args), mapped(node.kwargs)
            result = new_layer(*args, **kwargs)
            for old, new in zip(node.outputs, tf.nest.flatten(result), strict=True):
                tensors[id(old)] = new
        outputs = [tensors[id(t)] for t in self.flat.outputs]
        model = keras.Model(inputs[0] if len(inputs) == 1 else inputs,
                            outputs[0] if len(outputs) == 1 else outputs, name=self.flat.name)
        for new_layer, weights in made.values():
            if weights:
                new_layer.set_weights(weights)
        return model


def _taylor_gradients(model, data, loss):
    """`{variable path: summed gradient}` of the loss over `data` (first-order Taylor)."""
    if data is None:
        raise ValueError(
            "Argument `data` is needed for criterion='taylor' (the gradient of the loss on "
            "a few batches): pass `data=(x, y)` arrays or a `tf.data.Dataset` of (x, y) "
            "batches. Received: data=None")
    if isinstance(data, tuple) and len(data) == 2:
        data = tf.data.Dataset.from_tensor_slices(data).batch(64)
    elif not isinstance(data, tf.data.Dataset):
        raise ValueError(
            "Argument `data` must hold labels for criterion='taylor': `(x, y)` arrays or a "
            f"`tf.data.Dataset` of (x, y) batches. Received: data of type "
            f"{type(data).__name__}")
    total = {}
    variables = model.trainable_variables
    for x, y in data.take(8):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=False))
        for variable, grad in zip(variables, tape.gradient(value, variables), strict=True):
            if grad is not None:
                key = variable.path if hasattr(variable, "path") else variable.name
                total[key] = total.get(key, 0) + np.asarray(grad)
    return total


def _config_with(layer, **changes):
    config = layer.get_config()
    config.update(changes)
    return type(layer).from_config(config)


def _pruned_layer(layer, kind, ins, out, mean=None):
    """`(new layer, weights)` of `layer` with the input positions `ins` (one array per input)
    and output positions `out` kept; weights None when the layer has none.

    With `mean` (the mean of each input channel, measured on data), a Conv/Dense adds what
    its removed input channels gave on average to its bias (a bias is added if it had
    none): the removed channels' mean contribution is kept (exact for a 1x1 convolution
    or a Dense layer fed a constant, near it for a larger kernel, whose border taps read
    padding).
    """
    weights = [_as_numpy(w) for w in layer.weights]
    name = type(layer).__name__
    if kind == "producer":
        kernel = weights[0][..., ins[0], :][..., out]
        changes = {("units" if name == "Dense" else "filters"): len(out)}
        rest = [w[out] for w in weights[1:]]
        removed = np.setdiff1d(np.arange(weights[0].shape[-2]), ins[0])
        if mean is not None and removed.size and len(mean) == weights[0].shape[-2]:
            taps = weights[0].reshape(-1, *weights[0].shape[-2:]).sum(axis=0)  # (in, out)
            shift = (mean[removed] @ taps[removed][:, out]).astype(weights[0].dtype)
            if np.any(shift):
                if layer.use_bias:
                    rest[0] = rest[0] + shift
                else:
                    changes["use_bias"] = True
                    rest = [shift]
        return _config_with(layer, **changes), [kernel] + rest
    if kind == "separable":
        multiplier = layer.depth_multiplier
        middle = (ins[0][:, None] * multiplier + np.arange(multiplier)[None]).reshape(-1)
        depthwise = weights[0][..., ins[0], :]
        pointwise = weights[1][..., middle, :][..., out]
        return _config_with(layer, filters=len(out)), [depthwise, pointwise] + [
            w[out] for w in weights[2:]]
    if kind == "depthwise":
        multiplier = layer.depth_multiplier
        kernel = weights[0][..., ins[0], :]
        rest = [w.reshape(-1, multiplier)[ins[0]].reshape(-1) for w in weights[1:]]
        return _config_with(layer), [kernel] + rest
    if kind == "batch_norm":
        return _config_with(layer), [w[out] for w in weights]
    return _config_with(layer), weights


def _count(made):
    return sum(int(np.prod(w.shape)) for _, weights in made.values() for w in weights)


def _predicted_macs(graph, made, positions):
    """The MACs per sample of the model `build` would make, by the profiler's rules."""
    from keras_dnnopt.profiling.macs import layer_macs

    def shape(tensor):
        old = tuple(tensor.shape)
        return old[:-1] + (len(positions[id(tensor)]),)

    total = 0
    for node in graph.nodes:
        if type(node.layer).__name__ in ("BatchNormalization", "InputLayer"):
            continue  # the profiler leaves batch norm out of the total (folded at export)
        new_layer = made[node.layer.name][0]
        macs = layer_macs(new_layer, [shape(t) for t in node.inputs],
                          [shape(t) for t in node.outputs])
        total += int(macs or 0)
    return total


def _check_ratio(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0.0 <= float(value) < 1.0):
        raise ValueError(
            f"Argument `{name}` must be a fraction of channels to remove, a number in "
            f"[0, 1) (1 would remove every channel of a layer). Received: {name}={value!r}")
    return float(value)


def channel_pruning_plan(model, ratio=None, target_macs=None, per_layer=None, criterion="l1",
                         round_to=1, exclude=None, data=None, loss=None):
    """Plans the removal of channels from `model` (see the module docstring).

    Args:
        model: a functional or Sequential model of the Keras in use (built); the blocks of
            `keras_dnnopt.layers` and nested models are unrolled.
        ratio: the fraction of channels to remove from every group, in [0, 1). Defaults to
            None (0 unless `target_macs` is given).
        target_macs: a MAC budget: an int (MACs per sample, the profiler's count) or a
            float in (0, 1) (a fraction of the model's MACs); the ratio applied to every
            group is searched so that the pruned model has at most that many. Exclusive
            with `ratio`. Defaults to None.
        per_layer: `{layer or block name: ratio}` for the groups holding those layers,
            overriding `ratio`/`target_macs` there. Defaults to None.
        criterion: how a channel's importance is measured: `"l1"` (L1 norm of its filter,
            Li et al.), `"l2"`, `"bn_gamma"` (|gamma| of the batch norms on it, network
            slimming) or `"taylor"` (|sum of weight x gradient| of its filter, needs
            `data`). Defaults to `"l1"`.
        round_to: keep a multiple of this many channels in each group (8 or 16 suits SIMD
            kernels). Defaults to 1.
        exclude: names of layers (or blocks) whose output channels are kept. Defaults to
            None.
        data: `(x, y)` arrays, input arrays `x`, or a `tf.data.Dataset` of `(x, y)`
            batches (8 batches are used). Needed by `"taylor"` (with labels). Whenever
            given, the mean activation of each removed channel is measured on it (up to 256
            samples) and folded into the bias of the Conv/Dense layers that read it, so
            that they keep what it gave on average (bias compensation); without `data`
            the removed channels are simply cut. Defaults to None.
        loss: for `"taylor"`: a loss `fn(y_true, y_pred)`; defaults to the model's compiled
            loss, else sparse categorical cross-entropy on its outputs.

    Returns:
        A `ChannelPruningPlan`; `plan.apply()` builds the pruned model.

    Raises:
        ValueError: for a bad argument (named, with the value and what works), or a
            `target_macs` the model cannot reach (the smallest reachable count is said).
        TypeError: if `model` is not a Keras model of the Keras in use.
    """
    check_model(model)
    if not model.built:
        raise ValueError(f"Argument `model` ({model.name!r}) must be built: give it an "
                         "`keras.Input(shape)` or call it on data first.")
    if criterion not in CRITERIA:
        raise ValueError(f"Argument `criterion` must be one of {', '.join(map(repr, CRITERIA))}"
                         f". Received: criterion={criterion!r}")
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"Argument `round_to` must be a positive int. Received: "
                         f"round_to={round_to!r}")
    if ratio is not None and target_macs is not None:
        raise ValueError("Arguments `ratio` and `target_macs` cannot both be given: `ratio` "
                         "fixes the fraction removed, `target_macs` searches it. Received: "
                         f"ratio={ratio!r}, target_macs={target_macs!r}")
    if ratio is not None:
        ratio = _check_ratio(ratio, "ratio")
    if per_layer is not None and not isinstance(per_layer, dict):
        raise ValueError("Argument `per_layer` must be a dict {layer name: ratio}. Received: "
                         f"per_layer={per_layer!r}")
    flat, block_groups = flatten_model(model, always=True)
    names = {layer.name for layer in flat.layers}
    excluded = (select_names(flat.name, names, exclude, block_groups, "exclude")
                if exclude is not None else set())
    graph = _ChannelGraph(flat, excluded)
    if data is not None:
        graph.measure_means(data)
    groups = graph.groups()
    frozen_roots = graph.atoms.frozen_roots()
    graph.removable = {int(r) for _, roots in groups.values() for r in roots
                       if int(r) not in frozen_roots}
    fixed = {}
    for key, value in (per_layer or {}).items():
        value = _check_ratio(value, f"per_layer[{key!r}]")
        chosen = select_names(flat.name, names, [key], block_groups, "per_layer")
        hit = [g for g, (members, _) in groups.items() if set(members) & chosen]
        if not hit:
            raise ValueError(
                f"Argument `per_layer` names {key!r}, which makes no channels that can be "
                f"removed (prunable layers: {', '.join(sorted(graph.producer_out))}). "
                f"Received: per_layer={per_layer!r}")
        for group in hit:
            fixed[group] = max(value, fixed.get(group, 0.0))
    scores = graph.importance(criterion, data, loss or _default_loss(model))
    order = {g: sorted((int(r) for r in roots if int(r) in graph.removable),
                       key=lambda r: (scores.get(r, 0.0), r))
             for g, (_, roots) in groups.items()}

    def removals(global_ratio):
        """`{group: channels removed}` for a ratio (the groups of `per_layer` keep theirs)."""
        counts = {}
        for g, (_, roots) in groups.items():
            total = len(roots)
            keep = total - int(math.floor(fixed.get(g, global_ratio) * total + 1e-9))
            keep = max(round_to, int(math.ceil(keep / round_to)) * round_to)
            counts[g] = min(len(order[g]), max(0, total - keep))
        return counts

    def plan_for(counts):
        kept = set()
        for g, count in counts.items():
            kept.update(order[g][count:])
        made, positions = graph.new_layers(kept)
        return kept, made, positions, _predicted_macs(graph, made, positions)

    before = plan_for(removals(0.0))
    macs_before = before[3]
    if target_macs is not None:
        budget = _check_target(target_macs, macs_before)
        counts = removals(0.99)
        best = plan_for(counts)
        if best[3] > budget:
            raise ValueError(
                f"Argument `target_macs` ({budget:,} MACs) is out of reach: removing 99% of "
                f"every group's channels leaves {best[3]:,} MACs (the frozen layers and the "
                f"model's inputs and outputs stay). Received: target_macs={target_macs!r}")
        low, high = 0.0, 0.99
        for _ in range(16):  # bisection on one ratio for every group...
            middle = (low + high) / 2
            candidate_counts = removals(middle)
            candidate = plan_for(candidate_counts)
            if candidate[3] <= budget:
                best, counts, high = candidate, candidate_counts, middle
            else:
                low = middle
        # ...then per group: give back `round_to` channels wherever the budget still
        # allows (the groups in graph order, pass after pass), until the MACs are within
        # 1% of the budget or nothing more fits.
        free = [g for g in groups if g not in fixed]
        improved = True
        while improved and best[3] < 0.99 * budget:
            improved = False
            for g in free:
                if counts[g] < round_to:
                    continue
                trial = dict(counts)
                trial[g] -= round_to
                candidate = plan_for(trial)
                if candidate[3] <= budget:
                    best, counts, improved = candidate, trial, True
                    if best[3] >= 0.99 * budget:
                        break
    else:
        counts = removals(ratio or 0.0)
        best = plan_for(counts)
    kept, made, positions, macs = best
    ratios = {g: counts[g] / len(roots) for g, (_, roots) in groups.items()}
    channels = {}
    for node in graph.nodes:
        if node.kind in ("producer", "separable") and node.layer.name not in channels:
            old = _last_dim(node.outputs[0])
            new = len(positions[id(node.outputs[0])])
            if new != old:
                channels[node.layer.name] = (old, new)
    frozen = [g for g, (_, roots) in groups.items()
              if not any(int(r) in graph.removable for r in roots)]
    return ChannelPruningPlan(
        model_name=model.name, ratios=ratios, channels=channels, params=_count(made),
        macs=macs, params_before=_count(before[1]),
        macs_before=macs_before, groups={g: members for g, (members, _) in groups.items()},
        frozen=frozen, _graph=graph, _kept=kept)


def _check_target(target_macs, macs_before):
    if isinstance(target_macs, bool) or not isinstance(target_macs, (int, float)):
        target_macs = None
    elif isinstance(target_macs, float) and 0.0 < target_macs < 1.0:
        return int(target_macs * macs_before)
    elif isinstance(target_macs, int) and target_macs >= 1:
        return int(target_macs)
    raise ValueError(
        "Argument `target_macs` must be an int (MACs per sample) or a float in (0, 1) (a "
        f"fraction of the model's {macs_before:,} MACs). Received: "
        f"target_macs={target_macs!r}")


def _default_loss(model):
    compiled = getattr(model, "loss", None)
    if callable(compiled):
        return compiled
    if isinstance(compiled, str):
        return keras.losses.get(compiled)
    return keras.losses.SparseCategoricalCrossentropy()


def prune_channels(model, ratio=None, target_macs=None, per_layer=None, criterion="l1",
                   round_to=1, exclude=None, data=None, loss=None):
    """Removes whole channels (filters) from `model`: a smaller, faster plain model.

    The channels tied across layers (through batch norms, depthwise convolutions, residual
    `Add`s, `Concatenate`, `Flatten` -> `Dense`, squeeze-and-excitation gates) are removed
    together (see the module docstring); the kept channels' weights are copied exactly, so
    removing channels whose filters are all zero leaves the outputs unchanged.

    Args:
        model, ratio, target_macs, per_layer, criterion, round_to, exclude, data, loss:
            as in `channel_pruning_plan`.

    Returns:
        A new Keras model of built-in layers (the given model is unchanged). Fine-tune it
        (with `keras_dnnopt.distillation.Distiller` and the unpruned model as teacher, for
        the best accuracy).

    Raises:
        As `channel_pruning_plan`.

    Example:

    >>> model = keras_dnnopt.models.mobilenet_v2((32, 32, 3), num_classes=10)
    >>> smaller = prune_channels(model, target_macs=0.5)  # half the MACs
    """
    return channel_pruning_plan(model, ratio=ratio, target_macs=target_macs,
                                per_layer=per_layer, criterion=criterion, round_to=round_to,
                                exclude=exclude, data=data, loss=loss).apply()
