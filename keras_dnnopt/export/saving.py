"""`save_model` and `load_model`: one `.keras` round trip for every model keras_dnnopt makes.

Plain models, the blocks of `keras_dnnopt.layers`, the `Distiller`, pruned models (TF-MOT's
wrapper on tf_keras, the native one on Keras 3), clustered models and, on tf_keras, TF-MOT
quantization-aware (QAT) models all save to one `.keras` file and load back, in Keras' safe
mode, with the same outputs.

Why not just `model.save` / `keras.models.load_model`: a TF-MOT QAT model saved as `.keras`
does not load back on tf_keras, not even inside `tfmot.quantization.keras.quantize_scope()`
("Layer 'quantize_layer' expected 5 variables, but received 3"). Two TF-MOT behaviours meet
the `.keras` loader there: `QuantizeLayer.build` never marks the layer built, so the loader's
`build_from_config` and the functional rebuild each create its variables; and
`QuantizeWrapperV2.build` adopts its inner layer's weights only when that layer is already
built (true in `quantize_apply`, false on load), so the per-layer variable lists of the saved
and the loaded model differ. The legacy `.h5` weights format matches weights layer by layer
through `layer.weights`, which both agree on. So `save_model` writes a normal `.keras`
archive and, for a model holding TF-MOT quantization layers, adds the weights in that format
(`keras_dnnopt_weights.h5` inside the archive); `load_model` rebuilds the architecture from
the archive's `config.json` inside TF-MOT's scopes and loads those weights, then compiles it
from the saved compile configuration. Optimizer state is not kept for such models.

Clustering on Keras 3 is a constraint on the kernel variables, which no `.keras` file keeps:
`save_model` records the clustered variables (`keras_dnnopt_clusters.json` in the archive)
and `load_model` re-attaches their constraints, so the loaded model trains as clustered.

A QAT `.keras` file written by a plain `model.save` (an existing checkpoint) loads too: for
the duration of that load, TF-MOT's two `build` methods are made to build as they did in
`quantize_apply` (see `_tfmot_build_fixes`).
"""

import contextlib
import json
import os
import tempfile
import zipfile

from keras_dnnopt.backend import USING_TF_KERAS, check_model, keras

_SUFFIX = ".keras"
_QAT_WEIGHTS = "keras_dnnopt_weights.h5"
_CLUSTERS = "keras_dnnopt_clusters.json"
_QAT_CLASSES = ("QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2")

# Every module that registers a serializable class, so that loading works in a process that
# imported nothing but this module (the package root is lazy).
_REGISTERING_MODULES = (
    "keras_dnnopt.layers",
    "keras_dnnopt.schedules",
    "keras_dnnopt.callbacks",
    "keras_dnnopt.distillation",
    "keras_dnnopt.compression",
    "keras_dnnopt.compression._pruning_native",
    "keras_dnnopt.evaluation.metrics",
) + (() if USING_TF_KERAS else (
    # The layers of the native quantization-aware training (Keras 3; TF-MOT's on tf_keras).
    "keras_dnnopt.compression._qat_layers",
))


def import_registering_modules():
    """Imports every keras_dnnopt module that registers a class with Keras serialization."""
    import importlib

    for name in _REGISTERING_MODULES:
        importlib.import_module(name)


def _check_path(path, must_exist):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"Argument `path` must be a file path (a str or os.PathLike) ending in {_SUFFIX!r}. "
            f"Received: path={path!r} of type {type(path).__name__}"
        )
    path = os.fspath(path)
    if not path.endswith(_SUFFIX):
        raise ValueError(
            f"Argument `path` must end in {_SUFFIX!r} (the native Keras format; use "
            f"`keras_dnnopt.export.export_tflite` for `.tflite`). Received: path={path!r}"
        )
    if must_exist and not os.path.isfile(path):
        raise FileNotFoundError(
            f"Argument `path` names no file: nothing to load. Received: path={path!r}"
        )
    return path


def _has_qat_layers(model):
    for layer in model._flatten_layers(include_self=False):  # noqa: SLF001 (both Kerases)
        if type(layer).__name__ in _QAT_CLASSES and "tensorflow_model_optimization" in (
            type(layer).__module__
        ):
            return True
    return False


def save_model(model, path):
    """Saves a model made by keras_dnnopt (or any Keras model) to a `.keras` file, atomically.

    The file is written to a temporary name in the target's folder and moved over `path`,
    so a crash never leaves a half-written file nor destroys the previous one. A TF-MOT QAT
    model (tf_keras) also gets its weights in a layout that `load_model` can read back (see
    the module docstring).

    Args:
        model: a Keras model of the Keras in use: plain, pruned, clustered, quantized (QAT,
            tf_keras) or a `keras_dnnopt.distillation.Distiller`.
        path: the file to write, ending in `.keras`; its folder must exist.

    Returns:
        The path written, a str.

    Raises:
        TypeError: if `model` is not a model of the Keras in use, or `path` is not a path.
        ValueError: if `path` does not end in `.keras`.
        FileNotFoundError: if the folder of `path` does not exist.

    Example:

    ```python
    save_model(pruned_model, "pruned.keras")
    restored = load_model("pruned.keras")
    ```
    """
    check_model(model)
    path = _check_path(path, must_exist=False)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"Argument `path` is in a folder that does not exist ({folder!r}); create it "
            f"first. Received: path={path!r}"
        )
    descriptor, tmp = tempfile.mkstemp(suffix=_SUFFIX, prefix=".tmp-", dir=folder)
    os.close(descriptor)
    weights_tmp = None
    try:
        model.save(tmp)
        if USING_TF_KERAS and _has_qat_layers(model):
            descriptor, weights_tmp = tempfile.mkstemp(suffix=".h5", prefix=".tmp-", dir=folder)
            os.close(descriptor)
            model.save_weights(weights_tmp, save_format="h5")
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.write(weights_tmp, _QAT_WEIGHTS)
        if not USING_TF_KERAS:
            from keras_dnnopt.compression._clustering_native import cluster_records

            records = cluster_records(model)
            if records:
                with zipfile.ZipFile(tmp, "a") as archive:
                    archive.writestr(_CLUSTERS, json.dumps(records))
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, weights_tmp):
            if leftover is not None and os.path.exists(leftover):
                os.remove(leftover)
    return path


