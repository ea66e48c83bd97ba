"""Response builders in the documented error shapes.

CC answers errors as a JSON *array* of ``{"error_key", "error_message"}`` objects, except 401 and
429, which are a *single* object [SPEC-CS APIErrorSchema / AuthorizationErrorSchema; DOC-RATE].
The OAuth server answers ``{"error", "error_description"}`` [SPEC-CS OAuthError].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from werkzeug.wrappers import Response

JSON = "application/json"

UNAUTHORIZED_BODY: dict[str, str] = {"error_key": "unauthorized", "error_message": "Unauthorized"}


def json_reply(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response serialised with orjson."""
    return Response(orjson.dumps(body), status=status, headers=dict(headers or {}), content_type=JSON)


def api_error(status: int, key: str, message: str) -> Response:
    """The general error shape: an array with one error object."""
    return json_reply(status, [{"error_key": key, "error_message": message}])


def api_errors(status: int, errors: list[tuple[str, str]]) -> Response:
    """The general error shape with several errors."""
    return json_reply(status, [{"error_key": k, "error_message": m} for k, m in errors])


def single_error(status: int, key: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """The single-object shape used for 401 and 429."""
    return json_reply(status, {"error_key": key, "error_message": message}, headers)


def unauthorized() -> Response:
    """401 for a missing, unknown or expired access token."""
    return json_reply(401, UNAUTHORIZED_BODY)


def oauth_error(status: int, error: str, description: str) -> Response:
    """An OAuth server error; ``no-store`` as RFC 6749 requires for token responses."""
    return json_reply(
        status,
        {"error": error, "error_description": description},
        {"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def validation_error(message: str) -> Response:
    """400 with the spec's example key ``contacts.api.validation.error``."""
    return api_error(400, "contacts.api.validation.error", message)


def not_found(message: str) -> Response:
    """404 with the key from the response-codes guide (``contacts.api.not_found``)."""
    return api_error(404, "contacts.api.not_found", message)
