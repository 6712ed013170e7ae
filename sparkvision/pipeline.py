"""Declarative pipelines (``pipelines/*.yaml``): validated up front, run in dependency order in-process.

A pipeline file::

    name: nightly
    env: base                    # configuration layer of every step (`--env` on the command line wins)
    set: [train.epochs=3]        # overrides for every step (`--set` on the command line adds more)
    vars: {demo: "${data}/demo"} # ${name} substitution; built in: data, runs, mlflow, root, env, date, stamp
    steps:
      - name: ingest
        command: ingest          # a command of sparkvision.commands.COMMANDS ...
        args: {format: celeba, input: "${demo}/celeba", output: "${demo}/parquet"}  # ... and its arguments
      - name: train
        command: train
        args: {model: vae, data: "${demo}/parquet"}
        needs: [ingest]
        set: [train.workers=2]   # overrides for this step only
      - name: look
        python: sparkvision.results:where_to_look   # module:function, called with `args` as keywords
        args: {reports: "${runs}/reports"}          # (and cfg=Config when it has a `cfg` parameter)
        needs: [train]

Every step is checked against the command table (names, required arguments, types, choices) and
its configuration resolved (``load_config(env, file set + step set + --set)``) before anything
runs. Command functions run in this process, so one SparkSession serves all steps. A run record
is written to ``<paths.runs>/pipelines/<name>-<stamp>.json`` after every step.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from sparkvision.commands import COMMANDS
from sparkvision.config import PROJECT_ROOT, Config, ConfigError, load_config
from sparkvision.errors import CommandError, UserError, did_you_mean, expected_errors

log = logging.getLogger(__name__)

TOP_KEYS = ("name", "description", "env", "set", "vars", "steps")
STEP_KEYS = ("name", "description", "command", "python", "args", "needs", "set")
VAR = re.compile(r"\$\{([^}]*)\}")

Report = Callable[[int, str], None]


class PipelineError(UserError):
    """A pipeline file is invalid; ``problems`` lists each as ``FILE:LINE: what was expected, what was found``."""

    def __init__(self, problems: str | Sequence[str], file: str | Path | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        head = f"invalid pipeline {file} ({len(self.problems)} problem(s)):\n  " if file else ""
        super().__init__(head + "\n  ".join(self.problems))

    def lines(self) -> list[str]:
        return self.problems


class StepFailedError(CommandError):
    """A step failed; the message names it, its file and line, what did not run and how to resume."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One validated step: a command of the table or a ``module:function`` call, after substitution."""

    name: str
    line: int
    needs: tuple[str, ...]
    cfg: Config = dataclasses.field(default_factory=Config)  # resolved once the whole file is read
    command: str = ""
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
    cfg: Config
    variables: Mapping[str, str]
    steps: tuple[Step, ...]


# --------------------------------------------------------------------------- loading


def load_pipeline(file: str | Path, env: str | None = None, overrides: Sequence[str] = ()) -> Pipeline:
    """Read and validate a pipeline file; all problems are reported at once.

    Args:
        file: The pipeline YAML file.
        env: Configuration layer of every step; None: the file's ``env`` (default ``base``).
        overrides: ``section.key=value`` items of the command line; they win over the file's.

    Returns:
        The pipeline with variables substituted, each step's configuration resolved and the
        steps in dependency order.

    Raises:
        PipelineError: Listing every problem as ``FILE:LINE: step 'NAME': what was expected, what was found``.
    """
    file = Path(file)
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise PipelineError(f"{file}: expected a pipeline file, found no such file") from None
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        raise PipelineError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{file}: expected a mapping with 'name' and 'steps', found {type(data).__name__}")

    errors: list[str] = []

    def err(line: int, msg: str) -> None:
        errors.append(f"{file}:{line}: {msg}")

    _check_keys(data, TOP_KEYS, "pipeline", 1, err)
    name = str(data.get("name") or file.stem)
    env = env or str(data.get("env") or "base")
    file_sets = _string_list(data.get("set"), "set", _line(root, "set"), err)
    cli_sets = list(overrides)
    try:
        cfg = load_config(env, [*file_sets, *cli_sets])
    except ConfigError as exc:
        err(_line(root, "set" if file_sets else "env"), f"configuration: {exc}")
        raise PipelineError(errors, file) from None
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
        # Later wins: the file's `set`, the step's `set`, then the command line's --set.
        step_sets = (*file_sets, *step.overrides, *cli_sets)
        try:
            step_cfg = load_config(env, step_sets) if step.overrides else cfg
        except ConfigError as exc:
            err(line, f"step '{step.name}': {exc}")
            continue
        steps.append(dataclasses.replace(step, cfg=step_cfg, overrides=step_sets))

    for step in steps:
        for need in step.needs:
            if need not in seen:
                err(step.line, f"step '{step.name}': needs unknown step '{need}'{did_you_mean(need, list(seen))}")
    if not errors:
        ordered, cycle = _topological(steps)
        if cycle:
            err(cycle[0].line, "dependency cycle: " + " -> ".join([s.name for s in cycle] + [cycle[0].name]))
        steps = ordered
    if errors:
        raise PipelineError(errors, file)
    return Pipeline(name, file, env, (*file_sets, *cli_sets), cfg, variables, tuple(steps))


