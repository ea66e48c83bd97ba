"""A Constant Contact v3 sandbox: a real HTTP server on 127.0.0.1 that behaves as the documented API does.

    from sandbox import Sandbox, SandboxConfig
    with Sandbox(SandboxConfig(email_max_length=50)) as sb:
        refresh = sb.issue_refresh_token()
        list_id = sb.create_list("Segment A")
        ...  # point the exporter at sb.api_base_url / sb.oauth_base_url

Facts come from /work/shared/reference/constant-contact-notes.md. Where the documentation is silent the
sandbox makes a choice (marked CHOICE in the code):

* Import rows: a missing/malformed/too-long email, a too-long field, a bad birthday or anniversary is
  *correctable* (counted in correctable_count, row not imported); an unknown ``cf:`` key, a non-string
  value or more than 25 custom fields is a non-correctable *error* (error_count, row not imported).
  Every message contains the row's email. Unknown non-``cf:`` keys are ignored.
* Duplicates in one import: the last *valid* entry wins; person_count = distinct valid emails.
* Emails match case-insensitively; ASCII dot-atom syntax only; surrounding blanks make an email invalid.
* Existing unsubscribed contact: included properties are updated, lists and permission are not.
  Deleted contact: revived (same contact_id, permission unchanged) and added to the lists.
* Empty strings in an import never blank an existing value.
* Unknown list in contacts_json_import -> 400 (the spec lists no 404 there); in contact_exports and
  remove_list_memberships -> 404 (documented there). A malformed list_id on GET /contact_lists/{id} -> 404.
* The activity's changes are applied atomically when it turns ``completed``; ``failed``/``timed_out``/
  ``cancelled`` (fault-injected) apply nothing. One worker processes activities first in, first out.
* contact_exports: columns are the export guide's field names (``email_address``, ``first_name`` ...)
  plus ``cf:<name>`` for custom fields; without ``status`` deleted contacts are left out; the file is
  404 until the activity has completed.
* Token endpoint over its rate: 429 ``{"error": "too_many_requests", ...}`` (shape undocumented).
  Queued-activities limit: 429 ``{"error_key": "too_many_activities", ...}`` (key invented).
* Rate limits count accepted /v3 requests only (not 401s, not refused or fault-refused ones).
"""

from sandbox.config import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, SandboxConfig
from sandbox.faults import Fault, Faults
from sandbox.journal import RecordedExchange
from sandbox.server import Sandbox

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "Fault",
    "Faults",
    "RecordedExchange",
    "Sandbox",
    "SandboxConfig",
]
