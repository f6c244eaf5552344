"""The arithmetic of magnitude pruning in TensorFlow ops: schedules and masks.

Written for the Keras 3 pruning of `_pruning_native` (TF-MOT cannot be used there: it
only accepts tf_keras models), to the formulas of TF-MOT's `pruning_schedule.py` and
`pruning_impl.py` so that both Kerases prune alike:

- the schedule is evaluated at the pruning step `step` (1 at the first training batch);
  masks are recomputed when `begin_step <= step <= end_step` (or `end_step == -1`) and
  `(step - begin_step) % frequency == 0`;
- polynomial: `s(step) = s_f + (s_i - s_f) * (1 - p)^3`, with
  `p = clip((step - begin_step) / (end_step - begin_step), 0, 1)` (Zhu & Gupta 2017);
  constant: `s(step) = s_f`;
- a mask keeps the `k = max(round(n * (1 - s)), 1)` weights of largest magnitude
  (ties with the k-th kept as well);
- block masks score each `block_size` block of a 2D kernel by its mean magnitude;
- 2:4 masks keep the 2 largest magnitudes of each group of 4 consecutive weights along
  the input-channel axis.

Only TensorFlow is used here (no Keras), so the functions run on both Kerases and are
tested against NumPy references.
"""

from keras_dnnopt.backend import tf

POLYNOMIAL_POWER = 3
INITIAL_SPARSITY = 0.0


def schedule_sparsity(step, *, schedule, target_sparsity, begin_step, end_step, frequency):
    """Whether masks are updated at `step`, and the sparsity the schedule gives there.

    Args:
        step: the pruning step (an int or an int tensor; 1 at the first batch).
        schedule: `"polynomial"` or `"constant"`.
        target_sparsity: the final sparsity, in (0, 1).
        begin_step, end_step, frequency: as in `keras_dnnopt.compression.prune`;
            `end_step=-1` prunes forever (constant schedule only).

    Returns:
        A tuple `(should_prune, sparsity)`: a bool tensor and a float32 tensor.
    """
    step = tf.cast(step, tf.int64)
    begin = tf.constant(begin_step, tf.int64)
    end = tf.constant(end_step, tf.int64)
    in_range = tf.logical_and(step >= begin, tf.logical_or(step <= end, end < 0))
    on_turn = tf.equal(tf.math.floormod(step - begin, frequency), 0)
    should_prune = tf.logical_and(in_range, on_turn)
    if schedule == "constant":
        return should_prune, tf.constant(target_sparsity, tf.float32)
    progress = tf.cast(step - begin, tf.float32) / float(end_step - begin_step)
    progress = tf.clip_by_value(progress, 0.0, 1.0)
    sparsity = target_sparsity + (INITIAL_SPARSITY - target_sparsity) * tf.pow(
        1.0 - progress, float(POLYNOMIAL_POWER))
    return should_prune, sparsity


def magnitude_mask(weights, sparsity):
    """The mask keeping the `max(round(n * (1 - sparsity)), 1)` largest magnitudes.

    Args:
        weights: a float tensor.
        sparsity: the fraction of weights to zero, a float scalar (tensor).

    Returns:
        A tuple `(threshold, mask)`: the smallest kept magnitude and a 0/1 mask of the
        weights' shape and dtype.
    """
    weights = tf.convert_to_tensor(weights)
    magnitudes = tf.abs(weights)
    size = tf.size(magnitudes)
    keep = tf.cast(tf.maximum(tf.round(tf.cast(size, tf.float32) * (1.0 - sparsity)), 1.0),
                   tf.int32)
    values, indices = tf.math.top_k(tf.reshape(magnitudes, [-1]), k=size)
    threshold = tf.gather(values, keep - 1)
    position = tf.gather(indices, keep - 1)
    mask = tf.logical_or(
        magnitudes >= threshold,
        tf.reshape(tf.one_hot(position, depth=size, on_value=True, off_value=False,
                              dtype=tf.bool), tf.shape(magnitudes)))
    return tf.cast(threshold, weights.dtype), tf.cast(mask, weights.dtype)