def _scopes():
    """TF-MOT's deserialization scopes (tf_keras), nested, as one context manager."""
    stack = contextlib.ExitStack()
    if USING_TF_KERAS:
        from keras_dnnopt.compression._tfmot_support import import_tfmot

        tfmot = import_tfmot()
        stack.enter_context(tfmot.quantization.keras.quantize_scope())
        stack.enter_context(tfmot.sparsity.keras.prune_scope())
        stack.enter_context(tfmot.clustering.keras.cluster_scope())
    return stack


def _strip_build_configs(config):
    # The functional rebuild builds every layer by calling it; a `build_config` makes the
    # loader build TF-MOT's quantize layers a second time (see the module docstring).
    if isinstance(config, dict):
        if config.get("class_name") in _QAT_CLASSES:
            config.pop("build_config", None)
        for value in config.values():
            _strip_build_configs(value)
    elif isinstance(config, list):
        for value in config:
            _strip_build_configs(value)


@contextlib.contextmanager
def _tfmot_build_fixes():
    """Makes TF-MOT's quantize layers build on load as they were built by `quantize_apply`.

    For a QAT archive written by a plain `model.save` (no `keras_dnnopt_weights.h5`), for
    the duration of the load only: `QuantizeLayer.build` runs once (the loader's
    `build_from_config` and the functional rebuild both call it), and `QuantizeWrapperV2`
    builds its inner layer before adopting its weights, as on a `quantize_apply` copy, so the
    variable lists match the saved ones. Patched here because TF-MOT has no hook for it; the
    original methods are restored on exit.
    """
    from tensorflow_model_optimization.python.core.quantization.keras import (
        quantize_layer,
        quantize_wrapper,
    )

    layer_cls, wrapper_cls = quantize_layer.QuantizeLayer, quantize_wrapper.QuantizeWrapperV2
    layer_build, wrapper_build = layer_cls.build, wrapper_cls.build

    def build_once(self, input_shape):
        if getattr(self, "optimizer_step", None) is not None:
            return
        layer_build(self, input_shape)
        self.built = True

    def build_inner_first(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        wrapper_build(self, input_shape)

    layer_cls.build, wrapper_cls.build = build_once, build_inner_first
    try:
        yield
    finally:
        layer_cls.build, wrapper_cls.build = layer_build, wrapper_build


def _load_qat(archive, path, compile, safe_mode):
    config = json.loads(archive.read("config.json"))
    compile_config = config.pop("compile_config", None)
    _strip_build_configs(config)
    model = keras.saving.deserialize_keras_object(config, safe_mode=safe_mode)
    with tempfile.TemporaryDirectory() as folder:
        archive.extract(_QAT_WEIGHTS, folder)
        model.load_weights(os.path.join(folder, _QAT_WEIGHTS))
    if compile and compile_config:
        model.compile_from_config(compile_config)
    return model


def load_model(path, compile=True, safe_mode=True):
    """Loads a `.keras` file written by `save_model` (or `model.save`), any model kind.

    Every keras_dnnopt class is registered first, and on tf_keras TF-MOT's pruning,
    clustering and quantization scopes are entered, so pruned, clustered and QAT models load
    with no `custom_objects` and no scope from the caller.

    Args:
        path: the `.keras` file to read.
        compile: whether to compile the model as it was saved. Defaults to True.
        safe_mode: Keras' safe mode (refuses to load `Lambda` bytecode). Defaults to True.

    Returns:
        The Keras model.

    Raises:
        TypeError: if `path` is not a path.
        ValueError: if `path` does not end in `.keras`, or the file is not a readable Keras
            archive (corrupt, truncated, or some other file renamed).
        FileNotFoundError: if there is no file at `path`.

    Example:

    ```python
    restored = load_model("qat.keras")
    ```
    """
    path = _check_path(path, must_exist=True)
    import_registering_modules()
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"Argument `path` is not a Keras `.keras` archive (a zip file): it is corrupt, "
            f"truncated or another kind of file. Received: path={path!r}"
        )
    try:
        with _scopes():
            with zipfile.ZipFile(path) as archive:
                if USING_TF_KERAS and _QAT_WEIGHTS in archive.namelist():
                    return _load_qat(archive, path, compile, safe_mode)
                config = archive.read("config.json").decode("utf-8")
                names = archive.namelist()
                clusters = json.loads(archive.read(_CLUSTERS)) if _CLUSTERS in names else []
            if USING_TF_KERAS and any(f'"{name}"' in config for name in _QAT_CLASSES):
                with _tfmot_build_fixes():
                    return keras.models.load_model(path, compile=compile, safe_mode=safe_mode)
            model = keras.models.load_model(path, compile=compile, safe_mode=safe_mode)
    except (zipfile.BadZipFile, KeyError, OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"Argument `path` could not be read as a Keras model ({type(error).__name__}: "
            f"{error}). Received: path={path!r}"
        ) from error
    if clusters:
        # Keras 3 clustering is a variable constraint, which a `.keras` file does not keep.
        from keras_dnnopt.compression._clustering_native import restore_clusters

        restore_clusters(model, clusters)
    return model
