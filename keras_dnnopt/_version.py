"""The package version, in a module of its own so that anything can read it without
importing the package root (and TensorFlow with it)."""

__version__ = "0.1.0"
