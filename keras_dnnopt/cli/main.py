"""`dnnopt`: the keras_dnnopt command line.

    dnnopt [--debug] [--verbose] COMMAND [options]

Commands, one module each under `keras_dnnopt/cli/` (`dnnopt COMMAND --help` documents
every option, its default and an example):

    dnnopt optimize ...                    the whole optimization chain on a dataset
                                           (`cli/optimize.py`)
    dnnopt info                            which TensorFlow and Keras are in use, and how
                                           to switch (`cli/info.py`)
    dnnopt profile MODEL [options]         the profiler's table for a saved model file
                                           (.keras / .h5) or a builder name
                                           (mobilenet_v1, mobilenet_v2, plain_cnn)
    dnnopt export MODEL OUT.tflite [opts]  a saved model to a .tflite file, float or
                                           quantized (`--quantization int8 --data digits`),
                                           optionally scored under LiteRT (`--evaluate`)
    dnnopt benchmark FILE.tflite [opts]    LiteRT latency and file size (raw, gzipped)
    dnnopt lr-find [options]               the learning-rate range test on a dataset, its
                                           suggested learning rate and its plot

What they share (argument types, model and data loading, the help formatter, the quiet
TensorFlow start-up) is in `cli/_common.py`; this module only builds the parser and runs a
command. Building the parser imports no TensorFlow, so `dnnopt --help` and `dnnopt COMMAND
--help` answer at once; TensorFlow is imported when a command runs.

Global options, given before the command:

- `--debug`: print the full traceback of an error (also accepted after the command;
  `DNNOPT_TRACEBACK=1` in the environment is an alias).
- `--verbose`: show TensorFlow's start-up log lines (oneDNN, cudart, cpu_feature_guard,
  absl). By default they are hidden, unless `TF_CPP_MIN_LOG_LEVEL` is set, whose value is
  then kept as it is. (`dnnopt optimize --verbose {auto,bars,lines,quiet}`, after the
  command, is that command's own option for its training output.)

Exit status and stderr:

- 0: success.
- 2: bad input (an unknown dataset, an output folder that cannot be written, a missing or
  corrupt `.keras`/`.tflite` file, a bad number, flags that contradict each other): one
  line `dnnopt COMMAND: error: MESSAGE`, the message naming the argument and the value, as
  argparse's own errors (no usage block, no traceback). Commands raise
  `keras_dnnopt.cli._errors.UsageError` for these; a `ValueError` (the package's error for
  a bad argument) is shown the same way.
- 1: a failure while running that is not the input's fault: a missing optional
  dependency (the message names the pip extra), an `OSError` while writing, a failed stage
  (one line `dnnopt COMMAND: error: MESSAGE`); or an unexpected internal error, one line
  `dnnopt COMMAND: internal error: TYPE: MESSAGE (run with --debug for the traceback)`.
- 130: interrupted (Ctrl-C).

With `--debug` the traceback is printed before that line, and the exit status is the same.
"""

import argparse
import os
import sys
import traceback

from keras_dnnopt.cli import benchmark, export, info, lr_find, profile
from keras_dnnopt.cli._common import (  # noqa: F401  (the lists, re-exported for tests)
    BUILDERS,
    DATASETS,
    QUANTIZATION_MODES,
    SUGGESTION_METHODS,
    start_tensorflow,
)
from keras_dnnopt.cli._errors import UsageError

# The commands after `optimize`, in the order of the listing.
COMMANDS = (info, profile, export, benchmark, lr_find)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, its errors as one line `PROG: error: MESSAGE` (no usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}\n")


def _add_debug_option(parser, default):
    if "--debug" not in parser._option_string_actions:
        parser.add_argument("--debug", action="store_true", default=default,
                            help="print the full traceback of an error")


def _build_parser():
    from keras_dnnopt.cli.optimize import add_parser as add_optimize_parser

    parser = _Parser(
        prog="dnnopt",
        description="keras_dnnopt: make Keras models smaller, faster and better trained.",
        epilog="Global options go before the command: `dnnopt --verbose info`. Run "
               "`dnnopt COMMAND --help` for the options of a command.",
    )
    from keras_dnnopt._version import __version__

    parser.add_argument("--version", action="version", version=f"keras_dnnopt {__version__}")
    _add_debug_option(parser, default=False)
    parser.add_argument("--verbose", dest="tf_logs", action="store_true",
                        help="show TensorFlow's start-up log lines (hidden by default "
                             "unless TF_CPP_MIN_LOG_LEVEL is set)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    subparsers = [add_optimize_parser(sub)]  # first in the listing: what most people want
    subparsers += [command.add_parser(sub) for command in COMMANDS]
    for subparser in subparsers:
        # After the command too; SUPPRESS keeps a global --debug given before it.
        _add_debug_option(subparser, default=argparse.SUPPRESS)
    parser.command_parsers = dict(sub.choices)
    return parser


def _one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


def main(argv=None):
    """Entry point of the `dnnopt` console script.

    Args:
        argv: the arguments (without the program name), or None for `sys.argv[1:]`.

    Returns:
        The exit status: 0 on success, 1 for a failure while running or an internal error
        (one line on stderr). Bad input raises `SystemExit(2)` after its one line
        `dnnopt COMMAND: error: ...`, as argparse does for its own errors.
    """
    parser = _build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # reported by the command's parser, so that the line names the command
        parser.command_parsers[args.command].error(
            f"unrecognized arguments: {' '.join(extras)}")
    prog = f"dnnopt {args.command}"
    debug = bool(getattr(args, "debug", False)) or os.environ.get("DNNOPT_TRACEBACK") == "1"

    def report(kind, error):
        if debug:
            traceback.print_exc()
        print(f"{prog}: {kind}: {_one_line(error)}", file=sys.stderr)

    try:
        start_tensorflow(verbose=args.tf_logs)
        return args.func(args)
    except (UsageError, ValueError) as error:
        report("error", error)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (ImportError, OSError) as error:
        report("error", error)
        return 1
    except Exception as error:  # noqa: BLE001  (an internal error: one line, exit 1)
        from keras_dnnopt.pipeline.runner import StageFailed

        if isinstance(error, StageFailed):
            report("error", error)
            return 1
        if debug:
            traceback.print_exc()
        print(f"{prog}: internal error: {type(error).__name__}: {_one_line(error)} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
