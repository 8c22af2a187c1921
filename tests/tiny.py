"""Tiny networks, built and saved by the tests themselves (the shipped weights are never needed by a test)."""
from pathlib import Path

import torch

from models.captioner import Captioner, CaptionerConfig
from models.ffdnet import FFDNet, FFDNetConfig
from models.train_captioner import export_weights as export_captioner
from models.train_denoiser import export_weights as export_denoiser
from models.vocab import Vocabulary

WORDS = ["a", "dog", "runs", "on", "the", "grass", "cat", "sits"]


def tiny_denoiser(channels: int, seed: int = 0) -> FFDNet:
    torch.manual_seed(seed)
    return FFDNet(FFDNetConfig(channels=channels, features=8, blocks=1)).eval()


def tiny_captioner(seed: int = 0) -> tuple[Captioner, Vocabulary]:
    torch.manual_seed(seed)
    vocab = Vocabulary(["<pad>", "<bos>", "<eos>", "<unk>", *WORDS])
    config = CaptionerConfig(vocab_size=len(vocab), d_model=16, heads=2, layers=1, max_len=8, dropout=0.0)
    return Captioner(config).eval(), vocab


def write_weights(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    export_denoiser(tiny_denoiser(3), folder / "ffdnet_color.pt", step=0, val_psnr=0.0)
    export_denoiser(tiny_denoiser(1), folder / "ffdnet_gray.pt", step=0, val_psnr=0.0)
    model, vocab = tiny_captioner()
    export_captioner(model, vocab, folder / "captioner.pt", epoch=0, scores={})
    return folder
