"""What the benchmark scripts share: the digits split and the line that describes the machine.

The scripts run as `python benchmarks/<script>.py`, so this folder is on `sys.path` and
`import _common` finds this module.
"""

import os
import platform
import shlex
import sys


def digits_split(test_size=0.3, random_state=0):
    """scikit-learn's bundled digits (1797 real 8x8 grayscale images, pixels / 16, shape
    (8, 8, 1)), split stratified: `x_train, x_test, y_train, y_test`."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    return train_test_split(x, y, test_size=test_size, stratify=y, random_state=random_state)


def fast_batchnorm(model, momentum=0.9):
    """Sets the momentum of every `BatchNormalization` layer of `model` (returned).

    The benchmarks train a few hundred steps: with Keras' default momentum, 0.99, the moving
    statistics would still lag the weights at test time."""
    from keras_dnnopt.backend import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    return model


def litert_version():
    """The installed LiteRT (`ai-edge-litert`) version, or "not installed"."""
    try:
        from importlib.metadata import version

        return version("ai-edge-litert")
    except Exception:  # noqa: BLE001 (any failure means: not there)
        return "not installed"


def machine_line():
    """`x86_64, 2 CPUs, devices ['CPU'], Python 3.11.7, load average 0.4` (the load when
    it is called)."""
    from keras_dnnopt.backend import tf

    devices = [device.device_type for device in tf.config.list_physical_devices()]
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, devices "
            f"{devices}, Python {platform.python_version()}{load}")


def print_footer(after_command=""):
    """Prints the exact command (with `TF_USE_LEGACY_KERAS=1` when set) and the machine,
    so that a result in `docs/benchmarks.md` says how to reproduce it."""
    env = "TF_USE_LEGACY_KERAS=1 " if os.environ.get("TF_USE_LEGACY_KERAS") == "1" else ""
    print(f"\nCommand: `{env}python {shlex.join(sys.argv)}`{after_command}")
    print(f"Machine: {machine_line()}", flush=True)
