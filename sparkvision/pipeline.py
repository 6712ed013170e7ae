"""Declarative pipelines (``pipelines/*.yaml``): validated up front, run in dependency order in-process.

A pipeline file::

    name: nightly
    env: base                    # configuration layer of every step (`--env` on the command line wins)
    set: [train.epochs=3]        # overrides for every step (`--set` on the command line adds more)
    vars: {demo: "${data}/demo"} # ${name} substitution; built in: data, runs, mlflow, root, env, date, stamp
    steps:
      - name: ingest
        command: [ingest, --format, celeba, --input, "${demo}/celeba", --output, "${demo}/parquet"]
      - name: train
        command: [train, --model, vae, --data, "${demo}/parquet"]
        needs: [ingest]
        set: [train.workers=2]   # overrides for this step only
      - name: look
        python: sparkvision.pipeline:where_to_look   # module:function, called with `args` as keywords
        args: {report: "${runs}/reports"}            # (and cfg=Config when it has a `cfg` parameter)
        needs: [train]

Every ``command`` runs through ``sparkvision.cli.main`` in this process, so one SparkSession
serves all steps. A run record is written to ``<paths.runs>/pipelines/<name>-<stamp>.json``
after every step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import inspect
import io
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from sparkvision.config import PROJECT_ROOT, Config, ConfigError, load_config

TOP_KEYS = ("name", "description", "env", "set", "vars", "steps")
STEP_KEYS = ("name", "description", "command", "python", "args", "needs", "set")
VAR = re.compile(r"\$\{([^}]*)\}")


class PipelineError(ValueError):
    """A pipeline file is invalid (every problem is listed with file, line and step) or a step failed."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One validated step: a CLI command line or a ``module:function`` call, after substitution."""

    name: str
    line: int
    needs: tuple[str, ...]
    command: tuple[str, ...] = ()
    python: str = ""
    args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    overrides: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """A validated pipeline: steps in dependency order."""

    name: str
    file: Path
    env: str
    overrides: tuple[str, ...]
    variables: Mapping[str, str]
    steps: tuple[Step, ...]


# --------------------------------------------------------------------------- loading


def load_pipeline(file: str | Path, cfg: Config) -> Pipeline:
    """Read and validate a pipeline file; all problems are reported at once.

    Args:
        file: The pipeline YAML file.
        cfg: The configuration of the ``pipeline`` command (its ``env`` and overrides carry over).

    Returns:
        The pipeline with variables substituted and steps in dependency order.

    Raises:
        PipelineError: Listing every problem as ``FILE:LINE: step 'NAME': what was expected, what was found``.
    """
    file = Path(file)
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise PipelineError(f"{file}: pipeline file not found") from None
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        raise PipelineError(f"{where}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{file}: expected a mapping with 'name' and 'steps', found {type(data).__name__}")

    errors: list[str] = []

    def err(line: int, msg: str) -> None:
        errors.append(f"{file}:{line}: {msg}")

    _check_keys(data, TOP_KEYS, "pipeline", 1, err)
    name = str(data.get("name") or file.stem)
    env = cfg.env if cfg.env != "base" else str(data.get("env") or "base")
    file_sets = _string_list(data.get("set"), "set", _line(root, "set"), err)
    variables = _variables(data.get("vars") or {}, cfg, env, _line(root, "vars"), err)

    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        err(_line(root, "steps"), f"'steps' must be a non-empty list of steps, found {raw_steps!r}")
        raw_steps = []
    step_nodes = _value_node(root, "steps")
    steps: list[Step] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_steps):
        line = step_nodes.value[i].start_mark.line + 1 if step_nodes is not None else 1
        step = _parse_step(raw, i, line, variables, err)
        if step is None:
            continue
        if step.name in seen:
            err(line, f"step '{step.name}': duplicate name (first defined on line {seen[step.name]})")
            continue
        seen[step.name] = line
        steps.append(step)

    names = [s.name for s in steps]
    for step in steps:
        for need in step.needs:
            if need not in names:
                err(step.line, f"step '{step.name}': needs unknown step '{need}'{_nearest(need, names)}")
    if not errors:
        ordered, cycle = _topological(steps)
        if cycle:
            err(cycle[0].line, "dependency cycle: " + " -> ".join([s.name for s in cycle] + [cycle[0].name]))
        steps = ordered
    if errors:
        raise PipelineError(f"invalid pipeline {file} ({len(errors)} problem(s)):\n  " + "\n  ".join(errors))
    # Later wins: the file's `set`, the step's `set`, then the command line's --set.
    cli_sets = _overrides_of(cfg, env)
    steps = [dataclasses.replace(s, overrides=(*file_sets, *s.overrides, *cli_sets)) for s in steps]
    for step in steps:
        try:
            load_config(env, step.overrides)
        except ConfigError as exc:
            errors.append(f"{file}:{step.line}: step '{step.name}': {exc}")
    if errors:
        raise PipelineError(f"invalid pipeline {file} ({len(errors)} problem(s)):\n  " + "\n  ".join(errors))
    return Pipeline(name, file, env, (*file_sets, *cli_sets), variables, tuple(steps))


