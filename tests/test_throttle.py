"""The limiter's schedules and the retry loop, on a fake clock: exact times, no waiting."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable

import pytest

from dalle_pipe.providers.base import (
    BadRequest,
    Fatal,
    GeneratedImage,
    ImageResponse,
    ProviderError,
    RateLimited,
    Refused,
    Transient,
    WaitTooLong,
)
from dalle_pipe.throttle import (
    DEFAULT_POLICY,
    JITTER_S,
    FakeClock,
    GiveUp,
    Limiter,
    Limits,
    Outcome,
    Retry,
    RetryPolicy,
    Stopped,
    SystemClock,
    call_with_retries,
    parse_duration,
    retry_after_from_headers,
)

OK = ImageResponse(images=(GeneratedImage(b"png", "png"),), request_id="req_1")


def schedule(limiter: Limiter, count: int, images: int = 1, now: float = 0.0) -> list[float]:
    """Starts booked by `count` callers who are all ready at `now` (a backlog)."""
    return [limiter.reserve(now, images) for _ in range(count)]


def gaps(starts: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(starts)]


def run_thread(target: Callable[[], None]) -> tuple[threading.Thread, dict[str, object]]:
    """Start target in a thread; the dict gets 'done' or 'error' when it ends."""
    result: dict[str, object] = {}

    def body() -> None:
        try:
            target()
            result["done"] = True
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, result


def blocked(thread: threading.Thread) -> bool:
    thread.join(0.05)
    return thread.is_alive()


# -- schedules --------------------------------------------------------------------------


def test_60_rpm_starts_one_second_plus_jitter_slack_apart() -> None:
    # At 60 rpm the server's one-second bucket holds exactly one request: no slack at
    # all for early arrival, so JITTER_S is added (see test_schedule_never_draws_a_429).
    limiter = Limiter(Limits(requests_per_minute=60), FakeClock(), stated=True)
    starts = schedule(limiter, 10)
    assert starts == pytest.approx([k * (1.0 + JITTER_S) for k in range(10)])
    assert JITTER_S == 0.025


def test_acquire_sleeps_the_exact_schedule() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(requests_per_minute=60), clock, stated=True)
    starts = []
    for _ in range(10):
        limiter.acquire(1)
        starts.append(clock.now())
        limiter.release()
    assert starts == pytest.approx([k * 1.025 for k in range(10)])
    assert clock.sleeps == pytest.approx([1.025] * 9)
    stats = limiter.stats
    assert (stats.requests, stats.images) == (10, 10)
    assert stats.waits_s == pytest.approx(9 * 1.025)


def test_600_images_per_minute_n2_is_exactly_0_2_s_apart() -> None:
    # 600/min: the bucket holds 10 images, 8 more than a request takes: no slack needed.
    limiter = Limiter(Limits(images_per_minute=600), FakeClock(), stated=True)
    assert gaps(schedule(limiter, 10, images=2)) == pytest.approx([0.2] * 9)


def test_weight_is_paid_after_the_request() -> None:
    limiter = Limiter(Limits(images_per_minute=600), FakeClock(), stated=True)
    assert limiter.reserve(0.0, 1) == 0.0
    assert limiter.reserve(0.0, 5) == pytest.approx(0.1)  # waits for the first one's image
    assert limiter.reserve(0.0, 1) == pytest.approx(0.6)  # waits for the five


def test_both_rates_apply_the_slower_wins() -> None:
    limiter = Limiter(Limits(requests_per_minute=300, images_per_minute=600), FakeClock(), stated=True)
    assert gaps(schedule(limiter, 4, images=1)) == pytest.approx([0.2] * 3)  # requests bind
    limiter = Limiter(Limits(requests_per_minute=300, images_per_minute=600), FakeClock(), stated=True)
    assert gaps(schedule(limiter, 4, images=4)) == pytest.approx([0.4] * 3)  # images bind


def test_idle_time_is_not_banked_into_a_burst() -> None:
    limiter = Limiter(Limits(requests_per_minute=120), FakeClock(), stated=True)
    assert limiter.reserve(0.0) == 0.0
    assert schedule(limiter, 3, now=100.0) == pytest.approx([100.0, 100.5, 101.0])


def test_no_rate_no_pacing() -> None:
    limiter = Limiter(Limits(), FakeClock(), stated=True)
    assert schedule(limiter, 5) == [0.0] * 5


def simulate_429s(starts: list[float], weights: list[int], per_minute: float, jitter_s: float) -> int:
    """A server that is a token bucket holding one second of rate, starting full."""
    rng = random.Random(1234)
    arrivals = sorted((s + rng.uniform(0.0, jitter_s), w) for s, w in zip(starts, weights, strict=True))
    capacity = per_minute / 60.0
    tokens, last, refused = capacity, arrivals[0][0], 0
    for at, weight in arrivals:
        tokens = min(capacity, tokens + (at - last) * per_minute / 60.0)
        last = at
        if tokens >= weight - 1e-9:
            tokens -= weight
        else:
            refused += 1
    return refused


@pytest.mark.parametrize("rpm", [60, 61, 75, 90, 120, 150, 300, 600, 1200, 6000])
def test_schedule_never_draws_a_429(rpm: float) -> None:
    # Requests reach the server up to 20 ms late (thread wake-up, network): never a 429,
    # and the pace costs at most 2.5 % over the bound.
    limiter = Limiter(Limits(requests_per_minute=rpm), FakeClock(), stated=True)
    starts = schedule(limiter, 400)
    assert simulate_429s(starts, [1] * 400, rpm, jitter_s=0.020) == 0
    assert starts[-1] <= 1.025 * 399 * 60.0 / rpm


def test_exact_pacing_draws_429s_only_where_the_bucket_has_no_room() -> None:
    # Why JITTER_S exists: at 60 rpm exact spacing meets jitter with no slack at all ...
    exact = [k * 1.0 for k in range(400)]
    assert simulate_429s(exact, [1] * 400, 60, jitter_s=0.020) > 50
    # ... while at 600 rpm the bucket's 9 spare requests absorb it, so no margin is paid there.
    exact = [k * 0.1 for k in range(400)]
    assert simulate_429s(exact, [1] * 400, 600, jitter_s=0.020) == 0
    limiter = Limiter(Limits(requests_per_minute=600), FakeClock(), stated=True)
    assert gaps(schedule(limiter, 5)) == pytest.approx([0.1] * 4)


def test_mixed_image_counts_never_draw_a_429() -> None:
    rng = random.Random(5)
    weights = [rng.randint(1, 10) for _ in range(400)]
    limiter = Limiter(Limits(images_per_minute=600), FakeClock(), stated=True)
    starts = [limiter.reserve(0.0, w) for w in weights]
    assert simulate_429s(starts, weights, 600, jitter_s=0.020) == 0
    assert starts[-1] <= 1.03 * sum(weights[:-1]) * 0.1


# -- concurrency, slow start, pauses ----------------------------------------------------


def test_concurrency_cap_blocks_until_release() -> None:
    limiter = Limiter(Limits(concurrency=2), FakeClock(), stated=True)
    limiter.acquire(1)
    limiter.acquire(1)
    thread, result = run_thread(lambda: limiter.acquire(1))
    assert blocked(thread)
    limiter.release()
    thread.join(2)
    assert result == {"done": True}


def test_release_without_acquire_is_a_bug() -> None:
    limiter = Limiter(Limits(), FakeClock(), stated=True)
    with pytest.raises(RuntimeError):
        limiter.release()


def test_slow_start_second_request_waits_for_first_response() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(concurrency=4), clock, stated=False)
    limiter.acquire(1)
    started: list[float] = []

    def second() -> None:
        limiter.acquire(1)
        started.append(clock.now())

    thread, result = run_thread(second)
    assert blocked(thread)  # one request in flight until we know the limit
    limiter.on_response({"x-ratelimit-limit-requests": "300", "x-ratelimit-remaining-requests": "299"})
    limiter.release()
    thread.join(2)
    assert result == {"done": True}
    assert started == pytest.approx([0.2])  # paced at the learned 300 rpm from the first start
    for _ in range(3):  # then the configured concurrency: 4 in flight
        limiter.acquire(1)
    assert clock.now() == pytest.approx(0.8)
    assert limiter.stats.window == 4
    assert limiter.stats.requests_per_minute == 300


def test_learning_from_headers_sets_spacing() -> None:
    limiter = Limiter(Limits(), FakeClock(), stated=False)
    limiter.on_response({"X-RateLimit-Limit-Requests": "300"})
    assert gaps(schedule(limiter, 5)) == pytest.approx([0.2] * 4)


def test_learned_images_limit_weights_by_n() -> None:
    limiter = Limiter(Limits(), FakeClock(), stated=False)
    limiter.on_response({"x-ratelimit-limit-images": "600"})
    assert gaps(schedule(limiter, 4, images=3)) == pytest.approx([0.3] * 3)


def test_stated_rate_is_lowered_but_never_raised_by_headers() -> None:
    limiter = Limiter(Limits(requests_per_minute=600), FakeClock(), stated=True)
    limiter.on_response({"x-ratelimit-limit-requests": "300"})
    assert gaps(schedule(limiter, 3)) == pytest.approx([0.2, 0.2])
    limiter = Limiter(Limits(requests_per_minute=30), FakeClock(), stated=True)
    limiter.on_response({"x-ratelimit-limit-requests": "300"})
    assert gaps(schedule(limiter, 3)) == pytest.approx([2.0 + JITTER_S] * 2)


def test_aimd_without_headers() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(concurrency=4), clock, stated=False)
    assert limiter.stats.window == 1
    for expected in (2, 3, 4, 4):
        limiter.on_response({})
        assert limiter.stats.window == expected
    limiter.on_rate_limited(1.0, {})
    assert limiter.stats.window == 2
    limiter.on_rate_limited(1.0, {})  # same pause: other in-flight requests hitting it
    assert limiter.stats.window == 2
    clock.advance(1.0)
    limiter.on_rate_limited(1.0, {})
    assert limiter.stats.window == 1
    limiter.on_rate_limited(None, {})
    assert limiter.stats.window == 1


def test_429_with_headers_adopts_the_learned_limit() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(concurrency=3), clock, stated=False)
    limiter.on_rate_limited(0.5, {"x-ratelimit-limit-requests": "120"})
    assert limiter.stats.window == 3
    assert limiter.paused_until == 0.5
    assert schedule(limiter, 3) == pytest.approx([0.5, 1.0, 1.5])


def test_429_pauses_all_and_resumes_paced_not_in_a_burst() -> None:
    limiter = Limiter(Limits(requests_per_minute=600), FakeClock(), stated=True)
    assert limiter.reserve(0.0) == 0.0
    limiter.on_rate_limited(5.0, {})
    assert limiter.paused_until == 5.0
    # three workers ready at 0.2: the first goes when the pause ends, the rest keep spacing
    # (a 429 despite pacing at a known rate also slows the pace to 90 %).
    assert schedule(limiter, 3, now=0.2) == pytest.approx([5.0, 5.0 + 0.1 / 0.9, 5.0 + 0.2 / 0.9])
    stats = limiter.stats
    assert (stats.rate_limited, stats.paused_s) == (1, 5.0)


def test_pace_cut_once_per_pause_and_recovers() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(requests_per_minute=600), clock, stated=True)
    limiter.on_rate_limited(1.0, {})
    limiter.on_rate_limited(1.0, {})
    limiter.on_rate_limited(2.0, {})  # extends the pause, still one cut
    assert limiter.paused_until == 2.0
    assert limiter.stats.paused_s == 2.0
    clock.advance(2.0)
    assert gaps(schedule(limiter, 2, now=2.0)) == pytest.approx([0.1 / 0.9])
    for _ in range(10):
        limiter.on_response({})
    assert gaps(schedule(limiter, 2, now=2.0)) == pytest.approx([0.1])


def test_429_pause_holds_every_worker() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(requests_per_minute=600, concurrency=2), clock, stated=True)
    starts: list[tuple[str, float]] = []
    lock = threading.Lock()
    paused = threading.Event()
    first = [True]

    def fn(name: str) -> ImageResponse:
        with lock:
            starts.append((name, clock.now()))
            if name == "a" and first[0]:
                first[0] = False
                raise RateLimited("slow down", status=429, retry_after_s=5.0)
        return OK

    def worker(name: str) -> None:
        if name == "b":
            assert paused.wait(2)
        out = call_with_retries(
            lambda: fn(name),
            limiter,
            images=1,
            max_retries=2,
            clock=clock,
            rng=random.Random(0),
            on_wait=lambda reason, s: paused.set(),
        )
        assert out.ok

    threads = [run_thread(lambda n=n: worker(n)) for n in "ab"]  # type: ignore[misc]
    for thread, result in threads:
        thread.join(5)
        assert result == {"done": True}
    assert starts[0] == ("a", 0.0)
    later = sorted(t for _, t in starts[1:])
    assert {n for n, _ in starts[1:]} == {"a", "b"}
    # B too waited out A's 429, and the two did not start together (the pace, cut to 90 %
    # by the 429, may have recovered 1 % from the first success when the second one books).
    assert later[0] == pytest.approx(5.0)
    assert 5.0 + 0.1 / 0.91 - 1e-9 <= later[1] <= 5.0 + 0.1 / 0.9 + 1e-9


def test_rate_limit_wait_from_headers() -> None:
    def pause(retry_after: float | None, headers: dict[str, str]) -> float:
        limiter = Limiter(Limits(), FakeClock(), stated=True)
        limiter.on_rate_limited(retry_after, headers)
        return limiter.paused_until

    assert pause(3.0, {"retry-after-ms": "100"}) == 3.0
    assert pause(None, {}) == 1.0
    assert pause(None, {"retry-after-ms": "1500", "retry-after": "2"}) == 1.5
    assert pause(None, {"retry-after": "2"}) == 2.0
    assert pause(None, {"x-ratelimit-remaining-images": "0", "x-ratelimit-reset-images": "3s"}) == 3.0
    assert (
        pause(
            None,
            {
                "x-ratelimit-limit-requests": "30",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "6m0s",
            },
        )
        == 2.0
    )
    assert pause(None, {"x-ratelimit-remaining-requests": "4", "x-ratelimit-reset-requests": "9s"}) == 1.0


def test_paused_until_starts_at_now() -> None:
    assert Limiter(Limits(), FakeClock(42.0), stated=True).paused_until == 42.0


# -- stop -------------------------------------------------------------------------------


def test_stop_wakes_a_blocked_acquire() -> None:
    limiter = Limiter(Limits(concurrency=1), FakeClock(), stated=True)
    limiter.acquire(1)
    thread, result = run_thread(lambda: limiter.acquire(1))
    assert blocked(thread)
    limiter.stop()
    thread.join(2)
    assert isinstance(result.get("error"), Stopped)
    with pytest.raises(Stopped):
        limiter.acquire(1)
    limiter.release()  # the in-flight request still lands
    assert limiter.stopped


def test_stop_interrupts_a_real_sleep() -> None:
    limiter = Limiter(Limits(requests_per_minute=60), SystemClock(), stated=True)
    limiter.on_rate_limited(100.0, {})
    began = time.monotonic()
    thread, result = run_thread(lambda: limiter.acquire(1))
    assert blocked(thread)
    limiter.stop()
    thread.join(2)
    assert isinstance(result.get("error"), Stopped)
    assert time.monotonic() - began < 2


# -- Limits -----------------------------------------------------------------------------


def test_limits_checks_values() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Limits(concurrency=0)
    with pytest.raises(ValueError, match="images_per_minute"):
        Limits(images_per_minute=0)
    assert Limits(images_per_minute=5).stated and not Limits().stated


# -- headers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("0.5s", 0.5),
        ("1h2m3.5s", 3723.5),
        ("250us", 0.00025),
        ("2", 2.0),
        (" 1.5 ", 1.5),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "1x", "1s2", "-1s", "nan", "soon"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_retry_after_from_headers() -> None:
    assert retry_after_from_headers({"Retry-After-Ms": "250"}) == 0.25
    # One parser reads HTTP dates too (it used to be one of two, and the only one that did not).
    date = "Wed, 21 Oct 2026 07:28:00 GMT"
    assert retry_after_from_headers({"retry-after": date}, now=1792567670.0) == 10.0
    assert retry_after_from_headers({"retry-after": date}, now=1792567690.0) == 0.0  # past: no wait
    assert retry_after_from_headers({}) is None


# -- call_with_retries ------------------------------------------------------------------


def scripted(*results: ImageResponse | ProviderError | BaseException) -> Callable[[], ImageResponse]:
    """fn that raises or returns the given results in turn."""
    queue = list(results)

    def fn() -> ImageResponse:
        item = queue.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    return fn


def call(
    fn: Callable[[], ImageResponse],
    *,
    max_retries: int = 3,
    seed: int = 42,
    limiter: Limiter | None = None,
    clock: FakeClock | None = None,
    waits: list[tuple[str, float]] | None = None,
    **kw: int,
) -> Outcome[ImageResponse]:
    clock = clock or FakeClock()
    limiter = limiter or Limiter(Limits(), clock, stated=True)
    on_wait = None if waits is None else (lambda reason, s: waits.append((reason, s)))
    return call_with_retries(
        fn,
        limiter,
        images=1,
        max_retries=max_retries,
        clock=clock,
        rng=random.Random(seed),
        on_wait=on_wait,
        **kw,
    )


@pytest.mark.parametrize("charged", [True, False])
def test_transient_then_success(charged: bool) -> None:
    out = call(scripted(Transient("timed out", maybe_charged=charged), OK))
    assert out.ok and out.value is OK and out.error is None
    assert out.attempts == 2
    assert out.possible_duplicate_charge is charged


def test_maybe_charged_counts_only_if_an_attempt_followed() -> None:
    out = call(scripted(Transient("reset", maybe_charged=True)), max_retries=0)
    assert (out.attempts, out.possible_duplicate_charge) == (1, False)
    out = call(scripted(Transient("reset", maybe_charged=True), Transient("502"), OK))
    assert (out.attempts, out.possible_duplicate_charge) == (3, True)


def test_refused_is_not_retried() -> None:
    refusal = Refused("blocked", status=400, code="moderation_blocked")
    out = call(scripted(refusal, OK))
    assert (out.value, out.error, out.attempts) == (None, refusal, 1)


@pytest.mark.parametrize("error", [BadRequest("bad size", status=400), ProviderError("odd")])
def test_other_errors_are_not_retried(error: ProviderError) -> None:
    out = call(scripted(error, OK))
    assert (out.error, out.attempts) == (error, 1)


def test_fatal_returns_at_once_and_teaches_nothing() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(), clock, stated=False)
    fatal = Fatal("bad key", status=401, headers={"x-ratelimit-limit-requests": "300"})
    out = call(scripted(fatal), limiter=limiter, clock=clock)
    assert (out.error, out.attempts) == (fatal, 1)
    assert limiter.stats.requests_per_minute is None
    with pytest.raises(RuntimeError):
        limiter.release()  # the slot was given back already


def test_refusal_headers_still_teach_the_limit() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(), clock, stated=False)
    call(scripted(Refused("no", headers={"x-ratelimit-limit-images": "50"})), limiter=limiter, clock=clock)
    assert limiter.stats.images_per_minute == 50
    assert limiter.stats.window == 4


def test_max_retries_exhausted() -> None:
    clock = FakeClock()
    waits: list[tuple[str, float]] = []
    last = Transient("503", status=503)
    out = call(
        scripted(Transient("500"), Transient("502"), Transient("504"), last),
        max_retries=3,
        clock=clock,
        waits=waits,
    )
    assert (out.error, out.attempts, out.possible_duplicate_charge) == (last, 4, False)
    # full jitter from the injected Random(42): uniform(0, 0.5), (0, 1), (0, 2)
    expected = [0.3197133992289419, 0.025010755222666936, 0.5500586367382385]
    assert clock.sleeps == pytest.approx(expected)
    assert waits == [("backoff", s) for s in clock.sleeps]


def test_backoff_is_capped_at_30_s() -> None:
    rng = random.Random(7)
    delays = [DEFAULT_POLICY.backoff(k, rng) for k in range(7)]
    assert delays == pytest.approx(
        [
            0.16191638241658118,
            0.15084917392450192,
            1.3018689460797075,
            0.28974514667017104,
            4.287056034453514,
            5.851022670601369,
            1.7399677432412042,
        ]
    )
    assert all(0 <= DEFAULT_POLICY.backoff(k, rng) <= 30 for k in range(10, 2000))


def test_transient_retry_after_is_a_floor() -> None:
    clock = FakeClock()
    out = call(scripted(Transient("503", headers={"retry-after": "4"}), OK), clock=clock)
    assert out.attempts == 2
    assert clock.sleeps == [4.0]


def test_rate_limits_wait_in_the_limiter_and_do_not_use_max_retries() -> None:
    clock = FakeClock()
    waits: list[tuple[str, float]] = []
    limiter = Limiter(Limits(), clock, stated=True)
    limited = [RateLimited("429", status=429, retry_after_s=2.0) for _ in range(3)]
    out = call(scripted(*limited, OK), max_retries=0, limiter=limiter, clock=clock, waits=waits)
    assert out.ok and out.attempts == 4
    assert clock.now() == 6.0
    assert waits == [("rate_limit", 2.0)] * 3
    assert limiter.stats.rate_limited == 3


def test_rate_limit_retries_have_their_own_cap() -> None:
    limited = [RateLimited("429", status=429) for _ in range(3)]
    out = call(scripted(*limited), max_rate_limit_retries=2)
    assert (out.error, out.attempts) == (limited[-1], 3)


def test_transient_and_rate_limits_are_counted_apart() -> None:
    out = call(
        scripted(Transient("500"), RateLimited("429"), Transient("500"), RateLimited("429"), OK),
        max_retries=2,
    )
    assert out.ok and out.attempts == 5


def test_stopped_limiter_stops_the_loop() -> None:
    limiter = Limiter(Limits(), FakeClock(), stated=True)
    limiter.stop()
    with pytest.raises(Stopped):
        call(scripted(OK), limiter=limiter)


def test_stop_during_backoff_raises_stopped() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(), clock, stated=True)
    calls = []

    def fn() -> ImageResponse:
        calls.append(1)
        raise Transient("reset", maybe_charged=True)

    with pytest.raises(Stopped):
        call_with_retries(
            fn,
            limiter,
            images=1,
            max_retries=5,
            clock=clock,
            rng=random.Random(1),
            on_wait=lambda reason, s: limiter.stop(),
        )
    assert calls == [1]


def test_slot_is_released_when_fn_crashes() -> None:
    limiter = Limiter(Limits(concurrency=1), FakeClock(), stated=True)
    with pytest.raises(ZeroDivisionError):
        call(scripted(ZeroDivisionError()), limiter=limiter)
    with pytest.raises(RuntimeError):
        limiter.release()


def test_success_teaches_the_limit() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(), clock, stated=False)
    response = ImageResponse(images=OK.images, rate_headers={"x-ratelimit-limit-requests": "60"})
    out = call(scripted(response), limiter=limiter, clock=clock)
    assert out.ok
    assert limiter.stats.requests_per_minute == 60


# -- server-requested waits over the cap (throttle.max_wait_s) ---------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": str(10**15)}, 10.0**12),  # finite: no OverflowError anywhere
        ({"retry-after-ms": "1e400"}, None),  # infinite: ignored
        ({"retry-after-ms": "nan", "retry-after": "3"}, 3.0),  # NaN ignored, the next header read
        ({"retry-after": "-5"}, None),
        ({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, None),  # checked below: finite, huge
        ({"retry-after": "Mon, 32 Foo 2026 99:99:99 GMT"}, None),
        ({"retry-after": "21 Oct 2026 07:28:00"}, None),  # no zone: not an HTTP date
    ],
    ids=["ms-huge", "ms-inf", "ms-nan", "negative", "far-date", "bad-date", "zoneless-date"],
)
def test_retry_after_guards_huge_nan_and_negative_values(headers: dict[str, str], seconds: float | None) -> None:
    got = retry_after_from_headers(headers, now=1792567670.0)
    if headers.get("retry-after", "").startswith("Fri, 31 Dec 9999"):
        assert got is not None and got > 2.5e11  # ~8000 years: finite, over any cap
    else:
        assert got == seconds


def test_a_429_asking_more_than_max_wait_s_stops_the_limiter_without_sleeping() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(max_wait_s=120), clock, stated=True)
    too_long = RateLimited("HTTP 429", retry_after_s=10.0**12,
                           headers={"retry-after-ms": str(10**15), "retry-after": str(10**12)})
    out = call(scripted(too_long, OK), limiter=limiter, clock=clock)
    assert out.value is None and out.attempts == 1
    assert isinstance(out.error, WaitTooLong) and isinstance(out.error, Fatal)
    reason = ("the server asked to wait 11574074 days (retry-after-ms: 1000000000000000; "
              "retry-after: 1000000000000); more than throttle.max_wait_s = 120 s")
    assert out.error.message == reason and limiter.stop_reason == reason
    assert limiter.stopped and clock.sleeps == [] and clock.now() == 0.0
    assert limiter.paused_until == 0.0  # no pause was booked
    with pytest.raises(Stopped):
        limiter.acquire()


def test_a_429_within_max_wait_s_pauses_as_before() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(max_wait_s=120), clock, stated=True)
    out = call(scripted(RateLimited("HTTP 429", retry_after_s=120.0), OK), limiter=limiter, clock=clock)
    assert out.ok and out.attempts == 2 and limiter.stop_reason is None
    assert clock.now() == pytest.approx(120.0)


def test_a_transient_error_asking_more_than_max_wait_s_stops_too() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(max_wait_s=60), clock, stated=True)
    busy = Transient("HTTP 503", status=503, headers={"retry-after": "3600"})
    out = call(scripted(busy, OK), limiter=limiter, clock=clock)
    assert isinstance(out.error, WaitTooLong) and out.attempts == 1
    assert out.error.message == ("the server asked to wait 60 min (retry-after: 3600); "
                                 "more than throttle.max_wait_s = 60 s")
    assert clock.sleeps == []


def test_max_wait_s_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_wait_s must be > 0"):
        Limits(max_wait_s=0)


# -- RetryPolicy.decide: the one rule behind every retry loop -------------------------------------


def test_policy_gives_up_at_once_on_errors_that_are_not_retried() -> None:
    policy = RetryPolicy()
    for error in (Refused("no"), BadRequest("bad"), Fatal("key"), ProviderError("odd")):
        assert policy.decide(error, 1, random.Random(0)) == GiveUp(error)


def test_policy_waits_what_a_429_asks_else_a_backoff() -> None:
    policy = RetryPolicy(max_rate_limit_retries=2)
    assert policy.decide(RateLimited("429", retry_after_s=2.5), 1, random.Random(0)) == Retry("rate_limit", 2.5, 2.5)
    dated = RateLimited("429", headers={"retry-after": "Thu, 01 Jan 1970 00:00:00 GMT"})
    assert policy.decide(dated, 2, random.Random(0)) == Retry("rate_limit", 0.0, 0.0)
    rng, same = random.Random(5), random.Random(5)
    assert policy.decide(RateLimited("429"), 2, rng) == Retry("rate_limit", policy.backoff(1, same), None)
    limited = RateLimited("429", retry_after_s=1.0)
    assert policy.decide(limited, 3, random.Random(0)) == GiveUp(limited)


def test_policy_backoff_of_a_transient_error_is_at_least_what_the_server_asks() -> None:
    policy = RetryPolicy(max_retries=1)
    assert policy.decide(Transient("503", headers={"retry-after-ms": "9000"}), 1, random.Random(0)) == \
        Retry("backoff", 9.0, 9.0)
    busy = Transient("503")
    assert policy.decide(busy, 2, random.Random(0)) == GiveUp(busy)


def test_policy_a_wait_over_the_cap_gives_up_even_on_the_last_try() -> None:
    policy = RetryPolicy(max_retries=1, max_wait_s=10)
    busy = Transient("HTTP 503", status=503, headers={"retry-after": "11"})
    for nth in (1, 2):
        decision = policy.decide(busy, nth, random.Random(0))
        assert isinstance(decision, GiveUp) and isinstance(decision.error, WaitTooLong)
        assert decision.error.message == ("the server asked to wait 11 s (retry-after: 11); "
                                          "more than throttle.max_wait_s = 10 s")
        assert decision.error.status == 503


def test_limits_carry_their_retry_policy() -> None:
    assert Limits(max_retries=2, max_wait_s=30).retry_policy == RetryPolicy(max_retries=2, max_wait_s=30)
