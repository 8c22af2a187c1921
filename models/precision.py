"""Reduced precision where the hardware runs it natively: bfloat16 on CPUs with AVX-512 BF16 or AMX (Zen 4,
Sapphire Rapids and later) halves the time of our convolutions for a few thousandths of a dB; elsewhere a CPU
emulates it slowly, so float32 stays."""
import torch


def cpu_bfloat16() -> bool:
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def training_dtype(device: str) -> torch.dtype | None:
    """bfloat16 for the forward and backward passes (no loss scaling needed), or None for float32."""
    return torch.bfloat16 if device == "cuda" or cpu_bfloat16() else None


def inference_dtype(device: torch.device) -> torch.dtype | None:
    """float16 on CUDA, bfloat16 on a CPU that has it natively, else None (float32)."""
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_bfloat16() else None
