"""Block pruning: remove whole blocks, the "redundant layers" of a network.

Two kinds of blocks can go and leave a model that still fits together:

- **residual** blocks, whose input and output shapes match, compute `x + branch(x)`:
  without the branch they are the identity (Veit et al., 2016, showed that residual
  networks degrade gracefully when single blocks are dropped). Found in the functional
  graph as an `Add` of a tensor and of a branch that starts from that same tensor and
  reads nothing else from outside.
- **plain** blocks, whose input and output shapes match with no skip: MobileNetV1's five
  14x14x512 separable blocks are such blocks, and the MobileNet paper's "shallow
  MobileNet" is the network without them (Howard et al., 2017, section 4.2). A plain
  block is the run of layers of one block: an unrolled `keras_dnnopt.layers` block, or
  layers whose names share a prefix ending in the block's number (`block7_depthwise`,
  `block7_pointwise_bn`, ...; `conv_dw_7`, `conv_dw_7_bn`, ... in `keras.applications`);
  the run must read one tensor, give one tensor of the same shape and hold a kernel.
  Removing it connects its input to what read its output.

`removable_blocks` finds both kinds, ranked by importance, and `remove_blocks` rebuilds the
model without the `n` least important (or the named) ones. Works on both Kerases, on the
blocks of `keras_dnnopt.layers`, `keras.applications` models and any functional or
Sequential model.

Importance (`criterion`; smaller is removed first, ties go deepest first):

- `"output"`: how much the block changes its input, `mean |block(x) - x| / mean |x|` (for
  a residual block, its branch's share), on `data` (needed);
- `"bn_gamma"`: the mean |gamma| of the block's last batch norm (a branch whose last batch
  norm has small gammas adds little), falling back to the mean |weight| of its last kernel
  where there is no batch norm;
- `"l1"`: the mean |weight| of the block's last kernel;
- `"repeats"`: the structure alone, for a model not yet trained: blocks of the longest run
  of same-shape blocks first, the deepest first (the shallow MobileNet's choice). It
  needs no data and no training, so a search knows the result before training.

References:
    - [Veit et al., 2016. Residual Networks Behave Like Ensembles of Relatively Shallow
      Networks](https://arxiv.org/abs/1605.06431)
    - [Howard et al., 2017. MobileNets: Efficient Convolutional Neural Networks for Mobile
      Vision Applications](https://arxiv.org/abs/1704.04861)
"""

import re
from dataclasses import dataclass, field

import numpy as np

from keras_dnnopt.backend import check_model, keras, tf
from keras_dnnopt.compression._tfmot_support import (
    flatten_model,
    graph_nodes,
    is_symbolic,
    node_parts,
)

BLOCK_CRITERIA = ("output", "bn_gamma", "l1", "repeats")
BLOCK_KINDS = ("any", "residual", "plain")
_KERNEL_LAYERS = ("Conv1D", "Conv2D", "Conv3D", "Dense", "DepthwiseConv2D", "SeparableConv2D")
# The block a flat layer belongs to, by name: the prefix ending in the block's number.
_BLOCK_PREFIX = re.compile(r"^(.*?\d+)(?:_|$)")


@dataclass
class Block:
    """A removable block of a (flattened) model.

    Attributes:
        name: the block's name: the `keras_dnnopt.layers` block it is, or the name prefix
            its layers share, or (a residual block of other layers) its `Add` layer's.
        add: the name of a residual block's `Add` layer; None for a plain block.
        layers: the names of the layers removed with the block.
        importance: the criterion's value (smaller: removed first).
        params: the parameters of those layers.
        kind: `"residual"` or `"plain"`.
    """

    name: str
    add: object
    layers: list
    importance: float
    params: int
    kind: str = "residual"
    # Internal: the flat graph's tensors the block reads and gives, its nodes.
    _entry: object = field(default=None, repr=False, compare=False)
    _exit: object = field(default=None, repr=False, compare=False)
    _nodes: tuple = field(default=(), repr=False, compare=False)


# The name of the first releases, kept for code that imports it.
ResidualBlock = Block


def _node_tensors(node):
    layer, args, kwargs, outputs = node_parts(node)
    inputs = [t for t in tf.nest.flatten((args, kwargs)) if is_symbolic(t)]
    return layer, args, kwargs, inputs, tf.nest.flatten(outputs)


