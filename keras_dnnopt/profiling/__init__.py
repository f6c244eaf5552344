"""Profiling: parameters, MACs and weight bytes per layer (`profile`), and latency
(`measure_latency`)."""

from keras_dnnopt.profiling.latency import LatencyResult, measure_latency
from keras_dnnopt.profiling.profiler import LayerProfile, ModelProfile, profile

__all__ = ["profile", "ModelProfile", "LayerProfile", "measure_latency", "LatencyResult"]
