"""The account engine applier's progress: a report at most every few seconds, and the caller's
`progress` at every step (where it may abandon the apply)."""

from runas_agent.host.engine import REPORT_EVERY, _Ticker


def test_reports_come_every_few_seconds_and_progress_every_step():
    now = [0.0]
    reports, steps = [], []
    ticker = _Ticker(lambda *r: reports.append(r), lambda: steps.append(1), clock=lambda: now[0])
    for i in range(10):
        now[0] = i * REPORT_EVERY / 2
        ticker.tick("making homes", i, 10)
    assert len(steps) == 10
    assert reports == [("making homes", 2, 10), ("making homes", 4, 10), ("making homes", 6, 10), ("making homes", 8, 10)]
