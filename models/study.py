"""The study the product exists for: does denoising restore the captions?

Flickr8k test images with Gaussian noise at several sigmas (fixed seed): captions of the clean, the noisy and the
denoised image, BLEU-4/CIDEr-D of each against the five references, PSNR/SSIM of noisy and denoised. The general
photos of general_dev.json (CBSD68, RNI15) the same way: how often the caption names the subject, and how often it
has a wrong word (RNI15's photos are noisy already: their "clean" is the photo as it is).
Writes docs/study.json, docs/study.md, docs/study.png (score against sigma) and docs/study_examples.png; a run of
one set keeps the other set's part of study.json and study.md.

denocap study [--sets flickr8k,general] [--limit N] [--sigmas 15,25,50]
"""
import json
import logging
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from models.eval_general import general_keys, general_photo, general_rates
from models.registry import CaptionBackend, Denoiser, load_captioner, load_denoiser
from models.train_captioner import load_rgb, read_flickr8k, score

log = logging.getLogger(__name__)


def run(root: Path, denoiser: Denoiser, captioner: CaptionBackend, sigmas: list[float], limit: int | None,
        seed: int = 0) -> tuple[dict, dict]:
    splits, refs = read_flickr8k(root)
    names = splits["test"][:limit]
    clean_caps: dict[str, str] = {}
    caps = {s: {"noisy": {}, "denoised": {}} for s in sigmas}
    fidelity = {s: {"psnr_noisy": [], "psnr": [], "ssim_noisy": [], "ssim": []} for s in sigmas}
    examples: dict[str, dict] = {}
    for i, name in enumerate(names):
        clean = load_rgb(root / "images" / name).permute(1, 2, 0).numpy()
        noisy_by_sigma, denoised_by_sigma = [], []
        for sigma in sigmas:
            noise = np.random.default_rng(seed + i).standard_normal(clean.shape).astype(np.float32) * sigma / 255
            noisy = clean + noise
            denoised = denoiser(noisy, None, 512, 32)  # blind: the estimated noise map
            noisy_by_sigma.append(np.clip(noisy, 0, 1))
            denoised_by_sigma.append(denoised)
            f = fidelity[sigma]
            for key, image in (("noisy", np.clip(noisy, 0, 1)), ("", denoised)):
                f["psnr" + (key and "_" + key)].append(peak_signal_noise_ratio(clean, image, data_range=1.0))
                f["ssim" + (key and "_" + key)].append(structural_similarity(clean, image, data_range=1.0,
                                                                              channel_axis=-1))
        out = captioner([clean, *noisy_by_sigma, *denoised_by_sigma])
        clean_caps[name] = out[0]
        for k, sigma in enumerate(sigmas):
            caps[sigma]["noisy"][name] = out[1 + k]
            caps[sigma]["denoised"][name] = out[1 + len(sigmas) + k]
        if i < 4:
            examples[name] = {"clean": clean, "noisy": noisy_by_sigma[-1], "denoised": denoised_by_sigma[-1],
                              "captions": [out[0], out[len(sigmas)], out[-1]]}
        if (i + 1) % 50 == 0:
            log.info("%d/%d images", i + 1, len(names))
    table = {"images": len(names), "clean": score(clean_caps, refs), "by_sigma": {}}
    for sigma in sigmas:
        noisy_s, den_s = score(caps[sigma]["noisy"], refs), score(caps[sigma]["denoised"], refs)
        lost = table["clean"]["CIDEr"] - noisy_s["CIDEr"]
        table["by_sigma"][f"{sigma:g}"] = {
            "noisy": noisy_s, "denoised": den_s,
            **{k: float(np.mean(v)) for k, v in fidelity[sigma].items()},
            "cider_recovered_fraction": (den_s["CIDEr"] - noisy_s["CIDEr"]) / lost if lost > 0 else None,
        }
    return table, examples


def general(shared: Path, denoiser: Denoiser, captioner: CaptionBackend, sigmas: list[float], seed: int = 0) -> dict:
    """Subject and wrong-word rates of the captions of the general photos: as they are, with noise, denoised."""
    keys = general_keys(shared)
    caps: dict[str, dict[str, str]] = {"clean": {}} | {f"{s:g}/{k}": {} for s in sigmas for k in ("noisy", "denoised")}
    for i, key in enumerate(keys):
        clean = general_photo(shared, key)
        images = {"clean": clean}
        for sigma in sigmas:
            noisy = clean + np.random.default_rng(seed + i).standard_normal(clean.shape).astype(np.float32) * sigma / 255
            images[f"{sigma:g}/noisy"], images[f"{sigma:g}/denoised"] = np.clip(noisy, 0, 1), denoiser(noisy, None, 512, 32)
        for name, caption in zip(images, captioner(list(images.values())), strict=True):
            caps[name][key] = caption
    return {"photos": len(keys), **{name: general_rates(c, keys) for name, c in caps.items()}}


