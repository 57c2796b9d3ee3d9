"""console.py: the epoch line carries each feature's figures and the time left; the progress bar is
a terminal's only."""
import io
import sys

import pytest

import console

STATS = {"train_loss": 0.5, "tracking_s": 0.012}


def test_the_epoch_line_names_each_features_figures_and_the_time_left():
    line = console.epoch_line(1, 10, "interval 1", dict(STATS), "test  80.00%", [10.0, 14.0])
    assert line.startswith("epoch   2/10  interval 1  loss 0.5000  test  80.00%  tracking 0.012s")
    assert line.endswith("14.0 s/epoch, 1m36s left")  # 8 epochs left at the mean 12 s
    exchange = {"density": 0.0123, "bytes_per_worker": 2 * 2**20, "dense_bytes": 200 * 2**20}
    io_rows = [{"requests": 10, "hits": 7, "bytes": 3 * 2**20}, {"requests": 10, "hits": 9, "bytes": 2**20}]
    line = console.epoch_line(9, 10, "interval 3", {**STATS, "exchange": exchange, "io": io_rows}, "x", [5.0])
    assert "density 1.23e-02  2 MiB/step sent (1.0% of dense)" in line
    assert "fetched 4 MiB  hits 80.0%" in line and line.endswith("5.0 s/epoch, 0.0s left")


@pytest.mark.parametrize("seconds,shown", [(42.04, "42.0s"), (185, "3m05s"), (7440, "2h04m")])
def test_durations_read_as_a_person_writes_them(seconds, shown):
    assert console.duration(seconds) == shown


def test_one_worker_is_singular():
    assert (console.plural(1, "worker"), console.plural(4, "worker")) == ("1 worker", "4 workers")


def test_the_bar_is_for_a_terminal_only(monkeypatch):
    items = [1, 2, 3]
    assert console.steps(items, 3, False, "epoch 1") is items  # a log or CI: the steps untouched
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not console.progress_wanted(True)  # not a terminal
    bar = io.StringIO()
    monkeypatch.setattr(sys, "stderr", bar)
    assert list(console.steps(items, 3, True, "epoch 1")) == items and "epoch 1" in bar.getvalue()


def test_no_bar_in_ci_even_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    monkeypatch.delenv("CI", raising=False)
    assert console.progress_wanted(True) and not console.progress_wanted(False)
    monkeypatch.setenv("CI", "true")
    assert not console.progress_wanted(True)
