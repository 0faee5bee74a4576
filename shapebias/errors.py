"""Errors that mean "the input was wrong": entry points turn them into a one-line message,
exit status 2 and an MLflow run marked FAILED."""


class ShapebiasError(Exception):
    """Base class for errors caused by a user's input (a parameter, a file, a folder)."""


class ConfigError(ShapebiasError, ValueError):
    """A parameter has a value that is not accepted."""


class DataError(ShapebiasError):
    """A data folder or file is missing, empty, unreadable or in the wrong layout."""


class WeightsError(ShapebiasError):
    """Pretrained weights are missing; the message says which file and where to put it."""


def check_choice(name: str, value, accepted) -> None:
    """Raise ConfigError unless ``value`` is one of ``accepted``."""
    if value not in accepted:
        raise ConfigError(f"{name}={value!r} is not accepted; choose one of: {', '.join(map(str, accepted))}")


def check_fraction(name: str, value: float) -> float:
    """Raise ConfigError unless ``value`` is a number in (0, 1]."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a number; expected a fraction in (0, 1]") from None
    if not 0.0 < v <= 1.0:
        raise ConfigError(f"{name}={value!r} is outside (0, 1]; expected a fraction such as 0.2")
    return v
