"""Servers that misbehave: a huge retry-after, a dripping answer, a 200 without an image, error
bodies that are not OpenAI-shaped. The real SDK over HTTP against tests/fakeapi.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakeapi import FakeOpenAI, http_date
from servers import cli, entries, env, files_under, project

OUT = "out/shots"


@pytest.mark.parametrize(
    ("behaviour", "asked"),
    [
        (("429", None, "1000000000"), "11574 days (retry-after: 1000000000)"),
        # retry-after-ms 10**15 once crashed with an OverflowError
        (("429", 10**15), "11574074 days (retry-after-ms: 1000000000000000; retry-after: 1000000000000)"),
        (("429", None, http_date(3 * 86400)), "3 days"),
    ],
    ids=["retry-after-seconds", "retry-after-ms-huge", "retry-after-http-date"],
)
def test_a_wait_over_max_wait_s_stops_the_run_and_says_what_the_server_asked(
    tmp_path: Path, api: FakeOpenAI, behaviour: tuple[object, ...], asked: str
) -> None:
    root = project(tmp_path / "p")
    api.script([("ok",), behaviour])
    r = cli(root, "run", "recipe.yaml", env=env(api))
    assert r.exit_code == 1, r.output
    reason = f"the server asked to wait {asked}"
    assert reason in r.output and "more than throttle.max_wait_s = 120 s" in r.output
    assert len(api.image_requests) == 2  # nothing sent after the 429
    got = entries(root)
    assert got["hero@a"]["status"] == "generated"
    assert got["hero@b"]["status"] == "failed"
    assert got["hero@b"]["error"]["type"] == "wait_too_long"
    assert reason in got["hero@b"]["error"]["message"]
    assert {got[k]["status"] for k in ("hero@c", "hero@d")} == {"skipped"}
    assert files_under(tmp_path / "p" / OUT / "a") == ["hero.png"]
    assert not (tmp_path / "p" / OUT / "b").exists()


def test_max_wait_s_is_a_recipe_setting(tmp_path: Path, api: FakeOpenAI) -> None:
    recipe = (Path(__file__).parent / "servers.py").read_text().split('FOUR = """\\\n')[1].split('"""')[0]
    recipe = recipe.replace("timeout_s: 30}", "timeout_s: 30, max_wait_s: 0.5}")
    root = project(tmp_path / "p", recipe)
    api.script([("429", 2000)])
    r = cli(root, "run", "recipe.yaml", env=env(api))
    assert r.exit_code == 1, r.output
    assert "the server asked to wait 2 s (retry-after-ms: 2000; retry-after: 2); " \
           "more than throttle.max_wait_s = 0.5 s" in r.output
    assert len(api.image_requests) == 1
    assert entries(root)["hero@a"]["error"]["type"] == "wait_too_long"


def test_timeout_s_is_the_deadline_of_the_whole_request(tmp_path: Path, api: FakeOpenAI) -> None:
    """A server dripping a byte every 50 ms never trips a per-read timeout; it must trip timeout_s."""
    recipe = (Path(__file__).parent / "servers.py").read_text().split('FOUR = """\\\n')[1].split('"""')[0]
    recipe = recipe.replace("max_retries: 1, timeout_s: 30", "max_retries: 0, timeout_s: 1")
    recipe = recipe.replace("[{id: a}, {id: b}, {id: c}, {id: d}]", "[{id: a}]")
    root = project(tmp_path / "p", recipe)
    api.script([("drip", 0.05)])  # 400 bytes: 20 s of drip without an overall deadline
    r = cli(root, "run", "recipe.yaml", env=env(api))
    assert r.exit_code == 1, r.output
    err = entries(root)["hero@a"]["error"]
    assert (err["type"], err["code"]) == ("transient", "timeout")
    assert err["message"] == "request timed out (ReadTimeout)"
    assert len(api.image_requests) == 1
    assert files_under(root / OUT / "a") == []


@pytest.mark.parametrize(
    "body",
    [
        {"data": "nope"},
        {"data": []},
        {"created": 1},
        {"data": [{"b64_json": "bm90IGFuIGltYWdl"}]},  # "not an image"
        {"data": [{"b64_json": "%%%not base64%%%"}]},
        {"data": ["nope"]},
        {"data": [{}]},
    ],
    ids=["data-string", "data-empty", "data-missing", "not-an-image", "bad-base64", "item-string", "item-empty"],
)
def test_a_200_without_a_readable_image_is_a_failed_entry(tmp_path: Path, api: FakeOpenAI,
                                                           body: object) -> None:
    recipe = (Path(__file__).parent / "servers.py").read_text().split('FOUR = """\\\n')[1].split('"""')[0]
    recipe = recipe.replace("max_retries: 1", "max_retries: 0")
    recipe = recipe.replace("[{id: a}, {id: b}, {id: c}, {id: d}]", "[{id: a}]")
    root = project(tmp_path / "p", recipe)
    api.script([("raw", 200, json.dumps(body))])
    r = cli(root, "run", "recipe.yaml", env=env(api))
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and "AttributeError" not in r.output
    err = entries(root)["hero@a"]["error"]
    assert err == {"type": "no_image", "status": 200, "code": "no_image",
                   "message": "the server sent no readable image"}
    assert "the server sent no readable image" in r.output
    assert len(api.image_requests) == 1
    assert files_under(root / OUT / "a") == []


@pytest.mark.parametrize(
    ("status", "body", "ctype", "message"),
    [
        (422, "<html><head><title>422</title></head><body><h1>Unprocessable</h1> upstream said no</body></html>",
         "text/html", "HTTP 422 Unprocessable Entity: 422 Unprocessable upstream said no"),
        (400, "bad gateway config", "text/plain", "HTTP 400 Bad Request: bad gateway config"),
        (409, json.dumps({"detail": "conflict here"}), "application/json",
         'HTTP 409 Conflict: {"detail": "conflict here"}'),
        (418, "", "text/plain", "HTTP 418 I'm a Teapot (empty body)"),
    ],
    ids=["html", "plain-text", "json-without-error-message", "empty"],
)
def test_an_error_body_that_is_not_openai_shaped_reads_well(tmp_path: Path, api: FakeOpenAI, status: int,
                                                            body: str, ctype: str, message: str) -> None:
    recipe = (Path(__file__).parent / "servers.py").read_text().split('FOUR = """\\\n')[1].split('"""')[0]
    recipe = recipe.replace("max_retries: 1", "max_retries: 0")
    recipe = recipe.replace("[{id: a}, {id: b}, {id: c}, {id: d}]", "[{id: a}]")
    root = project(tmp_path / "p", recipe)
    api.script([("raw", status, body, {"content-type": ctype})])
    r = cli(root, "run", "recipe.yaml", env=env(api))
    assert r.exit_code == 1, r.output
    err = entries(root)["hero@a"]["error"]
    assert err["message"] == message
    assert f"HTTP {status}: HTTP {status}" not in r.output
    assert len(api.image_requests) == 1