def write_docs(table: dict, docs: Path) -> None:
    (docs / "study.json").write_text(json.dumps(table, indent=1))
    lines = ["# Does denoising restore the captions?\n"]
    if "flickr8k" in table:
        lines += flickr8k_section(table["flickr8k"])
    if "general_dev" in table:
        lines += general_section(table["general_dev"])
    (docs / "study.md").write_text("\n".join(lines))


def general_section(g: dict) -> list[str]:
    lines = [(f"## General photos\n\n`{g['command']}` on the {g['photos']} photos of general_dev.json (CBSD68 and "
             "RNI15; keys written by looking at each photo). Gaussian noise is added to the photo as it is (RNI15's "
             "are noisy already), denoised blind.\n"),
             "| sigma | caption of | subject named | wrong word |", "|---|---|---|---|",
             f"| - | photo | {g['clean']['subject_named']:.1%} | {g['clean']['wrong_word']:.1%} |"]
    for s in g["sigmas"]:
        for k in ("noisy", "denoised"):
            r = g[f"{s:g}/{k}"]
            lines.append(f"| {s:g} | {k} | {r['subject_named']:.1%} | {r['wrong_word']:.1%} |")
    return [*lines, ""]


def plots(table: dict, examples: dict, sigmas: list[float], docs: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("CIDEr", "BLEU-4")):
        ax.plot(sigmas, [table["clean"][metric]] * len(sigmas), "k--", label="clean")
        ax.plot(sigmas, [table["by_sigma"][f"{s:g}"]["noisy"][metric] for s in sigmas], "r-o", label="noisy")
        ax.plot(sigmas, [table["by_sigma"][f"{s:g}"]["denoised"][metric] for s in sigmas], "g-o", label="denoised")
        ax.set_xlabel("noise sigma (0-255)")
        ax.set_ylabel(metric)
        ax.legend()
    fig.suptitle(f"Flickr8k test ({table['images']} images): caption quality against noise")
    fig.tight_layout()
    fig.savefig(docs / "study.png", dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(len(examples), 3, figsize=(12, 4.2 * len(examples)), squeeze=False)
    for row, (name, ex) in enumerate(examples.items()):
        for col, key in enumerate(("clean", "noisy", "denoised")):
            ax = axes[row, col]
            ax.imshow(np.clip(ex[key], 0, 1))
            ax.set_title(f"{key}: {ex['captions'][col]}", fontsize=8, wrap=True)
            ax.axis("off")
    fig.suptitle(f"sigma {sigmas[-1]:g}: clean | noisy | denoised, each with its caption")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(docs / "study_examples.png", dpi=80)
    plt.close(fig)


def flickr8k_section(table: dict) -> list[str]:
    lines = [f"## Flickr8k\n\n`{table['command']}` on {table['images']} Flickr8k test images.\n",
             "| sigma | caption of | BLEU-4 | CIDEr-D | PSNR | SSIM | CIDEr lost to noise recovered |",
             "|---|---|---|---|---|---|---|",
             f"| - | clean | {table['clean']['BLEU-4']:.3f} | {table['clean']['CIDEr']:.3f} | | | |"]
    for s in table["by_sigma"]:
        r = table["by_sigma"][s]
        rec = r["cider_recovered_fraction"]
        lines.append(f"| {s} | noisy | {r['noisy']['BLEU-4']:.3f} | {r['noisy']['CIDEr']:.3f} | "
                     f"{r['psnr_noisy']:.2f} | {r['ssim_noisy']:.3f} | |")
        lines.append(f"| {s} | denoised | {r['denoised']['BLEU-4']:.3f} | {r['denoised']['CIDEr']:.3f} | "
                     f"{r['psnr']:.2f} | {r['ssim']:.3f} | {'' if rec is None else f'{rec:.0%}'} |")
    return [*lines, "", "![score against sigma](study.png)", "", "![examples](study_examples.png)", ""]


def study(shared: Path, weights_dir: Path, sigmas: list[float], limit: int | None, docs: Path, threads: int = 2,
          sets: tuple[str, ...] = ("flickr8k", "general")) -> dict:
    torch.set_num_threads(threads)
    denoiser = load_denoiser("ffdnet", weights_dir, "cpu")
    captioner = load_captioner("attention", weights_dir, "cpu")
    docs.mkdir(parents=True, exist_ok=True)
    previous = docs / "study.json"
    table = json.loads(previous.read_text()) if previous.is_file() else {}
    levels = ",".join(f"{s:g}" for s in sigmas)
    if "flickr8k" in sets:
        flickr, examples = run(shared / "caption" / "flickr8k", denoiser, captioner, sigmas, limit)
        table["flickr8k"] = {**flickr, "command": "denocap study --sets flickr8k" + (f" --limit {limit}" if limit else "")
                             + f" --sigmas {levels}"}
        plots(flickr, examples, sigmas, docs)
    if "general" in sets:
        table["general_dev"] = {**general(shared, denoiser, captioner, sigmas), "sigmas": sigmas,
                                "command": f"denocap study --sets general --sigmas {levels}"}
    write_docs(table, docs)
    return table
