"""The backend seam: the in-process backend runs the training function in this process as a
world of one, with the rank's environment, and refuses what only several processes can do."""

from __future__ import annotations

import os
from typing import Any

import pytest

from sparkvision.training.backend import InProcessBackend
from sparkvision.training.collective import Collective, LocalCollective


def _report(collective: Collective, key: str) -> dict[str, Any]:
    return {"rank": collective.rank, "size": collective.size, "value": os.environ.get(key),
            "owns_process": collective.owns_process}  # fmt: skip


def test_in_process_runs_one_rank_with_the_env_and_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARKVISION_BACKEND_TEST", raising=False)
    results = InProcessBackend().run(_report, args=("SPARKVISION_BACKEND_TEST",), num_proc=1,
                                     env={"SPARKVISION_BACKEND_TEST": "on-the-rank"})  # fmt: skip
    assert results == [{"rank": 0, "size": 1, "value": "on-the-rank", "owns_process": False}]
    assert "SPARKVISION_BACKEND_TEST" not in os.environ


@pytest.mark.parametrize("num_proc", [0, 2])
def test_in_process_refuses_other_than_one_worker(num_proc: int) -> None:
    with pytest.raises(ValueError, match=rf"exactly 1 worker, {num_proc} were requested.*train.workers=1"):
        InProcessBackend().run(_report, args=("HOME",), num_proc=num_proc)


def test_the_local_collective_is_the_identity() -> None:
    import tensorflow as tf

    local = LocalCollective()
    tensor = tf.constant([1.0, 3.0])
    assert local.average(tensor, name="x") is tensor
    assert local.optimizer_wrapper() is None and local.tape_wrapper() is None
    assert local.start_callbacks() == [] and local.metric_callbacks() == []
