"""The denocap command line."""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import click
import typer
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from core import logs
from core.config import get_settings, unknown_settings

if TYPE_CHECKING:  # the rest loads inside the commands that need it, keeping `--help` light
    from collections.abc import Iterable

    from sqlalchemy.orm import sessionmaker

    from api.schemas import ItemOut
    from core import bulk, submit
    from core.client import Client
    from core.imageio import Limits, Picture
    from core.options import BatchOptions
    from core.tables import Batch, Item

app = typer.Typer(help="Denoise photos with a deep network, then describe each in a sentence.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(width=None if sys.stdout and sys.stdout.isatty() else 200)  # files and pipes get whole rows
err = Console(stderr=True)
SAMPLES = ("astronaut", "camera", "chelsea", "coffee", "rocket")


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def failing(*errors: type[Exception], code: int = 2) -> Iterator[None]:
    """These errors of the block end the command as one line (their message) and exit `code`."""
    try:
        yield
    except errors as e:
        fail(str(e), code)


def collect(paths: list[Path]) -> list[submit.Sendable]:
    from core import submit
    return [submit.LocalFile(p.name, p) for p in image_files(paths)]


def sample_uploads() -> list[submit.Sendable]:
    import numpy as np
    import skimage.data
    from PIL import Image

    from core import submit
    uploads = []
    for name in SAMPLES:
        buf = io.BytesIO()
        Image.fromarray(np.asarray(getattr(skimage.data, name)())).save(buf, format="PNG")
        uploads.append(submit.Upload(f"{name}.png", buf.getvalue()))
    return uploads


AddNoise = Annotated[float | None, typer.Option(help="add Gaussian noise of this sigma (0-255) first; the clean "
                                                  "image is the reference (run on the samples: 25)")]
DenoiseSigma = Annotated[float | None, typer.Option(help="use this sigma instead of the estimate")]


@app.command()
def run(
    paths: Annotated[list[Path] | None, typer.Argument(help="images or folders; none: scikit-image's samples")] = None,
    add_noise: AddNoise = None,
    seed: int = 0,
    denoise_sigma: DenoiseSigma = None,
    denoiser: str = "ffdnet",
    captioner: str = "attention",
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per image on stdout, no table")] = False,
) -> None:
    """Process images in this process (no Redis, no worker) into the local database, then print a table."""
    from core import process, submit, tenants
    from core.storage import StorageUnavailable, make_storage
    from core.tables import Batch, ItemState
    settings = get_settings()
    uploads = collect(paths) if paths else sample_uploads()
    if add_noise is None and not paths:
        add_noise = 25.0
    options = _options(add_noise=add_noise, seed=seed, denoise_sigma=denoise_sigma, denoiser=denoiser,
                       captioner=captioner)
    sessions = _migrated_sessions()
    storage = make_storage(settings)
    with sessions.begin() as session, failing(submit.SubmitError):
        tenant = tenants.tenant_named(session, tenants.LOCAL, create=True)
        batch, _ = submit.submit(session, storage, settings, tenant.id, uploads, options)
        batch_id = batch.id
        queued = [i.id for i in batch.items if i.state == ItemState.queued]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err) as progress:
        task = progress.add_task("denoise + caption", total=len(queued))
        try:
            for start in range(0, len(queued), settings.micro_batch):
                chunk = queued[start:start + settings.micro_batch]
                if process.process_items(sessions, storage, settings, chunk)[0]:  # handed back: storage is down
                    raise StorageUnavailable("the file storage is unavailable")
                progress.advance(task, len(chunk))
        except BaseException as e:  # Ctrl-C, or a failure past the per-item isolation (the database gone)
            why = "interrupted" if isinstance(e, KeyboardInterrupt) else f"stopped ({type(e).__name__})"
            with sessions.begin() as session:
                stopped = process.stop(session, queued, f"not processed: the run was {why}")
            err.print(f"{why}: {len(queued) - stopped} of {len(queued)} images processed, the other {stopped} failed "
                      f"as not processed (batch {batch_id})", soft_wrap=True)
            raise
    with sessions() as session:
        batch = session.get_one(Batch, batch_id)
        if as_json:
            print_rows(batch)
        else:
            console.print(result_table(batch))
            print_notes(batch.items)
        failed = sum(i.state == ItemState.failed for i in batch.items)
    (err if as_json else console).print(
        f"batch {batch_id}: {len(batch.items) - failed} done, {failed} failed; database {settings.database_url}")
    if failed:
        raise typer.Exit(1)


def _options(**values: object) -> BatchOptions:
    from core.options import BatchOptions
    try:
        return BatchOptions(**values)  # type: ignore[arg-type]
    except ValidationError as e:
        fail("; ".join(f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg'].removeprefix('Value error, ')}"
                       for err in e.errors()))


def print_rows(batch: Batch) -> None:
    """The rows of `denocap results`, one JSON object a line, for programs (the table is for people)."""
    from api.schemas import ItemOut
    from core.client import item_row
    for item in batch.items:
        typer.echo(json.dumps(item_row(ItemOut.model_validate(item))))


def result_table(batch: Batch) -> Table:
    table = Table("file", "state", "sigma est.", "PSNR noisy→denoised", "SSIM", "caption (denoised)",
                  "caption (noisy)")
    for item in batch.items:
        r = item.result
        if r is None:
            table.add_row(escape(item.filename), item.state.value, "", "", "", escape(item.error or ""), "")
            continue
        psnr = f"{r.psnr_noisy:.2f}→{r.psnr:.2f}" if r.psnr is not None else f"BRISQUE {_num(r.brisque_noisy)}→{_num(r.brisque)}"
        ssim = f"{r.ssim_noisy:.3f}→{r.ssim:.3f}" if r.ssim is not None else ""
        table.add_row(escape(item.filename), item.state.value, f"{r.sigma_estimate:.1f}", psnr, ssim,
                      escape(r.caption), escape(r.caption_noisy))
    return table


def print_notes(items: Iterable[Item | ItemOut], to: Console = console) -> None:
    """What the user should know of each image (only a file's first page was processed, the denoiser gave nothing
    usable), a whole line each, however narrow a log is."""
    for item in items:
        for note in item.result.notes if item.result else ():
            to.print(escape(f"{item.filename}: {note}"), soft_wrap=True)


def read_image(path: Path, limits: Limits) -> Picture:
    """decode_file, with what the user should know of how it was read on stderr (only its first page)."""
    from core.imageio import decode_file
    picture = decode_file(path, limits)
    tell(path, picture)
    return picture


