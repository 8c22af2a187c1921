"""Real camera noise, side by side in one run: PolyU (Xu et al. 2018; 100 real noisy/clean 512x512 crops; PSNR and
SSIM against the clean mean, per image and mean), RNI15 (BRISQUE, no reference), CBSD68 blind at sigma 15/25/50,
how much a clean photo is changed (CBSD68 at half size, its grain halved and its detail dense, as a phone photo's
downscaled copy: PSNR of the output against the input, which the denoiser should leave alone), and the time per
512x512 color image.

python -m bench.real_noise [--peers old,pd,before,ffdnet-oracle,dncnn-b,cbm3d-oracle] [--old-weights DIR]
    [--before DIR] [--limit N] [--cbsd68-limit N]
    [--sheet docs/results/polyu_sheet.png] [--json docs/results/real_noise.json]

Rows: ours (the shipped blind default: the estimated noise map); `old`: the previous shipped weights (Gaussian
training, wavelet estimate) from --old-weights; `before`: the blind default with the weights in --before (the
ones a candidate would replace); `pd`: pixel-shuffle down-sampling (Zhou et al., 2019, "When
AWGN-based denoiser meets real noises") around the old network; `ffdnet-oracle` / `cbm3d-oracle`: official FFDNet
and CBM3D told the one sigma that is best on PolyU (an oracle they do not have in use); `dncnn-b`: official blind
CDnCNN-B. Peers need the bench extra and $DENOCAP_SHARED_DATA/peers. PolyU is never used for training.
"""
import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.denoisers import bm3d_peer, official_peers
from core import quality
from core.config import get_settings
from models import checkpoint
from models.ffdnet import FFDNet, FFDNetConfig
from models.registry import load_denoiser
from models.train_denoiser import from_single_level

Denoise = Callable[[np.ndarray], np.ndarray]  # (H, W, 3) float32 in [0, 1] -> same
ORACLE_SIGMAS = (2, 3, 4, 5, 6, 8, 10, 12, 15)  # 0-255: the grid the oracles pick their one sigma from


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255


def halved(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) in [0, 1] at half size, each pixel the mean of 2x2: the detail of a downscaled photo, half the grain."""
    h, w, c = image.shape
    return image[:h // 2 * 2, :w // 2 * 2].reshape(h // 2, 2, w // 2, 2, c).mean((1, 3), dtype=np.float32)


def polyu(root: Path, limit: int | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    names = sorted(p.name for p in (root / "noisy").iterdir())[:limit]
    return [(n, read(root / "noisy" / n), read(root / "clean" / n)) for n in names]


def blind_default(weights: Path) -> Denoise:
    settings = get_settings()
    net = load_denoiser("ffdnet", weights, "cpu")
    return lambda x: net(x, None, settings.tile_size, settings.tile_overlap)


def old_network(weights: Path) -> FFDNet:
    """The previous shipped color weights (one noise-level input) in today's class: a uniform map equals them."""
    ckpt = checkpoint.load(weights / "ffdnet_color.pt")
    net = FFDNet(FFDNetConfig(**ckpt["config"]))
    net.load_state_dict(from_single_level(ckpt["state"], net))
    return net.eval()


@torch.inference_mode()
def with_sigma(net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: np.ndarray, sigma: float) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None]
    return net(t, torch.tensor([sigma])).clamp(0, 1)[0].permute(1, 2, 0).numpy()


def old(weights: Path) -> Denoise:
    net = old_network(weights)
    return lambda x: with_sigma(net, x, quality.noise_level(x))


