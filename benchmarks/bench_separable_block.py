"""Full convolution versus depthwise-separable block: parameters, MACs and CPU latency.

For each number of filters N and kernel size k, compares a `Conv2D(N, k)` with a
depthwise k x k + pointwise 1x1 pair (no batch norm, no bias, Cin = N, "same" padding)
on an S x S input: parameters and MACs from `keras_dnnopt.profile`, the theoretical
MAC ratio 1/N + 1/k^2 against the measured one, and the median batch-1 CPU latency
from `keras_dnnopt.measure_latency` and its ratio. Prints a Markdown table, the exact
command and the versions.

Run (Keras 3; add TF_USE_LEGACY_KERAS=1 for tf_keras):

    python benchmarks/bench_separable_block.py
    python benchmarks/bench_separable_block.py --spatial 56 --filters 32 64 --kernels 3 5 7
"""

import argparse
import os
import platform
import shlex
import sys
from fractions import Fraction

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_dnnopt.backend import KERAS_NAME, keras, tf  # noqa: E402
from keras_dnnopt.profiling import measure_latency, profile  # noqa: E402


def full_conv(spatial, filters, kernel):
    inputs = keras.Input(shape=(spatial, spatial, filters))
    outputs = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False)(inputs)
    return keras.Model(inputs, outputs, name=f"conv_{filters}_{kernel}")


def separable_block(spatial, filters, kernel):
    inputs = keras.Input(shape=(spatial, spatial, filters))
    x = keras.layers.DepthwiseConv2D(kernel, padding="same", use_bias=False)(inputs)
    outputs = keras.layers.Conv2D(filters, 1, use_bias=False)(x)
    return keras.Model(inputs, outputs, name=f"separable_{filters}_{kernel}")


def run(args):
    rows = []
    for filters in args.filters:
        for kernel in args.kernels:
            full = full_conv(args.spatial, filters, kernel)
            sep = separable_block(args.spatial, filters, kernel)
            pf, ps = profile(full), profile(sep)
            with tf.device("/CPU:0"):
                lf = measure_latency(full, warmup=args.warmup, runs=args.runs)
                ls = measure_latency(sep, warmup=args.warmup, runs=args.runs)
            theory = Fraction(1, filters) + Fraction(1, kernel**2)
            measured = Fraction(ps.macs, pf.macs)
            rows.append((filters, kernel, pf.params, ps.params, pf.macs, ps.macs,
                         float(theory), float(measured), measured == theory,
                         lf.median_ms, ls.median_ms, ls.median_ms / lf.median_ms))
            print(f"  done N={filters} k={kernel}", file=sys.stderr, flush=True)
    return rows


def markdown(rows, args):
    head = ("| N | k | params conv | params sep | MACs conv | MACs sep | 1/N+1/k² | "
            "MAC ratio | exact | conv ms | sep ms | latency ratio |")
    lines = [head, "|" + "---|" * 12]
    for (n, k, pc, psep, mc, ms, theory, measured, exact, tc, ts, tr) in rows:
        lines.append(
            f"| {n} | {k} | {pc:,} | {psep:,} | {mc / 1e6:,.1f}M | {ms / 1e6:,.2f}M | "
            f"{theory:.4f} | {measured:.4f} | {'yes' if exact else 'NO'} | {tc:.2f} | "
            f"{ts:.2f} | {tr:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spatial", type=int, default=32, help="input height and width")
    parser.add_argument("--filters", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--kernels", type=int, nargs="+", default=[3, 5, 7])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args(argv)
    rows = run(args)
    print(f"Input {args.spatial}x{args.spatial}xN, Cin = N, 'same' padding, no bias/BN; "
          f"latency: median of {args.runs} batch-1 forward passes on CPU after "
          f"{args.warmup} warm-up (tf.function).\n")
    print(markdown(rows, args))
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    legacy = os.environ.get("TF_USE_LEGACY_KERAS")
    print(f"\nCommand: {'TF_USE_LEGACY_KERAS=' + legacy + ' ' if legacy else ''}{command}")
    print(f"{KERAS_NAME}, TensorFlow {tf.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()} with {os.cpu_count()} CPU cores ({_cpu_name()})")


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
