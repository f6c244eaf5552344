"""Evaluation: reports of classification and regression metrics for Keras models and TFLite
files, and streaming metrics for `compile`, on Keras 3 and tf_keras.

- `evaluate_report`, `EvaluationReport`: accuracy, precision, recall, F1 (macro and per
  class) and the confusion matrix; or MSE, RMSE, MAE and R^2.
- `F1Score`, `RootMeanSquaredError`: registered, serializable streaming metrics.
"""

from keras_dnnopt.evaluation.metrics import F1Score, RootMeanSquaredError
from keras_dnnopt.evaluation.report import TASKS, EvaluationReport, evaluate_report

__all__ = [
    "TASKS",
    "EvaluationReport",
    "F1Score",
    "RootMeanSquaredError",
    "evaluate_report",
]
