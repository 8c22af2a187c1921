"""End-to-end images/s on 512x512 images (submit -> claim -> decode -> denoise -> metrics -> caption -> store, on
SQLite) against the denoiser + captioner compute alone, with P worker processes of T torch threads each, and
where an item's seconds go (the stage timings stored with each result; "store" is the rest: PNG encodes, storage,
database), with the share of an item's wall time that the denoise and caption stages take. With --against REV
the same harness runs first on REV's code (a git worktree), for a ratio measured
in one run.

python -m bench.e2e [--images 16] [--processes 1] [--threads 2] [--add-noise 25 | --add-noise none]
    [--against REV] [--json FILE]
"""
import argparse
import io
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def images_512(n: int) -> list[bytes]:
    import skimage.data
    from PIL import Image
    sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    out = []
    for i in range(n):
        img = Image.fromarray(sources[i % len(sources)]).resize((512, 512)).rotate(90 * (i // len(sources)))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _models(data_dir: str, threads: int):  # type: ignore[no-untyped-def]
    import torch

    from core import pipeline, process
    from core.config import Settings
    from core.submit import limits_of
    torch.set_num_threads(threads)
    settings = Settings(data_dir=Path(data_dir))
    models = process.CachedModels(settings)
    return settings, models, pipeline.Runtime(limits_of(settings), settings.tile_size, settings.tile_overlap)


def compute_share(args: tuple[str, int, list[bytes], float | None]) -> float:
    """Denoise and caption (noisy and denoised) this process's images; returns the seconds, after a warm-up."""
    from core import pipeline
    from core.imageio import decode
    from core.options import BatchOptions
    data_dir, threads, data, sigma = args
    settings, models, runtime = _models(data_dir, threads)
    opts = BatchOptions(add_noise=sigma)
    denoiser, captioner = models.denoiser(opts.denoiser), models.captioner(opts.captioner)
    pictures = [decode(d, runtime.limits) for d in data]
    noisy = [pipeline.add_noise(p, sigma, 0) if sigma is not None else p for p in pictures]
    pipeline.process(data[0], None, opts, models, runtime)  # warm up
    start = time.perf_counter()
    for pic in noisy:
        restored = denoiser(pic.pixels, None, settings.tile_size, settings.tile_overlap)
        captioner([restored, pic.pixels])
    return time.perf_counter() - start


def end_to_end_share(args: tuple[str, int, list[str], bytes]) -> float:
    """Claim, run and store this process's items, as a worker does; returns the seconds, after a warm-up."""
    from core import pipeline, process
    from core.db import make_engine, session_factory
    from core.options import BatchOptions
    from core.storage import make_storage
    data_dir, threads, ids, warm = args
    settings, models, runtime = _models(data_dir, threads)
    pipeline.process(warm, None, BatchOptions(add_noise=25), models, runtime)
    sessions = session_factory(make_engine(settings.database_url))
    storage = make_storage(settings)
    start = time.perf_counter()
    for i in range(0, len(ids), settings.micro_batch):
        process.process_items(sessions, storage, settings, ids[i:i + settings.micro_batch])
    return time.perf_counter() - start


def measure(n: int, processes: int, threads: int, sigma: float | None) -> dict:
    from core import tenants
    from core.config import Settings
    from core.db import make_engine, migrate, session_factory
    from core.options import BatchOptions
    from core.storage import make_storage
    from core.submit import Upload, submit
    from core.tables import Item, ItemState, Result
    data = images_512(n)
    shares = [list(range(p, n, processes)) for p in range(processes)]
    pool = multiprocessing.get_context("spawn").Pool(processes)
    with tempfile.TemporaryDirectory() as tmp, pool:
        jobs = [(tmp, threads, [data[i] for i in s], sigma) for s in shares]
        pool.map(compute_share, jobs)  # each process loads its models once; the second pass is the measured one
        compute = max(pool.map(compute_share, jobs))
        settings = Settings(data_dir=Path(tmp))
        migrate(settings.database_url)
        sessions = session_factory(make_engine(settings.database_url))
        with sessions.begin() as s:
            tenant = tenants.tenant_named(s, tenants.LOCAL, create=True).id
            batch, _ = submit(s, make_storage(settings), settings, tenant,
                              [Upload(f"{i}.png", d) for i, d in enumerate(data)], BatchOptions(add_noise=sigma))
            ids = [i.id for i in batch.items]
        end_to_end = max(pool.map(end_to_end_share, [(tmp, threads, [ids[i] for i in s], data[0]) for s in shares]))
        with sessions() as s:
            rows = s.query(Item.state, Result.timings).join(Result, Result.item_id == Item.id).all()
    assert len(rows) == n and all(state == ItemState.done for state, _ in rows), "not every item was done"
    stages = {k: float(np.mean([t[k] for _, t in rows])) for k in rows[0][1]}
    per_item = end_to_end * processes / n
    share = (stages["denoise"] + stages["caption"]) / per_item
    stages["store (rest: PNG encodes, storage, database)"] = per_item - sum(stages.values())
    return {"images": n, "processes": processes, "threads": threads, "add_noise": sigma,
            "compute_images_per_s": n / compute, "end_to_end_images_per_s": n / end_to_end,
            "end_to_end_over_compute": compute / end_to_end, "compute_share_of_item": share,
            "seconds_per_item_by_stage": stages}


def against(rev: str, argv: list[str]) -> dict:
    """This harness on REV's code: a worktree of REV first on the import path (this file is not in it)."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
        try:
            out = Path(tmp) / "old.json"
            env = {**os.environ, "PYTHONPATH": str(tree)}
            subprocess.run([sys.executable, __file__, *argv, "--json", str(out)], check=True, env=env, cwd=tree)
            return json.loads(out.read_text())
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)


def show(label: str, r: dict) -> None:
    print(f"{label}: {r['images']} x 512x512 RGB, {r['processes']} process(es) x {r['threads']} torch thread(s), "
          f"synthetic noise {r['add_noise']}")
    print(f"  compute alone (denoise + caption noisy and denoised): {r['compute_images_per_s']:.3f} images/s")
    print(f"  end to end (claim, decode, estimate and denoise, metrics, caption, store): "
          f"{r['end_to_end_images_per_s']:.3f} images/s; end-to-end / compute-alone {r['end_to_end_over_compute']:.3f}")
    print("  seconds per item: " + ", ".join(f"{k} {v:.3f}" for k, v in r["seconds_per_item_by_stage"].items()))
    print(f"  denoise + caption / an item's wall time, same run (steadier than the ratio of two timed passes on a "
          f"shared machine): {r['compute_share_of_item']:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--add-noise", default="25", help="sigma of the synthetic noise (PSNR/SSIM), or none (BRISQUE)")
    p.add_argument("--against", help="a git revision to measure first with the same harness")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    argv = ["--images", str(a.images), "--processes", str(a.processes), "--threads", str(a.threads),
            "--add-noise", a.add_noise]
    old = against(a.against, argv) if a.against else None
    new = measure(a.images, a.processes, a.threads, None if a.add_noise == "none" else float(a.add_noise))
    if a.json:
        a.json.write_text(json.dumps({"old": old, "new": new} if old else new, indent=1))
    if old:
        show(f"{a.against}", old)
    show("this tree", new)
    if old:
        print(f"end-to-end images/s, this tree / {a.against}: "
              f"{new['end_to_end_images_per_s'] / old['end_to_end_images_per_s']:.2f}x")
    print(f"command: python -m bench.e2e {' '.join(argv)}" + (f" --against {a.against}" if a.against else ""))


if __name__ == "__main__":
    main()
