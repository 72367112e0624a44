"""Training engine (PyTorch Lightning) shared by every model family.

`python -m core train --family NAME --data DIR --out RUN_DIR [--set key=value ...]` calls
`core.train.cli.train_from_cli`; the background jobs run exactly that command.
Importing this package does not import torch.
"""

from core.errors import SlicewiseError


class TrainingResourceError(SlicewiseError):
    """Training ran out of a resource (GPU or CPU memory); the message says what to lower."""