def _graph(flat):
    nodes = [_node_tensors(node) for node in graph_nodes(flat)]
    producer = {}
    for index, (_, _, _, _, outputs) in enumerate(nodes):
        for tensor in outputs:
            producer[id(tensor)] = index
    readers = {}
    for index, (_, _, _, inputs, _) in enumerate(nodes):
        for tensor in inputs:
            readers.setdefault(id(tensor), set()).add(index)
    return nodes, producer, readers


def _find_residual(flat, groups, graph):
    """`[(add node index, skip tensor, branch node indices, block name)]`."""
    nodes, producer, readers = graph
    output_ids = {id(t) for t in flat.outputs}
    owner = {name: block for block, names in groups.items() for name in names}
    found = []
    for index, (layer, _, _, inputs, _) in enumerate(nodes):
        if type(layer).__name__ != "Add" or len(inputs) != 2:
            continue
        for skip, end in (inputs, inputs[::-1]):
            if tuple(skip.shape) != tuple(end.shape) or id(end) not in producer:
                continue
            # The branch: the nodes between `skip` and `end`, reading only `skip` and each
            # other, read by nothing but each other and the Add.
            branch, stack, ok = set(), [producer[id(end)]], True
            while stack and ok:
                current = stack.pop()
                if current in branch:
                    continue
                branch.add(current)
                for tensor in nodes[current][3]:
                    if tensor is skip:
                        continue
                    if id(tensor) not in producer:
                        ok = False  # reads a model input other than the skip
                        break
                    stack.append(producer[id(tensor)])
                if len(branch) > len(nodes):
                    ok = False
            if not ok or producer.get(id(skip)) in branch:
                continue
            if not any(t is skip for i in branch for t in nodes[i][3]):
                continue  # the branch does not start from the skip tensor
            inside = branch | {index}
            if any(id(t) in output_ids or not readers.get(id(t), set()) <= inside
                   for i in branch for t in nodes[i][4]):
                continue
            found.append((index, skip, sorted(branch), owner.get(layer.name, layer.name)))
            break
    return found


def _block_key(name, owner):
    if name in owner:
        return owner[name]
    match = _BLOCK_PREFIX.match(name)
    return match.group(1) if match else None


def _find_plain(flat, groups, graph, residual_exits):
    """`[(entry tensor, exit tensor, node indices, block name)]` of the plain blocks."""
    nodes, producer, readers = graph
    output_ids = {id(t) for t in flat.outputs}
    owner = {name: block for block, names in groups.items() for name in names}
    members = {}
    for index, (layer, *_rest) in enumerate(nodes):
        key = _block_key(layer.name, owner)
        if key is not None:
            members.setdefault(key, []).append(index)
    found = []
    for key, indices in members.items():
        inside = set(indices)
        entries = {id(t): t for i in indices for t in nodes[i][3]
                   if producer.get(id(t)) not in inside}
        exits = {id(t): t for i in indices for t in nodes[i][4]
                 if id(t) in output_ids or not readers.get(id(t), set()) <= inside}
        if len(entries) != 1 or len(exits) != 1:
            continue
        (entry,), (end,) = entries.values(), exits.values()
        if (id(end) in output_ids or id(end) in residual_exits
                or tuple(entry.shape) != tuple(end.shape)
                or not any(type(nodes[i][0]).__name__ in _KERNEL_LAYERS for i in indices)):
            continue
        found.append((entry, end, sorted(indices), key))
    return found


def _find_blocks(flat, groups, kind):
    """The removable `Block`s of `flat` of `kind`, unranked (importance 0)."""
    graph = _graph(flat)
    nodes = graph[0]
    blocks = []
    residual = _find_residual(flat, groups, graph)
    if kind in ("any", "residual"):
        for index, skip, branch, name in residual:
            blocks.append(Block(name, nodes[index][0].name, [nodes[i][0].name for i in branch],
                                0.0, _params(nodes, branch), "residual", skip,
                                nodes[index][4][0], tuple(branch) + (index,)))
    if kind in ("any", "plain"):
        residual_exits = {id(nodes[index][4][0]) for index, *_ in residual}
        for entry, end, indices, name in _find_plain(flat, groups, graph, residual_exits):
            blocks.append(Block(name, None, [nodes[i][0].name for i in indices], 0.0,
                                _params(nodes, indices), "plain", entry, end,
                                tuple(indices)))
    return blocks, nodes


