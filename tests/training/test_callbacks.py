"""The learning-rate policy: warm-up per step, reduce-on-plateau and early stopping."""

from __future__ import annotations

import math

import pytest

from sparkvision.training.callbacks import PlateauState, Schedule


def test_warmup_rises_linearly_to_the_scaled_rate_then_holds() -> None:
    s = Schedule(target_lr=0.004, warmup_epochs=2, steps_per_epoch=5, monitor="val_loss")
    rates = [s.lr(epoch, batch, 1.0) for epoch in range(3) for batch in range(5)]
    assert rates[0] == pytest.approx(0.0004)
    assert rates[9] == pytest.approx(0.004)
    assert all(b > a for a, b in zip(rates[:10], rates[1:10], strict=False))
    assert rates[10:] == [pytest.approx(0.004)] * 5


def test_no_warmup_starts_at_the_target() -> None:
    assert Schedule(0.01, 0, 5, "loss").lr(0, 0, 0.5) == pytest.approx(0.005)


def test_plateau_lowers_the_rate_after_patience_and_resets_on_improvement() -> None:
    s = Schedule(0.01, 0, 4, "val_loss", patience=2, factor=0.5)
    state = PlateauState()
    scales = []
    for epoch, value in enumerate([5.0, 4.0, 4.5, 4.2, 4.1, 3.0, 3.5]):
        state = s.update(state, epoch, value)
        scales.append(state.scale)
    assert scales == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]
    assert state.best == 3.0 and state.stopped_epoch == -1


@pytest.mark.parametrize(("patience", "stopped"), [(0, -1), (2, 3), (5, -1)])
def test_early_stopping_marks_the_epoch(patience: int, stopped: int) -> None:
    s = Schedule(0.01, 0, 4, "val_loss", stop_patience=patience)
    state = PlateauState()
    for epoch, value in enumerate([2.0, 1.0, 1.5, 1.2]):
        state = s.update(state, epoch, value)
    assert state.stopped_epoch == stopped


def test_state_round_trips_through_json_values() -> None:
    fresh = PlateauState()
    assert fresh.to_dict()["best"] is None
    again = PlateauState.from_dict(fresh.to_dict())
    assert math.isinf(again.best) and again.scale == 1.0
    moved = PlateauState(scale=0.25, best=0.7, plateau_wait=1, stop_wait=2, stopped_epoch=-1)
    assert PlateauState.from_dict(moved.to_dict()) == moved


def test_missing_or_nan_monitor_changes_nothing() -> None:
    s = Schedule(0.01, 0, 4, "val_loss", patience=1, stop_patience=1)
    state = PlateauState(best=1.0)
    assert s.update(state, 0, None) == state
    assert s.update(state, 0, float("nan")) == state


def test_controller_in_fit_warms_up_per_step_lowers_on_plateau_and_stops() -> None:
    """The Keras callback drives a real optimizer: per-step warm-up, one plateau cut, early stop."""
    import numpy as np
    import tensorflow as tf

    from sparkvision.training.callbacks import make_classes

    classes = make_classes()
    monitored = iter([3.0, 2.0, 2.5, 2.4, 2.6, 2.7, 2.8])
    seen_lr: list[float] = []

    class FakeValidation(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen_lr.append(float(self.model.optimizer.learning_rate.numpy()))

        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = next(monitored)

    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.Adam(1.0), loss="mse")
    schedule = Schedule(0.01, warmup_epochs=1, steps_per_epoch=4, monitor="val_loss", patience=2, factor=0.1,
                        stop_patience=3)  # fmt: skip
    controller = classes["LearningRateController"](schedule, PlateauState())
    timer = classes["EpochTimer"](images_per_epoch=16)
    x = np.ones((16, 2), np.float32)
    fit = model.fit(x, x[:, :1], batch_size=4, epochs=10, verbose=0, callbacks=[FakeValidation(), timer, controller])
    assert seen_lr[:4] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])
    assert len(fit.history["loss"]) == 5  # best at epoch 1, three worse epochs -> stop after epoch 4
    assert fit.history["lr"] == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.001])
    assert controller.state.stopped_epoch == 4
    assert all(v > 0 for v in fit.history["images_per_s"]) and all(v > 0 for v in fit.history["epoch_time_s"])


def test_epoch_progress_prints_each_logged_epoch_once_on_the_driver(tracking, capsys) -> None:
    """Horovod on Spark hands rank output over at the end; the driver prints each epoch's line as soon
    as rank 0 has logged it, in order, once, and the rest when the job ends."""
    from sparkvision.training.callbacks import EpochProgress

    run_id = tracking.create_run("epoch-progress-tests", "progress")
    progress = EpochProgress(tracking, run_id, epochs=3, interval=3600)  # polled by hand here
    tracking.log_metrics(run_id, {"loss": 0.5, "val_loss": 0.6, "epoch_time_s": 2.0, "images_per_s": 100}, step=0)
    tracking.log_metrics(run_id, {"loss": 0.4, "val_loss": 0.5, "epoch_time_s": 2.0, "images_per_s": 100}, step=1)
    progress.poll()
    progress.poll()
    assert capsys.readouterr().out.splitlines() == [
        "epoch 1/3: loss 0.5 val_loss 0.6 (2.0 s, 100 img/s)",
        "epoch 2/3: loss 0.4 val_loss 0.5 (2.0 s, 100 img/s)",
    ]
    with progress:
        tracking.log_metrics(run_id, {"loss": 0.3, "epoch_time_s": 1.5, "eval_time_s": 0.3, "images_per_s": 120},
                             step=2)  # fmt: skip
    assert capsys.readouterr().out.splitlines() == ["epoch 3/3: loss 0.3 (1.5 s, 0.3 s evaluating, 120 img/s)"]
    tracking.finish_run(run_id)


def test_cosine_falls_from_the_target_after_warmup_to_zero_at_the_last_step() -> None:
    s = Schedule(0.01, warmup_epochs=1, steps_per_epoch=4, monitor="val_loss", kind="cosine", epochs=5)
    rates = [s.lr(epoch, batch, 1.0) for epoch in range(5) for batch in range(4)]
    assert rates[3] == pytest.approx(0.01) and rates[4] == pytest.approx(0.01)  # the warm-up's end, the top
    assert all(b < a for a, b in zip(rates[4:], rates[5:], strict=False))
    assert rates[4 + 8] == pytest.approx(0.005)  # half way through the 16 steps after the warm-up
    assert rates[-1] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 15 / 16)))
    assert s.lr(4, 3, 0.5) == pytest.approx(rates[-1] * 0.5)  # a plateau's scale multiplies