def tell(path: Path, picture: Picture) -> None:
    """The notes on stderr under the path as given: `compare` reads two folders of the same names."""
    for note in picture.notes:
        typer.echo(f"{path}: {note}", err=True)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def image_files(paths: list[Path]) -> list[Path]:
    """The files named, and those in the folders named (not their subfolders) with an image suffix; the other
    files in the folders are counted in one line on stderr."""
    from core.bulk import is_image_name, is_left_out, unnamed_note
    files: list[Path] = []
    unnamed: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() or not p.exists())  # a broken link: reported
            files += (p for p in inside if is_image_name(p.name))
            unnamed += (p for p in inside if is_left_out(p.name))
        elif path.is_file():
            files.append(path)
        else:
            fail(f"not a file or folder: {path}" if path.exists() else f"no such file or folder: {path}")
    if unnamed:
        typer.echo(unnamed_note(unnamed), err=True)
    if not files:
        fail("no image files found")
    return files


def out_dir(path: Path, inputs: list[Path]) -> dict[Path, Path]:
    """Where each input's PNG goes: OUT/stem.png, `stem (2).png` for a second of a stem or where a file of that name
    is there already (nothing in OUT is replaced). Refused (exit 2): an output folder that holds an input, or a link
    to one, or that cannot be made or written into."""
    from core.bulk import png_names
    if any(path.resolve() in (p.resolve().parent, p.absolute().parent.resolve()) for p in inputs):
        fail(f"the output folder {path} holds input files; choose another so nothing is overwritten")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"cannot make the output folder {path}: {e.strerror or e}")
    if not os.access(path, os.W_OK | os.X_OK):
        fail(f"cannot write into the output folder {path}")
    names = png_names([p.stem for p in inputs], taken=names_in(path))
    return {p: path / name for p, name in zip(inputs, names, strict=True)}


def names_in(folder: Path) -> set[str]:
    """The names in a folder, lower case: png_names' `taken`."""
    return {p.name.lower() for p in folder.iterdir()}


@app.command()
def noise(in_dir: Path, out: Path, sigma: Annotated[float, typer.Option(min=0, max=255)] = 25.0,
          seed: int = 0) -> None:
    """Add Gaussian noise of std SIGMA (0-255) to clean images; PNG files of the same names in OUT."""
    from core import submit
    from core.bulk import write_file
    from core.imageio import ImageError, encode_png
    from core.pipeline import add_noise
    files = image_files([in_dir])
    outputs = out_dir(out, files)
    limits = submit.limits_of(get_settings())
    failed = 0
    for i, path in enumerate(files):
        try:
            noisy = add_noise(read_image(path, limits), sigma, seed + i)
            write_file(outputs[path], encode_png(noisy))
        except (ImageError, OSError) as e:
            typer.echo(f"{path.name}: {_reason(e)}", err=True)
            failed += 1
    written = len(files) - failed
    console.print(escape(f"{written} image{'s' * (written != 1)} with sigma {sigma} noise in {out}"))
    if failed:
        raise typer.Exit(1)


@app.command()
def denoise(
    paths: Annotated[list[Path], typer.Argument(help="images or folders, then the output folder last")],
    sigma: Annotated[str, typer.Option(help="'auto' (estimate per image) or a number on the 0-255 scale")] = "auto",
    model: str = "ffdnet",
    ensemble: Annotated[int | None, typer.Option(help="average 1, 2, 4 or 8 rotated/flipped passes "
                                                      "(default DENOCAP_DENOISE_ENSEMBLE)")] = None,
) -> None:
    """Denoise images into the output folder (PNG, same names); prints the noise level used for each."""
    from core import submit
    from core.bulk import write_file
    from core.imageio import ImageError, decode_file, encode_png
    from core.pipeline import Runtime
    from core.pipeline import denoise as run_denoiser
    from models.registry import ModelError, load_denoiser
    if len(paths) < 2:
        fail("give at least one input and the output folder")
    *inputs, out = paths
    fixed = None if sigma == "auto" else _sigma(sigma)
    settings = get_settings()
    files = image_files(inputs)
    outputs = out_dir(out, files)
    with failing(ModelError):
        net = load_denoiser(model, settings.weights_dir, settings.device, settings.tile_size, settings.precision,
                            settings.denoise_ensemble if ensemble is None else ensemble)
    runtime = Runtime(submit.limits_of(settings), settings.tile_size, settings.tile_overlap)
    table, failed = Table("file -> output", "noise (estimated)", "noise used", "seconds"), 0
    for path in files:
        start = time.perf_counter()
        try:
            denoised, estimate = run_denoiser(decode_file(path, runtime.limits), fixed, net, runtime)
            tell(path, denoised)  # how it was read, and a denoiser that gave nothing usable
            write_file(outputs[path], encode_png(denoised))
        except (ImageError, OSError) as e:
            typer.echo(f"{path.name}: {_reason(e)}", err=True)
            failed += 1
            continue
        table.add_row(escape(f"{path.name} -> {outputs[path].name}"), f"{estimate:.2f}",
                      "estimated map" if fixed is None else f"{fixed:.2f}",
                      f"{time.perf_counter() - start:.2f}")
    if table.row_count:  # not a table of headings alone when none could be read
        console.print(table)
    if failed:
        raise typer.Exit(1)


@app.command()
def pages(
    paths: Annotated[list[Path], typer.Argument(help="multi-page TIFFs or folders, then the output folder last")],
) -> None:
    """Split multi-page TIFFs (a document feeder's scans) into one PNG a full-size page, OUT/NAME page N.png, with
    each page's metadata, for `denocap denoise` or other tools (`run` and `submit` make an item of each page)."""
    from core import submit
    from core.bulk import cut, png_names, write_file
    from core.imageio import FRAMES_COUNTED, ImageError, decode, encode_png, full_pages, read_file
    if len(paths) < 2:
        fail("give at least one input and the output folder")
    *inputs, out = paths
    limits = submit.limits_of(get_settings())
    files = image_files(inputs)
    out_dir(out, files)
    failed, written = 0, 0
    taken = names_in(out)  # and the names written, across the files
    for path in files:
        try:
            data = read_file(path, limits)
            numbers, ended = full_pages(data, limits)
        except (ImageError, OSError) as e:
            typer.echo(f"{path}: {_reason(e)}", err=True)
            failed += 1
            continue
        stem = cut(path.stem, 150)  # room for " page 1000 (2)" in a name the file system takes
        names = png_names([f"{stem} page {n}" for n in range(1, len(numbers) + 1)], taken=taken)
        for n, (page, name) in enumerate(zip(numbers, names, strict=True), 1):
            try:
                picture = decode(data, limits, page)
                tell(path, picture)  # an animation: only its first frame
                write_file(out / name, encode_png(picture))
                written += 1
            except (ImageError, OSError) as e:
                typer.echo(f"{path} page {n}: {_reason(e)}", err=True)
                failed += 1
        if ended != "all":
            typer.echo(f"{path}: " + (f"the pages after page {len(numbers)} could not be read" if ended == "broken"
                                      else f"more than {FRAMES_COUNTED:,} pages; the first {FRAMES_COUNTED:,} were "
                                           "written"), err=True)
            failed += 1
    console.print(escape(f"{written} pages in {out}"))
    if failed:
        raise typer.Exit(1)


