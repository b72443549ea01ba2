"""Unit tests of option parsing (validate --checks, OLD=NEW assignments, --skip-kind) and of paging."""

from __future__ import annotations

import json

import pytest
from mlflow.utils.search_utils import SearchEvaluationDatasetsUtils, SearchModelVersionUtils

from mlflow_sync.errors import UsageError
from mlflow_sync.inventory import CARRIED_KINDS, SKIPPABLE_KINDS, UNCARRIED_KINDS, parse_skip_kinds
from mlflow_sync.options import parse_assignments
from mlflow_sync.paging import paged, paged_json, quoted
from mlflow_sync.validate.options import CHECKS, DEFAULT_IGNORED_TAGS, ValidateOptions, parse_checks

# --- validate --checks --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   ", "all", " all "])
def test_no_checks_or_all_means_every_check(value):
    assert parse_checks(value) == CHECKS


@pytest.mark.parametrize("value, checks", [
    ("runs", ("runs",)),
    ("runs,artifacts", ("runs", "artifacts")),
    ("artifacts,runs", ("artifacts", "runs")),
    (" runs , traces ", ("runs", "traces")),
    ("logged-models,registered-models,evaluation-datasets", ("logged_models", "registered_models",
                                                             "evaluation_datasets")),
    ("logged_models", ("logged_models",)),
    ("runs,,prompts,", ("runs", "prompts")),
    ("Runs,TRACES", ("runs", "traces")),
])
def test_parse_checks(value, checks):
    assert parse_checks(value) == checks
    assert ValidateOptions(checks=parse_checks(value)).checks == checks


@pytest.mark.parametrize("value", [",", " , ,"])
def test_checks_that_name_nothing_are_refused_not_read_as_compare_nothing(value):
    with pytest.raises(UsageError, match="names no check"):
        parse_checks(value)


def test_every_check_name_is_accepted_in_both_spellings():
    for check in CHECKS:
        assert ValidateOptions(checks=parse_checks(check.replace("_", "-"))).checks == (check,)


@pytest.mark.parametrize("value, unknown", [
    ("bogus", "bogus"),
    ("runs,bogus", "bogus"),
    ("run", "run"),
    ("all,runs", "all"),
    ("metrics", "metrics"),
])
def test_unknown_checks_are_a_usage_error_naming_them(value, unknown):
    with pytest.raises(UsageError) as info:
        ValidateOptions(checks=parse_checks(value))
    message = str(info.value)
    assert f"unknown check(s) {unknown}:" in message
    assert all(check in message for check in CHECKS)  # the choices are listed
    assert info.value.exit_code == 2


def test_unknown_checks_are_all_named_sorted():
    with pytest.raises(UsageError, match=r"unknown check\(s\) alpha, zulu:"):
        ValidateOptions(checks=("zulu", "runs", "alpha"))


def test_validate_command_rejects_bad_checks_before_opening_any_side(monkeypatch):
    from mlflow_sync.validate import cli, sides

    def no_side(*args, **kwargs):
        raise AssertionError("a side was opened before the options were checked")

    monkeypatch.setattr("mlflow_sync.output.setup", lambda **kwargs: None)
    monkeypatch.setattr(sides, "open_side", no_side)
    with pytest.raises(UsageError, match="bogus"):
        cli.validate_command(source="/nowhere/a", target="/nowhere/b", checks="runs,bogus")


def test_validate_command_passes_parsed_checks_on(monkeypatch):
    from mlflow_sync.validate import cli, sides

    class Opened(Exception):
        pass

    def capture(profile, role, location, options, **kwargs):
        raise Opened(options)

    monkeypatch.setattr("mlflow_sync.output.setup", lambda **kwargs: None)
    monkeypatch.setattr(sides, "open_side", capture)
    with pytest.raises(Opened) as info:
        cli.validate_command(source="/nowhere/a", target="/nowhere/b", checks="runs, logged-models",
                             float_tolerance=0.5, ignore_tag=["team.*"])
    options = info.value.args[0]
    assert options.checks == ("runs", "logged_models")
    assert options.float_tolerance == 0.5
    assert options.ignore_tags == ("team.*",)


def test_validate_options_other_checks():
    with pytest.raises(UsageError, match="--float-tolerance"):
        ValidateOptions(float_tolerance=-1e-9)
    with pytest.raises(UsageError, match="--workers"):
        ValidateOptions(workers=0)
    assert ValidateOptions(workers=1).workers == 1


def test_validate_options_wants_and_tags():
    options = ValidateOptions(checks=("runs", "traces"), ignore_tags=("team.*",))
    assert options.wants("runs") and options.wants("traces")
    assert not options.wants("artifacts")
    assert options.ignored_tags == DEFAULT_IGNORED_TAGS + ("team.*",)
    assert ValidateOptions().ignored_tags == DEFAULT_IGNORED_TAGS
    assert all(ValidateOptions().wants(check) for check in CHECKS)


