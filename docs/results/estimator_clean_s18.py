"""Can the noise estimator alone learn to read clean detail as clean? The shipped body is frozen; only the
estimator is fine-tuned, with the shipped recipe's noise (models/noise.py) on CBSD432's photos and their half-size
copies, a share of samples left clean (target map 0), CBDNet's asymmetric loss. An experiment: the weights are
written to OUT and scored with bench.real_noise; nothing here is product code.

PYTHONPATH=. python docs/results/estimator_clean_s18.py OUT STEPS CLEAN_SHARE
"""
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.real_noise import halved
from core.config import get_settings
from models import checkpoint
from models.ffdnet import FFDNet, FFDNetConfig
from models.noise import degrade, level_map
from models.train_denoiser import VAL_IMAGES, Patches, asymmetric_loss, export_weights, load_images


def crops(images: list[np.ndarray], size: int) -> torch.Tensor:
    return torch.stack([torch.from_numpy(im[:size, :size].copy()).permute(2, 0, 1).float() / 255 for im in images])


out, steps, clean_share = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
torch.set_num_threads(2)
settings = get_settings()
shipped = checkpoint.load(settings.weights_dir / "ffdnet_color.pt")
model = FFDNet(FFDNetConfig(**shipped["config"]))
model.load_state_dict({k: v.float() for k, v in shipped["state"].items()})
for name, p in model.named_parameters():
    p.requires_grad = name.startswith("estimator.")
images = load_images(settings.shared_data / "denoise" / "train" / "cbsd432", 3)
as_uint8 = [np.round(halved(im.astype(np.float32) / 255) * 255).astype(np.uint8) for im in images]
patches = Patches(images[:-VAL_IMAGES] + as_uint8[:-VAL_IMAGES], "cpu")
val_clean = crops(as_uint8[-VAL_IMAGES:], 96)
val_pairs = crops(images[-VAL_IMAGES:], 192)
val_noisy = degrade(val_pairs, torch.Generator().manual_seed(0))
val_target = level_map(val_noisy, val_pairs)
opt = torch.optim.Adam(model.estimator.parameters(), lr=1e-3)
gen = torch.Generator().manual_seed(0)


@torch.inference_mode()
def report(step: int) -> None:
    clean_read = float(model.estimate(val_clean).mean()) * 255
    noisy_err = float((model.estimate(val_noisy) - val_target).abs().mean()) * 255
    print(time.strftime("%H:%M:%S"), f"step {step}  clean halves read {clean_read:.2f}  noisy |error| {noisy_err:.2f}",
          flush=True)


report(0)
for step in range(steps):
    for group in opt.param_groups:
        group["lr"] = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * step / steps))
    clean = patches.sample(32, 64, gen)
    noisy = degrade(clean, gen)
    keep = (torch.rand(len(clean), generator=gen) < clean_share).view(-1, 1, 1, 1)
    noisy = torch.where(keep, clean, noisy)
    loss = asymmetric_loss(model.estimate(noisy), level_map(noisy, clean))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if (step + 1) % 500 == 0:
        report(step + 1)
out.mkdir(parents=True, exist_ok=True)
export_weights(model, out / "ffdnet_color.pt", shipped["step"], shipped["val_psnr"])
(out / "ffdnet_gray.pt").unlink(missing_ok=True)
(out / "ffdnet_gray.pt").symlink_to((settings.weights_dir / "ffdnet_gray.pt").resolve())
