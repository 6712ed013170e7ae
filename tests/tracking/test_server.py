"""The MLflow server lifecycle against real servers on 127.0.0.1."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from sparkvision import procs
from sparkvision.config import Config, MlflowConfig
from sparkvision.tracking import server as tracking


def _processes_in(folder: Path) -> list[int]:
    """Live pids whose working directory is ``folder`` (the server runs with cwd = its state dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if Path(cwd) == folder.resolve() and procs.is_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _double_model():
    """A tiny pyfunc model returning its ``x`` column doubled."""
    import mlflow.pyfunc

    class Double(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input["x"] * 2

    return Double()


def test_runs_artifacts_and_registry_through_the_server(mlflow_server: str, tmp_path: Path) -> None:
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    exp_id = client.create_experiment(f"test-tracking-{tmp_path.name}")
    run = client.create_run(exp_id)
    for step, value in enumerate([0.5, 0.25, 0.125]):
        client.log_metric(run.info.run_id, "loss", value, step=step)
    note = tmp_path / "note.txt"
    note.write_text("hello from the test\n")
    client.log_artifact(run.info.run_id, str(note))
    client.set_terminated(run.info.run_id)

    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.25), (2, 0.125)]
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), "artifacts must go through the server proxy"
    back = Path(client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "down")))
    assert back.read_text() == "hello from the test\n"

    mlflow.set_tracking_uri(mlflow_server)
    name = f"test-double-{tmp_path.name}"
    with mlflow.start_run(experiment_id=exp_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=_double_model(), registered_model_name=name, pip_requirements=[]
        )
    version = info.registered_model_version
    client.set_registered_model_alias(name, "champion", str(version))
    assert client.get_model_version_by_alias(name, "champion").version == str(version)
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert list(loaded.predict(pd.DataFrame({"x": [1, 2, 3]}))) == [2, 4, 6]


def test_start_is_idempotent_stop_kills_the_whole_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "mlflow"
    first = tracking.start_server(MlflowConfig(port=0, start_timeout_s=120), state)
    try:
        again = tracking.start_server(MlflowConfig(port=0), state)
        assert (again.pid, again.url) == (first.pid, first.url)
        assert first.pgid == first.pid
        status = tracking.server_status(state)
        assert status["running"] and status["healthy"] and status["url"] == first.url
        assert first.pid in status["processes"] and len(status["processes"]) >= 2, "uvicorn worker in the group"

        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        cfg = Config().replace(**{"paths.mlflow": str(state)})
        assert tracking.tracking_uri(cfg) == first.url
        assert tracking.ensure_server(cfg) == first.url
        assert (
            tracking.tracking_uri(cfg.replace(**{"mlflow.tracking_uri": "http://elsewhere:1"})) == "http://elsewhere:1"
        )
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:2")
        assert tracking.tracking_uri(cfg) == "http://from-env:2"
        monkeypatch.delenv("MLFLOW_TRACKING_URI")
    finally:
        stopped = tracking.stop_server(state)
    assert stopped is True
    assert procs.group_members(first.pgid) == []
    assert not procs.is_alive(first.pid)
    assert not procs.port_open("127.0.0.1", first.port)
    assert not (state / tracking.STATE_FILE).exists()
    assert tracking.server_status(state)["running"] is False
    assert tracking.stop_server(state) is False
    with pytest.raises(tracking.TrackingError, match="sparkvision mlflow start"):
        tracking.tracking_uri(cfg)


def test_port_in_use_is_reported_before_starting(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(tracking.TrackingError, match=f"127.0.0.1:{port}: the port is already in use"):
            tracking.start_server(MlflowConfig(port=port), tmp_path)
    assert not (tmp_path / tracking.STATE_FILE).exists()


@pytest.mark.parametrize(
    ("breakage", "timeout_s", "expected"),
    [
        ("corrupt_database", 120.0, r"exited with code 1 before it was ready(.|\n)*file is not a database"),
        ("none", 1.0, "was not ready after 1 s"),
    ],
)
def test_failed_start_reports_the_log_and_leaves_nothing_running(
    tmp_path: Path, breakage: str, timeout_s: float, expected: str
) -> None:
    state = tmp_path / "mlflow"
    state.mkdir()
    if breakage == "corrupt_database":
        (state / "mlflow.db").write_text("not a SQLite database\n" * 200)
    with pytest.raises(tracking.TrackingError, match=expected) as info:
        tracking.start_server(MlflowConfig(port=0, start_timeout_s=timeout_s), state)
    assert str(state / tracking.LOG_FILE) in str(info.value)
    assert not (state / tracking.STATE_FILE).exists()
    assert _processes_in(state) == []


def test_an_existing_server_given_as_tracking_uri_is_used_and_none_is_started(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sparkvision.config import load_config
    from sparkvision.tracking import Tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    state = tmp_path / "mlflow"
    cfg = load_config("test", [f"mlflow.tracking_uri={mlflow_server}", f"paths.mlflow={state}"])
    assert tracking.ensure_server(cfg) == mlflow_server
    client = Tracking.from_config(cfg, start=True)
    assert client.uri == mlflow_server
    assert client.client.search_experiments()  # it answers: the existing server, not a new one
    assert not (state / tracking.STATE_FILE).exists()
    assert tracking.server_status(state)["running"] is False


def _non_loopback_address() -> str | None:
    """This machine's address on its default route (a UDP connect sends nothing), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_a_server_bound_beyond_loopback_warns_once_that_it_has_no_authentication(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    state = tmp_path / "mlflow"
    with caplog.at_level("WARNING", logger=tracking.__name__):
        server = tracking.start_server(MlflowConfig(host=address, port=0), state)
        try:
            assert server.url == f"http://{address}:{server.port}"
            assert tracking.start_server(MlflowConfig(host=address, port=0), state).pid == server.pid
        finally:
            tracking.stop_server(state)
    warnings = [r.getMessage() for r in caplog.records if "no authentication" in r.getMessage()]
    assert warnings == [f"MLflow server {server.url} listens on {address} (mlflow.host) with no authentication: "
                        "anyone who can reach it can read, change and delete runs and models"]  # fmt: skip


def test_the_default_server_stays_on_loopback() -> None:
    assert MlflowConfig().host == "127.0.0.1"


@pytest.mark.parametrize(
    ("uri", "master", "unreachable"),
    [
        ("http://127.0.0.1:5000", "yarn", True),
        ("http://localhost:5000", "k8s://https://api:6443", True),
        ("sqlite:///runs/mlflow.db", "spark://head:7077", True),
        ("http://127.0.0.1:5000", "local[2]", False),
        ("http://127.0.0.1:5000", "local-cluster[1,2,1024]", False),
        ("http://127.0.0.1:5000", "spark://127.0.0.1:7077", False),
        ("http://mlflow.internal:5000", "yarn", False),
        ("https://10.0.0.5", "yarn", False),
        ("databricks", "yarn", False),
    ],
)
def test_loopback_uris_are_flagged_only_for_masters_with_executors_elsewhere(
    uri: str, master: str, unreachable: bool
) -> None:
    assert tracking.warn_if_unreachable(uri, master) is unreachable


def test_the_unreachable_warning_names_the_setting_and_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    uri = f"http://127.0.0.1:{procs.free_port()}"  # one no other test warned about
    with caplog.at_level("WARNING", logger=tracking.__name__):
        for _ in range(3):
            tracking.warn_if_unreachable(uri, "yarn")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert uri in messages[0] and "mlflow.tracking_uri" in messages[0] and "mlflow.host" in messages[0]
