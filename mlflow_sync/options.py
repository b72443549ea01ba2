"""Option types shared by every command, declared once (``Annotated``, as in the ``hf`` CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML profile (see configs/); options given here override it.",
                 show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON for machines.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="More logging; tracebacks on errors.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would be done; write nothing.")]

SourceOpt = Annotated[
    str | None,
    typer.Option("--source", "-s", help="Source: http(s) tracking URI, database URI (sqlite:///, postgresql://, "
                 "mysql://) or SageMaker ARN.", show_default=False),
]
TargetOpt = Annotated[
    str | None,
    typer.Option("--target", "-t", help="Target: http(s) tracking URI, database URI or SageMaker ARN.",
                 show_default=False),
]
MaxRpsOpt = Annotated[
    float | None,
    typer.Option("--max-rps", min=0.01, help="Request budget per server, requests/second (e.g. 25 for a "
                 "Small SageMaker tracking server).", show_default=False),
]
WorkersOpt = Annotated[int | None, typer.Option("--workers", min=1, max=64, help="Parallel workers.",
                                                   show_default=False)]
SyncOverlapOpt = Annotated[
    float | None,
    typer.Option("--overlap-minutes", min=0, max=24 * 60, help="Also look at runs started or ended this long before "
                 "the previous sync began (clients whose clocks run behind). Default 10 (profile: sync.overlap_minutes).",
                 show_default=False),
]
SkipKindOpt = Annotated[
    list[str] | None,
    typer.Option("--skip-kind", help="Leave this object kind out on purpose, e.g. deleted-runs, traces, "
                 "gateway-secrets (repeatable; profile: skip_kinds). Any kind the source holds and the job does not "
                 "carry fails the job unless skipped here.", show_default=False),
]


def parse_assignments(values: list[str] | None, option: str, form: str, *, empty_value: bool = False) -> dict[str, str]:
    """``["a=b", ...]`` of a repeatable option into ``{"a": "b"}``; anything else is a usage error."""
    from mlflow_sync.errors import UsageError

    parsed = {}
    for value in values or []:
        name, sep, assigned = value.partition("=")
        name = name.strip()
        if not sep or not name or not (assigned or empty_value):
            raise UsageError(f"{option} {value!r} must look like {form}")
        parsed[name] = assigned
    return parsed
