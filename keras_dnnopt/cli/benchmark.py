"""`dnnopt benchmark`: LiteRT latency and file size of a .tflite file."""

import json

from keras_dnnopt.cli._common import add_subcommand, existing_file, non_negative_int, positive_int
from keras_dnnopt.cli._errors import UsageError


def add_parser(sub):
    """Registers `dnnopt benchmark` on an argparse subparsers object."""
    bench = add_subcommand(
        sub, "benchmark", run,
        help="Measure the LiteRT latency and the size of a .tflite file.",
        description="Time inferences of a .tflite file under the LiteRT interpreter "
                    "(keras_dnnopt.export.benchmark_tflite, random inputs) and report its "
                    "size on disk, raw and gzipped (keras_dnnopt.export.file_sizes).",
        epilog="Examples:\n  dnnopt benchmark model_int8.tflite\n"
               "  dnnopt benchmark model.tflite --threads 4 --runs 200 --json",
    )
    bench.add_argument("file", metavar="FILE.tflite", type=existing_file,
                       help="the .tflite file")
    bench.add_argument("--threads", metavar="N", type=positive_int, default=1,
                       help="interpreter threads")
    bench.add_argument("--runs", metavar="N", type=positive_int, default=50,
                       help="timed inferences")
    bench.add_argument("--warmup", metavar="N", type=non_negative_int, default=5,
                       help="untimed inferences before the timed ones")
    bench.add_argument("--batch-size", metavar="N", type=positive_int, default=1,
                       help="samples per inference (a file with a fixed batch dimension "
                            "takes only its own)")
    bench.add_argument("--json", action="store_true",
                       help="print the latency statistics and sizes as JSON")
    return bench


def run(args):
    from keras_dnnopt.export import TFLiteModel, benchmark_tflite, file_sizes

    try:
        TFLiteModel(args.file)  # a file that is not a .tflite flatbuffer: bad input
    except ImportError:
        raise
    except Exception as error:  # the interpreter raises ValueError or RuntimeError
        detail = " ".join(str(error).split())[:300]
        raise UsageError(f"argument FILE.tflite: {args.file!r} is not a valid .tflite file "
                         f"({detail})") from error
    sizes = file_sizes(args.file)
    latency = benchmark_tflite(args.file, threads=args.threads, runs=args.runs,
                               warmup=args.warmup, batch_size=args.batch_size)
    if args.json:
        data = {"path": args.file, **latency.to_dict(), **sizes.to_dict(),
                "compression_ratio": sizes.compression_ratio}
        print(json.dumps(data, indent=2))
        return 0

    def ms(value):  # 4 significant digits: tiny models run in microseconds
        return f"{value:.4g}"

    rows = [
        ("median latency", f"{ms(latency.median_ms)} ms"),
        ("p10 / p90", f"{ms(latency.p10_ms)} / {ms(latency.p90_ms)} ms"),
        ("mean +- std", f"{ms(latency.mean_ms)} +- {ms(latency.std_ms)} ms"),
        ("min / max", f"{ms(latency.min_ms)} / {ms(latency.max_ms)} ms"),
        ("throughput", f"{latency.throughput:,.1f} samples/s"),
        ("size", f"{sizes.size_bytes:,} bytes"),
        ("gzipped", f"{sizes.gzipped_size_bytes:,} bytes ({sizes.compression_ratio:.2f}x)"),
    ]
    print(f"{args.file}: {latency.runtime}, {latency.threads} thread(s), batch "
          f"{latency.batch_size}, {latency.runs} runs after {latency.warmup} warm-up")
    width = max(len(name) for name, _ in rows)
    value_width = max(len(value) for _, value in rows)
    print(f"| {'metric'.ljust(width)} | {'value'.rjust(value_width)} |")
    print(f"|{'-' * (width + 2)}|{'-' * (value_width + 1)}:|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value.rjust(value_width)} |")
    return 0
