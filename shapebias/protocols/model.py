"""What a protocol is, which settings of a job count, and how a run's settings are compared.

A :class:`Protocol` is one published experiment: the job (``task``) that repeats it and the value
of every setting that moves its number, each with the place it comes from. Setting names are the
fields of the job's ``Config`` dataclass (``training/train_resnet.py``, ``training/shape_bias.py``).

A :class:`TaskSettings` says, for one job, which of its ``Config`` fields change a result
(``keys``) and which never do (``ignored``: paths, worker counts, the replicate seed); every
field is one or the other, and a test holds the two lists to the dataclass. The *effective
settings* of a run are its values of ``keys`` in canonical form, less those that mean nothing
under the others (a dense model's Top-K level); their hash is the run's *settings fingerprint*.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

NONE = "none"  # the protocol of a run that claims none


def canonical(value: Any) -> str:
    """A setting value in canonical form: "2", "2.0" -> "2"; "True" -> "true"; "0.20" -> "0.2"; lists part by part."""
    text = "" if value is None else str(value).strip()
    if "," in text:
        return ",".join(canonical(part) for part in text.split(","))
    return canonical_scalar(text)


def canonical_scalar(text: str) -> str:
    """One value in canonical form (see :func:`canonical`); a comma is not special here."""
    if text.lower() in ("true", "false"):
        return text.lower()
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number) and number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return format(number, ".10g")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One value of a protocol and where it comes from (prior reproduction's code, authors' code, paper)."""

    value: Any
    source: str


@dataclasses.dataclass(frozen=True)
class TaskSettings:
    """Which ``Config`` fields of a job change a result, and how to read them off a run."""

    task: str
    keys: tuple[str, ...]
    ignored: tuple[str, ...]
    irrelevant: Callable[[Mapping[str, str]], Sequence[str]] = lambda values: ()

    def effective(self, values: Mapping[str, Any]) -> dict[str, str]:
        """The settings that made a run's number, canonical (a missing one reads as empty)."""
        out = {k: canonical(values.get(k, "")) for k in self.keys}
        for k in self.irrelevant(out):
            out.pop(k, None)
        return out


def fingerprint(task: str, effective: Mapping[str, str]) -> str:
    """A short hash of a task's effective settings: equal settings, equal fingerprints."""
    text = json.dumps({"task": task, **effective}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A published experiment as data.

    ``settings`` are ``Config`` fields that ``--protocol NAME`` sets; ``implied`` are facts the
    job's code holds fixed under these settings (optimizer details, transforms), recorded with
    their sources so that they can be read and tested; ``deviations`` are the known differences
    from the original that this platform cannot (or does not) remove.
    """

    name: str
    task: str
    table: str
    title: str
    settings: Mapping[str, Setting]
    implied: Mapping[str, Setting] = dataclasses.field(default_factory=dict)
    deviations: tuple[str, ...] = ()

    def values(self) -> dict[str, str]:
        return {k: canonical(s.value) for k, s in self.settings.items()}

    def cli_args(self) -> list[str]:
        """Every setting as a job flag: ``["--epochs", "50", "--lr", "0.1", ...]``."""
        return flags(self.values())


def flags(values: Mapping[str, Any]) -> list[str]:
    """Settings as job flags: ``{"batch_size": 32}`` -> ``["--batch-size", "32"]``."""
    out: list[str] = []
    for key, value in values.items():
        out += ["--" + key.replace("_", "-"), canonical(value)]
    return out


@dataclasses.dataclass(frozen=True)
class Check:
    """How a run stands against the protocol it claims."""

    claimed: str  # the name, or "none"
    protocol: Protocol | None  # the claimed protocol, when it exists
    fingerprint: str  # of the run's effective settings
    differences: dict[str, tuple[str, str]]  # setting -> (run's value, protocol's value)
    reason: str = ""  # why it is off-protocol ("" when on)

    @property
    def on_protocol(self) -> bool:
        return not self.reason

    def describe(self) -> str:
        """One line: "on protocol X" or why not, with the settings that differ."""
        if self.on_protocol:
            return f"on protocol {self.claimed}"
        return self.reason + (f": {describe_differences(self.differences)}" if self.differences else "")


def describe_differences(differences: Mapping[str, tuple[str, str]]) -> str:
    """``epochs=1 (protocol: 50), lr=0.05 (protocol: 0.1)``."""
    return ", ".join(
        f"{k}={ours or '(none)'} (protocol: {theirs or '(none)'})" for k, (ours, theirs) in differences.items()
    )


def differences(expected: Mapping[str, str], actual: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Setting -> (actual, expected) for every setting whose values differ (either side may lack it)."""
    return {
        k: (actual.get(k, ""), expected.get(k, ""))
        for k in sorted({*expected, *actual}, key=_order(expected))
        if actual.get(k, "") != expected.get(k, "")
    }


def _order(expected: Mapping[str, str]) -> Callable[[str], tuple[int, str]]:
    keys = list(expected)
    return lambda k: (keys.index(k) if k in keys else len(keys), k)
