"""The console script and the spark-submit entry points are one parser, built from the command table."""

from __future__ import annotations

import inspect
import logging
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sparkvision import logs
from sparkvision.cli import main
from sparkvision.commands import COMMANDS, Command
from sparkvision.spark import console_conf

ROOT = Path(__file__).resolve().parent.parent
JOBS = sorted(p.stem for p in (ROOT / "jobs").glob("*.py"))


@pytest.fixture(autouse=True)
def _process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what ``main`` sets for the whole process (logging, warnings, worker environment)."""
    monkeypatch.setattr(logs, "_verbosity", logs.verbosity())
    keys = {k for env in logs.WORKER_ENV.values() for k in env}
    env = {k: os.environ.get(k) for k in keys}
    names = ["", "sparkvision", *logs.LIBRARY_LEVELS[0], *logs.QUIET_MESSAGES]
    saved = {n: (logging.getLogger(n).level, logging.getLogger(n).handlers[:], logging.getLogger(n).filters[:])
             for n in names}  # fmt: skip
    with warnings.catch_warnings():
        yield
    logging.captureWarnings(False)
    for n, (level, handlers, filters) in saved.items():
        logger = logging.getLogger(n)
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.filters[:] = filters
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.parametrize("job", JOBS)
def test_job_forwards_to_the_same_command(job: str) -> None:
    source = (ROOT / "jobs" / f"{job}.py").read_text()
    assert "spark-submit" in source.split('"""')[1], "the docstring shows the spark-submit line"
    assert len(source.splitlines()) < 40
    assert job not in sys.stdlib_module_names, "jobs/ comes first on sys.path when a job runs"
    command = re.search(r'main\(\["([a-z]+)"', source).group(1)
    assert command in COMMANDS and job in (command, f"{command}_images")
    out = subprocess.run([sys.executable, str(ROOT / "jobs" / f"{job}.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out.startswith(f"usage: sparkvision {command}")


def test_the_parser_lists_every_command_of_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    listed_names = [line.split()[0] for line in listed.splitlines() if re.match(r"    \S", line)]
    assert listed_names == list(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS.values(), ids=list(COMMANDS))
def test_every_command_takes_env_set_and_verbosity(command: Command, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command.name, "--help"]) == 0
    usage = capsys.readouterr().out
    for option in ("--env", "--set", "--verbose", "--debug", *(a.option for a in command.args if not a.positional)):
        assert option in usage, option


@pytest.mark.parametrize("command", COMMANDS.values(), ids=list(COMMANDS))
def test_the_spec_matches_the_function(command: Command) -> None:
    params = inspect.signature(command.run).parameters
    names = [p for p in params if p not in ("cfg", "env", "overrides")]
    assert names == [a.name for a in command.args]
    for arg in command.args:
        p = params[arg.name]
        assert (p.default is inspect.Parameter.empty) == arg.required, arg.name
        if not arg.required:
            assert p.default == arg.default or (arg.type is list and tuple(p.default) == tuple(arg.default)), arg.name
    assert ("cfg" in params) == command.config


def test_config_show_prints_the_resolved_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--env", "test", "--set", "train.epochs=7"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["epochs"] == 7
    assert shown["ingest"]["image_size"] == 32  # from conf/test
    assert shown["ingest"]["crop"] == "center_square"  # from conf/base


def test_importing_the_pipeline_runner_does_not_import_the_cli() -> None:
    code = "import sparkvision.pipeline, sys; print('sparkvision.cli' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------- user errors

ERROR_CASES = [
    # (id, fixtures needed, argv with {tmp} {parquet} {port} placeholders, what the line must name)
    ("usage-missing-argument", [], ["train"], "train: the following arguments are required: --data"),
    ("usage-bad-choice", [], ["ingest", "--format", "celebb", "--input", "x", "--output", "y"], "'celebb'"),
    ("usage-unknown-command", [], ["trian"], "did you mean 'train'?"),
    ("config-unknown-key", [], ["config", "show", "--set", "ingest.image_sise=64"], "did you mean 'image_size'?"),
    ("missing-dataset", [], ["train", "--data", "/no/such/dir"], "--data /no/such/dir: expected an ingested dataset"),
    (
        "missing-input",
        [],
        ["ingest", "--format", "celeba", "--input", "/no/such", "--output", "{tmp}/o"],
        "--input /no/such: expected a folder, found no such file",
    ),
    (
        "input-is-a-file",
        [],
        ["ingest", "--format", "celeba", "--input", "{tmp}/file.txt", "--output", "{tmp}/o"],
        "file.txt: expected a folder, found a file",
    ),
    (
        "missing-score-input",
        [],
        ["score", "--model-uri", "models:/m@a", "--input", "/no/such", "--output", "{tmp}/o"],
        "--input /no/such: expected a folder or file of images",
    ),
    (
        "glob-without-match",
        [],
        ["score", "--model-uri", "models:/m@a", "--input", "{tmp}/*.png", "--output", "o"],
        "*.png: expected a glob matching image files, found no match",
    ),
    ("empty-path", [], ["generate", "celeba", "--out", ""], "--out: expected a path, found an empty value"),
    ("not-a-dataset", [], ["train", "--data", "{tmp}/empty"], "without _latest.json or manifest.json"),
    ("file-url-is-read", [], ["train", "--data", "file://{tmp}/empty"], "without _latest.json or manifest.json"),
    (
        "unknown-scheme",
        [],
        ["train", "--data", "foo://bucket/celeba"],
        "--data foo://bucket/celeba: unknown filesystem scheme 'foo://' (expected a local path or one of file://",
    ),
    (
        "unknown-scheme-output",
        [],
        ["score", "--model-uri", "models:/m@a", "--input", "{tmp}/empty", "--output", "ftp://host/x"],
        "--output ftp://host/x: unknown filesystem scheme 'ftp://'",
    ),
    (
        "unreachable-filesystem",
        [],
        ["ingest", "--format", "celeba", "--input", "{tmp}/empty", "--output", "hdfs://nn/x"],
        "--output hdfs://nn/x: cannot reach the 'hdfs://' filesystem (",
    ),
    ("file-url-with-host", [], ["train", "--data", "file://host/data"], "expected a file URL of an absolute path"),
    ("unknown-model", [], ["train", "--model", "vea", "--data", "{tmp}/ds"], "'vea'; did you mean 'vae'?"),
    (
        "gallery-not-enrolled",
        [],
        ["faces", "identify", "--input", "{tmp}/empty", "--gallery", "{tmp}/empty", "--output", "{tmp}/ids"],
        "--gallery {tmp}/empty: expected a faces gallery",
    ),
    (
        "enroll-without-model",
        [],
        ["faces", "enroll", "--input", "{tmp}/ds", "--gallery", "{tmp}/g"],
        "--model-uri: expected the embedding model",
    ),
    (
        "model-folder-without-mlmodel",
        [],
        ["score", "--model-uri", "{tmp}/empty", "--input", "{tmp}/empty", "--output", "{tmp}/o"],
        "expected an MLflow model folder",
    ),
    ("invalid-pipeline", [], ["pipeline", "{tmp}/bad.yaml"], "bad.yaml:2: step 'a': unknown command 'trian'"),
    (
        "image-size-mismatch",
        ["celeba_parquet"],
        ["train", "--data", "{parquet}", "--env", "test", "--set", "train.image_size=64"],
        "train.image_size 64 requested, 32 ingested",
    ),
    (
        "too-many-workers",
        ["celeba_parquet"],
        ["train", "--data", "{parquet}", "--env", "test", "--workers", "64"],
        "row group(s)",
    ),
    (
        "no-checkpoint-to-resume",
        ["celeba_parquet"],
        ["train", "--data", "{parquet}", "--env", "test", "--resume", "--set", "paths.store={tmp}/store"],
        "--resume: expected a checkpoint of sparkvision-vae at {tmp}/store/sparkvision-vae/state.json, found none",
    ),
    (
        "no-tracking-server",
        ["celeba_parquet", "no_tracking_env"],
        ["train", "--data", "{parquet}", "--env", "test", "--set", "paths.mlflow={tmp}/mlflow"],
        "no MLflow tracking server",
    ),
    (
        "unreachable-tracking-server",
        ["celeba_parquet", "no_tracking_env"],
        ["train", "--data", "{parquet}", "--env", "test", "--set", "mlflow.tracking_uri=http://127.0.0.1:{port}"],
        "MLflow server http://127.0.0.1:{port}: expected an answer from http://127.0.0.1:{port}/health, found none",
    ),
    (
        "unknown-alias",
        ["mlflow_server"],
        ["score", "--model-uri", "models:/sparkvision-nope@champion", "--input", "{tmp}/empty", "--output", "{tmp}/o"],
        "--model-uri models:/sparkvision-nope@champion: expected a registered model version on http",
    ),
    (
        "unknown-version",
        ["mlflow_server"],
        ["score", "--model-uri", "models:/sparkvision-nope/7", "--input", "{tmp}/empty", "--output", "{tmp}/o"],
        "--model-uri models:/sparkvision-nope/7: expected a registered model version",
    ),
    (
        "unknown-run",
        ["mlflow_server"],
        ["report", "--run", "0123456789abcdef0123456789abcdef"],
        "--run 0123456789abcdef0123456789abcdef: expected a run on http",
    ),
]


def _forbid_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make building a SparkSession fail the test: the error must be found before."""
    from sparkvision import spark

    def no_spark(*args: object, **kwargs: object) -> None:
        raise AssertionError("the error was found only after Spark started")

    monkeypatch.setattr(spark, "get_spark", no_spark)


@pytest.fixture()
def error_env(tmp_path: Path) -> dict[str, str]:
    """Placeholders of ERROR_CASES and the files they point at."""
    from sparkvision.procs import free_port

    (tmp_path / "empty").mkdir()
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "manifest.json").write_text("{}")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "bad.yaml").write_text("steps:\n  - {name: a, command: trian}\n")
    return {"tmp": str(tmp_path), "port": str(free_port())}


@pytest.mark.parametrize(("fixtures", "argv", "named"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_user_errors_are_one_line_with_exit_2_before_spark(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error_env: dict[str, str],
    fixtures: list[str],
    argv: list[str],
    named: str,
) -> None:
    values = dict(error_env)
    for name in fixtures:
        if name == "no_tracking_env":
            monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        elif name == "celeba_parquet":
            values["parquet"] = str(request.getfixturevalue(name))
        else:
            request.getfixturevalue(name)
    _forbid_spark(monkeypatch)
    capsys.readouterr()  # what building the fixtures logged
    code = main([a.format(**values) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("sparkvision: error: ")
    assert named.format(**values) in err


def test_debug_adds_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", "/no/such/dir", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "UserError" in err
    assert err.splitlines()[-1].startswith("sparkvision: error: --data /no/such/dir")


def test_an_unexpected_error_keeps_its_traceback_and_exits_1(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from sparkvision import preflight\n"
        "def broken(*a, **k): raise RuntimeError('a bug, not a user error')\n"
        "preflight.dataset = broken\n"
        "from sparkvision.cli import main\n"
        "sys.exit(main(['train', '--data', 'x']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "RuntimeError: a bug, not a user error" in done.stderr


# --------------------------------------------------------------------------- console logs


CLOUDPICKLE = "Passing a Python object as `python_model` causes it to be serialized using CloudPickle"


@pytest.mark.parametrize(
    ("verbosity", "root_info", "mlflow_info", "cloudpickle"), [(0, False, False, False), (1, True, True, True)],
    ids=["default", "verbose"],
)  # fmt: skip
def test_default_shows_our_progress_and_hides_library_chatter(
    verbosity: int, root_info: bool, mlflow_info: bool, cloudpickle: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup(verbosity)
    logging.getLogger("sparkvision.training.trainer").info("training vae: 4 steps/epoch")
    logging.info("scope global has keys ['rank_1']")  # Horovod's rendezvous server logs on the root logger
    err = capsys.readouterr().err
    assert "INFO sparkvision.training.trainer: training vae: 4 steps/epoch" in err
    assert ("scope global has keys" in err) == root_info
    # MLflow logs through its own handler; what we decide is its level and which warnings pass.
    assert logging.getLogger("mlflow.store.model_registry").isEnabledFor(logging.INFO) == mlflow_info
    pyfunc = logging.getLogger("mlflow.pyfunc")
    record = pyfunc.makeRecord("mlflow.pyfunc", logging.WARNING, __file__, 1, CLOUDPICKLE, (), None)
    assert bool(pyfunc.filter(record)) == cloudpickle
    record.msg = "model signature does not match the input example"
    assert pyfunc.filter(record), "other MLflow warnings still show"


def test_setup_twice_keeps_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup(0)
    logs.setup(0)
    logging.getLogger("sparkvision").info("once")
    assert capsys.readouterr().err.count("once") == 1


def test_workers_get_quiet_environment_but_the_users_value_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in logs.WORKER_ENV[0]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    logs.setup(0)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
    assert "ignore::FutureWarning" in os.environ["PYTHONWARNINGS"]
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING"
    conf = console_conf({}, "ERROR")
    assert conf["spark.executorEnv.TF_CPP_MIN_LOG_LEVEL"] == "1"
    assert conf["spark.executorEnv.PYTHONWARNINGS"] == os.environ["PYTHONWARNINGS"]


def test_future_warnings_are_ignored_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup(0)
    warnings.warn("pyarrow.localfs is deprecated", FutureWarning, stacklevel=1)
    assert "localfs" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("configured", "verbosity", "expected"),
    [("ERROR", 0, "ERROR"), ("ERROR", 1, "WARN"), ("ERROR", 2, "INFO"), ("INFO", 1, "INFO"), ("warn", 0, "WARN")],
)
def test_spark_console_level(configured: str, verbosity: int, expected: str) -> None:
    logs.setup(verbosity)
    assert logs.spark_level(configured) == expected


def test_spark_console_conf_keeps_the_users_settings(capsys: pytest.CaptureFixture[str]) -> None:
    conf = console_conf({"spark.driver.extraJavaOptions": "-Xss4m"}, "ERROR")
    assert conf["spark.ui.showConsoleProgress"] == "false", "no progress bar when stderr is not a terminal"
    java = conf["spark.driver.extraJavaOptions"]
    assert java.startswith("-Xss4m -Dlog4j2.configurationFile=file:")
    props = java.split("configurationFile=file://", 1)[1]
    text = open(props).read()
    assert "rootLogger.level = error" in text and "PythonGatewayServer" in text
    mine = {"spark.ui.showConsoleProgress": "true", "spark.driver.extraJavaOptions": "-Dlog4j2.configurationFile=x"}
    forwarded = {f"spark.executorEnv.{k}": v for k, v in logs.forwarded_env().items()}  # set by earlier commands
    assert console_conf(mine, "ERROR") == {**mine, **forwarded}


def test_a_failed_pipeline_step_is_one_error_line_with_hints_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = tmp_path / "fail.yaml"
    pipe.write_text(
        "name: p\nsteps:\n"
        "  - {name: load, command: ingest, args: {format: celeba, input: /no/such, output: x}}\n"
        "  - {name: show, command: config, args: {action: show}, needs: [load]}\n"
    )
    assert main(["pipeline", str(pipe), "--set", f"paths.runs={tmp_path / 'runs'}"]) == 1
    first, *hints = capsys.readouterr().err.splitlines()
    assert first.startswith(f"sparkvision: error: pipeline p stopped at step 'load' ({pipe}:3): --input /no/such")
    assert [h.split(":")[0] for h in hints] == ["  not run", "  rerun from here"]


def test_train_then_score_through_the_cli(
    mlflow_server: str, celeba_parquet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The happy path of the commands the demo runs: what the user reads, and that it worked."""
    from sparkvision.data.generators.celeba import generate_new_images

    new_images = generate_new_images(tmp_path / "new", count=4, seed=5)
    sets = ["--set", f"paths.store={tmp_path / 'store'}", "--set", "train.epochs=1",
            "--set", "train.registered_model_prefix=cli-test"]  # fmt: skip
    assert (
        main(["train", "--env", "test", "--data", str(celeba_parquet), "--model", "vae", "--workers", "1", *sets]) == 0
    )
    out = capsys.readouterr().out
    assert "trained vae (epochs 1-1): models:/cli-test-vae@candidate = version 1" in out, out
    assert f"run: {mlflow_server}/#/experiments/" in out and "test: " in out, out

    scored = tmp_path / "scored"
    assert main(["score", "--env", "test", "--model-uri", "models:/cli-test-vae@candidate",
                 "--input", str(tmp_path / "new"), "--output", str(scored)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"scored {len(new_images)} image(s) with models:/cli-test-vae/1" in out, out
    assert f"{len(new_images)} ok, 0 failed" in out, out
