"""The engine end to end, in process, with an injected clock: no real time passes, schedules are exact."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from dalle_pipe.app import load
from dalle_pipe.engine.results import RunOptions
from dalle_pipe.engine.run import run_plan
from dalle_pipe.prices import load_prices
from dalle_pipe.providers.base import GeneratedImage, ImageRequest, ImageResponse, NoImage, Transient
from dalle_pipe.recipe import Overrides
from dalle_pipe.throttle import FakeClock

RECIPE = """\
version: 1
name: shots
model: gpt-image-2
params: {size: 1024x1024, quality: low}
throttle: {images_per_minute: 60, concurrency: 1, max_retries: 3}
items: [{id: a}, {id: b}, {id: c}]
steps:
  - id: hero
    generate: {prompt: "product {{ item.id }}"}
"""


def png(size: tuple[int, int] = (1024, 1024)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


class Scripted:
    """A provider that answers from a script: an exception to raise, or the bytes of one image."""

    name = "openai"

    def __init__(self, script: list[BaseException | bytes]) -> None:
        self.script = script
        self.sent: list[ImageRequest] = []

    def send(self, request: ImageRequest) -> ImageResponse:
        self.sent.append(request)
        step = self.script.pop(0) if self.script else png()
        if isinstance(step, BaseException):
            raise step
        return ImageResponse(images=(GeneratedImage(step, "png"),), request_id=f"req-{len(self.sent)}",
                             usage={"input_tokens": 10, "output_tokens": 272,
                                    "input_tokens_details": {"text_tokens": 10, "image_tokens": 0}})

    def close(self) -> None:
        pass


def run(root: Path, provider: Scripted, clock: FakeClock) -> object:
    (root / "recipe.yaml").write_text(RECIPE)
    loaded = load([root / "recipe.yaml"], Overrides())
    return run_plan(loaded.plans[0], RunOptions(), load_prices(None), "openai", lambda: provider, clock=clock)


def test_a_rate_of_60_a_minute_spaces_requests_a_second_apart_in_no_real_time(tmp_path: Path) -> None:
    clock = FakeClock()
    provider = Scripted([])
    result = run(tmp_path, provider, clock)
    assert [r.outcome.status for r in result.reports] == ["generated"] * 3  # type: ignore[attr-defined]
    assert len(provider.sent) == 3
    assert clock.now() >= 2.0  # three requests at 60/min: the last one at least 2 s after the first
    assert clock.now() < 5.0


def test_a_reset_then_an_unreadable_answer_then_an_image(tmp_path: Path) -> None:
    clock = FakeClock()
    provider = Scripted([Transient("reset", maybe_charged=True), NoImage(status=200), b"not an image"])
    result = run(tmp_path, provider, clock)
    first = result.reports[0].outcome  # type: ignore[attr-defined]
    assert first.status == "failed"  # the reset is retried; the unreadable answer once; then no more
    assert first.reason == "the server sent no readable image"
    assert first.entries[0]["possible_duplicate_charge"] is True
    assert len(provider.sent) == 3 + 2  # a: reset, no image, not an image; b and c: one each
    assert [r.outcome.status for r in result.reports[1:]] == ["generated", "generated"]  # type: ignore[attr-defined]
    assert any(s > 0 for s in clock.sleeps)  # the backoff slept on the fake clock only


def test_an_image_of_another_size_is_kept_with_a_warning(tmp_path: Path) -> None:
    provider = Scripted([png((512, 512))])
    result = run(tmp_path, provider, FakeClock())
    entry = result.reports[0].outcome.entries[0]  # type: ignore[attr-defined]
    assert entry["width"] == 512 and entry["warnings"] == ["asked for size 1024x1024, the server sent 512x512"]
    assert (tmp_path / "out/shots/a/hero.png").is_file()
