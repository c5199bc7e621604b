"""The GitHub Action (``action.yml``) and the workflow that uses it (``examples/ci/energy.yml``):
their structure as GitHub reads it, and the action's one script, run here as the action runs it
(no GitHub runner here) against a tiny sweep of 2 configurations x 2 repeats."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from tests.helpers import SMALLEST_SWEEP, write_sweep

ROOT = Path(__file__).resolve().parent.parent
ACTION = ROOT / "action.yml"
WORKFLOW = ROOT / "examples" / "ci" / "energy.yml"
STEP_OUTPUT = re.compile(r"^\$\{\{ steps\.([\w-]+)\.outputs\.([\w-]+) \}\}$")


def test_the_action_is_a_composite_action_whose_outputs_come_from_its_step() -> None:
    action = yaml.safe_load(ACTION.read_text())
    assert action["runs"]["using"] == "composite"
    assert {"sweep", "budgets", "python-version", "torch", "args"} <= set(action["inputs"])
    assert action["inputs"]["sweep"]["required"] and action["inputs"]["budgets"]["required"]
    assert "download.pytorch.org/whl/cpu" in action["inputs"]["torch"]["default"]
    steps = {step["id"]: step for step in action["runs"]["steps"] if "id" in step}
    assert set(action["outputs"]) == {"exit-code", "run-dir", "junit", "benchmark-json",
                                      "benchmark-json-bigger", "bmf", "comment"}
    for name, output in action["outputs"].items():
        step, key = STEP_OUTPUT.match(output["value"]).groups()
        assert step in steps and key == name and output["description"]
    energy = steps["energy"]
    assert energy["shell"] == "bash"
    script = re.search(r'"\$GITHUB_ACTION_PATH/([^"]+)"', energy["run"]).group(1)
    assert (ROOT / script).is_file()
    for name in ("sweep", "budgets", "torch", "args"):
        assert energy["env"][f"GREENBENCH_{name.upper()}"] == f"${{{{ inputs.{name} }}}}"
    setup = next(step for step in action["runs"]["steps"] if "uses" in step)
    assert setup["uses"].startswith("actions/setup-python@")
    assert setup["with"]["python-version"] == "${{ inputs.python-version }}"


def test_the_example_workflow_comments_and_feeds_both_directions() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    (energy,) = [step for step in steps if step.get("id") == "energy"]
    assert energy["uses"].endswith("/greenbench@REF")
    outputs = set(yaml.safe_load(ACTION.read_text())["outputs"])
    for step in steps:
        for used in re.findall(r"steps\.energy\.outputs\.([\w-]+)", json.dumps(step)):
            assert used in outputs, used
    (comment,) = [step for step in steps if "gh pr comment" in step.get("run", "")]
    assert "--body-file" in comment["run"]
    assert comment["env"]["BODY"] == "${{ steps.energy.outputs.comment }}"
    charts = {step["with"]["tool"]: step["with"]["output-file-path"] for step in steps
              if step.get("uses", "").startswith("benchmark-action/github-action-benchmark@")}
    assert charts == {"customSmallerIsBetter": "${{ steps.energy.outputs.benchmark-json }}",
                      "customBiggerIsBetter":
                          "${{ steps.energy.outputs.benchmark-json-bigger }}"}
    assert job.get("permissions", workflow.get("permissions"))["pull-requests"] == "write"


SWEEP = "repeats: 2\ngrid:\n  width: [0.25, 0.5]\n"
# A ratio that holds while other tests load the CPU: the CPU's energy is estimated from the
# load of the whole machine, which can make one point several times another of its size.
BUDGETS = """\
- name: width 0.25 fits on at most 10 times width 0.5's energy
  select: {width: 0.25}
  relative_to: {width: 0.5}
  metric: energy_fit_j
  max_ratio: 10.0
- name: KID at most 10
  metric: kid
  max: 10
