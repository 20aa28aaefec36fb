"""A total time budget for reading an index, passed down from the command to every read.

Per-read socket timeouts do not bound a whole answer: a server that sends one byte every few
seconds never trips them. A ``Deadline`` is an instant on a monotonic clock; every read caps its
socket timeouts at the time left and checks it between chunks.

A deadline can also be made *current* for a block (``with deadline.applied():``): reads that are
handed none of their own (a callback written before deadlines existed) take the current one, so a
poller bounds the reads its callback makes.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from wheelflow.core.errors import DeadlineExceeded, SpecError
from wheelflow.core.redaction import redact_url

#: The longest time budget accepted anywhere (a year): longer is a typo, and a socket timeout built from
#: it would overflow.
MAX_SECONDS = 365 * 24 * 3600.0
_UNIT_SECONDS = {"seconds": 1.0, "minutes": 60.0, "hours": 3600.0}


def finite_seconds(value: object, field: str, *, allow_zero: bool = False, unit: str = "seconds") -> float:
    """``value`` as a finite positive number of seconds (zero too with ``allow_zero``), else a
    SpecError naming ``field`` (exit 2): ``nan`` never expires, ``inf`` overflows socket timeouts, and
    a negative one would read anyway."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        kind = "a finite number" + (" ≥ 0" if allow_zero else " > 0")
        raise SpecError(field, f"{value!r} is not {kind} of {unit}", f"give e.g. {field} 60")
    most = MAX_SECONDS / _UNIT_SECONDS.get(unit, 1.0)  # a year in the option's own unit: 8,760 hours
    if number > most:
        raise SpecError(field, f"{value!r} {unit} is longer than a year", f"give at most {most:.0f}")
    return number


_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("wheelflow_deadline", default=None)


@dataclass(frozen=True)
class Deadline:
    at: float  # on ``clock``
    started: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)

    @classmethod
    def after(cls, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> Deadline:
        seconds = finite_seconds(seconds, "timeout", allow_zero=True)
        now = clock()
        return cls(now + seconds, now, clock)

    @classmethod
    def current(cls) -> Deadline | None:
        """The deadline made current by an enclosing ``applied()`` block in this thread, if any."""
        return _current.get()

    @classmethod
    def for_read(cls, explicit: Deadline | None, default_seconds: float) -> Deadline:
        """The deadline a read runs under: the earliest of its own, the current one, and a default bound."""
        candidates = [d for d in (explicit, cls.current()) if d is not None]
        return min(candidates, key=lambda d: d.remaining()) if candidates else cls.after(default_seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - self.clock())

    def elapsed(self) -> float:
        return self.clock() - self.started

    @property
    def expired(self) -> bool:
        return self.clock() >= self.at

    def check(self, action: str, url: str) -> None:
        """Raise DeadlineExceeded naming ``url`` once the time is up."""
        if self.expired:
            raise self.exceeded(action, url)

    def exceeded(self, action: str, url: str) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"cannot {action} {redact_url(url)}: no complete answer after {self.elapsed():.1f} s "
            f"(the deadline was {_seconds(self.at - self.started)} s); fix: check that the index is up, or allow more "
            "time (--timeout, verify-timeout)"
        )

    @contextlib.contextmanager
    def applied(self) -> Iterator[Deadline]:
        """Make this deadline current for reads in this block (and this thread) that are given none."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)


def _seconds(value: float) -> str:
    """A deadline as people wrote it: 10, 1800, 0.5 (not 0)."""
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"