def test_skipped_checks_are_the_skip_kinds_that_are_checks():
    options = ValidateOptions(skip_kinds=frozenset({"traces", "deleted_runs", "webhooks", "prompts"}))
    assert options.skipped_checks == frozenset({"traces", "prompts"})


@pytest.mark.parametrize("skip_kinds, stage, compared", [
    (frozenset(), "deleted", True),
    (frozenset(), "active", True),
    (frozenset({"deleted_runs"}), "deleted", False),
    (frozenset({"deleted_runs"}), "active", True),
    (frozenset({"traces"}), "deleted", True),
])
def test_compares_run(skip_kinds, stage, compared):
    class Run:
        lifecycle_stage = stage

    assert ValidateOptions(skip_kinds=skip_kinds).compares_run(Run()) is compared


def test_validate_options_to_dict():
    options = ValidateOptions(checks=("runs", "traces"), ignore_tags=("a.*",), ignore_paths=("exp/*",),
                              skip_kinds=frozenset({"traces", "prompts"}), float_tolerance=0.25)
    data = options.to_dict()
    assert data["checks"] == ["runs", "traces"]
    assert data["ignore_tags"] == ["a.*"]
    assert data["ignore_paths"] == ["exp/*"]
    assert data["skip_kinds"] == ["prompts", "traces"]
    assert data["float_tolerance"] == 0.25
    json.dumps(data)


# --- OLD=NEW assignments ------------------------------------------------------------------------


def test_parse_assignments():
    assert parse_assignments(None, "--rename-model", "OLD=NEW") == {}
    assert parse_assignments([], "--rename-model", "OLD=NEW") == {}
    assert parse_assignments(["a=b", "c=d"], "--rename-model", "OLD=NEW") == {"a": "b", "c": "d"}


def test_parse_assignments_splits_at_the_first_equals_sign():
    assert parse_assignments(["expr=a=b", "x==y"], "--default", "NAME=VALUE") == {"expr": "a=b", "x": "=y"}


def test_parse_assignments_strips_the_name_but_not_the_value():
    assert parse_assignments(["  old name =new name "], "--rename-experiment", "OLD=NEW") == {
        "old name": "new name "}


@pytest.mark.parametrize("value", ["noequals", "=b", "  =b", "a=", ""])
def test_parse_assignments_rejects_malformed_values(value):
    with pytest.raises(UsageError) as info:
        parse_assignments(["ok=fine", value], "--rename-model", "OLD=NEW")
    # messages are one line with whitespace runs collapsed
    assert str(info.value) == " ".join(f"--rename-model {value!r} must look like OLD=NEW".split())
    assert info.value.exit_code == 2


def test_parse_assignments_empty_value_when_allowed():
    assert parse_assignments(["HFTask="], "--default", "NAME=VALUE", empty_value=True) == {"HFTask": ""}
    with pytest.raises(UsageError):
        parse_assignments(["=x"], "--default", "NAME=VALUE", empty_value=True)  # a name is still required
    with pytest.raises(UsageError):
        parse_assignments(["HFTask"], "--default", "NAME=VALUE", empty_value=True)


# --- --skip-kind --------------------------------------------------------------------------------


def test_parse_skip_kinds_empty():
    assert parse_skip_kinds(None) == frozenset()
    assert parse_skip_kinds([]) == frozenset()


@pytest.mark.parametrize("value, kind", [
    ("gateway-secrets", "gateway_secrets"),
    ("gateway_secrets", "gateway_secrets"),
    (" Gateway-Secrets ", "gateway_secrets"),
    ("deleted-runs", "deleted_runs"),
    ("TRACES", "traces"),
    ("mcp-servers", "mcp_servers"),
])
def test_parse_skip_kinds_normalises(value, kind):
    assert parse_skip_kinds([value]) == frozenset({kind})


def test_parse_skip_kinds_accepts_every_skippable_kind_and_deduplicates():
    values = [k.replace("_", "-") for k in SKIPPABLE_KINDS] + list(SKIPPABLE_KINDS)
    assert parse_skip_kinds(values) == frozenset(SKIPPABLE_KINDS)
    assert set(UNCARRIED_KINDS) <= set(SKIPPABLE_KINDS)


