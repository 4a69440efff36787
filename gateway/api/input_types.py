"""Constrained input types shared by the admin, partner and usage routers: validated once, where the
request is parsed, so that what reaches SQL always fits it (no NUL in a text column, no integer beyond
its column, no moment that overflows date arithmetic). A value outside them is a 400 in OpenAI's shape."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, Field, StringConstraints

from gateway.services.plans import CONCURRENCY_MAX, LIMIT_MAX
from gateway.services.workers import check_worker_url

# Moments the gateway stores or reports: from the Unix epoch to well before datetime.max, so that the
# range arithmetic of the services (a week back, the next hour) can never overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def printable(value: str) -> str:
    """``value`` unless it holds a control character (NUL, newline, escape ...)."""
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (NUL, newline, tab ...)")
    return value


def sane_moment(value: datetime) -> datetime:
    """``value`` if it lies between 1970 and 9999 (a naive moment is taken as UTC)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not EARLIEST <= aware < LATEST:
        raise ValueError(f"must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    return value


# A name of an organisation, key, plan or model (a column of 200 characters).
Name = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(printable)]
# A model's served name or alias, as an allow-list names it.
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True),
                      AfterValidator(printable)]

# A worker's base URL.
WorkerUrl = Annotated[str, StringConstraints(min_length=1, max_length=500), AfterValidator(check_worker_url)]
# An id (or, for plans, a name) in a URL path or a query parameter.
PathId = Annotated[str, Path(min_length=1, max_length=200), AfterValidator(printable)]
QueryId = Annotated[Annotated[str, AfterValidator(printable)] | None, Query(max_length=200)]
# A key id in a request body ("" where the field means "none").
KeyIdText = Annotated[str, StringConstraints(max_length=40), AfterValidator(printable)]
# A rate limit: requests or tokens (BIGINT), requests in flight (INTEGER).
Limit = Annotated[int, Field(ge=1, le=LIMIT_MAX)]
ConcurrencyLimit = Annotated[int, Field(ge=1, le=CONCURRENCY_MAX)]
# A moment in a body or a query.
Moment = Annotated[datetime, AfterValidator(sane_moment)]
