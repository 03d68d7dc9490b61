"""Ordinary patients on real vendor headers: none refused by the verifier, none leaked.

Three hundred synthetic patients, named with common given and family names of many countries
(short ones too: Li, Wu, Ng, Le, Ali, Ann, Eve, Mary, Mark, Lee), are planted into the patient,
study and equipment modules of pydicom's bundled vendor files (GE CT and NM, Toshiba MR, RT,
Philips US, QIICR SEG, big-endian US, ...) and go through the real Deidentifier with the default
options and the verifier, header path only. The test then searches the written bytes outside
Pixel Data for every planted word and number with a boundary-aware search of its own.
"""

from __future__ import annotations

import io
import re
from functools import lru_cache

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from apolo_node.config import DeidSettings
from apolo_node.deid import Deidentifier, PHILeakError, verify_deidentified
from apolo_node.deid.verify import encode

KEY = b"names-test-key-0123456789abcdef"
TEMPLATES = [
    "CT_small.dcm",  # GE CT
    "MR_small.dcm",  # Toshiba MR
    "emri_small.dcm",  # MR
    "JPEG2000.dcm",  # GE NM, compressed
    "rtplan.dcm",  # RT Plan, implicit VR
    "rtdose.dcm",  # RT Dose, implicit VR
    "OBXXXX1A.dcm",  # Philips ultrasound
    "SC_rgb.dcm",  # secondary capture
    "liver.dcm",  # QIICR segmentation
    "ExplVR_BigEnd.dcm",  # G.E. ultrasound, big endian
]
FAMILY = (
    "Li Wu Ng Le Ali Lee Wang Zhang Liu Chen Yang Huang Zhao Garcia Rodriguez Martinez Hernandez "
    "Lopez Gonzalez Müller Schmidt Schneider Fischer Weber Nguyen Tran Pham Kim Park Choi Singh "
    "Kumar Sharma Patel Silva Santos Oliveira Souza Smith Johnson Williams Brown Jones Ivanov "
    "Smirnov Kuznetsov Kowalski Nowak Wiśniewski Yilmaz Kaya Demir Şahin Cohen Levi Mizrahi Rossi "
    "Russo Ferrari Sato Suzuki Takahashi Tanaka Ahmed Hassan Mohamed Hussein Okafor Okeke Mensah "
    "Boateng Dubois Martin Bernard Jensen Nielsen Hansen Andersson Johansson Murphy Kelly O'Brien"
).split() + ["Van der Berg", "De Jong", "Dos Santos"]
GIVEN = (
    "Mary Mark Ann Eve Ali Lee Li Wei Jing Min Yan Hui Fatima Mohammed Ahmed Aisha Omar Maria José "
    "Juan Sofia Lucas Emma Olivia Noah Liam James John Robert Michael David Anna Olga Ivan Dmitri "
    "Yuki Hiroshi Haruto Sakura Ji-woo Min-jun Seo-yeon Priya Aarav Raj Sita Chinedu Ngozi Amara "
    "Kwame Ama Mehmet Ayşe Elif Giulia Marco Francesca Lars Ingrid Søren Zoë Chloé Jürgen Łukasz "
    "Ewa Anh Linh Thi Kofi Wu Ng Le"
).split() + ["Mary Ann", "Jean-Luc"]
CITIES = "Lagos Hanoi Seoul Lyon Porto Kraków Izmir Osaka Pune Accra Leeds Haifa Turin Malmö".split()
PATIENTS = 300


