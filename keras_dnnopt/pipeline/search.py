"""The `search` stage of `dnnopt optimize`: the most accurate model that meets a budget.

The space (config section `search`): width multiplier, input resolution (where the data is
large enough), for tabular data the depth of an MLP instead of a MobileNet, structured
channel-pruning ratio (`compression.prune_channels`), the
quantization of the exported file (int8 post-training, int8 quantization-aware training on
either Keras, float16, dynamic range) and distillation from the baseline on or off.

How a budget is met (`budget.Budget`):

1. Before any training, every structure (width, resolution, pruning ratio, file kind) is
   built untrained, pruned to its ratio and profiled: its MACs and parameters are exact
   (the profiler's). When the budget limits size or latency, the untrained structure is
   also exported the way the candidate would be and its file measured (bytes, and the
   LiteRT median latency at batch 1, which do not depend on the weights' values). A
   candidate that cannot fit is dropped, with the reason, and never trained.
2. Successive halving (Jamieson & Talwalkar, the inner loop of Hyperband): up to `trials`
   feasible candidates, drawn with the seed, are trained for a few epochs; the best third
   (validation accuracy of their exported file) go on to three times as many epochs, and
   so on up to the full `search.epochs`. Each rung trains from scratch, so a result
   depends only on the candidate, its fidelity and the seed.
3. The chosen model is the most accurate (regression: the lowest validation RMSE)
   full-fidelity candidate whose file, measured again after export, meets every limit.
   When none does, the report says which limit binds and shows the closest candidate. A
   candidate whose file LiteRT cannot run is dropped with the interpreter's reason.

With the user's own model (`model`), its architecture is kept: the space is its channel-
pruning ratios, the quantizations and distillation (from its unpruned self), and each
candidate starts from its trained weights (fine-tuned after pruning) instead of from scratch.

Every finished trial is written to `trials.json` in the stage's folder as it ends: an
interrupted search, run again, continues after its last finished trial.

keras-tuner's `Hyperband` oracle is not used: its tuner builds and fits the models itself
and rejects tf_keras models (keras-tuner 1.4.8), while this search must run the same on both
Kerases, drop infeasible candidates before training and compress each candidate (prune,
quantize, export) between training and scoring.
"""

import itertools
import math
import os
import time

import numpy as np

from keras_dnnopt.backend import keras

TRIALS_FILE = "trials.json"
CHOSEN_KERAS = "model.keras"
CHOSEN_TFLITE = "model.tflite"
# The export mode of each file kind.
EXPORT_MODE = {"int8_ptq": "int8_full", "int8_qat": "int8_full", "float16": "float16",
               "dynamic": "dynamic", "none": "none"}
# The smallest input side a MobileNet of this package is searched at.
MIN_RESOLUTION = 16


class _Unbuildable(ValueError):
    """A point of the space that is no model (more blocks removed than it has)."""


class Candidate:
    """One point of the search space. `depth` is an MLP's (tabular data; None for images),
    `user` marks the user's own model (its width and resolution are its own), `blocks` is
    the number of whole blocks removed (`compression.remove_blocks`)."""

    FIELDS = ("alpha", "resolution", "prune_ratio", "quantization", "distill", "depth",
              "user", "blocks")

    def __init__(self, alpha, resolution, prune_ratio, quantization, distill, depth=None,
                 user=False, blocks=0):
        self.alpha = float(alpha)
        self.resolution = int(resolution)
        self.prune_ratio = float(prune_ratio)
        self.quantization = quantization
        self.distill = bool(distill)
        self.depth = None if depth is None else int(depth)
        self.user = bool(user)
        self.blocks = int(blocks)

    @property
    def _shape_key(self):
        if self.user:
            key = "user"
        else:
            key = f"a{self.alpha:g}-r{self.resolution}"
            key = key if self.depth is None else f"{key}-d{self.depth}"
        # (Keys without removed blocks are those of the first releases: their trials resume.)
        return f"{key}-b{self.blocks}" if self.blocks else key

    @property
    def key(self):
        return (f"{self._shape_key}-p{self.prune_ratio:g}-"
                f"{self.quantization}-{'kd' if self.distill else 'nokd'}")

    @property
    def structure_key(self):
        """What fixes the exported file's size and latency (not its weights)."""
        kind = EXPORT_MODE[self.quantization]
        return f"{self._shape_key}-p{self.prune_ratio:g}-{kind}"

    def to_dict(self):
        return {field: getattr(self, field) for field in self.FIELDS}

    def describe(self):
        if self.user:
            parts = ["your model"]
        elif self.depth is not None:
            parts = [f"MLP width {self.alpha:g}x, {self.depth} hidden"]
        else:
            parts = [f"alpha {self.alpha:g}", f"{self.resolution}px"]
        if self.blocks:
            parts.append(f"{self.blocks} block{'s' if self.blocks > 1 else ''} removed")
        if self.prune_ratio:
            parts.append(f"{self.prune_ratio:.0%} channels pruned")
        parts.append({"int8_ptq": "int8 PTQ", "int8_qat": "int8 QAT", "float16": "float16",
                      "dynamic": "dynamic range", "none": "float32"}[self.quantization])
        if self.distill:
            parts.append("distilled")
        return ", ".join(parts)


