"""The drift guard: every field and model literal of the installed openai SDK is classified."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dalle_pipe import models

TOOL = Path(__file__).resolve().parent.parent / "tools" / "drift_check.py"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("drift_check", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


drift = _tool()


@pytest.fixture(scope="module")
def sdk() -> dict[str, Any]:
    data: dict[str, Any] = drift.read_sdk(sys.executable)
    return data


def test_every_installed_sdk_field_and_model_is_classified(sdk: dict[str, Any]) -> None:
    assert drift.problems(sdk) == []


def test_the_guard_reads_the_sdk_it_names(sdk: dict[str, Any]) -> None:
    import openai

    assert sdk["version"] == openai.__version__
    assert "markup" in sdk["fields"]["edit"] and "moderation" not in sdk["fields"]["edit"]
    assert "complexity" in sdk["fields"]["responses"]
    assert "gpt-image-2.5-flare" in sdk["models"]["generate"]


def test_an_unclassified_field_or_model_fails(sdk: dict[str, Any]) -> None:
    newer = {**sdk, "fields": {**sdk["fields"], "generate": [*sdk["fields"]["generate"], "sparkle"]},
             "models": {**sdk["models"], "edit": [*sdk["models"]["edit"], "gpt-image-3"]}}
    assert drift.problems(newer) == [
        "generate: field 'sparkle' is not classified (add it to models.SDK_FIELDS: param, input, tool or refused)",
        "edit: model 'gpt-image-3' has no row in the capability table "
        "(add a ModelSpec, or list it in models.UNSUPPORTED_MODELS with a reason)",
    ]


def test_a_field_the_table_sends_must_exist(sdk: dict[str, Any]) -> None:
    older = {**sdk, "fields": {**sdk["fields"], "generate": [f for f in sdk["fields"]["generate"]
                                                                 if f != "complexity"]}}
    found = drift.problems(older)
    assert "generate: 'complexity' is sent but this SDK does not define it" in found
    assert "generate: gpt-image-2 sends 'complexity', which this SDK does not define" in found


def test_refused_fields_have_reasons() -> None:
    for endpoint, table in models.SDK_FIELDS.items():
        for name, how in table.items():
            assert how in ("param", "input", "tool", "refused"), (endpoint, name)
            if how == "refused":
                assert name in models.REFUSED_FIELDS, (endpoint, name)
            if how in ("input", "tool"):
                assert name in models.STRUCTURAL_FIELDS, (endpoint, name)
    assert "GIF and SVG output are previews this tool does not produce yet" in models.REFUSED_FIELDS["svg"][0]
    assert "streaming only" in models.REFUSED_FIELDS["partial_images"][0]


def test_pyproject_bounds_openai_to_the_classified_minor() -> None:
    import openai

    text = (TOOL.parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    major, minor = openai.__version__.split(".")[:2]
    assert f'"openai>={major}.{minor},<{major}.{int(minor) + 1}"' in text
