"""Validate recorded HTTP exchanges against the official Constant Contact v3 OpenAPI spec.

Shared by the sandbox tests and the exporter tests. The spec (1 MB of YAML) is parsed once per process.

    from tests.spec import requires_spec, validate_request, validate_response
    validate_request(rec)   # raises SpecMismatch (an AssertionError) on a mismatch
    validate_response(rec)

``rec`` is anything shaped like ``sandbox.RecordedExchange`` (method, path, query, headers, body,
status, response_headers, response_body). Recorded ``/v3/...`` paths are matched against the spec's
server ``https://api.cc.email/v3``.

Where the spec cannot judge, this module says so explicitly instead of passing silently:

* Error responses (4xx/5xx) are documented without a body schema, so openapi-core checks nothing in
  them. We check their bodies ourselves: 401 and 429 against ``AuthorizationErrorSchema`` (a single
  object, DOC-RATE), the rest against ``APIErrorSchema`` (an array).
* 429 (rate limit/quota) is documented only on the bulk-activity POSTs, yet the rate limits apply to
  every call (DOC-RATE); 415 is documented only on a few operations, yet every JSON endpoint answers it.
  For these two statuses an undocumented response is accepted after the body check above.
* The OAuth endpoints are not paths of the spec (they live on authz.constantcontact.com). Token and
  device responses are checked against the spec's component schemas ``AccessTokenResponse``,
  ``OAuthError`` and ``DeviceFlowResponse``; token requests against the documented form parameters.
* ``security`` (oauth2) is not enforced by openapi-core ("Unsupported scheme type"); we require a
  ``Bearer`` Authorization header on /v3 requests ourselves.
* Known spec bug: ``remove_list_memberships`` has ``maxItems: 0`` on ``list_ids`` and the source id
  arrays, so every real request fails request validation (tests pin this, see test_sandbox_spec.py).
"""

from __future__ import annotations

import functools
import re
import warnings
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl

import orjson
import pytest
import yaml
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPEC_PATH = Path(__file__).resolve().parents[1].parent / "shared/reference/constant-contact-v3-openapi.yaml"
SPEC_MISSING_REASON = f"the official Constant Contact OpenAPI spec is not at {SPEC_PATH}"
requires_spec = pytest.mark.skipif(not SPEC_PATH.exists(), reason=SPEC_MISSING_REASON)

SPEC_HOST = "https://api.cc.email"  # + the recorded path "/v3/..." = the spec's server URL + path
OAUTH_PREFIX = "/oauth2/default/v1"
UNDOCUMENTED_BUT_EXPECTED = frozenset({415, 429})
TOKEN_GRANTS: dict[str, tuple[str, ...]] = {
    "authorization_code": ("code", "redirect_uri"),
    "refresh_token": ("refresh_token",),
    "urn:ietf:params:oauth:grant-type:device_code": ("device_code",),
}


class SpecMismatch(AssertionError):
    """A request or response that does not match the spec (an AssertionError, so pytest shows it plainly)."""


