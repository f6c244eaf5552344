"""The `dnnopt optimize` chain: data -> baseline -> student -> distillation -> pruning ->
quantization -> TFLite export, with per-stage resume and a report card; under a `Budget`,
the search for the most accurate model within it (`pipeline.search`)."""

from keras_dnnopt.pipeline.budget import Budget
from keras_dnnopt.pipeline.config import (
    STAGES,
    ConfigError,
    defaults,
    load_config,
    validate,
)
from keras_dnnopt.pipeline.plots import plot_gradcam_grid, plot_pareto, plot_training_curves
from keras_dnnopt.pipeline.report import ratio_rows, write_report
from keras_dnnopt.pipeline.report_data import ReportData
from keras_dnnopt.pipeline.runner import BudgetNotMet, StageFailed, optimize

__all__ = [
    "STAGES",
    "Budget",
    "BudgetNotMet",
    "ConfigError",
    "ReportData",
    "StageFailed",
    "defaults",
    "load_config",
    "optimize",
    "plot_gradcam_grid",
    "plot_pareto",
    "plot_training_curves",
    "ratio_rows",
    "validate",
    "write_report",
]