def _reason(e: Exception) -> str:
    """An ImageError says why; an OSError (unreadable, a folder where the output goes) says it and where."""
    return f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror else str(e)


def _sigma(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        fail(f"--sigma must be 'auto' or a number, got {text!r}")
    if not 0 <= value <= 255:
        fail(f"--sigma must be between 0 and 255, got {value}")
    return value


@app.command()
def compare(ref_dir: Path, test_dir: Path, csv_out: Annotated[Path | None, typer.Option("--csv")] = None,
            json_out: Annotated[Path | None, typer.Option("--json")] = None) -> None:
    """PSNR/SSIM of each TEST image against the REF image of the same name (stem); BRISQUE where none."""
    from core import quality, submit
    from core.imageio import ImageError
    from core.pipeline import PSNR_CAP
    for given in (csv_out, json_out):
        if given is not None:
            writable(given, [ref_dir, test_dir])
    limits = submit.limits_of(get_settings())
    refs: dict[str, Path] = {}
    for p in image_files([ref_dir]):
        if refs.setdefault(p.stem, p) != p:
            fail(f"two references for {p.stem}: {refs[p.stem].name} and {p.name}")
    rows: list[dict[str, object]] = []
    failed = 0
    for path in image_files([test_dir]):
        try:
            test = read_image(path, limits).pixels
            ref = read_image(refs[path.stem], limits).pixels if path.stem in refs else None
        except (ImageError, OSError) as e:
            typer.echo(f"{path.name}: {_reason(e)}", err=True)
            failed += 1
            continue
        if ref is not None and ref.shape != test.shape:
            typer.echo(f"{path.name}: size {test.shape} differs from its reference {ref.shape}", err=True)
            failed += 1
            continue
        row: dict[str, object] = {"file": os.fsencode(path.name).decode("utf-8", "replace"), "psnr": None,
                                  "ssim": None, "brisque": None}  # a name that is not UTF-8: shown with U+FFFD
        if ref is None:
            row["brisque"] = quality.brisque(test)
        else:
            row["psnr"], row["ssim"] = min(quality.psnr(ref, test), PSNR_CAP), quality.ssim(ref, test)
        rows.append(row)
    console.print(compare_table(rows))
    write_rows(rows, csv_out, json_out)
    if failed:
        raise typer.Exit(1)


def compare_table(rows: list[dict[str, object]]) -> Table:
    table = Table("file", "PSNR (dB)", "SSIM", "BRISQUE")
    fmt = {"psnr": "{:.2f}", "ssim": "{:.4f}", "brisque": "{:.2f}"}
    for row in rows:
        table.add_row(escape(str(row["file"])), *(fmt[k].format(row[k]) if row[k] is not None else "" for k in fmt))
    means = {k: [float(r[k]) for r in rows if r[k] is not None] for k in fmt}  # type: ignore[arg-type]
    table.add_row("mean", *(fmt[k].format(sum(v) / len(v)) if v else "" for k, v in means.items()), style="bold")
    return table


def writable(path: Path, inputs: list[Path]) -> None:
    """A table's path, checked before any work: not an image's name in an input folder (it would replace a photo),
    not a folder, in a folder that can be written into (exit 2)."""
    from core.imageio import IMAGE_SUFFIXES
    if not path.parent.is_dir():
        fail(f"no folder {path.parent} to write {path.name} into")
    inside = any(path.resolve().is_relative_to(folder.resolve()) for folder in inputs)
    if inside and path.suffix.lower() in IMAGE_SUFFIXES:
        fail(f"{path} is named as an image in an input folder; write the table elsewhere so no image is replaced")
    if path.is_dir() or not os.access(path.parent, os.W_OK | os.X_OK):
        fail(f"cannot write {path}")


def write_rows(rows: list[dict[str, object]], csv_out: Path | None, json_out: Path | None) -> None:
    from api.schemas import spreadsheet_safe
    if csv_out:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=["file", "psnr", "ssim", "brisque"])
        writer.writeheader()
        writer.writerows(map(spreadsheet_safe, rows))
        _write_table(csv_out, text.getvalue().encode())
    if json_out:
        _write_table(json_out, json.dumps(rows, indent=1, allow_nan=False).encode())


def _write_table(path: Path, data: bytes) -> None:
    from core.bulk import write_file
    try:
        write_file(path, data)
    except OSError as e:  # named by the table, not by the temporary file it is written through
        fail(f"cannot write {path}: {e.strerror or e}", 1)


class _CaptionGroup(TyperGroup):
    """`denocap caption IMAGE...` captions images; `prepare`, `train` and `eval` are subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Before the group's own options are parsed: `caption --beam 2 a.jpg` is `caption images --beam 2 a.jpg`."""
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["images", *args]
        return super().parse_args(ctx, args)


caption_app = typer.Typer(cls=_CaptionGroup, no_args_is_help=True,
                          help="Caption image files: denocap caption PHOTO.jpg [MORE...] [--beam N] (the same as "
                               "denocap caption images ...); and prepare, train, ground, evaluate and compare the "
                               "captioner.")
app.add_typer(caption_app, name="caption")


@caption_app.command("images")
def caption_images(paths: list[Path],
                   beam: Annotated[int | None, typer.Option(min=1, max=10, help="beam size (default: greedy)")] = None,
                   captioner: str = "attention",
                   weights: Annotated[Path | None, typer.Option(help="folder with captioner.pt, or a local "
                                                                     "transformers folder for --captioner blip")] = None,
                   grounded: Annotated[bool, typer.Option(help="guide the decoder with the encoder's ImageNet "
                                                               "classifier (grounding.json)")] = True) -> None:
    """Caption image files (the word 'images' may be left out; denoise first for the service's behaviour)."""
    from core import submit
    from core.imageio import ImageError
    from models.registry import ModelError, load_captioner
    settings = get_settings()
    files = image_files(paths)
    if weights is not None and not weights.is_dir():
        fail(f"weights folder not found: {weights}")
    with failing(ModelError):
        folder = weights or (settings.blip_weights if captioner == "blip" else None) or settings.weights_dir
        model = load_captioner(captioner, folder, settings.device, grounded=grounded, precision=settings.precision,
                               **({"beam": beam} if beam else {}))
    limits, failed = submit.limits_of(settings), 0
    for path in files:
        try:
            pixels = read_image(path, limits).pixels
        except (ImageError, OSError) as e:
            typer.echo(f"{path.name}: {_reason(e)}", err=True)
            failed += 1
            continue
        typer.echo(f"{path.name}\t{model([pixels])[0]}")
    if failed:
        raise typer.Exit(1)


