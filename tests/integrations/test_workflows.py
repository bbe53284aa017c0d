"""The GitHub workflows are valid and pass zizmor's security audit and actionlint (with shellcheck) offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.heavy

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent
FILES = sorted(WORKFLOWS.glob("*.yml"))
#: the caller workflow `gate init` writes into a user's repository
INIT_TEMPLATE = ROOT / "gate" / "cli" / "templates" / "release-gate.yml"


def test_both_workflows_exist() -> None:
    assert [p.name for p in FILES] == ["ci.yml", "release-gate.yml"]


@pytest.mark.parametrize("path", [*FILES, INIT_TEMPLATE], ids=lambda p: p.parent.name + "/" + p.name)
def test_workflow_fits_githubs_schema(path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", [WORKFLOWS, INIT_TEMPLATE], ids=["workflows", "init-template"])
def test_zizmor_finds_nothing_even_pedantic(path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "zizmor"), "--offline", "--persona", "pedantic", "--no-progress",
         str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No findings" in done.stdout


def test_actions_pinned_by_sha_and_inputs_never_in_scripts() -> None:
    for path in FILES:
        workflow = yaml.safe_load(path.read_text())
        for job in workflow["jobs"].values():
            for step in job["steps"]:
                if "uses" in step:
                    ref = step["uses"].split("@")[1]
                    assert len(ref) == 40 and int(ref, 16) >= 0, step["uses"]
                if "run" in step:
                    assert "${{" not in step["run"], (path.name, step.get("name"))


def test_release_gate_interface() -> None:
    workflow = yaml.safe_load((WORKFLOWS / "release-gate.yml").read_text())
    call = workflow[True]["workflow_call"]  # PyYAML reads the key `on` as True
    assert set(call["inputs"]) >= {"runner-labels", "config", "gate-spec", "python-version",
                                   "release-candidates", "wandb-project"}
    assert call["inputs"]["gate-spec"]["default"] == "forgetting-gate[vllm]"
    assert set(call["secrets"]) == {"HF_TOKEN", "WANDB_API_KEY"}
    job = workflow["jobs"]["gate"]
    assert job["runs-on"] == "${{ fromJSON(inputs.runner-labels) }}"
    upload = next(s for s in job["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()"
    for name in ("report.html", "results.json", "junit.xml", "summary.md"):
        assert name in upload["with"]["path"]
    assert workflow["permissions"] == {"contents": "read"}


@pytest.mark.parametrize("path", [*FILES, INIT_TEMPLATE], ids=lambda p: p.parent.name + "/" + p.name)
def test_actionlint_with_shellcheck_finds_nothing(path: Path) -> None:
    """actionlint checks expressions, job graphs and action inputs, and runs
    shellcheck on every `run:` script (scripts/install_system_tools.sh installs it)."""
    done = subprocess.run([str(BIN / "actionlint"), "-shellcheck", _shellcheck(), str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_what_it_is_here_for(tmp_path: Path) -> None:
    """The check above can fail: a `run:` script with an unquoted variable
    (shellcheck SC2086) and a reference to an undefined job output are reported."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\n"
        "permissions: {}\n"
        "jobs:\n"
        "  a:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - run: echo $HOME/$FOO\n"
        "  b:\n"
        "    needs: a\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - run: echo \"${{ needs.a.outputs.missing }}\"\n", encoding="utf-8")
    done = subprocess.run([str(BIN / "actionlint"), "-shellcheck", _shellcheck(), str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "SC2086" in done.stdout
    assert "missing" in done.stdout


def _shellcheck() -> str:
    import shutil

    found = shutil.which("shellcheck")
    assert found, "shellcheck is missing: run scripts/install_system_tools.sh"
    return found
