"""Argument parsing shared by the job modules.

MLflow substitutes parameters into an MLproject command shell-quoted, and passes numbers as
written (``6`` or ``6.0``). These helpers turn such strings into values, leaving anything that is
not a number as it is so that the job's own validation names it in its error.
"""

from __future__ import annotations

from collections.abc import Callable


def number(kind: type) -> Callable[[str], object]:
    """argparse ``type=``: ``"6"``/``"6.0"`` -> 6 for ints, floats as floats; a non-number stays a string."""

    def convert(text: str):
        try:
            return int(float(text)) if kind is int and float(text).is_integer() else kind(text)
        except ValueError:
            return text

    return convert


def unquote(value) -> str:
    """``''`` -> empty: a value quoted twice (``-P x="''"`` or an MLproject command with quotes)."""
    value = str(value).strip()
    while len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1].strip()
    return value


def split_args(name: str, value: str) -> list[str]:
    """Shell-split a string of extra arguments; ConfigError (not a traceback) for unbalanced quotes."""
    import shlex

    from shapebias.errors import ConfigError

    try:
        return shlex.split(value)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} cannot be split into arguments ({exc}); "
                          "balance the quotes, e.g. --job-args=\"--data-dir '/my data'\"") from None
