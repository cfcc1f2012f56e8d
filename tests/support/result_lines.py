"""pytest plugin: one JSON line per test, written and flushed the moment the test ends.

    pytest -p result_lines --result-lines PATH ...

junit XML is written when the session ends, so a run killed by a timeout leaves none; these lines survive
it. Each line: ``{"nodeid", "outcome" (passed | failed | skipped | error), "when" (setup | call |
teardown), "seconds", "worker", "message"}``, the message being the failure's last 3,000 characters or
the skip reason. The first line says how many tests were collected, the last (when the session gets to
end) the exit status. Under pytest-xdist the controller writes every line (workers forward their reports).
Used by benchmarks/gpu_suite.sh; pytest-reportlog does the same where it is installed, and is not assumed.
"""
from __future__ import annotations

import json
import time

import pytest


def pytest_addoption(parser):
    parser.addoption("--result-lines", metavar="PATH", default=None,
                     help="append one JSON line per finished test to PATH (flushed per test)")


class ResultLines:
    def __init__(self, path: str):
        self.file = open(path, "a", buffering=1)

    def write(self, **row) -> None:
        self.file.write(json.dumps({"time": round(time.time(), 3), **row}) + "\n")
        self.file.flush()

    def pytest_collection_finish(self, session):
        self.write(event="collected", count=len(session.items))

    def pytest_runtest_logreport(self, report):
        # one line per test: its call, or the setup / teardown that failed or skipped it
        if report.when != "call" and report.passed:
            return
        outcome = report.outcome if report.when == "call" or report.skipped else "error"
        message = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            message = str(report.longrepr[2])
        elif report.failed:
            message = str(report.longreprtext)[-3000:]
        gateway = getattr(getattr(report, "node", None), "gateway", None)   # set by xdist's controller
        self.write(nodeid=report.nodeid, outcome=outcome, when=report.when, seconds=round(report.duration, 3),
                   worker=getattr(gateway, "id", None), message=message)

    def pytest_sessionfinish(self, session, exitstatus):
        self.write(event="finished", exitstatus=int(exitstatus))
        self.file.close()


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    path = config.getoption("--result-lines")
    if path and not hasattr(config, "workerinput"):   # xdist workers forward reports to the controller
        config.pluginmanager.register(ResultLines(path), "result-lines-writer")
