"""Checks on images: local metrics (size, format, transparency, SSIM) and the vision rubric (ask)."""

from __future__ import annotations

from .result import CheckResult, checks_pass

__all__ = ["CheckResult", "checks_pass"]