@caption_app.command("prepare")
def caption_prepare(data: Path | None = None, out: Path | None = None, threads: int = 1) -> None:
    """Tokenize Flickr8k captions, build the vocabulary and cache encoder features (resumable)."""
    from models.train_captioner import prepare
    settings = get_settings()
    _log_info()
    prepare(_dataset(data or settings.shared_data / "caption" / "flickr8k"), out or settings.data_dir / "caption",
            threads=threads)


@caption_app.command("train")
def caption_train(hours: float = 1.0, epochs: int = 30, threads: int = 1, prepared: Path | None = None,
                  run_dir: Path | None = None, export: Path | None = None,
                  scst: Annotated[bool, typer.Option(help="fine-tune the exported weights for CIDEr-D "
                                                          "(self-critical; --epochs counts rounds of 50 steps)")] = False,
                  ) -> None:
    """Train the decoder on cached features; resumes from its last checkpoint; exports the best dev CIDEr."""
    from models import scst as self_critical
    from models.train_captioner import train
    settings = get_settings()
    prepared = _prepared(prepared or settings.data_dir / "caption")
    run_dir = run_dir or settings.data_dir / "runs" / "captioner"
    export = export or settings.weights_dir / "captioner.pt"
    _log_info()
    if scst:
        self_critical.finetune(prepared, _dataset(export), run_dir, export, hours=hours, rounds=epochs,
                                threads=threads)
    else:
        train(prepared, run_dir, export, hours=hours, epochs=epochs, threads=threads)


@caption_app.command("eval")
def caption_eval(beam: Annotated[int | None, typer.Option(help="beam size (default: greedy)")] = None,
                 limit: int | None = None, prepared: Path | None = None,
                 json_out: Annotated[Path | None, typer.Option("--json")] = None,
                 tune: Annotated[bool, typer.Option(help="score beams 1/3/5 and length penalties 0/0.5/0.7/1 on "
                                                         "the dev split instead")] = False) -> None:
    """BLEU-1..4, CIDEr-D, ROUGE-L, METEOR on the Flickr8k test split, against a retrieval baseline in one run."""
    from models.eval_captioner import evaluate
    from models.eval_captioner import tune as tune_decoding
    settings = get_settings()
    prepared = _prepared(prepared or settings.data_dir / "caption")
    if tune:
        console.print_json(json.dumps(tune_decoding(prepared, settings.weights_dir, [1, 3, 5], [0.0, 0.5, 0.7, 1.0])))
        return
    images = _dataset(settings.shared_data / "caption" / "flickr8k" / "images")
    result = evaluate(prepared, images, settings.weights_dir, limit=limit, **({"beam": beam} if beam else {}))
    table = Table("model", *next(iter(result.values())).keys())
    for name, scores in result.items():
        if name != "images":
            table.add_row(name, *(f"{v:.3f}" for v in scores.values()))
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps(result, indent=1))


@caption_app.command("ground")
def caption_ground(threads: int = 1, prepared: Path | None = None,
                   json_out: Annotated[Path | None, typer.Option("--json")] = None) -> None:
    """Fit grounding.json on Flickr8k: subjects ruled out per ImageNet word (train), the person probe (train and
    the labelled CBSD432 photos), levels (dev CIDEr-D)."""
    from models.train_grounding import fit
    settings = get_settings()
    photos = _dataset(settings.shared_data / "denoise" / "train" / "cbsd432")
    _log_info()
    rows = fit(_prepared(prepared or settings.data_dir / "caption"), settings.weights_dir,
               settings.weights_dir / "grounding.json", photos, threads)
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1))


@caption_app.command("compare")
def caption_compare(threads: int = 1, limit: int | None = None,
                    json_out: Annotated[Path | None, typer.Option("--json")] = None,
                    candidate: Annotated[Path | None, typer.Option(help="a folder with other captioner.pt and "
                                                                        "grounding.json, scored too")] = None) -> None:
    """Shipped decoder alone vs grounded (and a candidate's, with --candidate), one run: general_dev
    subject/wrong-word rates and seconds per image, Flickr8k test BLEU-1..4, CIDEr-D, ROUGE-L."""
    from models.eval_general import compare
    settings = get_settings()
    _dataset(settings.shared_data / "caption" / "general_dev.json")
    result = compare(settings.shared_data, settings.weights_dir, threads, limit, settings.precision,
                     candidate and _dataset(candidate / "captioner.pt").parent)
    table = Table("captioner", "subject named", "wrong word", "s/image", "BLEU-1", "BLEU-4", "CIDEr-D", "ROUGE-L")
    for name, r in result.items():
        g, f = r["general_dev"], r["flickr8k_test"]
        table.add_row(name, f"{g['subject_named']:.3f}", f"{g['wrong_word']:.3f}", f"{g['seconds_per_image']:.3f}",
                      *(f"{f[k]:.3f}" for k in ("BLEU-1", "BLEU-4", "CIDEr", "ROUGE-L")))
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps(result, indent=1))


@caption_app.command("heldout")
def caption_heldout(hours: float = 1.0, epochs: int = 20, threads: int = 2, prepared: Path | None = None,
                    run_dir: Path | None = None,
                    json_out: Annotated[Path | None, typer.Option("--json")] = None) -> None:
    """Held-out objects (Hendricks et al. 2016): train without the photos that name cat, horse, bicycle, car, boat
    or bird (resumable), then F1 of naming them on the test photos, decoder alone vs grounded."""
    from models.heldout import protocol
    settings = get_settings()
    _log_info()
    result = protocol(_prepared(prepared or settings.data_dir / "caption"), settings.weights_dir,
                      run_dir or settings.data_dir / "runs" / "heldout", hours, epochs, threads)
    table = Table("captioner", *(f"F1 {o}" for o in result["objects"]), "CIDEr-D")
    for name, r in result.items():
        if isinstance(r, dict) and "f1" in r:
            table.add_row(name, *(f"{v['f1']:.2f}" for v in r["f1"].values()), f"{r['scores']['CIDEr']:.3f}")
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps(result, indent=1))


def _dataset(path: Path) -> Path:
    if not path.exists():
        fail(f"not found: {path} (prepare it first, or set DENOCAP_SHARED_DATA)")
    return path


def _prepared(path: Path) -> Path:
    """A folder made by `denocap caption prepare` with today's encoder input."""
    from models.train_captioner import stale
    if why := stale(_dataset(path)):
        fail(why)
    return path


def _log_info() -> None:
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger().handlers[0].setFormatter(logging.Formatter("%(asctime)s %(message)s"))


denoiser_app = typer.Typer(no_args_is_help=True, help="Train the denoiser (`denocap denoise` uses it).")
app.add_typer(denoiser_app, name="denoiser")


