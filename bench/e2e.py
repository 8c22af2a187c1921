"""End-to-end images/s on 512x512 images (submit -> claim -> decode -> denoise -> metrics -> caption -> store, on
SQLite in this process) against the denoiser + captioner compute alone, measured in one run.

python -m bench.e2e [--images 8] [--threads 2]
"""
import argparse
import io
import tempfile
import time
from pathlib import Path

import skimage.data
import torch
from PIL import Image

from core import pipeline, process, tenants
from core.config import Settings
from core.db import make_engine, migrate, session_factory
from core.imageio import decode
from core.options import BatchOptions
from core.storage import make_storage
from core.submit import Upload, limits_of, submit
from core.tables import ItemState


def images_512(n: int) -> list[bytes]:
    sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    out = []
    for i in range(n):
        img = Image.fromarray(sources[i % len(sources)]).resize((512, 512)).rotate(90 * (i // len(sources)))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data = images_512(a.images)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        models = process.CachedModels(settings)
        denoiser, captioner = models.denoiser("ffdnet"), models.captioner("attention")
        runtime = pipeline.Runtime(limits_of(settings), settings.tile_size, settings.tile_overlap)
        pictures = [decode(d, runtime.limits) for d in data]
        pipeline.process(data[0], None, BatchOptions(add_noise=25), models, runtime)  # warm up

        t = time.perf_counter()
        for pic in pictures:
            denoiser(pic.pixels, None, settings.tile_size, settings.tile_overlap)
        denoise_each = (time.perf_counter() - t) / len(pictures)
        t = time.perf_counter()
        for pic in pictures:
            captioner([pic.pixels])
        caption_each = (time.perf_counter() - t) / len(pictures)

        t = time.perf_counter()
        for start in range(0, len(pictures), settings.micro_batch):
            chunk = pictures[start:start + settings.micro_batch]
            restored = [denoiser(pipeline.add_noise(pic, 25, 0).pixels, None, settings.tile_size,
                                 settings.tile_overlap) for pic in chunk]
            captioner([*restored, *[pic.pixels for pic in chunk]])
        compute = time.perf_counter() - t

        migrate(settings.database_url)
        sessions = session_factory(make_engine(settings.database_url))
        storage = make_storage(settings)
        t = time.perf_counter()
        with sessions.begin() as s:
            tenant = tenants.tenant_named(s, tenants.LOCAL, create=True).id
            batch, _ = submit(s, storage, settings, tenant, [Upload(f"{i}.png", d) for i, d in enumerate(data)],
                              BatchOptions(add_noise=25))
            ids = [i.id for i in batch.items]
        for start in range(0, len(ids), settings.micro_batch):
            process.process_items(sessions, storage, settings, ids[start:start + settings.micro_batch])
        end_to_end = time.perf_counter() - t
        with sessions() as s:
            assert all(i.state == ItemState.done for i in s.get_one(type(batch), batch.id).items)
    n = len(data)
    print(f"images: {n} x 512x512 RGB, torch threads {a.threads}")
    print(f"denoise one 512x512 RGB image: {denoise_each:.3f} s; caption one decoded image: {caption_each * 1000:.0f} ms")
    print(f"compute alone (denoise + caption noisy and denoised): {n / compute:.3f} images/s")
    print(f"end to end (submit, decode, estimate and denoise, metrics, caption, store): {n / end_to_end:.3f} images/s")
    print(f"end-to-end throughput / compute-alone throughput: {compute / end_to_end:.3f}")
    print(f"command: python -m bench.e2e --images {a.images} --threads {a.threads}")


if __name__ == "__main__":
    main()
