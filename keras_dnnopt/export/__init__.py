"""Export and measurement: Keras models to `.tflite` files, float or quantized, on both
Kerases, and the numbers that show what the file is worth.

- `export_tflite(model, path, quantization=...)`: float, dynamic-range, float16, int8
  or full-integer files, written atomically, with pruning/clustering wrappers removed.
- `TFLiteModel(path).predict(x)`: runs a file through LiteRT, float in and float out.
- `save_model(model, path)` / `load_model(path)`: one atomic `.keras` round trip for every
  model the package makes (plain, pruned, clustered, QAT on tf_keras, the `Distiller`).
- `evaluate_tflite` (accuracy, loss), `compare_outputs` (agreement with the Keras model),
  `benchmark_tflite` (latency) and `file_sizes` (raw and gzipped bytes).
"""

from keras_dnnopt.export.benchmark import FileSizes, TFLiteLatency, benchmark_tflite, file_sizes
from keras_dnnopt.export.evaluate import OutputComparison, compare_outputs, evaluate_tflite
from keras_dnnopt.export.runner import TFLiteModel
from keras_dnnopt.export.saving import load_model, save_model
from keras_dnnopt.export.tflite import QUANTIZATION_MODES, ExportResult, export_tflite

__all__ = [
    "export_tflite",
    "ExportResult",
    "QUANTIZATION_MODES",
    "TFLiteModel",
    "evaluate_tflite",
    "compare_outputs",
    "OutputComparison",
    "benchmark_tflite",
    "TFLiteLatency",
    "file_sizes",
    "FileSizes",
    "save_model",
    "load_model",
]
