"""The ``sparkvision`` console entry point. ``jobs/<job>.py`` forwards to the same parser,
so ``spark-submit jobs/ingest.py ARGS`` and ``sparkvision ingest ARGS`` are the same job.

The parser is built from ``sparkvision.commands.COMMANDS``. Every command takes ``--env``
(configuration layer), ``--set section.key=value``, ``-v/--verbose`` and ``--debug``.
A mistake of the user's is printed as one line ``sparkvision: error: ...`` with exit code 2;
only ``--debug`` adds its traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from sparkvision import logs
from sparkvision.commands import COMMANDS, CONFIG_ARGS, Arg
from sparkvision.config import load_config
from sparkvision.errors import did_you_mean, exit_code, expected_errors, message_lines

PROG = "sparkvision"
DESCRIPTION = "Image datasets on Spark: ingest to Parquet, train with Horovod, track in MLflow, score in batch."


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (``sparkvision: error: train: ...``), exit code 2.

    A value that starts with a negative number (``--steps -3:3:7``, ``--steps -1,0,2``) is a value,
    not an unknown option, as ``-3`` alone already is.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\d*\.?\d+([:,][-+.\d:,]*)?$")

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        where = f"{command}: " if command else ""
        if m := re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message):
            message += did_you_mean(m.group(1), re.findall(r"'([^']*)'", m.group(2)))
        self.exit(2, f"{PROG}: error: {where}{message} (see `{self.prog} --help`)\n")


def _add(parser: argparse.ArgumentParser, arg: Arg) -> None:
    help = arg.help + (f" (one of: {', '.join(arg.choices)})" if arg.choices and not arg.positional else "")
    kwargs: dict[str, Any] = {"help": help}
    if arg.choices:
        kwargs["choices"] = arg.choices
    if arg.positional:
        parser.add_argument(arg.name, **kwargs)
        return
    kwargs["dest"] = arg.name
    if arg.type is bool:
        kwargs.update(action="store_true", default=bool(arg.default))
    elif arg.type is list:
        kwargs.update(action="append", default=list(arg.default or ()), metavar=arg.name.upper().rstrip("S"))
    else:
        kwargs.update(type=arg.type, default=arg.default, required=arg.required)
    parser.add_argument(arg.option, **kwargs)


def _verbosity_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="also show the libraries' INFO logs (Spark at WARN)")  # fmt: skip
    parser.add_argument("--debug", action="store_true", default=default,
                        help="DEBUG logs and the traceback of every error")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (shared with ``jobs/*.py``), one subcommand per ``COMMANDS`` entry."""
    parser = _Parser(prog=PROG, description=DESCRIPTION)
    _verbosity_flags(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS.values():
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        for arg in (*command.args, *CONFIG_ARGS):
            _add(p, arg)
        _verbosity_flags(p, default=argparse.SUPPRESS)  # `sparkvision -v train` and `sparkvision train -v`
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, set up logging, resolve the configuration and run one command.

    Returns:
        The exit code: the command's own, 2 for a user error, 0 for ``--help``.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed on one line
        return int(exc.code or 0)
    verbosity = 2 if args.debug else 1 if args.verbose else 0
    logs.setup(verbosity)
    command = COMMANDS[args.command]
    kwargs = {a.name: getattr(args, a.name) for a in command.args}
    try:
        if command.config:
            return int(command.run(load_config(args.env or "base", args.overrides), **kwargs))
        return int(command.run(env=args.env, overrides=args.overrides, **kwargs))
    except Exception as exc:
        if not isinstance(exc, expected_errors()):
            raise
        if verbosity >= 2:
            traceback.print_exc()
        for line in message_lines(exc):  # an indented line is a hint under the error above it
            print(line if line.startswith(" ") else f"{PROG}: error: {line}", file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
