"""80% pruning from the same trained weights on both Kerases: native wrappers vs TF-MOT.

`bench_compression.py` measures 80% pruning on each Keras from a base model trained on
that Keras. Keras 3 (native wrappers) lost more than tf_keras (TF-MOT) there. This script
separates the two causes: the pruning itself, or the base model each Keras trained. For
each seed, one Keras (`--base-keras`) trains the base model exactly as
`bench_compression.py` does, with its `train_base` (mobilenet_v1 alpha 1.25, min_feature_size 2,
batch-norm momentum 0.9, 10 epochs of Adam with a cosine decay from 1e-2, batch 64) and saves its
weights; then each Keras, in its own process, loads those same weights and fine-tunes
two copies for 8 epochs (Adam, cosine decay from 1e-3):

- float + fine-tune: the copy unchanged (the reference);
- pruned 80%: `prune(target_sparsity=0.8, schedule="polynomial", end_step=80,
  frequency=10)` trained with `PruningCallback` inside a `Distiller` taught by the base
  model (KL at temperature 4, alpha 0.1), then `strip_pruning`.

Accuracy: Keras `evaluate` on the 540 test images (1 image = 0.185 points). The
fine-tuning of each Keras is seeded with the seed, but the two Kerases shuffle and round
differently, so from the same weights their runs differ by training noise alone.
Pruning on Keras 3 with the same masks, step for step, as TF-MOT on tf_keras is a test
(tests/test_pruning.py::test_native_wrappers_train_step_for_step_like_tfmot); this
measures what is left: the base model.

Run:

    python benchmarks/bench_pruning_parity.py --seeds 0 1 2
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

KERASES = {"keras3": "0", "tf_keras": "1"}  # TF_USE_LEGACY_KERAS for each


def accuracy(model, x, y):
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return 100 * model.evaluate(x, y, batch_size=256, verbose=0)[1]


def train_base(seed, path):
    """Trains the base model on the Keras of this process; saves its weights (NumPy)."""
    import numpy as np

    from _common import digits_split
    from bench_compression import build_parser
    from bench_compression import train_base as train

    x_train, x_test, y_train, y_test = digits_split()
    model = train(build_parser().parse_args([]), seed, x_train, y_train)  # its defaults
    np.savez(path, *model.get_weights())
    return {"base": accuracy(model, x_test, y_test)}


def finetune_both(seed, path):
    """Loads the saved weights; fine-tunes a float copy and an 80%-pruned distilled copy."""
    import numpy as np

    from keras_dnnopt.backend import keras
    from keras_dnnopt.compression import PruningCallback, prune, sparsity_report, strip_pruning
    from keras_dnnopt.distillation import Distiller

    from _common import digits_split
    from bench_compression import adam, base_model, copy_model

    x_train, x_test, y_train, y_test = digits_split()
    steps = 8 * -(-len(x_train) // 64)
    saved = np.load(path)
    base = base_model()
    base.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    result = {"base": accuracy(base, x_test, y_test)}

    keras.utils.set_random_seed(seed)
    copy = copy_model(base)
    copy.compile(optimizer=adam(1e-3, steps), loss="sparse_categorical_crossentropy")
    copy.fit(x_train, y_train, batch_size=64, epochs=8, verbose=0)
    result["float + ft"] = accuracy(copy, x_test, y_test)

    keras.utils.set_random_seed(seed)
    pruned = prune(base, target_sparsity=0.8, end_step=steps // 2 // 10 * 10, frequency=10)
    distiller = Distiller(base, pruned, temperature=4.0, alpha=0.1, from_logits=False)
    distiller.compile(optimizer=adam(1e-3, steps),
                      loss="sparse_categorical_crossentropy")
    distiller.fit(x_train, y_train, batch_size=64, epochs=8, verbose=0,
                  callbacks=[PruningCallback()])
    stripped = strip_pruning(pruned)
    result["pruned 80%"] = accuracy(stripped, x_test, y_test)
    result["sparsity"] = sparsity_report(stripped).overall
    return result


def run_role(role, keras_name, seed, path):
    """Runs one role in a fresh process on the given Keras; returns its JSON result."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS=KERASES[keras_name])
    command = [sys.executable, __file__, "--role", role, "--seed", str(seed), "--weights",
               path]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{role} on {keras_name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--base-keras", choices=sorted(KERASES), default="keras3",
                        help="the Keras that trains the base model (default: keras3)")
    parser.add_argument("--role", choices=["base", "finetune"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role is not None:  # a child process: one role on the Keras of its environment
        role = train_base if args.role == "base" else finetune_both
        print(json.dumps(role(args.seed, args.weights)), flush=True)
        return

    from _common import print_footer

    clock = time.perf_counter()
    rows = []
    print(f"Base models trained on {args.base_keras}; the same weights fine-tuned on both "
          "Kerases. Accuracy on the 540 test images (Keras evaluate).\n")
    print("| seed | Keras (pruning by) | base | float + ft | pruned 80% | pruned - (float + ft)"
          " |\n|---:|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            path = os.path.join(tmp, f"base_{seed}.npz")
            run_role("base", args.base_keras, seed, path)
            for keras_name, by in (("keras3", "native"), ("tf_keras", "TF-MOT")):
                r = run_role("finetune", keras_name, seed, path)
                delta = r["pruned 80%"] - r["float + ft"]
                rows.append((keras_name, delta))
                print(f"| {seed} | {keras_name} ({by}) | {r['base']:.2f}% | "
                      f"{r['float + ft']:.2f}% | {r['pruned 80%']:.2f}% "
                      f"(kernels {r['sparsity']:.1%} zero) | {delta:+.2f} |", flush=True)
    print()
    for keras_name in KERASES:
        deltas = [d for k, d in rows if k == keras_name]
        mean = sum(deltas) / len(deltas)
        print(f"{keras_name}: pruned 80% - (float + ft), mean over seeds {args.seeds}: "
              f"{mean:+.2f} points")
    print_footer(f" ({time.perf_counter() - clock:.0f} s)")


if __name__ == "__main__":
    main()
