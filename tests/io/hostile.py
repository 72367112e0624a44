"""A corpus of malformed and hostile inputs, built on the fly (nothing large is committed).

`build_corpus(folder)` writes every case and returns [(name, path, op)]: op "load" means
`core.io.load_volume(path)` must raise a SlicewiseError naming the path; "find" means
`core.io.find_volumes(path)` must return (without hanging, skipping what is not a regular file).
The files are tiny (all under 1 MB) but many declare gigabytes.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from core.io.writers import write_dicom_series


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def forged_png(path: Path, width: int, height: int, real_rows: int = 0) -> None:
    """A PNG whose IHDR declares width x height (8-bit grey); `real_rows` rows of zeros follow."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    idat = b"".join(comp.compress(row) for _ in range(real_rows)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))


def forged_nifti(path: Path, shape: tuple[int, ...], dtype=np.float32, data: bytes = b"\x00" * 64) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    blob = header.binaryblock + b"\x00" * 4 + data
    if path.name.endswith(".gz"):
        blob = gzip.compress(blob)
    path.write_bytes(blob)


def forged_nrrd(path: Path, sizes: str, encoding: str = "raw", data: bytes = b"\x00" * 64,
                extra: str = "") -> None:
    header = (f"NRRD0004\ntype: float\ndimension: {len(sizes.split())}\nsizes: {sizes}\n"
              f"encoding: {encoding}\nendian: little\n{extra}")
    if path.suffix == ".nhdr":
        path.write_text(header)
        return
    payload = gzip.compress(data) if encoding == "gzip" else data
    path.write_bytes(header.encode() + b"\n" + payload)


def _edit(path: Path, **values) -> None:
    ds = pydicom.dcmread(path)
    for key, value in values.items():
        setattr(ds, key, value)
    ds.save_as(path)


