"""X-ray pneumonia classifier with CAM and Grad-CAM (SPEC 5B)."""
