"""Patient-identifying header fields: hidden unless `SLICEWISE_SHOW_PHI=1` (SPEC section 10).

`PHI_KEYS` are the DICOM keywords treated as identifying (name, ID, birth date, accession number,
study / series / acquisition dates and times, institution, physicians, address...). `redact(meta)`
returns a copy whose PHI values are replaced by `HIDDEN`; pages, exports and logs show that copy.
`pseudonym(value)` is a salted SHA-256 of an identifier (a PatientID used as a grouping key), the
salt kept in `<runs root>/.phi-salt` (created once, mode 0600) or given by `SLICEWISE_PHI_SALT`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HIDDEN = "hidden (de-identified display; SLICEWISE_SHOW_PHI=1 shows it)"
PHI_KEYS = frozenset({
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientAge", "PatientSex",
    "PatientAddress", "PatientTelephoneNumbers", "OtherPatientIDs", "OtherPatientNames",
    "OtherPatientIDsSequence", "PatientMotherBirthName", "MilitaryRank", "EthnicGroup", "PatientComments",
    "IssuerOfPatientID", "MedicalRecordLocator", "AccessionNumber", "StudyID", "StudyDate", "StudyTime",
    "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime", "ContentDate",
    "ContentTime", "InstanceCreationDate", "InstanceCreationTime", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "ReferringPhysicianName", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "OperatorsName", "RequestingPhysician", "StationName",
    "DeviceSerialNumber", "RequestAttributesSequence",
})


def show_phi() -> bool:
    return os.environ.get("SLICEWISE_SHOW_PHI", "").strip().lower() in ("1", "true", "yes")


def is_phi(key: str) -> bool:
    return str(key) in PHI_KEYS


def redact(meta: Mapping[str, Any], *, force: bool = False) -> dict[str, Any]:
    """A copy of `meta` with PHI values replaced by HIDDEN (unless SLICEWISE_SHOW_PHI=1 and not force)."""
    if show_phi() and not force:
        return dict(meta)
    return {k: (HIDDEN if is_phi(k) and v not in (None, "") else v) for k, v in meta.items()}


def _salt() -> bytes:
    env = os.environ.get("SLICEWISE_PHI_SALT", "").strip()
    if env:
        return env.encode()
    from core import settings

    path = Path(settings.runs_root()) / ".phi-salt"
    try:
        return path.read_bytes().strip() or _new_salt(path)
    except FileNotFoundError:
        return _new_salt(path)


def _new_salt(path: Path) -> bytes:
    salt = secrets.token_hex(16).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()  # another process made it first
    with os.fdopen(fd, "wb") as handle:
        handle.write(salt + b"\n")
    return salt


def pseudonym(value: str) -> str:
    """A stable, non-reversible stand-in for an identifier: 16 hex digits of a salted SHA-256."""
    return hashlib.sha256(_salt() + b"\0" + str(value).encode("utf-8")).hexdigest()[:16]
