"""Azure OpenAI: `dalle-pipe run` with `provider: {name: azure, deployment: ...}`, the real SDK's AzureOpenAI
client over HTTP against tests/fakeapi.py (deployment URLs, api-version, the api-key header)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeOpenAI, RecordedRequest
from test_run import by_task, invoke, make_project, manifest

from dalle_pipe.errors import UsageError
from dalle_pipe.providers.azure import DEFAULT_API_VERSION, AzureProvider
from dalle_pipe.providers.base import Fatal, ImageRequest
from dalle_pipe.recipe import ProviderConfig

KEY = "0f3a9c7e5b1d42a8b6e4c2d0f9a7b5c3"  # the shape of an Azure key: 32 hex digits

RECIPE = """\
version: 1
name: shots
provider: {name: azure, deployment: img-prod, api_version: 2025-04-01-preview}
model: gpt-image-1.5
params: {size: 1024x1024, quality: low}
catalog: {path: products.csv, key: "{{ item.sku }}", where: "item.active == 'yes'"}
steps:
  - id: hero
    generate: {prompt: "A {{ item.name }} on marble"}
  - id: bg_mask
    mask:
      size_of: {step: hero}
      shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]
      invert: true
  - id: beach
    edit:
      image: {step: hero}
      mask: {step: bg_mask}
      prompt: "a tropical beach at sunset as background"
"""


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        yield server


def env(api: FakeOpenAI, **more: str | None) -> dict[str, str | None]:
    return {"AZURE_OPENAI_API_KEY": KEY, "AZURE_OPENAI_ENDPOINT": api.origin, "OPENAI_API_KEY": None,
            "OPENAI_BASE_URL": None, "OPENAI_API_VERSION": None, "AZURE_OPENAI_AD_TOKEN": None, **more}


def run(root: Path, api: FakeOpenAI, *args: str, **more: str | None) -> Any:
    return invoke(root, "run", "recipe.yaml", *args, env=env(api, **more))  # type: ignore[arg-type]


def path_of(q: RecordedRequest) -> str:
    return q.path.split("?", 1)[0]


def test_requests_hit_the_deployment_url_with_api_version_and_the_api_key_header(tmp_path: Path,
                                                                                   api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    r = run(root, api)
    assert r.exit_code == 0, r.output
    sent = api.image_requests
    assert sorted(path_of(q) for q in sent) == ["/openai/deployments/img-prod/images/edits"] * 2 + [
        "/openai/deployments/img-prod/images/generations"] * 2
    for q in sent:
        assert q.query == {"api-version": ["2025-04-01-preview"]}
        assert q.headers["api-key"] == KEY
        assert "authorization" not in q.headers
        assert q.status == 200
    gen = next(q for q in sent if path_of(q).endswith("/generations"))
    assert gen.json is not None and gen.json["prompt"] in ("A ceramic mug on marble", "A cutting board on marble")
    assert gen.json["size"] == "1024x1024" and gen.json["quality"] == "low"
    m = by_task(manifest(root))
    hero, beach = m["hero@mug#0"], m["beach@mug#0"]
    assert hero["provider"] == "azure" and hero["model"] == "gpt-image-1.5"
    assert hero["endpoint"] == "/openai/deployments/img-prod/images/generations"
    assert beach["endpoint"] == "/openai/deployments/img-prod/images/edits"
    assert hero["request_id"] and hero["usage"]["output_tokens"] > 0 and hero["cost_usd"] > 0
    edit = next(q for q in sent if path_of(q).endswith("/edits") and q.images[0].data ==
                (root / "out/shots/mug/hero.png").read_bytes())
    assert edit.mask is not None and edit.mask.data == (root / "out/shots/mug/bg_mask.png").read_bytes()
    api.clear()
    r = run(root, api)
    assert r.exit_code == 0 and api.image_requests == [], r.output


def test_the_key_appears_nowhere(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    api.script([("moderation",), ("500",), ("401",)])
    r = run(root, api, "--json")
    seen = r.output
    for path in root.rglob("*"):
        if path.is_file():
            seen += path.read_bytes().decode("latin-1")
    assert KEY not in seen and KEY[-8:] not in seen


def test_a_wrong_key_is_fatal_and_not_echoed(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    wrong = "ffffffffffffffffffffffffffffffff"
    r = run(root, api, "--concurrency", "1", AZURE_OPENAI_API_KEY=wrong)
    assert r.exit_code == 1
    assert "stopped after a fatal error" in r.output
    assert wrong not in r.output and wrong not in (root / "out" / "shots" / "manifest.json").read_text()
    assert len(api.image_requests) <= 2 and {q.status for q in api.image_requests} == {401}


def test_the_api_version_defaults_and_the_endpoint_may_come_from_base_url(tmp_path: Path,
                                                                          api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE.replace(", api_version: 2025-04-01-preview", ""))
    # --base-url is the endpoint; AZURE_OPENAI_ENDPOINT unset; OPENAI_BASE_URL is never used for azure
    r = run(root, api, "--items", "mug", "--only", "hero", "--base-url", api.origin,
            AZURE_OPENAI_ENDPOINT=None, OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    assert r.exit_code == 0, r.output
    assert [q.query["api-version"] for q in api.image_requests] == [[DEFAULT_API_VERSION]]


def test_openai_base_url_does_not_redirect_azure(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    with FakeOpenAI() as other:
        r = run(root, api, "--items", "mug", "--only", "hero", OPENAI_BASE_URL=other.base_url)
        assert r.exit_code == 0, r.output
        assert other.image_requests == []
    assert len(api.image_requests) == 1


@pytest.mark.parametrize(
    "unset,named",
    [("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"), ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_ENDPOINT")],
)
def test_a_run_without_key_or_endpoint_exits_2_and_sends_nothing(tmp_path: Path, api: FakeOpenAI, unset: str,
                                                                 named: str) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    r = run(root, api, **{unset: None})
    assert r.exit_code == 2 and named in r.output, r.output
    assert api.image_requests == []
    # --check and --dry-run need neither
    assert run(root, api, "--dry-run", **{unset: None}).exit_code == 0


def test_changing_the_deployment_makes_the_images_again(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    assert run(root, api, "--items", "mug", "--only", "hero").exit_code == 0
    (root / "recipe.yaml").write_text(RECIPE.replace("img-prod", "img-canary"))
    api.clear()
    r = run(root, api, "--items", "mug", "--only", "hero")
    assert r.exit_code == 0, r.output
    assert [path_of(q) for q in api.image_requests] == ["/openai/deployments/img-canary/images/generations"]


@pytest.mark.parametrize(
    "provider,where",
    [
        ("azure", "recipe.yaml:3:11: provider: provider azure needs a deployment"),
        ("{name: azure, api_version: 2025-04-01-preview}", "recipe.yaml:3:11: provider: provider azure needs a "
         "deployment"),
        ("{name: azure, deployment: img, api: responses, model: gpt-5.1}",
         "recipe.yaml:3:47: provider.api: provider azure does not serve api: responses"),
    ],
)
def test_validate_points_at_the_provider_node(tmp_path: Path, api: FakeOpenAI, provider: str, where: str) -> None:
    recipe = f"""\
