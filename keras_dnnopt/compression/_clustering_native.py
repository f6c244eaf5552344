"""Weight clustering on Keras 3, where TF-MOT refuses the model (written here: TF-MOT has no
Keras 3 support and Keras has no clustering).

The scheme is Deep Compression's weight sharing (Han et al., 2016): each clustered kernel's
values are grouped once, at `cluster` time, into `number_of_clusters` clusters (centroids
initialized from the kernel's values as TF-MOT does, each weight assigned to the nearest
one), and every weight is set to its centroid. The assignments then stay fixed, and the
centroids train: the kernel variable gets a `constraint` (which Keras 3 optimizers apply
after every update) that sets each weight to the mean of its cluster's updated values. So
after each step the kernel holds exactly one value per cluster, and each centroid has moved
by the mean of its members' updates (TF-MOT moves it by their sum, Deep Compression too;
the mean is the same direction with a per-cluster step size that does not grow with the
cluster's size). With `preserve_sparsity`, the zeros form one of the clusters, held at zero.

The model stays a plain Keras 3 model (no wrapper layers); `strip_clustering` returns a copy
without the constraints.
"""

import numpy as np

from keras_dnnopt.backend import keras, tf

# The kernels clustered, as TF-MOT's ClusteringRegistry: not depthwise kernels, biases or
# batch norm. (class name, weight attribute)
_CLUSTERABLE = {
    "Conv1D": "kernel",
    "Conv2D": "kernel",
    "Conv3D": "kernel",
    "Conv1DTranspose": "kernel",
    "Conv2DTranspose": "kernel",
    "Conv3DTranspose": "kernel",
    "SeparableConv1D": "pointwise_kernel",
    "SeparableConv2D": "pointwise_kernel",
    "Dense": "kernel",
    "Embedding": "embeddings",
}


def clusterable_weight(layer):
    """The variable `cluster` clusters in a built-in layer, or None."""
    attribute = _CLUSTERABLE.get(type(layer).__name__)
    if attribute is None or type(layer).__module__.split(".")[0] != "keras":
        return None
    return getattr(layer, attribute, None)


def init_centroids(values, k, method, rng):
    """`k` initial centroids (sorted) of the 1-D `values`, as TF-MOT's
    `CentroidInitialization` does."""
    low, high = float(values.min()), float(values.max())
    if method == "linear":
        centroids = np.linspace(low, high, k)
    elif method == "random":
        centroids = rng.uniform(low, high, k)
    elif method == "density":
        # Evenly spaced in the cumulative distribution of the values.
        centroids = np.quantile(values, np.linspace(0.0, 1.0, k))
    else:  # kmeans++: D^2 sampling (Arthur and Vassilvitskii, 2007), in 1-D.
        centroids = [values[rng.integers(values.size)]]
        for _ in range(k - 1):
            distance = np.min(np.abs(values[:, None] - np.asarray(centroids)[None]), axis=1) ** 2
            total = distance.sum()
            if total == 0:
                centroids.append(values[rng.integers(values.size)])
            else:
                centroids.append(values[rng.choice(values.size, p=distance / total)])
        centroids = np.asarray(centroids)
    return np.sort(np.asarray(centroids, dtype="float64"))


class SnapToClusters:
    """A variable constraint setting each weight to the mean of its (fixed) cluster.

    Args:
        indices: int array of the kernel's shape, the cluster of each weight; with
            `zero_cluster`, that cluster is held at zero.
        num_clusters: the number of clusters (segments).
        zero_cluster: the index of the zeros' cluster, or None.
        inner: the variable's own constraint, applied first, or None.
    """

    def __init__(self, indices, num_clusters, zero_cluster=None, inner=None):
        self.shape = indices.shape
        self.indices = tf.constant(indices.reshape(-1), dtype=tf.int32)
        counts = np.bincount(indices.reshape(-1), minlength=num_clusters).astype("float32")
        self.counts = tf.constant(np.maximum(counts, 1.0))
        keep = np.ones(num_clusters, dtype="float32")
        if zero_cluster is not None:
            keep[zero_cluster] = 0.0
        self.keep = tf.constant(keep)
        self.num_clusters = num_clusters
        self.zero_cluster = zero_cluster
        self.inner = inner

    def __call__(self, weight):
        if self.inner is not None:
            weight = self.inner(weight)
        weight = tf.convert_to_tensor(weight)
        flat = tf.reshape(weight, [-1])
        sums = tf.math.unsorted_segment_sum(flat, self.indices, self.num_clusters)
        means = sums / tf.cast(self.counts, sums.dtype) * tf.cast(self.keep, sums.dtype)
        return tf.reshape(tf.gather(means, self.indices), tf.shape(weight))


