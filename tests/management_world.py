"""Shared pieces of the management API tests: a service on Azurite with its secrets in the local Key Vault
(the real SecretClient over HTTPS), a Constant Contact sandbox with two registered apps, principals as
App Service authentication sends them, and HTTP calls through the indexed functions with every response
checked against the OpenAPI description."""

from __future__ import annotations

import json
import re
import uuid
import warnings
from dataclasses import dataclass, replace
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import azure.functions as func
import httpx
from werkzeug.datastructures import Headers, ImmutableMultiDict

from exporter.config import ApiSettings, Settings
from exporter.principals import encode_principal
from exporter.secrets import KeyVaultSecretStore
from exporter.service import AppSettings, ExportService, ensure_containers
from sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Sandbox, SandboxConfig
from tests.keyvault_server import LocalKeyVault

BASE = "http://localhost:7071/api"
APP_A = (DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
APP_B = ("second-app-client-id", "second-app-client-secret")

PRINCIPALS = {
    "admin": encode_principal("admin@contoso.com", ["Exporter.Admin"]),
    "contributor_shared": encode_principal("carol@contoso.com", ["Exporter.Contributor"]),
    "contributor_other": encode_principal("dave@contoso.com", ["Exporter.Contributor"]),
    "viewer": encode_principal("vera@contoso.com", ["Exporter.Viewer"]),
    "norole": encode_principal("nora@contoso.com", ["Something.Else"]),
    "anonymous": None,
}
SEGMENT = (
    b"EMail,FirstName,LastName,Tier\n"
    b"ann@example.com,Ann,Archer,Gold\n"
    b"bob@example.com,Bob,Baker,Silver\n"
    b"cy@example.com,Cy,Cole,Gold\n"
)
MAPPING = {
    "email": "EMail",
    "first_name": "FirstName",
    "last_name": "LastName",
    "fields": {"cf:tier": "Tier"},
}


def sandbox_config() -> SandboxConfig:
    """Two apps; no server-side rate limits (the client's own limiter still applies)."""
    return SandboxConfig(
        activity_step_seconds=0.01,
        token_requests_per_second=None,
        requests_per_second=None,
        device_poll_interval=1,
        clients=dict([APP_A, APP_B]),
    )


def vault_store(vault: LocalKeyVault) -> KeyVaultSecretStore:
    return KeyVaultSecretStore(
        vault.vault_url,
        credential=vault.credential,
        connection_verify=vault.ca_bundle_path,
        verify_challenge_resource=False,
    )


def make_service(connection_string: str, sandbox: Sandbox, secrets: Any) -> ExportService:
    """A service on fresh containers, talking to the sandbox with short polls."""
    suffix = uuid.uuid4().hex[:10]
    api = ApiSettings(
        api_base_url=sandbox.api_base_url,
        oauth_base_url=sandbox.oauth_base_url,
        poll_interval_seconds=0.02,
        poll_interval_max_seconds=0.1,
        backoff_max_seconds=0.2,
        activity_timeout_seconds=20,
    )
    app = AppSettings(
        settings=replace(Settings(secret_store="env"), api=api),
        storage_connection_string=connection_string,
        segments_container=f"s-{suffix}",
        results_container=f"r-{suffix}",
        state_container=f"t-{suffix}",
    )
    service = ExportService(app, secrets=secrets)
    ensure_containers(service)
    return service


def upload_segment(service: ExportService, path: str, data: bytes = SEGMENT) -> None:
    service.blob_service.get_container_client(service.app.segments_container).upload_blob(
        path, data, overwrite=True
    )


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]
    raw: func.HttpResponse


def request(
    method: str,
    path: str,
    who: str | None,
    *,
    body: Any = None,
    query: dict[str, str] | None = None,
    principal: str | None = None,
) -> func.HttpRequest:
    """``who`` names one of PRINCIPALS; ``principal`` gives the raw header value instead."""
    headers = {"Content-Type": "application/json"}
    principal = principal or PRINCIPALS.get(who or "anonymous")
    if principal:
        headers["X-MS-CLIENT-PRINCIPAL"] = principal
    url = f"{BASE}/{path}" + (f"?{urlencode(query)}" if query else "")
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    return func.HttpRequest(method, url, body=raw, params=query or {}, headers=headers)


def call(indexed: dict[str, Any], fn: str, path: str, who: str | None = None, **kwargs: Any) -> Reply:
    """Call the function ``fn`` as the host would for ``path``; the response must match the spec."""
    binding = json.loads(indexed[fn].get_function_json())["bindings"][0]
    template, method = binding["route"], binding["methods"][0]
    req = request(method, path, who, **kwargs)
    req = func.HttpRequest(
        req.method,
        req.url,
        body=req.get_body(),
        params=dict(req.params),
        headers=dict(req.headers),
        route_params=route_params(template, path.split("?")[0]),
    )
    response = indexed[fn].get_user_function()(req)
    check_against_spec(req, response)
    data = response.get_body()
    try:
        body = json.loads(data) if data else None
    except ValueError:
        body = data
    return Reply(response.status_code, body, dict(response.headers), response)


def route_params(template: str, path: str) -> dict[str, str]:
    pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
    found = re.match(pattern, path)
    assert found, f"{path} does not match {template}"
    return found.groupdict()


def follow_authorize(location: str) -> dict[str, str]:
    """The sandbox plays the person who signs in and allows access: its 302 goes to our redirect URI."""
    answer = httpx.get(location, follow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    back = answer.headers["location"]
    return {"url": back, **dict(parse_qsl(urlsplit(back).query))}


# -- OpenAPI ---------------------------------------------------------------------------------------


@cache
def _openapi() -> Any:
    from openapi_core import OpenAPI

    from exporter.openapi import spec

    return OpenAPI.from_dict(spec(server_url=BASE))


class _SpecRequest:
    def __init__(self, req: func.HttpRequest) -> None:
        from openapi_core.datatypes import RequestParameters

        parts = urlsplit(req.url)
        self.host_url = f"{parts.scheme}://{parts.netloc}"
        self.path = parts.path
        self.method = req.method.lower()
        self.body: bytes | None = req.get_body() or None
        self.content_type = "application/json"
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(req.params.items())),
            header=Headers(list(req.headers.items())),
            cookie=ImmutableMultiDict(),
        )


class _SpecResponse:
    def __init__(self, response: func.HttpResponse) -> None:
        self.status_code = response.status_code
        self.headers = Headers(list(response.headers.items()))
        body = response.get_body()
        self.data: bytes | None = body or None
        self.content_type = (response.mimetype or "").lower() if body else ""


def check_against_spec(req: func.HttpRequest, response: func.HttpResponse) -> None:
    """openapi-core validates status, headers and body of a real response against the description."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Unsupported scheme type")
        _openapi().validate_response(_SpecRequest(req), _SpecResponse(response))
