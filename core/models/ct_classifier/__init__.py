"""3D CT classifier (SPEC 5C): normal vs abnormal chest CT volumes, with 3D Grad-CAM."""
