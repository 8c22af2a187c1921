"""Session 20's third decoder: label tokens with a pointer over the label slots (CaptionerConfig.copy), trained with
word substitution. This code is at the commit that adds this file; it was reverted after the measurement.

python docs/results/caption_copy_s20.py PREPARED RUN_DIR EXPORT.pt
"""
import logging
import sys
from pathlib import Path

from models.captioner import CaptionerConfig
from models.train_captioner import train
from models.vocab import Vocabulary

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
prepared, run_dir, export = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
config = CaptionerConfig(len(Vocabulary.load(prepared / "vocab.json")), labels=5, copy=True)
train(prepared, run_dir, export, hours=0.45, epochs=12, threads=2, config=config, labels=5, substitute=0.5)