def resolutions(config, input_shape):
    """The input sides searched: `search.resolutions` of the data's side (fractions), kept
    where they are at least `MIN_RESOLUTION` pixels; the data's own side always. Tabular
    data (one feature vector a sample) has one: its number of features."""
    side = int(input_shape[0])
    if len(input_shape) == 1:
        return [side]
    found = []
    for fraction in config["search"]["resolutions"]:
        value = int(round(side * fraction))
        if value == side or value >= MIN_RESOLUTION:
            found.append(value)
    return sorted(set(found) | {side}, reverse=True)


def space(config, input_shape, has_teacher):
    """Every candidate of the configured space, in a fixed order."""
    cfg = config["search"]
    distill = sorted(set([d for d in cfg["distill"] if has_teacher or not d] or [False]),
                     reverse=True)
    blocks = sorted(set(cfg["removed_blocks"]))
    if config.get("model"):
        return [Candidate(1.0, int(input_shape[0]), p, q, d, user=True, blocks=b)
                for b, p, q, d in itertools.product(blocks, cfg["prune_ratios"],
                                                    cfg["quantizations"], distill)]
    tabular = len(input_shape) == 1
    depths = cfg["depths"] if tabular else [None]
    blocks = [0] if tabular else blocks  # an MLP's depth is searched instead
    return [Candidate(a, r, p, q, d, depth, blocks=b)
            for a, depth, r, b, p, q, d in itertools.product(
                cfg["alphas"], depths, resolutions(config, input_shape), blocks,
                cfg["prune_ratios"], cfg["quantizations"], distill)]


def score(row):
    """A trial's objective, higher is better: its validation accuracy, or for regression
    minus its validation RMSE; None before training."""
    if row.get("val_accuracy") is not None:
        return row["val_accuracy"]
    if row.get("val_rmse") is not None:
        return -row["val_rmse"]
    return None


def rung_epochs(full_epochs, eta, rungs):
    """The epochs of each rung: `full / eta**(rungs-1)`, ..., `full` (at least 1 each)."""
    epochs = [max(1, int(math.ceil(full_epochs / eta ** (rungs - 1 - i)))) for i in range(rungs)]
    # Equal neighbours (a short full budget) collapse into one rung.
    return sorted(set(epochs))


def predicted_int8_bytes(params):
    """A first guess of an int8 file's size from its parameter count: one byte a weight
    plus TFLite's per-file overhead; the search measures the real file anyway."""
    return int(params + 8 * 1024)


class _Reshaped:
    """A dataset's description with another input shape (a candidate's resolution)."""

    def __init__(self, data, input_shape):
        self.__dict__.update({k: getattr(data, k) for k in (
            "task", "num_classes", "num_outputs", "target_mean", "target_std")})
        self.input_shape = tuple(input_shape)


# ------------------------------------------------------------------------------- the stage

