"""keras_dnnopt: make Keras models smaller, faster and better trained, on Keras 3 and tf_keras.

The Keras in use follows `tf.keras` (see `keras_dnnopt.backend`): Keras 3 by default, tf_keras
when `TF_USE_LEGACY_KERAS=1` is set before TensorFlow is imported.

The whole public surface:

- `keras_dnnopt.layers`: `SeparableConvBlock`, `InvertedResidualBlock`, `SqueezeExcite`,
  `ConvBlock`.
- `keras_dnnopt.models`: `mobilenet_v1`, `mobilenet_v2`, `plain_cnn`, `separable_variant`.
- `keras_dnnopt.profiling`: `profile`, `measure_latency` (also re-exported here).
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

__version__ = "0.1.0"

from keras_dnnopt import (  # noqa: E402
    callbacks,
    compression,
    data,
    distillation,
    distribute,
    evaluation,
    export,
    layers,
    models,
    pipeline,
    profiling,
    schedules,
    tuning,
    visualization,
)
from keras_dnnopt.backend import keras_flavour  # noqa: E402
from keras_dnnopt.profiling import measure_latency, profile  # noqa: E402

__all__ = [
    "__version__",
    "callbacks",
    "compression",
    "data",
    "distillation",
    "distribute",
    "evaluation",
    "export",
    "keras_flavour",
    "layers",
    "measure_latency",
    "models",
    "pipeline",
    "profile",
    "profiling",
    "schedules",
    "tuning",
    "visualization",
]
