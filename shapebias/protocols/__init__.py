"""Protocols: the published experiments as data, and how a run is held to one.

    from shapebias import protocols
    p = protocols.get("table1.code.topk.IN-S1")
    p.values()        # {"model_spec": "code", "stem_stride": "2", ..., "epochs": "50", "lr": "0.1", ...}
    protocols.check("train_resnet", "table1.code.topk.IN-S1", run_params).on_protocol

Families (one module each, a ``protocols()`` function returning its list):

* ``table1``: the prior reproduction's Table 1 (``table1.<model_spec>.<sparsity>.<dataset>``), task ``train_resnet``;
* ``table2``: the prior reproduction's Table 2 (``table2.<dataset>.<variant>``), task ``train_fastgan``;
* ``fig1``: the authors' Fig. 1 levels (``fig1.<model>.<sparsity>[.<level %>]``), task ``shape_bias``;
* ``synthetic``: the synthetic shape-bias study (``synthetic.<sparsity>[.<level %>]``), task ``train_resnet``.

Adding a family: write ``shapebias/protocols/<family>.py`` with a
``protocols()`` function, add the job's :class:`TaskSettings` to ``tasks.py`` (every ``Config``
field result-changing or ignored), and list the module in :data:`FAMILIES`.

Pure Python: no MLflow, no Ray, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shapebias.errors import ConfigError
from shapebias.protocols import fig1, synthetic, table1, table2
from shapebias.protocols.model import (
    NONE,
    Check,
    Protocol,
    Setting,
    TaskSettings,
    canonical,
    describe_differences,
    differences,
    fingerprint,
    flags,
)
from shapebias.protocols.tasks import TASKS

__all__ = [
    "NONE",
    "REGISTRY",
    "TAGS",
    "Check",
    "Protocol",
    "Setting",
    "TaskSettings",
    "canonical",
    "check",
    "check_run",
    "claim_of",
    "describe_differences",
    "differences",
    "fingerprint",
    "flags",
    "for_table",
    "for_task",
    "get",
    "names_of",
    "nearest",
    "resolve",
    "run_tags",
    "settings_of",
]

FAMILIES = (table1, table2, fig1, synthetic)

# Run tags (the run schema, docs/run-schema.md)
PROTOCOL_TAG = "shapebias.protocol"  # the protocol a run claims, or "none"
FINGERPRINT_TAG = "shapebias.settings_fingerprint"  # hash of the run's effective settings
ON_PROTOCOL_TAG = "shapebias.on_protocol"  # "true" when the settings equal the claimed protocol's
CHECK_TAG = "shapebias.protocol_check"  # one line: on protocol X, or which settings differ
TAGS = (PROTOCOL_TAG, FINGERPRINT_TAG, ON_PROTOCOL_TAG, CHECK_TAG)


def _build(items: Iterable[Protocol]) -> dict[str, Protocol]:
    out: dict[str, Protocol] = {}
    for p in items:
        if p.name in out:
            raise ValueError(f"two protocols named {p.name!r}")
        out[p.name] = p
    return out


REGISTRY: dict[str, Protocol] = _build(p for family in FAMILIES for p in family.protocols())


def for_task(task: str) -> list[Protocol]:
    return [p for p in REGISTRY.values() if p.task == task]


def for_table(table: str) -> list[Protocol]:
    return [p for p in REGISTRY.values() if p.table == table]


def get(name: str, task: str | None = None) -> Protocol:
    """The protocol ``name`` (of ``task`` when given); a ConfigError that names what exists otherwise."""
    p = REGISTRY.get(name.strip())
    families = sorted({f"{q.name.split('.')[0]}.* ({q.task})" for q in REGISTRY.values()})
    if p is None:
        raise ConfigError(
            f"protocol={name!r} is not a known protocol; families: {', '.join(families)} "
            "(`shapebias protocols` lists them all)"
        )
    if task is not None and p.task != task:
        mine = sorted({q.name.split(".")[0] + ".*" for q in for_task(task)}) or ["none"]
        raise ConfigError(f"protocol={name!r} is a {p.task} protocol; {task} takes: {', '.join(mine)}")
    return p


def names_of(claimed: str | Sequence[str]) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> names; "", "none" -> []."""
    parts = claimed.split(",") if isinstance(claimed, str) else list(claimed)
    return [n.strip() for n in parts if n.strip() and n.strip() != NONE]