def block_mask(weights, sparsity, block_size):
    """A magnitude mask over the `block_size` blocks of a 2D kernel (mean magnitude).

    Blocks start at the top-left corner; partial blocks at the right and bottom edges are
    scored by the mean over their weights. (TF-MOT pools with centred `SAME` padding,
    which for a kernel not divisible by the block shifts the scores by part of a block;
    for divisible kernels both agree.)

    Args:
        weights: a rank-2 float tensor.
        sparsity: the fraction of blocks to zero.
        block_size: `(block_height, block_width)`.

    Returns:
        A tuple `(threshold, mask)` as `magnitude_mask`.
    """
    weights = tf.convert_to_tensor(weights)
    rows, cols = weights.shape
    block_rows, block_cols = block_size
    pad_rows, pad_cols = -rows % block_rows, -cols % block_cols
    padded = tf.pad(tf.abs(weights), [[0, pad_rows], [0, pad_cols]])
    counts = tf.pad(tf.ones_like(weights), [[0, pad_rows], [0, pad_cols]])
    shape = [(rows + pad_rows) // block_rows, block_rows, (cols + pad_cols) // block_cols,
             block_cols]
    scores = (tf.reduce_sum(tf.reshape(padded, shape), axis=[1, 3])
              / tf.reduce_sum(tf.reshape(counts, shape), axis=[1, 3]))
    threshold, pooled_mask = magnitude_mask(scores, sparsity)
    mask = tf.repeat(tf.repeat(pooled_mask, block_rows, axis=0), block_cols, axis=1)
    return threshold, mask[:rows, :cols]


def _rows_of_input_channels(weights):
    """Rearranges a kernel so that its input channels are the last axis (2D)."""
    if weights.shape.rank == 2:  # Dense: (in, out) -> (out, in)
        return tf.transpose(weights)
    # Conv2D: (h, w, in, out) -> (out * h * w, in)
    return tf.reshape(tf.transpose(weights, [3, 0, 1, 2]), [-1, weights.shape[2]])


def _restore_kernel_layout(rows, shape):
    if len(shape) == 2:
        return tf.transpose(rows)
    height, width, channels_in, channels_out = shape
    return tf.transpose(tf.reshape(rows, [channels_out, height, width, channels_in]),
                        [1, 2, 3, 0])


def m_by_n_mask(weights, m_by_n=(2, 4)):
    """The N:M structured mask: `m` zeros in each group of `n` consecutive input channels.

    Keeps the `n - m` largest magnitudes of each group of `n` weights that are
    consecutive along the input-channel axis (the layout of TFLite and of NVIDIA's sparse
    tensor cores: TF `(h, w, in, out)` read as `(out, h, w, in)`). A last, partial group
    is padded with zeros, so it keeps at most `n - m` weights.

    Args:
        weights: a rank-2 (`Dense`, `(in, out)`) or rank-4 (`Conv2D`, `(h, w, in, out)`)
            float tensor.
        m_by_n: `(m, n)`, the zeros per group and the group size. Defaults to (2, 4).

    Returns:
        A 0/1 mask of the weights' shape and dtype.
    """
    weights = tf.convert_to_tensor(weights)
    zeros, group = m_by_n
    shape = weights.shape.as_list()
    rows = tf.abs(_rows_of_input_channels(weights))
    channels = rows.shape[-1]
    pad = -channels % group
    groups = tf.reshape(tf.pad(rows, [[0, 0], [0, pad]]), [-1, group])
    _, kept = tf.math.top_k(groups, k=group - zeros, sorted=False)
    group_mask = tf.reduce_sum(tf.one_hot(kept, group, dtype=weights.dtype), axis=1)
    row_mask = tf.reshape(group_mask, [-1, channels + pad])[:, :channels]
    return _restore_kernel_layout(row_mask, shape)
