"""CheckResult: one check's outcome on one image, as the manifest records it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SEVERITIES = ("error", "warn")


@dataclass(frozen=True)
class CheckResult:
    """`passed` is None when nothing judged (an `ask` offline); `score` is the measured value, if any."""

    name: str
    kind: str
    passed: bool | None
    score: float | None
    reason: str
    cost_usd: float | None = None  # a paid judgement's cost; 0.0 for local checks; None: unknown
    severity: str = "error"
    fingerprint: str | None = None  # ask: the judgement's cache key

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "severity": self.severity, "passed": self.passed,
                "score": self.score, "reason": self.reason, "cost_usd": self.cost_usd,
                "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckResult | None:
        """A result read back from a manifest; None when it is not one (a hand-edited file)."""
        try:
            passed, score, cost = data.get("passed"), data.get("score"), data.get("cost_usd")
            if passed is not None and not isinstance(passed, bool):
                return None
            if not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in (score, cost)):
                return None
            fp = data.get("fingerprint")
            return cls(str(data["name"]), str(data["kind"]), passed, score, str(data.get("reason", "")), cost,
                       str(data.get("severity", "error")), fp if isinstance(fp, str) else None)
        except (KeyError, AttributeError, TypeError):
            return None

    @property
    def blocking(self) -> bool:
        """A failed `error` check: the image does not pass (a `warn` check only annotates)."""
        return self.severity == "error" and self.passed is False


def checks_pass(results: Iterable[CheckResult], *, offline: bool) -> bool:
    """Whether an image passes its checks: every error check passed; "not judged" passes only offline."""
    for r in results:
        if r.severity != "error":
            continue
        if r.passed is False or (r.passed is None and not offline):
            return False
    return True
