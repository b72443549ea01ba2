"""Reading MLflow's paged listings, and writing the values of its filter strings."""

from __future__ import annotations

from collections.abc import Callable, Iterator


def pages(fetch) -> Iterator:
    """Yield every page of a paged MLflow client search; ``fetch(page_token)`` returns a PagedList."""
    token = None
    while True:
        page = fetch(token)
        yield page
        token = page.token
        if not token:
            return


def paged(fetch) -> Iterator:
    """Yield every item of a paged MLflow client search; ``fetch(page_token)`` returns a PagedList."""
    for page in pages(fetch):
        yield from page


def paged_json(call: Callable[[dict], dict], key: str, body: dict) -> Iterator[dict]:
    """Yield every item under ``key`` of a paged REST listing; ``call(body)`` returns one page's JSON."""
    token = None
    while True:
        page = call({**body, **({"page_token": token} if token else {})})
        yield from page.get(key) or []
        token = page.get("next_page_token")
        if not token:
            return


def quoted(value: str) -> str:
    """``value`` as a literal of an MLflow filter string. MLflow's parser strips the quotes and keeps
    everything between them as is (no escapes), so a value is quoted with the quote it lacks; one
    holding both cannot be written as a literal (ValueError, reported against its object)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"{value!r} holds both quote characters: an MLflow filter string cannot name it")