def _params(nodes, indices):
    return sum(int(np.prod(w.shape)) for i in indices for w in nodes[i][0].weights)


def _as_numpy(variable):
    return np.asarray(variable.numpy())


def _last_with(nodes, branch, kinds):
    for i in reversed(branch):
        if type(nodes[i][0]).__name__ in kinds:
            return nodes[i][0]
    return None


def _importance(criterion, block, nodes, flat, data):
    indices = list(block._nodes)
    if criterion == "output":
        probe = keras.Model(flat.inputs, [block._entry, block._exit])
        x = data[0] if isinstance(data, tuple) else data
        entry, end = probe.predict(x[:256], verbose=0)
        return float(np.abs(end - entry).mean() / (np.abs(entry).mean() + 1e-12))
    if criterion == "bn_gamma":
        bn = _last_with(nodes, indices, ("BatchNormalization",))
        if bn is not None and bn.scale:
            return float(np.abs(_as_numpy(bn.gamma)).mean())
    kernel_layer = _last_with(nodes, indices, _KERNEL_LAYERS)
    if kernel_layer is None:
        return 0.0
    return float(np.abs(_as_numpy(kernel_layer.weights[0])).mean())


def _check_criterion(criterion, data, kind):
    if criterion not in BLOCK_CRITERIA:
        raise ValueError(f"Argument `criterion` must be one of "
                         f"{', '.join(map(repr, BLOCK_CRITERIA))}. Received: "
                         f"criterion={criterion!r}")
    if kind not in BLOCK_KINDS:
        raise ValueError(f"Argument `kind` must be one of {', '.join(map(repr, BLOCK_KINDS))}."
                         f" Received: kind={kind!r}")
    if criterion == "output" and data is None:
        raise ValueError("Argument `data` is needed for criterion='output' (how much each "
                         "block changes its input is measured on it): pass input arrays. "
                         "Received: data=None")


def removable_blocks(model, criterion="bn_gamma", data=None, kind="any"):
    """The blocks of `model` that can be removed whole, least important first.

    Args:
        model: a functional or Sequential model of the Keras in use (built).
        criterion: one of `"output"` (needs `data`), `"bn_gamma"`, `"l1"`, `"repeats"` (see
            the module docstring). Defaults to `"bn_gamma"`.
        data: for `"output"`: input arrays (a few hundred samples are used), or an
            `(x, y)` tuple. Defaults to None.
        kind: `"any"`, `"residual"` (identity-skip blocks only) or `"plain"` (shape-keeping
            blocks without a skip only). Defaults to `"any"`.

    Returns:
        A list of `Block`, sorted by importance (smallest first; equal ones deepest first).

    Raises:
        ValueError: for an unknown `criterion` or `kind`, or `"output"` without `data`.
        TypeError: if `model` is not a Keras model of the Keras in use.
    """
    check_model(model)
    _check_criterion(criterion, data, kind)
    flat, groups = flatten_model(model, always=True)
    blocks, nodes = _find_blocks(flat, groups, kind)
    if criterion == "repeats":
        runs = {}
        for block in blocks:
            runs.setdefault(tuple(block._entry.shape), []).append(block)
        for block in blocks:
            block.importance = float(-len(runs[tuple(block._entry.shape)]))
    else:
        for block in blocks:
            block.importance = _importance(criterion, block, nodes, flat, data)
    return sorted(blocks, key=lambda b: (b.importance, -max(b._nodes), b.name))


def residual_blocks(model, criterion="bn_gamma", data=None):
    """The removable residual blocks of `model`, least important first:
    `removable_blocks(model, criterion, data, kind="residual")`."""
    return removable_blocks(model, criterion=criterion, data=data, kind="residual")


