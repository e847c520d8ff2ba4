"""The CI packaging, checked with the real tools: action.yml against SchemaStore's schema for
actions (check-jsonschema), its script driving dalle-pipe, and the pre-commit hook through
`pre-commit try-repo` on a throwaway copy of this project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fakeapi import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENTRYPOINT = ROOT / "action" / "entrypoint.sh"

RECIPE = """\
version: 1
name: shots
provider: openai
model: gpt-image-2
params: {size: 1024x1024, quality: low}
items:
  - {id: mug, what: "a ceramic mug"}
steps:
  - id: hero
    generate: {prompt: "{{ item.what }} on marble"}
"""

BROKEN = """\
version: 1
name: broken
provider: offline
model: gpt-image-2
steps:
  - id: hero
    generate: {prompt: "a mug", sise: 1024x1024}
"""


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without CI, git and API variables, plus ``extra``."""
    drop = ("GITHUB_", "GIT_", "OPENAI_", "PRE_COMMIT", "DP_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def tool(module: str, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


# ------------------------------------------------------------------------------------------- action

def test_action_yml_is_valid_for_schemastore() -> None:
    run = tool("check_jsonschema", "--builtin-schema", "vendor.github-actions", "action.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ok -- validation done" in run.stdout


def test_the_example_workflow_is_valid_for_schemastore() -> None:
    run = tool("check_jsonschema", "--builtin-schema", "vendor.github-workflows", "docs/github-workflow.yml")
    assert run.returncode == 0, run.stdout + run.stderr


def test_action_inputs_reach_scripts_only_through_env() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert set(action["inputs"]) >= {"targets", "check", "max-cost", "offline"}
    steps = action["runs"]["steps"]
    assert action["runs"]["using"] == "composite"
    scripts = [s for s in steps if "run" in s]
    assert scripts
    passed = {}
    for step in scripts:
        assert "${{" not in step["run"], step["run"]  # no expression is ever pasted into shell code
        passed.update(step.get("env", {}))
    assert passed == {"DP_INSTALL": "${{ inputs.install }}", "DP_TARGETS": "${{ inputs.targets }}",
                      "DP_CHECK": "${{ inputs.check }}", "DP_MAX_COST": "${{ inputs.max-cost }}",
                      "DP_OFFLINE": "${{ inputs.offline }}"}
    used = set(re.findall(r"\$\{?(DP_[A-Z_]+)", ENTRYPOINT.read_text()))
    assert used == set(passed)


def action(root: Path, mode: str = "run", **inputs: str) -> subprocess.CompletedProcess[str]:
    """The action's script as its steps run it: inputs as DP_* variables, under GitHub Actions."""
    env = clean_env(GITHUB_ACTIONS="true", GITHUB_WORKSPACE=str(root),
                    GITHUB_STEP_SUMMARY=str(root / "summary.md"),
                    **{f"DP_{k.upper()}": v for k, v in inputs.items()})
    return subprocess.run(["bash", str(ENTRYPOINT), mode], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_action_runs_offline_then_checks(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    made = action(tmp_path, targets="recipe.yaml", offline="true")
    assert made.returncode == 0, made.stdout + made.stderr
    assert "shots: 1 generated" in made.stdout
    assert (tmp_path / "out" / "shots" / "mug" / "hero.png").is_file()
    summary = (tmp_path / "summary.md").read_text()
    assert "| shots | 1 | 0 | 0 | 0 | 0 | $0.00 |" in summary

    assert action(tmp_path, targets="recipe.yaml", offline="true", check="true").returncode == 0
    # Without offline, the check wants the real provider's image: annotated at the step's line.
    real = action(tmp_path, targets="recipe.yaml", check="true")
    assert real.returncode == 1
    assert "::error file=recipe.yaml,line=9,title=dalle-pipe::hero@mug: out of date" in real.stdout


def test_action_max_cost_gates_the_run(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    with FakeOpenAI() as api:
        key = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": api.base_url}
        env_targets = {"targets": "recipe.yaml", "max_cost": "0"}
        refused = subprocess.run(
            ["bash", str(ENTRYPOINT), "run"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
            env=clean_env(GITHUB_ACTIONS="true", **key, **{f"DP_{k.upper()}": v for k, v in env_targets.items()}))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "exceeds --max-cost" in refused.stdout
        assert api.image_requests == []
        paid = subprocess.run(
            ["bash", str(ENTRYPOINT), "run"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
            env=clean_env(GITHUB_ACTIONS="true", **key, DP_TARGETS="recipe.yaml", DP_MAX_COST="5"))
        assert paid.returncode == 0, paid.stdout + paid.stderr
        assert len(api.image_requests) == 1
    assert (tmp_path / "out" / "shots" / "mug" / "hero.png").is_file()


@pytest.mark.parametrize(("inputs", "message"), [
    ({"max_cost": "1; touch pwned"}, "input max-cost must be a number of US dollars, not '1; touch pwned'"),
    ({"max_cost": "$(touch pwned)"}, "input max-cost must be a number of US dollars, not '$(touch pwned)'"),
    ({"check": "yes"}, "input check must be true or false, not 'yes'"),
    ({"offline": "`touch pwned`"}, "input offline must be true or false, not '`touch pwned`'"),
    ({"targets": "recipe.yaml --force"}, "input targets: '--force' is not a file or folder"),
])
def test_action_refuses_bad_inputs_before_running(tmp_path: Path, inputs: dict[str, str], message: str) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    run = action(tmp_path, **{"targets": "recipe.yaml", "offline": "true", **inputs})
    assert run.returncode == 2
    assert f"::error title=dalle-pipe action::{message}" in run.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]  # nothing ran, nothing written


def test_action_targets_are_data_not_code(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    run = action(tmp_path, targets="$(touch pwned) `touch pwned2`", offline="true")
    assert run.returncode == 2
    assert run.stderr.splitlines() == ["$(touch:1:1: no such file", "`touch:1:1: no such file",
                                       "pwned):1:1: no such file", "pwned2`:1:1: no such file"]
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_action_install_refuses_an_option(tmp_path: Path) -> None:
    run = action(tmp_path, "install", install="--index-url=http://example.invalid/simple")
    assert run.returncode == 2
    assert "input install must be a requirement or a path, not an option" in run.stdout


# --------------------------------------------------------------------------------------- pre-commit

NETWORK = re.compile(r"Could not find a version|No matching distribution|Failed to establish a new connection|"
                     r"Temporary failure in name resolution|Network is unreachable|ConnectTimeout|"
                     r"Max retries exceeded|ProxyError")


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid",
                    "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
                   cwd=cwd, env=clean_env(), check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This project's installable files, committed in a throwaway git repository."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: pre-commit needs it")
    repo = tmp_path_factory.mktemp("hook")
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy2(ROOT / name, repo / name)
    shutil.copytree(ROOT / "dalle_pipe", repo / "dalle_pipe", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "hook")
    return repo


def test_the_hooks_manifest_is_valid() -> None:
    run = tool("pre_commit", "validate-manifest", ".pre-commit-hooks.yaml")
    assert run.returncode == 0, run.stdout + run.stderr


def try_repo(hook: Path, project: Path, *files: str) -> subprocess.CompletedProcess[str]:
    # try-repo builds the hook's environment in a fresh store every time (about 30-60 s of pip).
    home = project.parent / f"pre-commit-home-{files[0].replace('/', '_')}"
    # PIP_NO_COMPILE: the hook's fresh virtualenv is used once; byte-compiling it is wasted work.
    env = clean_env(PRE_COMMIT_HOME=str(home), PRE_COMMIT_COLOR="never", PIP_NO_COMPILE="1")
    started = time.monotonic()
    run = tool("pre_commit", "try-repo", str(hook), "dalle-pipe-validate", "--files", *files,
               cwd=project, env=env, timeout=900)
    print(f"pre-commit try-repo {' '.join(files)}: {time.monotonic() - started:.1f} s")
    return run


def test_pre_commit_try_repo_passes_a_good_recipe_and_fails_a_broken_one(hook_repo: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "recipes").mkdir(parents=True)
    (project / "recipes" / "good.yaml").write_text(RECIPE)
    (project / "recipes" / "broken.yaml").write_text(BROKEN)
    (project / "notes.yaml").write_text(BROKEN)  # not a recipe path: the hook leaves it alone
    git(project, "init", "-q")
    git(project, "add", "-A")

    good = try_repo(hook_repo, project, "recipes/good.yaml", "notes.yaml")
    broken = try_repo(hook_repo, project, "recipes/broken.yaml")
    for run in (good, broken):
        logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("pre-commit-home-*/pre-commit.log"))
        if run.returncode not in (0, 1) and NETWORK.search(run.stdout + run.stderr + logs):
            pytest.skip("the package registry cannot be reached: pre-commit could not install the hook's environment")

    assert good.returncode == 0, good.stdout + good.stderr
    assert re.search(r"^dalle-pipe validate\.+Passed$", good.stdout, re.M), good.stdout

    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert re.search(r"^dalle-pipe validate\.+Failed$", broken.stdout, re.M), broken.stdout
    assert ("recipes/broken.yaml:7:33: steps[0].generate.sise: unknown key 'sise' (did you mean 'size'?)"
            in broken.stdout)