def _parse_step(raw: Any, i: int, line: int, variables: Mapping[str, str], err: Report) -> Step | None:
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
        err(line, f"{where}: expected exactly one of 'command' (a sparkvision command) or 'python' (module:function)")
        return None
    args = raw.get("args") or {}
    if not isinstance(args, dict):
        err(line, f"{where}: 'args' must be a mapping of argument names to values, found {args!r}")
        args = {}
    args = {str(k): _substitute(v, variables, where, line, err) for k, v in args.items()}
    step = Step(name, line, tuple(needs), overrides=tuple(sets))
    if has_cmd:
        kwargs = _check_command(raw["command"], args, where, line, err) if not n_errors else {}
        return dataclasses.replace(step, command=str(raw["command"]), args=kwargs)
    _check_python(raw["python"], args, where, line, err)
    return dataclasses.replace(step, python=str(raw["python"]), args=args)


def _check_keys(raw: Mapping[str, Any], valid: Sequence[str], where: str, line: int, err: Report) -> int:
    bad = 0
    for key in raw:
        if key not in valid:
            err(line, f"{where}: unknown key '{key}'{did_you_mean(key, valid, 'keys')}")
            bad += 1
    return bad


def _check_command(name: Any, args: Mapping[str, Any], where: str, line: int, err: Report) -> dict[str, Any]:
    """The keyword arguments of a command step, checked against the command table (problems go to ``err``)."""
    if isinstance(name, list):
        err(line, f"{where}: 'command' is a command name with its arguments under 'args' "
                  f"(e.g. command: train, args: {{data: ...}}), found the list {name!r}")  # fmt: skip
        return {}
    names = [n for n, c in COMMANDS.items() if c.in_pipeline]
    if not isinstance(name, str) or name not in COMMANDS:
        err(line, f"{where}: unknown command '{name}'{did_you_mean(name, names)} (commands: {', '.join(names)})")
        return {}
    command = COMMANDS[name]
    if not command.in_pipeline:
        err(line, f"{where}: a step cannot run '{name}'; list its steps here instead")
        return {}
    kwargs: dict[str, Any] = {}
    valid = [a.name for a in command.args]
    for key, value in args.items():
        if key not in valid:
            err(line, f"{where}: unknown argument '{key}' of command '{name}'{did_you_mean(key, valid)} "
                      f"(arguments: {', '.join(valid)})")  # fmt: skip
            continue
        arg = command.arg(key)
        try:
            kwargs[key] = arg.coerce(value)
        except ValueError as exc:
            near = did_you_mean(value, arg.choices) if arg.choices else ""
            err(line, f"{where}: argument '{key}' of command '{name}': {exc}{near}")
    missing = [a.name for a in command.args if a.required and a.name not in args]
    if missing:
        err(line, f"{where}: command '{name}' expects argument(s) {', '.join(missing)} under 'args', found none")
    return kwargs


def _check_python(target: Any, args: Mapping[str, Any], where: str, line: int, err: Report) -> None:
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
        hint = "".join(f"; '{a}'{did_you_mean(a, params)}" for a in unknown)
        err(line, f"{where}: args do not fit {target}{inspect.signature(fn)}: {exc}{hint}")


def _resolve(target: str) -> Callable[..., Any]:
    module, _, func = target.partition(":")
    fn = getattr(importlib.import_module(module), func)
    if not callable(fn):
        raise AttributeError(f"{target} is not callable")
    return fn


def _variables(raw: Any, cfg: Config, env: str, line: int, err: Report) -> dict[str, str]:
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


