"""Progress in CI: when stderr is not a terminal, long work prints log lines (start, heartbeat, end)."""

import io
import sys
import time
import types

from facepii import progress


def test_log_lines_when_stderr_is_not_a_terminal(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(progress, "_enabled", True)
    monkeypatch.setattr(progress, "HEARTBEAT", 0.0)  # a heartbeat on every update
    with progress.bar("training decoder", 4) as b:
        for i in range(4):
            b.update(info=f"loss {i}")
    lines = err.getvalue().splitlines()
    assert lines[0].endswith("training decoder: started (4 steps)")
    assert "training decoder: 2/4 (50%)" in lines[2] and "loss 1" in lines[2]
    assert "training decoder: done in" in lines[-1] and len(lines) == 6


def test_heartbeat_is_rate_limited(monkeypatch):
    """At most one log line per HEARTBEAT seconds, on a clock the test drives (no wall-clock time)."""
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(progress, "_enabled", True)
    now = [1000.0]
    monkeypatch.setattr(progress, "time", types.SimpleNamespace(monotonic=lambda: now[0], strftime=time.strftime))
    with progress.bar("embedding", 1000) as b:
        for _ in range(1000):  # 1,000 updates within 29.97 s: no heartbeat
            now[0] += 0.02997
            b.update()
        assert len(err.getvalue().splitlines()) == 1
        now[0] += 0.1  # 30.07 s after the start: one heartbeat, then none until 30 s later
        b.update()
        b.update()
        assert len(err.getvalue().splitlines()) == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 3 and "done in 30.1 s" in lines[-1]


def test_stage_lines_in_a_log(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(progress, "_enabled", True)
    with progress.stage("split and judges"):
        pass
    start, end = err.getvalue().splitlines()
    assert start.endswith("stage split and judges: started") and "stage split and judges: done in" in end
