"""`get_strategy`: the `tf.distribute` strategy for the hardware at hand, and `split_cpu`.

The strategies themselves are TensorFlow's (`tf.distribute.MirroredStrategy`,
`MultiWorkerMirroredStrategy`, `TPUStrategy`, `OneDeviceStrategy`); this module only picks
one, builds its cluster resolver and validates what the user gives it (kind, TF_CONFIG),
so that the same script runs on a laptop, on several GPUs, on a TPU and on several machines.
"""

import json
import os

from keras_dnnopt.backend import tf
from keras_dnnopt.utils.validation import check_choice, check_positive

STRATEGY_KINDS = ("auto", "mirrored", "multi_worker", "tpu", "one_device", "default")

_TASK_TYPES = ("chief", "worker", "evaluator", "ps")


# ----------------------------------------------------------------------------- devices


def split_cpu(num_devices):
    """Splits the (first) physical CPU into `num_devices` logical CPU devices.

    With two or more logical CPUs a `MirroredStrategy` has several replicas on one
    machine without any accelerator, so that a multi-device run (and its per-replica
    batch arithmetic, all-reduce and metric aggregation) can be rehearsed on a laptop or
    in a test. It must be called before TensorFlow initialises its devices (before the
    first op, tensor, model or strategy is created); calling it again with the same number
    is a no-op.

    Args:
        num_devices: the number of logical CPU devices, an integer >= 1.

    Returns:
        The list of logical CPU device names, e.g. `["/device:CPU:0", "/device:CPU:1"]`.

    Raises:
        ValueError: if `num_devices` is not a positive integer.
        RuntimeError: if TensorFlow's devices were already initialised with another split
            (start a new process and call `split_cpu` first).

    Example:

    ```python
    from keras_dnnopt.distribute import split_cpu, get_strategy
    split_cpu(2)                         # first thing in the script
    strategy = get_strategy("mirrored")  # 2 replicas, one per logical CPU
    ```
    """
    num_devices = check_positive("num_devices", num_devices, integer=True)
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])
    except RuntimeError as error:
        current = tf.config.list_logical_devices("CPU")
        if len(current) == num_devices:
            return [d.name for d in current]
        raise RuntimeError(
            f"Cannot split the CPU into {num_devices} logical devices: TensorFlow already "
            f"initialised its devices ({len(current)} logical CPU). Call `split_cpu` at the "
            "very start of the program, before any tensor, model or strategy is created "
            "(in a test, run it in a subprocess).") from error
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _find_tpu(tpu=None):
    """The TPU cluster resolver when a TPU is reachable, else None: `tpu` when given,
    else the one the environment names (Colab, GKE, `TPU_NAME`), else a TPU VM's local
    TPU."""
    candidates = [tpu] if tpu is not None else [None]
    if tpu is None and tf.config.list_physical_devices("TPU"):
        candidates.append("local")  # a TPU VM: the TPU is attached to this host
    for candidate in candidates:
        try:
            return tf.distribute.cluster_resolver.TPUClusterResolver(tpu=candidate)
        except (ValueError, RuntimeError, KeyError, ImportError, tf.errors.OpError):
            continue
    return None


def _gpus():
    """The names of the logical GPUs visible to TensorFlow."""
    return [d.name for d in tf.config.list_logical_devices("GPU")]


def _cpus():
    return [d.name for d in tf.config.list_logical_devices("CPU")]


# ----------------------------------------------------------------------------- TF_CONFIG