def _substitute(value: Any, variables: Mapping[str, str], where: str, line: int, err: Report) -> Any:
    if isinstance(value, list):
        return [_substitute(v, variables, where, line, err) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, variables, where, line, err) for k, v in value.items()}
    if not isinstance(value, str):
        return value

    def repl(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in variables:
            err(line, f"{where}: unknown variable '${{{key}}}'{did_you_mean(key, list(variables))}")
            return m.group(0)
        return variables[key]

    return VAR.sub(repl, value)


def _string_list(raw: Any, where: str, line: int, err: Report) -> list[str]:
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


# --------------------------------------------------------------------------- running


def run_pipeline(
    file: str | Path, env: str | None = None, overrides: Sequence[str] = (), only: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Validate ``file``, then run its steps in dependency order, stopping at the first failure.

    Args:
        file: The pipeline YAML file.
        env: Configuration layer of every step; None: the file's ``env``.
        overrides: The command line's ``--set`` items; they win over the file's and the steps'.
        only: Run just these steps (in dependency order; their ``needs`` are assumed done).

    Returns:
        One record per step: ``name``, ``status`` (ok | failed | not_run | skipped), ``seconds``,
        ``command``, ``args`` and ``command_line`` or ``python`` and ``args``, ``overrides``,
        ``config_digest``, and ``error`` for a failed step.

    Raises:
        PipelineError: If the file is invalid or ``only`` names an unknown step (nothing runs).
        StepFailedError: If a step fails (the run record is written first).
    """
    pipeline = load_pipeline(file, env, overrides)
    names = [s.name for s in pipeline.steps]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise PipelineError(
            f"{pipeline.file}: --only names unknown step(s) "
            + ", ".join(f"'{n}'{did_you_mean(n, names)}" for n in unknown)
            + f" (steps: {', '.join(names)})"
        )
    selected = [s for s in pipeline.steps if not only or s.name in only]
    records = [_record(s, "not_run" if s in selected else "skipped") for s in pipeline.steps]
    started = datetime.now()
    runs = pipeline.cfg.path("runs")
    record_path = runs / "pipelines" / f"{pipeline.name}-{started.strftime('%Y%m%d-%H%M%S-%f')}.json"
    run = {
        "pipeline": pipeline.name,
        "file": str(pipeline.file.resolve()),
        "env": pipeline.env,
        "overrides": list(pipeline.overrides),
        "config_digest": pipeline.cfg.digest(),
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
        error = _run_step(step)
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
        print(f"{label} FAILED after {rec['seconds']:.1f} s", flush=True)
        raise StepFailedError(
            f"pipeline {pipeline.name} stopped at step '{step.name}' ({pipeline.file}:{step.line}): {error}\n"
            f"  not run: {', '.join(left) or 'none'}; record: {record_path}\n"
            f"  rerun from here: sparkvision pipeline {pipeline.file} "
            + " ".join(f"--only {n}" for n in [step.name, *left])
        )
    run.update(status="ok", finished_at=datetime.now().isoformat(timespec="seconds"))
    _write_record(record_path, run)
    print(f"pipeline {pipeline.name} finished in {time.monotonic() - t_all:.1f} s; record {record_path}", flush=True)
    return records


def _record(step: Step, status: str) -> dict[str, Any]:
    what: dict[str, Any] = {"python": step.python, "args": dict(step.args)}
    if step.command:
        line = COMMANDS[step.command].command_line(step.args)
        what = {"command": step.command, "args": dict(step.args), "command_line": " ".join(["sparkvision", *line])}
    return {"name": step.name, "status": status, "seconds": None, **what, "overrides": list(step.overrides),
            "config_digest": step.cfg.digest()}  # fmt: skip


def _run_step(step: Step) -> str | None:
    """Run one step; returns None on success, else the error as one line of text."""
    try:
        if step.command:
            code = COMMANDS[step.command].run(step.cfg, **step.args)
            if code not in COMMANDS[step.command].ok_codes:
                line = " ".join(COMMANDS[step.command].command_line(step.args))
                return f"`sparkvision {line}` exited with code {code}"
            return None
        fn = _resolve(step.python)
        kwargs = dict(step.args)
        if "cfg" in inspect.signature(fn).parameters:
            kwargs["cfg"] = step.cfg
        fn(**kwargs)
        return None
    except Exception as exc:  # any failure stops the pipeline with its message
        if isinstance(exc, expected_errors()):
            log.debug("step %s failed", step.name, exc_info=True)
            return "; ".join(str(exc).splitlines())
        log.error("step %s failed with an unexpected error", step.name, exc_info=True)
        return f"{type(exc).__name__}: {exc}"


def _write_record(path: Path, run: Mapping[str, Any]) -> None:
    from sparkvision.procs import write_json

    write_json(path, json.loads(json.dumps(run, default=str)))
