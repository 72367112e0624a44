"""DICOM readers: a series in a folder (CT, MR) and single files (multi-frame, X-ray, colour).

Series: headers are read first (`stop_before_pixels`, in a thread pool), grouped by
SeriesInstanceUID (the largest series wins, the others are named in a warning; pass
`series_uid` to `read_dicom_series` to pick one), ordered by ImagePositionPatient projected on
the slice normal (the cross product of the ImageOrientationPatient rows), never by file name or
InstanceNumber. Pixels then go straight into a preallocated float32 array, slice by slice in the
thread pool, with each slice's RescaleSlope/RescaleIntercept applied (HU for CT). Uncompressed
little-endian slices are read as the raw trailing Pixel Data element, which skips a second parse;
anything else goes through pydicom's decoders (pylibjpeg: JPEG, JPEG-LS, JPEG 2000, RLE).
"""

from __future__ import annotations

import os
import struct
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from core.errors import VolumeReadError
from core.io._common import spacing_report, to_grey
from core.io.budget import check_decoded, is_regular, regular_file
from core.volume import MODALITIES, Volume

NOT_DICOM_SUFFIXES = {
    ".json", ".csv", ".txt", ".md", ".npy", ".npz", ".png", ".jpg", ".jpeg", ".nii", ".gz", ".nrrd",
    ".nhdr", ".raw", ".xml", ".html", ".pdf", ".zip", ".py", ".log", ".lock", ".bmp", ".tif", ".tiff",
}
META_KEYS = (
    "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Modality", "Manufacturer",
    "ManufacturerModelName", "StudyDate", "StudyDescription", "SeriesDescription", "SeriesNumber",
    "BodyPartExamined", "SliceThickness", "SpacingBetweenSlices", "KVP", "XRayTubeCurrent", "Exposure",
    "ConvolutionKernel", "WindowCenter", "WindowWidth", "RescaleType", "Rows", "Columns", "BitsStored",
    "PhotometricInterpretation", "MagneticFieldStrength", "EchoTime", "RepetitionTime", "FlipAngle",
    "ViewPosition", "SOPClassUID",
)
_FIRST_ONLY = {"WindowCenter", "WindowWidth"}
# What sorting and reading a slice of a series needs: parsing only these is ~40% faster than a full header.
SLICE_TAGS = (
    "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "SeriesDescription", "Modality", "InstanceNumber",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "ImagerPixelSpacing", "SliceThickness",
    "SpacingBetweenSlices", "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated",
    "BitsStored", "PixelRepresentation", "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept",
    "ModalityLUTSequence",
)
_NATIVE_LE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_PIXEL_TAG = b"\xe0\x7f\x10\x00"
_WORKERS = min(8, 2 * (os.cpu_count() or 1))


def _modality(code: str) -> str:
    return code if code in MODALITIES else "OT"


def _plain(key: str, value: object) -> str | float | int:
    """A header value as a plain str, float or int (first item of multi-valued windows)."""
    if isinstance(value, MultiValue | list | tuple):
        if key in _FIRST_ONLY and len(value):
            return _plain(key, value[0])
        return "\\".join(str(v) for v in value)
    if isinstance(value, float):  # DSfloat
        return float(value)
    if isinstance(value, int):  # IS
        return int(value)
    return str(value)


def header_meta(ds: Dataset) -> dict:
    """Useful header values as a flat dict of plain values."""
    meta: dict = {"format": "DICOM"}
    for key in META_KEYS:
        value = ds.get(key)
        if value is not None and value != "":
            meta[key] = _plain(key, value)
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and "TransferSyntaxUID" in file_meta:
        meta["TransferSyntaxUID"] = str(file_meta.TransferSyntaxUID)
        meta["TransferSyntax"] = file_meta.TransferSyntaxUID.name
    return meta


def has_dicom_magic(path: Path) -> bool:
    if not is_regular(path):  # never open a FIFO or a device: it could block or never end
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def read_header(path: Path, *, pixels: bool = False, tags: tuple[str, ...] | None = None) -> Dataset:
    """Parse a DICOM file (headers only unless `pixels`; only `tags` when given).

    Raises VolumeReadError naming the file.
    """
    regular_file(path)
    force = not has_dicom_magic(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=not pixels, force=force,
                             specific_tags=list(tags) if tags else None)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, struct.error) as exc:
        raise VolumeReadError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    if force and "SOPClassUID" not in ds and "Rows" not in ds:
        raise VolumeReadError(path, "not a DICOM file (no 'DICM' marker and no DICOM header found)")
    return ds


