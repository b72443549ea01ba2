"""Reading a server's model registry without the client library's own filters.

The MLflow 3.x ``MlflowClient.search_registered_models()`` adds a filter excluding prompts
(``tags.`mlflow.prompt.is_prompt` != 'true'``). A 2.x server answers that filter with an empty
page, so a 3.x client sees no registered models on a 2.x server at all (upstream defect
"registry-hidden-from-3x-client", migrate/upstream.py). The registry *store* below the client
sends exactly what it is given, so every reader here lists through it: models without a filter
(a 3.x server leaves prompts out by itself, a 2.x server has none), prompts with the one filter
a 3.x server answers with prompts. Both are checked by their tag.
"""

from __future__ import annotations

from collections.abc import Iterator

from mlflow_sync.paging import paged

PROMPT_TAG = "mlflow.prompt.is_prompt"
PAGE = 1000


def is_prompt(model) -> bool:
    # RegisteredModel.tags hides this tag; _tags holds every tag the server sent.
    return (getattr(model, "_tags", None) or model.tags or {}).get(PROMPT_TAG, "").lower() == "true"


PROMPTS_FILTER = f"tags.`{PROMPT_TAG}` = 'true'"


def registered_models(client, *, prompts: bool) -> Iterator:
    """Every registered model (``prompts=False``) or every prompt (``prompts=True``)."""
    store = client._get_registry_client().store
    condition = PROMPTS_FILTER if prompts else None
    found = paged(lambda token: store.search_registered_models(condition, PAGE, None, token))
    return (model for model in found if is_prompt(model) == prompts)


def all_registered_models(client) -> Iterator:
    """Every registered model, then every prompt."""
    yield from registered_models(client, prompts=False)
    yield from registered_models(client, prompts=True)


def aliases_of(model) -> dict:
    """{alias: version} of a registered model or prompt (some MLflow versions hold a dict, others a list)."""
    aliases = model.aliases
    if isinstance(aliases, dict):
        return dict(aliases)
    return {alias.alias: alias.version for alias in aliases or []}
