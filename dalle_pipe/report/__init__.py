"""report.html: a static contact sheet of one output_dir, grouped by step then unit, showing what changed.

The page needs no network: CSS and JS are inline and pinned by a Content-Security-Policy
that allows only them and local images. It is rendered from the Jinja template
``report.html.j2`` with autoescape on, so every value from a manifest is escaped.

The report reads manifests through the store; it never imports the engine. The command
layer calls :func:`write_report` / :func:`rebuild_reports` after a run.
"""

from __future__ import annotations

from .build import (
    CHANGES,
    STATUSES,
    THUMB_MAX,
    Shot,
    build_shots,
    classify,
    content_sha,
    make_thumbnails,
    removed,
    thumb_ext,
)
from .manifests import load_manifests
from .page import page_parts, render_page
from .write import output_dirs, rebuild_reports, write_report

__all__ = [
    "CHANGES",
    "STATUSES",
    "THUMB_MAX",
    "Shot",
    "build_shots",
    "classify",
    "content_sha",
    "load_manifests",
    "make_thumbnails",
    "output_dirs",
    "page_parts",
    "rebuild_reports",
    "removed",
    "render_page",
    "thumb_ext",
    "write_report",
]