@denoiser_app.command("train")
def denoiser_train(
    channels: Annotated[int, typer.Option(help="3: the color net, 1: the gray one")] = 3,
    hours: float = 1.0, steps: int = 20000, batch: int = 32, patch: int = 48, lr: float = 1e-3, threads: int = 1,
    eval_every: int = 250, data: Path | None = None, run_dir: Path | None = None, export: Path | None = None,
    init: Annotated[Path | None, typer.Option(help="shipped weights a new run starts from")] = None,
    features: int = 64, blocks: int = 8,
) -> None:
    """Train the blind denoiser and its noise estimator on synthetic camera and Gaussian noise (resumable from
    the run folder; bfloat16 on a GPU or a CPU that has it natively). Exports the best validation PSNR."""
    from models.ffdnet import FFDNetConfig
    from models.train_denoiser import train
    if channels not in (1, 3):
        fail("--channels must be 1 or 3")
    settings = get_settings()
    name = "color" if channels == 3 else "gray"
    folder = data or settings.shared_data / "denoise" / "train" / ("cbsd432" if channels == 3 else "bsd400")
    _log_info()
    train(_dataset(folder), run_dir or settings.data_dir / "runs" / f"denoiser_{name}",
          export or settings.weights_dir / f"ffdnet_{name}.pt", channels=channels, patch=patch, batch=batch,
          steps=steps, hours=hours, threads=threads, lr=lr, init=init, eval_every=eval_every,
          config=FFDNetConfig(channels=channels, features=features, blocks=blocks))


@app.command()
def study(sigmas: str = "15,25,50", limit: int | None = None, docs: Path = Path("docs"), threads: int = 2,
          sets: Annotated[str, typer.Option(help="flickr8k, general or both, comma-separated")] = "flickr8k,general",
          ) -> None:
    """Benchmark: captions of clean, noisy and denoised images (Flickr8k test: BLEU-4/CIDEr-D; the general photos
    of general_dev.json: subject and wrong-word rates); table and plots in DOCS."""
    from models.study import study as run_study
    chosen = tuple(x.strip() for x in sets.split(","))
    if not chosen or not set(chosen) <= {"flickr8k", "general"}:
        fail(f"--sets takes flickr8k and/or general, got {sets!r}")
    try:
        levels = [float(s) for s in sigmas.split(",")]
    except ValueError:
        fail(f"--sigmas takes numbers separated by commas, got {sigmas!r}")
    shared = get_settings().shared_data
    _dataset(shared / "caption" / ("flickr8k" if "flickr8k" in chosen else ""))
    _log_info()
    run_study(shared, get_settings().weights_dir, levels, limit, docs, threads, chosen)
    console.print(f"wrote {docs / 'study.md'}")


@app.command("migrate")
def migrate_cmd() -> None:
    """Bring the database schema to the newest Alembic revision."""
    from core.db import migrate
    migrate(get_settings().database_url)


@app.command()
def serve(host: str = "127.0.0.1", port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
          workers: Annotated[int, typer.Option(min=1)] = 1) -> None:
    """Run the HTTP API (needs Redis for the queue and a worker to process)."""
    import uvicorn

    from core.db import migrate
    settings = get_settings()
    migrate(settings.database_url)
    logs.setup(settings.log_format)
    uvicorn.run("api.main:create_app", factory=True, host=host, port=port, workers=workers, log_config=None,
                proxy_headers=True, forwarded_allow_ips=settings.forwarded_allow_ips)


