"""Block pruning: remove whole residual blocks, the "redundant layers" of a network.

A residual block whose input and output shapes match computes `x + branch(x)`; without its
branch it is the identity, so the block can go and the model still fits together (Veit et
al., 2016, showed that residual networks degrade gracefully when single blocks are dropped).
`residual_blocks` finds these blocks in the functional graph (an `Add` of a tensor and of a
branch that starts from that same tensor and reads nothing else from outside), ranks them
by importance, and `remove_blocks` rebuilds the model without the `n` least important (or
the named) ones. Works on both Kerases, on the blocks of `keras_dnnopt.layers` (unrolled),
`keras.applications` models and any functional or Sequential model.

Importance (`criterion`):

- `"output"`: how much the branch adds, `mean |branch(x)| / mean |x|` at the block's input,
  on `data` (needed);
- `"bn_gamma"`: the mean |gamma| of the batch norm that ends the branch (a branch whose
  last batch norm has small gammas adds little), falling back to the mean |weight| of its
  last kernel where the branch ends without a batch norm;
- `"l1"`: the mean |weight| of the branch's last kernel.

Reference:
    - [Veit et al., 2016. Residual Networks Behave Like Ensembles of Relatively Shallow
      Networks](https://arxiv.org/abs/1605.06431)
"""

from dataclasses import dataclass

import numpy as np

from keras_dnnopt.backend import check_model, keras, tf
from keras_dnnopt.compression._tfmot_support import (
    flatten_model,
    graph_nodes,
    is_symbolic,
    node_parts,
)

BLOCK_CRITERIA = ("output", "bn_gamma", "l1")


@dataclass
class ResidualBlock:
    """A removable residual block of a (flattened) model.

    Attributes:
        name: the block's name: the name of the `keras_dnnopt.layers` block it is in, or
            else of its `Add` layer.
        add: the name of the `Add` layer.
        layers: the names of the branch's layers (removed with the block).
        importance: the criterion's value (smaller: removed first).
        params: the parameters the branch holds.
    """

    name: str
    add: str
    layers: list
    importance: float
    params: int


def _node_tensors(node):
    layer, args, kwargs, outputs = node_parts(node)
    inputs = [t for t in tf.nest.flatten((args, kwargs)) if is_symbolic(t)]
    return layer, args, kwargs, inputs, tf.nest.flatten(outputs)


def _find_blocks(flat, groups):
    """`[(add node index, skip tensor, branch node indices)]` of the removable blocks."""
    nodes = [_node_tensors(node) for node in graph_nodes(flat)]
    producer = {}
    for index, (_, _, _, _, outputs) in enumerate(nodes):
        for tensor in outputs:
            producer[id(tensor)] = index
    readers = {}
    for index, (_, _, _, inputs, _) in enumerate(nodes):
        for tensor in inputs:
            readers.setdefault(id(tensor), set()).add(index)
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
            found.append((index, skip, sorted(branch), nodes, owner))
            break
    return found


def _as_numpy(variable):
    return np.asarray(variable.numpy())


def _last_with(nodes, branch, kinds):
    for i in reversed(branch):
        if type(nodes[i][0]).__name__ in kinds:
            return nodes[i][0]
    return None


def _importance(criterion, nodes, branch, skip, flat, data):
    if criterion == "output":
        probe = keras.Model(flat.inputs, [skip, nodes[branch[-1]][4][0]])
        x = data[0] if isinstance(data, tuple) else data
        skip_value, branch_value = probe.predict(x[:256], verbose=0)
        return float(np.abs(branch_value).mean() / (np.abs(skip_value).mean() + 1e-12))
    if criterion == "bn_gamma":
        bn = _last_with(nodes, branch, ("BatchNormalization",))
        if bn is not None and bn.scale:
            return float(np.abs(_as_numpy(bn.gamma)).mean())
    kernel_layer = _last_with(nodes, branch, ("Conv1D", "Conv2D", "Conv3D", "Dense",
                                              "DepthwiseConv2D", "SeparableConv2D"))
    if kernel_layer is None:
        return 0.0
    return float(np.abs(_as_numpy(kernel_layer.weights[0])).mean())


