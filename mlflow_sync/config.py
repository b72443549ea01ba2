"""YAML profiles (configs/*.yaml), validated with pydantic.

Command-line options override profile values; a bad key or value fails with one line that
names the file and the key.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlflow_sync.errors import UsageError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySettings(_Strict):
    """How hard to try before an object is reported as failed."""

    max_attempts: int = Field(10, ge=1, le=100)
    initial_wait: float = Field(0.5, gt=0, description="first backoff, doubled each retry (jittered)")
    max_wait: float = Field(30.0, gt=0, description="cap of one wait, also of an honoured Retry-After")
    max_total_seconds: float = Field(600.0, gt=0, description="give up on one request after this long")
    timeout: float = Field(120.0, gt=0, description="seconds to wait for one response")


DEFAULT_SYNC_OVERLAP_MINUTES = 10.0


class SyncSettings(_Strict):
    """How ``mlflow-sync sync`` looks back (see docs/disaster-recovery.md)."""

    overlap_minutes: float = Field(
        DEFAULT_SYNC_OVERLAP_MINUTES, ge=0, le=24 * 60,
        description="each sync also looks at runs started or ended this long before the previous sync began, "
                    "for clients whose clocks run behind the sync host's; larger costs more reads per sync")


class ServerSettings(_Strict):
    uri: str | None = None
    registry_uri: str | None = None
    max_rps: float | None = Field(None, gt=0, description="client-side request budget for this server")


class Profile(_Strict):
    """A named set of defaults for a job (see configs/)."""

    description: str | None = None
    source: ServerSettings = ServerSettings()
    target: ServerSettings = ServerSettings()
    retry: RetrySettings = RetrySettings()
    sync: SyncSettings = SyncSettings()
    workers: int = Field(8, ge=1, le=64, description="parallel workers, all inside the request budget")
    skip_kinds: list[str] = Field(default_factory=list, description="object kinds left out on purpose (--skip-kind)")

    @field_validator("skip_kinds")
    @classmethod
    def _known_kinds(cls, kinds: list[str]) -> list[str]:
        from mlflow_sync.inventory import parse_skip_kinds

        try:
            return sorted(parse_skip_kinds(kinds))
        except UsageError as exc:
            raise ValueError(str(exc).replace("--skip-kind", "skip_kinds")) from None

    def skipped(self, extra) -> frozenset[str]:
        """The profile's skipped kinds plus the command line's ``--skip-kind`` values."""
        from mlflow_sync.inventory import parse_skip_kinds

        return frozenset(self.skip_kinds) | parse_skip_kinds(extra)


def _key_path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def load_profile(path: str | Path | None) -> Profile:
    """Read and check a profile; no path means the built-in defaults."""
    if path is None:
        return Profile()
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {str(path)!r} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"config file {str(path)!r} is not valid YAML{where}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError(f"config file {str(path)!r} must be a mapping of keys to values")
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = _key_path(first["loc"])
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise UsageError(f"config file {str(path)!r}: {key}: {message}{more}") from None
