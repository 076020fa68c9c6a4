"""bench/chaos.py end to end, short: three runs of a small release at N = 3 with a fixed seed, in network
namespaces (root, ``ip netns``; skipped elsewhere: the faults cut links and mount a full disk).

The benchmark checks every node's files against the release's SHA-256s, at the end and whenever it kills a
node, and fails a run that leaves a node short; here we check that the three runs passed and that what it
reports is there for other tools: the faults drawn, T/T_min, origin/F and the restarts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
# Seed 4 draws, at N = 3: a node, the coordinator and a fetcher killed and restarted (run 1); the coordinator
# again, a corrupt peer and a node (run 2); a full disk and a cut link (run 3). Checked below, so a change of
# the schedule shows here.
SEED = "4"


def _netns_problem() -> str | None:
    sys.path.insert(0, str(BENCH))
    try:
        from netlab import netns_available
    finally:
        sys.path.remove(str(BENCH))
    return netns_available()


@pytest.mark.slow
def test_three_chaos_runs_end_with_every_node_whole(tmp_path: Path) -> None:
    if (why := _netns_problem()) is not None:
        pytest.skip(f"chaos needs network namespaces: {why}")
    cmd = [sys.executable, str(BENCH / "chaos.py"), "--runs", "3", "--nodes", "3", "--size-mb", "32"]
    cmd += ["--seed", SEED, "--origin-mbps", "4", "--node-mbps", "8", "--dir", str(tmp_path), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=BENCH)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)
    rows, summary = result["rows"], result["summary"]
    assert [r["run"] for r in rows] == [1, 2, 3] and summary["runs"] == 3 and summary["failures"] == 0
    kinds = {k for r in rows for k in r["fault_kinds"]}
    assert kinds == {"kill-node", "kill-coordinator", "kill-fetcher", "corrupt-peer", "disk-full", "cut-link"}, kinds
    for row in rows:
        assert row["failure"] is None and row["faults"]
        assert row["t_over_t_min"] == pytest.approx(row["seconds"] / row["t_min_seconds"], abs=0.02)
        assert 1.0 <= row["origin_ratio"] < 1.5  # each byte once, and a fault's loss
        for restart in row["restarts"]:  # a killed node resumed from the pieces it had verified
            assert restart["held_after"] >= restart["held_before"], restart
