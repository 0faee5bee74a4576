"""The stack starts and stops cleanly twice in a row, leaving no process behind and its ports
free; what PostgreSQL holds survives the restart. (Runs last: it stops the session's stack.)"""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.stack, pytest.mark.timeout(1800)]


def _assert_clean(stack, stack_mod) -> None:
    left = stack_mod.marked_pids(stack.root)
    assert not left, "left behind: " + "; ".join(f"{p}: {stack_mod.cmdline(p)[:120]}" for p in left)
    busy = {k: v for k, v in stack.ports.items() if not stack_mod.port_free(v)}
    assert not busy, f"ports still taken after down: {busy}"
    assert all(info["pid"] is None for info in stack.status().values())


def test_up_and_down_twice(stack, stack_mod, client, experiment_id, fault_report):
    timings = dict(getattr(stack, "timings", {}))
    for cycle in (1, 2):
        if cycle == 2:
            t0 = time.monotonic()
            stack.up()
            timings["second up"] = time.monotonic() - t0
            st = stack.status()
            assert all(info["healthy"] for info in st.values()), st
            assert stack.ray_alive_nodes() == 1
            # The runs live in PostgreSQL: they are still there after a full stop and start.
            assert client.get_experiment(experiment_id).name == "stack-faults"
        t0 = time.monotonic()
        assert stack.down() == []
        timings[f"down {cycle}"] = time.monotonic() - t0
        _assert_clean(stack, stack_mod)
    fault_report.append({"fault": "stack up/down twice", "timings_s": {k: round(v) for k, v in timings.items()}})
    print("\nup/down timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
