"""Command-line flags with environment-variable fallbacks (STYLE.md convention 6).

    flags = EnvFlags(parser, "LLM")
    flags.add("--max-queue", 4, "waiting Generate calls")   # default from LLM_MAX_QUEUE, else 4

The variable's name comes from the flag (`--max-queue` -> `LLM_MAX_QUEUE`), the help text
names it, and the value is converted with the flag's type when the parser is built: a bad
value stops the program with a usage error naming the variable, not a traceback.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


def int_at_least(minimum: int) -> Callable[[str], int]:
    """A flag type: an integer >= `minimum` (a smaller one is a usage error saying what is allowed;
    argparse shows an ArgumentTypeError's text, a ValueError only as "invalid <type> value")."""

    def convert(raw: str) -> int:
        value = int(raw)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not allowed: an integer >= {minimum}")
        return value

    convert.__name__ = f"integer >= {minimum}"  # argparse names the type in its message
    return convert


def number_between(low: float, high: float, kind: Callable[[str], Any] = float) -> Callable[[str], Any]:
    """A flag type: a number (`kind`: float or int) from `low` to `high` inclusive."""

    def convert(raw: str) -> Any:
        value = kind(raw)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not allowed: {convert.__name__}")
        return value

    convert.__name__ = f"{'integer' if kind is int else 'number'} from {low} to {high}"
    return convert


def env_name(prefix: str, flag: str) -> str:
    return f"{prefix}_{flag.lstrip('-').replace('-', '_').upper()}"


class EnvFlags:
    def __init__(self, parser: argparse.ArgumentParser, prefix: str) -> None:
        self.parser = parser
        self.prefix = prefix

    def add(
        self,
        flag: str,
        default: Any,
        help: str = "",
        *,
        type: Callable[[str], Any] | None = None,
        choices: Sequence[Any] | None = None,
    ) -> None:
        """`flag` whose default is env PREFIX_FLAG (converted with `type`, else the type of `default`).

        A bool `default` makes an on/off switch (`store_true`); the variable turns it on with 1/true/yes/on.
        """
        env = env_name(self.prefix, flag)
        raw = os.environ.get(env, "")
        help_text = f"{help} (env {env})" if help else f"env {env}"
        if isinstance(default, bool):
            value = raw.strip().lower() in TRUE_WORDS if raw else default
            self.parser.add_argument(flag, action="store_true", default=value, help=help_text)
            return
        convert = type or (default.__class__ if default is not None else str)
        value = self._convert(env, raw, convert, choices) if raw else default
        self.parser.add_argument(flag, type=convert, choices=choices, default=value, help=help_text)

    def add_list(self, flag: str, help: str = "") -> None:
        """A repeatable `flag`; its default is env PREFIX_FLAG split at commas. Given flags replace that list."""
        env = env_name(self.prefix, flag)
        values = [v.strip() for v in os.environ.get(env, "").split(",") if v.strip()]
        help_text = f"{help} (env {env}, comma-separated)" if help else f"env {env}, comma-separated"
        self.parser.add_argument(flag, action=_AppendOverDefault, default=values, help=help_text)

    def _convert(self, env: str, raw: str, convert: Callable[[str], Any], choices: Sequence[Any] | None) -> Any:
        try:
            value = convert(raw)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
            self.parser.error(f"environment variable {env}={raw!r} is not valid: {error}")
        if choices is not None and value not in choices:
            allowed = ", ".join(str(c) for c in choices)
            self.parser.error(f"environment variable {env}={raw!r} is not one of: {allowed}")
        return value


class _AppendOverDefault(argparse.Action):
    """Like action="append", but the first value on the command line replaces the default list."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        seen = f"_{self.dest}_given"
        items = list(getattr(namespace, self.dest)) if getattr(namespace, seen, False) else []
        setattr(namespace, self.dest, [*items, values])
        setattr(namespace, seen, True)
