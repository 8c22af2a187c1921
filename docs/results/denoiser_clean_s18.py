"""Why the shipped blind default changes clean photos, and which half of the clean-share experiment cost PolyU.

CBSD68 at half size (bench.real_noise.halved: 2x2 means): the estimator's reading and the PSNR of the output to its
input with the estimated map and with a map of 0; then the shipped network and the experiment's (commit eefb986's
recipe, weights in EXPERIMENT) with their bodies and estimators swapped, on PolyU's first 30 pairs (evaluation
only) and on the clean half-size photos. Float32, whole images.

PYTHONPATH=. python docs/results/denoiser_clean_s18.py EXPERIMENT/ffdnet_color.pt
"""
import sys
from pathlib import Path

import numpy as np
import torch

from bench.real_noise import halved, polyu, read
from core.config import get_settings
from models import checkpoint
from models.ffdnet import FFDNet, FFDNetConfig

torch.set_num_threads(2)
data = get_settings().shared_data


def network(weights: Path) -> FFDNet:
    ckpt = checkpoint.load(weights)
    net = FFDNet(FFDNetConfig(**ckpt["config"]))
    net.load_state_dict({k: v.float() for k, v in ckpt["state"].items()})
    return net.eval()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / np.mean((np.clip(a, 0, 1) - b) ** 2)))


@torch.inference_mode()
def run(body: FFDNet, estimator: FFDNet, x: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, float]:
    """The output and the mean estimated level (0-255)."""
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None]
    level = estimator.estimate(t)
    return body(t, level * scale)[0].permute(1, 2, 0).numpy(), float(level.mean()) * 255


shipped, experiment = network(get_settings().weights_dir / "ffdnet_color.pt"), network(Path(sys.argv[1]))
halves = [halved(read(p)) for p in sorted((data / "denoise" / "test" / "cbsd68").iterdir())]
reads = [run(shipped, shipped, h)[1] for h in halves[:20]]
print(f"shipped, CBSD68 at half size, first 20: estimated {min(reads):.1f}-{max(reads):.1f} (mean {np.mean(reads):.2f})")
for scale in (1.0, 0.0):
    print(f"  map x{scale:g}: PSNR to input {np.mean([psnr(run(shipped, shipped, h, scale)[0], h) for h in halves[:20]]):.2f}")
pairs = polyu(data / "denoise" / "real" / "polyu", 30)
combos = {"shipped body, shipped estimator": (shipped, shipped), "shipped body, experiment's estimator": (shipped, experiment),
          "experiment's body, shipped estimator": (experiment, shipped),
          "experiment's body, experiment's estimator": (experiment, experiment)}
for name, (body, estimator) in combos.items():
    outs = [run(body, estimator, noisy) for _, noisy, _ in pairs]
    polyu_psnr = np.mean([psnr(o, clean) for (o, _), (_, _, clean) in zip(outs, pairs, strict=True)])
    clean = [psnr(run(body, estimator, h)[0], h) for h in halves]
    print(f"{name}: PolyU first 30 {polyu_psnr:.3f} (estimated {np.mean([e for _, e in outs]):.2f}); "
          f"CBSD68 at half size, all 68, PSNR to input {np.mean(clean):.2f} (min {min(clean):.2f})")
