import sys, torch, numpy as np
from pathlib import Path
from models.registry import load_captioner, CaptionModel, _rgb_224
from models.eval_general import on_general
from models import registry
torch.set_num_threads(2)
W = Path("models/weights"); shared = Path("../shared/data")
base = load_captioner("attention", W, "cpu")

class TTA(CaptionModel):
    @torch.inference_mode()
    def __call__(self, images):
        device = next(self.decoder.parameters()).device
        batch = torch.stack([_rgb_224(im, device) for im in images])
        features = self.encoder(batch)
        self._flip = self.encoder(batch.flip(-1))
        return self.captions(self.decoder.memory(features), self.guides(features))
    def guides(self, features):
        orig = self.encoder.classify
        flip = self._flip
        self.encoder.classify = lambda f: (orig(f) + orig(flip)) / 2
        try:
            return super().guides(features)
        finally:
            del self.encoder.classify

tta = TTA(**{k: getattr(base, k) for k in base.__dataclass_fields__})
r = on_general({"grounded": base, "flip": tta}, shared)
for k, v in r.items():
    print(k, {m: v[m] for m in ("subject_named", "wrong_word", "seconds_per_image")})
changed = [(p, r["grounded"]["captions"][p], r["flip"]["captions"][p]) for p in r["flip"]["captions"] if r["grounded"]["captions"][p] != r["flip"]["captions"][p]]
print(len(changed)); [print(c) for c in changed]
