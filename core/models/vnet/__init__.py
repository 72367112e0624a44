"""Two-stage VNet segmentation (SPEC 5D): spec.py (settings, no torch), net.py (VNet, BAM, TwoStage),
losses.py, data.py (cases on disk), datasets.py (crops, augmentation), stages.py (pad, locate, crop,
segment, place back), train.py (both stages in one job), predict.py, demo.py (atrium phantoms)."""
