"""Validation and normalisation rules, checked against what Constant Contact documents."""

from __future__ import annotations

import pytest

from exporter.config import ValidationRules
from exporter.errors import ConfigError, SegmentError
from exporter.mapping import DataMapping, resolve
from exporter.validation import check_email, check_row, parse_date

RULES = ValidationRules()


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("jane@example.com", "jane@example.com"),
        ("  Jane.Doe@Example.COM \t", "jane.doe@example.com"),
        ("a+tag@sub.example.co.uk", "a+tag@sub.example.co.uk"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("user@bücher.de", "user@xn--bcher-kva.de"),
        ("x@xn--bcher-kva.de", "x@xn--bcher-kva.de"),
    ],
)
def test_valid_emails_are_normalised(raw, expected):
    email, issue = check_email(raw, max_length=80)
    assert issue is None
    assert email == expected


@pytest.mark.parametrize(
    "raw,code,words",
    [
        ("", "email_missing", "empty"),
        ("   ", "email_missing", "empty"),
        ("jane.example.com", "email_invalid", "no '@'"),
        ("jane@@example.com", "email_invalid", "more than one"),
        ("ja ne@example.com", "email_invalid", "space"),
        ("jane,doe@example.com", "email_invalid", "not allowed"),
        ("<jane@example.com>", "email_invalid", "not allowed"),
        ("jane@localhost", "email_invalid", "no dot"),
        ("jane.@example.com", "email_invalid", "dot"),
        ("ja..ne@example.com", "email_invalid", "dot"),
        ("@example.com", "email_invalid", "nothing before"),
        ("jöhn@example.com", "email_invalid", "non-ASCII"),
        ("jane@-example.com", "email_invalid", "domain"),
        ("jane@example.c", "email_invalid", "domain"),
    ],
)
def test_invalid_emails_say_why(raw, code, words):
    email, issue = check_email(raw, max_length=80)
    assert email is None and issue is not None
    assert issue.code == code
    assert words in issue.reason
    assert issue.rejects_row


def test_email_length_limit_is_a_setting_defaulting_to_the_product_80():
    local = "a" * 60
    email = f"{local}@example.com"  # 72 characters: over the schema's 50, under the product's 80
    assert check_email(email, max_length=RULES.email_max_length)[0] == email
    _, issue = check_email(email, max_length=50)
    assert issue is not None and issue.code == "email_too_long" and "72" in issue.reason
    too_long = "b" * 64 + "@" + "c" * 20 + ".com"  # 89 characters
    assert check_email(too_long, max_length=80)[1].code == "email_too_long"


def test_a_very_long_international_address_is_refused_by_length_before_idna():
    _, issue = check_email("a@" + "中" * 20_000 + ".com", max_length=80)  # IDNA would take a minute
    assert issue is not None and issue.code == "email_too_long" and "20006 characters" in issue.reason
    assert check_email("Ann@Bücher.example", max_length=80) == ("ann@xn--bcher-kva.example", None)


def test_local_part_over_64_is_invalid():
    assert check_email("a" * 65 + "@example.com", max_length=254)[1].code == "email_invalid"


def test_rules_refuse_silly_settings():
    with pytest.raises(ConfigError):
        ValidationRules(email_max_length=0)
    with pytest.raises(ConfigError):
        ValidationRules(too_long="shorten")  # type: ignore[arg-type]


COLUMNS = ("ContactId", " FirstName", "LastName", "EMail", "Occupation", "DateOfBirth", "Loyalty Tier")


def plan_for(**fields):
    mapping = DataMapping.from_args(
        email="email",
        first_name="firstname",
        last_name="LASTNAME",
        fields=[f"{k}={v}" for k, v in fields.items()],
    )
    return resolve(mapping, COLUMNS, source="t.csv")


def test_row_becomes_contact_with_trimmed_fields():
    plan = plan_for(job_title="Occupation")
    checked = check_row(
        ["1", "  Ada ", "Love\nlace", " ADA@Example.com", "Engineer", "", "gold"], plan, RULES
    )
    assert checked.contact == {
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Love lace",
        "job_title": "Engineer",
    }
    assert checked.key == "ada@example.com"
    assert checked.issues == ()


def test_empty_optional_fields_are_left_out_and_short_rows_padded():
    checked = check_row(["1", "", "", "x@example.com"], plan_for(job_title="Occupation"), RULES)
    assert checked.contact == {"email": "x@example.com"}


def test_long_names_are_truncated_by_default_and_reported():
    name = "N" * 60
    checked = check_row(["1", name, "L", "x@example.com"], plan_for(), RULES)
    assert checked.contact is not None and checked.contact["first_name"] == "N" * 50
    assert [(i.code, i.rejects_row) for i in checked.issues] == [("truncated", False)]
    assert "first_name truncated to 50" in checked.issues[0].reason


