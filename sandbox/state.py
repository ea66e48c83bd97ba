"""The in-memory Constant Contact account: lists, contacts, custom fields, activities, export files.

Everything is guarded by one re-entrant lock (``Account.lock``); HTTP handlers and the activity worker
take it for each operation, so an activity's changes appear atomically when it completes.

Choices where the documentation is silent are marked CHOICE and listed in sandbox/__init__.py.
"""

from __future__ import annotations

import csv
import io
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from sandbox.clock import Clock, iso, iso_date
from sandbox.config import SandboxConfig

ContactStatus = Literal["active", "unsubscribed", "deleted"]
ActivityKind = Literal["contacts_json_import", "contact_exports", "remove_list_memberships"]
FINISHED_STATES = frozenset({"completed", "failed", "timed_out", "cancelled"})
MAX_LISTS_PER_CONTACT = 50
MAX_CUSTOM_FIELDS_PER_CONTACT = 25

# import_data string fields -> maxLength (spec: createImportJSONActivity_request_import_data_inner).
_ADDRESS_PARTS = {"street": 255, "street2": 255, "city": 50, "state": 50, "zip": 50, "country": 50}
IMPORT_STRING_FIELDS: dict[str, int] = {
    "first_name": 50,
    "last_name": 50,
    "job_title": 50,
    "company_name": 50,
    "phone": 50,
    "home_phone": 50,
    "work_phone": 50,
    "mobile_phone": 50,
    "other_phone": 50,
    "anniversary": 10,
    "sms_number": 16,
    "sms_consent_date": 16,
    **_ADDRESS_PARTS,
    **{f"{kind}_{part}": n for kind in ("home", "work", "other") for part, n in _ADDRESS_PARTS.items()},
}
CUSTOM_FIELD_VALUE_MAX = 255
CORE_FIELDS = ("first_name", "last_name", "job_title", "company_name")

# One "@", a dot-atom local part, a dotted domain with a 2+ letter TLD; ASCII only. CC does not publish
# its rules (support: no spaces, commas or brackets, one @, full domain) -> CHOICE.
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_ANNIVERSARY_RE = re.compile(
    r"^(?:\d{1,2}/\d{1,2}/\d{4}|\d{4}/\d{1,2}/\d{1,2}|\d{4}-\d{1,2}-\d{1,2}|\d{1,2}-\d{1,2}-\d{4})$"
)

# contact_exports columns: the field names of the export guide (email_address, first_name, ...).
EXPORT_DEFAULT_FIELDS: tuple[str, ...] = (
    "email_address",
    "first_name",
    "last_name",
    "job_title",
    "company_name",
    "phone_number",
    "street",
    "city",
    "state",
    "zip",
    "country",
    "anniversary",
    "birthday_month",
    "birthday_day",
    "email_permission",
    "email_optin_source",
    "email_optin_date",
    "email_optout_source",
    "email_optout_date",
    "email_optout_reason",
    "email_lists",
    "source_name",
    "created_at",
    "updated_at",
)
# Documented export fields the sandbox does not model: accepted, exported empty.
EXPORT_EMPTY_FIELDS = frozenset({"social_profiles", "website", "notes", "tag", "birthday", "email_optin"})
EXPORT_NEEDS_EMAIL = frozenset(
    {
        "email_optin_source",
        "email_optin_date",
        "email_optout_source",
        "email_optout_date",
        "email_optout_reason",
    }
)


class Conflict(Exception):
    """The resource already exists (-> 409)."""


class LimitReached(Exception):
    """An account limit would be exceeded (-> 400)."""


def valid_email(email: str, max_length: int) -> bool:
    """The sandbox's idea of an address CC would accept (see ``_EMAIL_RE``)."""
    return 0 < len(email) <= max_length and _EMAIL_RE.match(email) is not None


