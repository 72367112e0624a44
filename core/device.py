"""Choose where tensors live: the GPU when there is one, the CPU otherwise.

The CUDA build of torch also runs on machines without a GPU (`torch.cuda.is_available()`
is False there), so the device is always chosen in code, never assumed.
"""

from __future__ import annotations

VALID_DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def choose_device(requested: str | None = None) -> str:
    """`"cuda"` when asked for (or `auto`) and present, else `"cpu"`; `cuda:1` style names pass through."""
    requested = (requested or "auto").strip().lower()
    if requested.startswith("cuda"):
        if not cuda_available():
            raise ValueError(f"device {requested!r} requested but no CUDA GPU is available")
        return requested
    if requested == "cpu":
        return "cpu"
    if requested != "auto":
        raise ValueError(f"device must be one of {VALID_DEVICES}, got {requested!r}")
    return "cuda" if cuda_available() else "cpu"


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_precision(device: str) -> str:
    """Lightning precision: bf16 mixed where the GPU supports it, fp16 mixed on older GPUs, fp32 on CPU."""
    if not device.startswith("cuda"):
        return "32-true"
    import torch

    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def describe(device: str) -> str:
    """Human-readable device name for logs and config.json."""
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":")[1]) if ":" in device else 0
        return f"{device} ({torch.cuda.get_device_name(index)}, {gpu_count()} GPU(s))"
    return "cpu"
