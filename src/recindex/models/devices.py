"""Where a model runs (`train.device`) and in what precision (`train.precision`).

`auto` picks the GPU when torch sees one and the CPU otherwise; `cuda` is the current GPU (under
torchrun, the process's own, `LOCAL_RANK`); `cuda:N` a given one. Mixed precision is autocast on the GPU
(bf16, or fp16 with gradient scaling); on the CPU it is refused rather than silently ignored, so a run's
settings always say what it did. fp32 on the CPU runs exactly the operations it ran before devices
existed, so CPU results are unchanged bit for bit.
"""

from __future__ import annotations

import contextlib

import torch

from recindex.errors import RecIndexError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(setting: str, local_rank: int | None = None, name: str = "train.device") -> torch.device:
    """The torch device a `train.device` setting (or another, called `name` in messages) names;
    `local_rank` (torchrun's) picks the GPU of a process when the setting leaves it open (auto, cuda)."""
    setting = setting.strip().lower()
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "cuda" or setting.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RecIndexError(
                f"{name} = {setting!r}, but torch sees no GPU (torch {torch.__version__}); "
                'use "cpu" or "auto"'
            )
        if setting == "cuda":
            index = local_rank if local_rank is not None else torch.cuda.current_device()
        else:
            number = setting.split(":", 1)[1]
            if not number.isdigit():
                raise RecIndexError(f"{name} = {setting!r}: expected cuda:N with N a GPU number")
            index = int(number)
            if local_rank is not None and index != local_rank:
                raise RecIndexError(
                    f"{name} = {setting!r} under torchrun: each process takes its own GPU "
                    f'(LOCAL_RANK {local_rank}); use "cuda" or "auto"'
                )
        if index >= torch.cuda.device_count():
            raise RecIndexError(
                f"{name} = {setting!r}: GPU {index} does not exist "
                f"(torch sees {torch.cuda.device_count()})"
            )
        return torch.device("cuda", index)
    raise RecIndexError(f"{name} must be auto, cpu, cuda or cuda:N, got {setting!r}")


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise RecIndexError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "fp32" and device.type != "cuda":
        raise RecIndexError(
            f"train.precision = {precision!r} is autocast on a GPU; this run is on {device} "
            '(set train.precision = "fp32", or train.device = "cuda" on a machine with a GPU)'
        )


def autocast(precision: str, device: torch.device):
    """The autocast context of `precision` on `device` (nothing for fp32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def gradient_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's weights (the CPU for a model without any)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
