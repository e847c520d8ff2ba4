"""One limiter for the whole run, the one retry policy, and the retry loop around each paid call.

Pacing is GCRA (virtual scheduling): a request of weight n may start at
last_start + last_n * 60/rate, never earlier, so a limit is spread evenly
instead of being spent in a burst. The server's bucket holds only one second
of rate, so when that second leaves less than JITTER_S of slack for early
arrival, each start is pushed back by the difference (see `_gap`).
Clock and sleep are injected: tests assert exact schedules without waiting.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Generic, Literal, Protocol, TypeVar, runtime_checkable

from dalle_pipe.providers.base import (
    BadRequest,
    ImageResponse,
    ProviderError,
    RateLimited,
    Refused,
    Transient,
    WaitTooLong,
)

T = TypeVar("T")

# Early arrival (thread wake-up + network jitter) the schedule must absorb without a 429.
JITTER_S = 0.025
DEFAULT_RETRY_AFTER_S = 1.0
DEFAULT_MAX_WAIT_S = 120.0
MAX_RATE_LIMIT_RETRIES = 20
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
# A 429 despite pacing at a known rate: slow to 90 %, recover 1 % per success, never below 50 %.
PACE_CUT = 0.9
PACE_RECOVERY = 0.01
PACE_FLOOR = 0.5
_EPS = 1e-9


class Clock(Protocol):
    """Monotonic time and a sleep; the only source of time for pacing and backoff."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


@runtime_checkable
class Interruptible(Protocol):
    """A clock whose sleepers can all be woken at once (Limiter.stop uses it)."""

    def interrupt(self) -> None: ...


class SystemClock:
    """time.monotonic, and a sleep that interrupt() (Ctrl-C, a fatal error) cuts short for good."""

    def __init__(self, stop_event: threading.Event | None = None) -> None:
        self.stop_event = stop_event if stop_event is not None else threading.Event()

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.stop_event.wait(seconds)

    def interrupt(self) -> None:
        self.stop_event.set()


class FakeClock:
    """A clock for tests and simulations: time moves only when someone sleeps. Thread-safe."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)


@dataclass(frozen=True)
class Limits:
    """The throttle settings: the account's rates and concurrency, and the retry policy."""

    requests_per_minute: float | None = None
    images_per_minute: float | None = None
    concurrency: int = 4
    max_retries: int = 6
    timeout_s: float = 300.0
    max_wait_s: float = DEFAULT_MAX_WAIT_S  # a server asking to wait longer stops the run

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "images_per_minute"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, not {value!r}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {self.concurrency!r}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {self.max_retries!r}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"timeout_s must be > 0, not {self.timeout_s!r}")
        if not (math.isfinite(self.max_wait_s) and self.max_wait_s > 0):
            raise ValueError(f"max_wait_s must be > 0, not {self.max_wait_s!r}")

    @property
    def stated(self) -> bool:
        """True when a rate is given; otherwise the limiter learns it from response headers."""
        return self.requests_per_minute is not None or self.images_per_minute is not None

    @property
    def retry_policy(self) -> RetryPolicy:
        """These settings' retry policy: max_retries transient retries, waits capped at max_wait_s."""
        return RetryPolicy(max_retries=self.max_retries, max_wait_s=self.max_wait_s)


@dataclass(frozen=True)
class LimiterStats:
    """Counters for progress display and benchmarks."""

    requests: int = 0  # requests let through
    images: int = 0  # images those requests asked for
    rate_limited: int = 0  # 429s reported
    waits_s: float = 0.0  # time callers spent blocked in acquire(), summed over threads
    paused_s: float = 0.0  # wall time covered by 429 pauses
    requests_per_minute: float | None = None  # the rate paced at now (stated or learned)
    images_per_minute: float | None = None
    window: int = 1  # requests allowed in flight now


class Stopped(Exception):
    """The limiter was stopped (Ctrl-C or a fatal error): start no new request."""


