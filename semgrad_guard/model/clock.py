"""Wall-clock timing of work queued on an accelerator."""

from __future__ import annotations

import os

import torch


def synchronize(device: torch.device) -> None:
    """Wait until ``device`` has finished its queued work, so that a clock reading taken
    next covers it (CUDA and MPS run kernels asynchronously; CPU work is already done)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def describe(device: torch.device) -> str:
    """The hardware that timings on ``device`` were measured on, in words."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"CPU, {threads} torch thread{'s' * (threads != 1)} of {os.cpu_count()} cores"
    return device.type
