"""A realistic, deterministic Customer-Insights-like segment CSV, fast enough for a million rows.

Plain Python with precomputed pools (no Faker): the random choices per column are drawn in bulk with
``random.Random(seed).choices`` and the rows are written with :mod:`csv` in batches. The same ``rows`` and
``seed`` always give the same bytes (for one Python version), so a file on disk is reused by name.

What makes it realistic for the exporter's hot path:

* the columns of a Customer Insights contact export (ContactId ... Email Subscriber);
* names, cities and countries with accents (é, ñ, ü, ø, ç, ł...), some quoted cells (commas in names
  and cities), some mixed-case or padded addresses that are valid once normalised;
* about 3% invalid emails: no ``@``, an inner space, longer than 80 characters, a local part over
  64 characters, two ``@``, no dot in the domain, empty;
* about 2% duplicate emails (the address of an earlier row, a third of them in another case);
* a few internationalised domains (IDNA path), over-long names (truncation) and bad birth dates.

``changed=True`` writes the same profiles with 1% of them edited (City and Loyalty Tier), for the
incremental re-run measurement.
"""

from __future__ import annotations

import csv
import os
import random
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

GENERATOR_VERSION = 1  # bump when the output changes, so cached files are not reused by mistake
CHANGE_EVERY = 100  # incremental variant: one profile in 100 is edited (1%)
CHANGE_OFFSET = 37

COLUMNS = (
    "ContactId",
    "FirstName",
    "LastName",
    "FullName",
    "EMail",
    "Telephone",
    "City",
    "State",
    "Country",
    "DateOfBirth",
    "Loyalty Tier",
    "Email Subscriber",
)

FIRST_NAMES = (
    "Abbie", "Kenneth", "Olivia", "Liam", "Emma", "Noah", "Ava", "Lucas", "Mia", "Ethan", "Sophia",
    "Mason", "Isabella", "Logan", "Amelia", "James", "Harper", "Elijah", "Evelyn", "Benjamin", "Abigail",
    "William", "Emily", "Alexander", "Elizabeth", "Michael", "Sofía", "Daniel", "Avery", "Henry", "Ella",
    "Jackson", "Scarlett", "Sebastián", "Grace", "Aiden", "Chloé", "Matthew", "Victoria", "Samuel", "Riley",
    "David", "Aria", "Joseph", "Lily", "Carter", "Aubrey", "Owen", "Zoë", "Wyatt", "Penélope", "John",
    "Layla", "Jack", "Nora", "Luke", "Camila", "Jayden", "Hannah", "Dylan", "Addison", "Gabriel",
    "Eleanor", "Isaac", "Stella", "Anthony", "Natalie", "José", "María", "Jürgen", "Søren", "Björn",
    "François", "Renée", "Inés", "Ángel", "Jesús", "Raúl", "Begoña", "Iñaki", "Núria", "Joël", "Anaïs",
    "Hélène", "Cécile", "Gaëlle", "Jérôme", "Élodie", "Loïc", "Mathéo", "Léa", "Zoé", "Dorothée",
    "Günter", "Jörg", "Käthe", "Ulrike", "Lükas", "Mäja", "Åsa", "Øystein", "Ingrid", "Bjørn", "Märta",
    "Sigrún", "Þóra", "Kristín", "Małgorzata", "Łukasz", "Paweł", "Zoltán", "Ágnes", "Dóra", "Tomáš",
    "Jiří", "Radek", "Conceição", "João", "Gonçalo", "Inês", "Leopoldo", "Aurélien", "Siobhán", "Seán",
    "Niamh", "Ciarán", "Aoife", "Mehmet", "Ayşe", "Çağla", "Oğuz", "Yusuf", "Fatima", "Priya", "Arjun",
    "Wei", "Yuki", "Hiro", "Min-jun", "Ji-woo", "Nguyễn", "Thảo", "Kwame", "Ama", "Chidi", "Ngozi",
)  # fmt: skip