def parse_tf_config(tf_config=None):
    """Parses and validates a `TF_CONFIG` (the cluster of a multi-worker job).

    Args:
        tf_config: the JSON text (or an already-parsed dict); None reads the `TF_CONFIG`
            environment variable. Defaults to None.

    Returns:
        The parsed dict, with `cluster` (task type -> list of `"host:port"`) and `task`
        (`{"type": ..., "index": ...}`).

    Raises:
        ValueError: if TF_CONFIG is unset, is not valid JSON, has no `cluster`, or names no
            task (or a task type/index absent from the cluster).

    Example:

    >>> parse_tf_config('{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]},'
    ...                 ' "task": {"type": "worker", "index": 1}}')["task"]
    {'type': 'worker', 'index': 1}
    """
    if tf_config is None:
        tf_config = os.environ.get("TF_CONFIG")
        if not tf_config:
            raise ValueError(
                "Multi-worker training needs the environment variable TF_CONFIG, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}, set differently on each machine '
                "(only `task.index` changes). Received: TF_CONFIG unset")
    if isinstance(tf_config, str):
        try:
            config = json.loads(tf_config)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"TF_CONFIG must be valid JSON ({error.msg} at position {error.pos}). "
                f"Received: TF_CONFIG={tf_config!r}") from error
    else:
        config = tf_config
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object with `cluster` and `task`. "
                         f"Received: TF_CONFIG={tf_config!r}")
    cluster = config.get("cluster")
    if not isinstance(cluster, dict) or not cluster or not all(
            isinstance(v, list) and v for v in cluster.values()):
        raise ValueError(
            "TF_CONFIG must have a `cluster` mapping task types to non-empty lists of "
            f"'host:port' addresses. Received: TF_CONFIG={tf_config!r}")
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(
            "TF_CONFIG must name this process's task, e.g. "
            '"task": {"type": "worker", "index": 0}. '
            f"Received: TF_CONFIG={tf_config!r}")
    if task["type"] not in cluster:
        raise ValueError(
            f"TF_CONFIG's task type {task['type']!r} is not in its cluster "
            f"({sorted(cluster)}). Received: TF_CONFIG={tf_config!r}")
    index = task["index"]
    if isinstance(index, bool) or not isinstance(index, int) or not (
            0 <= index < len(cluster[task["type"]])):
        raise ValueError(
            f"TF_CONFIG's task index must be an integer in [0, "
            f"{len(cluster[task['type']])}) for task type {task['type']!r}. "
            f"Received: TF_CONFIG={tf_config!r}")
    return config


def is_chief(strategy=None):
    """Whether this process is the chief of its (multi-worker) job: the one to write
    checkpoints, logs and the final model. True outside multi-worker training.

    Args:
        strategy: a `tf.distribute.Strategy`; None uses the current one. Defaults to None.
    """
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def _multi_worker_resolver():
    if os.environ.get("TF_CONFIG"):
        parse_tf_config()
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if os.environ.get("SLURM_JOB_ID") or os.environ.get("SLURM_PROCID"):
        return tf.distribute.cluster_resolver.SlurmClusterResolver()
    raise ValueError(
        "get_strategy('multi_worker') needs a cluster: set TF_CONFIG on every machine "
        '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}), run under Slurm (srun), or pass '
        "`cluster_resolver=`. Received: neither TF_CONFIG nor SLURM_JOB_ID is set")


# ----------------------------------------------------------------------------- strategies


def _tpu_strategy(resolver):
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def get_strategy(kind="auto", devices=None, cluster_resolver=None, tpu=None,
                 communication="auto"):
    """Returns the `tf.distribute.Strategy` for `kind` and the hardware found.

    - `"auto"`: a `TPUStrategy` when a TPU cluster resolver finds a TPU (Colab, Cloud TPU
      VM), a `MirroredStrategy` over the GPUs when there are several, a `OneDeviceStrategy`
      on the GPU or the CPU otherwise. (It never starts a multi-worker job: that needs
      a cluster, so ask for `"multi_worker"`.)
    - `"mirrored"`: `MirroredStrategy` over `devices`, else every GPU, else every logical
      CPU (see `split_cpu`), one replica each.
    - `"multi_worker"`: `MultiWorkerMirroredStrategy` whose cluster comes from
      `cluster_resolver`, else `TF_CONFIG` (validated), else Slurm's environment.
    - `"tpu"`: `TPUStrategy` on the TPU named by `tpu` (or found); an error when none.
    - `"one_device"`: `OneDeviceStrategy` on `devices[0]`, else the first GPU, else the CPU.
    - `"default"`: TensorFlow's default (no-op) strategy.

    Build and compile the model inside `strategy.scope()`; the data and the training
    script stay the same for every kind (see `docs/distributed.md`).

    Args:
        kind: one of `"auto"`, `"mirrored"`, `"multi_worker"`, `"tpu"`, `"one_device"`,
            `"default"`. Defaults to `"auto"`.
        devices: device names for `"mirrored"` / `"one_device"`, e.g.
            `["/cpu:0", "/cpu:1"]`. Defaults to None (found).
        cluster_resolver: a `tf.distribute.cluster_resolver.ClusterResolver` for
            `"multi_worker"`. Defaults to None (TF_CONFIG or Slurm).
        tpu: the TPU name or address for `"tpu"`/`"auto"`. Defaults to None (found).
        communication: the all-reduce of `"multi_worker"`: `"auto"`, `"ring"` (gRPC,
            CPUs) or `"nccl"` (GPUs). Defaults to `"auto"`.

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: if `kind` or `communication` is unknown, TF_CONFIG does not parse or
            names no task, `"multi_worker"` finds no cluster, or `"tpu"` finds no TPU.

    Example:

    ```python
    strategy = get_strategy()              # TPU, several GPUs, or one device
    with strategy.scope():
        model = keras_dnnopt.models.mobilenet_v2((32, 32, 3), num_classes=10)
        model.compile("adam", "sparse_categorical_crossentropy")
    ```
    """
    check_choice("kind", kind, STRATEGY_KINDS)
    check_choice("communication", communication, ("auto", "ring", "nccl"))
    if devices is not None:
        if isinstance(devices, str) or not devices or not all(
                isinstance(d, str) for d in devices):
            raise ValueError("Argument `devices` must be a non-empty list of device names, "
                             f"e.g. ['/gpu:0', '/gpu:1']. Received: devices={devices!r}")
        devices = list(devices)

    if kind == "auto":
        resolver = _find_tpu(tpu)
        if resolver is not None:
            return _tpu_strategy(resolver)
        gpus = _gpus()
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy(gpus)
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(devices or _gpus() or _cpus())
    if kind == "one_device":
        gpus = _gpus()
        return tf.distribute.OneDeviceStrategy(
            devices[0] if devices else (gpus[0] if gpus else "/cpu:0"))
    if kind == "multi_worker":
        resolver = cluster_resolver or _multi_worker_resolver()
        implementation = {
            "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
            "ring": tf.distribute.experimental.CommunicationImplementation.RING,
            "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
        }[communication]
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver,
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=implementation))
    if kind == "tpu":
        resolver = _find_tpu(tpu)
        if resolver is None:
            raise ValueError(
                "get_strategy('tpu') found no TPU. On Colab pick Runtime > Change runtime "
                "type > TPU; elsewhere pass `tpu=` (name or grpc:// address). "
                f"Received: tpu={tpu!r}")
        return _tpu_strategy(resolver)
    return tf.distribute.get_strategy()  # "default"