def build_corpus(root: Path) -> list[tuple[str, Path, str]]:
    root.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, Path, str]] = []

    def add(name: str, path: Path, op: str = "load") -> None:
        cases.append((name, path, op))

    # ---- NIfTI / NRRD declaring far more than they hold
    forged_nifti(root / "big4g.nii", (1024, 1024, 1025))
    add("nifti declares over 4 GiB", root / "big4g.nii")
    forged_nifti(root / "big4g.nii.gz", (1024, 1024, 1024))
    add("nifti.gz declares 4 GiB", root / "big4g.nii.gz")
    forged_nifti(root / "big64m.nii", (256, 256, 256))
    add("nifti declares 64 MiB, holds 64 B", root / "big64m.nii")
    forged_nifti(root / "big64m.nii.gz", (256, 256, 256))
    add("nifti.gz declares 64 MiB, holds 64 B", root / "big64m.nii.gz")
    forged_nifti(root / "huge.nii", (32767, 32767, 32767), np.int16)
    add("nifti declares 65 TB", root / "huge.nii")
    forged_nifti(root / "big4d.nii", (512, 512, 256, 40))
    add("nifti 4D declares 10 GiB", root / "big4d.nii")
    real = nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), np.eye(4))
    nib.save(real, root / "truncated.nii")
    blob = (root / "truncated.nii").read_bytes()
    (root / "truncated.nii").write_bytes(blob[: len(blob) // 2])
    add("nifti truncated to half", root / "truncated.nii")
    (root / "empty.nii").write_bytes(b"")
    add("empty .nii", root / "empty.nii")
    forged_nrrd(root / "big4g.nrrd", "1024 1024 1024")
    add("nrrd declares 4 GiB", root / "big4g.nrrd")
    forged_nrrd(root / "big4g_gz.nrrd", "1024 1024 1024", "gzip")
    add("gzip nrrd declares 4 GiB", root / "big4g_gz.nrrd")
    forged_nrrd(root / "big64m.nrrd", "256 256 256")
    add("nrrd declares 64 MiB, holds 64 B", root / "big64m.nrrd")
    forged_nrrd(root / "big64m_gz.nrrd", "256 256 256", "gzip")
    add("gzip nrrd declares 64 MiB, holds 64 B", root / "big64m_gz.nrrd")
    forged_nrrd(root / "negative.nrrd", "-5 10 10")
    add("nrrd negative size", root / "negative.nrrd")
    forged_nrrd(root / "words.nrrd", "a b c")
    add("nrrd sizes not numbers", root / "words.nrrd")

    # ---- detached headers naming files outside their folder
    forged_nrrd(root / "passwd.nhdr", "4 4 4", extra="data file: /etc/passwd\n")
    add("nhdr data file /etc/passwd", root / "passwd.nhdr")
    (root / "outside.raw").write_bytes(b"\x00" * 256)
    (root / "sub").mkdir()
    forged_nrrd(root / "sub" / "dotdot.nhdr", "4 4 4", extra="data file: ../outside.raw\n")
    add("nhdr data file ../outside.raw", root / "sub" / "dotdot.nhdr")
    (root / "linked").mkdir()
    os.symlink("/etc/passwd", root / "linked" / "data.raw")
    forged_nrrd(root / "linked" / "link.nhdr", "4 4 4", extra="data file: data.raw\n")
    add("nhdr data file is a link to /etc/passwd", root / "linked" / "link.nhdr")
    forged_nrrd(root / "list.nhdr", "4 4 4", extra="data file: LIST\n/etc/passwd\n")
    add("nhdr data file LIST naming /etc/passwd", root / "list.nhdr")
    forged_nrrd(root / "pattern.nhdr", "4 4 4", extra="data file: /etc/pass%d 1 1 1\n")
    add("nhdr data file pattern outside", root / "pattern.nhdr")
    (root / "meta.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\n"
                                   "ElementType = MET_UCHAR\nElementDataFile = /etc/passwd\n")
    add("mhd data file /etc/passwd", root / "meta.mhd")

    # ---- DICOM
    series = root / "series"
    write_dicom_series(np.zeros((3, 8, 8), np.int16), series, spacing=(1.0, 1.0, 1.0))
    files = sorted(series.iterdir())
    one = root / "one.dcm"
    shutil.copy(files[0], one)
    _edit(one, Rows=65535, Columns=65535)
    add("dicom declares 65535^2", one)
    big = root / "bigseries"
    shutil.copytree(series, big)
    for f in sorted(big.iterdir()):
        _edit(f, Rows=65535, Columns=65535)
    add("dicom series declares 65535^2 per slice", big)
    long_px = root / "long.dcm"
    shutil.copy(files[0], long_px)
    ds = pydicom.dcmread(long_px)
    ds.PixelData = ds.PixelData * 3
    ds.save_as(long_px)
    add("dicom PixelData three times too long", long_px)
    short_px = root / "short.dcm"
    shutil.copy(files[0], short_px)
    ds = pydicom.dcmread(short_px)
    ds.PixelData = ds.PixelData[:10]
    ds.save_as(short_px)
    add("dicom PixelData too short", short_px)
    slope = root / "slope.dcm"
    shutil.copy(files[0], slope)
    ds = pydicom.dcmread(slope)
    ds.RescaleSlope = "1e38"
    ds.PixelData = (np.full((8, 8), 100, np.int16)).tobytes()
    ds.save_as(slope)
    add("dicom RescaleSlope 1e38", slope)
    slope_series = root / "slopeseries"
    shutil.copytree(series, slope_series)
    for f in sorted(slope_series.iterdir()):
        ds = pydicom.dcmread(f)
        ds.RescaleSlope = "1e38"
        ds.PixelData = (np.full((8, 8), 100, np.int16)).tobytes()
        ds.save_as(f)
    add("dicom series RescaleSlope 1e38", slope_series)
    frames = root / "frames.dcm"
    shutil.copy(files[0], frames)
    _edit(frames, NumberOfFrames=100000)
    add("dicom declares 100000 frames", frames)
    (root / "empty.dcm").write_bytes(b"")
    add("empty .dcm", root / "empty.dcm")

    # ---- PNG bombs
    forged_png(root / "bomb30k.png", 30000, 30000)
    add("png header 30000 x 30000", root / "bomb30k.png")
    forged_png(root / "bomb20k.png", 20000, 20000)
    add("png header 20000 x 20000", root / "bomb20k.png")
    forged_png(root / "big10k.png", 10000, 10000, real_rows=10000)
    add("png 10000 x 10000 of zeros (~100 KB)", root / "big10k.png")
    jpeg = bytearray((root / "bomb30k.png").read_bytes()[:0])
    jpeg += b"\xff\xd8\xff\xc0\x00\x0b\x08" + struct.pack(">HH", 65000, 65000) + b"\x01\x01\x11\x00\xff\xd9"
    (root / "bomb.jpg").write_bytes(bytes(jpeg))
    add("jpeg header 65000 x 65000", root / "bomb.jpg")

    # ---- not regular files
    os.mkfifo(root / "fifo.dcm")
    add("FIFO named .dcm", root / "fifo.dcm")
    os.mkfifo(root / "fifo.nii")
    add("FIFO named .nii", root / "fifo.nii")
    os.symlink("/dev/zero", root / "zero.dcm")
    add("link .dcm -> /dev/zero", root / "zero.dcm")
    os.symlink("/dev/urandom", root / "random.nii")
    add("link .nii -> /dev/urandom", root / "random.nii")
    os.symlink("/dev/zero", root / "zero_noext")
    add("extensionless link -> /dev/zero", root / "zero_noext")
    os.symlink("loop_b.dcm", root / "loop_a.dcm")
    os.symlink("loop_a.dcm", root / "loop_b.dcm")
    add("symlink loop", root / "loop_a.dcm")
    os.symlink("missing.nii", root / "dangling.nii")
    add("dangling symlink", root / "dangling.nii")

    # ---- folders holding the above
    odd = root / "oddfolder"
    odd.mkdir()
    os.mkfifo(odd / "scan.dcm")
    os.mkfifo(odd / "noext")
    os.symlink("/dev/zero", odd / "zero.dcm")
    os.symlink("x.dcm", odd / "y.dcm")
    os.symlink("y.dcm", odd / "x.dcm")
    add("series folder of FIFOs, devices and loops", odd)
    add("find_volumes over FIFOs, devices and loops", odd, "find")
    add("find_volumes over the whole corpus", root, "find")
    os.symlink("dirloop_b", root / "dirloop_a")
    os.symlink("dirloop_a", root / "dirloop_b")
    add("folder symlink loop", root / "dirloop_a")
    add("find_volumes on a folder symlink loop", root / "dirloop_a", "find_error")
    return cases
