"""`dnnopt profile`: the profiler's table for a saved model file or a builder."""

import json

from keras_dnnopt.cli._common import (
    BUILDERS,
    add_subcommand,
    build_model,
    load_model_file,
    model_or_builder,
    parse_shape,
    positive_float,
    positive_int,
)


def add_parser(sub):
    """Registers `dnnopt profile` on an argparse subparsers object."""
    prof = add_subcommand(
        sub, "profile", run,
        help="Print parameters, MACs and weight bytes per layer of a model.",
        description="Profile a saved model file (.keras or .h5) or one of the package's "
                    "builders. MACs are multiply-adds per sample.",
        epilog="Examples:\n  dnnopt profile model.keras\n"
               "  dnnopt profile mobilenet_v2 --input-shape 96,96,3 --alpha 0.35 --json",
    )
    prof.add_argument("model", metavar="MODEL", type=model_or_builder,
                      help=f"a model file, or a builder name: {', '.join(BUILDERS)}")
    prof.add_argument("--input-shape", metavar="SHAPE", type=parse_shape, default="224,224,3",
                      help="input shape for a builder, comma-separated")
    prof.add_argument("--num-classes", metavar="N", type=positive_int, default=1000,
                      help="classes for a builder")
    prof.add_argument("--alpha", metavar="ALPHA", type=positive_float, default=1.0,
                      help="width multiplier for a builder")
    prof.add_argument("--json", action="store_true", help="print the profile as JSON")
    return prof


def run(args):
    from keras_dnnopt.profiling import profile

    if args.model in BUILDERS:
        model = build_model(args.model, args.input_shape, args.num_classes, args.alpha)
    else:
        model = load_model_file(args.model)
    result = profile(model)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result)
    return 0