def residual_blocks(model, criterion="bn_gamma", data=None):
    """The removable residual blocks of `model`, least important first.

    Args:
        model: a functional or Sequential model of the Keras in use (built).
        criterion: one of `"output"` (needs `data`), `"bn_gamma"`, `"l1"` (see the module
            docstring). Defaults to `"bn_gamma"`.
        data: for `"output"`: input arrays (a few hundred samples are used), or an
            `(x, y)` tuple. Defaults to None.

    Returns:
        A list of `ResidualBlock`, sorted by importance (smallest first).

    Raises:
        ValueError: for an unknown `criterion`, or `"output"` without `data`.
        TypeError: if `model` is not a Keras model of the Keras in use.
    """
    check_model(model)
    if criterion not in BLOCK_CRITERIA:
        raise ValueError(f"Argument `criterion` must be one of "
                         f"{', '.join(map(repr, BLOCK_CRITERIA))}. Received: "
                         f"criterion={criterion!r}")
    if criterion == "output" and data is None:
        raise ValueError("Argument `data` is needed for criterion='output' (the branch's "
                         "share of each block's output is measured on it): pass input "
                         "arrays. Received: data=None")
    flat, groups = flatten_model(model, always=True)
    blocks = []
    for index, skip, branch, nodes, owner in _find_blocks(flat, groups):
        add = nodes[index][0]
        layers = [nodes[i][0].name for i in branch]
        name = owner.get(add.name, add.name)
        params = sum(int(np.prod(w.shape)) for i in branch for w in nodes[i][0].weights)
        blocks.append(ResidualBlock(name, add.name, layers,
                                    _importance(criterion, nodes, branch, skip, flat, data),
                                    params))
    return sorted(blocks, key=lambda b: (b.importance, b.name))


def remove_blocks(model, n=None, names=None, criterion="bn_gamma", data=None):
    """Removes whole residual blocks (identity skips) from `model`.

    Args:
        model: a functional or Sequential model of the Keras in use (built).
        n: how many blocks to remove, the least important first (`residual_blocks`).
        names: or the blocks to remove, by name (a `ResidualBlock.name`: the
            `keras_dnnopt.layers` block, or the `Add` layer). Exclusive with `n`.
        criterion, data: as in `residual_blocks`.

    Returns:
        A new plain Keras model without those blocks (the given model is unchanged).

    Raises:
        ValueError: for neither or both of `n` and `names`, an `n` larger than the number
            of removable blocks, or a name that is no removable block (the removable ones
            are listed).
    """
    if (n is None) == (names is None):
        raise ValueError("Give exactly one of `n` (how many blocks, least important first) "
                         f"and `names` (which blocks). Received: n={n!r}, names={names!r}")
    blocks = residual_blocks(model, criterion=criterion, data=data)
    available = [b.name for b in blocks]
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(blocks):
            raise ValueError(
                f"Argument `n` must be an int from 0 to the number of removable residual "
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
                f"Argument `names` holds {', '.join(map(repr, unknown))}, not a removable "
                f"residual block of {model.name!r}. Removable blocks: "
                f"{', '.join(available) or 'none'}. Received: names={names!r}")
        chosen = [b for b in blocks if b.name in names]
    return _rebuild(model, {b.add for b in chosen})


def _rebuild(model, adds):
    flat, groups = flatten_model(model, always=True)
    skips = {}
    removed = set()
    for index, skip, branch, nodes, _ in _find_blocks(flat, groups):
        if nodes[index][0].name in adds:
            skips[index] = skip
            removed.update(branch)
    tensors = {}
    inputs = []
    for tensor in flat.inputs:
        new = keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=tensor.name)
        inputs.append(new)
        tensors[id(tensor)] = new
    made = {}
    for index, node in enumerate(graph_nodes(flat)):
        layer, args, kwargs, _, outputs = _node_tensors(node)
        if index in removed:
            continue
        if index in skips:
            tensors[id(outputs[0])] = tensors[id(skips[index])]
            continue
        if layer.name not in made:
            made[layer.name] = (type(layer).from_config(layer.get_config()), layer)

        def mapped(structure):
            return tf.nest.map_structure(
                lambda t: tensors.get(id(t), t) if is_symbolic(t) else t, structure)

        result = made[layer.name][0](*mapped(args), **mapped(kwargs))
        for old, new in zip(outputs, tf.nest.flatten(result), strict=True):
            tensors[id(old)] = new
    outputs = [tensors[id(t)] for t in flat.outputs]
    new_model = keras.Model(inputs[0] if len(inputs) == 1 else inputs,
                            outputs[0] if len(outputs) == 1 else outputs, name=flat.name)
    for new, old in made.values():
        new.set_weights(old.get_weights())
    return new_model
