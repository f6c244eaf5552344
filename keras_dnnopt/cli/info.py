"""`dnnopt info`: the TensorFlow and the Keras in use, and how to switch."""

from keras_dnnopt.cli._common import add_subcommand


def add_parser(sub):
    """Registers `dnnopt info` on an argparse subparsers object."""
    return add_subcommand(sub, "info", run, help="Show TensorFlow and the Keras in use.",
                          description="Show the TensorFlow and Keras versions in use, and how "
                                      "to switch between Keras 3 and tf_keras.",
                          epilog="Example:\n  TF_USE_LEGACY_KERAS=1 dnnopt info")


def run(args):
    from keras_dnnopt._version import __version__
    from keras_dnnopt.backend import KERAS_NAME, tf

    print(f"keras_dnnopt {__version__}")
    print(f"TensorFlow {tf.__version__}")
    print(f"Keras in use: {KERAS_NAME}")
    print("Switch with TF_USE_LEGACY_KERAS=1 (tf_keras) or leave it unset (Keras 3).")
    return 0
