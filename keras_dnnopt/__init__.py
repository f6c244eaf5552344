"""keras_dnnopt: make Keras models smaller, faster and better trained, on Keras 3 and tf_keras.

`import keras_dnnopt` is cheap: it imports no TensorFlow and no subpackage. Each name below
is imported on first use (PEP 562 `__getattr__`), so `keras_dnnopt.models.mobilenet_v1`
works as before, and `dnnopt --help` answers without TensorFlow. The package's
serializable classes (layers, schedules, losses, the Distiller, the compression wrappers)
are therefore registered with Keras only once their module is imported: to load a saved
model holding them, use `keras_dnnopt.load_model(path)` (it imports every registering
module and handles TF-MOT's wrappers), and `keras_dnnopt.save_model(model, path)` to save
one, rather than relying on `import keras_dnnopt` before `keras.models.load_model`.

The Keras in use follows `tf.keras` (see `keras_dnnopt.backend`): Keras 3 by default, tf_keras
when `TF_USE_LEGACY_KERAS=1` is set before TensorFlow is imported.

The whole public surface:

- `keras_dnnopt.layers`: `SeparableConvBlock`, `InvertedResidualBlock`, `SqueezeExcite`,
  `ConvBlock`.
- `keras_dnnopt.models`: `mobilenet_v1`, `mobilenet_v2`, `plain_cnn`, `separable_variant`, `mlp`,
  `fold_output_rescaling`.
- `keras_dnnopt.profiling`: `profile`, `measure_latency` (also re-exported here).
- `keras_dnnopt.load_model`, `keras_dnnopt.save_model` (from `keras_dnnopt.export.saving`):
  save and load any model the package makes, on both Kerases.
- `keras_dnnopt.keras_flavour()` (from `keras_dnnopt.backend`): "keras3" or "tf_keras".
- `keras_dnnopt.schedules`: warm-up cosine, restarts, step, exponential, polynomial, one-cycle,
  cyclical schedules and `scale_learning_rate`.
- `keras_dnnopt.callbacks`: `LRFinder`, `LearningRateMonitor`, `OneCycleMomentum`,
  `GradientNormMonitor`, `ThroughputMonitor`.
- `keras_dnnopt.distillation`: `Distiller`, `FeatureMatch`, `cache_teacher_outputs` and the losses.
- `keras_dnnopt.compression`: `prune`, `PruningCallback`, `strip_pruning`, `sparsity_report`
  (both Kerases: TF-MOT on tf_keras, native on Keras 3), `quantize` (QAT and PQAT/CQAT/PCQAT,
  tf_keras), `cluster`, `strip_clustering` (both Kerases).
- `keras_dnnopt.export`: `export_tflite`, `TFLiteModel`, `evaluate_tflite`, `compare_outputs`,
  `benchmark_tflite`, `file_sizes`.
- `keras_dnnopt.data`: `load_dataset`, `deduplicate`, `stratified_split`, `adapt_normalizer`,
  `augmentation_layers`, `make_pipeline`.
- `keras_dnnopt.evaluation`: `evaluate_report`, `F1Score`, `RootMeanSquaredError`.
- `keras_dnnopt.tuning`: `MobileNetHyperModel`, `tune`, `RandomSearch`/`Hyperband`/
  `BayesianOptimization` (keras-tuner, bridged to accept tf_keras models too), `cross_validate`.
- `keras_dnnopt.distribute`: `get_strategy`, `split_cpu`, mixed precision (`enable_mixed_precision`,
  `float32_output`), batch and learning-rate scaling, `fit_distributed` (multi-worker on Keras 3).
- `keras_dnnopt.visualization`: `grad_cam`, `find_last_conv_layer`, `saliency_map`,
  `overlay_heatmap`, `plot_history`, `plot_schedule`, `plot_confusion_matrix`, `plot_sparsity`,
  `plot_lr_finder`.
- `keras_dnnopt.pipeline`: `optimize` and `load_config`, the chain behind `dnnopt optimize`
  (data, baseline, student, distillation, pruning, quantization, TFLite export) and its report
  card (`write_report`).
"""

import importlib

from keras_dnnopt._version import __version__

_SUBPACKAGES = (
    "callbacks",
    "compression",
    "data",
    "distillation",
    "distribute",
    "evaluation",
    "export",
    "layers",
    "models",
    "pipeline",
    "profiling",
    "schedules",
    "tuning",
    "visualization",
)
# Names re-exported here -> the module that defines them.
_FUNCTIONS = {
    "keras_flavour": "keras_dnnopt.backend",
    "load_model": "keras_dnnopt.export.saving",
    "measure_latency": "keras_dnnopt.profiling",
    "profile": "keras_dnnopt.profiling",
    "save_model": "keras_dnnopt.export.saving",
}

__all__ = sorted(["__version__", *_SUBPACKAGES, *_FUNCTIONS])


def __getattr__(name):
    """Imports a subpackage or a re-exported function on first use (PEP 562)."""
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"keras_dnnopt.{name}")
    elif name in _FUNCTIONS:
        module = getattr(importlib.import_module(_FUNCTIONS[name]), name)
    else:
        raise AttributeError(f"module 'keras_dnnopt' has no attribute {name!r}")
    globals()[name] = module
    return module


def __dir__():
    return sorted(set(globals()) | set(__all__))