def worker_shape(concurrency: int | None, torch_threads: int, cores: int, gpu_gib: float,
                 exclusive: bool = False) -> tuple[int, int]:
    """Pool processes and torch threads per process: by default one process per core with one thread each on a
    CPU (1.36x the images/s of one process with two threads on two cores: bench.e2e, the README), and one per two
    cores sharing a GPU, where an item spends 97% of its time outside the denoiser (decode, metrics, captions, PNG,
    database: 8 such processes did 3.2x the images/s of one on an H200, docs/results/e2e_gpu_*), at most one per GPU_GIB_PER_PROCESS of its
    memory; threads share out the cores unless DENOCAP_TORCH_THREADS says. gpu_gib: 0 without a GPU. A GPU in
    exclusive-process mode takes one process (ValueError when more are asked for): a second would fail every item."""
    if exclusive and gpu_gib:
        if concurrency not in (None, 1):
            raise ValueError(f"the GPU is in exclusive-process mode: one process can use it, not {concurrency}; give "
                             "--concurrency 1, or make the GPU shared (nvidia-smi -c DEFAULT)")
        concurrency = 1
    processes = concurrency or (max(1, min(cores // 2, int(gpu_gib // GPU_GIB_PER_PROCESS))) if gpu_gib else cores)
    return processes, torch_threads or max(1, cores // processes)


GPU_GIB_PER_PROCESS = 2  # a CUDA context, the models and their activations: an allowance, not a measurement


def _pool(value: str) -> str:
    if value not in ("prefork", "solo", "threads"):
        raise typer.BadParameter(f"must be prefork, solo or threads, got {value!r}")
    return value


@app.command()
def worker(concurrency: Annotated[int | None, typer.Option(min=1, help="pool processes (default: one per core on "
                                                                   "a CPU, one per two cores with a GPU)")] = None,
           loglevel: str = "INFO",
           pool: Annotated[str, typer.Option(help="prefork, solo or threads", callback=_pool)] = "prefork",
           beat: Annotated[bool, typer.Option(help="also run the reconciler on a schedule (one worker is enough)")] = False,
           ) -> None:
    """Run a Celery worker that processes queued items."""
    settings = get_settings()
    gpu_gib = _gpu_gib() if settings.device == "auto" or settings.device.startswith("cuda") else 0.0
    if settings.device.startswith("cuda") and not gpu_gib:  # CUDA asked for, its memory unread: one process
        gpu_gib = GPU_GIB_PER_PROCESS
    with failing(ValueError):
        processes, threads = worker_shape(concurrency, settings.torch_threads, os.cpu_count() or 1, gpu_gib,
                                          gpu_gib > 0 and _gpu_exclusive(settings.device))
    os.environ["DENOCAP_TORCH_THREADS"] = str(threads)  # read by each pool process (worker.tasks)
    os.environ["DENOCAP_GPU_PROCESSES"] = str(processes if gpu_gib else 1)  # each sizes its micro-batches to a share
    get_settings.cache_clear()
    from worker.app import app as celery_app
    args = ["worker", f"--concurrency={processes}", f"--loglevel={loglevel}", f"--pool={pool}", "-Q", "denocap"]
    if beat:
        args += ["--beat", f"--schedule={settings.data_dir / 'celerybeat-schedule'}"]
    celery_app.worker_main(args)


def _gpu_gib() -> float:
    """The GPU's memory in GiB, 0 without one. Asked in a child process: CUDA initialised in the worker's parent
    would be unusable in its forked pool."""
    code = "import torch; print(torch.cuda.is_available() and torch.cuda.get_device_properties(0).total_memory / 2**30)"
    probe = [sys.executable, "-c", code]
    lines = subprocess.run(probe, check=False, capture_output=True, text=True).stdout.split()
    try:
        return float(lines[-1]) if lines and lines[-1] != "False" else 0.0
    except ValueError:  # something else printed last: no GPU that can be used
        return 0.0


def _gpu_exclusive(device: str) -> bool:
    """Whether nvidia-smi says the worker's GPU (cuda:N, else 0) takes one process at a time; False when it cannot
    tell. nvidia-smi numbers the GPUs as the machine does: CUDA_VISIBLE_DEVICES says which the N-th is."""
    index = int(device.partition(":")[2] or 0)
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    index = visible[index] if index < len(visible) else str(index)  # an index or a UUID: --id takes both
    try:
        out = subprocess.run(["nvidia-smi", f"--id={index}", "--query-gpu=compute_mode", "--format=csv,noheader"],
                             check=False, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.strip().lower().startswith("exclusive")


Url = Annotated[str | None, typer.Option(help="the API's base URL (default: DENOCAP_URL)")]
Key = Annotated[str | None, typer.Option(help="an API key (default: DENOCAP_API_KEY)")]


def _batch_ids(value: str | list[str]) -> str | list[str]:
    """A batch id is 32 hex digits: anything else cannot be one, and would be put into a URL."""
    from core.tenants import ID
    for one in [value] if isinstance(value, str) else value:
        if not ID.fullmatch(one):
            raise typer.BadParameter(f"not a batch id: {one[:40]!r}")
    return value


BatchId = Annotated[str, typer.Argument(callback=_batch_ids, show_default=False)]


@contextmanager
def _client(url: str | None, key: str | None) -> Iterator[Client]:
    """A client whose key the server has accepted: a wrong key is one line and exit 2 before any upload; no server
    there, exit 1. An error the command does not handle itself (the server gone past the retries, an item deleted
    meanwhile) is one line and exit 1."""
    import httpx

    from core.client import ApiError, Client, Retry
    settings = get_settings()
    if not (key := key or settings.api_key):
        fail("no API key: give --key or set DENOCAP_API_KEY")
    with Client(url or settings.url, key, retry=Retry(attempts=4)) as api:
        try:
            api.check_key()
        except ApiError as e:
            fail(f"{url or settings.url}: {e}")
        except httpx.TransportError as e:  # no server there (yet): not a bad argument
            fail(f"{url or settings.url}: {e}", 1)
        api.retry = Retry()  # a reachable server with a good key: ride out restarts and 429s from now on
        try:
            yield api
        except (ApiError, httpx.HTTPError) as e:
            fail(f"stopped ({type(e).__name__}: {e}); run it again", 1)


@app.command("submit")
def submit_cmd(
    paths: Annotated[list[Path], typer.Argument(help="images or folders (walked recursively)")],
    url: Url = None, key: Key = None,
    chunk: Annotated[int, typer.Option(min=1, max=10_000, help="files per request")] = 50,
    wait: Annotated[bool, typer.Option(help="then show processing until the batch finishes")] = False,
    new: Annotated[bool, typer.Option(help="a new batch even if these paths were submitted before")] = False,
    add_noise: AddNoise = None, seed: int = 0, denoise_sigma: DenoiseSigma = None, denoiser: str = "ffdnet",
    captioner: str = "attention",
) -> None:
    """Upload images to the API in chunks into one batch, then seal it. Killed? Run it again: it sends only what
    is missing, into the same batch. Prints the batch id; exit 1 when a file was unreadable or an item failed."""
    from core import bulk
    options = _options(add_noise=add_noise, seed=seed, denoise_sigma=denoise_sigma, denoiser=denoiser,
                       captioner=captioner)
    with failing(FileNotFoundError):
        found = bulk.walk(paths)
    for path, reason in found.unreadable:
        typer.echo(f"{path}: unreadable ({reason}), skipped", err=True)
    if found.unnamed:
        typer.echo(bulk.unnamed_note(found.unnamed), err=True)
    if not found.files:
        fail("no readable image files found")
    settings = get_settings()
    base = url or settings.url
    state_path = bulk.state_file(settings.data_dir / "submits", base, [p.absolute() for p in paths], options)
    with _client(url, key) as api, failing(bulk.StateError):
        with bulk.only_run(state_path):
            if new:
                _seal_earlier(api, state_path)
                bulk.start_over(state_path)
            state = bulk.load_state(state_path, base)
            if state.sealed and bulk.unsent(state, found):
                why = ("is full; the files not sent need another batch: submit them with other paths" if state.full
                       else "is sealed and files were added or changed since; add --new for a new batch")
                fail(f"batch {state.batch_id} of these paths {why}", 1 if state.full else 2)
            batch_id = _upload(api, found, options, state, state_path, chunk)
        typer.echo(batch_id)
        failed = _wait(api, batch_id) if wait else 0
    if found.unreadable or failed:  # those of the walk, and those skipped while uploading
        raise typer.Exit(1)


def _seal_earlier(api: Client, state_path: Path) -> None:
    """--new: the batch the earlier run left open is sealed. Its files run anyway; sealed, it can finish and stops
    counting against the tenant's unfinished batches."""
    import httpx

    from core import bulk
    from core.client import ApiError, NotFound
    if (earlier := bulk.left_open(state_path)) is None or (batch_id := earlier.batch_id) is None:
        return
    try:
        api.seal(batch_id)
        typer.echo(f"batch {batch_id}, left open by an earlier run of these paths, is sealed (its files are processed)",
                   err=True)
    except NotFound:
        pass  # gone, or another key's
    except (ApiError, httpx.HTTPError) as e:  # the new batch matters more
        typer.echo(f"could not seal batch {batch_id}, left open by an earlier run of these paths: {e}", err=True)


def _upload(api: Client, found: bulk.Found, options: BatchOptions, state: bulk.State, state_path: Path,
            chunk: int) -> str:
    import httpx
    from rich.progress import DownloadColumn, TransferSpeedColumn

    from core import bulk
    from core.client import ApiError, NotFound
    done = [f for f in found.files if bulk.is_sent(state, found, f)]
    total_files, sent_files = len(found.files), len(done)
    with Progress(TextColumn("upload"), BarColumn(), TextColumn("{task.fields[files]} files"), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=err) as progress:
        task = progress.add_task("upload", total=sum(found.sizes.values()),
                                 completed=sum(found.sizes[f] for f in done), files=f"{sent_files}/{total_files}")

        def on_chunk(sent: bulk.Uploaded) -> None:
            nonlocal sent_files
            sent_files += sent.files
            progress.update(task, advance=sent.bytes, files=f"{sent_files}/{total_files}")
            if not err.is_terminal:  # rich redraws bars on a terminal only; a pipe or a log file gets lines
                again = f", {sent.duplicates} already there" if sent.duplicates else ""
                again += f", {sent.replaced} replacing the copy sent before they changed" if sent.replaced else ""
                err.print(f"uploaded {sent_files}/{total_files} files{again}")

        def on_unreadable(path: Path, reason: str) -> None:
            found.unreadable.append((path, reason))
            err.print(escape(f"{path}: unreadable ({reason}), skipped"))
        try:
            return bulk.upload(api, found, options, state, state_path, chunk, on_chunk, on_unreadable)
        except NotFound:
            fail(f"batch {state.batch_id} of an earlier run of these paths is not on {api.http.base_url} for this key; "
                 "add --new for a new batch")
        except ApiError as e:
            if e.code == "batch_full":  # a rerun would stop here again
                fail(f"upload stopped ({e}): batch {state.batch_id} is full, and sealed; the files not sent need "
                     "another batch: submit them with other paths", 1)
            if e.status != 409:
                fail(f"upload stopped ({type(e).__name__}: {e}); run the same command again to resume", 1)
            what = f"batch {state.batch_id} of an earlier run of these paths" if state.batch_id else "opening the batch"
            fail(f"{what}: {e}; add --new for a new batch")
        except (httpx.HTTPError, OSError) as e:  # one line; the state file keeps what got in
            fail(f"upload stopped ({type(e).__name__}: {e}); run the same command again to resume", 1)


def _wait(api: Client, batch_id: str, poll: float = 1.0) -> int:
    """Processing progress until the batch finishes; lists failed items with their reasons, then the others' notes;
    returns how many failed. The server gone for longer than the client retries: one line, exit 1."""
    import httpx

    from core.client import ApiError
    try:
        return _watch(api, batch_id, poll)
    except (ApiError, httpx.HTTPError) as e:
        fail(f"waiting stopped ({type(e).__name__}: {e}); the batch goes on: denocap status {batch_id}", 1)


def _watch(api: Client, batch_id: str, poll: float) -> int:
    last = ""
    with Progress(TextColumn("process"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[counts]}"),
                  TimeRemainingColumn(), console=err) as progress:
        task = progress.add_task("process", total=None, counts="")
        while True:
            batch = api.batch(batch_id)
            c = {state.value: n for state, n in batch.counts.items()}
            counts = f"done {c['done']}, failed {c['failed']}, queued {c['queued']}, running {c['running']}"
            progress.update(task, total=batch.total, completed=c["done"] + c["failed"], counts=counts)
            if counts != last and not err.is_terminal:
                err.print(counts)
            last = counts
            if batch.finished:
                break
            time.sleep(poll)
    failed = list(api.items(batch_id, state="failed"))
    for item in failed:
        err.print(escape(f"{item.filename}: {item.error}"), soft_wrap=True)
    print_notes(api.items(batch_id, noted=True), err)
    return len(failed)


@app.command("status")
def status_cmd(batch_id: BatchId, url: Url = None, key: Key = None) -> None:
    """A batch's items per state, whether it is sealed and finished, its failed items with their reasons and the
    notes of the others (only a file's first page was processed, the denoiser gave nothing usable)."""
    from core.client import NotFound
    from core.tables import ItemState
    with _client(url, key) as api:
        with failing(NotFound):
            batch = api.batch(batch_id)
        table = Table("batch", "sealed", "total", *(s.value for s in ItemState), "progress", "finished")
        table.add_row(batch.id, "yes" if batch.sealed else "no (open)", str(batch.total),
                      *(str(batch.counts[s]) for s in ItemState), f"{batch.progress:.0%}",
                      "yes" if batch.finished else "no")
        console.print(table)
        for item in api.items(batch_id, state="failed"):
            console.print(escape(f"{item.filename}: {item.error}"))
        print_notes(api.items(batch_id, noted=True))


@app.command("delete")
def delete_cmd(batch_ids: Annotated[list[str], typer.Argument(help="one or more batch ids", callback=_batch_ids)],
               yes: Annotated[bool, typer.Option("--yes", help="do not ask first")] = False,
               url: Url = None, key: Key = None) -> None:
    """Deletes batches for good: their items, results and every stored file (uploads, references, result images,
    thumbnails). Each id is checked before any is deleted; asks first unless --yes."""
    import httpx

    from core.client import ApiError, NotFound
    with _client(url, key) as api:
        batches = []
        for batch_id in dict.fromkeys(batch_ids):
            try:
                batches.append(api.batch(batch_id))
            except NotFound:
                fail(f"batch {batch_id} not found; nothing deleted")
        what = ", ".join(f"{b.id} ({b.total} item{'s' * (b.total != 1)})" for b in batches)
        if not yes:
            if not sys.stdin.isatty():
                fail("add --yes to delete without being asked")
            typer.confirm(f"delete {what} for good?", abort=True, err=True)
        for n, batch in enumerate(batches):
            try:
                later = api.delete_batch(batch.id)
            except NotFound:  # deleted meanwhile, or the first try's answer was lost
                later = None
            except (ApiError, httpx.HTTPError) as e:  # the server gone past the retries
                rest = " ".join(b.id for b in batches[n:])
                fail(f"batch {batch.id} not deleted ({e}); again: denocap delete {rest} --yes", 1)
            err.print(f"deleted batch {batch.id}" + (f"; {later}" if later else ""))


@app.command("results")
def results_cmd(
    batch_id: BatchId,
    out: Annotated[Path, typer.Option(help="folder for the table and the denoised images")],
    format: Annotated[str, typer.Option(help="csv or jsonl")] = "csv",
    threads: Annotated[int, typer.Option(min=1, max=32, help="downloads at once")] = 4,
    url: Url = None, key: Key = None,
) -> None:
    """Every item's row (file, state, estimated noise, scores, both captions, model versions, error, notes) as
    OUT/results.csv or .jsonl, and the denoised images under their upload's names (a second run skips what it fetched before;
    a folder holding another batch's results, or a file of one of those names, is refused)."""
    from core import bulk
    from core.client import NotFound
    if format not in ("csv", "jsonl"):
        fail(f"--format must be csv or jsonl, got {format!r}")
    with _client(url, key) as api:
        with failing(NotFound):
            batch, items = api.batch(batch_id), list(api.items(batch_id))
        out.mkdir(parents=True, exist_ok=True)
        names, done = bulk.output_names(items), {i.id for i in items if i.result is not None}
        with failing(ValueError, code=1):
            before = bulk.claim_folder(out, batch.id, {n: i for i, n in names.items() if i in done}
                                       | {f"results.{format}": None})
        bulk.write_table(items, names, out / f"results.{format}", format)
        fetched = 0
        with Progress(TextColumn("download"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err) as progress:
            task = progress.add_task("download", total=len(done))

            def on_file(new: bool) -> None:
                nonlocal fetched
                fetched += new
                progress.advance(task)
            bulk.download_images(api, items, names, out, threads, before, on_file)
    typer.echo(f"{len(items)} row{'s' * (len(items) != 1)} in {out / f'results.{format}'}; {len(done)} "
               f"image{'s' * (len(done) != 1)} in {out} ({fetched} downloaded, {len(done) - fetched} already there)"
               + ("" if batch.finished else "; the batch is not finished yet, run again later for the rest"))


apikey = typer.Typer(help="API keys of tenants: every route but /health and /metrics needs one.",
                     no_args_is_help=True)
app.add_typer(apikey, name="apikey")


def _migrated_sessions() -> sessionmaker:
    from core.db import migrate, sessions_for
    url = get_settings().database_url
    migrate(url)
    return sessions_for(url)


@apikey.command("create")
def apikey_create(tenant: Annotated[str, typer.Argument(help="tenant name; made on its first key")],
                  label: Annotated[str, typer.Option(help="what the key is for")] = "") -> None:
    """Print a new key (shown once; only its hash is stored)."""
    from core import tenants
    with _migrated_sessions().begin() as session, failing(tenants.TenantError):
        new = tenants.create_key(session, tenant, label)
    typer.echo(f"key {new.id} for tenant {new.tenant!r} (store it now; it is not shown again):", err=True)
    typer.echo(new.key)


@apikey.command("list")
def apikey_list(tenant: Annotated[str | None, typer.Argument(help="only this tenant's keys")] = None) -> None:
    """Keys with their tenant, label, and whether they are revoked (never the secrets)."""
    from core import tenants
    table = Table("key id", "tenant", "label", "created", "revoked")
    with _migrated_sessions()() as session:
        for key in tenants.list_keys(session, tenant):
            table.add_row(key.id, escape(key.tenant.name), escape(key.label), f"{key.created_at:%Y-%m-%d %H:%M}",
                          f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "")
    console.print(table)


@apikey.command("revoke")
def apikey_revoke(key_id: str) -> None:
    """Revoke a key at once: its next request gets 401, and the gallery sessions signed in with it end."""
    from core import tenants
    with _migrated_sessions().begin() as session, failing(tenants.TenantError):
        tenants.revoke_key(session, key_id)
    console.print(f"revoked {key_id}")


@app.command("expire")
def expire_cmd(days: Annotated[int | None, typer.Option(min=1, max=36500, help="default: DENOCAP_RETENTION_DAYS")] = None,
               dry_run: Annotated[bool, typer.Option("--dry-run", help="only list them")] = False) -> None:
    """Delete every tenant's finished batches sealed more than DAYS days ago, with their results and files (from cron;
    a worker started with --beat does it every DENOCAP_EXPIRE_EVERY seconds when DENOCAP_RETENTION_DAYS is set)."""
    from core import submit
    from core.storage import make_storage
    if not (days := days or get_settings().retention_days):
        fail("give --days or set DENOCAP_RETENTION_DAYS")
    sessions = _migrated_sessions()
    if dry_run:
        with sessions() as session:
            ids = submit.expired(session, days)
        console.print("\n".join(ids) or f"no finished batch sealed over {days} days ago")
        return
    n, storage = 0, make_storage(get_settings())
    while deleted := submit.expire(sessions, storage, days):  # a run at a time, each a bounded list
        n += len(deleted)
    console.print(f"deleted {n} finished batch{'es' * (n != 1)} sealed over {days} days ago")
    with sessions() as session:
        if left := submit.sweep(session, storage, most=sys.maxsize):  # and any a deletion left before
            fail(f"the stored files of {left} deleted items are left: the file storage failed (the log says why); "
                 "the reconciler, or this command, tries again after 10 minutes", 1)


@app.command("reconcile")
def reconcile_cmd() -> None:
    """Re-send the items whose message may be lost (broker flushed, worker died), and delete the files deletions
    left (the file storage failed, or a batch was large); safe to run any time."""
    from worker.tasks import reconcile
    console.print(f"re-enqueued {reconcile()} items")


def _command_path(args: list[str]) -> str:
    """The (sub)command that the arguments name, for a usage error the parser raised before it had one."""
    command, path = typer.main.get_command(app), ["denocap"]
    for word in args:
        commands = getattr(command, "commands", {})  # a group's
        if word not in commands:
            break
        command = commands[word]
        path.append(word)
    return " ".join(path)


def _setting_error(err: ErrorDetails) -> str:
    message = err["msg"].removeprefix("Value error, ")
    return f"DENOCAP_{'_'.join(map(str, err['loc'])).upper()}: {message}" if err["loc"] else message


def main() -> None:  # the console script
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")  # a client's "retrying", say
    try:
        get_settings()
    except ValidationError as e:  # a bad DENOCAP_* variable: one line, not a traceback
        typer.echo("error: " + "; ".join(_setting_error(err) for err in e.errors()), err=True)
        raise SystemExit(2) from None
    for name in unknown_settings(os.environ):  # DENOCAP_DATABSE_URL: the default, SQLite, would be used unsaid
        typer.echo(f"warning: {name} is not a setting; it is ignored (see the README's configuration)", err=True)
    try:
        code = app(standalone_mode=False)
    except typer.Abort:  # end of input at a prompt (Ctrl-C is typer's exit 130)
        typer.echo("Aborted!", err=True)
        raise SystemExit(1) from None
    except typer.TyperException as e:  # a usage error: one line, as every other error here, not typer's box
        ctx, message = getattr(e, "ctx", None), e.format_message()
        if type(e).__name__ == "NoArgsIsHelpError":  # a command given nothing: its help (printed already by rich)
            typer.echo(message, err=True, nl=False)
        elif message:
            typer.echo(f"error: {message} (see {ctx.command_path if ctx else _command_path(sys.argv[1:])} --help)",
                       err=True)
        raise SystemExit(e.exit_code) from None
    except Exception as e:
        if (trouble := _database_trouble(e)) is None:
            raise
        typer.echo(f"error: {trouble}", err=True)
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def _database_trouble(e: Exception) -> str | None:
    """The settings' database, file storage or folders cannot be reached, made or read (a wrong URL, a server down,
    a revision this code does not have, a file where the data folder goes): one line, not a traceback. None:
    something else."""
    from alembic.util import CommandError
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, ProgrammingError

    from core.db import MigrationsMissing
    from core.storage import StorageUnavailable
    if isinstance(e, StorageUnavailable):
        return str(e)
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.strerror or e}: {e.filename}"
    refused = isinstance(e, ProgrammingError) and getattr(e.orig, "sqlstate", None) in ("42501", "3F000")  # no
    # privilege, or no schema this user may use
    if not (refused or isinstance(e, ArgumentError | NoSuchModuleError | OperationalError | CommandError
                                  | MigrationsMissing)):
        return None
    try:
        where = make_url(get_settings().database_url).render_as_string(hide_password=True)
    except ArgumentError:
        where = "DENOCAP_DATABASE_URL"
    reason = str(getattr(e, "orig", None) or e).strip().splitlines()
    return f"the database {where}: {reason[0] if reason else type(e).__name__}"


if __name__ == "__main__":
    main()
