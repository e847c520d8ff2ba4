"""The SDK drift guard: is every field and model literal of the openai SDK classified?

    python tools/drift_check.py              # against the newest openai release (a temporary venv)
    python tools/drift_check.py --installed  # against the SDK installed here (what tests/ runs)
    python tools/drift_check.py --version 3.58.0

It reads the SDK's own TypedDicts for image generations, edits and variations and the
Responses API's image_generation tool, and the model literals they name, and compares
them with the capability table (dalle_pipe/models.py: SDK_FIELDS, MODELS,
UNSUPPORTED_MODELS). Exit 0 when every one is classified, 1 with one line per field or
model that is not, 2 when the SDK could not be installed. tests/test_sdk_drift.py runs the
same check against the installed SDK.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Any

# Runs inside the Python whose SDK is checked; prints {"version", "fields": {endpoint: [...]},
# "models": {endpoint: [...]}} as JSON.
PROBE = r'''
import json, typing
import openai
from openai.types import image_create_variation_params as v, image_edit_params as e, image_generate_params as g
from openai.types.responses import tool_param as t

def keys(td):
    return sorted(td.__required_keys__ | td.__optional_keys__)

def literals(tp):
    out = set()
    stack = [tp]
    while stack:
        x = stack.pop()
        if typing.get_origin(x) is typing.Literal:
            out.update(a for a in typing.get_args(x) if isinstance(a, str))
        else:
            stack.extend(typing.get_args(x))
    return sorted(out)

def model_literals(td):
    return literals(typing.get_type_hints(td)["model"])

kinds = {
    "generate": g.ImageGenerateParamsNonStreaming,
    "edit": e.ImageEditParamsNonStreaming,
    "variation": v.ImageCreateVariationParams,
    "responses": t.ImageGeneration,
}
print(json.dumps({
    "version": openai.__version__,
    "fields": {k: keys(td) for k, td in kinds.items()},
    "models": {k: model_literals(td) for k, td in kinds.items()},
}))
'''


def read_sdk(python: str) -> dict[str, Any]:
    """What the SDK importable by `python` defines (see PROBE)."""
    out = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, check=True)
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def problems(sdk: dict[str, Any]) -> list[str]:
    """One line per SDK field or model literal the capability table has not classified."""
    from dalle_pipe import models

    found: list[str] = []
    for endpoint, fields in sdk["fields"].items():
        table = models.SDK_FIELDS.get(endpoint, {})
        for name in fields:
            if name not in table:
                found.append(f"{endpoint}: field '{name}' is not classified "
                             "(add it to models.SDK_FIELDS: param, input, tool or refused)")
        for name in sorted(set(table) - set(fields)):
            if table[name] == "param":
                found.append(f"{endpoint}: '{name}' is sent but this SDK does not define it")
    for spec in models.MODELS.values():  # what the table sends must be a field of that endpoint
        for kind, sent in spec.accepts.items():
            defined = set(sdk["fields"].get(kind, ()))
            for name in sorted(sent):
                wire = models.SENT_AS.get((kind, name), name)
                if wire not in defined:
                    found.append(f"{kind}: {spec.name} sends '{wire}', which this SDK does not define")
    tool = set(sdk["fields"].get("responses", ()))
    for name in sorted(models.RESPONSES_PARAMS - models.RESPONSES_TOP_LEVEL - tool):
        found.append(f"responses: the image_generation tool is sent '{name}', which this SDK does not define")
    for endpoint, names in sdk["models"].items():
        for name in names:
            if name not in models.MODELS and name not in models.UNSUPPORTED_MODELS:
                found.append(f"{endpoint}: model '{name}' has no row in the capability table "
                             "(add a ModelSpec, or list it in models.UNSUPPORTED_MODELS with a reason)")
    return found


def _newest(where: Path, version: str | None) -> str:
    """A Python in a venv at `where` holding the newest (or the given) openai release."""
    venv.create(where, with_pip=True)
    python = str(where / ("Scripts" if sys.platform == "win32" else "bin") / "python")
    spec = f"openai=={version}" if version else "openai"
    subprocess.run([python, "-m", "pip", "install", "-q", "--upgrade", spec], check=True)
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--installed", action="store_true", help="check the SDK installed with this Python")
    parser.add_argument("--version", help="check this openai release instead of the newest")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dalle-pipe-drift-") as tmp:
        try:
            python = sys.executable if args.installed else _newest(Path(tmp), args.version)
        except (subprocess.CalledProcessError, OSError) as exc:
            print(f"drift check: could not install openai: {exc}", file=sys.stderr)
            return 2
        sdk = read_sdk(python)
    found = problems(sdk)
    for line in found:
        print(f"openai {sdk['version']}: {line}")
    if not found:
        print(f"openai {sdk['version']}: every field and model literal is classified")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