"""


def run_action(folder: Path, args: str = "") -> tuple[subprocess.CompletedProcess, dict]:
    """The action's script, as its step runs it, with greenbench already installed (this
    Python's); its outputs as the steps after it would read them."""
    outputs = folder / "github_output"
    outputs.write_text("")
    env = {**os.environ, "GREENBENCH_SWEEP": "sweep.yaml", "GREENBENCH_BUDGETS": "budgets.yaml",
           "GREENBENCH_ARGS": args, "GREENBENCH_INSTALL": "false",
           "GREENBENCH_PYTHON": sys.executable, "GITHUB_OUTPUT": str(outputs),
           "GITHUB_STEP_SUMMARY": str(folder / "summary.md")}
    script = ROOT / ".github" / "actions" / "energy" / "run.sh"
    done = subprocess.run(["bash", str(script)], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=600)
    pairs = [line.split("=", 1) for line in outputs.read_text().splitlines()]
    return done, dict(pairs)


def test_the_action_script_runs_the_sweep_and_writes_every_output(tmp_path: Path) -> None:
    write_sweep(tmp_path, SWEEP, base=SMALLEST_SWEEP.replace("width: 0.25\n", ""))
    (tmp_path / "budgets.yaml").write_text(BUDGETS)
    done, outputs = run_action(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = "greenbench-energy"
    assert outputs == {"run-dir": "runs/tiny", "junit": f"{out}/junit.xml",
                       "benchmark-json": f"{out}/benchmark.json", "benchmark-json-bigger": "",
                       "bmf": f"{out}/bmf.json", "comment": f"{out}/comment.md",
                       "exit-code": "0"}
    assert len(list((tmp_path / "runs" / "tiny" / "records").iterdir())) == 4
    suite = ET.parse(tmp_path / outputs["junit"]).getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "0"  # the KID rule: 2 widths
    entries = json.loads((tmp_path / outputs["benchmark-json"]).read_text())
    assert [entry["name"] for entry in entries] == [
        "width 0.25 fits on at most 10 times width 0.5's energy",
        "KID at most 10 [width=0.25]", "KID at most 10 [width=0.5]"]
    assert all(entry["range"].startswith("± ") for entry in entries)  # 2 repeats: intervals
    assert set(json.loads((tmp_path / outputs["bmf"]).read_text())) == {
        entry["name"] for entry in entries}
    comment = (tmp_path / outputs["comment"]).read_text()
    assert "**3 pass**" in comment and comment.count("\n| PASS |") == 3
    assert "### greenbench check: budgets.yaml on tiny (4 records)" in (
        tmp_path / "summary.md").read_text()

    # A budget that breaks: the step fails with check's status, its outputs written first.
    (tmp_path / "budgets.yaml").write_text(BUDGETS.replace("max: 10", "max: -1"))
    done, outputs = run_action(tmp_path, args="--strict")
    assert done.returncode == 1 and outputs["exit-code"] == "1", done.stderr[-3000:]
    assert "tiny: 4 ok (0 run now)" in done.stderr  # the sweep was not run again
    assert "**1 pass, 2 fail**" in (tmp_path / outputs["comment"]).read_text()
    assert ET.parse(tmp_path / outputs["junit"]).getroot().get("failures") == "2"

    # Bad input: exit 2, and no output of an earlier run is left to be mistaken for this one's.
    (tmp_path / "budgets.yaml").write_text("- {name: x, metric: kid}\n")
    done, outputs = run_action(tmp_path)
    assert done.returncode == 2 and outputs["exit-code"] == "2"
    assert "give exactly one of max, min, max_ratio, min_ratio" in done.stderr
    assert outputs["comment"] == "" and outputs["junit"] == ""
    assert list((tmp_path / "greenbench-energy").iterdir()) == []


def test_a_bad_sweep_is_exit_2_before_anything_runs(tmp_path: Path) -> None:
    write_sweep(tmp_path, "widht: 0.5\n")
    (tmp_path / "budgets.yaml").write_text(BUDGETS)
    done, outputs = run_action(tmp_path)
    assert done.returncode == 2 and outputs == {"exit-code": "2"}
    assert "widht" in done.stderr and not (tmp_path / "runs").exists()