def remove_blocks(model, n=None, names=None, criterion="bn_gamma", data=None, kind="any"):
    """Removes whole blocks (identity-skip residual blocks, shape-keeping plain blocks)
    from `model`.

    Args:
        model: a functional or Sequential model of the Keras in use (built).
        n: how many blocks to remove, the least important first (`removable_blocks`).
        names: or the blocks to remove, by name (a `Block.name`: the `keras_dnnopt.layers`
            block, the name prefix of its layers, or a residual block's `Add` layer).
            Exclusive with `n`.
        criterion, data, kind: as in `removable_blocks`.

    Returns:
        A new plain Keras model without those blocks (the given model is unchanged).

    Raises:
        ValueError: for neither or both of `n` and `names`, an `n` larger than the number
            of removable blocks, or a name that is no removable block (the removable ones
            are listed).

    Example:

    >>> from keras_dnnopt.models import mobilenet_v1
    >>> model = mobilenet_v1(input_shape=(32, 32, 3), num_classes=10, alpha=0.25)
    >>> shallow = remove_blocks(model, n=5, criterion="repeats")  # the shallow MobileNet
    >>> def blocks(m):
    ...     return {layer.name.split("_")[0] for layer in m.layers if "block" in layer.name}
    >>> sorted(blocks(model) - blocks(shallow))
    ['block10', 'block11', 'block7', 'block8', 'block9']
    """
    if (n is None) == (names is None):
        raise ValueError("Give exactly one of `n` (how many blocks, least important first) "
                         f"and `names` (which blocks). Received: n={n!r}, names={names!r}")
    blocks = removable_blocks(model, criterion=criterion, data=data, kind=kind)
    available = [b.name for b in blocks]
    what = {"any": "", "residual": " residual", "plain": " plain"}[kind]
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(blocks):
            raise ValueError(
                f"Argument `n` must be an int from 0 to the number of removable{what} "
                f"blocks of {model.name!r}, {len(blocks)} ({', '.join(available) or 'none'})."
                f" Received: n={n!r}")
        chosen = blocks[:n]
    else:
        if isinstance(names, str) or not isinstance(names, (list, tuple)):
            raise ValueError(f"Argument `names` must be a list of block names. Received: "
                             f"names={names!r}")
        unknown = [name for name in names if name not in available]
        if unknown:
            raise ValueError(
                f"Argument `names` holds {', '.join(map(repr, unknown))}, not a removable"
                f"{what} block of {model.name!r}. Removable blocks: "
                f"{', '.join(available) or 'none'}. Received: names={names!r}")
        chosen = [b for b in blocks if b.name in names]
    return _rebuild(model, chosen)


def _rebuild(model, chosen):
    # `chosen` holds the blocks of a flattening of `model`: flatten it again and find them
    # there by name (the flat model shares the layers, not the tensors).
    flat, groups = flatten_model(model, always=True)
    wanted = {(b.kind, b.name) for b in chosen}
    blocks, _ = _find_blocks(flat, groups, "any")
    removed, redirect = set(), {}
    for block in blocks:
        if (block.kind, block.name) in wanted:
            removed.update(block._nodes)
            redirect[id(block._exit)] = block._entry
    tensors = {}
    inputs = []
    for tensor in flat.inputs:
        new = keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=tensor.name)
        inputs.append(new)
        tensors[id(tensor)] = new

    def resolve(tensor):
        # A removed block's output is its input (through removed neighbours too).
        while id(tensor) in redirect:
            tensor = redirect[id(tensor)]
        return tensors.get(id(tensor), tensor)

    def mapped(structure):
        return tf.nest.map_structure(lambda t: resolve(t) if is_symbolic(t) else t,
                                     structure)

    made = {}
    for index, node in enumerate(graph_nodes(flat)):
        if index in removed:
            continue
        layer, args, kwargs, _, outputs = _node_tensors(node)
        if layer.name not in made:
            made[layer.name] = (type(layer).from_config(layer.get_config()), layer)
        result = made[layer.name][0](*mapped(args), **mapped(kwargs))
        for old, new in zip(outputs, tf.nest.flatten(result), strict=True):
            tensors[id(old)] = new
    outputs = [resolve(t) for t in flat.outputs]
    new_model = keras.Model(inputs[0] if len(inputs) == 1 else inputs,
                            outputs[0] if len(outputs) == 1 else outputs, name=flat.name)
    for new, old in made.values():
        new.set_weights(old.get_weights())
    return new_model
