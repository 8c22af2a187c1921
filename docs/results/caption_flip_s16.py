"""Session 16: the grounding's classifier averaged over the photo and its mirror image, against the shipped
grounded captioner, on general_dev (captioner card, "Session 16"). Run from the repository root."""
from pathlib import Path

import numpy as np
import torch

from models.eval_general import on_general
from models.registry import CaptionModel, _rgb_224, load_captioner


class Mirrored(CaptionModel):
    """The shipped captioner, its classifier's probabilities averaged with those of the mirrored photo."""

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray]) -> list[str]:
        batch = torch.stack([_rgb_224(im, torch.device("cpu")) for im in images])
        features, mirrored = self.encoder(batch), self.encoder(batch.flip(-1))
        classify = self.encoder.classify
        self.encoder.classify = lambda f: (classify(f) + classify(mirrored)) / 2  # type: ignore[method-assign]
        try:
            return self.captions(self.decoder.memory(features), self.guides(features))
        finally:
            del self.encoder.classify


def main() -> None:
    torch.set_num_threads(2)
    shipped = load_captioner("attention", Path("models/weights"), "cpu")
    assert isinstance(shipped, CaptionModel)
    mirrored = Mirrored(**{k: getattr(shipped, k) for k in shipped.__dataclass_fields__})
    runs = on_general({"grounded": shipped, "flip": mirrored}, Path("../shared/data"))
    for name, run in runs.items():
        print(name, {m: run[m] for m in ("subject_named", "wrong_word", "seconds_per_image")})
    a, b = runs["grounded"]["captions"], runs["flip"]["captions"]
    changed = [(k, a[k], b[k]) for k in a if a[k] != b[k]]
    print(len(changed))
    for row in changed:
        print(row)


if __name__ == "__main__":
    main()