LAST_NAMES = (
    "Moss", "Beraun", "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson",
    "Anderson", "Taylor", "Thomas", "Moore", "Martin", "Jackson", "Thompson", "White", "Harris", "Clark",
    "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Hill", "Green", "Adams",
    "Baker", "Nelson", "Carter", "Mitchell", "Roberts", "Turner", "Phillips", "Campbell", "Parker",
    "Evans", "Edwards", "Collins", "Stewart", "Morris", "O'Brien", "O'Connor", "McCarthy", "García",
    "Martínez", "Rodríguez", "López", "González", "Hernández", "Pérez", "Sánchez", "Ramírez", "Muñoz",
    "Núñez", "Ibáñez", "Peña", "Castañeda", "Ordóñez", "Müller", "Schröder", "Schäfer", "Köhler",
    "Günther", "Weiß", "Groß", "Brückner", "Jäger", "Lefèvre", "Dubois", "Lefebvre", "Bérénger",
    "Gérard", "Mercier", "Rousseau", "Fournier", "Girard", "Lemaître", "Bélanger", "Côté", "Gagné",
    "Østergaard", "Sørensen", "Jørgensen", "Kjær", "Lindström", "Åberg", "Söderberg", "Ångström",
    "Nordqvist", "Þórsson", "Guðmundsdóttir", "Kowalski", "Wiśniewski", "Wójcik", "Kamiński", "Łapiński",
    "Nováková", "Dvořák", "Černý", "Horváth", "Szabó", "Tóth", "Nagy", "Gonçalves", "Magalhães",
    "Conceição", "Araújo", "Simões", "Ó Briain", "Ní Bhriain", "Y\u0131lmaz", "Öztürk", "Şahin", "Çelik",
    "Patel", "Sharma", "Nguyen", "Trần", "Lê", "Kim", "Park", "Tanaka", "Satō", "Okafor", "Mensah",
    "van der Berg", "de la Cruz", "dos Santos", "Smith-Jones", "Fernández-Castillo",
)  # fmt: skip

# (City, State, Country, weight): mostly the US, the rest of the world with its accents.
PLACES = (
    ("Fairfield", "California", "USA", 6), ("Amarillo", "Texas", "USA", 5), ("Seattle", "Washington", "USA", 8),
    ("Redmond", "Washington", "USA", 4), ("Austin", "Texas", "USA", 6), ("Chicago", "Illinois", "USA", 8),
    ("New York", "New York", "USA", 10), ("Boston", "Massachusetts", "USA", 5), ("Denver", "Colorado", "USA", 4),
    ("Miami", "Florida", "USA", 5), ("Atlanta", "Georgia", "USA", 4), ("Portland", "Oregon", "USA", 3),
    ("Phoenix", "Arizona", "USA", 4), ("San José", "California", "USA", 3), ("Santa Fe", "New Mexico", "USA", 2),
    ("Cañon City", "Colorado", "USA", 1), ("Washington, D.C.", "District of Columbia", "USA", 3),
    ("St. Louis", "Missouri", "USA", 2), ("Coeur d'Alene", "Idaho", "USA", 1),
    ("Montréal", "Québec", "Canada", 3), ("Québec", "Québec", "Canada", 2), ("Toronto", "Ontario", "Canada", 3),
    ("Trois-Rivières", "Québec", "Canada", 1), ("México", "CDMX", "México", 2), ("Mérida", "Yucatán", "México", 1),
    ("São Paulo", "SP", "Brasil", 2), ("Florianópolis", "SC", "Brasil", 1), ("Bogotá", "Cundinamarca", "Colombia", 1),
    ("Málaga", "Andalucía", "España", 1), ("A Coruña", "Galicia", "España", 1), ("Logroño", "La Rioja", "España", 1),
    ("Zürich", "ZH", "Schweiz", 1), ("Genève", "GE", "Suisse", 1), ("München", "Bayern", "Deutschland", 2),
    ("Köln", "Nordrhein-Westfalen", "Deutschland", 1), ("Düsseldorf", "Nordrhein-Westfalen", "Deutschland", 1),
    ("Tromsø", "Troms", "Norge", 1), ("Ålesund", "Møre og Romsdal", "Norge", 1), ("Århus", "Midtjylland", "Danmark", 1),
    ("Malmö", "Skåne", "Sverige", 1), ("Göteborg", "Västra Götaland", "Sverige", 1), ("Reykjavík", "", "Ísland", 1),
    ("Kraków", "Małopolskie", "Polska", 1), ("Łódź", "Łódzkie", "Polska", 1), ("Brno", "Jihomoravský kraj", "Česko", 1),
    ("Plzeň", "Plzeňský kraj", "Česko", 1), ("Pécs", "Baranya", "Magyarország", 1), ("İstanbul", "İstanbul", "Türkiye", 1),
    ("Paris", "Île-de-France", "France", 2), ("Besançon", "Bourgogne-Franche-Comté", "France", 1),
    ("Nîmes", "Occitanie", "France", 1), ("Dublin", "Leinster", "Ireland", 1), ("Lisboa", "Lisboa", "Portugal", 1),
    ("Hồ Chí Minh", "", "Việt Nam", 1), ("London", "England", "United Kingdom", 3),
)  # fmt: skip

