"""Which failures are the user's to fix, and how they read: one line naming the thing.

``UserError`` is raised by our own checks (``sparkvision.preflight``, the pipeline validator);
``expected_errors`` adds the library exceptions whose message is already a complete answer
(configuration, model name, tracking server). ``sparkvision.cli.main`` prints them as
``sparkvision: error: ...`` and exits with ``exit_code``; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CommandError(Exception):
    """A command stopped for a reason its message fully explains; no traceback is shown."""

    exit_code = 1

    def lines(self) -> list[str]:
        """The message as printed, one entry per line."""
        return [line.rstrip() for line in str(self).splitlines() if line.strip()] or [type(self).__name__]


class UserError(CommandError, ValueError):
    """What the user asked for cannot work (missing path, unknown name, unreachable server, ...).

    The message names the argument or file, what was expected and what was found, on one line.
    """

    exit_code = 2


def did_you_mean(name: object, choices: Iterable[object], what: str = "") -> str:
    """The hint to append to "unknown NAME": the nearest valid choice, else (optionally) all of them.

    The one suggestion helper of configuration keys, model and attribute names, commands and
    pipeline steps, so every "unknown ..." message reads alike.

    Args:
        name: The unknown name as the user wrote it.
        choices: The valid names.
        what: What the choices are (``"keys"``); given, a name with no near match lists them all.

    Returns:
        ``"; did you mean 'NEAREST'?"``, or ``"; valid WHAT: A, B"`` when nothing is near and
        ``what`` is given, else ``""``.
    """
    valid = [str(c) for c in choices]
    near = difflib.get_close_matches(str(name), valid, n=1)
    if near:
        return f"; did you mean '{near[0]}'?"
    return f"; valid {what}: {', '.join(valid)}" if what and valid else ""


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exception types printed without traceback: ours plus library errors with complete messages.

    Imported on demand, so the CLI pays for these modules only when something failed.
    """
    from sparkvision.config import ConfigError
    from sparkvision.models import UnknownTaskError
    from sparkvision.tracking import TrackingError

    return (CommandError, ConfigError, UnknownTaskError, TrackingError)


def exit_code(exc: BaseException) -> int:
    """2 for a user error (including the expected library errors), else the error's own code."""
    return exc.exit_code if isinstance(exc, CommandError) else 2


def message_lines(exc: BaseException) -> list[str]:
    """What to print for an expected error: a ``CommandError``'s lines, else its message on one line."""
    if isinstance(exc, CommandError):
        return exc.lines()
    parts = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return ["; ".join(parts) or type(exc).__name__]
