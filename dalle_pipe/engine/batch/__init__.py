"""A catalog through the OpenAI Batch API: `run --batch` (alias `batch submit`), `batch status`, `batch collect`.

`flow` drives one recipe's submit or collect through the engine (its sink queues Batch API lines);
`states` owns the state files, `lines` the JSONL lines, `results` what is reported.
"""

from __future__ import annotations

from .flow import batchable, check_recipe, collect, status, status_all, submit
from .results import BatchRun, StatusLine, as_json, exit_code, summary
from .states import load_states, open_requests, states_dir

__all__ = ["BatchRun", "StatusLine", "as_json", "batchable", "check_recipe", "collect", "exit_code", "load_states",
           "open_requests", "states_dir", "status", "status_all", "submit", "summary"]
