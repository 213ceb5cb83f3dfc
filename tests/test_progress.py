"""Progress bars: tqdm on a terminal; an occasional plain line when the output is a log file or pipe."""

import io

import pytest
from tqdm import tqdm

from mage_jax import progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def lines(monkeypatch):
    written = []
    monkeypatch.setattr(progress, "_write_line", written.append)
    return written


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    return now


def test_a_log_gets_a_line_every_interval_and_one_at_the_end(monkeypatch, lines, clock):
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    with progress.progress_bar(1000, "autoencoder", "step", initial=100, interval_s=30.0,
                               dynamic_ncols=True) as bar:  # tqdm-only options are accepted
        assert isinstance(bar, progress.LogProgress)
        clock[0] += 5.0  # compiling
        bar.update(2)
        for _ in range(49):  # 49 more updates within 5 s: no line
            clock[0] += 0.1
            bar.update(2)
            bar.set_postfix(loss="0.5")
        assert lines == []
        clock[0] = 1035.0  # 30 s since the start
        bar.update(100)
        assert len(lines) == 1
        # From the first update (step 102, 5 s in): 198 steps in 30 s; 700 left at that rate.
        assert lines[0] == ("autoencoder: 300/1000 step (30%), 6.6 step/s, 0:35 elapsed, 1:46 left, "
                            "loss=0.5")
        clock[0] += 5.0
        bar.update(700)
    assert len(lines) == 2 and lines[1].startswith("autoencoder: 1000/1000 step (100%), 25.7 step/s, 0:40")
    assert "left" not in lines[1]
    bar.close()  # a second close writes nothing
    assert len(lines) == 2


def test_a_log_without_absl_app_gets_the_line_on_stderr(monkeypatch):
    from absl import flags

    if flags.FLAGS.is_parsed():
        pytest.skip("absl flags were parsed in this process: the line goes to absl logging")
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    bar = progress.progress_bar(10, "collecting", "step", interval_s=0.0)
    bar.update(4)
    assert err.getvalue().startswith("collecting: 4/10 step (40%)") and "\r" not in err.getvalue()


def test_a_terminal_gets_tqdm_and_disabled_bars_stay_silent(monkeypatch, lines):
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    bar = progress.progress_bar(10, "eval", "step", file=terminal, mininterval=0)
    assert isinstance(bar, tqdm)
    bar.update(5)
    bar.close()
    assert "\r" in terminal.getvalue() and "5/10" in terminal.getvalue()

    monkeypatch.setattr("sys.stderr", io.StringIO())
    bar = progress.progress_bar(10, "eval", "step", disable=True)
    bar.update(10)
    bar.close()
    assert lines == []