# ----------------------------------------------------------------------------- scope checks


def _is_default_strategy(strategy):
    """Whether `strategy` is TensorFlow's default (no-op) strategy, which every variable
    created outside any `strategy.scope()` belongs to."""
    return type(strategy).__name__.startswith("_DefaultDistributionStrategy")


def _tf_variable(variable):
    """The `tf.Variable` behind a model variable: Keras 3 wraps one (`variable.value`, a
    `MirroredVariable` when created in a `MirroredStrategy` scope); tf_keras' variables
    are `tf.Variable`s themselves."""
    if isinstance(variable, tf.Variable):
        return variable
    inner = getattr(variable, "value", None)
    return inner if isinstance(inner, tf.Variable) else variable


def check_built_in_scope(model, strategy, argument="model",
                         fix="build and compile the model inside `with strategy.scope():`"):
    """Checks that every variable of `model` was created in `strategy.scope()`.

    A model trained under a `tf.distribute` strategy must have been built (its variables
    created) inside that strategy's scope: a `MirroredStrategy` keeps one copy of each
    variable per replica, and a variable created outside it is a single ordinary variable
    that the strategy cannot update (Keras 3 fails deep inside the optimizer with a bare
    `AssertionError`, tf_keras with "... was not created in the distribution strategy
    scope", or the replicas silently share one copy). This check gives one message naming
    the argument and the way out instead. The default strategy (no `scope()` entered)
    accepts every model.

    Args:
        model: a `keras.Model` of the Keras in use.
        strategy: the `tf.distribute.Strategy` the model is about to be trained under.
        argument: the name of the user's argument that gave the model, for the message
            (e.g. `"model"`, `"build_fn"`). Defaults to `"model"`.
        fix: what the user should do, for the message. Defaults to building and compiling
            the model inside `with strategy.scope():`.

    Returns:
        The model, unchanged.

    Raises:
        ValueError: if a variable of `model` was not created in `strategy.scope()`.

    Example:

    ```python
    strategy = tf.distribute.MirroredStrategy()
    with strategy.scope():
        model = build_model()           # its variables are mirrored
    check_built_in_scope(model, strategy)
    ```
    """
    if strategy is None or _is_default_strategy(strategy):
        return model
    outside = [v for v in model.variables
               if not strategy.extended.variable_created_in_scope(_tf_variable(v))]
    if outside:
        names = ", ".join(repr(getattr(v, "path", None) or v.name) for v in outside[:3])
        more = f" and {len(outside) - 3} more" if len(outside) > 3 else ""
        raise ValueError(
            f"Argument `{argument}` must give a model built inside the scope of the "
            f"{type(strategy).__name__} it is trained under (its variables are created "
            f"per replica there): {fix}. To use a model built earlier, copy it inside the "
            "scope: `with strategy.scope(): copy = keras.models.clone_model(model); "
            "copy.set_weights(model.get_weights())`, then compile the copy there. "
            f"Received: model {model.name!r} with {len(outside)} of {len(model.variables)} "
            f"variables created outside the scope ({names}{more})")
    return model
