"""Is the augmented input pipeline fast enough not to limit training?

Compares the rate at which `keras_dnnopt.data.load_dataset("digits", augment=True)`'s
training pipeline produces batches (shuffle each epoch, batch-wise RandomRotation +
RandomZoom + RandomTranslation, Normalization, prefetch) with the rate at which a small
MobileNet (`mobilenet_v1(input_shape=(8, 8, 1), num_classes=10, alpha=0.5)`, SGD with
momentum) consumes batches in `fit`. The target: the pipeline produces at least 3x as
many batches per second as training consumes.

- pipeline batches/s: iterating the training pipeline alone (repeated), after a warm-up.
- training steps/s: `fit` on one in-memory batch repeated (no input cost), after a
  warm-up of `--warmup` steps, timed from the first timed batch to the end of the epoch.
- fit on the pipeline: `fit` fed by the augmented pipeline itself, the same way; equal to
  the in-memory rate when the pipeline is not the bottleneck.
- for comparison, the same augmentation mapped per image (before batching) instead of
  per batch, which is what `make_pipeline` avoids.

Each figure is the median over `--repeats` runs (the machine is shared and noisy).
Prints a Markdown table, the exact command and the versions.

Run (Keras 3; add TF_USE_LEGACY_KERAS=1 for tf_keras):

    python benchmarks/bench_data_pipeline.py
    python benchmarks/bench_data_pipeline.py --batch-size 64 --steps 200 --repeats 5
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_dnnopt.backend import KERAS_NAME, keras, tf  # noqa: E402
from keras_dnnopt.data import default_augmentation, load_dataset  # noqa: E402
from keras_dnnopt.models import mobilenet_v1  # noqa: E402

from _common import print_footer  # noqa: E402


class _Timer(keras.callbacks.Callback):
    """Times from the start of batch `warmup` to the end of the epoch."""

    def __init__(self, warmup):
        super().__init__()
        self.warmup = warmup
        self.seconds = None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.warmup:
            self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self._start


def batches_per_second(dataset, steps, warmup):
    iterator = iter(dataset.repeat())
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps / (time.perf_counter() - start)


def fit_steps_per_second(model, dataset, steps, warmup):
    timer = _Timer(warmup)
    model.fit(dataset.repeat(), epochs=1, steps_per_epoch=warmup + steps, shuffle=False,
              verbose=0, callbacks=[timer])
    return steps / timer.seconds


def per_image_pipeline(data, batch_size, seed):
    """The same augmentation and normalisation, mapped per image before batching."""
    augment = default_augmentation(data.input_shape, seed)
    normalizer = data.normalizer

    def transform(image, label):
        image = augment(image[None], training=True)[0]
        return normalizer(image[None])[0], label

    dataset = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train)).cache()
    dataset = dataset.shuffle(len(data.x_train), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def run(args):
    keras.utils.set_random_seed(0)
    data = load_dataset("digits", validation_split=0.1, test_split=0.2,
                        batch_size=args.batch_size, augment=True, seed=0)
    model = mobilenet_v1(input_shape=data.input_shape, num_classes=data.num_classes, alpha=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    x_batch, y_batch = next(iter(data.train))
    in_memory = tf.data.Dataset.from_tensors((x_batch, y_batch))
    per_image = per_image_pipeline(data, args.batch_size, 0)

    results = {"pipeline": [], "per_image": [], "train": [], "fit_pipeline": []}
    for _ in range(args.repeats):
        results["pipeline"].append(batches_per_second(data.train, args.steps, args.warmup))
        results["per_image"].append(batches_per_second(per_image, args.steps, args.warmup))
        results["train"].append(fit_steps_per_second(model, in_memory, args.steps, args.warmup))
        results["fit_pipeline"].append(
            fit_steps_per_second(model, data.train, args.steps, args.warmup))
    median = {name: statistics.median(values) for name, values in results.items()}

    def spread(name):
        return f"{min(results[name]):.0f}..{max(results[name]):.0f}"

    ratio = median["pipeline"] / median["train"]
    print(f"\nInput pipeline vs training, {KERAS_NAME} (TF {tf.__version__}), digits 8x8x1, "
          f"batch {args.batch_size}, mobilenet_v1(alpha=0.5), {args.steps} timed steps, "
          f"median of {args.repeats}\n")
    print("| measured | median (batches or steps/s) | min..max | ratio to training |")
    print("|---|---:|---:|---:|")
    print(f"| augmented pipeline, batch-wise (`load_dataset(augment=True).train`) | "
          f"{median['pipeline']:.0f} | {spread('pipeline')} | {ratio:.1f}x |")
    print(f"| same augmentation mapped per image (not used) | {median['per_image']:.0f} | "
          f"{spread('per_image')} | {median['per_image'] / median['train']:.1f}x |")
    print(f"| training steps/s, `fit` on one in-memory batch | {median['train']:.0f} | "
          f"{spread('train')} | 1.0x |")
    print(f"| training steps/s, `fit` on the augmented pipeline | "
          f"{median['fit_pipeline']:.0f} | {spread('fit_pipeline')} | "
          f"{median['fit_pipeline'] / median['train']:.2f}x |")
    verdict = "met" if ratio >= 3.0 else "NOT met"
    print(f"\nTarget (pipeline >= 3x training rate): {verdict} ({ratio:.1f}x).")
    print_footer()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32, help="samples per batch")
    parser.add_argument("--steps", type=int, default=100, help="timed batches/steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches/steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