def pd(weights: Path, scale: int = 2) -> Denoise:
    """Pixel-shuffle down-sampling: the scale x scale sub-images have less correlated noise; they are tiled side
    by side, denoised with the wavelet estimate of the tiling, and their pixels put back."""
    net = old_network(weights)

    def run(x: np.ndarray) -> np.ndarray:
        h, w = (x.shape[0] // scale) * scale, (x.shape[1] // scale) * scale
        sub = x[:h, :w].reshape(h // scale, scale, w // scale, scale, 3).transpose(1, 3, 0, 2, 4)  # (s, s, h', w', 3)
        tiled = np.ascontiguousarray(sub.transpose(0, 2, 1, 3, 4).reshape(h, w, 3))
        out = with_sigma(net, tiled, quality.noise_level(tiled))
        back = out.reshape(scale, h // scale, scale, w // scale, 3).transpose(1, 0, 3, 2, 4).reshape(h, w, 3)
        result = x.copy()
        result[:h, :w] = back
        return result
    return run


def oracle(run: Callable[[np.ndarray, float], np.ndarray], pairs: list[tuple[str, np.ndarray, np.ndarray]],
           probe: int) -> tuple[Denoise, float]:
    """The one sigma of ORACLE_SIGMAS best on the first `probe` PolyU pairs (an oracle: it sees the clean images)."""
    def clipped(x: np.ndarray, sigma: float) -> np.ndarray:
        return np.clip(run(x, sigma), 0, 1).astype(np.float32)

    def mean_psnr(sigma: float) -> float:
        return float(np.mean([quality.psnr(clean, clipped(noisy, sigma)) for _, noisy, clean in pairs[:probe]]))
    best = max(ORACLE_SIGMAS, key=mean_psnr)
    return (lambda x: clipped(x, best)), best


def score(rows: dict[str, Denoise], pairs: list[tuple[str, np.ndarray, np.ndarray]], rni15: list[np.ndarray],
          cbsd68: list[np.ndarray], sigmas: list[int], gaussian_rows: set[str]) -> dict[str, dict]:
    """PolyU and RNI15 for every row; CBSD68 with white Gaussian noise, and clean at half size, for the rows in
    `gaussian_rows`."""
    results: dict[str, dict] = {"input": {
        "polyu_psnr": [quality.psnr(c, n) for _, n, c in pairs], "polyu_ssim": [quality.ssim(c, n) for _, n, c in pairs],
        "rni15_brisque": [quality.brisque(x) for x in rni15]}}
    gen = np.random.default_rng(0)
    noise = {s: [gen.standard_normal(c.shape).astype(np.float32) * s / 255 for c in cbsd68] for s in sigmas}
    halves = [halved(c) for c in cbsd68]
    for name, run in rows.items():
        t = time.perf_counter()
        outs = [run(noisy) for _, noisy, _ in pairs]
        seconds = (time.perf_counter() - t) / max(len(pairs), 1)
        results[name] = {
            "polyu_psnr": [quality.psnr(c, o) for (_, _, c), o in zip(pairs, outs, strict=True)],
            "polyu_ssim": [quality.ssim(c, o) for (_, _, c), o in zip(pairs, outs, strict=True)],
            "rni15_brisque": [quality.brisque(run(x)) for x in rni15],
            "seconds_512": seconds,
            **{f"cbsd68_{s}": float(np.mean([quality.psnr(c, run(c + n)) for c, n in zip(cbsd68, noise[s], strict=True)]))
               for s in (sigmas if name in gaussian_rows else [])}}
        if name in gaussian_rows:
            results[name]["clean_half_psnr"] = [quality.psnr(h, run(h)) for h in halves]
    return results


def sheet(pairs: list[tuple[str, np.ndarray, np.ndarray]], run: Denoise, out: Path, count: int = 6) -> None:
    """Crops of 160 px: noisy / ours / clean, one row per image (the first `count` cameras' scenes)."""
    rows = []
    for _, noisy, clean in pairs[::max(1, len(pairs) // count)][:count]:
        y, x = (noisy.shape[0] - 160) // 2, (noisy.shape[1] - 160) // 2
        crop = np.s_[y:y + 160, x:x + 160]
        rows.append(np.concatenate([noisy[crop], run(noisy)[crop], clean[crop]], axis=1))
    image = (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).round().astype(np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).resize((image.shape[1] * 2, image.shape[0] * 2), Image.NEAREST).save(out)


def table(results: dict[str, dict], sigmas: list[int]) -> str:
    head = ["row", "PolyU PSNR", "SSIM", "worse than input", "RNI15 BRISQUE", *[f"CBSD68 s{s}" for s in sigmas],
            "clean 1/2: PSNR to input, mean (min)", "s / 512x512"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    base = results["input"]["polyu_psnr"]
    for name, r in results.items():
        worse = sum(p < b - 0.1 for p, b in zip(r["polyu_psnr"], base, strict=True)) if name != "input" else ""
        brisque = [b for b in r["rni15_brisque"] if b is not None]
        cells = [name, f"{np.mean(r['polyu_psnr']):.2f}", f"{np.mean(r['polyu_ssim']):.4f}", str(worse),
                 f"{np.mean(brisque):.1f}", *[f"{r[f'cbsd68_{s}']:.2f}" if f"cbsd68_{s}" in r else "" for s in sigmas],
                 f"{np.mean(c):.2f} ({np.min(c):.2f})" if (c := r.get("clean_half_psnr")) else "",
                 f"{r['seconds_512']:.3f}" if "seconds_512" in r else ""]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", default="old,pd", help="comma-separated: old, pd, before, ffdnet-oracle, dncnn-b, "
                   "cbm3d-oracle")
    p.add_argument("--old-weights", type=Path, help="folder with the previous ffdnet_color.pt (for old, pd)")
    p.add_argument("--before", type=Path, help="folder with the weights a candidate replaces (for before)")
    p.add_argument("--limit", type=int, help="first N PolyU pairs")
    p.add_argument("--cbsd68-limit", type=int, help="first N CBSD68 images")
    p.add_argument("--sigmas", default="15,25,50")
    p.add_argument("--gaussian-rows", default="ours,old,before", help="rows also scored on CBSD68 (Gaussian noise, "
                   "clean)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sheet", type=Path)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data = get_settings().shared_data
    pairs = polyu(data / "denoise" / "real" / "polyu", a.limit)
    rni15 = [read(f) for f in sorted((data / "denoise" / "real" / "rni15").iterdir())]
    cbsd68 = [read(f) for f in sorted((data / "denoise" / "test" / "cbsd68").iterdir())[:a.cbsd68_limit]]
    sigmas = [int(s) for s in a.sigmas.split(",") if s]
    peers = [s for s in a.peers.split(",") if s]
    rows: dict[str, Denoise] = {"ours": blind_default(get_settings().weights_dir)}
    if "before" in peers:
        if a.before is None:
            p.error("--peers before needs --before DIR")
        rows["before"] = blind_default(a.before)
    if "old" in peers:
        rows["old (Gaussian-trained, wavelet sigma)"] = old(a.old_weights)
    if "pd" in peers:
        rows["PD x2 around old"] = pd(a.old_weights)
    notes = []
    if {"ffdnet-oracle", "dncnn-b"} & set(peers):
        official = official_peers(data / "peers", data / "denoise" / "train")
        if "ffdnet-oracle" in peers:
            rows["FFDNet official, oracle sigma"], s = oracle(official["FFDNet (official, known sigma)"], pairs, 20)
            notes.append(f"FFDNet oracle sigma {s}")
        if "dncnn-b" in peers:
            blind = official["CDnCNN-B / DnCNN-B (official, blind)"]
            rows["CDnCNN-B official"] = lambda x: np.clip(blind(x, 0), 0, 1)
    if "cbm3d-oracle" in peers:
        rows["CBM3D, oracle sigma"], s = oracle(bm3d_peer(), pairs, 5)
        notes.append(f"CBM3D oracle sigma {s}")
    names = {"ours": "ours", "old": "old (Gaussian-trained, wavelet sigma)"}
    results = score(rows, pairs, rni15, cbsd68, sigmas,
                    {names.get(r, r) for r in a.gaussian_rows.split(",")})
    print(table(results, sigmas))
    print("; ".join(notes))
    print(f"PolyU pairs {len(pairs)}, CBSD68 images {len(cbsd68)}, torch threads {a.threads}")
    print("command: python -m bench.real_noise " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items() if v is not None))
    if a.sheet:
        sheet(pairs, rows["ours"], a.sheet)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"notes": notes, "names": [n for n, _, _ in pairs], **results}, indent=1))


if __name__ == "__main__":
    main()