DOMAINS = (
    "gmail.com", "outlook.com", "hotmail.com", "yahoo.com", "icloud.com", "aol.com", "live.com", "msn.com",
    "proton.me", "gmx.de", "web.de", "orange.fr", "free.fr", "libero.it", "yahoo.es", "telefonica.net",
    "uol.com.br", "comcast.net", "verizon.net", "att.net", "contoso.com", "fabrikam.com", "adventure-works.com",
    "northwindtraders.com", "wideworldimporters.com", "tailspintoys.com", "collinsreedandhoward.com",
    "kimboyle.com", "mail.example.co.uk", "post.example.no", "example.org", "example.io",
)  # fmt: skip
IDN_DOMAINS = ("münchen-mail.de", "café-paris.fr", "bücher.example", "españa-correo.es", "ålesund.no")
LONG_DOMAIN = "customer-relationship-department.international-holdings-example.com"  # 67 characters
TIERS = ("low", "medium", "high", "")
TIER_WEIGHTS = (40, 35, 20, 5)

_ASCII_FOLD = str.maketrans(
    {"ø": "o", "Ø": "O", "ß": "ss", "æ": "ae", "Æ": "AE", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "þ": "th", "Þ": "Th", "ð": "d", "\u0131": "i"}
)  # fmt: skip


def ascii_slug(name: str) -> str:
    """``Núñez-Østergaard`` -> ``nunezostergaard``: what people put in the local part of an address."""
    folded = unicodedata.normalize("NFKD", name.translate(_ASCII_FOLD))
    return "".join(c for c in folded if c.isascii() and c.isalnum()).lower()


@dataclass(frozen=True)
class Dataset:
    path: Path
    rows: int
    seed: int
    changed: bool
    reused: bool
    seconds: float
    size_bytes: int
    changed_rows: int


def dataset_path(out_dir: Path, rows: int, seed: int, *, changed: bool = False) -> Path:
    suffix = "-changed1pct" if changed else ""
    return out_dir / f"segment-{rows}-s{seed}-v{GENERATOR_VERSION}{suffix}.csv"


