"""The opt-in BLIP backend's real loading code, on a tiny random BLIP that the test builds and saves itself."""
from pathlib import Path

import numpy as np
import pytest

from models.registry import ModelError, load_captioner
from tests.conftest import png, smooth_image
from tests.test_cli import denocap

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "cat", "runs", "on", "grass"]


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
        BlipTextConfig,
        BlipVisionConfig,
    )
    folder = tmp_path_factory.mktemp("blip")
    (folder / "vocab.txt").write_text("\n".join(WORDS))
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=BertTokenizerFast(vocab_file=str(folder / "vocab.txt")))
    text = BlipTextConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, encoder_hidden_size=16, max_position_embeddings=32, bos_token_id=2,
                          sep_token_id=3, pad_token_id=0)
    vision = BlipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=16)
    torch.manual_seed(0)
    BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_blip_loads_offline_and_captions(blip_folder: Path) -> None:
    model = load_captioner("blip", blip_folder, "cpu", beam=2)
    gray = smooth_image(40, 50, channels=1).astype(np.float32)[..., None] / 255
    captions = model([smooth_image(40, 50).astype(np.float32) / 255, gray])
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    assert all(set(c.split()) <= set(WORDS[5:]) for c in captions)
    assert model.name == "blip" and len(model.version) == 12


def test_blip_without_a_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no BLIP model"):
        load_captioner("blip", tmp_path, "cpu")


def test_cli_caption_with_blip(env: dict[str, str], blip_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(smooth_image()))
    out = denocap(env, "caption", str(tmp_path / "a.png"), "--captioner", "blip", "--weights", str(blip_folder))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("a.png\t")
    out = denocap(env, "caption", str(tmp_path / "a.png"), "--captioner", "blip")
    assert out.returncode == 2 and "no BLIP model" in out.stderr