version: 1
name: v
provider: {provider}
model: gpt-image-2
steps:
  - id: shot
    generate: {{prompt: "a mug"}}
"""
    root = make_project(tmp_path / "p", recipe)
    r = invoke(root, "validate", "recipe.yaml", env=env(api))  # type: ignore[arg-type]
    assert r.exit_code == 2
    assert where in r.output, r.output
    r = run(root, api)
    assert r.exit_code == 2 and api.image_requests == []


def test_validate_names_the_pipeline_when_it_sets_the_provider(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE.replace(
        "provider: {name: azure, deployment: img-prod, api_version: 2025-04-01-preview}\n", ""))
    (root / "pipeline.yaml").write_text("version: 1\nrecipes: [recipe.yaml]\nprovider: azure\n")
    r = invoke(root, "validate", "recipe.yaml", env=env(api))  # type: ignore[arg-type]
    assert r.exit_code == 2
    assert "pipeline.yaml:3:11: provider: provider azure needs a deployment" in r.output, r.output


def test_provider_option_azure_needs_a_deployment_too(tmp_path: Path, api: FakeOpenAI) -> None:
    recipe = RECIPE.replace("provider: {name: azure, deployment: img-prod, api_version: 2025-04-01-preview}\n",
                            "provider: openai\n")
    root = make_project(tmp_path / "p", recipe)
    r = invoke(root, "validate", "--provider", "azure", "recipe.yaml", env=env(api))  # type: ignore[arg-type]
    assert r.exit_code == 2 and "recipe.yaml:3:11: provider: provider azure needs a deployment" in r.output
    assert invoke(root, "validate", "recipe.yaml", env=env(api)).exit_code == 0  # type: ignore[arg-type]


# -- the provider itself ----------------------------------------------------------------------------


def test_the_provider_sends_one_attempt_to_the_deployment(api: FakeOpenAI) -> None:
    config = ProviderConfig(name="azure", deployment="img-prod", api_version="2024-10-21")
    provider = AzureProvider(config, endpoint=api.origin, api_key=KEY)
    try:
        resp = provider.send(ImageRequest(kind="generate", model="gpt-image-1.5", prompt="a lighthouse",
                                          params={"n": 2, "size": "1024x1536"}))
        assert len(resp.images) == 2 and resp.request_id
        assert api.last.path == "/openai/deployments/img-prod/images/generations?api-version=2024-10-21"
        api.script([("404",)])
        with pytest.raises(Fatal) as info:
            provider.send(ImageRequest(kind="generate", model="gpt-image-1.5", prompt="x", params={}))
        assert KEY not in str(info.value)
    finally:
        provider.close()


def test_the_provider_refuses_to_start_without_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    config = ProviderConfig(name="azure", deployment="img")
    with pytest.raises(UsageError, match="AZURE_OPENAI_API_KEY"):
        AzureProvider(config, endpoint="http://127.0.0.1:9")
    with pytest.raises(UsageError, match="AZURE_OPENAI_ENDPOINT"):
        AzureProvider(config, api_key=KEY)
    with pytest.raises(UsageError, match="needs a deployment"):
        AzureProvider(ProviderConfig(name="azure"), endpoint="http://127.0.0.1:9", api_key=KEY)
