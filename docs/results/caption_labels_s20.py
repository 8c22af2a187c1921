"""Does a decoder trained with label tokens use them? Greedy dev CIDEr-D of one exported decoder with each image's
own labels, with the labels of another image (a fixed shuffle), and with every label at probability 1e-4.

python docs/results/caption_labels_s20.py PREPARED WEIGHTS.pt [IMAGES]
at 72db5cd: the label code it needs was reverted after the measurement.
"""
import sys
from pathlib import Path

import numpy as np
import torch

from models import checkpoint
from models.captioner import Captioner, CaptionerConfig
from models.train_captioner import CaptionData, caption_names, score

prepared, weights = Path(sys.argv[1]), Path(sys.argv[2])
images = int(sys.argv[3]) if len(sys.argv) > 3 else 250
torch.set_num_threads(2)
ckpt = checkpoint.load(weights)
model = Captioner(CaptionerConfig(**ckpt["config"]))
model.load_state_dict({k: v.float() for k, v in ckpt["state"].items()})
data = CaptionData(prepared, model.config.max_len, model.config.labels)
names = data.splits["dev"][:images]
assert data.labels is not None
ids, probs = data.labels
other = np.random.default_rng(0).permutation(len(ids))
for name, labels in {"own labels": (ids, probs), "another image's labels": (ids[other], probs[other]),
                     "labels at 1e-4": (ids, torch.full_like(probs, 1e-4))}.items():
    data.labels = labels
    with torch.inference_mode():
        s = score(caption_names(model, data, names, beam=1), data.refs)
    print(f"{name:24s} dev ({images} images) CIDEr-D {s['CIDEr']:.3f}  BLEU-4 {s['BLEU-4']:.3f}")
