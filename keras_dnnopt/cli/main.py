"""`dnnopt`: the keras_dnnopt command line.

Subcommands:
    dnnopt info                      which TensorFlow and Keras are in use, and how to switch
    dnnopt profile MODEL [options]   the profiler's table for a saved model file
                                     (.keras / .h5) or a builder name (mobilenet_v1,
                                     mobilenet_v2, plain_cnn)
"""

import argparse
import json
import os
import sys

BUILDERS = ("mobilenet_v1", "mobilenet_v2", "plain_cnn")


def _parse_shape(text):
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(
            f"--input-shape must be comma-separated positive integers such as 224,224,3. "
            f"Received: {text!r}"
        )
    return shape


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="dnnopt",
        description="keras_dnnopt: make Keras models smaller, faster and better trained.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    info = sub.add_parser("info", help="Show TensorFlow and the Keras in use.")
    info.set_defaults(func=_cmd_info)

    prof = sub.add_parser(
        "profile",
        help="Print parameters, MACs and weight bytes per layer of a model.",
        description=(
            "Profile a saved model file (.keras or .h5) or one of the package's builders. "
            "MACs are multiply-adds per sample."
        ),
    )
    prof.add_argument("model", help=f"a model file, or a builder name: {', '.join(BUILDERS)}")
    prof.add_argument("--input-shape", type=_parse_shape, default=(224, 224, 3),
                      help="input shape for a builder, e.g. 224,224,3 (default: 224,224,3)")
    prof.add_argument("--num-classes", type=int, default=1000,
                      help="classes for a builder (default: 1000)")
    prof.add_argument("--alpha", type=float, default=1.0, help="width multiplier for a builder")
    prof.add_argument("--json", action="store_true", help="print the profile as JSON")
    prof.set_defaults(func=_cmd_profile)
    return parser


def _cmd_info(args):
    from keras_dnnopt.backend import KERAS_NAME, tf

    print(f"keras_dnnopt {_version()}")
    print(f"TensorFlow {tf.__version__}")
    print(f"Keras in use: {KERAS_NAME}")
    print("Switch with TF_USE_LEGACY_KERAS=1 (tf_keras) or leave it unset (Keras 3).")
    return 0


def _version():
    from keras_dnnopt import __version__

    return __version__


def _load_model(args):
    from keras_dnnopt import models
    from keras_dnnopt.backend import keras

    if args.model in BUILDERS:
        builder = getattr(models, args.model)
        return builder(input_shape=args.input_shape, num_classes=args.num_classes,
                       alpha=args.alpha)
    if not os.path.exists(args.model):
        raise SystemExit(
            f"dnnopt profile: argument MODEL must be a model file or one of "
            f"{', '.join(BUILDERS)}. Received: {args.model!r} (no such file)"
        )
    return keras.models.load_model(args.model, compile=False)


def _cmd_profile(args):
    from keras_dnnopt import profile

    result = profile(_load_model(args))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result)
    return 0


def main(argv=None):
    """Entry point of the `dnnopt` console script."""
    args = _build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
