"""One worker of a MultiWorkerMirroredStrategy job, run by tests/test_distribute.py.

The test starts two of these with TF_CONFIG naming two workers on 127.0.0.1. Each builds
the strategy first (it must exist before TensorFlow runs any op), trains a small model (or a
`Distiller`) on a digits subset with Keras' own `fit` (`--mode fit`, tf_keras) or the
package's `fit_distributed` (`--mode loop`), and writes a JSON report. Every finished epoch
is also appended (and fsync'ed) to `--epoch_log`, so that a test can check that nothing
written before a failure is lost. `--kill_at_epoch K` makes worker 1 SIGKILL itself in the
middle of epoch K, a lost worker. `--reference` also trains the same model from the same
weights on one device (outside the strategy) for comparison.
"""

import argparse
import json
import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

parser = argparse.ArgumentParser()
parser.add_argument("--mode", choices=("fit", "loop"), required=True)
parser.add_argument("--models", default="mlp", help="comma-separated: mlp, distiller")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--batch_size", type=int, default=32)
parser.add_argument("--samples", type=int, default=256)
parser.add_argument("--backup_dir", default=None)
parser.add_argument("--kill_at_epoch", type=int, default=-1)
parser.add_argument("--epoch_log", default=None)
parser.add_argument("--reference", action="store_true")
parser.add_argument("--out", required=True)
args = parser.parse_args()

from keras_dnnopt.distribute import fit_distributed, get_strategy  # noqa: E402

strategy = get_strategy("multi_worker")  # before any op: collectives are set up at start
rank = strategy.cluster_resolver.task_id

from sklearn.datasets import load_digits  # noqa: E402

from keras_dnnopt.backend import keras, tf  # noqa: E402
from keras_dnnopt.distillation import Distiller  # noqa: E402

digits = load_digits()
x = (digits.data[: args.samples] / 16.0).astype("float32")
y = digits.target[: args.samples].astype("int64")


def mlp(hidden, name):
    inputs = keras.Input((64,))
    h = keras.layers.Dense(hidden, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(10)(h), name=name)


keras.utils.set_random_seed(0)
initial = {"student": mlp(16, "student").get_weights(),
           "teacher": mlp(32, "teacher").get_weights()}


def build(kind):
    student = mlp(16, "student")
    student.set_weights(initial["student"])
    if kind == "mlp":
        model = student
    else:
        teacher = mlp(32, "teacher")
        teacher.set_weights(initial["teacher"])
        model = Distiller(teacher, student, temperature=2.0, alpha=0.3)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def dataset():
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size,
                                                            drop_remainder=True)


class Recorder(keras.callbacks.Callback):
    """Records the epochs begun, appends each finished epoch to the epoch log, and plays
    the lost worker."""

    def __init__(self):
        super().__init__()
        self.begun = []
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.begun.append(int(epoch))
        self.epoch = int(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if rank == 1 and self.epoch == args.kill_at_epoch and batch == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_end(self, epoch, logs=None):
        if args.epoch_log:
            with open(args.epoch_log, "a") as f:
                f.write(json.dumps({"epoch": int(epoch), "loss": float(logs["loss"])}) + "\n")
                f.flush()
                os.fsync(f.fileno())


def history_of(history):
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


report = {"rank": rank, "replicas": strategy.num_replicas_in_sync}
for kind in args.models.split(","):
    with strategy.scope():
        model = build(kind)
    recorder = Recorder()
    callbacks = [recorder]
    if args.mode == "fit":
        if args.backup_dir:
            callbacks.insert(0, keras.callbacks.BackupAndRestore(args.backup_dir))
        history = model.fit(dataset(), epochs=args.epochs, callbacks=callbacks, verbose=0)
    else:
        history = fit_distributed(model, dataset(), epochs=args.epochs, strategy=strategy,
                                  callbacks=callbacks, backup_dir=args.backup_dir)
    report[kind] = {"history": history_of(history), "epochs_begun": recorder.begun}
    if args.reference:  # outside the strategy: one device, the same global batches
        report[kind]["reference"] = history_of(
            build(kind).fit(dataset(), epochs=args.epochs, verbose=0))
with open(args.out, "w") as f:
    json.dump(report, f)
print("DONE", json.dumps(report))
