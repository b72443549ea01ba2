"""Report writers: terminal summary, JSON, rclone-style combined listing, JUnit XML.

The HTML report lives in :mod:`.html`. Every writer writes to a temporary file next to the
destination and renames it, so an interrupted run never leaves a half-written report.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from xml.etree import ElementTree as ET

from mlflow_sync import files
from mlflow_sync.errors import UsageError
from mlflow_sync.redact import redact
from mlflow_sync.validate.results import SUMMARY_COLUMNS, Report, Status


def write_atomically(path: str | Path, text: str) -> Path:
    """A report file, redacted and written atomically; an unwritable path is a usage error."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"report path {str(path)!r} is a directory")
    try:
        return files.write_atomically(path, redact(text))
    except OSError as exc:
        raise UsageError(f"cannot write report {str(path)!r}: {exc.strerror or exc}") from None


def write_json(report: Report, path: str | Path) -> Path:
    return write_atomically(path, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")


def write_combined(report: Report, path: str | Path) -> Path:
    """One line per object, as ``rclone check --combined``: ``= path``, ``+``, ``-``, ``*``, ``!``."""
    lines = report.combined_lines()
    return write_atomically(path, "\n".join(lines) + ("\n" if lines else ""))


def write_junit(report: Report, path: str | Path) -> Path:
    """A test suite per object kind: a failing test case per differing object, one passing case for
    the matched ones (a case per matched object would make CI pages unreadable at 10,000 runs)."""
    by_kind = defaultdict(list)
    for result in report.results:
        by_kind[result.kind].append(result)
    suites = ET.Element("testsuites", name="mlflow-sync validate", time=f"{report.seconds:.3f}")
    for kind, results in by_kind.items():
        suite = ET.SubElement(suites, "testsuite", name=kind)
        failures = errors = skipped = 0
        matched = sum(1 for result in results if result.status is Status.SAME)
        if matched:
            ET.SubElement(suite, "testcase", classname=f"validate.{kind}", name=f"{matched} {kind} object(s) match")
        for result in results:
            if result.status is Status.SAME:
                continue
            case = ET.SubElement(suite, "testcase", classname=f"validate.{kind}", name=result.path)
            message = f"{SUMMARY_COLUMNS[result.status]}: {result.path}" + (f" ({result.detail})" if result.detail else "")
            if result.status is Status.ERROR:
                errors += 1
                ET.SubElement(case, "error", message=message, type="unreadable")
            elif result.status is Status.EXTRA and report.one_way:
                skipped += 1
                ET.SubElement(case, "skipped", message=f"extra in target, allowed by --one-way: {result.path}")
            else:
                failures += 1
                ET.SubElement(case, "failure", message=message, type=SUMMARY_COLUMNS[result.status]).text = message
        suite.set("tests", str(len(suite)))
        suite.set("failures", str(failures))
        suite.set("errors", str(errors))
        suite.set("skipped", str(skipped))
    ET.indent(suites)
    return write_atomically(path, '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode"))


def render_summary(report: Report, console, *, limit: int = 20) -> None:
    """The terminal summary: counts per object kind, then the first differences."""
    from rich.table import Table

    table = Table(title=f"validate {report.source} -> {report.target}")
    table.add_column("kind")
    for column in SUMMARY_COLUMNS.values():
        table.add_column(column, justify="right")
    for kind, row in report.summary().items():
        table.add_row(kind, *(_cell(column, row[column], report.one_way) for column in SUMMARY_COLUMNS.values()))
    totals = report.totals()
    table.add_row("total", *(_cell(column, totals[column], report.one_way) for column in SUMMARY_COLUMNS.values()),
                  style="bold")
    console.print(table)
    differences = report.differences()
    for result in differences[:limit]:
        detail = f"  ({result.detail})" if result.detail else ""
        console.print(f"{result.status.value} {result.path}{detail}", markup=False, highlight=False)
    if len(differences) > limit:
        console.print(f"... and {len(differences) - limit} more (see the JSON/HTML report or --combined)")
    verdict = "[green]OK: target matches source[/]" if report.ok else \
        f"[red]MISMATCH: {len(report.failing())} object(s) differ[/]"
    console.print(f"{verdict} ({report.seconds:.1f} s)")


def _cell(column: str, value: int, one_way: bool) -> str:
    if value and column in ("missing", "differ", "error") or (value and column == "extra" and not one_way):
        return f"[red]{value}[/]"
    return str(value)
