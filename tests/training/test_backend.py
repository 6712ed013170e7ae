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


def test_rank_output_reads_like_our_output_whatever_the_chunks() -> None:
    """Horovod copies each rank's prefixed lines in chunks that may end mid-line, one thread per rank."""
    import io
    import threading

    from sparkvision.training.backend import RankOutput

    console = io.StringIO()
    out = RankOutput(lambda: console)
    ranks = {
        "0": "[0]<stdout>:epoch 1/2: loss 517.1 val_loss 339.8\n[0]<stdout>:epoch 2/2: loss 445.5\n",
        "1": "[1]<stderr>:Traceback (most recent call last):\n[1]<stderr>:ValueError: bad shard\n[1]<stderr>:no newline",
    }
    start = threading.Barrier(2)

    def copy(text: str) -> None:
        start.wait()
        for i in range(0, len(text), 7):
            out.write(text[i : i + 7])

    threads = [threading.Thread(target=copy, args=(text,)) for text in ranks.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.flush()
    lines = console.getvalue().splitlines()
    assert [line for line in lines if line.startswith("epoch")] == [
        "epoch 1/2: loss 517.1 val_loss 339.8", "epoch 2/2: loss 445.5"]  # fmt: skip
    assert [line for line in lines if not line.startswith("epoch")] == [
        "worker 1: Traceback (most recent call last):", "worker 1: ValueError: bad shard", "worker 1: no newline"]  # fmt: skip
    assert RankOutput.readable_line("not from a rank\n") == "not from a rank\n"
