"""Command-line flags with environment-variable fallbacks (STYLE.md convention 6).

    flags = EnvFlags(parser, "LLM")
    flags.add("--max-queue", 4, "waiting Generate calls")   # default from LLM_MAX_QUEUE, else 4

The variable's name comes from the flag (`--max-queue` -> `LLM_MAX_QUEUE`), the help text
names it, and the value is converted with the flag's type when the parser is built: a bad
value stops the program with a usage error naming the variable, not a traceback.

Numeric flags take a range type (`int_at_least(1)`, `int_in(0, 65535)`, `float_in(0, 2)`): a value
out of range, from the flag or from its variable, is a usage error (exit status 2) that names the
flag, the value and what is allowed, before anything loads.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
N = TypeVar("N", int, float)


class InRange(Generic[N]):
    """A flag type: a number that `parse` reads and `accept` allows; anything else is a usage
    error that says what is allowed (`allowed`, also shown in the flag's help)."""

    def __init__(self, parse: Callable[[str], N], noun: str, allowed: str, accept: Callable[[N], bool]) -> None:
        self.parse: Callable[[str], N] = parse
        self.accept: Callable[[N], bool] = accept
        self.noun = noun
        self.allowed = allowed
        self.__name__ = allowed  # argparse's name for the type

    def __call__(self, raw: str) -> N:
        try:
            value = self.parse(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not {self.noun}; allowed: {self.allowed}") from None
        if not self.accept(value):
            raise argparse.ArgumentTypeError(f"{raw.strip()} is out of range; allowed: {self.allowed}")
        return value


def int_at_least(minimum: int) -> InRange[int]:
    """An integer >= `minimum`."""
    return int_in(minimum)


def int_in(low: int, high: int | None = None, *, or_zero: bool = False) -> InRange[int]:
    """An integer from `low` to `high` (inclusive; None: no upper bound), or also 0 with `or_zero`
    (e.g. "0 = the server's default")."""
    allowed = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    return InRange(
        int,
        "an integer",
        f"0 or {allowed}" if or_zero else allowed,
        lambda v: (or_zero and v == 0) or (v >= low and (high is None or v <= high)),
    )


def float_in(
    low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False
) -> InRange[float]:
    """A finite number from `low` to `high` (None: no upper bound), each end included unless
    `low_open` / `high_open`."""
    above = f"above {low:g}" if low_open else f">= {low:g}"
    if high is None:
        allowed = f"a number {above}"
    elif low_open or high_open:
        allowed = f"a number {above} and {f'below {high:g}' if high_open else f'<= {high:g}'}"
    else:
        allowed = f"a number from {low:g} to {high:g}"

    def accept(v: float) -> bool:
        low_ok = v > low if low_open else v >= low
        high_ok = high is None or (v < high if high_open else v <= high)
        return math.isfinite(v) and low_ok and high_ok

    return InRange(float, "a number", allowed, accept)


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
        allowed = f"{type.allowed}; " if isinstance(type, InRange) else ""
        help_text = f"{help} ({allowed}env {env})" if help else f"{allowed}env {env}"
        if isinstance(default, bool):
            value = raw.strip().lower() in TRUE_WORDS if raw else default
            self.parser.add_argument(flag, action="store_true", default=value, help=help_text)
            return
        convert = type or (default.__class__ if default is not None else str)
        value = self._convert(flag, env, raw, convert, choices) if raw else default
        self.parser.add_argument(flag, type=convert, choices=choices, default=value, help=help_text)

    def add_list(self, flag: str, help: str = "") -> None:
        """A repeatable `flag`; its default is env PREFIX_FLAG split at commas. Given flags replace that list."""
        env = env_name(self.prefix, flag)
        values = [v.strip() for v in os.environ.get(env, "").split(",") if v.strip()]
        help_text = f"{help} (env {env}, comma-separated)" if help else f"env {env}, comma-separated"
        self.parser.add_argument(flag, action=_AppendOverDefault, default=values, help=help_text)

    def _convert(
        self, flag: str, env: str, raw: str, convert: Callable[[str], Any], choices: Sequence[Any] | None
    ) -> Any:
        try:
            value = convert(raw)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
            self.parser.error(f"environment variable {env}={raw!r} (for {flag}) is not valid: {error}")
        if choices is not None and value not in choices:
            allowed = ", ".join(str(c) for c in choices)
            self.parser.error(f"environment variable {env}={raw!r} (for {flag}) is not one of: {allowed}")
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