def planted(i: int) -> dict[str, str]:
    """Patient ``i``'s identifying values (deterministic, so a failure can be replayed)."""
    family, given = FAMILY[i % len(FAMILY)], GIVEN[(i * 7 + i // len(FAMILY)) % len(GIVEN)]
    doctor = f"{FAMILY[(i * 13 + 5) % len(FAMILY)]}^{GIVEN[(i * 11 + 3) % len(GIVEN)]}^^Dr"
    city = CITIES[i % len(CITIES)]
    formats = [
        f"{10_000_000 + i * 7919}",
        f"MRN{400_000 + i * 37}",
        f"{i % 900 + 100}-{i * 53 % 10_000:04d}-X",
    ]
    return {
        "PatientName": f"{family}^{given}",
        "PatientID": formats[i % 3],
        "OtherPatientIDs": f"NHS{9_000_000_000 - i * 104_729}",
        "PatientBirthDate": f"{1930 + i % 90}{1 + i % 12:02d}{1 + i % 28:02d}",
        "PatientMotherBirthName": f"{FAMILY[(i * 3 + 1) % len(FAMILY)]}^{GIVEN[(i * 5) % len(GIVEN)]}",
        "PatientAddress": f"{i % 200 + 1} {family} Street, {city}",
        "PatientTelephoneNumbers": f"+{i % 90 + 10} {i * 7 % 1000:03d} 555 {i % 10_000:04d}",
        "AccessionNumber": f"ACC{i:05d}{i * 31 % 97:02d}",
        "ReferringPhysicianName": doctor,
        "PerformingPhysicianName": f"{FAMILY[(i * 17 + 2) % len(FAMILY)]}^{GIVEN[(i * 3 + 1) % len(GIVEN)]}",
        "OperatorsName": f"{FAMILY[(i * 19 + 7) % len(FAMILY)]}^{GIVEN[(i * 23 + 9) % len(GIVEN)]}",
        "InstitutionName": f"{city} General Hospital",
        "InstitutionAddress": f"{i % 90 + 1} Hospital Road, {city}",
        "StationName": f"{family[:6].upper()}CT{i % 10}",
    }


@lru_cache(maxsize=None)
def template_file(name: str) -> bytes:
    with open(get_testdata_file(name), "rb") as fh:
        return fh.read()


def template(name: str) -> Dataset:
    """A fresh read of the vendor file (cheaper than a deep copy: values stay raw until used)."""
    return dcmread(io.BytesIO(template_file(name)))


@lru_cache(maxsize=None)
def template_bytes(name: str) -> bytes:
    """The vendor file's own bytes outside Pixel Data: words found there are the vendor's."""
    return outside_pixels(encode(template(name)))


def patient_file(i: int) -> Dataset:
    """A copy of a vendor file with patient ``i`` planted (UTF-8, so every name can be written)."""
    ds = template(TEMPLATES[i % len(TEMPLATES)])
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword, value in planted(i).items():
        setattr(ds, keyword, value)
    return ds


def outside_pixels(encoded: bytes) -> bytes:
    """The written bytes less the Pixel Data value (burned-in text is not this test's subject)."""
    raw = dcmread(io.BytesIO(encoded), force=True).get_item(0x7FE00010)
    if raw is None or raw.value is None:
        return encoded
    return encoded[: raw.value_tell] + b"\x00" + encoded[raw.value_tell + len(raw.value) :]


def words(value: str) -> set[str]:
    """The words (two letters or more) and long numbers (six digits or more) of a planted value."""
    return {w for w in re.findall(r"[^\W_]+", value) if len(w) >= 2 and (not w.isdigit() or len(w) >= 6)}


def found(candidates: set[str], data: bytes) -> set[str]:
    """Which ``candidates`` stand in ``data`` (read as UTF-8) between non-letters/digits, any case."""
    if not candidates:
        return set()
    text = data.decode("utf-8", "surrogateescape")
    alternatives = "|".join(re.escape(w) for w in sorted(candidates, key=len, reverse=True))
    pattern = re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])", re.IGNORECASE)
    lowered = {w.lower(): w for w in candidates}
    return {lowered[m.group().lower()] for m in pattern.finditer(text) if m.group().lower() in lowered}


def test_the_names_cover_many_countries_and_the_short_ones():
    assert {"Li", "Wu", "Ng", "Le", "Ali", "Lee"} <= set(FAMILY)
    assert {"Ann", "Eve", "Mary", "Mark"} <= set(GIVEN)
    assert len(FAMILY) >= 80 and len(GIVEN) >= 70


def test_common_names_on_vendor_headers_are_neither_refused_nor_leaked():
    deid = Deidentifier(KEY, DeidSettings().options)
    refused: list[str] = []
    leaked: list[str] = []
    for i in range(PATIENTS):
        ds = patient_file(i)
        out = deid(ds)
        encoded = encode(out)
        try:
            verify_deidentified(ds, out, deid.profile, encoded)
        except PHILeakError as exc:
            refused.append(f"patient {i} on {TEMPLATES[i % len(TEMPLATES)]}: {exc}")
            continue
        planted_words = {w: k for k, v in planted(i).items() for w in words(v)}
        here = found(set(planted_words), outside_pixels(encoded))
        vendor = found(here, template_bytes(TEMPLATES[i % len(TEMPLATES)]))
        for word in sorted(here - vendor):  # the vendor's own words may stay
            leaked.append(f"patient {i}: a word of {planted_words[word]} on {TEMPLATES[i % len(TEMPLATES)]}")
    assert refused == []
    assert leaked == []


@pytest.mark.parametrize("i", [0, 1, 3, 4])  # Li^..., Wu^..., Le^..., Ali^...
def test_the_own_search_finds_a_planted_short_name_written_back(i):
    """The test's search is not blind: a name written into a kept text is found, and refused."""
    deid = Deidentifier(KEY, DeidSettings().options)
    ds = patient_file(i)
    out = deid(ds)
    family = planted(i)["PatientName"].split("^")[0]
    out.ImageComments = f"for {family}, see chart"
    encoded = encode(out)
    assert found({family}, outside_pixels(encoded)) == {family}
    with pytest.raises(PHILeakError, match=r"PatientName\(0010,0010\).*at ImageComments"):
        verify_deidentified(ds, out, deid.profile, encoded)
