"""The official MatConvNet models (CDnCNN-B, FFDNet; ../shared/data/peers/*.mat, MATLAB v7.3 read with h5py)
as PyTorch networks, for the side-by-side benchmark only. Batch norm is already folded into the convs."""
from itertools import permutations
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def conv_layers(path: Path) -> tuple[list[str], list[nn.Conv2d]]:
    """Layer types in order, and the convs with their weights (h5py reverses MATLAB's (H, W, Cin, Cout))."""
    f = h5py.File(path, "r")
    types, convs = [], []
    for ref in np.asarray(f["net/layers"]).ravel():
        layer = f[ref]
        kind = "".join(map(chr, np.asarray(layer["type"]).ravel()))
        types.append(kind)
        if kind == "conv":
            w_ref, b_ref = np.asarray(layer["weights"]).ravel()
            w = torch.from_numpy(np.asarray(f[w_ref], dtype=np.float32))
            if w.dim() == 3:  # MATLAB dropped a channel dimension of 1: the input of the first conv, else the output
                w = w[:, None] if not convs else w[None]
            w = w.permute(0, 1, 3, 2)  # (Cout, Cin, H, W)
            conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], padding=w.shape[2] // 2)
            conv.weight.data, conv.bias.data = w.contiguous(), torch.from_numpy(np.asarray(f[b_ref], np.float32)).ravel()
            convs.append(conv)
    return types, convs


def conv_relu_stack(convs: list[nn.Conv2d]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for conv in convs[:-1]:
        layers += [conv, nn.ReLU()]
    return nn.Sequential(*layers, convs[-1])


class DnCNN(nn.Module):
    """conv-relu ... conv predicting the noise: output = input - net(input)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.body = conv_relu_stack(conv_layers(path)[1])

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)


class MatFFDNet(nn.Module):
    """2x2 space-to-depth, a noise-level map, conv-relu stack, depth-to-space; outputs the clean image. The order
    of MATLAB's sub-pixel channels is not PyTorch's: `order` maps one to the other (see calibrate)."""

    def __init__(self, path: Path, order: tuple[int, ...] | None = None, map_first: bool = False) -> None:
        super().__init__()
        self.body = conv_relu_stack(conv_layers(path)[1])
        self.channels = self.body[-1].out_channels // 4
        self.order = list(order or range(4 * self.channels))
        self.inverse = list(np.argsort(self.order))
        self.map_first = map_first

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
        down = F.pixel_unshuffle(x, 2)[:, self.order]
        level = torch.full_like(down[:, :1], sigma)
        y = self.body(torch.cat([level, down] if self.map_first else [down, level], dim=1))
        return F.pixel_shuffle(y[:, self.inverse], 2)[..., :h, :w]


def calibrate(path: Path, clean: np.ndarray, sigma: float = 25 / 255) -> MatFFDNet:
    """The sub-pixel channel order and the place of the noise map that denoise one image best: the layouts are
    few (sub-pixel offsets x channel-major or offset-major x map first or last), so all are tried."""
    x = torch.from_numpy(clean).permute(2, 0, 1)[None].float()[..., :96, :96]
    noisy = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * sigma
    c = x.shape[1]
    best: tuple[float, MatFFDNet] | None = None
    for offsets in permutations(range(4)):
        for offset_major in (False, True):
            order = tuple(ch * 4 + o for o in offsets for ch in range(c)) if offset_major else tuple(
                ch * 4 + o for ch in range(c) for o in offsets)
            for map_first in (False, True):
                net = MatFFDNet(path, order, map_first)
                mse = float(((net(noisy, sigma).clamp(0, 1) - x) ** 2).mean())
                if best is None or mse < best[0]:
                    best = (mse, net)
    assert best is not None
    return best[1]


def main() -> None:
    """Parameters and conv multiply-adds per input pixel of ours and the official peers."""
    from core.config import get_settings
    from models.registry import load_denoiser
    s = get_settings()
    peers = s.shared_data / "peers"
    nets = {"ours": (load_denoiser("ffdnet", s.weights_dir, "cpu", precision="float32").color, 0.25),  # convs at half resolution
            "CDnCNN-B": (DnCNN(peers / "dncnn_GD_Color_Blind.mat"), 1.0),
            "FFDNet": (MatFFDNet(peers / "ffdnet_color.mat"), 0.25)}
    for name, (net, area) in nets.items():
        params = sum(p.numel() for p in net.parameters())
        macs = area * sum(m.weight.numel() for m in net.modules() if isinstance(m, nn.Conv2d))
        print(f"{name}: {params / 1e6:.2f} M parameters, {macs / 1e3:.0f} k multiply-adds per input pixel")
    print("command: python -m bench.mat_peers")


if __name__ == "__main__":
    main()