def test_long_names_are_rejected_when_the_policy_says_so():
    checked = check_row(["1", "N" * 51, "L", "x@example.com"], plan_for(), ValidationRules(too_long="reject"))
    assert checked.contact is None
    assert checked.issues[0].code == "too_long" and checked.issues[0].field == "first_name"
    assert checked.issues[0].rejects_row


def test_birthday_becomes_month_and_day_and_a_bad_date_only_drops_the_field():
    plan = plan_for(birthday="DateOfBirth")
    good = check_row(["1", "A", "B", "a@example.com", "", "5/8/1986"], plan, RULES)
    assert good.contact == {
        "email": "a@example.com",
        "first_name": "A",
        "last_name": "B",
        "birthday_month": 5,
        "birthday_day": 8,
    }
    bad = check_row(["1", "A", "B", "a@example.com", "", "31/31/1986"], plan, RULES)
    assert bad.contact is not None and "birthday_month" not in bad.contact
    assert bad.issues[0].code == "bad_date" and not bad.issues[0].rejects_row


@pytest.mark.parametrize(
    "raw,iso",
    [
        ("5/8/1986", "1986-05-08"),
        ("1986-05-08", "1986-05-08"),
        ("1986/5/8", "1986-05-08"),
        ("1986-05-08T00:00:00Z", "1986-05-08"),
        ("05-08-1986", "1986-05-08"),
        ("2/30/2000", None),
        ("soon", None),
        ("31.12.1980", "1980-12-31"),  # dotted: day first, whatever the setting
        ("12.31.1980", None),
        ("2/1/1980 12:00:00 AM", "1980-02-01"),  # Excel and Power BI: a date column with its time
        ("31.12.1980 23:59", "1980-12-31"),
        ("2/1/1980 noon", None),
    ],
)
def test_parse_date(raw, iso):
    parsed = parse_date(raw)
    assert (parsed.isoformat() if parsed else None) == iso


@pytest.mark.parametrize(
    ("raw", "month_first", "day_first"),
    [
        ("01/02/1975", "1975-01-02", "1975-02-01"),
        ("31/12/1980", None, "1980-12-31"),
        ("12/31/1980", "1980-12-31", None),
        ("05.06.1985", "1985-06-05", "1985-06-05"),
        ("1985-06-05", "1985-06-05", "1985-06-05"),
    ],
)
def test_day_first_reads_slashed_dates_day_first(raw, month_first, day_first):
    for flag, iso in ((False, month_first), (True, day_first)):
        parsed = parse_date(raw, day_first=flag)
        assert (parsed.isoformat() if parsed else None) == iso


def test_a_bad_date_says_which_forms_are_read():
    plan = plan_for(birthday="DateOfBirth")
    row = ["1", "A", "B", "a@example.com", "", "31/12/1980"]
    (issue,) = check_row(row, plan, RULES).issues
    assert "month/day/year, year-month-day or day.month.year" in issue.reason
    day_first = check_row(row, plan, ValidationRules(day_first=True))
    assert not day_first.issues and day_first.contact is not None
    assert (day_first.contact["birthday_month"], day_first.contact["birthday_day"]) == (12, 31)


def test_custom_fields_keep_up_to_255_characters():
    plan = plan_for(**{"cf:tier": "Loyalty Tier"})
    checked = check_row(["1", "", "", "a@example.com", "", "", "g" * 300], plan, RULES)
    assert checked.contact is not None and checked.contact["cf:tier"] == "g" * 255


def test_mapping_matches_headers_loosely_and_names_missing_columns():
    plan = plan_for()
    assert plan.email_index == 3
    with pytest.raises(SegmentError, match=r"'Mail' \(for email\) not found.*ContactId"):
        resolve(DataMapping(email="Mail"), COLUMNS, source="t.csv")


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"email": ""}, "email field is required"),
        ({"email": "e", "fields": ["jobtitle=X"]}, "unknown Constant Contact field 'jobtitle'"),
        ({"email": "e", "fields": ["job_title"]}, "CC_FIELD=COLUMN"),
        ({"email": "e", "fields": ["cf:bad name=X"]}, "custom field"),
        ({"email": "e", "fields": ["city=A", "city=B"]}, "mapped twice"),
        ({"email": "e", "fields": [f"cf:f{i}=c{i}" for i in range(26)]}, "at most 25"),
    ],
)
def test_mapping_errors_are_clear(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        DataMapping.from_args(**kwargs)
