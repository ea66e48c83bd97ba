"""The ``/v3`` endpoints. Authentication, limits and faults are handled before these run (server.py)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from sandbox.faults import Faults
from sandbox.replies import api_error, json_reply, not_found, single_error, validation_error
from sandbox.state import Account, Conflict, LimitReached, is_uuid
from sandbox.worker import ActivityWorker

Handler = Callable[..., Response]

CONTACT_STATUSES = (
    "all",
    "active",
    "deleted",
    "not_set",
    "pending_confirmation",
    "temp_hold",
    "unsubscribed",
)
CONTACT_INCLUDES = (
    "custom_fields",
    "list_memberships",
    "phone_numbers",
    "street_addresses",
    "taggings",
    "notes",
)
ACTIVITY_STATE_FILTERS = ("processing", "completed", "cancelled", "failed", "timed_out")
EXPORT_STATUSES = {
    "active": "active",
    "unsubscribed": "unsubscribed",
    "removed": "deleted",
    "deleted": "deleted",
}
CUSTOM_FIELD_TYPES = ("string", "date", "number", "currency", "boolean", "single_select", "multi_select")

URLS = Map(
    [
        Rule("/v3/contact_lists", methods=["GET"], endpoint="get_lists"),
        Rule("/v3/contact_lists", methods=["POST"], endpoint="post_list"),
        Rule("/v3/contact_lists/<list_id>", methods=["GET"], endpoint="get_list"),
        Rule("/v3/contacts", methods=["GET"], endpoint="get_contacts"),
        Rule("/v3/contact_custom_fields", methods=["GET"], endpoint="get_custom_fields"),
        Rule("/v3/contact_custom_fields", methods=["POST"], endpoint="post_custom_field"),
        Rule("/v3/activities", methods=["GET"], endpoint="get_activities"),
        Rule("/v3/activities/contacts_json_import", methods=["POST"], endpoint="post_import"),
        Rule("/v3/activities/contact_exports", methods=["POST"], endpoint="post_export"),
        Rule("/v3/activities/remove_list_memberships", methods=["POST"], endpoint="post_remove"),
        Rule("/v3/activities/<activity_id>", methods=["GET"], endpoint="get_activity"),
        Rule("/v3/contact_exports/<file_export_id>", methods=["GET"], endpoint="get_export_file"),
    ]
)


class BadRequest(Exception):
    """Raised by the parsing helpers; becomes a 400 array error."""


class V3Api:
    """One method per endpoint, each ``(request, body) -> Response``."""

    def __init__(self, account: Account, worker: ActivityWorker, faults: Faults) -> None:
        self.account = account
        self.worker = worker
        self.faults = faults
        self.config = account.config

    def handler(self, endpoint: str) -> Handler:
        """The bound method for a routing endpoint name."""
        method: Handler = getattr(self, endpoint)
        return method

    # -- contact lists -----------------------------------------------------------------------------
    def get_lists(self, request: Request, body: bytes) -> Response:
        q = _query(request)
        limit = _int_param(q, "limit", 50, 1, 1000)
        include_count = _bool_param(q, "include_count")
        membership = _choice_param(q, "include_membership_count", ("all", "active"))
        status = _choice_param(q, "status", ("all", "active", "deleted"))
        name = q.get("name")
        with self.account.lock:
            lists = [
                lst
                for lst in self.account.lists.values()
                if (name is None or lst.name == name) and status != "deleted"  # lists are never deleted here
            ]
            offset = _int_param(q, "_offset", 0, 0, 10**9)
            page = lists[offset : offset + limit]
            out: dict[str, Any] = {"lists": [self.account.list_json(lst, membership) for lst in page]}
        if include_count:
            out["lists_count"] = len(lists)
        if offset + limit < len(lists):
            out["_links"] = {"next": {"href": _next_href(request.path, q, offset + limit)}}
        return json_reply(200, out)

    def post_list(self, request: Request, body: bytes) -> Response:
        data = _json_object(request, body)
        name = data.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise BadRequest("name is required and must be 1 to 255 characters.")
        description = data.get("description")
        favorite = data.get("favorite", False)
        if description is not None and not isinstance(description, str):
            raise BadRequest("description must be a string.")
        if not isinstance(favorite, bool):
            raise BadRequest("favorite must be a boolean.")
        try:
            lst = self.account.create_list(name, description, favorite)
        except Conflict as exc:
            return api_error(409, "contacts.api.conflict", f"Validation failed: {exc}")
        except LimitReached as exc:
            raise BadRequest(str(exc)) from exc
        return json_reply(201, self.account.list_json(lst))

    def get_list(self, request: Request, body: bytes, list_id: str) -> Response:
        membership = _choice_param(_query(request), "include_membership_count", ("all", "active"))
        if not is_uuid(list_id):
            # DOC-ERR's example: an id in the wrong format is a 404 with contacts.api.not_found.
            return not_found("list_id is in an invalid format.")
        with self.account.lock:
            lst = self.account.lists.get(list_id)
            if lst is None:
                return not_found("The requested list was not found.")
            return json_reply(200, self.account.list_json(lst, membership))

    # -- contacts ----------------------------------------------------------------------------------
    def get_contacts(self, request: Request, body: bytes) -> Response:
        q = _query(request)
        limit = _int_param(q, "limit", 50, 1, 500)
        statuses = _csv_param(q, "status", CONTACT_STATUSES) or ["active", "unsubscribed"]
        includes = _csv_param(q, "include", CONTACT_INCLUDES)
        include_count = _bool_param(q, "include_count")
        list_filter = _csv(q.get("lists"))
        if len(list_filter) > 25 or not all(is_uuid(x) for x in list_filter):
            raise BadRequest("lists must be up to 25 comma separated list_id values.")
        email = q.get("email")
        offset = _int_param(q, "_offset", 0, 0, 10**9)
        with self.account.lock:
            found = [
                c
                for c in self.account.contacts.values()
                if ("all" in statuses or c.status in statuses)
                and (email is None or c.email.lower() == email.lower())
                and (not list_filter or any(x in c.lists for x in list_filter))
            ]
            page = [self.account.contact_json(c, includes) for c in found[offset : offset + limit]]
        out: dict[str, Any] = {"contacts": page}
        if include_count:
            out["contacts_count"] = len(found)
        if offset + limit < len(found):
            out["_links"] = {"next": {"href": _next_href(request.path, q, offset + limit)}}
        return json_reply(200, out)

    # -- custom fields -----------------------------------------------------------------------------
    def get_custom_fields(self, request: Request, body: bytes) -> Response:
        q = _query(request)
        limit = _int_param(q, "limit", 50, 1, 100)
        offset = _int_param(q, "_offset", 0, 0, 10**9)
        with self.account.lock:
            fields = list(self.account.custom_fields.values())
            out: dict[str, Any] = {
                "custom_fields": [
                    self.account.custom_field_json(cf) for cf in fields[offset : offset + limit]
                ]
            }
        if offset + limit < len(fields):
            out["_links"] = {"next": {"href": _next_href(request.path, q, offset + limit)}}
        return json_reply(200, out)

    def post_custom_field(self, request: Request, body: bytes) -> Response:
        data = _json_object(request, body)
        label = data.get("label")
        type_ = data.get("type", "string")
        if not isinstance(label, str) or not label.strip() or len(label) > 50:
            raise BadRequest("label is required and must be 1 to 50 characters.")
        if type_ not in CUSTOM_FIELD_TYPES:
            raise BadRequest(f"type must be one of {', '.join(CUSTOM_FIELD_TYPES)}.")
        try:
            cf = self.account.create_custom_field(label, type_)
        except Conflict as exc:
            return api_error(409, "contacts.api.conflict", f"Validation failed: {exc}")
        except LimitReached as exc:
            raise BadRequest(str(exc)) from exc
        return json_reply(201, self.account.custom_field_json(cf))

    # -- activities --------------------------------------------------------------------------------
    def post_import(self, request: Request, body: bytes) -> Response:
        _require_json(request)
        limit = self.config.max_body_bytes
        try:
            # Only the first max_body_bytes are read; the rest is dropped [SPEC-CS]. Truncated JSON
            # cannot be parsed, so an oversized body is refused rather than half-imported.
            data = orjson.loads(body[:limit])
        except orjson.JSONDecodeError as exc:
            why = f" Only the first {limit} bytes of the body are read." if len(body) > limit else ""
            raise BadRequest("The request body is not valid JSON." + why) from exc
        if not isinstance(data, dict):
            raise BadRequest("The request body must be a JSON object.")
        items = data.get("import_data")
        if not isinstance(items, list) or not items:
            raise BadRequest("import_data is required and must be a non-empty array.")
        if len(items) > self.config.max_import_contacts:
            raise BadRequest(f"import_data can contain at most {self.config.max_import_contacts} contacts.")
        sms = data.get("sms_permission_to_send")
        if sms is not None and sms not in ("explicit", "not_set"):
            raise BadRequest("sms_permission_to_send must be explicit or not_set.")
        list_ids = self._target_lists(data.get("list_ids"), unknown_status=400)
        return self._queue("contacts_json_import", {"import_data": items, "list_ids": list_ids}, request.path)

    def post_export(self, request: Request, body: bytes) -> Response:
        data = _json_object(request, body)
        payload: dict[str, Any] = {}
        contact_ids = data.get("contact_ids")
        list_ids = data.get("list_ids")
        if contact_ids is not None and list_ids is not None:
            raise BadRequest("contact_ids and list_ids are mutually exclusive.")
        if contact_ids is not None:
            payload["contact_ids"] = _uuid_list(contact_ids, "contact_ids", 1, 500)
        if list_ids is not None:
            payload["list_ids"] = self._target_lists(list_ids, unknown_status=404)
        for unsupported in ("tag_ids", "segment_id", "new_subscriber"):
            if data.get(unsupported):
                raise BadRequest(f"{unsupported} is not supported by the sandbox.")
        status = data.get("status")
        if status is not None:
            if status not in EXPORT_STATUSES:
                raise BadRequest("status must be one of active, unsubscribed, removed.")
            payload["status"] = EXPORT_STATUSES[status]
        fields = data.get("fields")
        if fields is not None:
            if not isinstance(fields, list) or not fields:
                raise BadRequest("fields must be a non-empty array of field names.")
            with self.account.lock:
                names = {cf.name for cf in self.account.custom_fields.values()}
            problem = self.account.export_field_problem(fields, names)
            if problem:
                raise BadRequest(problem)
            payload["fields"] = list(dict.fromkeys(fields))
        payload["exclude"] = {"contact_ids": self._exclude(data, 50)}
        return self._queue("contact_exports", payload, request.path)

    def post_remove(self, request: Request, body: bytes) -> Response:
        data = _json_object(request, body)
        source = data.get("source")
        if not isinstance(source, dict) or not source:
            raise BadRequest("source is required.")
        present = [k for k, v in source.items() if v not in (None, False, [])]
        if len(present) != 1:
            raise BadRequest("source must have exactly one of contact_ids, list_ids, all_active_contacts.")
        kind = present[0]
        src: dict[str, Any]
        if kind == "contact_ids":
            src = {"contact_ids": _uuid_list(source["contact_ids"], "source.contact_ids", 1, 500)}
        elif kind == "list_ids":
            src = {"list_ids": self._target_lists(source["list_ids"], unknown_status=404)}
        elif kind == "all_active_contacts" and source[kind] is True:
            src = {"all_active_contacts": True}
        else:
            raise BadRequest(f"source.{kind} is not supported by the sandbox.")
        exclude = self._exclude(data, 500)
        if exclude and kind == "contact_ids":
            raise BadRequest("exclude is only valid with a list_ids or all_active_contacts source.")
        targets = self._target_lists(data.get("list_ids"), unknown_status=404)
        payload = {"source": src, "list_ids": targets, "exclude": {"contact_ids": exclude}}
        return self._queue("remove_list_memberships", payload, request.path)

    def get_activities(self, request: Request, body: bytes) -> Response:
        q = _query(request)
        limit = _int_param(q, "limit", 50, 1, 500)
        state = _choice_param(q, "state", ACTIVITY_STATE_FILTERS)
        offset = _int_param(q, "_offset", 0, 0, 10**9)
        horizon = self.account.clock.time() - self.config.activity_retention_seconds
        with self.account.lock:
            acts = [
                a
                for a in reversed(self.account.activities.values())
                if a.created_at >= horizon and (state is None or a.state == state)
            ]
            out: dict[str, Any] = {"activities": [a.body() for a in acts[offset : offset + limit]]}
        if offset + limit < len(acts):
            out["_links"] = {"next": {"href": _next_href(request.path, q, offset + limit)}}
        return json_reply(200, out)

    def get_activity(self, request: Request, body: bytes, activity_id: str) -> Response:
        with self.account.lock:
            act = self.account.visible_activity(activity_id)
            if act is None:
                return not_found("Resource not found for the activity_id provided")
            return json_reply(200, act.body())

    def get_export_file(self, request: Request, body: bytes, file_export_id: str) -> Response:
        with self.account.lock:
            data = self.account.export_files.get(file_export_id)
        if data is None:  # unknown, or the export has not completed yet (CHOICE)
            return not_found("The requested resource was not found.")
        return Response(data, status=200, content_type="text/csv; charset=utf-8")

    # -- shared ------------------------------------------------------------------------------------
    def _queue(self, kind: Any, payload: dict[str, Any], path: str) -> Response:
        limit = self.config.max_queued_activities
        with self.account.lock:
            if self.account.queued_count() >= limit:
                return single_error(
                    429,
                    "too_many_activities",
                    f"Too many requests. You exceeded {limit:,} queued activities for this user account.",
                )
            act = self.account.new_activity(kind, payload, self.faults.take_activity_outcome(path))
            reply = json_reply(201, act.body())
        self.worker.submit(act)
        return reply

    def _target_lists(self, value: Any, *, unknown_status: int) -> list[str]:
        ids = _uuid_list(value, "list_ids", 1, 50)
        with self.account.lock:
            missing = [x for x in ids if x not in self.account.lists]
        if missing:
            if unknown_status == 404:
                raise _NotFound(f"List {missing[0]} was not found.")
            raise BadRequest(f"List {missing[0]} does not exist.")
        return list(dict.fromkeys(ids))

    @staticmethod
    def _exclude(data: Mapping[str, Any], most: int) -> list[str]:
        exclude = data.get("exclude")
        if exclude is None:
            return []
        if not isinstance(exclude, dict):
            raise BadRequest("exclude must be an object.")
        ids = exclude.get("contact_ids")
        return [] if ids is None else _uuid_list(ids, "exclude.contact_ids", 0, most)


class _NotFound(Exception):
    """Raised by helpers; becomes a 404 array error."""


def dispatch(api: V3Api, request: Request, body: bytes, endpoint: str, args: Mapping[str, str]) -> Response:
    """Run one endpoint, turning the helper exceptions into documented error bodies."""
    try:
        return api.handler(endpoint)(request, body, **args)
    except BadRequest as exc:
        return validation_error(str(exc))
    except _NotFound as exc:
        return not_found(str(exc))
    except _UnsupportedMedia:
        return api_error(415, "unsupported_media_type", "Content-Type must be application/json.")


# -- request parsing helpers -----------------------------------------------------------------------
class _UnsupportedMedia(Exception):
    pass


def _require_json(request: Request) -> None:
    if request.mimetype != "application/json":
        raise _UnsupportedMedia


def _json_object(request: Request, body: bytes) -> dict[str, Any]:
    _require_json(request)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("The request body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    return data


def _uuid_list(value: Any, name: str, fewest: int, most: int) -> list[str]:
    if not isinstance(value, list) or not fewest <= len(value) <= most:
        raise BadRequest(f"{name} must be an array of {fewest} to {most} ids.")
    if not all(is_uuid(x) for x in value):
        raise BadRequest(f"{name} must contain UUID strings.")
    return list(value)


def _query(request: Request) -> dict[str, str]:
    """Query parameters; a ``cursor`` (from a ``_links.next.href``) restores the original query."""
    q = {k: v for k, v in request.args.items()}
    cursor = q.pop("cursor", None)
    if cursor is None:
        q.pop("_offset", None)  # internal: only settable through a cursor
        return q
    try:
        restored = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("cursor is invalid.") from exc
    if not isinstance(restored, dict):
        raise BadRequest("cursor is invalid.")
    return {str(k): str(v) for k, v in restored.items()}


def _next_href(path: str, q: Mapping[str, str], offset: int) -> str:
    token = base64.urlsafe_b64encode(orjson.dumps({**q, "_offset": str(offset)})).rstrip(b"=").decode()
    return f"{path}?cursor={token}"


def _int_param(q: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = q.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer.") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low} to {high}.")
    return value


def _bool_param(q: Mapping[str, str], name: str) -> bool:
    raw = q.get(name)
    if raw is None:
        return False
    if raw.lower() not in ("true", "false"):
        raise BadRequest(f"{name} does not have a valid value")
    return raw.lower() == "true"


def _choice_param(q: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    raw = q.get(name)
    if raw is not None and raw not in choices:
        raise BadRequest(f"{name} does not have a valid value")
    return raw


def _csv(raw: str | None) -> list[str]:
    return [x.strip() for x in raw.split(",") if x.strip()] if raw else []


def _csv_param(q: Mapping[str, str], name: str, choices: tuple[str, ...]) -> list[str]:
    values = _csv(q.get(name))
    if any(v not in choices for v in values):
        raise BadRequest(f"{name} does not have a valid value")
    return values


def unauthorized_scope() -> Response:
    """403 when the token lacks contact_data (body shape undocumented: the general array)."""
    return api_error(403, "forbidden", "You lack the necessary scopes for this request.")
