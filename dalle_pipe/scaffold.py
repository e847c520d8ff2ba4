"""`dalle-pipe init`: a small working project that validates and runs offline as it is."""

from __future__ import annotations

from pathlib import Path

from . import store
from .errors import UsageError
from .schema import schema_text

PIPELINE = """\
# yaml-language-server: $schema=schemas/pipeline.schema.json
# The project file: which recipes to run, and the settings they share.
version: 1
recipes:
  - recipes/example.yaml
provider: openai
throttle: {images_per_minute: 5, concurrency: 2}   # your account's limits, shared by all recipes
vars: {brand: Example Co}
"""

RECIPE = """\
# yaml-language-server: $schema=../schemas/recipe.schema.json
# One studio shot per catalog row, then its background replaced through a circular mask.
#   dalle-pipe validate          check everything, send nothing
#   dalle-pipe plan              what a run would request and cost
#   dalle-pipe run --offline     preview with the local renderer: no key, no network
#   dalle-pipe run               the real thing (needs OPENAI_API_KEY)
# Then open out/example/report.html.
version: 1
name: example
model: gpt-image-2
params: {size: 1024x1024, quality: low}
vars: {lighting: soft window light}
catalog:
  path: ../catalogs/example.csv       # relative to this file
  key: "{{ item.id }}"
steps:
  - id: hero
    generate:
      prompt: >-
        A {{ item.subject }} centred on a plain studio background, {{ item.style }},
        {{ vars.lighting }}, 50mm lens, eye level, {{ vars.brand }} catalog style
  - id: bg_mask
    mask:
      size_of: {step: hero}
      shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]
      invert: true                    # edit everything but the circle
  - id: beach
    edit:
      image: {step: hero}
      mask: {step: bg_mask}
      prompt: "Keep the {{ item.subject }} unchanged; a tropical beach at sunset as background"
"""

CATALOG = """\
id,subject,style
mug,ceramic mug with steam rising,warm tones
board,wooden cutting board with fresh vegetables,overhead shot
wallet,leather wallet on a marble surface,minimal luxury feel
"""


def files() -> dict[str, str]:
    """What init writes: relative path -> text."""
    return {
        "pipeline.yaml": PIPELINE,
        "recipes/example.yaml": RECIPE,
        "catalogs/example.csv": CATALOG,
        "schemas/recipe.schema.json": schema_text("recipe"),
        "schemas/pipeline.schema.json": schema_text("pipeline"),
    }


def init_project(folder: Path) -> list[str]:
    """Write the starter project into ``folder`` (created if missing); refuse to overwrite anything."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is not a folder", "name a new or empty folder: dalle-pipe init my-images")
    content = files()
    existing = [rel for rel in content if (folder / rel).exists() or (folder / rel).is_symlink()]
    if existing:
        raise UsageError(f"{folder} already has {', '.join(existing)}: init writes only into a folder "
                         f"without them, and never overwrites",
                         "run it in an empty folder, e.g. dalle-pipe init my-images")
    for rel, text in content.items():
        store.atomic_write_bytes(folder / rel, text.encode("utf-8"))
    return list(content)
