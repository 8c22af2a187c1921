"""Screen the GPU run's candidates: PolyU 100 mean PSNR and worst delta, CBSD68 sigma 25 (first 20), float32."""
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.real_noise import polyu, read
from core import quality
from models.registry import load_denoiser

torch.set_num_threads(2)
D = Path(os.environ["DENOCAP_SHARED_DATA"]) / "denoise"
pairs = polyu(D / "real/polyu", None)
cb = [read(p) for p in sorted((D / "test/cbsd68").iterdir())[:20]]
gen = np.random.default_rng(0)
noise = [gen.standard_normal(c.shape).astype(np.float32) * 25 / 255 for c in cb]
base = [quality.psnr(c, n) for _, n, c in pairs]
for cand in sys.argv[1:]:
    d = Path(tempfile.mkdtemp())
    shutil.copy(cand, d / "ffdnet_color.pt")
    net = load_denoiser("ffdnet", d, "cpu", precision="float32")
    ps = [quality.psnr(c, net(n, None, 512, 32)) for _, n, c in pairs]
    cbs = float(np.mean([quality.psnr(c, net(c + z, None, 512, 32)) for c, z in zip(cb, noise)]))
    worst = min(p - b for p, b in zip(ps, base))
    print(json.dumps({"cand": cand, "polyu": round(float(np.mean(ps)), 3), "polyu25": round(float(np.mean(ps[:25])), 3),
                      "worst_delta": round(worst, 3), "cbsd68_25_first20": round(cbs, 3)}), flush=True)