class Exchange(Protocol):
    """What the validators read from a recorded exchange (read-only, so frozen dataclasses fit)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query(self) -> str: ...
    @property
    def headers(self) -> dict[str, str]: ...
    @property
    def body(self) -> bytes: ...
    @property
    def status(self) -> int | None: ...
    @property
    def response_headers(self) -> dict[str, str]: ...
    @property
    def response_body(self) -> bytes: ...


@functools.cache
def spec_dict() -> dict[str, Any]:
    """The parsed spec (C YAML loader: about 0.3 s instead of several seconds)."""
    if not SPEC_PATH.exists():
        pytest.skip(SPEC_MISSING_REASON)
    with SPEC_PATH.open("rb") as fh:
        data: dict[str, Any] = yaml.load(fh, Loader=yaml.CSafeLoader)
    return data


@functools.cache
def openapi() -> Any:
    """The openapi-core ``OpenAPI`` object (the spec itself is checked once, about 1 s).

    openapi-core has no deserializer for ``text/csv`` (GET /contact_exports/{id}); without one it hands
    the raw bytes to the ``type: string`` schema and fails, so we register the plain-text one.
    """
    from openapi_core import Config, OpenAPI
    from openapi_core.deserializing.media_types.util import plain_loads

    config = Config(extra_media_type_deserializers={"text/csv": plain_loads})
    return OpenAPI.from_dict(spec_dict(), config=config)


@functools.cache
def _operations() -> list[tuple[re.Pattern[str], int, dict[str, Any]]]:
    """(path regex, number of templated segments, path item) for every spec path, static ones first."""
    out = []
    for template, item in spec_dict()["paths"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        out.append((re.compile(f"^/v3{pattern}$"), template.count("{"), item))
    return sorted(out, key=lambda entry: entry[1])


def _csv_enum_query(rec: Exchange) -> list[tuple[str, str]]:
    """Query pairs with comma lists in ``format: csv`` enum parameters reduced to their first value.

    The spec types e.g. ``include`` and ``status`` of GET /contacts as ``type: string, format: csv`` with
    an ``enum``: it means "a comma-separated list of these", but as JSON Schema the enum applies to the
    whole string, so ``include=custom_fields,list_memberships`` would be refused. We check every element
    against the enum here and let openapi-core see the first element only.
    """
    pairs = parse_qsl(rec.query, keep_blank_values=True)
    operation: dict[str, Any] = next(
        (item.get(rec.method.lower(), {}) for rx, _n, item in _operations() if rx.match(rec.path)), {}
    )
    csv_enums = {
        p["name"]: p["schema"]["enum"]
        for p in operation.get("parameters", [])
        if p.get("in") == "query" and p.get("schema", {}).get("format") == "csv" and "enum" in p["schema"]
    }
    out = []
    for name, value in pairs:
        if name in csv_enums and "," in value:
            items = [v.strip() for v in value.split(",")]
            bad = [v for v in items if v not in csv_enums[name]]
            if bad:
                raise SpecMismatch(f"{rec.method} {rec.path}: {name} has values outside the enum: {bad}")
            value = items[0]
        out.append((name, value))
    return out


@functools.cache
def _schema_validator(name: str) -> Any:
    from openapi_schema_validator import OAS30ReadValidator, oas30_format_checker

    # A root that holds the components, so "#/components/schemas/..." references resolve.
    root = {"components": spec_dict()["components"], "$ref": f"#/components/schemas/{name}"}
    return OAS30ReadValidator(root, format_checker=oas30_format_checker)


def validate_schema(name: str, data: Any) -> None:
    """Validate ``data`` against ``#/components/schemas/<name>``."""
    if name not in spec_dict()["components"]["schemas"]:
        raise KeyError(f"no schema {name!r} in the spec")
    errors = sorted(_schema_validator(name).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:5])
        raise SpecMismatch(f"does not match schema {name}: {details}")


def validate_request(rec: Exchange) -> None:
    """Check a request against the spec (/v3) or the documented token-request shape (OAuth)."""
    if _is_v3(rec.path):
        auth = _headers(rec.headers).get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise SpecMismatch(f"{rec.method} {rec.path}: no 'Authorization: Bearer <token>' header")
        _run_openapi(lambda: openapi().validate_request(_OpenAPIRequest(rec)), rec, "request")
    elif rec.path == f"{OAUTH_PREFIX}/token":
        _validate_token_request(rec)
    else:
        raise SpecMismatch(f"{rec.method} {rec.path} is not described by the spec")


def validate_response(rec: Exchange) -> None:
    """Check a response against the spec; error bodies against the documented error schemas."""
    if rec.status is None:
        raise SpecMismatch(f"{rec.method} {rec.path}: no response (the connection was reset)")
    if _is_v3(rec.path):
        _validate_v3_response(rec)
    elif rec.path == f"{OAUTH_PREFIX}/token":
        body = _json_body(rec)
        if rec.status == 200:
            validate_schema("AccessTokenResponse", body)
            missing = [k for k in ("access_token", "token_type", "expires_in") if k not in body]
            if missing:  # the schema marks nothing required; RFC 6749 and every client need these
                raise SpecMismatch(f"token response lacks {missing}")
        else:
            validate_schema("OAuthError", body)
            if not isinstance(body, dict) or "error" not in body:
                raise SpecMismatch("OAuth error response lacks 'error'")
    elif rec.path == f"{OAUTH_PREFIX}/device/authorize":
        validate_schema("DeviceFlowResponse" if rec.status == 200 else "OAuthError", _json_body(rec))
    else:
        raise SpecMismatch(f"{rec.method} {rec.path} is not described by the spec")