def _parse_step(
    raw: Any, i: int, line: int, variables: Mapping[str, str], err: Callable[[int, str], None]
) -> Step | None:
    if not isinstance(raw, dict):
        err(line, f"step {i + 1}: expected a mapping with 'name' and 'command' or 'python', found {raw!r}")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        err(line, f"step {i + 1}: 'name' must be a word of letters, digits, '-', '_' or '.', found {name!r}")
        return None
    where = f"step '{name}'"
    n_errors = _check_keys(raw, STEP_KEYS, where, line, err)
    needs = raw.get("needs") or []
    if isinstance(needs, str):
        needs = [needs]
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        err(line, f"{where}: 'needs' must be a list of step names, found {raw.get('needs')!r}")
        needs = []
    sets = _string_list(raw.get("set"), f"{where}: 'set'", line, err)
    for item in sets:
        if "=" not in item:
            err(line, f"{where}: 'set' items are section.key=value, found {item!r}")
    has_cmd, has_py = "command" in raw, "python" in raw
    if has_cmd == has_py:
        err(line, f"{where}: expected exactly one of 'command' (a CLI command line) or 'python' (module:function)")
        return None

    def sub(value: Any) -> Any:
        return _substitute(value, variables, f"{where}", line, err)

    if has_cmd:
        cmd = raw["command"]
        if isinstance(cmd, str):
            cmd = cmd.split()
        if not isinstance(cmd, list) or not cmd or not all(isinstance(c, (str, int, float)) for c in cmd):
            err(line, f"{where}: 'command' must be a non-empty list of strings, found {raw['command']!r}")
            return None
        argv = tuple(sub(str(c)) for c in cmd)
        if not n_errors:
            _check_command(argv, where, line, err)
        return Step(name, line, tuple(needs), command=argv, overrides=tuple(sets))
    target = raw["python"]
    args = raw.get("args") or {}
    if not isinstance(args, dict):
        err(line, f"{where}: 'args' must be a mapping of keyword arguments, found {args!r}")
        args = {}
    args = {str(k): sub(v) for k, v in args.items()}
    _check_python(target, args, where, line, err)
    return Step(name, line, tuple(needs), python=str(target), args=args, overrides=tuple(sets))


def _check_keys(
    raw: Mapping[str, Any], valid: Sequence[str], where: str, line: int, err: Callable[[int, str], None]
) -> int:
    bad = 0
    for key in raw:
        if key not in valid:
            near = _nearest(str(key), valid)
            err(line, f"{where}: unknown key '{key}'{near or '; valid keys: ' + ', '.join(valid)}")
            bad += 1
    return bad


