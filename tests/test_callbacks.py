"""Tests of keras_dnnopt.callbacks, on the Keras in use (the suite runs once per Keras).

Every callback is checked inside a real `model.fit` against an independent reference:
a NumPy re-run of the optimizer's update rule, a hand-computed gradient, a closed form.
"""

import copy
import math
import sys

import numpy as np
import pytest

from keras_dnnopt.backend import keras, optimizer_variables, tf
from keras_dnnopt.callbacks import (
    GradientNormMonitor,
    LearningRateMonitor,
    LRFinder,
    OneCycleMomentum,
    ThroughputMonitor,
)

# --------------------------------------------------------------------------- helpers


def one_weight_model(initial=0.0):
    """`y = w * x`, one weight, no bias."""
    model = keras.Sequential([
        keras.Input(shape=(1,)),
        keras.layers.Dense(1, use_bias=False,
                           kernel_initializer=keras.initializers.Constant(initial)),
    ])
    return model


def constant_gradient_data(n):
    """With `loss="mae"`, `x = 1` and `y = -1000`, the gradient of the loss w.r.t. `w`
    is exactly 1 at every step (while `w > -1000`)."""
    return np.ones((n, 1), "float32"), np.full((n, 1), -1000.0, "float32")


def numpy_one_cycle(t, start, peak, end, total_steps, pct_start, strategy="cos"):
    """PyTorch OneCycleLR's two-phase arithmetic, in NumPy (the reference)."""
    def anneal(a, b, f):
        if strategy == "cos":
            return b + (a - b) / 2.0 * (1.0 + math.cos(math.pi * f))
        return a + (b - a) * f
    p, e = pct_start * total_steps - 1.0, total_steps - 1.0
    t = min(t, e)
    if t <= p:
        return anneal(start, peak, t / p)
    return anneal(peak, end, (t - p) / (e - p))


