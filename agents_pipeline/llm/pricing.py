"""Estimated LLM cost in USD, so each run can record what it roughly cost the workspace.

Prices are list prices per 1M tokens (standard tier, no cached-input discount); they
are estimates for dashboards, not invoices. A model missing from the table costs 0.0
and is logged once, so an unknown price is visible rather than silently guessed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection

from pydantic import BaseModel

logger = logging.getLogger(__name__)

OFFLINE_MODEL = "offline"


class ModelPrice(BaseModel):
    """USD per 1M tokens, prompt and completion priced separately."""

    prompt_per_1m: float
    completion_per_1m: float


PRICES: dict[str, ModelPrice] = {
    "gpt-4o-mini": ModelPrice(prompt_per_1m=0.15, completion_per_1m=0.60),
    "gpt-4o": ModelPrice(prompt_per_1m=2.50, completion_per_1m=10.00),
    "gpt-4.1-mini": ModelPrice(prompt_per_1m=0.40, completion_per_1m=1.60),
    "gpt-4.1": ModelPrice(prompt_per_1m=2.00, completion_per_1m=8.00),
    "gpt-3.5-turbo": ModelPrice(prompt_per_1m=0.50, completion_per_1m=1.50),
}

# Dated snapshots: "gpt-4o-2024-08-06", "gpt-3.5-turbo-0125".
_SNAPSHOT = re.compile(r"-\d{4}(?:-\d{2}-\d{2})?")

_warned: set[str] = set()


def _known_name(model: str) -> str | None:
    """The PRICES name ``model`` is, also as a dated snapshot or behind a ``provider/`` prefix."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    for known in PRICES:
        if name == known or (name.startswith(known) and _SNAPSHOT.fullmatch(name[len(known) :])):
            return known
    return None


def price_for(model: str) -> ModelPrice | None:
    """The price of ``model``, also for its dated snapshots and behind a ``provider/`` prefix."""
    known = _known_name(model)
    return PRICES[known] if known is not None else None


OTHER_MODEL = "other"


def model_label(model: str, extra: Collection[str] = ()) -> str:
    """The Prometheus label of a model: a bounded set, whatever an agent version names.

    A version's ``model`` is free text of a workspace; as a label, each new spelling would
    be a new series for good. Priced models are labelled by their PRICES name (snapshots
    and ``provider/`` prefixes folded in), ``offline`` and the operator's ``extra`` names as
    they are (compared without case and surrounding spaces); anything else is ``other``.
    """
    if model == OFFLINE_MODEL:
        return OFFLINE_MODEL
    known = _known_name(model)
    if known is not None:
        return known
    name = model.strip().lower()
    for allowed in extra:
        if name == allowed.strip().lower():
            return allowed.strip()
    return OTHER_MODEL


def estimate_cost_usd(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """Estimated USD cost of one call; 0.0 for the offline responder and unknown models."""
    if model == OFFLINE_MODEL:
        return 0.0
    price = price_for(model)
    if price is None:
        if model not in _warned:
            _warned.add(model)
            logger.warning("no price known for model %r: its cost is recorded as 0.0", model)
        return 0.0
    cost = (
        prompt_tokens * price.prompt_per_1m + completion_tokens * price.completion_per_1m
    ) / 1_000_000
    return round(cost, 8)
