"""Command lines built from the jobs' ``Config`` dataclasses, and the one place numbers are read.

Each job's ``Config`` is the only definition of its settings: a field made with :func:`setting`
carries its help text and, for a fixed set, its accepted values; :func:`parser_from_config` turns
the dataclass into the job's argparse parser (flag ``--batch-size`` for field ``batch_size``, the
default and the choices in ``--help``, ``--x/--no-x`` for a boolean). MLproject declares the same
names (``tests/test_cli.py`` holds them together).

MLflow substitutes parameters into an MLproject command shell-quoted, and passes numbers as
written (``6`` or ``6.0``). The parser leaves a value that is not a number of the field's kind as
it is, so that the job's own validation names it in its one-line error inside the run (under
``mlflow run`` the run exists already and is marked FAILED); :func:`to_int` and :func:`to_float`
are that validation.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

from shapebias.errors import ConfigError, check_int

NUMBER_TYPES = {"int": int, "float": float, int: int, float: float}
METAVARS = {"int": "INT", "float": "NUM", int: "INT", float: "NUM"}


def setting(default: Any, help: str = "", choices: Iterable[Any] | None = None) -> Any:
    """A ``Config`` field with its ``--help`` text and, for a fixed set, its accepted values."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None}
    return dataclasses.field(default=default, metadata=meta)


def to_int(name: str, value: Any, minimum: int | None = None) -> int:
    """``6``, ``"6"``, ``"6.0"`` -> 6; ``2.5``, ``True``, text and values outside the setting's range
    (:data:`shapebias.errors.INT_LIMITS`, or ``minimum``) raise ConfigError naming the value."""
    return check_int(name, value, lo=minimum)


def to_float(name: str, value: Any, minimum: float | None = None) -> float:
    """A finite number, else ConfigError naming the value."""
    return _at_least(name, value, _float(name, value, "a number"), minimum)


def _float(name: str, value: Any, expected: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} is not a number; expected {expected}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a number; expected {expected}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name}={value!r} is not accepted; expected a finite number")
    return number


def _at_least(name: str, value: Any, number, minimum):
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name}={value!r} is not accepted; expected a number >= {minimum}")
    return number


def check_numbers(config: Any) -> None:
    """Convert every int/float field of a ``Config`` in place, or raise ConfigError naming the first bad one."""
    for f in dataclasses.fields(config):
        kind = NUMBER_TYPES.get(f.type)
        if kind is not None:
            convert = to_int if kind is int else to_float
            setattr(config, f.name, convert(f.name, getattr(config, f.name)))


def number(kind: type) -> Callable[[str], object]:
    """argparse ``type=``: ``"6"``/``"6.0"`` -> 6 for ints, floats as floats; anything else stays a string."""

    def convert(text: str):
        try:
            return to_int("", text) if kind is int else float(text)  # nan/inf: for the job's range check
        except (ConfigError, ValueError):
            return text

    return convert


def unquote(value) -> str:
    """``''`` -> empty: a value quoted twice (``-P x="''"`` or an MLproject command with quotes)."""
    value = str(value).strip()
    while len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1].strip()
    return value


# ------------------------------------------------------------------------------------- parsers


class _Formatter(argparse.HelpFormatter):
    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, Flag):
            return ", ".join(action.option_strings)
        return super()._format_action_invocation(action)


class DefaultsFormatter(_Formatter):
    """For hand-written parsers: appends ``(default: X)`` to an option's help that does not say its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default in (None, "", argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line ``error: ...`` (exit status 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class Flag(argparse.Action):
    """A real boolean flag, ``--x`` / ``--no-x``; ``--x true|false`` is also read (MLproject passes strings).

    A written value is kept as given, for the job's validation to accept or name in its error.
    """

    def __init__(self, option_strings, dest, **kwargs):
        negative = [s.replace("--", "--no-", 1) for s in option_strings]
        super().__init__([*option_strings, *negative], dest, nargs="?", metavar="true|false", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string.startswith("--no-"):
            if values is not None:
                parser.error(f"{option_string} takes no value")
            values = False
        setattr(namespace, self.dest, True if values is None else values)

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def parser_from_config(
    config: type,
    prog: str,
    description: str,
    *,
    suppress: bool = False,
    default_note: Callable[[str], str] | None = None,
) -> Parser:
    """The parser of a ``Config`` dataclass: one flag per field, with its help, choices and default.

    ``suppress``: a flag not given is absent from the namespace (the job fills it in, e.g. from a
    protocol); otherwise it takes the field's default. ``default_note(field)`` adds to the shown
    default (e.g. ", or the protocol's").
    """
    p = Parser(prog=prog, description=description, argument_default=argparse.SUPPRESS if suppress else None)
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        shown = "" if f.default in ("", None) else repr(f.default)
        note = default_note(f.name) if default_note else ""
        default = f"(default: {shown or 'none'}{note})"
        text = " ".join(t for t in (f.metadata.get("help", ""), default) if t)
        kwargs: dict[str, Any] = {"help": text.replace("%", "%%")}
        if not suppress:
            kwargs["default"] = f.default
        kind = NUMBER_TYPES.get(f.type)
        if f.type in ("bool", bool):
            p.add_argument(flag_name(f.name), action=Flag, **kwargs)
            continue
        if kind is not None:
            kwargs["type"] = number(kind)
        kwargs["metavar"] = "{" + ",".join(map(str, choices)) + "}" if choices else METAVARS.get(f.type, "TEXT")
        p.add_argument(flag_name(f.name), **kwargs)
    return p


def split_args(name: str, value: str) -> list[str]:
    """Shell-split a string of extra arguments; ConfigError (not a traceback) for unbalanced quotes."""
    import shlex

    try:
        return shlex.split(value)
    except ValueError as exc:
        raise ConfigError(
            f"{name}={value!r} cannot be split into arguments ({exc}); "
            "balance the quotes, e.g. --job-args=\"--data-dir '/my data'\""
        ) from None


def resolve_config(config_cls: type, task: str, args: argparse.Namespace) -> dict[str, Any]:
    """A job's settings from parsed flags: ``Config`` defaults, then the protocol's settings, then the
    flags given (an explicit flag wins and makes the run off-protocol). Flags left empty fall back.

    An unknown protocol is left for the job's ``Config.validate`` to report inside the run.
    """
    from shapebias import protocols

    given = {}
    for f in dataclasses.fields(config_cls):
        value = getattr(args, f.name, None)
        if value is not None and unquote(value) != "":
            given[f.name] = unquote(value) if isinstance(value, str) else value
    defaults = dataclasses.asdict(config_cls())
    try:
        return protocols.resolve(task, defaults, given.get("protocol", ""), given)
    except ConfigError:
        return {**defaults, **given}