def parse_duration(text: str) -> float:
    """Seconds in an x-ratelimit-reset-* value: "1s", "6m0s", "20ms", "0.5s", "1h2m3s", or a bare number."""
    s = text.strip().lower()
    try:
        value = float(s)
    except ValueError:
        if not _DURATION.fullmatch(s):
            raise ValueError(f"not a duration: {text!r}") from None
        value = sum(float(num) * _UNITS[unit] for num, unit in _DURATION_PART.findall(s))
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a duration: {text!r}")
    return value


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|μs|ns|m|s)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}


def retry_after_from_headers(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks to wait, or None when it does not say (or says nonsense).

    ``retry-after-ms`` first, then ``retry-after`` as seconds or as an HTTP date (``now`` is
    the Unix time to count from; default: the current time). Negative, NaN and infinite
    values are ignored; a date in the past is 0. Huge values come back as they are (finite:
    ``retry-after-ms: 10**15`` is 10**12 s): the caller compares them with its cap.
    """
    h = _lower(headers)
    ms = _number(h.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    text = h.get("retry-after")
    seconds = _number(text)
    if seconds is not None or text is None:
        return seconds
    import email.utils  # an HTTP date is rare: the module (and socket under it) loads only for one

    try:
        when = email.utils.parsedate_to_datetime(str(text).strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as such
        return None
    try:
        delta = when.timestamp() - (time.time() if now is None else now)
    except (OverflowError, OSError, ValueError):
        return None
    return max(0.0, delta) if math.isfinite(delta) else None


def describe_wait(seconds: float) -> str:
    """A wait in words for a message: "90 s", "45 min", "3.5 h", "11574 days"."""
    if seconds < 120:
        return f"{seconds:g} s" if seconds < 10 else f"{round(seconds)} s"
    if seconds < 7200:
        return f"{round(seconds / 60)} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{round(seconds / 86400)} days"


def wait_too_long_reason(seconds: float, headers: Mapping[str, str], cap: float) -> str:
    """The stop reason for a server-requested wait over the cap, quoting what the server sent."""
    h = _lower(headers)
    quoted = [f"{k}: {h[k]}" for k in ("retry-after-ms", "retry-after") if k in h]
    asked = f" ({'; '.join(q[:80] for q in quoted)})" if quoted else ""
    return (f"the server asked to wait {describe_wait(seconds)}{asked}; "
            f"more than throttle.max_wait_s = {cap:g} s")


class Limiter:
    """Paces every request of a run: rates, concurrency, and global 429 pauses. Thread-safe."""

    def __init__(self, limits: Limits, clock: Clock, *, stated: bool) -> None:
        self._limits = limits
        self._clock = clock
        self._cond = threading.Condition()
        self._learned: dict[str, float] = {}  # "requests" / "images" -> limit per minute
        self._learning = not stated  # slow start, then AIMD, until a limit is learned
        self._window = limits.concurrency if stated else 1
        self._in_flight = 0
        self._queue: deque[object] = deque()  # waiting callers, first come first served
        self._stopped = False
        self._stop_reason: str | None = None
        self._paused_until = clock.now()
        self._last_start: float | None = None
        self._last_images = 0
        self._pace = 1.0
        self._requests = 0
        self._images = 0
        self._rate_limited = 0
        self._waits_s = 0.0
        self._paused_s = 0.0

    # -- public -------------------------------------------------------------------------

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def paused_until(self) -> float:
        """Clock time before which no request starts (a 429's retry-after)."""
        with self._cond:
            return self._paused_until

    @property
    def stopped(self) -> bool:
        with self._cond:
            return self._stopped

    @property
    def stop_reason(self) -> str | None:
        """Why the limiter stopped itself (a server-requested wait over max_wait_s); None otherwise."""
        with self._cond:
            return self._stop_reason

    @property
    def stats(self) -> LimiterStats:
        with self._cond:
            rpm, ipm = self._rates()
            return LimiterStats(
                self._requests, self._images, self._rate_limited, self._waits_s, self._paused_s,
                rpm, ipm, self._window,
            )

    def acquire(self, images: int = 1) -> None:
        """Block until a concurrency slot is free and the rates allow this request; Stopped if stopped."""
        weight = max(1, images)
        with self._cond:
            if self._stopped:
                raise Stopped("the run is stopping")
            ticket = object()
            self._queue.append(ticket)
            entered = self._clock.now()
            try:
                while True:
                    if self._stopped:
                        raise Stopped("the run is stopping")
                    if self._queue[0] is not ticket or self._in_flight >= self._window:
                        self._cond.wait()
                        continue
                    now = self._clock.now()
                    start = self._earliest(now, weight)
                    if start <= now + _EPS:
                        self._commit(max(now, start), weight)
                        self._in_flight += 1
                        self._waits_s += max(0.0, now - entered)
                        return
                    # Only the head of the queue sleeps on the clock; it re-plans on waking,
                    # so a pause or a learned rate that arrived meanwhile is honoured.
                    self._cond.release()
                    try:
                        self._clock.sleep(start - now)
                    finally:
                        self._cond.acquire()
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def release(self) -> None:
        """Give back the slot taken by acquire()."""
        with self._cond:
            if self._in_flight <= 0:
                raise RuntimeError("release() without acquire()")
            self._in_flight -= 1
            self._cond.notify_all()

    def reserve(self, now: float, images: int = 1) -> float:
        """The scheduling core, without concurrency or blocking: book the earliest start at or after now."""
        weight = max(1, images)
        with self._cond:
            start = self._earliest(now, weight)
            self._commit(start, weight)
            return start

    def on_response(self, rate_headers: Mapping[str, str]) -> None:
        """A request went through: learn limits from x-ratelimit-* headers; widen the window."""
        with self._cond:
            self._learn(rate_headers)
            self._pace = min(1.0, self._pace + PACE_RECOVERY)
            if self._learning:
                if self._learned:
                    self._adopt_learned()
                else:
                    self._window = min(self._limits.concurrency, self._window + 1)
            self._cond.notify_all()

    def on_rate_limited(self, retry_after_s: float | None, rate_headers: Mapping[str, str]) -> None:
        """A 429: pause every worker until retry-after has passed, and learn from the headers."""
        with self._cond:
            now = self._clock.now()
            known_before = self._rates() != (None, None)
            self._learn(rate_headers)
            self._rate_limited += 1
            wait = retry_after_s
            if wait is None:
                wait = retry_after_from_headers(rate_headers)
            if wait is None:
                wait = self._token_wait(rate_headers)
            if not math.isfinite(wait) or wait > self._limits.max_wait_s:
                self._give_up(wait, rate_headers)
                return
            until = now + max(0.0, wait)
            first_of_pause = now >= self._paused_until
            if until > self._paused_until:
                self._paused_s += until - max(now, self._paused_until)
                self._paused_until = until
            if self._learning and self._learned:
                self._adopt_learned()
            elif first_of_pause:  # one cut per pause, not one per request that hit it
                if known_before:
                    self._pace = max(PACE_FLOOR, self._pace * PACE_CUT)
                elif self._learning:
                    self._window = max(1, self._window // 2)
            self._cond.notify_all()

    def stop(self, reason: str | None = None) -> None:
        """Wake every waiter; acquire() raises Stopped from now on. In-flight requests may land."""
        with self._cond:
            self._stopped = True
            if reason is not None and self._stop_reason is None:
                self._stop_reason = reason
            self._cond.notify_all()
        if isinstance(self._clock, Interruptible):
            self._clock.interrupt()

    # -- internals (called with the lock held) -------------------------------------------

    def _give_up(self, wait: float, headers: Mapping[str, str]) -> None:
        """The account cannot go on: stop new requests, saying what the server asked for."""
        if self._stop_reason is None:
            self._stop_reason = wait_too_long_reason(wait, headers, self._limits.max_wait_s)
        self._stopped = True
        self._cond.notify_all()
        if isinstance(self._clock, Interruptible):
            self._clock.interrupt()

    def _rates(self) -> tuple[float | None, float | None]:
        return (
            _lowest(self._limits.requests_per_minute, self._learned.get("requests")),
            _lowest(self._limits.images_per_minute, self._learned.get("images")),
        )

    def _earliest(self, now: float, weight: int) -> float:
        start = max(now, self._paused_until)
        if self._last_start is None:
            return start
        rpm, ipm = self._rates()
        if rpm is not None:
            start = max(start, self._last_start + _gap(rpm * self._pace, 1, 1))
        if ipm is not None:
            start = max(start, self._last_start + _gap(ipm * self._pace, self._last_images, weight))
        return start

    def _commit(self, start: float, weight: int) -> None:
        self._last_start = start
        self._last_images = weight
        self._requests += 1
        self._images += weight

    def _adopt_learned(self) -> None:
        self._learning = False
        self._window = self._limits.concurrency

    def _learn(self, headers: Mapping[str, str]) -> None:
        h = _lower(headers)
        for dim in ("requests", "images"):
            limit = _number(h.get(f"x-ratelimit-limit-{dim}"))
            if limit is not None and limit > 0:
                self._learned[dim] = limit

    def _token_wait(self, headers: Mapping[str, str]) -> float:
        """A 429 without retry-after: until the exhausted bucket holds one more request, else 1 s."""
        h = _lower(headers)
        waits = []
        for dim in ("requests", "images"):
            remaining = _number(h.get(f"x-ratelimit-remaining-{dim}"))
            reset_text = h.get(f"x-ratelimit-reset-{dim}")
            if remaining is None or remaining >= 1 or reset_text is None:
                continue
            try:
                reset = parse_duration(reset_text)
            except ValueError:
                continue
            limit = self._learned.get(dim)
            waits.append(min(reset, 60.0 / limit) if limit else reset)
        return max(waits) if waits else DEFAULT_RETRY_AFTER_S


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed call is tried again, and after how long: the one rule of every retry loop."""

    max_retries: int = 6  # transient failures (5xx, timeouts, resets) tried again
    max_rate_limit_retries: int = MAX_RATE_LIMIT_RETRIES  # 429s, counted apart
    max_wait_s: float = DEFAULT_MAX_WAIT_S  # a server asking to wait longer: give up
    backoff_base_s: float = BACKOFF_BASE_S
    backoff_cap_s: float = BACKOFF_CAP_S

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Full jitter: uniform(0, min(cap, base * 2**retry)), retry counted from 0."""
        return rng.uniform(0.0, min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** min(retry, 32)))

    def decide(self, error: ProviderError, nth: int, rng: random.Random) -> Retry | GiveUp:
        """After the nth failure of error's kind (429s and transient errors are counted apart):
        wait and try again, or give up.

        Refusals, bad requests, fatal errors: give up at once. A server asking to wait more than
        max_wait_s (retry-after on a 429 or a 5xx): give up with a WaitTooLong. A 429 waits what
        the server asked, else a backoff; a transient error waits a backoff, at least what the
        server asked.
        """
        kind = retry_kind(error)
        if kind is None:
            return GiveUp(error)
        asked = server_wait(error)
        if asked is not None and not (math.isfinite(asked) and asked <= self.max_wait_s):
            return GiveUp(_too_long(wait_too_long_reason(asked, error.headers, self.max_wait_s), error))
        if nth > (self.max_rate_limit_retries if kind == "rate_limit" else self.max_retries):
            return GiveUp(error)
        if kind == "rate_limit" and asked is not None:
            return Retry(kind, asked, asked)
        return Retry(kind, max(self.backoff(nth - 1, rng), asked or 0.0), asked)


@dataclass(frozen=True)
class Retry:
    """Try again after wait_s; asked_s is what the server asked for (None: it did not say)."""

    kind: Literal["rate_limit", "backoff"]
    wait_s: float
    asked_s: float | None


@dataclass(frozen=True)
class GiveUp:
    """Stop trying; error is what the call ends with (a WaitTooLong when the wait was too long)."""

    error: ProviderError


DEFAULT_POLICY = RetryPolicy()


def retry_kind(error: ProviderError) -> Literal["rate_limit", "backoff"] | None:
    """How an error is retried: a 429 ("rate_limit"), a transient one ("backoff"), or not at all."""
    if isinstance(error, RateLimited):
        return "rate_limit"
    if isinstance(error, Transient):
        return "backoff"
    return None


def server_wait(error: ProviderError) -> float | None:
    """Seconds the server asked to wait before the next try; None when it did not say.

    A provider reads a 429's retry-after into RateLimited.retry_after_s with
    retry_after_from_headers; any other error's headers are read here with the same parser.
    """
    if isinstance(error, RateLimited) and error.retry_after_s is not None:
        return error.retry_after_s
    return retry_after_from_headers(error.headers)


@dataclass
class Outcome(Generic[T]):
    """What came of one call after its retries: a value or the last error, never both."""

    value: T | None
    error: ProviderError | None
    attempts: int
    possible_duplicate_charge: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def call_with_retries(
    fn: Callable[[], ImageResponse],
    limiter: Limiter,
    *,
    images: int,
    max_retries: int,
    clock: Clock,
    rng: random.Random,
    on_wait: Callable[[str, float], None] | None = None,
    max_rate_limit_retries: int = MAX_RATE_LIMIT_RETRIES,
) -> Outcome[ImageResponse]:
    """Run fn under the limiter, retrying as RetryPolicy decides; return refusals and the like.

    Every call of fn is an attempt. Transient failures (5xx, timeouts, resets) are retried
    up to max_retries times after the policy's wait. 429s do not use up max_retries (their
    own cap is max_rate_limit_retries); their wait is a pause booked in the limiter, so every
    worker waits it out. A wait over the limiter's max_wait_s stops the limiter: the account
    cannot go on. Refused, BadRequest and Fatal are returned at once.
    """
    policy = replace(limiter.limits.retry_policy, max_retries=max_retries,
                     max_rate_limit_retries=max_rate_limit_retries)
    attempts = 0
    failures: Counter[str | None] = Counter()
    maybe_charged = False
    duplicate = False
    while True:
        limiter.acquire(images)
        attempts += 1
        duplicate = duplicate or maybe_charged
        try:
            try:
                response = fn()
            except ProviderError as exc:
                error = exc
                kind = retry_kind(exc)
                failures[kind] += 1
                decision = policy.decide(exc, failures[kind], rng)
                _tell(limiter, exc, decision)  # before the slot is given back: the pause holds everyone
            else:
                limiter.on_response(response.rate_headers)
                return Outcome(response, None, attempts, duplicate)
        finally:
            limiter.release()

        if isinstance(error, RateLimited) and limiter.stop_reason is not None:
            return Outcome(None, _too_long(limiter.stop_reason, error), attempts, duplicate)
        if isinstance(decision, GiveUp):
            return Outcome(None, decision.error, attempts, duplicate)
        if isinstance(error, Transient):
            maybe_charged = maybe_charged or error.maybe_charged
        if decision.kind == "rate_limit":
            if on_wait is not None:
                on_wait("rate_limit", max(0.0, limiter.paused_until - clock.now()))
            continue  # the wait happens in acquire(), shared by every worker
        if on_wait is not None:
            on_wait("backoff", decision.wait_s)
        clock.sleep(decision.wait_s)


def _tell(limiter: Limiter, error: ProviderError, decision: Retry | GiveUp) -> None:
    """What the limiter learns from a failed attempt."""
    if isinstance(decision, GiveUp) and isinstance(decision.error, WaitTooLong):
        limiter.stop(decision.error.message)  # the account cannot go on: no new request
    elif isinstance(error, RateLimited):
        limiter.on_rate_limited(server_wait(error), error.headers)
    elif isinstance(error, Refused | BadRequest):  # the rate let it through: that is worth learning
        limiter.on_response(error.headers)


def _too_long(reason: str, error: ProviderError) -> WaitTooLong:
    """The error a task records when the server's requested wait stopped the run."""
    return WaitTooLong(reason, status=error.status, code=error.code, request_id=error.request_id,
                       headers=error.headers)


def _gap(per_minute: float, prev_weight: int, next_weight: int) -> float:
    """Seconds from the previous start to the next one.

    The previous request used prev_weight / rate minutes. The server's bucket holds
    one second of rate, so after even pacing it still has (1 s - next's own cost) of
    slack for a request that arrives early; only the part of JITTER_S that this slack
    does not cover is added (at 60 rpm: 25 ms; at 120 rpm and above: nothing).
    """
    spacing = 60.0 / per_minute
    headroom = max(0.0, 1.0 - next_weight * spacing)
    return prev_weight * spacing + max(0.0, JITTER_S - headroom)


def _lowest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _number(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}