def settings_of(task: str, claimed: str | Sequence[str]) -> dict[str, Any]:
    """The settings the named protocol(s) set, as typed values.

    Several protocols (a shape-bias sweep) must agree on every setting but ``topk``, whose values
    become the sweep's comma-separated levels.
    """
    chosen = [get(n, task) for n in names_of(claimed)]
    if not chosen:
        return {}
    merged = {k: s.value for k, s in chosen[0].settings.items()}
    if len(chosen) == 1:
        return merged
    levels = []
    for p in chosen:
        other = {k: s.value for k, s in p.settings.items()}
        levels.append(canonical(other.pop("topk", 1.0)))
        rest = {k: v for k, v in merged.items() if k != "topk"}
        if {k: canonical(v) for k, v in other.items()} != {k: canonical(v) for k, v in rest.items()}:
            raise ConfigError(
                f"protocol={','.join(q.name for q in chosen)!r}: a sweep's protocols must differ "
                f"in topk only; {chosen[0].name} and {p.name} differ in more"
            )
    merged["topk"] = ",".join(levels)
    return merged


def resolve(task: str, defaults: Mapping[str, Any], claimed: str | Sequence[str], explicit: Mapping[str, Any]) -> dict:
    """A job's settings: its defaults, then the claimed protocol's settings, then the flags given."""
    return {**defaults, **settings_of(task, claimed), **explicit}


def check(task: str, claimed: str | Sequence[str], values: Mapping[str, Any]) -> Check:
    """How a run with these settings (a Config as a dict, or its params) stands against its claim."""
    rules = TASKS.get(task)
    effective = rules.effective(values) if rules else {k: canonical(v) for k, v in values.items()}
    print_ = fingerprint(task, effective)
    names = names_of(claimed)
    label = ",".join(names) or NONE
    if not names:
        return Check(NONE, None, print_, {}, "no protocol claimed")
    unknown = [n for n in names if n not in REGISTRY or REGISTRY[n].task != task]
    if unknown or rules is None:
        return Check(label, None, print_, {}, f"claims {', '.join(unknown) or label}, not a {task} protocol here")
    expected = rules.effective(settings_of(task, names))
    diff = differences(expected, effective)
    protocol = REGISTRY[names[0]] if len(names) == 1 else None
    return Check(label, protocol, print_, diff, f"off protocol {label}" if diff else "")


def nearest(task: str, values: Mapping[str, Any]) -> tuple[Protocol | None, dict[str, tuple[str, str]]]:
    """The protocol of ``task`` whose settings differ from these in the fewest settings."""
    rules = TASKS.get(task)
    if rules is None or not for_task(task):
        return None, {}
    effective = rules.effective(values)
    scored = [(differences(rules.effective(p.values()), effective), p) for p in for_task(task)]
    diff, best = min(scored, key=lambda dp: len(dp[0]))
    return best, diff


def claim_of(tags: Mapping[str, str], params: Mapping[str, str]) -> str:
    """The protocol a logged run claims: its tag, else its ``protocol`` param; "" for none."""
    claimed = tags.get(PROTOCOL_TAG) or params.get("protocol", "")
    return "" if claimed.strip() in ("", NONE) else claimed.strip()


def check_run(task: str, tags: Mapping[str, str], params: Mapping[str, str]) -> Check:
    """:func:`check` for a logged run (its claim and its params)."""
    return check(task, claim_of(tags, params), params)


def run_tags(result: Check) -> dict[str, str]:
    """The tags every run carries (see :data:`TAGS`)."""
    return {
        PROTOCOL_TAG: result.claimed,
        FINGERPRINT_TAG: result.fingerprint,
        ON_PROTOCOL_TAG: str(result.on_protocol).lower(),
        CHECK_TAG: result.describe()[:4000],
    }