def cluster_variable(variable, number_of_clusters, centroid_init, preserve_sparsity, rng):
    """Clusters one kernel variable in place and attaches the `SnapToClusters` constraint."""
    kernel = np.asarray(keras.ops.convert_to_numpy(variable), dtype="float64")
    flat = kernel.reshape(-1)
    zeros = (flat == 0) if preserve_sparsity else np.zeros(flat.shape, bool)
    k = number_of_clusters - 1 if preserve_sparsity and zeros.any() else number_of_clusters
    values = flat[~zeros]
    centroids = init_centroids(values, k, centroid_init, rng)
    # Nearest centroid (centroids sorted: search the midpoints).
    indices = np.zeros(flat.shape, dtype="int64")
    indices[~zeros] = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)
    zero_cluster = None
    if zeros.any():
        zero_cluster = k
        indices[zeros] = k
        centroids = np.append(centroids, 0.0)
    variable.assign(centroids[indices].reshape(kernel.shape).astype(variable.dtype))
    variable.constraint = SnapToClusters(indices.reshape(kernel.shape), len(centroids),
                                         zero_cluster, inner=variable.constraint)


def iter_leaf_layers(model):
    """`(layer, group)` for each built-in layer of `model`, the blocks' sublayers and nested
    models' layers included; `group` is the name of the top-level layer holding it."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            for sub, _ in iter_leaf_layers(layer):
                yield sub, layer.name
        elif getattr(layer, "sublayers", None):
            for sub in layer.sublayers:
                yield sub, layer.name
        else:
            yield layer, layer.name


def cluster_records(model):
    """What `SnapToClusters` constraints a (Keras 3) model holds, as JSON-ready records.

    A variable's constraint is not part of a layer's config, so a `.keras` file loses it;
    `keras_dnnopt.export.save_model` stores these records and `load_model` re-attaches the
    constraints with `restore_clusters`.

    Returns:
        A list of `{"path": variable path, "index": position in model.weights,
        "zero_cluster": bool}`, one per clustered variable.
    """
    return [{"path": variable.path, "index": index,
             "zero_cluster": variable.constraint.zero_cluster is not None}
            for index, variable in enumerate(model.weights)
            if isinstance(variable.constraint, SnapToClusters)]


def restore_clusters(model, records):
    """Re-attaches `SnapToClusters` to the variables named by `cluster_records`' records.

    Each weight's cluster is read back from its value (clustered weights take one value per
    cluster; the zeros' cluster, when kept, is the value 0).
    """
    weights = model.weights
    variables = {variable.path: variable for variable in weights}
    for record in records:
        # A nested layer's variable path can change in a reload (a QAT layer's inner layer
        # is renamed); the position in `model.weights` does not.
        variable = variables.get(record["path"])
        if variable is None and "index" in record:
            variable = weights[record["index"]]
        attach_clusters(variable, record["zero_cluster"])


def attach_clusters(variable, zero_cluster):
    """Attaches a `SnapToClusters` constraint to a variable whose values are already
    clustered, each distinct value being one cluster (with `zero_cluster`, the value 0, if
    present, is held at zero)."""
    values = np.asarray(keras.ops.convert_to_numpy(variable)).reshape(-1)
    centroids, indices = np.unique(values, return_inverse=True)
    zero = None
    if zero_cluster and (centroids == 0).any():
        zero = int(np.flatnonzero(centroids == 0)[0])
    variable.constraint = SnapToClusters(indices.reshape(variable.shape), len(centroids),
                                         zero, inner=variable.constraint)
