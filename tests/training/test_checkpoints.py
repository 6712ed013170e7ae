"""The checkpoint Store: weights and optimizer state round-trip through local folders and
fsspec URLs; ``state.json`` always names a complete checkpoint; old epochs are pruned."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from sparkvision.training.checkpoints import KEEP_LAST, CheckpointState, Store


def _model_and_optimizer(seed: int):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
    optimizer = tf.keras.optimizers.Adam(0.01)
    model.compile(optimizer=optimizer, loss="mse")
    return model, optimizer


def _state(epoch: int, run_id: str = "run1") -> CheckpointState:
    return CheckpointState(epoch=epoch, run_id=run_id, checkpoint="", meta={"image_size": 32}, lr=0.001,
                           callbacks={"plateau": {"scale": 0.5}}, metrics={"loss": 1.0 / (epoch + 1)})  # fmt: skip


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return Store(tmp_path / "store" / "sparkvision-vae")
    return Store(f"memory://ckpt-{uuid.uuid4().hex}/sparkvision-vae")


def test_weights_and_optimizer_state_round_trip(store: Store, tmp_path: Path) -> None:
    import tensorflow as tf

    model, optimizer = _model_and_optimizer(seed=1)
    x, y = np.ones((8, 3), np.float32), np.zeros((8, 2), np.float32)
    model.fit(x, y, epochs=3, verbose=0)
    written = store.save(tf.train.Checkpoint(model=model, optimizer=optimizer), _state(epoch=2))
    assert written.checkpoint == "runs/run1/epoch-0002/ckpt"

    fresh, fresh_opt = _model_and_optimizer(seed=2)
    assert not np.allclose(fresh.get_weights()[0], model.get_weights()[0])
    fresh_opt.build(fresh.trainable_variables)
    state = store.latest()
    assert state == written
    store.restore(tf.train.Checkpoint(model=fresh, optimizer=fresh_opt), state, tmp_path / "restore")
    for a, b in zip(fresh.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(fresh_opt.iterations.numpy()) == int(optimizer.iterations.numpy()) == 3
    for a, b in zip(fresh_opt.variables, optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_latest_is_none_on_an_empty_store(store: Store) -> None:
    assert store.latest() is None


def test_old_epochs_are_pruned_and_state_names_the_newest(store: Store) -> None:
    import tensorflow as tf

    model, optimizer = _model_and_optimizer(seed=1)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
    for epoch in range(4):
        store.save(ckpt, _state(epoch))
    assert store.listdir("runs/run1") == [f"epoch-{e:04d}" for e in range(4 - KEEP_LAST, 4)]
    assert store.latest().epoch == 3 and store.latest().metrics == {"loss": 0.25}
    store.save(ckpt, _state(0, run_id="run2"))  # a new run leaves the old run's files alone
    assert store.listdir("runs") == ["run1", "run2"] and store.latest().run_id == "run2"


def test_restore_names_missing_files(store: Store, tmp_path: Path) -> None:
    import tensorflow as tf

    model, optimizer = _model_and_optimizer(seed=1)
    state = store.save(tf.train.Checkpoint(model=model, optimizer=optimizer), _state(1))
    store.remove("runs/run1/epoch-0001")
    with pytest.raises(FileNotFoundError, match=r"epoch-0001.*does not exist"):
        store.restore(tf.train.Checkpoint(model=model), state, tmp_path / "r")


def test_best_checkpoint_survives_pruning_and_belongs_to_its_run(store: Store, tmp_path: Path) -> None:
    import tensorflow as tf

    model, optimizer = _model_and_optimizer(seed=3)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
    assert store.best("run1") is None
    for epoch in range(KEEP_LAST + 3):
        store.save(ckpt, _state(epoch), best=epoch == 1)  # epoch 1 was the best one
    best = store.best("run1")
    assert best is not None and best.epoch == 1 and best.checkpoint == "runs/run1/epoch-0001/ckpt"
    kept = store.listdir("runs/run1")
    assert kept == ["epoch-0001", *[f"epoch-{e:04d}" for e in range(3, KEEP_LAST + 3)]]
    assert store.latest().epoch == KEEP_LAST + 2
    store.restore(tf.train.Checkpoint(model=model, optimizer=optimizer), best, tmp_path / "restore")
    # Another run's best is not this run's.
    assert store.best("run2") is None