def ensure_dataset(out_dir: Path, rows: int, seed: int, *, changed: bool = False) -> Dataset:
    """The segment file for (rows, seed), generated unless it is already on disk."""
    path = dataset_path(out_dir, rows, seed, changed=changed)
    changed_rows = len(range(CHANGE_OFFSET, rows, CHANGE_EVERY)) if changed else 0
    if path.is_file() and path.stat().st_size > 0:
        return Dataset(path, rows, seed, changed, True, 0.0, path.stat().st_size, changed_rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write_segment(tmp, rows, seed, changed=changed)
        tmp.replace(path)  # atomic: a half-written file is never reused
    finally:
        tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    return Dataset(path, rows, seed, changed, False, seconds, path.stat().st_size, changed_rows)


def write_segment(path: Path, rows: int, seed: int, *, changed: bool = False) -> None:
    """Write ``rows`` profiles (plus the header) to ``path``; deterministic for a given seed."""
    rng = random.Random(seed)
    n = rows
    first_ix = rng.choices(range(len(FIRST_NAMES)), k=n)
    last_ix = rng.choices(range(len(LAST_NAMES)), k=n)
    place_ix = rng.choices(range(len(PLACES)), weights=[p[3] for p in PLACES], k=n)
    domain_ix = rng.choices(range(len(DOMAINS)), k=n)
    tiers = rng.choices(TIERS, weights=TIER_WEIGHTS, k=n)
    rolls = [rng.random() for _ in range(n)]  # one uniform per row decides the email's fate
    shapes = rng.choices(range(6), k=n)
    extras = [rng.random() for _ in range(n)]  # names, phones, birth dates
    phones = [rng.randrange(200_000_0000, 999_999_9999) for _ in range(n)]
    births = [rng.randrange(0, 66 * 365) for _ in range(n)]

    firsts = FIRST_NAMES
    lasts = LAST_NAMES
    first_slugs = [ascii_slug(f) for f in FIRST_NAMES]
    last_slugs = [ascii_slug(s) for s in LAST_NAMES]
    domains = DOMAINS
    emails: list[str] = [""] * n

    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        batch: list[tuple[str, ...]] = []
        for i in range(n):
            fi, li = first_ix[i], last_ix[i]
            first, last = firsts[fi], lasts[li]
            fs, ls = first_slugs[fi], last_slugs[li]
            x = extras[i]
            # -- email -------------------------------------------------------------------------
            roll = rolls[i]
            if roll < 0.02 and i > 1000:  # duplicate of an earlier profile's address
                email = emails[rng.randrange(i)]
                if roll < 0.007:
                    email = email.upper()
                elif roll < 0.009:
                    email = f" {email.capitalize()} "
            else:
                shape = shapes[i]
                tag = f"{i:x}" if shape < 3 else str(i)
                if shape in (0, 3):
                    local = f"{fs}.{ls}{tag}"
                elif shape in (1, 4):
                    local = f"{fs}_{ls}{tag}"
                elif shape == 2:
                    local = f"{fs[:1]}{ls}{tag}"
                else:
                    local = f"{ls}.{fs}.{tag}"
                domain = domains[domain_ix[i]]
                if roll < 0.030:  # ~1.0% no "@"
                    email = f"{local}{domain}" if roll < 0.025 else f"{local} at {domain}"
                elif roll < 0.040:  # ~1.0% an inner space
                    email = f"{fs} {ls}{tag}@{domain}" if roll < 0.036 else f"{local}@ {domain}"
                elif roll < 0.045:  # ~0.5% valid shape, longer than 80 characters
                    email = f"{local}.{fs}.{ls}@{LONG_DOMAIN}"
                elif roll < 0.046:  # ~0.1% local part over 64 characters
                    email = f"{local}.{'x' * 64}@{domain}"
                elif roll < 0.048:  # ~0.2% two "@"
                    email = f"{local}@{fs}@{domain}"
                elif roll < 0.050:  # ~0.2% no dot in the domain
                    email = f"{local}@{domain.split('.', 1)[0]}"
                elif roll < 0.053:  # ~0.3% empty
                    email = ""
                elif roll < 0.054:  # ~0.1% internationalised domain (valid, IDNA-encoded)
                    email = f"{local}@{IDN_DOMAINS[i % len(IDN_DOMAINS)]}"
                elif roll < 0.080:  # ~2.6% mixed case or padded: valid once normalised
                    email = f"{first[:1]}{local[1:]}@{domain.upper() if roll < 0.07 else domain} "
                else:
                    email = f"{local}@{domain}"
            emails[i] = email
            # -- other cells ---------------------------------------------------------------------
            if x < 0.0005:  # over 50 characters: truncated by the exporter (a warning)
                first = f"{first}-{'-'.join(FIRST_NAMES[(fi + k) % len(FIRST_NAMES)] for k in range(1, 8))}"
            full = f"{last}, {first}" if x < 0.05 else f"{first} {last}"
            p = phones[i]
            if x < 0.10:
                phone = ""
            elif x < 0.55:
                phone = f"{p // 10_000_000:03d}.{p // 10_000 % 1000:03d}.{p % 10_000:04d}"
            elif x < 0.75:
                phone = f"({p // 10_000_000:03d}) {p // 10_000 % 1000:03d}-{p % 10_000:04d}"
            elif x < 0.90:
                phone = f"+1 {p // 10_000_000:03d}-{p // 10_000 % 1000:03d}-{p % 10_000:04d} x{p % 997}"
            else:
                phone = f"+34 {p % 1_000_000_000:09d}"
            b = births[i]
            year, month, day = 1940 + b // 365, 1 + b % 12, 1 + b % 28
            if x < 0.05:
                dob = ""
            elif x < 0.055:
                dob = f"{year}-{month:02d}-{day:02d}"
            elif x < 0.057:
                dob = f"{day + 12}/{month}/{year}"  # day first: not a date the exporter accepts
            else:
                dob = f"{month}/{day}/{year}"
            city, state, country, _weight = PLACES[place_ix[i]]
            tier = tiers[i]
            if changed and i % CHANGE_EVERY == CHANGE_OFFSET:
                city, state, country, _weight = PLACES[(place_ix[i] + 1) % len(PLACES)]
                tier = TIERS[(TIERS.index(tier) + 1) % 3]
            batch.append(
                (
                    f"CNTID_{1000 + i}",
                    first,
                    last,
                    full,
                    email,
                    phone,
                    city,
                    state,
                    country,
                    dob,
                    tier,
                    "Yes" if x > 0.15 else "No",
                )
            )
            if len(batch) >= 20_000:
                writer.writerows(batch)
                batch.clear()
        writer.writerows(batch)
