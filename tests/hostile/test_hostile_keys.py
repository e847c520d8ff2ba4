"""The API key: never written or printed, even when a server reflects it; never sent over plain
http to another machine unless the user opts in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakeapi import FakeOpenAI
from servers import FOUR, KEY, b64png, cli, entries, env, files_under, project

from dalle_pipe.providers.base import scrub_key

ONE = FOUR.replace("[{id: a}, {id: b}, {id: c}, {id: d}]", "[{id: a}]").replace("max_retries: 1", "max_retries: 0")
MASKED = KEY[:3] + "*" * 20 + KEY[-4:]


def leaks(text: str) -> list[str]:
    """Every 8-character run of the key, and the masked form, found in text."""
    found = [KEY[i:i + 8] for i in range(len(KEY) - 7) if KEY[i:i + 8] in text]
    return found + ([MASKED] if MASKED in text or f"{KEY[:3]}****{KEY[-4:]}" in text else [])


def everything_written(root: Path) -> str:
    out = root / "out"
    return "\n".join((out / rel).read_bytes().decode("utf-8", "replace") for rel in files_under(out))


def test_a_key_reflected_in_a_success_is_scrubbed_from_every_file_and_line(tmp_path: Path,
                                                                          api: FakeOpenAI) -> None:
    root = project(tmp_path / "p", ONE)
    body = {"created": 1, "data": [{"b64_json": b64png(), "revised_prompt": f"a key {KEY} and {KEY[5:15]}"}],
            "usage": {"note": f"billed to {MASKED}", "output_tokens": 10}}
    api.script([("raw", 200, json.dumps(body), {"x-request-id": f"req_{KEY[4:20]}"})])
    r = cli(root, "run", "recipe.yaml", "--json", env=env(api))
    assert r.exit_code == 0, r.output
    assert leaks(r.output) == [] and leaks(everything_written(root)) == []
    hero = entries(root)["hero@a"]
    assert hero["revised_prompt"] == "a key [redacted] and [redacted]"
    assert hero["request_id"] == "req_[redacted]"
    assert hero["usage"]["note"] == "billed to [redacted]"
    assert api.image_requests[0].headers["authorization"] == f"Bearer {KEY}"  # sent where it belongs


def test_a_key_reflected_in_an_error_is_scrubbed(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "p", ONE)
    error = {"error": {"message": f"Incorrect API key provided: {MASKED}; you sent {KEY[2:12]}.",
                       "type": "invalid_request_error", "code": "invalid_api_key"}}
    api.script([("raw", 401, json.dumps(error), {"x-request-id": KEY})])
    r = cli(root, "run", "recipe.yaml", env=env(api))
    assert r.exit_code == 1, r.output
    assert leaks(r.output) == [] and leaks(everything_written(root)) == []
    err = entries(root)["hero@a"]["error"]
    assert err["message"] == "HTTP 401 invalid_api_key: Incorrect API key provided: [redacted]; you sent [redacted]."
    assert len(api.image_requests) == 1


@pytest.mark.parametrize("masked", ["sk-****D", "sk-*Kc9D", "sk-**************Kc9D", "sk-...Kc9D"])
def test_scrub_key_covers_runs_and_the_masked_form(masked: str) -> None:
    text = f"key {masked} end"
    out = scrub_key(text, KEY)
    if masked in ("sk-****D",):  # too short to be the masked form, but key-shaped
        assert out == "key sk-[redacted] end"
    elif masked == "sk-...Kc9D":  # not the masked form, and four characters are not the key
        assert out == text
    else:
        assert out == "key [redacted] end"
    assert scrub_key(f"x{KEY[3:11]}y", KEY) == "x[redacted]y"  # exactly 8 characters
    assert scrub_key(f"x{KEY[3:10]}y", KEY) == f"x{KEY[3:10]}y"  # 7 are not the key


def test_plain_http_to_another_machine_is_refused_before_anything_is_sent(tmp_path: Path,
                                                                           api: FakeOpenAI) -> None:
    root = project(tmp_path / "p", ONE)
    remote = api.base_url.replace("127.0.0.1", "0.0.0.0")  # not loopback by address, yet reaches the stand-in
    r = cli(root, "run", "recipe.yaml", env=env(None, OPENAI_BASE_URL=remote))
    assert r.exit_code == 2, r.output
    host = remote.split("/")[2]
    assert r.output == (
        f"error: refusing to send the API key unencrypted to http://{host} (OPENAI_BASE_URL): use an https:// "
        "endpoint (plain http is allowed only to this machine (localhost, 127.0.0.0/8, ::1); pass "
        "--allow-insecure-http to send the key over http anyway)\n")
    assert api.requests == [] and not (root / "out").exists()

    r = cli(root, "run", "recipe.yaml", "--base-url", remote, env=env(None))
    assert r.exit_code == 2 and "(--base-url)" in r.output and api.requests == []

    r = cli(root, "run", "recipe.yaml", "--allow-insecure-http", "--base-url", remote, env=env(None))
    assert r.exit_code == 0, r.output
    assert len(api.image_requests) == 1 and files_under(root / "out/shots/a") == ["hero.png"]


def test_plain_http_to_an_azure_endpoint_is_refused(tmp_path: Path, api: FakeOpenAI) -> None:
    recipe = ONE.replace("model: gpt-image-2", "model: gpt-image-2\nprovider: {name: azure, deployment: img}")
    root = project(tmp_path / "p", recipe)
    r = cli(root, "run", "recipe.yaml", env={"AZURE_OPENAI_API_KEY": KEY,
                                             "AZURE_OPENAI_ENDPOINT": "http://images.example.com"})
    assert r.exit_code == 2, r.output
    assert "refusing to send the API key unencrypted to http://images.example.com (AZURE_OPENAI_ENDPOINT)" \
        in r.output
    assert api.requests == [] and not (root / "out").exists()


def test_loopback_http_needs_no_flag(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "p", ONE)
    local = api.base_url.replace("127.0.0.1", "localhost")
    r = cli(root, "run", "recipe.yaml", env=env(None, OPENAI_BASE_URL=local))
    assert r.exit_code == 0, r.output
    assert len(api.image_requests) == 1