def validate_exchange(rec: Exchange) -> None:
    """Both of the above."""
    validate_request(rec)
    validate_response(rec)


# -- internals -------------------------------------------------------------------------------------
def _validate_v3_response(rec: Exchange) -> None:
    assert rec.status is not None
    if rec.status >= 400:
        body = _json_body(rec)
        if rec.status in (401, 429):
            if not isinstance(body, dict):
                raise SpecMismatch(f"{rec.status} body must be a single object, got {type(body).__name__}")
            validate_schema("AuthorizationErrorSchema", body)
            if not body.get("error_key") or not body.get("error_message"):
                raise SpecMismatch(f"{rec.status} body lacks error_key/error_message")
        else:
            validate_schema("APIErrorSchema", body)
            if not body:
                raise SpecMismatch(f"{rec.status} error array is empty")
    from openapi_core.templating.responses.exceptions import ResponseNotFound

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Unsupported scheme type")
            openapi().validate_response(_OpenAPIRequest(rec), _OpenAPIResponse(rec))
    except ResponseNotFound:
        if rec.status in UNDOCUMENTED_BUT_EXPECTED:
            return  # see the module docstring: a gap in the spec, body already checked
        raise SpecMismatch(f"{rec.method} {rec.path}: status {rec.status} is not documented") from None
    except Exception as exc:
        raise SpecMismatch(f"{rec.method} {rec.path} response: {_describe(exc)}") from exc


def _validate_token_request(rec: Exchange) -> None:
    headers = _headers(rec.headers)
    if headers.get("Content-Type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise SpecMismatch("token requests must be application/x-www-form-urlencoded")
    params = dict(parse_qsl(rec.query)) | dict(parse_qsl(rec.body.decode("utf-8", "replace")))
    grant = params.get("grant_type", "")
    if grant not in TOKEN_GRANTS:
        raise SpecMismatch(f"unknown grant_type {grant!r}")
    missing = [p for p in TOKEN_GRANTS[grant] if not params.get(p)]
    if missing:
        raise SpecMismatch(f"{grant} token request lacks {missing}")
    if not headers.get("Authorization", "").startswith("Basic ") and not params.get("client_id"):
        raise SpecMismatch("token request has neither Basic client authentication nor client_id")


def _run_openapi(call: Any, rec: Exchange, what: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Unsupported scheme type")
            call()
    except Exception as exc:
        raise SpecMismatch(f"{rec.method} {rec.path} {what}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    parts = [f"{type(exc).__name__}: {exc}"]
    cause = exc.__cause__
    if cause is not None and str(cause) not in parts[0]:
        parts.append(f"{type(cause).__name__}: {cause}")
    for err in getattr(cause, "schema_errors", None) or getattr(exc, "schema_errors", None) or ():
        parts.append(f"  {'/'.join(map(str, err.path)) or '<root>'}: {err.message}")
    return "\n".join(parts)


def _is_v3(path: str) -> bool:
    return path == "/v3" or path.startswith("/v3/")


def _headers(raw: dict[str, str]) -> Headers:
    return Headers(list(raw.items()))


def _json_body(rec: Exchange) -> Any:
    try:
        return orjson.loads(rec.response_body)
    except orjson.JSONDecodeError as exc:
        raise SpecMismatch(f"{rec.method} {rec.path}: response body is not JSON") from exc


class _OpenAPIRequest:
    """openapi-core's Request protocol over a recorded exchange."""

    def __init__(self, rec: Exchange) -> None:
        from openapi_core.datatypes import RequestParameters

        headers = _headers(rec.headers)
        self.host_url = SPEC_HOST
        self.path = rec.path
        self.method = rec.method.lower()
        self.body: bytes | None = rec.body or None
        self.content_type = headers.get("Content-Type", "").lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(_csv_enum_query(rec)),
            header=headers,
            cookie=ImmutableMultiDict(),
        )


class _OpenAPIResponse:
    """openapi-core's Response protocol over a recorded exchange."""

    def __init__(self, rec: Exchange) -> None:
        assert rec.status is not None
        self.headers = _headers(rec.response_headers)
        self.status_code = rec.status
        self.content_type = self.headers.get("Content-Type", "").lower()
        self.data: bytes | None = rec.response_body