def _check_command(argv: Sequence[str], where: str, line: int, err: Callable[[int, str], None]) -> None:
    from sparkvision.cli import build_parser

    parser = build_parser()
    commands = sorted(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    if argv[0] not in commands:
        err(
            line, f"{where}: unknown command '{argv[0]}'{_nearest(argv[0], commands)} (commands: {', '.join(commands)})"
        )
        return
    if argv[0] == "pipeline":
        err(line, f"{where}: a step cannot run another pipeline; list its steps here instead")
        return
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser.parse_args(list(argv))
    except SystemExit:
        message = stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else "invalid arguments"
        err(line, f"{where}: invalid command line {' '.join(argv)!r}: {message.removeprefix('sparkvision ')}")


def _check_python(target: Any, args: Mapping[str, Any], where: str, line: int, err: Callable[[int, str], None]) -> None:
    if not isinstance(target, str) or not re.fullmatch(r"[\w.]+:\w+", target):
        err(line, f"{where}: 'python' must be 'package.module:function', found {target!r}")
        return
    try:
        fn = _resolve(target)
    except (ImportError, AttributeError) as exc:
        err(line, f"{where}: cannot load {target}: {exc}")
        return
    sig = inspect.signature(fn)
    try:
        sig.bind(**({"cfg": None} if "cfg" in sig.parameters else {}), **args)
    except TypeError as exc:
        params = [p for p in sig.parameters if p != "cfg"]
        unknown = [a for a in args if a not in sig.parameters]
        hint = "".join(f"; '{a}'{_nearest(a, params)}" for a in unknown)
        err(line, f"{where}: args do not fit {target}{inspect.signature(fn)}: {exc}{hint}")


def _resolve(target: str) -> Callable[..., Any]:
    module, _, func = target.partition(":")
    fn = getattr(importlib.import_module(module), func)
    if not callable(fn):
        raise AttributeError(f"{target} is not callable")
    return fn


def _variables(raw: Any, cfg: Config, env: str, line: int, err: Callable[[int, str], None]) -> dict[str, str]:
    now = datetime.now()
    variables = {
        "root": str(PROJECT_ROOT),
        "data": str(cfg.path("data")),
        "runs": str(cfg.path("runs")),
        "mlflow": str(cfg.path("mlflow")),
        "env": env,
        "date": now.strftime("%Y-%m-%d"),
        "stamp": now.strftime("%Y%m%d-%H%M%S"),
    }
    if not isinstance(raw, dict):
        err(line, f"'vars' must be a mapping of name: value, found {raw!r}")
        return variables
    for key, value in raw.items():
        if isinstance(value, (dict, list)):
            err(line, f"vars: '{key}' must be a string or number, found {value!r}")
            continue
        variables[str(key)] = str(_substitute(str(value), variables, f"vars: '{key}'", line, err))
    return variables


def _substitute(
    value: Any, variables: Mapping[str, str], where: str, line: int, err: Callable[[int, str], None]
) -> Any:
    if isinstance(value, list):
        return [_substitute(v, variables, where, line, err) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, variables, where, line, err) for k, v in value.items()}
    if not isinstance(value, str):
        return value

    def repl(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in variables:
            err(line, f"{where}: unknown variable '${{{key}}}'{_nearest(key, list(variables))}")
            return m.group(0)
        return variables[key]

    return VAR.sub(repl, value)


def _string_list(raw: Any, where: str, line: int, err: Callable[[int, str], None]) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        err(line, f"{where} must be a list of 'section.key=value' strings, found {raw!r}")
        return []
    return list(raw)


def _topological(steps: Sequence[Step]) -> tuple[list[Step], list[Step]]:
    """Steps in file order as far as dependencies allow; or the steps of one cycle."""
    by_name = {s.name: s for s in steps}
    done: set[str] = set()
    ordered: list[Step] = []
    remaining = list(steps)
    while remaining:
        ready = next((s for s in remaining if all(n in done for n in s.needs)), None)
        if ready is None:
            return ordered, _find_cycle(remaining, by_name)
        ordered.append(ready)
        done.add(ready.name)
        remaining.remove(ready)
    return ordered, []


def _find_cycle(remaining: Sequence[Step], by_name: Mapping[str, Step]) -> list[Step]:
    path: list[Step] = []
    current = remaining[0]
    pending = {s.name for s in remaining}
    while current not in path:
        path.append(current)
        current = by_name[next(n for n in current.needs if n in pending)]
    return path[path.index(current) :]


def _line(root: yaml.Node | None, key: str) -> int:
    node = _key_node(root, key)
    return node.start_mark.line + 1 if node is not None else 1


def _key_node(root: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(root, yaml.MappingNode):
        for k, _ in root.value:
            if k.value == key:
                return k
    return None


def _value_node(root: yaml.Node | None, key: str) -> Any:
    if isinstance(root, yaml.MappingNode):
        for k, v in root.value:
            if k.value == key and isinstance(v, yaml.SequenceNode):
                return v
    return None


def _nearest(word: str, candidates: Sequence[str]) -> str:
    near = difflib.get_close_matches(word, list(candidates), n=1)
    return f"; did you mean '{near[0]}'?" if near else ""


def _overrides_of(cfg: Config, env: str) -> list[str]:
    """``--set`` items turning ``load_config(env)`` into ``cfg`` (carries the command line's overrides)."""
    try:
        layer = load_config(env).to_dict()
    except ConfigError as exc:
        raise PipelineError(f"pipeline env '{env}': {exc}") from None
    mine = cfg.to_dict()
    items = []
    for section, values in mine.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            base = layer.get(section, {}).get(key)
            if key == "conf" and isinstance(value, dict):
                items += [f"{section}.conf.{k}={v}" for k, v in value.items() if base.get(k) != v]
            elif value != base:
                items.append(f"{section}.{key}={json.dumps(value)}")
    return items


# --------------------------------------------------------------------------- running


def run_pipeline(file: str | Path, cfg: Config, only: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Validate ``file``, then run its steps in dependency order, stopping at the first failure.

    Args:
        file: The pipeline YAML file.
        cfg: Configuration of the ``pipeline`` command; its env and overrides apply to every step.
        only: Run just these steps (in dependency order; their ``needs`` are assumed done).

    Returns:
        One record per step: ``name``, ``status`` (ok | failed | not_run | skipped), ``seconds``,
        ``command`` or ``python``, and ``error`` for a failed step.

    Raises:
        PipelineError: If the file is invalid, ``only`` names an unknown step, or a step fails
            (the run record is written first).
    """
    pipeline = load_pipeline(file, cfg)
    names = [s.name for s in pipeline.steps]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise PipelineError(
            f"{pipeline.file}: --only names unknown step(s) "
            + ", ".join(f"'{n}'{_nearest(n, names)}" for n in unknown)
            + f" (steps: {', '.join(names)})"
        )
    selected = [s for s in pipeline.steps if not only or s.name in only]
    records: list[dict[str, Any]] = [
        {
            "name": s.name,
            "status": "not_run" if s in selected else "skipped",
            "seconds": None,
            **({"command": list(s.command)} if s.command else {"python": s.python, "args": dict(s.args)}),
            "overrides": list(s.overrides),
        }
        for s in pipeline.steps
    ]
    started = datetime.now()
    record_path = cfg.path("runs") / "pipelines" / f"{pipeline.name}-{started.strftime('%Y%m%d-%H%M%S-%f')}.json"
    run = {
        "pipeline": pipeline.name,
        "file": str(pipeline.file.resolve()),
        "env": pipeline.env,
        "overrides": list(pipeline.overrides),
        "config_digest": cfg.digest(),
        "started_at": started.isoformat(timespec="seconds"),
        "status": "running",
        "steps": records,
    }
    _write_record(record_path, run)
    print(f"pipeline {pipeline.name}: {len(selected)} step(s), env {pipeline.env}; record {record_path}", flush=True)
    t_all = time.monotonic()
    for k, step in enumerate(selected, 1):
        rec = records[names.index(step.name)]
        label = f"[{k}/{len(selected)}] {step.name}"
        print(f"{label} ...", flush=True)
        t0 = time.monotonic()
        try:
            _run_step(step, pipeline.env)
            error = None
        except (Exception, SystemExit) as exc:  # any failure stops the pipeline with its message
            error = str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {exc}"
        rec["seconds"] = round(time.monotonic() - t0, 1)
        rec["status"] = "ok" if error is None else "failed"
        if error is None:
            print(f"{label} done in {rec['seconds']:.1f} s", flush=True)
            _write_record(record_path, run)
            continue
        rec["error"] = error
        run.update(status="failed", finished_at=datetime.now().isoformat(timespec="seconds"))
        _write_record(record_path, run)
        left = [s.name for s in selected[k:]]
        print(f"{label} FAILED after {rec['seconds']:.1f} s: {error}", flush=True)
        raise PipelineError(
            f"pipeline {pipeline.name} stopped at step '{step.name}' ({pipeline.file}:{step.line}): {error}\n"
            f"  not run: {', '.join(left) or 'none'}; record: {record_path}\n"
            f"  rerun from here: sparkvision pipeline {pipeline.file} "
            + " ".join(f"--only {n}" for n in [step.name, *left])
        )
    run.update(status="ok", finished_at=datetime.now().isoformat(timespec="seconds"))
    _write_record(record_path, run)
    print(f"pipeline {pipeline.name} finished in {time.monotonic() - t_all:.1f} s; record {record_path}", flush=True)
    return records


def _run_step(step: Step, env: str) -> None:
    if step.command:
        from sparkvision.cli import main

        argv = list(step.command)
        if "--env" not in argv:
            argv += ["--env", env]
        for item in step.overrides:
            argv += ["--set", item]
        code = main(argv)
        if code != 0:
            raise PipelineError(f"`sparkvision {' '.join(step.command)}` exited with code {code}")
        return
    fn = _resolve(step.python)
    kwargs = dict(step.args)
    if "cfg" in inspect.signature(fn).parameters:
        kwargs["cfg"] = load_config(env, step.overrides)
    fn(**kwargs)


def _write_record(path: Path, run: Mapping[str, Any]) -> None:
    from sparkvision.procs import write_json

    write_json(path, json.loads(json.dumps(run, default=str)))


# --------------------------------------------------------------------------- helpers for python steps


def registered_run(cfg: Config, model: str) -> str:
    """The MLflow run id that produced ``<train.registered_model_prefix>-<model>@<train.alias>``."""
    from mlflow import MlflowClient

    from sparkvision.tracking import tracking_uri

    name = f"{cfg.train.registered_model_prefix}-{model}"
    version = MlflowClient(tracking_uri(cfg)).get_model_version_by_alias(name, cfg.train.alias)
    return str(version.run_id)


def report_registered(cfg: Config, models: Sequence[str], out_dir: str = "") -> list[str]:
    """Write the HTML report of the run behind each registered model (``<prefix>-<model>@<alias>``).

    Args:
        cfg: Configuration (registry prefix, alias, tracking server, ``paths.runs``).
        models: Model families, e.g. ``[vae, attributes]``.
        out_dir: Folder of the reports; default ``<paths.runs>/reports``.

    Returns:
        The written HTML files.
    """
    from sparkvision.reporting import write_report
    from sparkvision.tracking import tracking_uri

    folder = Path(out_dir) if out_dir else cfg.path("runs") / "reports"
    paths = []
    for model in models:
        run_id = registered_run(cfg, model)
        path = write_report(run_id, folder / f"{model}-{run_id}.html", tracking_uri=tracking_uri(cfg))
        print(f"report of {cfg.train.registered_model_prefix}-{model}@{cfg.train.alias}: {path}")
        paths.append(str(path))
    return paths


def where_to_look(cfg: Config, reports: str = "", scores: Sequence[str] = ()) -> dict[str, Any]:
    """Print where the results of a pipeline are: MLflow UI, reports, score tables, how to stop the server."""
    from sparkvision.tracking import TrackingError, tracking_uri

    try:
        ui = tracking_uri(cfg)
    except TrackingError:
        ui = "(no MLflow server running)"
    found_reports = sorted(str(p) for p in Path(reports).glob("*.html")) if reports else []
    lines = [f"MLflow UI:      {ui}"]
    lines += [f"report:         {r}" for r in found_reports]
    lines += [f"scores:         {s}" for s in scores]
    lines += [
        f"configuration:  sparkvision config show --env {cfg.env}",
        f"stop MLflow:    sparkvision mlflow stop --env {cfg.env}",
    ]
    print("\n".join(lines))
    return {"mlflow": ui, "reports": found_reports, "scores": list(scores)}