def is_uuid(value: object) -> bool:
    """True for a canonical 8-4-4-4-12 UUID string."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class ContactList:
    list_id: str
    name: str
    description: str | None
    favorite: bool
    created_at: float
    updated_at: float
    members: dict[str, None] = field(default_factory=dict)  # ordered set of contact ids


@dataclass(slots=True)
class CustomField:
    custom_field_id: str
    label: str
    name: str
    type: str
    created_at: float
    updated_at: float


@dataclass(slots=True)
class Contact:
    contact_id: str
    email: str
    created_at: float
    updated_at: float
    permission: str = "implicit"  # implicit | explicit | unsubscribed
    opt_in_source: str = "Account"
    opt_in_date: float | None = None
    opt_out_source: str | None = None
    opt_out_date: float | None = None
    opt_out_reason: str | None = None
    create_source: str = "Account"
    update_source: str = "Account"
    deleted_at: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # first_name, phone, birthday_month, ...
    custom: dict[str, str] = field(default_factory=dict)  # custom_field_id -> value
    lists: dict[str, None] = field(default_factory=dict)  # ordered set of list ids

    @property
    def status(self) -> ContactStatus:
        """deleted > unsubscribed > active."""
        if self.deleted_at is not None:
            return "deleted"
        if self.permission == "unsubscribed":
            return "unsubscribed"
        return "active"


@dataclass(slots=True)
class Activity:
    activity_id: str
    kind: ActivityKind
    payload: dict[str, Any]
    created_at: float
    outcome: str | None = None  # forced end state from a fault, or None
    state: str = "initialized"
    started_at: float | None = None
    updated_at: float | None = None
    completed_at: float | None = None
    percent_done: int = 0
    errors: list[str] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    results_href: str | None = None

    @property
    def queued(self) -> bool:
        """Counts toward the queued-activities limit (a stuck activity does, forever)."""
        return self.state not in FINISHED_STATES

    def body(self) -> dict[str, Any]:
        """The activity status object (spec getActivityById_200_response)."""
        out: dict[str, Any] = {
            "activity_id": self.activity_id,
            "state": self.state,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at or self.created_at),
            "percent_done": self.percent_done,
            "activity_errors": list(self.errors),
            "status": dict(self.status),
            "_links": {"self": {"href": f"/v3/activities/{self.activity_id}"}},
        }
        if self.started_at is not None:
            out["started_at"] = iso(self.started_at)
        if self.completed_at is not None:
            out["completed_at"] = iso(self.completed_at)
        if self.results_href is not None:
            out["_links"]["results"] = {"href": self.results_href}
        return out


class Account:
    """One CC account. Methods that touch several objects take ``lock`` themselves."""

    def __init__(self, config: SandboxConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.RLock()
        self.lists: dict[str, ContactList] = {}
        self.custom_fields: dict[str, CustomField] = {}
        self.contacts: dict[str, Contact] = {}
        self.by_email: dict[str, str] = {}  # lower-cased email -> contact_id
        self.activities: dict[str, Activity] = {}
        self.export_files: dict[str, bytes] = {}

    # -- lists -------------------------------------------------------------------------------------
    def create_list(
        self, name: str, description: str | None = None, favorite: bool = False, list_id: str | None = None
    ) -> ContactList:
        """Names are unique (exact match, CHOICE); at most ``max_lists`` lists. ``list_id`` is for seeding
        only (the API always generates one)."""
        with self.lock:
            if self.list_by_name(name) is not None:
                raise Conflict(f"List name {name!r} already exists.")
            if len(self.lists) >= self.config.max_lists:
                raise LimitReached(f"An account can have at most {self.config.max_lists} lists.")
            now = self.clock.time()
            lst = ContactList(list_id or str(uuid.uuid4()), name, description, favorite, now, now)
            self.lists[lst.list_id] = lst
            return lst

    def list_by_name(self, name: str) -> ContactList | None:
        """Exact name match."""
        with self.lock:
            return next((lst for lst in self.lists.values() if lst.name == name), None)

    def list_json(self, lst: ContactList, membership: str | None = None) -> dict[str, Any]:
        """getList_200_response; ``membership`` = all|active adds membership_count."""
        out: dict[str, Any] = {
            "list_id": lst.list_id,
            "name": lst.name,
            "favorite": lst.favorite,
            "created_at": iso(lst.created_at),
            "updated_at": iso(lst.updated_at),
        }
        if lst.description is not None:
            out["description"] = lst.description
        if membership is not None:
            members = (self.contacts[cid] for cid in lst.members)
            out["membership_count"] = sum(1 for c in members if membership == "all" or c.status == "active")
        return out

    # -- custom fields -----------------------------------------------------------------------------
    def create_custom_field(self, label: str, type_: str = "string") -> CustomField:
        """``name`` is the label with blanks replaced by underscores [SPEC-CS]; names are unique."""
        name = re.sub(r"\s", "_", label)
        with self.lock:
            if self.custom_field_by_name(name) is not None:
                raise Conflict(f"Custom field {name!r} already exists.")
            if len(self.custom_fields) >= self.config.max_custom_fields:
                raise LimitReached(
                    f"An account can have at most {self.config.max_custom_fields} custom fields."
                )
            now = self.clock.time()
            cf = CustomField(str(uuid.uuid4()), label, name, type_, now, now)
            self.custom_fields[cf.custom_field_id] = cf
            return cf

    def custom_field_by_name(self, name: str) -> CustomField | None:
        """Exact name match."""
        with self.lock:
            return next((cf for cf in self.custom_fields.values() if cf.name == name), None)

    @staticmethod
    def custom_field_json(cf: CustomField) -> dict[str, Any]:
        """getCustomField_200_response."""
        return {
            "custom_field_id": cf.custom_field_id,
            "label": cf.label,
            "name": cf.name,
            "type": cf.type,
            "created_at": iso(cf.created_at),
            "updated_at": iso(cf.updated_at),
        }

    # -- contacts ----------------------------------------------------------------------------------
    def contact_by_email(self, email: str) -> Contact | None:
        """Emails match case-insensitively (CHOICE)."""
        with self.lock:
            cid = self.by_email.get(email.lower())
            return self.contacts[cid] if cid else None

    def add_contact(
        self,
        email: str,
        *,
        status: ContactStatus = "active",
        list_ids: Iterable[str] = (),
        fields: Mapping[str, Any] | None = None,
        custom_fields: Mapping[str, str] | None = None,
        permission: str = "implicit",
    ) -> Contact:
        """Seed a contact directly. Deleted contacts are on no list (deleting removes memberships)."""
        with self.lock:
            if self.contact_by_email(email) is not None:
                raise Conflict("A contact with this email address already exists.")
            now = self.clock.time()
            contact = Contact(str(uuid.uuid4()), email, now, now, permission=permission, opt_in_date=now)
            contact.fields.update({k: v for k, v in (fields or {}).items() if v is not None})
            for name, value in (custom_fields or {}).items():
                cf = self.custom_field_by_name(name.removeprefix("cf:"))
                if cf is None:
                    raise KeyError(f"no custom field named {name!r}")
                contact.custom[cf.custom_field_id] = value
            if status == "unsubscribed":
                contact.permission = "unsubscribed"
                contact.opt_out_source, contact.opt_out_date = "Contact", now
            self.contacts[contact.contact_id] = contact
            self.by_email[email.lower()] = contact.contact_id
            if status == "deleted":
                contact.deleted_at = now
            else:
                for list_id in list_ids:
                    if list_id not in self.lists:
                        raise KeyError(f"no list {list_id}")
                    self._join(contact, list_id)
            return contact

    def _join(self, contact: Contact, list_id: str) -> None:
        contact.lists[list_id] = None
        self.lists[list_id].members[contact.contact_id] = None

    def _leave(self, contact: Contact, list_id: str) -> None:
        contact.lists.pop(list_id, None)
        if list_id in self.lists:
            self.lists[list_id].members.pop(contact.contact_id, None)

    def contact_view(self, contact: Contact) -> dict[str, Any]:
        """Flat Python view for tests/demo: email_address, names, status, custom fields by name."""
        names = {cf_id: cf.name for cf_id, cf in self.custom_fields.items()}
        return {
            "contact_id": contact.contact_id,
            "email_address": contact.email,
            **{k: contact.fields.get(k) for k in CORE_FIELDS},
            **{k: v for k, v in contact.fields.items() if k not in CORE_FIELDS},
            "status": contact.status,
            "permission_to_send": contact.permission,
            "opt_in_source": contact.opt_in_source,
            "create_source": contact.create_source,
            "update_source": contact.update_source,
            "list_ids": list(contact.lists),
            "custom_fields": {names[k]: v for k, v in contact.custom.items() if k in names},
        }

    def contact_json(self, contact: Contact, include: Iterable[str] = ()) -> dict[str, Any]:
        """getContactById_200_response with the requested sub-resources."""
        email: dict[str, Any] = {
            "address": contact.email,
            "permission_to_send": contact.permission,
            "created_at": iso(contact.created_at),
            "updated_at": iso(contact.updated_at),
            "opt_in_source": contact.opt_in_source,
            "confirm_status": "off",
        }
        if contact.opt_in_date is not None:
            email["opt_in_date"] = iso(contact.opt_in_date)
        if contact.opt_out_date is not None:
            email["opt_out_source"] = contact.opt_out_source or "Contact"
            email["opt_out_date"] = iso(contact.opt_out_date)
            if contact.opt_out_reason:
                email["opt_out_reason"] = contact.opt_out_reason
        out: dict[str, Any] = {"contact_id": contact.contact_id, "email_address": email}
        for key in (*CORE_FIELDS, "birthday_month", "birthday_day", "anniversary"):
            if contact.fields.get(key) is not None:
                out[key] = contact.fields[key]
        out.update(
            create_source=contact.create_source,
            update_source=contact.update_source,
            created_at=iso(contact.created_at),
            updated_at=iso(contact.updated_at),
        )
        if contact.deleted_at is not None:
            out["deleted_at"] = iso_date(contact.deleted_at)
        wanted = set(include)
        if "custom_fields" in wanted:
            out["custom_fields"] = [{"custom_field_id": k, "value": v} for k, v in contact.custom.items()]
        if "list_memberships" in wanted:
            out["list_memberships"] = list(contact.lists)
        if "phone_numbers" in wanted:
            kinds = {"phone": "other", "home_phone": "home", "work_phone": "work", "mobile_phone": "mobile"}
            kinds["other_phone"] = "other"
            out["phone_numbers"] = [
                {"phone_number": contact.fields[k], "kind": kind}
                for k, kind in kinds.items()
                if k in contact.fields
            ][:3]
        if "street_addresses" in wanted:
            out["street_addresses"] = _street_addresses(contact.fields)
        if "taggings" in wanted:
            out["taggings"] = []  # tags are not modelled
        if "notes" in wanted:
            out["notes"] = []
        return out

    # -- activities --------------------------------------------------------------------------------
    def queued_count(self) -> int:
        """Activities still initialized or processing."""
        with self.lock:
            return sum(1 for a in self.activities.values() if a.queued)

    def new_activity(self, kind: ActivityKind, payload: dict[str, Any], outcome: str | None) -> Activity:
        """Create an ``initialized`` activity with zeroed counters."""
        now = self.clock.time()
        act = Activity(str(uuid.uuid4()), kind, payload, now, outcome=outcome, updated_at=now)
        if kind == "contacts_json_import":
            total = len(payload["import_data"])
            act.status = {
                "items_total_count": total,
                "items_completed_count": 0,
                "person_count": 0,
                "error_count": 0,
                "correctable_count": 0,
                "cannot_add_to_list_count": 0,
            }
        elif kind == "remove_list_memberships":
            act.status = {
                "items_total_count": 0,
                "items_completed_count": 0,
                "list_count": len(payload["list_ids"]),
            }
        else:
            act.status = {"items_total_count": 0, "items_completed_count": 0}
        with self.lock:
            self.activities[act.activity_id] = act
        return act

    def visible_activity(self, activity_id: str) -> Activity | None:
        """Activities are kept for 10 days [DOC-ACT]."""
        with self.lock:
            act = self.activities.get(activity_id)
            if act is None or act.created_at < self.clock.time() - self.config.activity_retention_seconds:
                return None
            return act

    def start(self, act: Activity) -> None:
        """initialized -> processing."""
        with self.lock:
            now = self.clock.time()
            act.state, act.started_at, act.updated_at = "processing", now, now
            total = act.status.get("items_total_count", 0)
            act.status["items_completed_count"] = total // 2
            act.percent_done = 50

    def finish(self, act: Activity) -> None:
        """processing -> completed (changes applied now), or the forced end state (nothing applied)."""
        with self.lock:
            now = self.clock.time()
            if act.outcome == "stuck":
                return
            if act.outcome is not None:
                act.state, act.updated_at = act.outcome, now
                act.payload = {}
                act.errors.append(f"Activity {act.outcome.replace('_', ' ')}; no changes were applied.")
                return
            if act.kind == "contacts_json_import":
                self._apply_import(act)
                act.payload = {}  # the rows are applied; do not keep 40,000 of them per activity
            elif act.kind == "contact_exports":
                self._apply_export(act)
            else:
                self._apply_remove(act)
            act.status["items_completed_count"] = act.status.get("items_total_count", 0)
            act.state, act.percent_done = "completed", 100
            act.updated_at = act.completed_at = self.clock.time()

    # -- contacts_json_import ----------------------------------------------------------------------
    def _apply_import(self, act: Activity) -> None:
        items: list[Any] = act.payload["import_data"]
        list_ids: list[str] = act.payload["list_ids"]
        status = act.status
        rows: dict[str, dict[str, Any]] = {}  # lower email -> last valid row ("last entry wins")
        for index, item in enumerate(items, start=1):
            verdict, messages = self._check_row(index, item)
            act.errors.extend(messages)
            if verdict == "error":
                status["error_count"] += 1
            elif verdict == "correctable":
                status["correctable_count"] += 1
            else:
                rows[item["email"].lower()] = item
        status["person_count"] = len(rows)
        now = self.clock.time()
        for key, row in rows.items():
            contact = self.contacts.get(self.by_email.get(key, ""))
            if contact is None:
                contact = Contact(str(uuid.uuid4()), row["email"], now, now, opt_in_date=now)
                self.contacts[contact.contact_id] = contact
                self.by_email[key] = contact.contact_id
            elif contact.permission == "unsubscribed":
                # Never resubscribed, never added to a list; included properties are still updated (CHOICE).
                self._update_fields(contact, row, now)
                status["cannot_add_to_list_count"] += 1
                continue
            elif contact.deleted_at is not None:
                contact.deleted_at = None  # revived: same contact_id, permission unchanged (CHOICE)
            self._update_fields(contact, row, now)
            if len(contact.lists.keys() | set(list_ids)) > MAX_LISTS_PER_CONTACT:
                status["error_count"] += 1
                act.errors.append(
                    f"Contact is already a member of {MAX_LISTS_PER_CONTACT} lists: {row['email']}"
                )
                continue
            for list_id in list_ids:
                if list_id in self.lists:
                    self._join(contact, list_id)

    def _update_fields(self, contact: Contact, row: Mapping[str, Any], now: float) -> None:
        """Only the properties present are updated; empty strings never blank a value (CHOICE)."""
        for key, value in row.items():
            if value is None or value == "":
                continue
            if key.startswith("cf:"):
                cf = self.custom_field_by_name(key[3:])
                if cf is not None:
                    contact.custom[cf.custom_field_id] = value
            elif key in IMPORT_STRING_FIELDS or key in ("birthday_month", "birthday_day"):
                contact.fields[key] = value
        contact.updated_at = now
        contact.update_source = "Account"

    def _check_row(self, index: int, item: Any) -> tuple[str, list[str]]:
        """Classify one import item: ``ok``, ``correctable`` (held for correction) or ``error``."""
        if not isinstance(item, dict):
            return "error", [f"Row {index}: contact must be a JSON object."]
        email = item.get("email")
        if email is None or email == "":
            return "correctable", [f"Row {index}: contact has no email address."]
        if not isinstance(email, str):
            return "error", [f"Row {index}: email must be a string."]
        errors: list[str] = []
        correctable: list[str] = []
        if not valid_email(email, self.config.email_max_length):
            correctable.append(f"Invalid email address: {email}")
        custom_count = 0
        for key, value in item.items():
            if key == "email" or value is None:
                continue
            if key.startswith("cf:"):
                custom_count += 1
                if self.custom_field_by_name(key[3:]) is None:
                    errors.append(f"Custom field {key} does not exist: {email}")
                elif not isinstance(value, str):
                    errors.append(f"Invalid value for {key}: {email}")
                elif len(value) > CUSTOM_FIELD_VALUE_MAX:
                    correctable.append(f"{key} is longer than {CUSTOM_FIELD_VALUE_MAX} characters: {email}")
            elif key in IMPORT_STRING_FIELDS:
                limit = IMPORT_STRING_FIELDS[key]
                if not isinstance(value, str):
                    errors.append(f"Invalid value for {key}: {email}")
                elif key == "anniversary" and value and not _ANNIVERSARY_RE.match(value):
                    correctable.append(f"Invalid anniversary date format: {email}")
                elif len(value) > limit:
                    correctable.append(f"{key} is longer than {limit} characters: {email}")
        if custom_count > MAX_CUSTOM_FIELDS_PER_CONTACT:
            errors.append(f"More than {MAX_CUSTOM_FIELDS_PER_CONTACT} custom fields: {email}")
        if not _valid_birthday(item.get("birthday_month"), item.get("birthday_day")):
            correctable.append(f"Invalid birthday: {email}")
        if errors:
            return "error", errors + correctable
        if correctable:
            return "correctable", correctable
        return "ok", []

    # -- contact_exports ---------------------------------------------------------------------------
    def _apply_export(self, act: Activity) -> None:
        payload = act.payload
        if payload.get("contact_ids"):
            chosen = [self.contacts[c] for c in payload["contact_ids"] if c in self.contacts]
        elif payload.get("list_ids"):
            seen: dict[str, Contact] = {}
            for list_id in payload["list_ids"]:
                for cid in self.lists[list_id].members:
                    seen.setdefault(cid, self.contacts[cid])
            chosen = list(seen.values())
        else:
            chosen = list(self.contacts.values())
        wanted = payload.get("status")
        excluded = set(payload.get("exclude", {}).get("contact_ids", []))
        rows = [
            c
            for c in chosen
            if c.contact_id not in excluded
            and (c.status == wanted if wanted else c.status != "deleted")  # default: not deleted (CHOICE)
        ]
        fields: list[str] = payload.get("fields") or [
            *EXPORT_DEFAULT_FIELDS,
            *(f"cf:{cf.name}" for cf in self.custom_fields.values()),
        ]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow(fields)
        for contact in rows:
            writer.writerow([self._export_value(contact, f) for f in fields])
        self.export_files[act.activity_id] = buf.getvalue().encode("utf-8")
        act.status["items_total_count"] = len(rows)
        act.results_href = f"/v3/contact_exports/{act.activity_id}"

    def _export_value(self, c: Contact, name: str) -> str:
        simple = {
            "email_address": c.email,
            "phone_number": c.fields.get("phone"),
            "email_permission": c.permission,
            "email_optin_source": c.opt_in_source,
            "email_optin_date": iso(c.opt_in_date) if c.opt_in_date else None,
            "email_optout_source": c.opt_out_source,
            "email_optout_date": iso(c.opt_out_date) if c.opt_out_date else None,
            "email_optout_reason": c.opt_out_reason,
            "email_lists": ";".join(self.lists[i].name for i in c.lists if i in self.lists),
            "source_name": c.create_source,
            "created_at": iso(c.created_at),
            "updated_at": iso(c.updated_at),
        }
        if name in simple:
            value = simple[name]
        elif name.startswith("cf:"):
            cf = self.custom_field_by_name(name[3:])
            value = c.custom.get(cf.custom_field_id) if cf else None
        else:
            value = c.fields.get(name)
        return "" if value is None else str(value)

    @staticmethod
    def export_field_problem(fields: list[str], custom_names: set[str]) -> str | None:
        """Why a requested ``fields`` list is refused, or None."""
        known = set(EXPORT_DEFAULT_FIELDS) | EXPORT_EMPTY_FIELDS
        for name in fields:
            if not isinstance(name, str):
                return "fields must be strings."
            if name not in known and not (name.startswith("cf:") and name[3:] in custom_names):
                return f"Unknown export field: {name}"
        if EXPORT_NEEDS_EMAIL & set(fields) and "email_address" not in fields:
            return "email_address must be exported to export email_optin_* or email_optout_* fields."
        return None

    # -- remove_list_memberships -------------------------------------------------------------------
    def _apply_remove(self, act: Activity) -> None:
        source = act.payload["source"]
        targets: list[str] = act.payload["list_ids"]
        excluded = set(act.payload.get("exclude", {}).get("contact_ids", []))
        if "contact_ids" in source:
            chosen = [self.contacts[c] for c in source["contact_ids"] if c in self.contacts]
        elif "list_ids" in source:
            ids: dict[str, None] = {}
            for list_id in source["list_ids"]:
                ids.update(self.lists[list_id].members if list_id in self.lists else {})
            chosen = [self.contacts[c] for c in ids if c not in excluded]
        else:  # all_active_contacts
            chosen = [
                c for c in self.contacts.values() if c.status == "active" and c.contact_id not in excluded
            ]
        for contact in chosen:
            for list_id in targets:
                self._leave(contact, list_id)
        act.status["items_total_count"] = len(chosen)

    # -- persistence -------------------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        """Lists, custom fields and contacts (activities and export files are not kept)."""
        with self.lock:
            return {
                "lists": [asdict(lst) | {"members": list(lst.members)} for lst in self.lists.values()],
                "custom_fields": [asdict(cf) for cf in self.custom_fields.values()],
                "contacts": [asdict(c) | {"lists": list(c.lists)} for c in self.contacts.values()],
            }

    def load(self, data: Mapping[str, Any]) -> None:
        """Inverse of ``dump``."""
        with self.lock:
            for item in data.get("lists", []):
                lst = ContactList(**{**item, "members": dict.fromkeys(item.get("members", []))})
                self.lists[lst.list_id] = lst
            for item in data.get("custom_fields", []):
                cf = CustomField(**item)
                self.custom_fields[cf.custom_field_id] = cf
            for item in data.get("contacts", []):
                contact = Contact(**{**item, "lists": dict.fromkeys(item.get("lists", []))})
                self.contacts[contact.contact_id] = contact
                self.by_email[contact.email.lower()] = contact.contact_id


def _valid_birthday(month: Any, day: Any) -> bool:
    if month is None and day is None:
        return True
    if (
        not (isinstance(month, int) and isinstance(day, int))
        or isinstance(month, bool)
        or isinstance(day, bool)
    ):
        return False
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return False
    try:
        datetime(2000, month, day)  # 2000 is a leap year: Feb 29 is a valid birthday
    except ValueError:
        return False
    return True


def _street_addresses(fields: Mapping[str, Any]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for prefix, kind in (("", "other"), ("home_", "home"), ("work_", "work"), ("other_", "other")):
        parts = {p: fields.get(prefix + p) for p in ("street", "street2", "city", "state", "zip", "country")}
        if not any(parts.values()):
            continue
        street = " ".join(v for v in (parts["street"], parts["street2"]) if v)
        address = {"kind": kind, "street": street, "city": parts["city"], "state": parts["state"]}
        address |= {"postal_code": parts["zip"], "country": parts["country"]}
        out.append({k: v for k, v in address.items() if v})
    return out[:3]
