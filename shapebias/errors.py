"""Errors that mean "the input was wrong": entry points turn them into a one-line message,
exit status 2 and an MLflow run marked FAILED."""

import math


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


# Largest accepted values of the numeric settings that the jobs share (docs/run-integrity.md).
# They are far above anything the experiments use and low enough that a typo (an extra zero
# digit, ``1e9``) fails at once instead of allocating for minutes or running for months.
INT_LIMITS: dict[str, tuple[int, int]] = {
    "seed": (0, 2**32 - 1),
    "epochs": (1, 10_000),
    "iterations": (1, 10_000_000),
    "batch_size": (1, 4096),
    "num_workers": (1, 1024),
    "image_size": (1, 2048),
    "steps": (1, 100_000),
    "limit": (0, 10_000_000),
    "width": (1, 1024),
    "checkpoint_every": (0, 10_000_000),  # 0: train_resnet's automatic schedule (FastGAN asks for >= 1)
    "fid_every": (-1, 10_000_000),  # -1: the protocol's interval
    "fid_samples": (0, 1_000_000),
    "synthetic_train_per_class": (1, 100_000),
    "synthetic_test_per_class": (1, 100_000),
}
LR_MAX = 10.0


def check_int(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an integer in [lo, hi] (default: :data:`INT_LIMITS`), else ConfigError naming it."""
    dlo, dhi = INT_LIMITS.get(name, (None, None))
    lo, hi = dlo if lo is None else lo, dhi if hi is None else hi
    bounds = (
        f"an integer from {lo} to {hi}"
        if hi is not None
        else f"an integer of at least {lo}"
        if lo is not None
        else "an integer"
    )
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a number; expected {bounds}") from None
    if not math.isfinite(number) or not number.is_integer():
        raise ConfigError(f"{name}={value!r} is not accepted; expected {bounds}")
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise ConfigError(f"{name}={value!r} is not accepted; expected {bounds}")
    return int(number)


def check_positive(name: str, value, hi: float = LR_MAX) -> float:
    """``value`` as a finite float in (0, hi] (learning rates), else ConfigError naming it."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a number; expected a number in (0, {hi:g}]") from None
    if not (math.isfinite(number) and 0 < number <= hi):
        raise ConfigError(f"{name}={value!r} is not accepted; expected a finite number in (0, {hi:g}]")
    return number


def check_limits(values) -> None:
    """Check every setting of ``values`` (a dataclass or a mapping) that :data:`INT_LIMITS` or ``lr`` names."""
    get = values.get if isinstance(values, dict) else lambda k: getattr(values, k, None)
    for name in INT_LIMITS:
        if get(name) is not None:
            check_int(name, get(name))
    if get("lr") is not None:
        check_positive("lr", get("lr"))
