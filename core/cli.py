"""The denocap command line."""
import io
import logging
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from core import service
from core.config import get_settings
from core.db import make_engine, migrate, session_factory
from core.storage import LocalStorage
from core.tables import Batch, ItemState

app = typer.Typer(help="Denoise photos with a deep network, then describe each in a sentence.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(width=None if sys.stdout.isatty() else 200)  # files and pipes get whole rows
err = Console(stderr=True)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
SAMPLES = ("astronaut", "camera", "chelsea", "coffee", "rocket")


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def collect(paths: list[Path]) -> list[service.Upload]:
    """Files as given, folders by their image files (sorted); a missing path is an error."""
    uploads = []
    for path in paths:
        if path.is_dir():
            uploads += [service.Upload(p.name, p.read_bytes()) for p in sorted(path.iterdir())
                        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        elif path.is_file():
            uploads.append(service.Upload(path.name, path.read_bytes()))
        else:
            fail(f"no such file or folder: {path}")
    return uploads


def sample_uploads() -> list[service.Upload]:
    import skimage.data
    uploads = []
    for name in SAMPLES:
        buf = io.BytesIO()
        Image.fromarray(np.asarray(getattr(skimage.data, name)())).save(buf, format="PNG")
        uploads.append(service.Upload(f"{name}.png", buf.getvalue()))
    return uploads


@app.command()
def run(
    paths: Annotated[list[Path] | None, typer.Argument(help="images or folders; none: scikit-image's samples")] = None,
    add_noise: Annotated[float | None, typer.Option(help="add Gaussian noise of this sigma (0-255) first; "
                                                         "the clean image is the reference (samples: 25)")] = None,
    seed: int = 0,
    denoise_sigma: Annotated[float | None, typer.Option(help="use this sigma instead of the estimate")] = None,
    denoiser: str = "ffdnet",
    captioner: str = "attention",
) -> None:
    """Process images in this process (no Redis, no worker) into the local database, then print a table."""
    settings = get_settings()
    uploads = collect(paths) if paths else sample_uploads()
    if add_noise is None and not paths:
        add_noise = 25.0
    if not uploads:
        fail("no image files found")
    migrate(settings.database_url)
    sessions = session_factory(make_engine(settings.database_url))
    storage = LocalStorage(settings.files)
    options = service.BatchOptions(add_noise, seed, denoise_sigma, denoiser, captioner)
    with sessions.begin() as session:
        try:
            batch = service.submit(session, storage, settings, uploads, options)
        except service.SubmitError as e:
            fail(str(e))
        batch_id = batch.id
        queued = [i.id for i in batch.items if i.state == ItemState.queued]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err) as progress:
        task = progress.add_task("denoise + caption", total=len(queued))
        for start in range(0, len(queued), settings.micro_batch):
            chunk = queued[start:start + settings.micro_batch]
            service.process_items(sessions, storage, settings, chunk)
            progress.advance(task, len(chunk))
    with sessions() as session:
        batch = session.get_one(Batch, batch_id)
        console.print(result_table(batch))
        failed = sum(i.state == ItemState.failed for i in batch.items)
    console.print(f"batch {batch_id}: {len(uploads) - failed} done, {failed} failed; database {settings.database_url}")
    if failed:
        raise typer.Exit(1)


def result_table(batch: Batch) -> Table:
    table = Table("file", "state", "sigma est.", "PSNR noisy→denoised", "SSIM", "caption (denoised)",
                  "caption (noisy)")
    for item in batch.items:
        r = item.result
        if r is None:
            table.add_row(item.filename, item.state.value, "", "", "", item.error or "", "")
            continue
        psnr = f"{r.psnr_noisy:.2f}→{r.psnr:.2f}" if r.psnr is not None else f"BRISQUE {r.brisque_noisy:.1f}→{r.brisque:.1f}"
        ssim = f"{r.ssim_noisy:.3f}→{r.ssim:.3f}" if r.ssim is not None else ""
        table.add_row(item.filename, item.state.value, f"{r.sigma_estimate:.1f}", psnr, ssim, r.caption,
                      r.caption_noisy)
    return table


@app.command("migrate")
def migrate_cmd() -> None:
    """Bring the database schema to the newest Alembic revision."""
    migrate(get_settings().database_url)


@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the HTTP API (needs Redis for the queue and a worker to process)."""
    import uvicorn
    migrate(get_settings().database_url)
    uvicorn.run("api.main:create_app", factory=True, host=host, port=port, workers=workers)


@app.command()
def worker(concurrency: int = 1, loglevel: str = "INFO", pool: str = "prefork") -> None:
    """Run a Celery worker that processes queued items."""
    from worker.app import app as celery_app
    celery_app.worker_main(["worker", f"--concurrency={concurrency}", f"--loglevel={loglevel}", f"--pool={pool}",
                            "-Q", "denocap"])


def main() -> None:  # the console script
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":
    main()
