"""Does `dnnopt optimize --dataset digits` finish in 10 minutes on a 2-core CPU?

Runs the README's quickstart command, `dnnopt optimize --dataset digits --out OUT`, as a
fresh process in a new output folder (so no stage is reused), timing the whole command
from start to exit (Python and TensorFlow start-up included). Then prints, from the run's
`metrics.json`, each stage's time and figures, and the final model's ratios to the
baseline: what the README quotes.

Run (Keras 3; add TF_USE_LEGACY_KERAS=1 for tf_keras, which does QAT instead of PTQ):

    python benchmarks/bench_optimize.py
    python benchmarks/bench_optimize.py --out docs/example_report/keras3 --keep
"""

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

TARGET_SECONDS = 600


def _fmt(value, kind):
    if value is None:
        return "—"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "bytes":
        return f"{value / 1024:.1f} KiB"
    if kind == "ms":
        return f"{value:.3f}"
    if kind == "count":
        return f"{int(value):,}"
    return str(value)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None,
                        help="the run's output folder (default: a temporary folder); it is "
                             "emptied first")
    parser.add_argument("--keep", action="store_true", help="keep the output folder")
    args = parser.parse_args(argv)

    out = args.out or tempfile.mkdtemp(prefix="bench_optimize_")
    if os.path.exists(out):
        shutil.rmtree(out)
    dnnopt = shutil.which("dnnopt") or os.path.join(os.path.dirname(sys.executable), "dnnopt")
    command = [dnnopt, "optimize", "--dataset", "digits", "--out", out, "--verbose", "lines"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, check=False)
    seconds = time.perf_counter() - started
    status_lines = [line for line in completed.stdout.splitlines() if line.startswith("[")]
    if completed.returncode != 0:
        print(completed.stdout[-5000:])
        raise SystemExit(f"dnnopt optimize failed with exit code {completed.returncode}")

    metrics = json.load(open(os.path.join(out, "metrics.json"), encoding="utf-8"))
    keras_name = metrics["environment"]["keras"]
    print(f"## `dnnopt optimize --dataset digits` ({keras_name})\n")
    print("| Stage | Time (s) | Accuracy | Macro F1 | Params | Size | Size gz | Latency (ms) |")
    print("|:--|--:|--:|--:|--:|--:|--:|--:|")
    for row in metrics["stages"]:
        print(f"| {row['title']} | {row['seconds']:.1f} | {_fmt(row.get('accuracy'), 'pct')} | "
              f"{_fmt(row.get('f1_macro'), 'pct')} | {_fmt(row.get('params'), 'count')} | "
              f"{_fmt(row.get('size_bytes'), 'bytes')} | "
              f"{_fmt(row.get('size_gzip_bytes'), 'bytes')} | "
              f"{_fmt(row.get('latency_ms'), 'ms')} |")
    summary = metrics["summary"]
    print()
    verdict = "met" if seconds <= TARGET_SECONDS else "MISSED"
    print(f"- whole command, start to exit: {seconds:.0f} s (target <= {TARGET_SECONDS} s: "
          f"{verdict})")
    print(f"- final vs baseline: size {summary['size_ratio']:.3f}x "
          f"(gzipped {summary['size_gzip_ratio']:.3f}x), accuracy "
          f"{summary['accuracy_change']:+.2f} points, LiteRT latency at batch 1 "
          f"{summary['latency_ratio']:.3f}x")
    print("\nStage lines:\n")
    for line in status_lines:
        print(f"    {line}")
    legacy = os.environ.get("TF_USE_LEGACY_KERAS")
    prefix = f"TF_USE_LEGACY_KERAS={legacy} " if legacy else ""
    print(f"\nCommand: `{prefix}python {' '.join(shlex.quote(a) for a in sys.argv)}`")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python "
          f"{platform.python_version()}; {keras_name}, TensorFlow "
          f"{metrics['environment']['tensorflow']}")
    if not args.keep and args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
