"""Progress bars that suit where the output goes: tqdm on a terminal, a plain line now and then elsewhere.

A tqdm bar redraws itself with carriage returns several times a second; in a log file (nohup, CI, a
batch job) that is thousands of updates on one line. `progress_bar` returns a tqdm bar when stderr is a
terminal (or in a notebook), and otherwise a `LogProgress` that writes one plain line, with the rate
and the time left, every `LOG_INTERVAL_S` seconds and one when it closes.
"""

from __future__ import annotations

import sys
import time

LOG_INTERVAL_S = 30.0  # seconds between the progress lines written when stderr is not a terminal


def _interactive() -> bool:
    if "ipykernel" in sys.modules:  # a notebook: tqdm.auto draws a widget
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def progress_bar(total: int, desc: str = "", unit: str = "it", initial: int = 0, disable: bool = False,
                 interval_s: float = LOG_INTERVAL_S, **tqdm_kwargs):
    """A tqdm bar on a terminal (`tqdm_kwargs` go to it), else a `LogProgress`; both are context
    managers with `update(n)`, `set_postfix(**values)`, `close()` and the count `n`."""
    if disable or _interactive():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=disable, **tqdm_kwargs)
    return LogProgress(total, desc, unit, initial, interval_s)


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def _write_line(line: str) -> None:
    from absl import flags, logging

    if flags.FLAGS.is_parsed():  # under absl.app (the launcher): a log line like the others
        logging.info("%s", line)
    else:  # a command-line tool without absl.app, whose INFO logging would be dropped
        print(line, file=sys.stderr, flush=True)


class LogProgress:
    """Progress as an occasional log line: `desc: n/total unit (p%), rate, elapsed, left, postfix`.

    The rate (and the time left from it) counts from the first update, so that the compilation
    before it does not make a long run look slow.
    """

    def __init__(self, total: int, desc: str = "", unit: str = "it", initial: int = 0,
                 interval_s: float = LOG_INTERVAL_S):
        self.total, self.desc, self.unit, self.interval_s = total, desc, unit, interval_s
        self.n = self._logged_n = initial
        self._start = self._logged_at = time.monotonic()
        self._first: tuple[float, int] | None = None  # (time, count) at the first update
        self._postfix = ""
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self._first is None:
            # The rate counts from here: the wait for the first update is mostly compilation.
            self._first = (now, self.n)
        if now - self._logged_at >= self.interval_s:
            self._log()

    def set_postfix(self, **values) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def line(self) -> str:
        now = time.monotonic()
        parts = [f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"]
        if self.total:
            parts[0] += f" ({100.0 * self.n / self.total:.0f}%)"
        rate = 0.0
        if self._first is not None and now > self._first[0] and self.n > self._first[1]:
            rate = (self.n - self._first[1]) / (now - self._first[0])
            parts.append(f"{rate:.3g} {self.unit}/s")
        parts.append(f"{_clock(now - self._start)} elapsed")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"{_clock((self.total - self.n) / rate)} left")
        if self._postfix:
            parts.append(self._postfix)
        return (f"{self.desc}: " if self.desc else "") + ", ".join(parts)

    def _log(self) -> None:
        self._logged_at, self._logged_n = time.monotonic(), self.n
        _write_line(self.line())

    def close(self) -> None:
        if not self._closed and self.n != self._logged_n:
            self._log()
        self._closed = True

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False
