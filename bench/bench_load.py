"""Load a DICOM series into HU: core.io.load_volume vs SimpleITK's ImageSeriesReader.

Series: (a) LIDC-IDRI-0001 in data/lidc when present (`make sample-data`), (b) a synthetic
300x512x512 series written with core.io.writers into .bench/ (git-ignored). Each reader runs
several times; the table shows medians, the ratio ours/SimpleITK (<= 1.0 is the target) and the
peak extra memory of one load (tracemalloc, numpy allocations included) against the float32 size.

    .venv/bin/python -m bench.bench_load [--repeats N] [--slices N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

from core.io import load_volume
from core.io.writers import write_dicom_series
from core.settings import REPO_ROOT, data_root


def sitk_load(folder: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    reader.SetOutputPixelType(sitk.sitkFloat32)  # HU as float32, like ours
    return sitk.GetArrayFromImage(reader.Execute())


def ours_load(folder: Path) -> np.ndarray:
    return load_volume(folder).array


def timed(fn, folder: Path, repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(folder)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def peak_extra_mb(fn, folder: Path) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    out = fn(folder)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return (peak - out.nbytes) / 2**20


def synthetic_series(slices: int) -> Path:
    folder = REPO_ROOT / ".bench" / f"synthetic_{slices}x512x512"
    if len(list(folder.glob("*.dcm"))) != slices:
        rng = np.random.default_rng(0)
        hu = rng.integers(-1024, 1500, (slices, 512, 512), dtype=np.int16)
        write_dicom_series(hu, folder, spacing=(1.0, 0.7, 0.7))
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    args = parser.parse_args(argv)
    cases = []
    lidc = data_root() / "lidc"
    if len(list(lidc.glob("*.dcm"))) > 0:
        cases.append(("LIDC-IDRI-0001", lidc))
    else:
        print(f"(no LIDC sample in {lidc}; `make sample-data` adds it)")
    cases.append((f"synthetic {args.slices}x512x512", synthetic_series(args.slices)))
    header = f"{'series':<26}{'slices':>7}{'ours (s)':>10}{'SimpleITK (s)':>15}{'ours/sitk':>11}" \
             f"{'extra MB':>10}{'float32 MB':>12}{'same HU':>9}"
    print(header)
    for name, folder in cases:
        sitk_load(folder), ours_load(folder)  # warm the page cache for both
        t_sitk, ref = timed(sitk_load, folder, args.repeats)
        t_ours, arr = timed(ours_load, folder, args.repeats)
        extra = peak_extra_mb(ours_load, folder)
        same = arr.shape == ref.shape and bool(np.array_equal(arr, ref))
        print(f"{name:<26}{arr.shape[0]:>7}{t_ours:>10.3f}{t_sitk:>15.3f}{t_ours / t_sitk:>11.2f}"
              f"{extra:>10.1f}{arr.nbytes / 2**20:>12.1f}{'yes' if same else 'NO':>9}")


if __name__ == "__main__":
    main()
