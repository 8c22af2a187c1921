"""Opt-in captioning backend: a BLIP image-to-text model (Li et al., 2022) from a local folder, via transformers.

Nothing is ever downloaded: the folder must hold what `save_pretrained` writes for the model and its processor.
"""
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class BlipCaptioner:
    name: str
    version: str
    model: Any
    processor: Any
    beam: int = 3
    max_new_tokens: int = 24

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray]) -> list[str]:
        rgb = [np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im for im in images]
        batch = self.processor(images=[(np.clip(im, 0, 1) * 255).round().astype(np.uint8) for im in rgb],
                               return_tensors="pt").to(self.model.device)
        out = self.model.generate(**batch, num_beams=self.beam, max_new_tokens=self.max_new_tokens,
                                  min_new_tokens=1, no_repeat_ngram_size=3)
        return [t.strip() for t in self.processor.batch_decode(out, skip_special_tokens=True)]


def load_blip(folder: Path, device: torch.device, beam: int = 3) -> BlipCaptioner:
    from transformers import BlipForConditionalGeneration, BlipProcessor
    model = BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True).to(device).eval()
    processor = BlipProcessor.from_pretrained(folder, local_files_only=True)
    digest = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + [folder / "config.json"]:
        digest.update(f.read_bytes())
    return BlipCaptioner("blip", digest.hexdigest()[:12], model, processor, beam)
