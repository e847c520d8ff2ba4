"""BatchClient's retries, over HTTP against FakeOpenAI: the throttle's one policy, waits on a FakeClock."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest
from fakeapi import FakeOpenAI, http_date

from dalle_pipe.providers.batches import META_KEY, POLICY, BatchAPIError, BatchClient
from dalle_pipe.throttle import FakeClock, RetryPolicy

KEY = "sk-test-BATCHAPI-7a1c9e3f0b"
Make = Callable[..., BatchClient]
JSONL = b'{"custom_id": "a", "method": "POST", "url": "/v1/images/generations", "body": {"prompt": "x"}}\n'


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        yield server


@pytest.fixture
def client(api: FakeOpenAI) -> Iterator[Make]:
    """BatchClient(clock, seed=3, policy=POLICY) against the stand-in; closed after the test."""
    made: list[BatchClient] = []

    def make(clock: FakeClock, seed: int = 3, policy: RetryPolicy = POLICY) -> BatchClient:
        made.append(BatchClient(base_url=api.base_url, api_key=KEY, clock=clock, rng=random.Random(seed),
                                policy=policy))
        return made[-1]

    yield make
    for c in made:
        c.close()


def seen(api: FakeOpenAI) -> list[tuple[str, str, int | None]]:
    return [(r.method, r.path.split("?")[0], r.status) for r in api.requests]


def test_a_429_waits_exactly_what_retry_after_ms_asks(api: FakeOpenAI, client: Make) -> None:
    clock = FakeClock()
    api.batch_api.script([("429", 1500), ("429", 250)])
    file_id = client(clock).upload("in.jsonl", JSONL)
    assert clock.sleeps == [1.5, 0.25]  # retry-after-ms wins over retry-after (2 and 1)
    assert seen(api) == [("POST", "/v1/files", 429), ("POST", "/v1/files", 429), ("POST", "/v1/files", 200)]
    assert list(api.batch_api.files) == [file_id]


def test_a_429_with_an_http_date_waits_until_that_date(api: FakeOpenAI, client: Make) -> None:
    clock = FakeClock()
    api.batch_api.script([("429", None, http_date(-60)), ("429", None, http_date(30))])
    c = client(clock)
    batch = c.create(c.upload("in.jsonl", JSONL), "/v1/images/generations", {META_KEY: "tok-1"})
    past, future = clock.sleeps
    assert past == 0.0  # a date gone by: try again at once
    assert 28.0 < future <= 30.0  # the date has whole seconds
    assert seen(api) == [("POST", "/v1/files", 429), ("POST", "/v1/files", 429), ("POST", "/v1/files", 200),
                         ("POST", "/v1/batches", 200)]
    assert batch.metadata == {META_KEY: "tok-1"}


def test_5xx_until_the_policy_gives_up_is_a_batch_api_error(api: FakeOpenAI, client: Make) -> None:
    clock = FakeClock()
    api.batch_api.script([("500",)] * 4)
    with pytest.raises(BatchAPIError) as info:
        client(clock, seed=11).retrieve("batch_000001")
    assert info.value.message == "could not retrieve a batch: HTTP 500: Fake error 500."
    assert info.value.hint == "run the command again; nothing is lost"
    assert (info.value.status, info.value.exit_code, info.value.refused) == (500, 1, False)
    rng = random.Random(11)
    assert clock.sleeps == [POLICY.backoff(k, rng) for k in range(3)]  # 4 tries, 3 full-jitter waits
    assert all(0 < s <= 0.5 * 2**k for k, s in enumerate(clock.sleeps))
    assert seen(api) == [("GET", "/v1/batches/batch_000001", 500)] * 4


def test_a_wait_over_max_wait_s_gives_up_at_once_quoting_the_server(api: FakeOpenAI, client: Make) -> None:
    clock = FakeClock()
    api.batch_api.script([("429", 3_600_000)])
    with pytest.raises(BatchAPIError) as info:
        client(clock).upload("in.jsonl", JSONL)
    assert info.value.message == ("could not upload: the server asked to wait 60 min (retry-after-ms: 3600000; "
                                  "retry-after: 3600); more than throttle.max_wait_s = 120 s")
    assert clock.sleeps == [] and seen(api) == [("POST", "/v1/files", 429)]


def test_a_given_policy_is_honoured_and_429s_count_apart(api: FakeOpenAI, client: Make) -> None:
    clock = FakeClock()
    api.batch_api.script([("503",), ("429", 500)])
    with pytest.raises(BatchAPIError) as info:
        client(clock, policy=RetryPolicy(max_retries=0)).upload("in.jsonl", JSONL)
    assert info.value.message == "could not upload: HTTP 503: Fake error 503."
    assert clock.sleeps == []
    file_id = client(clock, policy=RetryPolicy(max_retries=0)).upload("in.jsonl", JSONL)
    assert clock.sleeps == [0.5] and list(api.batch_api.files) == [file_id]  # 429s are counted apart


def test_a_create_whose_answer_was_lost_is_found_by_its_metadata_not_sent_again(api: FakeOpenAI, client: Make) -> None:
    clock = FakeClock()
    c = client(clock)
    file_id = c.upload("in.jsonl", JSONL)
    api.batch_api.script([("502", "after")])  # created, then a gateway lost the answer (maybe charged)
    batch = c.create(file_id, "/v1/images/generations", {META_KEY: "tok-2"})
    assert batch.id == "batch_000001" and batch.metadata == {META_KEY: "tok-2"}
    assert list(api.batch_api.batches) == ["batch_000001"]  # one paid batch, not two
    assert seen(api)[1:] == [("POST", "/v1/batches", 502), ("GET", "/v1/batches", 200)]
    assert len(clock.sleeps) == 1 and 0 < clock.sleeps[0] <= 0.5


def test_a_500_on_create_is_not_looked_up_but_sent_again(api: FakeOpenAI, client: Make) -> None:
    clock = FakeClock()
    c = client(clock)
    file_id = c.upload("in.jsonl", JSONL)
    api.batch_api.script([("500",)])  # the API says it failed: nothing was made, nothing to find
    batch = c.create(file_id, "/v1/images/generations", {META_KEY: "tok-3"})
    assert batch.id == "batch_000001"
    assert seen(api)[1:] == [("POST", "/v1/batches", 500), ("POST", "/v1/batches", 200)]
