"""One mapping from what a service refuses to the HTTP error in OpenAI's shape (api/service_errors.py)."""

from __future__ import annotations

from gateway.api.service_error_handler import gateway_error
from gateway.services.billing import StripeNotConfigured
from gateway.services.plans import PlanConflict, PlanNotFound
from gateway.services.service_errors import Conflict, InvalidInput, NotFound, ServiceError
from gateway.services.usage import RangeError


def test_each_kind_of_refusal_has_its_status_type_and_code() -> None:
    cases = [
        (NotFound("key 'k' not found"), 404, "invalid_request_error", "not_found", None),
        (PlanNotFound("plan 'p' not found"), 404, "invalid_request_error", "not_found", None),
        (Conflict("organisation 'a' exists"), 409, "invalid_request_error", "conflict", None),
        (PlanConflict("plan 'p' is assigned"), 409, "invalid_request_error", "conflict", None),
        (InvalidInput("rpm must be ...", param="rpm"), 400, "invalid_request_error", None, "rpm"),
        (RangeError("end must be after start"), 400, "invalid_request_error", "invalid_range", "start"),
        (StripeNotConfigured("Stripe is not configured"), 503, "service_unavailable", "not_configured", None),
        (ServiceError("something else"), 400, "invalid_request_error", None, None),
    ]
    for exc, status, kind, code, param in cases:
        error = gateway_error(exc)
        assert (error.status, error.type, error.code, error.param) == (status, kind, code, param), exc
        assert error.body()["error"]["message"] == str(exc)


def test_invalid_input_is_still_a_value_error() -> None:
    assert isinstance(InvalidInput("x"), ValueError) and isinstance(RangeError("x"), ValueError)
