"""The GitHub workflows are valid and pass zizmor's security audit offline."""

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
    assert call["inputs"]["gate-spec"]["default"] == "gate[vllm]"
    assert set(call["secrets"]) == {"HF_TOKEN", "WANDB_API_KEY"}
    job = workflow["jobs"]["gate"]
    assert job["runs-on"] == "${{ fromJSON(inputs.runner-labels) }}"
    upload = next(s for s in job["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()"
    for name in ("report.html", "results.json", "junit.xml", "summary.md"):
        assert name in upload["with"]["path"]
    assert workflow["permissions"] == {"contents": "read"}
