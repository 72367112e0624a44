"""Synthetic phantoms with known ground truth: chest CT, chest X-ray, four-sequence brain MRI.

Pure NumPy/SciPy, no file I/O, vectorised (no per-voxel Python loops) and deterministic for
a seed. In the spirit of MONAI's `create_test_image_3d` (random shapes with matching labels),
with the intensities a radiologist would expect: Hounsfield units for CT, the usual T1/T2/FLAIR
contrasts for MRI.

Conventions
- Arrays are `(z, y, x)`, the order `core.io.load_volume` returns.
- Chest CT is axial in the radiological display convention: anterior at row 0, the patient's
  right on the image left (column 0), so the heart sits to the image right. The z index
  increases towards the head (DICOM ImagePositionPatient z grows with the index): the lung
  bases are at low z, the apices at high z.
- Anatomy is laid out in coordinates normalised to the field of view (in-plane) and to the
  scanned length (z). Any matrix size gives a plausible image; `spacing` is recorded as
  metadata and only sets the physical size of structures that are specified in mm (discs).
- X-rays: `chest_xray` draws a 2D frontal radiograph directly from a 2D analogue of the same
  anatomy (line integrals of tissue thickness), because projecting a full 3D volume per image
  costs ~1 s and the classifier needs hundreds; `xray_projection` projects a 3D CT phantom
  (or any HU volume) for when the two must match.

One module per anatomy: `chest` (CT), `xray`, `brain` (MRI); shared helpers in `_common`.
"""

from core.phantoms._common import TISSUE, boxes_from_mask
from core.phantoms.brain import BRAIN_TISSUES, BRATS_LABELS, SEQUENCES, BrainPhantom, brain_mri_phantom
from core.phantoms.chest import ChestPhantom, chest_ct_phantom
from core.phantoms.xray import XrayPhantom, chest_xray, xray_projection

__all__ = [
    "BRAIN_TISSUES", "BRATS_LABELS", "SEQUENCES", "TISSUE", "BrainPhantom", "ChestPhantom", "XrayPhantom",
    "boxes_from_mask", "brain_mri_phantom", "chest_ct_phantom", "chest_xray", "xray_projection",
]