def regression_problem(n=64, dim=4, seed=0):
    """Noisy linear least squares `y = x @ w_true + noise` (`loss="mse"`; the noise keeps
    the lowest loss above 0)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype("float32")
    w_true = rng.normal(size=(dim, 1)).astype("float32")
    noise = 0.5 * rng.normal(size=(n, 1))
    return x, (x @ w_true + noise).astype("float32")


def linear_model(dim=4):
    return keras.Sequential([keras.Input(shape=(dim,)), keras.layers.Dense(1)])


# ------------------------------------------------------------------ OneCycleMomentum


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_one_cycle_momentum_matches_numpy_trajectory(optimizer_name, strategy):
    total, pct, base, peak, lr = 10, 0.3, 0.5, 0.9, 0.1
    steps = 12  # past the end of the cycle: the momentum must stay at max_momentum
    model = one_weight_model()
    if optimizer_name == "sgd":
        optimizer = keras.optimizers.SGD(lr, momentum=0.9)
    else:
        optimizer = keras.optimizers.Adam(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    model.compile(optimizer=optimizer, loss="mae")
    x, y = constant_gradient_data(steps)
    callback = OneCycleMomentum(total, base_momentum=base, max_momentum=peak, pct_start=pct,
                                anneal_strategy=strategy)
    weights = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: weights.append(float(model.get_weights()[0].item())))
    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0,
              callbacks=[callback, record])

    # NumPy re-run of the update rule with the scheduled momentum and gradient g = 1.
    w, velocity, m, v, expected = 0.0, 0.0, 0.0, 0.0, []
    for t in range(steps):
        mom = numpy_one_cycle(t, peak, base, peak, total, pct, strategy)
        if optimizer_name == "sgd":
            velocity = mom * velocity - lr * 1.0
            w += velocity
        else:
            m += (1.0 - m) * (1.0 - mom)
            v += (1.0 - v) * (1.0 - 0.999)
            alpha = lr * math.sqrt(1 - 0.999 ** (t + 1)) / (1 - mom ** (t + 1))
            w -= m * alpha / (math.sqrt(v) + 1e-7)
        expected.append(w)
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-6)
    # A constant momentum would give another trajectory: the test can fail.
    assert not np.allclose(weights[-1], -lr * steps, rtol=1e-3)
    # The configured float is back after fit.
    attribute = "momentum" if optimizer_name == "sgd" else "beta_1"
    assert getattr(optimizer, attribute) == 0.9
    assert isinstance(getattr(optimizer, attribute), float)


def test_one_cycle_momentum_follows_optimizer_iterations_across_fits():
    """The cycle counts the optimizer's steps, like a `OneCycle` learning rate: a second
    `fit` continues the cycle, and a later fit without the callback uses the float."""
    total, base, peak, lr = 8, 0.5, 0.9, 0.1
    model = one_weight_model()
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.7), loss="mae")
    x, y = constant_gradient_data(4)
    callback = OneCycleMomentum(total, base_momentum=base, max_momentum=peak, pct_start=0.5)
    model.fit(x, y, batch_size=1, epochs=1, verbose=0, callbacks=[callback])
    model.fit(x, y, batch_size=1, epochs=1, verbose=0, callbacks=[callback])
    model.fit(x, y, batch_size=1, epochs=1, verbose=0)  # plain SGD(momentum=0.7)
    w, velocity = 0.0, 0.0
    for t in range(12):
        mom = numpy_one_cycle(t, peak, base, peak, total, 0.5) if t < 8 else 0.7
        velocity = mom * velocity - lr
        w += velocity
    np.testing.assert_allclose(model.get_weights()[0].ravel(), [w], rtol=1e-5)


def numpy_sgd_momentum_trajectory(steps, lr, gradient, momentum_at):
    """SGD with momentum and a constant gradient: the weight after each step."""
    w, velocity, weights = 0.0, 0.0, []
    for t in range(steps):
        velocity = momentum_at(t) * velocity - lr * gradient
        w += velocity
        weights.append(w)
    return weights


def loss_scale_optimizer(inner):
    if hasattr(keras.optimizers, "LossScaleOptimizer"):  # Keras 3
        return keras.optimizers.LossScaleOptimizer(inner)
    return keras.mixed_precision.LossScaleOptimizer(inner)  # tf_keras


@pytest.mark.parametrize("setup", ["steps_per_execution", "eager", "loss_scale"])
def test_one_cycle_momentum_follows_the_cycle_for_every_variable(setup):
    """Several variables (a kernel and a bias, 6 weights), each with the gradient 1/3 of
    `mae` over 3 outputs: every weight must follow the NumPy trajectory of the cycled
    momentum, also when several steps run in one call of the train function, eagerly,
    and under a `LossScaleOptimizer` (whose inner optimizer steps inside a `tf.cond`).
    The momentum is computed once per optimizer step and shared by the variables: a value
    kept from an earlier step, or the configured 0.9, would give other weights."""
    total, pct, base, peak, lr, steps = 8, 0.5, 0.5, 0.95, 0.1, 12
    model = keras.Sequential([
        keras.Input(shape=(1,)),
        keras.layers.Dense(3, kernel_initializer="zeros", bias_initializer="zeros"),
    ])
    optimizer = keras.optimizers.SGD(lr, momentum=0.9)
    compile_kwargs = {
        "steps_per_execution": {"steps_per_execution": 4},
        "eager": {"run_eagerly": True},
        "loss_scale": {},
    }[setup]
    model.compile(optimizer=loss_scale_optimizer(optimizer) if setup == "loss_scale"
                  else optimizer, loss="mae", **compile_kwargs)
    x, y = np.ones((steps, 1), "float32"), np.full((steps, 3), -1000.0, "float32")
    callback = OneCycleMomentum(total, base_momentum=base, max_momentum=peak, pct_start=pct)
    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=[callback])

    expected = numpy_sgd_momentum_trajectory(
        steps, lr, 1.0 / 3.0, lambda t: numpy_one_cycle(t, peak, base, peak, total, pct))[-1]
    kernel, bias = model.get_weights()
    np.testing.assert_allclose(kernel.ravel(), [expected] * 3, rtol=1e-5)
    np.testing.assert_allclose(bias, [expected] * 3, rtol=1e-5)
    constant = numpy_sgd_momentum_trajectory(steps, lr, 1.0 / 3.0, lambda t: 0.9)[-1]
    assert not np.isclose(expected, constant, rtol=1e-3)  # the test can fail
    assert optimizer.momentum == 0.9 and isinstance(optimizer.momentum, float)
    assert "apply" not in vars(optimizer) and "apply_gradients" not in vars(optimizer)


def test_one_cycle_momentum_is_computed_once_per_step_not_per_variable():
    """SGD reads `momentum` once per variable: the callback's momentum must be traced
    once per optimizer step, not once per variable (8 here), which would put 8 copies of
    its ops into every training step."""
    model = keras.Sequential([keras.Input(shape=(2,))] + [keras.layers.Dense(2)
                                                          for _ in range(4)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    callback = OneCycleMomentum(10)
    calls = []
    momentum_at = callback.momentum_at
    callback.momentum_at = lambda step: calls.append(step) or momentum_at(step)
    x, y = np.ones((8, 2), "float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[callback])
    assert len(model.trainable_variables) == 8
    assert 1 <= len(calls) <= 2  # one trace of the step (two if Keras traces it twice)


@pytest.mark.parametrize(
    "optimizer",
    [lambda: keras.optimizers.SGD(0.1), lambda: keras.optimizers.Adagrad(0.1)],
    ids=["sgd_without_momentum", "adagrad"],
)
def test_one_cycle_momentum_rejects_optimizer_without_momentum(optimizer):
    model = one_weight_model()
    model.compile(optimizer=optimizer(), loss="mae")
    x, y = constant_gradient_data(2)
    with pytest.raises(ValueError, match="momentum"):
        model.fit(x, y, verbose=0, callbacks=[OneCycleMomentum(10)])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": 10, "pct_start": 0.0}, "pct_start"),
        ({"total_steps": 10, "pct_start": 1.0}, "pct_start"),
        ({"total_steps": 10, "anneal_strategy": "exp"}, "anneal_strategy"),
        ({"total_steps": 10, "base_momentum": -0.01}, "base_momentum"),
        ({"total_steps": 10, "max_momentum": 1.0}, "max_momentum"),
        ({"total_steps": 10, "base_momentum": 0.9, "max_momentum": 0.85}, "base_momentum"),
    ],
)
def test_one_cycle_momentum_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OneCycleMomentum(**kwargs)


def test_one_cycle_momentum_validation_accepts_boundaries():
    OneCycleMomentum(10, base_momentum=0.0, max_momentum=0.999)
    OneCycleMomentum(10, base_momentum=0.9, max_momentum=0.9)
    OneCycleMomentum(10, pct_start=0.99, anneal_strategy="linear")


# --------------------------------------------------------------- LearningRateMonitor


def test_learning_rate_monitor_constant_rate_in_history():
    model = one_weight_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mae")
    x, y = constant_gradient_data(8)
    history = model.fit(x, y, batch_size=4, epochs=3, verbose=0,
                        callbacks=[LearningRateMonitor()])
    np.testing.assert_allclose(history.history["learning_rate"], [0.05] * 3, rtol=1e-6)


def test_learning_rate_monitor_schedule_in_history_and_batch_logs():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.9)
    model = one_weight_model()
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mae")
    x, y = constant_gradient_data(8)  # 2 steps per epoch
    batch_rates = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: batch_rates.append(logs["learning_rate"]))
    history = model.fit(x, y, batch_size=4, epochs=3, verbose=0,
                        callbacks=[LearningRateMonitor(log_every_batch=True), record])
    # After epoch e the optimizer has run 2 * (e + 1) steps: the next rate is 0.1 * 0.9**that.
    np.testing.assert_allclose(history.history["learning_rate"],
                               [0.1 * 0.9 ** (2 * (e + 1)) for e in range(3)], rtol=1e-5)
    np.testing.assert_allclose(batch_rates, [0.1 * 0.9 ** (s + 1) for s in range(6)], rtol=1e-5)


# --------------------------------------------------------------- GradientNormMonitor


def test_gradient_norm_monitor_matches_numpy_gradient():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    model = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.SGD(0.1)
    model.compile(optimizer=optimizer, loss="mse")
    weights_before = []  # the weights each step's gradient is taken at
    record = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: weights_before.append(model.get_weights()))
    monitor = GradientNormMonitor(frequency=2)
    history = model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0,
                        callbacks=[record, monitor])

    def numpy_norm(step):  # d/dW mean((xW + b - y)^2) over the batch of that step
        kernel, bias = weights_before[step]
        xb, yb = x[4 * (step % 2):4 * (step % 2) + 4], y[4 * (step % 2):4 * (step % 2) + 4]
        residual = xb @ kernel + bias - yb
        scale = 2.0 / residual.size
        d_kernel, d_bias = scale * xb.T @ residual, scale * residual.sum(axis=0)
        return math.sqrt((d_kernel ** 2).sum() + (d_bias ** 2).sum())

    assert monitor.steps == [0, 2, 4]
    np.testing.assert_allclose(monitor.grad_norms, [numpy_norm(s) for s in (0, 2, 4)],
                               rtol=1e-5)
    # The latest sample of each epoch (2 steps per epoch) is in History.
    np.testing.assert_allclose(history.history["grad_norm"], monitor.grad_norms, rtol=1e-6)
    assert "apply_gradients" not in vars(optimizer)  # the wrapper is gone after fit


# ----------------------------------------------------------------- ThroughputMonitor


@pytest.mark.parametrize("as_dataset", [False, True], ids=["arrays", "dataset"])
def test_throughput_monitor_counts_every_sample(as_dataset):
    x, y = regression_problem(n=10, dim=4)
    model = linear_model(4)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    monitor = ThroughputMonitor(frequency=1)
    batch_logs = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: batch_logs.append(dict(logs)))
    data = {"x": x, "y": y, "batch_size": 4}
    if as_dataset:  # batches of 4, 4 and a partial 2
        data = {"x": tf.data.Dataset.from_tensor_slices((x, y)).batch(4)}
    history = model.fit(**data, epochs=2, shuffle=False, verbose=0,
                        validation_data=(x[:3], y[:3]),
                        callbacks=[monitor, record])
    assert monitor.epoch_samples == [10, 10]  # validation samples are not counted
    assert monitor.total_samples == 20
    rates = history.history["samples_per_second"]
    assert len(rates) == 2 and all(np.isfinite(r) and r > 0 for r in rates)
    assert np.isfinite(monitor.running_samples_per_second)
    assert monitor.running_samples_per_second > 0
    assert all(logs["samples_per_second"] > 0 for logs in batch_logs)
    assert "train_step" not in vars(model)  # the wrapper is gone after fit


# ------------------------------------------------------------------------ LRFinder


def _optimizer_state(model):
    return [np.array(v.numpy()) for v in optimizer_variables(model.optimizer)]


def test_lr_finder_restores_weights_and_trained_optimizer_exactly():
    x, y = regression_problem()
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # the optimizer has slots and steps
    weights, state = model.get_weights(), _optimizer_state(model)
    assert int(model.optimizer.iterations.numpy()) == 4

    finder = LRFinder(min_learning_rate=1e-5, max_learning_rate=10.0, num_steps=20)
    finder.find(model, x, y, batch_size=16)
    assert len(finder.losses) > 3
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    after_state = _optimizer_state(model)
    assert len(after_state) == len(state)
    for before, after in zip(state, after_state, strict=True):
        np.testing.assert_array_equal(before, after)
    assert float(np.asarray(model.optimizer.learning_rate)) == pytest.approx(3e-3, rel=1e-6)
    assert "compute_loss" not in vars(model)


def test_lr_finder_leaves_a_fresh_optimizer_fresh():
    """Before any training the optimizer has no slots: after the test it must behave
    exactly like a fresh one (zero slots, iterations 0, the original learning rate)."""
    x, y = regression_problem()
    def make():
        keras.utils.set_random_seed(7)
        model = linear_model(4)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
        return model
    tested, fresh = make(), make()
    LRFinder(min_learning_rate=1e-4, max_learning_rate=1.0, num_steps=10).find(
        tested, x, y, batch_size=16)
    assert int(tested.optimizer.iterations.numpy()) == 0
    for a, b in zip(tested.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    tested.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    fresh.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(tested.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_lr_finder_learning_rates_follow_closed_form_and_are_applied():
    """One weight, gradient 1 at every step, plain SGD: after step k the weight is
    `-sum(lr_0..lr_k)`, which proves the recorded rates are the ones used."""
    model = one_weight_model()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mae")
    x, y = constant_gradient_data(5)
    weights = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: weights.append(model.get_weights()[0].item()))
    finder = LRFinder(min_learning_rate=1e-3, max_learning_rate=1.0, num_steps=12,
                      smoothing=0.0)
    finder.find(model, x, y, batch_size=1, callbacks=[record])  # 3 epochs of 5, stops at 12
    expected = [1e-3 * 1000.0 ** (i / 11) for i in range(12)]
    np.testing.assert_allclose(finder.learning_rates, expected, rtol=1e-12)
    np.testing.assert_allclose(weights, -np.cumsum(expected), rtol=1e-5)
    # The loss is the per-step loss |w - y| before the step, not the epoch's running mean.
    np.testing.assert_allclose(finder.losses, 1000.0 + np.concatenate([[0.0], weights[:-1]]),
                               rtol=1e-6)
    np.testing.assert_allclose(finder.smoothed_losses, finder.losses)  # smoothing=0
    assert model.get_weights()[0].item() == 0.0
    assert float(np.asarray(model.optimizer.learning_rate)) == pytest.approx(0.5)


def _curvature(x):
    """L, the largest eigenvalue of the Hessian of `mse` for a Dense(1) with bias."""
    augmented = np.concatenate([x, np.ones((len(x), 1), "float32")], axis=1).astype("float64")
    return float(np.linalg.eigvalsh(2.0 / len(x) * augmented.T @ augmented).max())


def test_lr_finder_suggestion_below_divergence_rate_on_linear_regression():
    x, y = regression_problem(n=64)
    divergence = 2.0 / _curvature(x)  # full-batch GD diverges above 2 / L
    model = linear_model(4)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    finder = LRFinder(min_learning_rate=1e-3, max_learning_rate=10.0, num_steps=40,
                      smoothing=0.9)
    finder.find(model, x, y, batch_size=64)
    for method in ("steepest", "min_loss"):
        suggestion = finder.suggestion(method)
        assert 1e-3 * divergence < suggestion < divergence, (method, suggestion, divergence)


def test_lr_finder_stops_early_on_divergence():
    x, y = regression_problem(n=64)
    divergence = 2.0 / _curvature(x)
    model = linear_model(4)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    weights = model.get_weights()
    finder = LRFinder(min_learning_rate=1e-2, max_learning_rate=1e2, num_steps=60)
    finder.find(model, x, y, batch_size=64)
    assert len(finder.losses) < 60
    last = finder.smoothed_losses[-1]
    assert not np.isfinite(last) or last > 4.0 * min(finder.smoothed_losses)
    # Below 2 / L full-batch gradient descent cannot diverge on a quadratic.
    assert finder.learning_rates[-1] > divergence
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_lr_finder_find_counts_steps_across_dataset_epochs():
    x, y = regression_problem(n=12)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)  # 3 steps per epoch
    model = linear_model(4)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    finder = LRFinder(min_learning_rate=1e-5, max_learning_rate=1e-3, num_steps=7).find(
        model, dataset, shuffle=False)
    assert len(finder.learning_rates) == len(finder.losses) == 7


def test_lr_finder_rejects_schedule_learning_rate():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.9)
    model = one_weight_model()
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mae")
    x, y = constant_gradient_data(4)
    with pytest.raises(ValueError, match="float learning rate"):
        LRFinder(num_steps=3).find(model, x, y)


def test_lr_finder_suggestion_needs_a_run():
    with pytest.raises(ValueError, match="at least 3 recorded steps"):
        LRFinder().suggestion()
    with pytest.raises(ValueError, match="method"):
        LRFinder().suggestion("valley")


def _ran_finder():
    x, y = regression_problem(n=32)
    model = linear_model(4)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return LRFinder(min_learning_rate=1e-4, max_learning_rate=1.0, num_steps=10).find(
        model, x, y, batch_size=32)


def test_lr_finder_plot_returns_figure(tmp_path):
    pytest.importorskip("matplotlib")
    finder = _ran_finder()
    path = tmp_path / "lr_find.png"
    figure = finder.plot(path=str(path))
    assert type(figure).__name__ == "Figure"
    assert path.stat().st_size > 0
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    assert finder.plot(ax=ax) is figure


def test_lr_finder_plot_rejects_a_bad_path_and_saves_atomically(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    finder = _ran_finder()
    with pytest.raises(ValueError, match=r"Argument `path`.*Received: path='curve.nope'"):
        finder.plot(path="curve.nope")
    # A save that fails half-way leaves the previous image as it was, and no temporary file.
    path = tmp_path / "lr_find.png"
    path.write_bytes(b"previous image")
    from matplotlib.figure import Figure

    def failing_savefig(self, stream, **kwargs):
        stream.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    with pytest.raises(OSError, match="disk full"):
        finder.plot(path=str(path))
    assert path.read_bytes() == b"previous image"
    assert [p.name for p in tmp_path.iterdir()] == ["lr_find.png"]


def test_lr_finder_plot_without_matplotlib_names_the_extra(monkeypatch):
    finder = _ran_finder()
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"keras_dnnopt\[viz\]"):
        finder.plot()


# ------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: LRFinder(min_learning_rate=0.0), "min_learning_rate"),
        (lambda: LRFinder(min_learning_rate=1.0, max_learning_rate=1.0), "max_learning_rate"),
        (lambda: LRFinder(min_learning_rate=2.0, max_learning_rate=1.0), "max_learning_rate"),
        (lambda: LRFinder(num_steps=1), "num_steps"),
        (lambda: LRFinder(num_steps=10.5), "num_steps"),
        (lambda: LRFinder(smoothing=1.0), "smoothing"),
        (lambda: LRFinder(smoothing=-0.1), "smoothing"),
        (lambda: LRFinder(divergence_threshold=1.0), "divergence_threshold"),
        (lambda: LearningRateMonitor(log_every_batch="yes"), "log_every_batch"),
        (lambda: GradientNormMonitor(frequency=0), "frequency"),
        (lambda: GradientNormMonitor(log_key=""), "log_key"),
        (lambda: ThroughputMonitor(frequency=0), "frequency"),
        (lambda: ThroughputMonitor(log_key=None), "log_key"),
    ],
)
def test_validation_rejects(make, match):
    with pytest.raises(ValueError, match=f"Argument `{match}`"):
        make()


@pytest.mark.parametrize(
    "make",
    [
        lambda: LRFinder(min_learning_rate=1e-9, max_learning_rate=1.0000001e-9, num_steps=2),
        lambda: LRFinder(smoothing=0.0, divergence_threshold=1.01),
        lambda: LRFinder(smoothing=0.999),
        lambda: LearningRateMonitor(log_every_batch=True),
        lambda: GradientNormMonitor(frequency=1),
        lambda: ThroughputMonitor(frequency=1),
        lambda: ThroughputMonitor(frequency=None),
    ],
)
def test_validation_accepts_boundaries(make):
    make()


def test_callbacks_reject_a_model_of_the_other_keras(other_keras):
    model = other_keras.Sequential([other_keras.Input(shape=(1,)), other_keras.layers.Dense(1)])
    callback = GradientNormMonitor()
    callback.set_model(model)
    with pytest.raises(TypeError, match="keras_dnnopt is running on"):
        callback.on_train_begin()


def test_callbacks_compose_in_one_fit_with_checkpointing(tmp_path):
    """All callbacks in one `fit` with a OneCycle learning rate, saving the whole model
    every epoch (the optimizer config must stay serializable during fit)."""
    from keras_dnnopt.schedules import OneCycle

    x, y = regression_problem(n=32)
    model = linear_model(4)
    model.compile(optimizer=keras.optimizers.SGD(OneCycle(0.1, total_steps=8), momentum=0.9),
                  loss="mse")
    path = str(tmp_path / "model.keras")
    history = model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[
        LearningRateMonitor(), OneCycleMomentum(8), GradientNormMonitor(frequency=2),
        ThroughputMonitor(), keras.callbacks.ModelCheckpoint(path)])
    for key in ("learning_rate", "grad_norm", "samples_per_second"):
        assert len(history.history[key]) == 4
    assert keras.models.load_model(path).optimizer.get_config()["momentum"] == 0.9
    assert model.optimizer.momentum == 0.9


@pytest.mark.parametrize("make, expect_hook", [
    (lambda: LearningRateMonitor(), False),
    (lambda: LearningRateMonitor(log_every_batch=True), True),
    (lambda: ThroughputMonitor(), False),
    (lambda: ThroughputMonitor(frequency=5), True),
])
def test_batch_end_hook_only_when_needed(make, expect_hook):
    # Keras (3: async dispatch; tf_keras: _implements_train_batch_hooks) syncs the host after
    # every step when a callback implements on_train_batch_end: only do so when needed.
    callback = make()
    assert getattr(callback.on_train_batch_end, "_is_default", False) is (not expect_hook)
    clone = copy.deepcopy(callback)  # keras-tuner deep-copies callbacks
    assert getattr(clone.on_train_batch_end, "_is_default", False) is (not expect_hook)
    if not expect_hook:
        assert clone.on_train_batch_end.__self__ is clone


@pytest.mark.parametrize("make", [
    lambda: GradientNormMonitor(frequency=2),
    lambda: ThroughputMonitor(frequency=2),
    lambda: LearningRateMonitor(log_every_batch=True),
], ids=["GradientNormMonitor", "ThroughputMonitor", "LearningRateMonitor"])
def test_batch_hooks_leave_tf_keras_logs_as_tensors(make):
    """tf_keras converts the logs of every step to NumPy (a host sync per step) unless
    every callback with a batch hook accepts tensor logs: ours only write floats into
    the logs, so they must not force the conversion."""
    from keras_dnnopt.backend import USING_TF_KERAS

    if not USING_TF_KERAS:
        pytest.skip("Keras 3 always hands batch hooks Python logs (async dispatch or not)")

    class Probe(keras.callbacks.Callback):  # accepts tensor logs, records what it gets
        def __init__(self):
            super().__init__()
            self._supports_tf_logs = True
            self.loss_types = []

        def on_train_batch_end(self, batch, logs=None):
            self.loss_types.append(type(logs["loss"]))

    x, y = regression_problem(n=16)
    model = linear_model(4)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    probe = Probe()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[make(), probe])
    assert len(probe.loss_types) == 4
    assert all(issubclass(t, tf.Tensor) for t in probe.loss_types), probe.loss_types