@pytest.mark.parametrize("value", ["experiments", "runs", "bogus", "", "gateway secrets"])
def test_parse_skip_kinds_rejects_unknown_or_unskippable_kinds(value):
    with pytest.raises(UsageError) as info:
        parse_skip_kinds(["traces", value])
    message = str(info.value)
    assert message.startswith(f"--skip-kind {value!r}: unknown kind; choose from ")
    assert "gateway-secrets" in message and "deleted-runs" in message
    choices = message.split("choose from ", 1)[1].split(", ")
    assert "experiments" not in choices and "runs" not in choices
    assert set(CARRIED_KINDS[:2]).isdisjoint(SKIPPABLE_KINDS)


# --- paged / paged_json -------------------------------------------------------------------------


class Page(list):
    def __init__(self, items, token):
        super().__init__(items)
        self.token = token


def test_paged_follows_tokens_until_none():
    pages = {None: Page([1, 2], "t1"), "t1": Page([3], "t2"), "t2": Page([4, 5], None)}
    calls = []

    def fetch(token):
        calls.append(token)
        return pages[token]

    assert list(paged(fetch)) == [1, 2, 3, 4, 5]
    assert calls == [None, "t1", "t2"]


def test_paged_stops_on_an_empty_token_and_goes_on_past_an_empty_page():
    pages = {None: Page([], "t1"), "t1": Page(["a"], "")}
    calls = []

    def fetch(token):
        calls.append(token)
        return pages[token]

    assert list(paged(fetch)) == ["a"]
    assert calls == [None, "t1"]


def test_paged_is_lazy():
    calls = []

    def fetch(token):
        calls.append(token)
        return Page([token or "first"], f"{token or ''}x")

    items = paged(fetch)
    assert calls == []
    assert next(items) == "first"
    assert calls == [None]
    assert next(items) == "x"
    assert calls == [None, "x"]


def test_paged_json_sends_the_body_and_the_token():
    pages = [{"runs": [{"id": 1}], "next_page_token": "p2"},
             {"runs": [{"id": 2}, {"id": 3}], "next_page_token": "p3"},
             {"runs": [{"id": 4}]}]
    bodies = []

    def call(body):
        bodies.append(body)
        return pages[len(bodies) - 1]

    body = {"experiment_ids": ["1"], "max_results": 2}
    assert [r["id"] for r in paged_json(call, "runs", body)] == [1, 2, 3, 4]
    assert bodies == [{"experiment_ids": ["1"], "max_results": 2},
                      {"experiment_ids": ["1"], "max_results": 2, "page_token": "p2"},
                      {"experiment_ids": ["1"], "max_results": 2, "page_token": "p3"}]
    assert body == {"experiment_ids": ["1"], "max_results": 2}  # the caller's body is not changed


@pytest.mark.parametrize("page", [{}, {"runs": None}, {"runs": []}, {"next_page_token": ""}])
def test_paged_json_empty_listing(page):
    calls = []

    def call(body):
        calls.append(body)
        return page

    assert list(paged_json(call, "runs", {})) == []
    assert calls == [{}]


def test_paged_json_goes_on_past_a_page_without_items():
    pages = [{"next_page_token": "p2"}, {"models": [{"name": "m"}]}]
    bodies = []

    def call(body):
        bodies.append(body)
        return pages[len(bodies) - 1]

    assert list(paged_json(call, "models", {"filter": "x"})) == [{"name": "m"}]
    assert bodies == [{"filter": "x"}, {"filter": "x", "page_token": "p2"}]


# --- quoted -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["plain", "", "with space", 'say "hi"', "ünïcode"])
def test_quoted_plain_values(value):
    assert quoted(value) == f"'{value}'"


@pytest.mark.parametrize("value", ["it's", "a\\b", "x\\", "''", "x' OR name = 'y"])
def test_quoted_value_stays_one_literal(value):
    """Whatever the value holds, MLflow reads one comparison: the value cannot end the literal."""
    for parser, left in ((SearchModelVersionUtils, "name"), (SearchEvaluationDatasetsUtils, "tags.src")):
        parsed = parser.parse_search_filter(f"{left} = {quoted(value)}")
        assert len(parsed) == 1 and parsed[0]["comparator"] == "="


@pytest.mark.parametrize("value", ["plain", "with space", 'say "hi"', "ünïcode"])
def test_mlflow_reads_back_the_quoted_value(value):
    for parser, left in ((SearchModelVersionUtils, "name"), (SearchEvaluationDatasetsUtils, "tags.src")):
        assert parser.parse_search_filter(f"{left} = {quoted(value)}")[0]["value"] == value


@pytest.mark.parametrize("value", ["it's", "a\\b"])
def test_mlflow_reads_back_quoted_values_with_quotes_and_backslashes(value):
    for parser, left in ((SearchModelVersionUtils, "name"), (SearchEvaluationDatasetsUtils, "tags.src")):
        assert parser.parse_search_filter(f"{left} = {quoted(value)}")[0]["value"] == value
