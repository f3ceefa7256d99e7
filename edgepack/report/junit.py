"""JUnit XML for CI systems that show test results: one test case per (budget, artifact), a failed budget as a
failure carrying what was observed against the limit."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

from edgepack.fileio import atomic_write_text
from edgepack.gates import describe_failure, describe_verdict, format_interval, format_value
from edgepack.records import TOO_CLOSE, Report, Verdict


def junit_xml(report: Report, verdicts: Sequence[Verdict], command: str) -> str:
    """The verdicts as a JUnit document: suite = this model on this target, class = the artifact, name = the budget."""
    failed = sum(1 for v in verdicts if not v.passed)
    suite_name = f"edgepack {command}: {report.model.model_name} on {report.target}"
    root = ET.Element("testsuites", name="edgepack", tests=str(len(verdicts)), failures=str(failed), errors="0")
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(verdicts)), failures=str(failed),
                          errors="0", skipped="0", timestamp=report.created)
    properties = ET.SubElement(suite, "properties")
    for name, value in (("model", report.model.source), ("target", report.target),
                        ("edgepack_version", report.edgepack_version), ("report", f"{report.out_dir}/report.json")):
        ET.SubElement(properties, "property", name=name, value=value)
    for v in verdicts:
        case = ET.SubElement(suite, "testcase", classname=v.artifact, name=v.budget, time="0")
        if not v.passed:
            kind = "not checked" if v.observed is None else v.status
            failure = ET.SubElement(case, "failure", type=kind, message=_message(v))
            failure.text = describe_failure(v)
        ET.SubElement(case, "system-out").text = describe_verdict(v)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _message(v: Verdict) -> str:
    """Observed against limit, short: what a CI system shows in its list of failures."""
    if v.metric == "runtimes":
        return v.reason
    if v.observed is None:
        return f"not checked: {v.reason}"
    text = f"observed {format_value(v.observed, v.unit)}, limit {format_value(v.limit, v.unit)}"
    if v.status == TOO_CLOSE and v.interval:
        text += f" ({TOO_CLOSE}: interval {format_interval(*v.interval, v.unit, v.limit)})"
    if v.baseline is not None:
        text += f" (baseline {format_value(v.baseline, v.unit)})"
    return text


def write_junit(report: Report, verdicts: Sequence[Verdict], path: Path, command: str) -> None:
    atomic_write_text(path, junit_xml(report, verdicts, command))
