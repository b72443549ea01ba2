"""Bad command lines and help, through the real entry points.

Parser errors (no such option, bad value, missing value, extra argument, unknown command or
choice) are one `error:` line on stderr naming the option, exit 2, for every command and group;
a bare command group prints its help and exits 0; every example in `--help` can be pasted.
"""

from __future__ import annotations

import enum
import os
import re
import subprocess
import sys

import pytest
import typer

from mlflow_sync.cli import app, main

# args, words the one error line contains
PARSER_ERRORS = [
    (["migrate", "--bogus"], "error: no such option: --bogus"),
    (["validate", "--workers", "0"], "error: invalid value for '--workers'"),
    (["validate", "--workers"], "'--workers' requires an argument"),  # option given without its value
    (["convert", "pipeline"], "error: missing option '--image-uri'"),  # required option left out
    (["info"], "error: missing argument"),  # required argument left out
    (["info", "http://a:5000", "extra"], "unexpected extra argument"),
    (["snapshot", "bogus"], "error: no such command 'bogus'"),  # a group's choice of subcommand
    (["snapshot", "--bogus"], "error: no such option: --bogus"),
    (["--bogus"], "error: no such option: --bogus"),
]
HINTS = {  # where the parser knows the command, the line says where help is
    ("migrate", "--bogus"): "(try 'mlflow-sync migrate --help')",
    ("validate", "--workers", "0"): "(try 'mlflow-sync validate --help')",
    ("snapshot", "bogus"): "(try 'mlflow-sync snapshot --help')",
}
BARE_GROUPS = [[], ["snapshot"], ["convert"]]
ERROR_IDS = [" ".join(args) for args, _ in PARSER_ERRORS]


def _script() -> str:
    return os.path.join(os.path.dirname(sys.executable), "mlflow-sync")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    return subprocess.run([_script(), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "80"})


def _assert_one_error_line(stderr: str, words: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("error: ") and words in lines[0], lines[0]
    assert "Traceback" not in stderr and not lines[0].startswith("error: unexpected ")
    assert "Usage:" not in stderr


@pytest.mark.parametrize("args, words", PARSER_ERRORS, ids=ERROR_IDS)
def test_parser_errors_are_one_line_exit_2_console_script(args, words):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    _assert_one_error_line(result.stderr, words)
    assert HINTS.get(tuple(args), "") in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("args, words", PARSER_ERRORS, ids=ERROR_IDS)
def test_parser_errors_are_one_line_exit_2_in_process(args, words, capsys):
    assert main(args) == 2
    captured = capsys.readouterr()
    _assert_one_error_line(captured.err, words)
    assert HINTS.get(tuple(args), "") in captured.err


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "mlflow_sync", "migrate", "--bogus"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    _assert_one_error_line(result.stderr, "error: no such option: --bogus")


@pytest.mark.parametrize("args", BARE_GROUPS, ids=lambda v: " ".join(["mlflow-sync", *v]))
def test_bare_group_prints_help_and_exits_0(args, capsys):
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "Usage: mlflow-sync" in result.stdout and "Commands" in result.stdout
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "Usage: mlflow-sync" in captured.out


def test_help_still_exits_0():
    result = run_cli("migrate", "--help")
    assert result.returncode == 0 and result.stderr == "" and "Usage: mlflow-sync migrate" in result.stdout


class _Color(str, enum.Enum):
    red = "red"
    blue = "blue"


def test_bad_choice_is_one_line_exit_2(capsys):
    """No command has a choice option today; mount one for the test and go through main()."""

    def probe(color: _Color = typer.Option(_Color.red, "--color")) -> None:
        """Probe."""

    app.command("choice-probe")(probe)
    try:
        assert main(["choice-probe", "--color", "green"]) == 2
    finally:
        app.registered_commands.pop()
    captured = capsys.readouterr()
    _assert_one_error_line(captured.err, "error: invalid value for '--color'")
    assert "green" in captured.err and "try 'mlflow-sync choice-probe --help'" in captured.err


def test_parser_errors_never_show_a_traceback_even_after_verbose(capsys):
    """--verbose of an earlier in-process run must not leak into a later parser error."""
    from mlflow_sync import output

    output.state.verbose = True
    try:
        assert main(["migrate", "--bogus"]) == 2
    finally:
        output.state.verbose = False
    _assert_one_error_line(capsys.readouterr().err, "no such option: --bogus")


def test_parser_error_masks_secrets(capsys):
    assert main(["info", "--max-rps", "http://alice:pw-secret-91@host"]) == 2
    err = capsys.readouterr().err
    _assert_one_error_line(err, "invalid value for '--max-rps'")
    assert "pw-secret-91" not in err


# --- help that can be pasted -------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _command_tree(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _command_tree(sub, (*path, name))


COMMANDS = list(_command_tree(typer.main.get_command(app)))


def _example_lines(help_text: str) -> list[str]:
    """Lines of the docstring's fenced code blocks, and any line that starts with `mlflow-sync`."""
    lines, fenced = [], False
    for line in (help_text or "").splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
        elif fenced and line.strip() or line.strip().startswith("mlflow-sync "):
            lines.append(line)
    return lines


def test_the_tree_walk_sees_every_command():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "info", "import", "validate", "snapshot", "snapshot restore", "convert hf-tarball"} <= names


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(("mlflow-sync", *p)) for p, _ in COMMANDS])
def test_help_examples_can_be_pasted(path, command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # a standard terminal: examples must not wrap
    assert main([*path, "--help"]) == 0
    out = [ANSI.sub("", line) for line in capsys.readouterr().out.splitlines()]
    stripped = [line.strip() for line in out]
    examples = _example_lines(command.help)
    if not hasattr(command, "commands"):  # groups may go without examples, commands may not
        assert any(line.strip().startswith("mlflow-sync ") for line in examples), "no example in --help"
    cursor = 0
    where: list[int] = []
    for line in examples:
        assert line.strip() in stripped[cursor:], f"not verbatim in --help: {line.strip()!r}\n" + "\n".join(out)
        cursor = stripped.index(line.strip(), cursor)
        where.append(cursor)
        cursor += 1
    for i, line in enumerate(examples[:-1]):
        if line.rstrip().endswith("\\"):
            assert where[i + 1] == where[i] + 1, f"continuation of {line.strip()!r} is not the next line"
            indent = lambda s: len(s) - len(s.lstrip())  # noqa: E731
            assert (indent(out[where[i + 1]]) - indent(out[where[i]])
                    == indent(examples[i + 1]) - indent(line)), "continuation indentation lost"
    # fenced examples are a code block: indented past the prose, never flush-left with it
    prose_indent = min(len(line) - len(line.lstrip()) for line in out if line.strip().startswith("Usage:"))
    for index in where:
        assert len(out[index]) - len(out[index].lstrip()) > prose_indent, out[index]