# ---------------------------------------------------------------------------------------------- series


@dataclass
class SliceHeader:
    """What sorting and reading one slice needs, taken from its header."""

    path: Path
    ds: Dataset
    series_uid: str
    rows: int
    columns: int
    orientation: tuple[float, ...] | None
    position: np.ndarray | None
    instance: int
    frames: int
    slope: float = 1.0
    intercept: float = 0.0
    projection: float = 0.0


def _floats(value: object, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _slice_header(path: Path) -> SliceHeader:
    ds = read_header(path, tags=SLICE_TAGS)
    if "Rows" not in ds or "Columns" not in ds:
        sop = ds.get("SOPClassUID")
        name = getattr(sop, "name", sop)
        raise VolumeReadError(path, f"DICOM without an image (no Rows/Columns; SOP class {name})")
    position = _floats(ds.get("ImagePositionPatient"), 3)
    return SliceHeader(
        path=path, ds=ds, series_uid=str(ds.get("SeriesInstanceUID", "")),
        rows=int(ds.Rows), columns=int(ds.Columns),
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        position=None if position is None else np.array(position),
        instance=int(ds.get("InstanceNumber") or 0), frames=int(ds.get("NumberOfFrames") or 1),
        slope=float(ds.get("RescaleSlope", 1.0) or 1.0),
        intercept=float(ds.get("RescaleIntercept", 0.0) or 0.0),
    )


def dicom_files_in(folder: Path) -> list[Path]:
    """Candidate DICOM files directly in `folder`: visible regular files minus known non-DICOM types."""
    out = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise VolumeReadError(folder, f"folder cannot be listed ({exc.strerror or exc})") from exc
    for entry in entries:
        if entry.name.startswith(".") or entry.name.upper() == "DICOMDIR":
            continue
        try:
            if not entry.is_file():  # follows links: FIFOs, devices, sockets, loops are skipped
                continue
        except OSError:
            continue
        if Path(entry.name).suffix.lower() in NOT_DICOM_SUFFIXES:
            continue
        out.append(Path(entry.path))
    return out


def _read_headers(files: list[Path]) -> tuple[list[SliceHeader], dict[Path, str]]:
    def one(path: Path) -> SliceHeader | str:
        try:
            return _slice_header(path)
        except VolumeReadError as exc:
            return exc.problem

    with ThreadPoolExecutor(_WORKERS) as pool:
        results = list(pool.map(one, files))
    headers = [r for r in results if isinstance(r, SliceHeader)]
    failed = {p: r for p, r in zip(files, results, strict=True) if isinstance(r, str)}
    return headers, failed


def _choose_series(headers: list[SliceHeader], folder: Path, series_uid: str | None,
                   warnings: list[str]) -> list[SliceHeader]:
    groups: dict[str, list[SliceHeader]] = defaultdict(list)
    for h in headers:
        groups[h.series_uid].append(h)
    if series_uid is not None:
        if series_uid not in groups:
            raise VolumeReadError(folder, f"no series {series_uid} here; series found: {sorted(groups)}")
        return groups[series_uid]
    chosen = max(groups, key=lambda uid: (len(groups[uid]), uid))
    if len(groups) > 1:
        others = ", ".join(
            f"{uid} ({len(g)} files, {g[0].ds.get('SeriesDescription', '') or 'no description'})"
            for uid, g in sorted(groups.items()) if uid != chosen
        )
        warnings.append(
            f"{folder}: holds {len(groups)} series; loaded the largest, {chosen} "
            f"({len(groups[chosen])} files); "
            f"not loaded: {others} (choose one with core.io.dicom.read_dicom_series(folder, series_uid=...))"
        )
    return groups[chosen]


def _consistent(headers: list[SliceHeader], folder: Path, warnings: list[str]) -> list[SliceHeader]:
    """Keep the slices of the most common shape and orientation; name what was dropped."""
    def key(h: SliceHeader) -> tuple:
        orient = None if h.orientation is None else tuple(np.round(h.orientation, 3))
        return (h.rows, h.columns, orient)

    counts = Counter(key(h) for h in headers)
    best = counts.most_common(1)[0][0]
    kept = [h for h in headers if key(h) == best]
    if len(kept) < len(headers):
        dropped = [h.path.name for h in headers if key(h) != best]
        warnings.append(
            f"{folder}: {len(dropped)} file(s) of this series differ in size or orientation from the other "
            f"{len(kept)} and were left out: {', '.join(dropped[:10])}"
        )
    return kept


def _normal(orientation: tuple[float, ...] | None) -> np.ndarray:
    if orientation is None:
        return np.array([0.0, 0.0, 1.0])
    return np.cross(np.array(orientation[:3]), np.array(orientation[3:]))


def _sort_slices(
    headers: list[SliceHeader], folder: Path, warnings: list[str]
) -> tuple[list[SliceHeader], float]:
    """Order by position along the slice normal; drop duplicate positions; z spacing from positions."""
    if any(h.position is None for h in headers):
        warnings.append(f"{folder}: some slices lack ImagePositionPatient; ordered by InstanceNumber instead")
        ordered = sorted(headers, key=lambda h: (h.instance, h.path.name))
        ds = ordered[0].ds
        dz = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
        return ordered, dz
    normal = _normal(headers[0].orientation)
    for h in headers:
        h.projection = float(np.dot(h.position, normal))
    ordered = sorted(headers, key=lambda h: (h.projection, h.instance, h.path.name))
    ordered = _drop_duplicates(ordered, folder, warnings)
    if len(ordered) == 1:
        ds = ordered[0].ds
        return ordered, float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
    dz, gap_warnings = spacing_report(np.array([h.projection for h in ordered]), str(folder))
    warnings.extend(gap_warnings)
    return ordered, dz


def _drop_duplicates(ordered: list[SliceHeader], folder: Path, warnings: list[str]) -> list[SliceHeader]:
    kept, dups = [ordered[0]], []
    for h in ordered[1:]:
        if abs(h.projection - kept[-1].projection) < 1e-3:
            dups.append(f"{h.path.name} (same position as {kept[-1].path.name}, {h.projection:.3f} mm)")
        else:
            kept.append(h)
    if dups:
        warnings.append(
            f"{folder}: {len(dups)} slice(s) share a position with another slice and were left out: "
            + ", ".join(dups[:10])
        )
    return kept


def _raw_pixels(h: SliceHeader) -> np.ndarray | None:
    """Native little-endian grey pixels read as the file's trailing Pixel Data element, else None."""
    ds = h.ds
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    bits, rep = int(ds.get("BitsAllocated", 0)), int(ds.get("PixelRepresentation", 0))
    if (syntax not in _NATIVE_LE or h.frames != 1 or int(ds.get("SamplesPerPixel", 1)) != 1
            or bits not in (8, 16, 32) or (rep == 1 and int(ds.get("BitsStored", bits)) != bits)
            or "ModalityLUTSequence" in ds):
        return None
    nbytes = h.rows * h.columns * bits // 8
    padded = nbytes + nbytes % 2
    head = 12 if syntax == ExplicitVRLittleEndian else 8
    with open(h.path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size < padded + head:
            return None
        fh.seek(size - padded - head)
        blob = fh.read(padded + head)
    if blob[:4] != _PIXEL_TAG or struct.unpack("<I", blob[head - 4:head])[0] != padded:
        return None
    dtype = np.dtype(f"<{'i' if rep else 'u'}{bits // 8}")
    return np.frombuffer(blob, dtype=dtype, count=h.rows * h.columns, offset=head).reshape(h.rows, h.columns)


def _decoded_pixels(h: SliceHeader) -> tuple[np.ndarray, float, float]:
    """Full parse and decode (compressed syntaxes, colour, LUTs): modality values, slope 1, intercept 0."""
    ds = read_header(h.path, pixels=True)
    _check_pixel_budget(ds, h.path)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # decoders raise many types (ValueError, RuntimeError, NotImplementedError)
        raise VolumeReadError(h.path, f"pixel data cannot be decoded ({type(exc).__name__}: {exc})") from exc
    values = _modality_values(ds, arr)
    return values, 1.0, 0.0


def _modality_values(ds: Dataset, arr: np.ndarray) -> np.ndarray:
    """Colour -> grey, then the modality LUT / rescale."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    if int(ds.get("SamplesPerPixel", 1)) > 1 or photometric == "PALETTE COLOR":
        return to_grey(arr)
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _declared(ds: Dataset) -> tuple[int, int, int, int, int]:
    """(frames, rows, columns, samples, bits allocated) as the header declares them."""
    def num(key: str, default: int) -> int:
        try:
            return int(ds.get(key) or default)
        except (TypeError, ValueError):
            return default
    return (num("NumberOfFrames", 1), num("Rows", 0), num("Columns", 0), num("SamplesPerPixel", 1),
            num("BitsAllocated", 16))


def _check_pixel_budget(ds: Dataset, path: Path) -> None:
    """Before decoding: the declared size within the budget; native pixel data of exactly that size."""
    frames, rows, columns, samples, bits = _declared(ds)
    check_decoded(path, (frames, rows, columns, samples), what="DICOM image")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or getattr(syntax, "is_compressed", True) or "PixelData" not in ds:
        return
    values = frames * rows * columns * samples
    expected = values * bits // 8 if bits != 1 else -(-values // 8)
    have = len(ds.PixelData)
    if have < expected or have > expected + expected % 2 + 1:
        raise VolumeReadError(
            path, f"pixel data damaged or forged: PixelData holds {have} bytes but the header "
            f"({frames} frame(s) of {rows} x {columns}, "
            f"{samples} sample(s), {bits} bits) needs {expected}")


def _check_finite(values: np.ndarray, ds: Dataset, path: Path) -> None:
    if values.size and not any(np.isfinite(plane).any() for plane in values):  # no volume-sized mask
        raise VolumeReadError(
            path, f"every pixel is out of range after rescaling (RescaleSlope {ds.get('RescaleSlope', 1)}, "
            f"RescaleIntercept {ds.get('RescaleIntercept', 0)}): the values exceed float32")


def _fill_slice(out: np.ndarray, z: int, h: SliceHeader) -> str | None:
    """Write slice z into `out` (modality units); returns the problem instead of raising."""
    try:
        raw = _raw_pixels(h)
        slope, intercept = h.slope, h.intercept
        if raw is None:
            raw, slope, intercept = _decoded_pixels(h)
        if raw.shape != out.shape[1:]:
            return f"pixel array of shape {raw.shape}, expected {out.shape[1:]}"
        with np.errstate(over="ignore", invalid="ignore"):
            if slope == 1.0:  # one pass: convert and shift together
                np.add(raw, np.float32(intercept), out=out[z], casting="unsafe")
            else:
                np.multiply(raw, np.float32(slope), out=out[z], casting="unsafe")
                out[z] += np.float32(intercept)
    except VolumeReadError as exc:
        return exc.problem
    except OSError as exc:
        return f"cannot read ({exc})"
    except MemoryError:
        return "not enough memory to decode it"
    return None


def _read_pixels(
    ordered: list[SliceHeader], folder: Path, warnings: list[str]
) -> tuple[np.ndarray, list[int]]:
    check_decoded(folder, (len(ordered), ordered[0].rows, ordered[0].columns), what="series")
    out = np.empty((len(ordered), ordered[0].rows, ordered[0].columns), dtype=np.float32)
    with ThreadPoolExecutor(_WORKERS) as pool:
        problems = list(pool.map(lambda zh: _fill_slice(out, *zh), enumerate(ordered)))
    bad = [z for z, p in enumerate(problems) if p is not None]
    if len(bad) == len(ordered):
        detail = "; ".join(f"{ordered[z].path.name}: {problems[z]}" for z in bad[:5])
        raise VolumeReadError(folder, f"every slice of the series failed to decode ({detail})")
    if bad:
        names = "; ".join(f"{ordered[z].path.name}: {problems[z]}" for z in bad[:10])
        warnings.append(f"{folder}: {len(bad)} slice(s) could not be read and were left out: {names}")
        out = np.delete(out, bad, axis=0)
    return out, bad


def _geometry(first: SliceHeader, dz: float) -> tuple[tuple, tuple, np.ndarray]:
    ds = first.ds
    dy, dx = _floats(ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing"), 2) or (1.0, 1.0)
    orientation = first.orientation or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    direction = np.column_stack([orientation[:3], orientation[3:], _normal(orientation)])
    origin = tuple(first.position) if first.position is not None else (0.0, 0.0, 0.0)
    spacing = (dz if dz > 0 else 1.0, dy if dy > 0 else 1.0, dx if dx > 0 else 1.0)
    return spacing, origin, direction


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> Volume:
    """Load the DICOM series in `folder` (the largest one, or `series_uid`) as HU / modality units."""
    folder = Path(folder)
    files = dicom_files_in(folder)
    if not files:
        raise VolumeReadError(folder, "folder holds no DICOM files (it is empty or holds only other types)")
    headers, failed = _read_headers(files)
    if not headers:
        detail = "; ".join(f"{p.name}: {why}" for p, why in list(failed.items())[:5])
        raise VolumeReadError(folder, f"none of its {len(files)} files is a readable DICOM image ({detail})")
    warnings: list[str] = []
    if failed:
        names = ", ".join(f"{p.name} ({why})" for p, why in list(failed.items())[:10])
        warnings.append(
            f"{folder}: {len(failed)} file(s) are not readable DICOM images and were skipped: {names}"
        )
    chosen = _consistent(_choose_series(headers, folder, series_uid, warnings), folder, warnings)
    if len(chosen) == 1 or any(h.frames > 1 for h in chosen):
        return _single_in_folder(chosen, folder, warnings)
    ordered, dz = _sort_slices(chosen, folder, warnings)
    array, bad = _read_pixels(ordered, folder, warnings)
    _check_finite(array, ordered[0].ds, folder)
    dropped = set(bad)
    ordered = [h for z, h in enumerate(ordered) if z not in dropped]
    return _series_volume(array, ordered, dz, folder, warnings)


def _single_in_folder(chosen: list[SliceHeader], folder: Path, warnings: list[str]) -> Volume:
    if len(chosen) > 1:
        warnings.append(
            f"{folder}: the series holds {len(chosen)} multi-frame files; loaded {chosen[0].path.name}"
        )
    volume = read_dicom_file(chosen[0].path)
    volume.warnings[:0] = warnings
    return volume


def _series_volume(array: np.ndarray, ordered: list[SliceHeader], dz: float, folder: Path,
                   warnings: list[str]) -> Volume:
    first = ordered[0]
    spacing, origin, direction = _geometry(first, dz)
    meta = header_meta(read_header(first.path))  # the full header of the first slice
    if meta.get("PhotometricInterpretation") == "MONOCHROME1":
        array = array.max() + array.min() - array
        meta["inverted"] = "MONOCHROME1 inverted so that low values are dark"
    meta["n_slices"] = len(ordered)
    resolved = folder.resolve()
    meta["files"] = [str(resolved / h.path.name) for h in ordered]  # z order, parallel to slice_ids
    series_uid = first.series_uid or f"{folder.name}"
    return Volume(
        array=array, spacing=spacing, origin=origin, direction=direction,
        modality=_modality(str(first.ds.get("Modality", ""))), volume_id=series_uid,
        slice_ids=[str(h.ds.get("SOPInstanceUID", f"{series_uid}#{z}")) for z, h in enumerate(ordered)],
        meta=meta, source=str(folder.resolve()), warnings=warnings,
    )


# ------------------------------------------------------------------------------------------ single file


def _frame_groups(ds: Dataset, frames: int) -> list[Dataset]:
    """Per-frame functional groups merged over the shared ones (enhanced multi-frame), else []."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) != frames:
        return []
    shared = ds.get("SharedFunctionalGroupsSequence")
    groups = []
    for item in per_frame:
        merged = Dataset()
        if shared:
            merged.update(shared[0])
        merged.update(item)
        groups.append(merged)
    return groups


def _group_value(group: Dataset, sequence: str, key: str) -> object:
    seq = group.get(sequence)
    return seq[0].get(key) if seq else None


def _frame_rescale(values: np.ndarray, ds: Dataset, groups: list[Dataset]) -> np.ndarray:
    """Apply per-frame PixelValueTransformation (enhanced CT/MR) when the top level has no rescale."""
    if not groups or "RescaleSlope" in ds or "ModalityLUTSequence" in ds:
        return values
    for i, group in enumerate(groups):
        slope = _group_value(group, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _group_value(group, "PixelValueTransformationSequence", "RescaleIntercept")
        if slope is not None or intercept is not None:
            values[i] = values[i] * float(slope or 1.0) + float(intercept or 0.0)
    return values


def _frame_geometry(ds: Dataset, groups: list[Dataset], n: int, where: str,
                    warnings: list[str]) -> tuple[np.ndarray, tuple, tuple, np.ndarray]:
    """Frame order, spacing (z, y, x), origin and direction from per-frame positions when present."""
    first = groups[0] if groups else ds
    orientation = _floats(ds.get("ImageOrientationPatient")
                          or (_group_value(first, "PlaneOrientationSequence", "ImageOrientationPatient")
                              if groups else None), 6)
    pixel_spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if pixel_spacing is None and groups:
        pixel_spacing = _group_value(first, "PixelMeasuresSequence", "PixelSpacing")
    dy, dx = _floats(pixel_spacing, 2) or (1.0, 1.0)
    dz = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
    positions = [_floats(_group_value(g, "PlanePositionSequence", "ImagePositionPatient"), 3) for g in groups]
    if n == 1 and not groups:
        positions = [_floats(ds.get("ImagePositionPatient"), 3)]
    order = np.arange(n)
    origin = (0.0, 0.0, 0.0)
    normal = _normal(orientation)
    if len(positions) == n and all(p is not None for p in positions):
        proj = np.array([np.dot(p, normal) for p in positions])
        order = np.argsort(proj, kind="stable")
        origin = tuple(positions[order[0]])
        if n > 1:
            step, gap_warnings = spacing_report(proj[order], where)
            warnings.extend(gap_warnings)
            dz = step if step > 0 else dz
    ori = orientation or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    direction = np.column_stack([ori[:3], ori[3:], _normal(ori)])
    return order, (dz if dz > 0 else 1.0, dy if dy > 0 else 1.0, dx if dx > 0 else 1.0), origin, direction


def read_dicom_file(path: str | Path) -> Volume:
    """One DICOM file: a slice, a multi-frame stack, an X-ray (MONOCHROME1 inverted) or colour (to grey)."""
    path = Path(path)
    ds = read_header(path, pixels=True)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop = ds.get("SOPClassUID")
        raise VolumeReadError(path, f"DICOM file without pixel data (SOP class {getattr(sop, 'name', sop)})")
    _check_pixel_budget(ds, path)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # decoders raise many types; name the file and the problem either way
        raise VolumeReadError(path, f"pixel data cannot be decoded ({type(exc).__name__}: {exc})") from exc
    frames = int(ds.get("NumberOfFrames") or 1)
    with np.errstate(over="ignore", invalid="ignore"):
        values = _modality_values(ds, arr)
    _check_finite(values, ds, path)
    if frames == 1:
        values = values[np.newaxis]
    warnings: list[str] = []
    meta = header_meta(ds)
    groups = _frame_groups(ds, frames)
    values = _frame_rescale(values, ds, groups)
    if str(ds.get("PhotometricInterpretation")) == "MONOCHROME1":
        values = values.max() + values.min() - values  # MONOCHROME1: low values are white; make air dark
        meta["inverted"] = "MONOCHROME1 inverted so that air is dark"
    order, spacing, origin, direction = _frame_geometry(ds, groups, frames, str(path), warnings)
    sop = str(ds.get("SOPInstanceUID", path.name))
    slice_ids = [sop] if frames == 1 else [f"{sop}#{i + 1}" for i in order]  # #frame number (1-based)
    meta["n_frames"] = frames
    meta["files"] = [str(path.resolve())] * frames
    return Volume(
        array=np.ascontiguousarray(values[order]), spacing=spacing, origin=origin, direction=direction,
        modality=_modality(str(ds.get("Modality", ""))), volume_id=str(ds.get("SeriesInstanceUID") or sop),
        slice_ids=slice_ids, meta=meta, source=str(path.resolve()), warnings=warnings,
    )
