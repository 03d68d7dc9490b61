"""Write apolo_node/data/deid_profile.json from DICOM PS3.15 Table E.1-1.

The package carries its own copy of the table so it never needs the reference file at run time.
Run it again when the reference is updated:

    python scripts/gen_deid_profile.py [REFERENCE_JSON] [OUT_JSON]

Our format: one object per row, ``tag`` as eight lower-case hex digits with ``x`` wildcards
(``60xx3000``) or ``private`` for the odd-group row, ``name``, ``basic`` (the Basic Profile code,
combined codes kept as written, e.g. ``X/Z/D``) and ``options``: our option name -> code, only
where the option changes the action.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference" / "ps3.15-table-e1-1.json"
OUT = ROOT / "apolo_node" / "data" / "deid_profile.json"

# Column of the reference file -> our option name (apolo_node.deid.profile.Option).
COLUMNS = {
    "rtnLongFullDatesOpt": "retain_long_full_dates",
    "rtnLongModifDatesOpt": "retain_long_modified_dates",
    "rtnPatCharsOpt": "retain_patient_chars",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnUIDsOpt": "retain_uids",
    "rtnSafePrivOpt": "retain_safe_private",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}
TAG = re.compile(r"\(([0-9A-FX]{4}),([0-9A-FX]{4})\)")


def pattern(tag: str) -> str:
    """``(60XX,3000)`` -> ``60xx3000``; the odd-group row -> ``private``."""
    if "ODD" in tag.upper():
        return "private"
    m = TAG.fullmatch(tag.strip().upper())
    if not m:
        raise ValueError(f"tag {tag!r}: not (gggg,eeee) with optional XX wildcards")
    return (m.group(1) + m.group(2)).lower()


def convert(rows: list[dict]) -> list[dict]:
    """Reference rows -> our rows, sorted by tag pattern."""
    out = []
    for row in rows:
        unknown = set(row) - set(COLUMNS) - {"name", "tag", "id", "basicProfile", "stdCompIOD"}
        if unknown:
            raise ValueError(f"row {row['tag']}: unknown columns {sorted(unknown)}")
        out.append(
            {
                "tag": pattern(row["tag"]),
                "name": " ".join(row["name"].split("(see Note")[0].split()),
                "basic": row["basicProfile"],
                "options": {COLUMNS[k]: row[k] for k in COLUMNS if k in row},
            }
        )
    return sorted(out, key=lambda r: r["tag"])


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else REFERENCE
    dst = Path(argv[2]) if len(argv) > 2 else OUT
    rows = convert(json.loads(src.read_text(encoding="utf-8")))
    lines = ",\n".join(json.dumps(r, ensure_ascii=True) for r in rows)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(
        '{"source": "DICOM PS3.15 Table E.1-1 (innolitics dicom-standard, January 2025)",\n'
        f'"rows": [\n{lines}\n]}}\n',
        encoding="utf-8",
    )
    print(f"{dst}: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