class _Search:
    def __init__(self, run, workdir, budget):
        from keras_dnnopt.pipeline.store import read_json

        self.run, self.workdir, self.budget = run, workdir, budget
        self.config = run.config
        self.cfg = run.config["search"]
        self.path = os.path.join(workdir, TRIALS_FILE)
        self.state = (read_json(self.path) if os.path.isfile(self.path)
                      else {"structures": {}, "trials": {}})
        self.data = run.dataset
        self.started = time.perf_counter()
        self.out_of_time = False

    # -- persistence ------------------------------------------------------------------
    def save(self):
        from keras_dnnopt.pipeline.store import write_json

        write_json(self.path, self.state)

    # -- data at a candidate's resolution -----------------------------------------------
    def _resize(self, dataset, resolution):
        from keras_dnnopt.backend import tf

        if resolution == int(self.data.input_shape[0]):
            return dataset
        size = (resolution, resolution)
        return dataset.map(lambda x, y: (tf.image.resize(x, size), y))

    def _arrays(self, x, resolution):
        from keras_dnnopt.backend import tf

        x = self.run.normalized(x)
        if resolution != int(self.data.input_shape[0]):
            x = tf.image.resize(x, (resolution, resolution)).numpy()
        return x

    def _input_shape(self, resolution):
        shape = list(self.data.input_shape)
        if len(shape) == 1:
            return tuple(shape)
        return (resolution, resolution, *shape[2:])

    # -- structures ---------------------------------------------------------------------
    def _build(self, candidate):
        from keras_dnnopt.pipeline.stages import build_model

        if candidate.user:
            # The user's trained model, its weights copied (the original stays untouched).
            source = self.run.model_of("baseline")
            model = keras.models.clone_model(source)
            model.set_weights(source.get_weights())
            # Its least important blocks on the data (the same samples for the probe and
            # the trial, so both remove the same blocks).
            return self._without_blocks(model, candidate, "output", self._arrays(
                self.data.x_train[:256], candidate.resolution))
        data = self.data
        if candidate.resolution != int(data.input_shape[0]) and len(data.input_shape) > 1:
            data = _Reshaped(data, self._input_shape(candidate.resolution))
        model = build_model(data, self.cfg["architecture"], candidate.alpha,
                            self.cfg["dropout"], candidate.depth or 1, "candidate")
        # A fresh model loses its blocks before training, by structure alone (the longest
        # run of same-shape blocks first: MobileNetV1's 512-filter blocks, the paper's
        # shallow MobileNet), so its size and MACs are known before it is trained.
        return self._without_blocks(model, candidate, "repeats", None)

    @staticmethod
    def _without_blocks(model, candidate, criterion, data):
        from keras_dnnopt.compression import removable_blocks, remove_blocks

        if not candidate.blocks:
            return model
        available = len(removable_blocks(model, criterion="bn_gamma"))
        if candidate.blocks > available:
            raise _Unbuildable(f"{candidate.blocks} blocks removed: the model has "
                               f"{available} removable blocks")
        return remove_blocks(model, n=candidate.blocks, criterion=criterion, data=data)

    def _pruned(self, model, ratio, data=None):
        from keras_dnnopt.compression import prune_channels

        if not ratio:
            return model
        return prune_channels(model, ratio=ratio, data=data)

    def structure(self, candidate):
        """Params, MACs and (when the budget needs them) the file size and latency of a
        candidate's structure, measured untrained; cached in `trials.json`."""
        from keras_dnnopt.profiling import profile

        key = candidate.structure_key
        known = self.state["structures"].get(key)
        needs_file = self.budget.max_size is not None or self.budget.max_latency_ms is not None
        if known is not None and (not needs_file or "size_bytes" in known):
            return known
        keras.utils.set_random_seed(self.config["seed"])
        # Pruned as a trained candidate is (with data: removed channels' means become
        # biases, which adds bias tensors to the file).
        from keras_dnnopt.pipeline.stages import deployable

        model = deployable(self._pruned(self._build(candidate), candidate.prune_ratio,
                                        data=self._random_inputs(candidate)))
        # Distinct values in every tensor, as after training: the converter stores equal
        # constant buffers once, so an untrained model (all batch-norm scales 1, all biases
        # 0) would make a smaller file than the trained candidate.
        rng = np.random.default_rng(0)
        for variable in model.weights:
            variable.assign(rng.uniform(0.5, 1.5, tuple(variable.shape)).astype(
                variable.dtype if isinstance(variable.dtype, str) else "float32"))
        found = profile(model)
        known = {"params": int(found.params), "macs": int(found.macs),
                 "predicted_int8_bytes": predicted_int8_bytes(int(found.params))}
        if needs_file:
            path = os.path.join(self.workdir, "probe.tflite")
            measured = self._export_and_time(model, candidate, path, self._random_inputs(
                candidate))
            known.update(measured)
            os.remove(path)
        self.state["structures"][key] = known
        self.save()
        keras.backend.clear_session()
        return known

    def _random_inputs(self, candidate):
        rng = np.random.default_rng(0)
        return rng.standard_normal((16, *self._input_shape(candidate.resolution))).astype(
            "float32")

    def _export_and_time(self, model, candidate, path, representative):
        from keras_dnnopt.export import benchmark_tflite, export_tflite, file_sizes
        from keras_dnnopt.pipeline.stages import strip_names

        mode = EXPORT_MODE[candidate.quantization]
        export_tflite(model, path, quantization=mode,
                      representative_data=representative if mode == "int8_full" else None,
                      calibration_steps=self.config["quantize"]["calibration_steps"],
                      strip_names=strip_names(self.run))
        sizes = file_sizes(path)
        cfg = self.config["export"]
        latency = benchmark_tflite(path, threads=cfg["threads"], runs=cfg["latency_runs"])
        return {"size_bytes": int(sizes.size_bytes),
                "size_gzip_bytes": int(sizes.gzipped_size_bytes),
                "latency_ms": float(latency.median_ms)}

    def infeasible(self, candidate):
        """Why a candidate cannot meet the budget whatever its training, or None."""
        from keras_dnnopt.pipeline.budget import describe_violation

        known = self.structure(candidate)
        broken = self.budget.hardware_violations(known.get("size_bytes"),
                                                 known.get("latency_ms"), known["macs"])
        if not broken:
            return None
        return "cannot fit before training: " + "; ".join(
            describe_violation(*item) for item in broken)

    # -- training -----------------------------------------------------------------------
    def _teacher(self, resolution):
        teacher = self.run.teacher()
        if teacher is None or resolution == int(self.data.input_shape[0]):
            return teacher
        # The teacher sees the candidate's low-resolution image brought back to its own size.
        inputs = keras.Input(self._input_shape(resolution))
        side = self.data.input_shape[:2]
        outputs = teacher(keras.layers.Resizing(*side)(inputs))
        return keras.Model(inputs, outputs, name="teacher_at_candidate_resolution")

    def _train(self, model, candidate, epochs, learning_rate, warmup, seed):
        from keras_dnnopt.pipeline import stages

        trainee = model
        teacher = self._teacher(candidate.resolution) if candidate.distill else None
        if teacher is not None:
            trainee = stages.make_distiller(self.run, teacher, model)
        schedule = stages._schedule(self.run, learning_rate, epochs, warmup)
        trainee.compile(optimizer=stages._optimizer("sgd", schedule), loss=self.run.loss(),
                        metrics=self.run.metrics())
        # Each trial's data order and augmentation come from its own seed.
        train = self._resize(stages._training_data(self.run, 0, epochs, seed=seed),
                             candidate.resolution)
        trainee.fit(train, epochs=epochs, steps_per_epoch=self.run.steps_per_epoch,
                    shuffle=False, verbose=0)

    def evaluate(self, candidate, epochs, folder):
        """Trains, compresses and exports one candidate at `epochs`; measures its file."""
        from keras_dnnopt.compression import quantize
        from keras_dnnopt.export import save_model
        from keras_dnnopt.profiling import profile

        seed = self.config["seed"] * 1000 + sum(candidate.key.encode()) % 997
        keras.utils.set_random_seed(seed)
        lr = self.cfg["learning_rate"]
        model = self._build(candidate)
        if not candidate.user:  # the user's model comes trained
            self._train(model, candidate, epochs, lr, 1 if epochs > 1 else 0, seed)
        calibration = self._arrays(self.data.x_train[:256], candidate.resolution)
        if candidate.prune_ratio or (candidate.user and candidate.blocks):
            model = self._pruned(model, candidate.prune_ratio, data=calibration)
            # A pruned user model (or one without some blocks) is fine-tuned for the
            # rung's whole budget.
            tune = epochs if candidate.user else max(1, epochs // 2)
            self._train(model, candidate, tune, lr * 0.2, 0, seed + 1)
        from keras_dnnopt.pipeline.stages import deployable

        model = float_model = deployable(model)
        if candidate.quantization == "int8_qat":
            model = quantize(model, scheme="default")
            self._train(model, candidate, max(1, epochs // 4), lr * 0.05, 0, seed + 2)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, CHOSEN_TFLITE)
        measured = self._export_and_time(model, candidate, path, calibration)
        validation = (self.data.validation if self.data.y_val is not None
                      and len(self.data.y_val) else self.data.test)
        val_report = self.run.report(path, self._resize(validation, candidate.resolution))
        test_scores = self.run.scores(path, self._resize(self.data.test, candidate.resolution))
        found = profile(float_model)
        save_model(model, os.path.join(folder, CHOSEN_KERAS))
        keras.backend.clear_session()
        key = "rmse" if self.run.regression else "accuracy"
        return {f"val_{key}": float(val_report[key]), **test_scores,
                "params": int(found.params), "macs": int(found.macs), **measured}

    # -- the loop -----------------------------------------------------------------------
    def time_left(self):
        limit = self.cfg["time_budget"]
        return limit is None or time.perf_counter() - self.started < limit

    def run_search(self):
        from keras_dnnopt.pipeline.budget import describe_violation

        has_teacher = self.run.teacher() is not None
        candidates = space(self.config, self.data.input_shape, has_teacher)
        rows = {}
        feasible = []
        for candidate in list(candidates):
            try:
                reason = self.infeasible(candidate)
            except _Unbuildable as error:
                # More blocks removed than the model has: not a candidate (said once).
                self.run.log(f"          left out {candidate.describe()}: {error}")
                continue
            rows[candidate.key] = {"candidate": candidate.to_dict(), "key": candidate.key,
                                   "describe": candidate.describe(),
                                   **self.state["structures"][candidate.structure_key],
                                   "fidelity": None, "dropped": reason}
            if reason is None:
                feasible.append(candidate)
        rng = np.random.default_rng(self.config["seed"])
        order = list(rng.permutation(len(feasible)))
        picked = [feasible[i] for i in order[:self.cfg["trials"]]]
        for candidate in feasible:
            if candidate not in picked:
                rows[candidate.key]["dropped"] = "not drawn (`search.trials` reached)"
        epochs = rung_epochs(self.cfg["epochs"], self.cfg["eta"], self.cfg["rungs"])
        alive = picked
        total_trials = sum(max(1, math.ceil(len(picked) / self.cfg["eta"] ** i))
                           for i in range(len(epochs)))
        done = 0
        for rung, rung_epoch in enumerate(epochs):
            results = []
            for candidate in alive:
                trial_key = f"{candidate.key}@{rung_epoch}"
                result = self.state["trials"].get(trial_key)
                if result is None:
                    if not self.time_left():
                        self.out_of_time = True
                        rows[candidate.key]["dropped"] = "not trained: `search.time_budget` spent"
                        continue
                    began = time.perf_counter()
                    folder = os.path.join(self.workdir, "trials", trial_key.replace("@", "_e"))
                    try:
                        result = self.evaluate(candidate, rung_epoch, folder)
                    except (ValueError, RuntimeError) as error:
                        # A candidate whose file LiteRT cannot run (XNNPACK refuses an int8
                        # file whose scales it cannot requantize, say) is out, with why;
                        # the search goes on.
                        keras.backend.clear_session()
                        result = {"failed": " ".join(str(error).split())[-300:]}
                    result["seconds"] = round(time.perf_counter() - began, 2)
                    result["folder"] = os.path.relpath(folder, self.workdir)
                    self.state["trials"][trial_key] = result
                    self.save()
                done += 1
                if "failed" in result:
                    rows[candidate.key].update(fidelity=rung_epoch,
                                               dropped="failed: " + result["failed"])
                    self.run.log(f"          trial {done}/{total_trials} ({rung_epoch} epochs) "
                                 f"{candidate.describe()}: failed ({result['failed'][-120:]})")
                    continue
                self._progress(done, total_trials, candidate, rung_epoch, result)
                rows[candidate.key].update({k: v for k, v in result.items()},
                                           fidelity=rung_epoch, dropped=None)
                results.append((candidate, result))
            if not results:
                break
            # Measured again on the file: a candidate over a size/latency limit is out.
            ranked = []
            for candidate, result in results:
                broken = self.budget.hardware_violations(result["size_bytes"],
                                                         result["latency_ms"], result["macs"])
                if broken:
                    rows[candidate.key]["dropped"] = "measured file over budget: " + "; ".join(
                        describe_violation(*b) for b in broken)
                else:
                    ranked.append((candidate, result))
            ranked.sort(key=lambda item: (-score(item[1]), item[1]["size_bytes"],
                                          item[0].key))
            if rung == len(epochs) - 1:
                break
            keep = max(1, math.ceil(len(results) / self.cfg["eta"]))
            for candidate, _ in ranked[keep:]:
                rows[candidate.key]["dropped"] = (f"stopped at {rung_epoch} epochs: not in "
                                                  f"the best {keep} of {len(results)}")
            alive = [candidate for candidate, _ in ranked[:keep]]
        return rows, epochs

    def _progress(self, done, total, candidate, epochs, result):
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (total - done) if done else 0.0
        measured = (f"RMSE {result['val_rmse']:.4g}" if "val_rmse" in result
                    else f"accuracy {result['val_accuracy']:.4f}")
        # A bar in each line (not a redrawn one: the log is also the run's text file).
        filled = int(round(20 * done / total)) if total else 20
        bar = "[" + "#" * filled + "." * (20 - filled) + "]"
        self.run.log(f"          {bar} trial {done}/{total} ({epochs} epochs) "
                     f"{candidate.describe()}: "
                     f"{measured} (validation), "
                     f"{result['size_bytes'] / 1024:.1f} KiB, {result['latency_ms']:.3f} ms; "
                     f"ETA {int(eta // 60)}m{int(eta % 60):02d}s")


def choose(rows, budget, full_epochs):
    """The chosen row (most accurate on validation among those trained for `full_epochs`
    that meet the whole budget, accuracy on the test split), or None, and the closest row
    when nothing fits."""
    trained = [row for row in rows.values() if row.get("fidelity") == full_epochs
               and score(row) is not None]
    fitting = [row for row in trained if not budget.violations(row)]
    key = (lambda row: (-score(row), row["size_bytes"], row["key"]))
    if fitting:
        return min(fitting, key=key), None
    candidates = [row for row in rows.values() if score(row) is not None] or [
        row for row in rows.values() if row.get("macs") is not None]
    if not candidates:
        return None, None

    def distance(row):
        total = 0.0
        for name, measured, limit in budget.violations(row):
            if measured is None:
                total += 1.0
            elif name == "min_accuracy":
                total += (limit - measured) / limit
            elif name == "max_rmse":
                total += (measured - limit) / limit
            else:
                total += (measured - limit) / limit
        return total, key(row) if score(row) is not None else (0, 0, row["key"])

    return None, min(candidates, key=distance)


def binding_constraints(rows, budget):
    """The limits that rule out the most candidates, most binding first."""
    counts = {}
    for row in rows.values():
        for name, _, _ in budget.violations(row):
            counts[name] = counts.get(name, 0) + 1
    return sorted(counts, key=lambda name: -counts[name])


def search_stage(run, workdir):
    """Searches the space for the most accurate model under the budget (module docstring)."""
    import shutil

    from keras_dnnopt.pipeline.budget import Budget, describe_violation

    budget = Budget.from_dict(run.config["budget"])
    search = _Search(run, workdir, budget)
    rows, epochs = search.run_search()
    # The full fidelity, or (the time budget spent before it) the highest one reached.
    reached = [row["fidelity"] for row in rows.values() if row.get("fidelity")]
    chosen, closest = choose(rows, budget, max(reached, default=epochs[-1]))
    trial_rows = sorted(rows.values(), key=lambda row: (
        row.get("fidelity") is None, -(row.get("fidelity") or 0),
        -(score(row) if score(row) is not None else -math.inf), row["key"]))
    extra = {"budget": budget.to_dict(), "budget_text": budget.describe(),
             "epochs": epochs, "trials": trial_rows, "chosen": None, "closest": None,
             "binding": [], "out_of_time": search.out_of_time,
             "trained": len(search.state["trials"]),
             "space": len(rows)}
    if chosen is not None:
        folder = os.path.join(workdir, chosen["folder"])
        for name in (CHOSEN_KERAS, CHOSEN_TFLITE):
            shutil.copyfile(os.path.join(folder, name), os.path.join(workdir, name))
        extra["chosen"] = chosen["key"]
        scores = ("mse", "rmse", "mae", "r2") if run.regression else ("accuracy", "f1_macro")
        metrics = {key: chosen[key] for key in (*scores, "params", "macs", "size_bytes",
                                                  "size_gzip_bytes", "latency_ms")}
        summary = (f"{chosen['describe']} ({chosen['fidelity']} epochs), the best of "
                   f"{extra['trained']} trials over {extra['space']} candidates meeting "
                   f"{budget.describe()}")
        return {"summary": summary, "metrics": metrics, "artifact": CHOSEN_TFLITE,
                "extra": extra}
    extra["binding"] = binding_constraints(rows, budget)
    extra["closest"] = None if closest is None else closest["key"]
    why = ", ".join(extra["binding"]) or "none"
    shown = ""
    if closest is not None:
        shown = "; closest: " + closest["describe"] + " (" + "; ".join(
            describe_violation(*b) for b in budget.violations(closest)) + ")"
    return {"summary": f"no candidate meets {budget.describe()} (binding: {why}){shown}",
            "metrics": {}, "extra": extra}
