"""The sync's progress lines: a step left waiting for executors is said at once, not a progress line later."""

from __future__ import annotations

import logging
import time

import pytest

from aporia_provider.extraction import progress
from aporia_provider.extraction.progress import Progress, _Tasks


def test_a_step_with_no_running_task_is_said_within_a_watch_not_a_progress_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 3600.0)
    monkeypatch.setattr(progress, "WATCH_SECONDS", 0.01)
    watched = Progress("fraud v1", "the Spark Connect server at sc://spark:15002")
    monkeypatch.setattr(watched, "_tasks_now", lambda: _Tasks(done=2, total=8, running=0))
    with caplog.at_level(logging.INFO, logger="aporia_provider.extraction.run"), watched:
        deadline = time.monotonic() + 5
        while not caplog.messages and time.monotonic() < deadline:
            time.sleep(0.01)
    assert caplog.messages[0] == (
        "Syncing fraud v1: waiting for executors on the Spark Connect server at sc://spark:15002, 0:00:00 elapsed, "
        "2 of 8 Spark tasks of this step done."
    )
    assert len(caplog.messages) == 1, "said once, then at the next progress line"
