"""The one optimizer factory: the rate scaled by the workers, shared by the worker's optimizer,
the logged ``effective_lr`` and the warm-up schedule."""

from __future__ import annotations

from typing import Any

import pytest

from sparkvision.config import Config
from sparkvision.training.callbacks import Schedule
from sparkvision.training.optim import make_optimizer, scaled_learning_rate


@pytest.mark.parametrize("workers", [1, 2, 8])
def test_scaled_rate_is_the_rate_times_the_workers(cfg: Config, workers: int) -> None:
    tcfg = cfg.replace(**{"train.learning_rate": "0.003"}).train
    assert scaled_learning_rate(tcfg, workers) == pytest.approx(0.003 * workers)


def test_no_workers_is_an_error(cfg: Config) -> None:
    with pytest.raises(ValueError, match="at least 1 worker.*found 0"):
        scaled_learning_rate(cfg.train, 0)


@pytest.mark.parametrize("workers", [1, 4])
def test_optimizer_and_schedule_start_from_the_same_scaled_rate(cfg: Config, workers: int) -> None:
    import tensorflow as tf

    tcfg = cfg.replace(**{"train.learning_rate": "0.001", "train.warmup_epochs": "0"}).train
    optimizer = make_optimizer(tcfg, workers)
    assert isinstance(optimizer, tf.keras.optimizers.Adam)
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.001 * workers)
    schedule = Schedule.from_config(tcfg, workers, steps_per_epoch=5, monitor="val_loss")
    assert schedule.target_lr == pytest.approx(float(optimizer.learning_rate.numpy()))
    assert schedule.lr(3, 2, 1.0) == pytest.approx(0.001 * workers)


def test_the_distributed_wrapper_gets_the_scaled_optimizer(cfg: Config) -> None:
    received: list[Any] = []

    def wrapper(optimizer: Any) -> Any:
        received.append(optimizer)
        return optimizer

    optimizer = make_optimizer(cfg.train, 2, distributed_wrapper=wrapper)
    assert received == [optimizer]
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(2 * cfg.train.learning_rate)
