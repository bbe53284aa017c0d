"""junit.xml: one testcase per candidate x task, for CI test-report viewers.

    classname = gate.<candidate>.<tier>   name = <task>
    PASS          a passing testcase
    FAIL          <failure message=... type="FAIL">
    INCONCLUSIVE  <failure type="INCONCLUSIVE"> when the task's policy counts an
                  inconclusive result as a failure (`inconclusive_policy` ==
                  "fail"), else <skipped message=...>: the gate could not decide,
                  and under a warn/pass policy the release does not fail on it.
                  When a results file lacks `inconclusive_policy`, an
                  INCONCLUSIVE task counts as a failure exactly when the
                  release exited 1 and its candidate did not pass.

Written with xml.etree, which escapes markup; characters XML 1.0 cannot carry
at all (NUL, most C0 controls, lone surrogates — model output can hold them)
are replaced with U+FFFD so that every consumer can parse the file.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from gate.report import format as fmt

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value: Any) -> str:
    """`value` as text XML 1.0 can hold."""
    return _NOT_XML.sub("\ufffd", str(value))


def inconclusive_fails(results: dict[str, Any], candidate: dict[str, Any],
                       task: dict[str, Any]) -> bool:
    """Whether an INCONCLUSIVE task is reported as a failure (module docstring)."""
    policy = task.get("inconclusive_policy")
    if policy is not None:
        return bool(policy == "fail")
    return bool(results["release"]["exit_code"] == 1 and candidate["verdict"] != "PASS")


def _message(task: dict[str, Any]) -> str:
    if task["verdict"] == "STOPPED":
        return "STOPPED: not judged: the candidate had already failed another task (fail_fast)"
    if task["verdict"] == "WAIVED":
        return (f"WAIVED: {task['metric']} delta {fmt.delta(task, task['delta'])} {fmt.interval(task)}; "
                f"{fmt.waiver(task)}")
    return (f"{task['verdict']}: {task['metric']} delta {fmt.delta(task, task['delta'])} "
            f"{fmt.interval(task)}, policy {fmt.margin(task)}")


def _details(candidate: dict[str, Any], task: dict[str, Any]) -> str:
    lines = [
        f"candidate {candidate['name']}: {fmt.label(candidate)} - {candidate['reason']}",
        f"base {fmt.score(task, task['base_score'])}, candidate "
        f"{fmt.score(task, task['candidate_score'])} ({fmt.direction(task)})",
        f"method {task['method']}, n {fmt.items(task)}, p (decision) {fmt.p_value(task['p_value'])}",
    ]
    if task.get("waiver"):
        lines.append(fmt.waiver(task))
    if task["advice"]:
        lines.append(f"advice: {task['advice']['message']}")
    if task["flags"]:
        lines.append("flags: " + ", ".join(task["flags"]))
    for item in task["flipped"][:5]:
        lines.append(f"flipped doc {item['doc_id']}: target {item['target']!r}, "
                     f"base {item['base_response']!r}, candidate {item['candidate_response']!r}")
    return "\n".join(lines)


def render_junit(results: dict[str, Any]) -> str:
    """The JUnit XML document for a validated results dict."""
    root = ET.Element("testsuites", name="gate")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for candidate in results["candidates"]:
        suite = ET.SubElement(root, "testsuite", name=xml_text(f"gate.{candidate['name']}"),
                              timestamp=xml_text(results["created"]), errors="0", time="0")
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        tiers = fmt.tiers_in_order(candidate)
        for tier in tiers:
            for task in tier["tasks"]:
                case = ET.SubElement(suite, "testcase", time="0",
                                     classname=xml_text(f"gate.{candidate['name']}.{tier['tier']}"),
                                     name=xml_text(task["task"]))
                counts["tests"] += 1
                verdict = task["verdict"]
                if verdict == "FAIL" or (verdict == "INCONCLUSIVE"
                                         and inconclusive_fails(results, candidate, task)):
                    failure = ET.SubElement(case, "failure", message=xml_text(_message(task)),
                                            type=verdict)
                    failure.text = xml_text(_details(candidate, task))
                    counts["failures"] += 1
                elif verdict in ("INCONCLUSIVE", "STOPPED", "WAIVED"):
                    ET.SubElement(case, "skipped", message=xml_text(_message(task)))
                    counts["skipped"] += 1
                out = ET.SubElement(case, "system-out")
                out.text = xml_text(_details(candidate, task))
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
