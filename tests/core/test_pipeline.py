"""The stage order and per-item isolation (core.pipeline), with tiny models built by the tests."""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from core import pipeline
from core.imageio import ImageError, Limits, decode
from core.options import BatchOptions
from models.registry import CaptionBackend, Denoiser, ModelError, load_captioner, load_denoiser
from tests.conftest import png, smooth_image
from tests.tiny import tiny_denoiser

RUNTIME = pipeline.Runtime(Limits(10_000_000, 10_000_000, 5000))


@dataclass
class Loaded:
    """pipeline.Models over the tiny weights; unknown names raise ModelError as the registry does."""
    weights_dir: Path

    def denoiser(self, name: str) -> Denoiser:
        return load_denoiser(name, self.weights_dir, "cpu")

    def captioner(self, name: str) -> CaptionBackend:
        return load_captioner(name, self.weights_dir, "cpu", beam=2)


@dataclass
class Sink:
    """pipeline.Sink that keeps what it is handed."""
    results: dict[str, pipeline.Result] = field(default_factory=dict)
    failures: dict[str, tuple[str, str]] = field(default_factory=dict)
    handed_back_ids: list[str] = field(default_factory=list)

    def done(self, item_id: str, result: pipeline.Result) -> None:
        self.results[item_id] = result

    def failed(self, item_id: str, reason: str, kind: str) -> None:
        self.failures[item_id] = (reason, kind)

    def handed_back(self, item_id: str) -> None:
        self.handed_back_ids.append(item_id)


@pytest.fixture(scope="module")
def models(weights_dir: Path) -> Loaded:
    return Loaded(weights_dir)


def test_synthetic_noise_gives_the_psnr_sigma_implies(models: Loaded) -> None:
    result = pipeline.process(png(smooth_image(96, 128)), None, BatchOptions(add_noise=25, seed=3), models, RUNTIME)
    m = result.metrics
    # 20*log10(255/25) = 20.17 dB; clipping at 0 and 1 makes it a little higher
    assert m["psnr_noisy"] is not None and 20.0 < m["psnr_noisy"] < 21.0
    assert set(m) == {"psnr_noisy", "ssim_noisy", "psnr", "ssim"}
    assert result.captioner_version.startswith("attention@") and result.denoiser_version.startswith("ffdnet@")
    assert all(w in {"a", "dog", "runs", "on", "the", "grass", "cat", "sits"} for w in result.caption.split())


def test_the_estimate_is_the_mean_of_the_estimated_noise_map(models: Loaded) -> None:
    result = pipeline.process(png(smooth_image(64, 80)), None, BatchOptions(add_noise=25, seed=3), models, RUNTIME)
    net = models.denoiser("ffdnet").color
    noisy = result.noisy.pixels  # what the denoiser saw
    with torch.inference_mode():
        expected = float(net.estimate(torch.from_numpy(noisy).permute(2, 0, 1)[None]).mean()) * 255
    assert result.sigma_estimate == pytest.approx(expected, rel=1e-3)  # the pipeline's tiled call: 1.1e-4 apart


def test_the_noisy_image_stored_is_the_one_denoised_and_each_image_has_noise_of_its_own(models: Loaded) -> None:
    """The denoiser saw noise that was not clipped while the noisy image stored and scored was: the reported PSNR
    could not be had again from the stored image (3.9 dB apart on a half-saturated photo). And every image of a
    size in a batch got the same noise."""
    a, b = png(smooth_image(64, 80, seed=1)), png(smooth_image(64, 80, seed=2))
    options = BatchOptions(add_noise=50, seed=3)
    first, other, again = (pipeline.process(x, None, options, models, RUNTIME) for x in (a, b, a))
    assert 0 <= first.noisy.pixels.min() and first.noisy.pixels.max() <= 1
    denoised, _ = pipeline.denoise(first.noisy, None, models.denoiser("ffdnet"), RUNTIME)
    assert np.array_equal(denoised.pixels, first.denoised.pixels)
    noise = [r.noisy.pixels - decode(x, RUNTIME.limits).pixels for r, x in ((first, a), (other, b))]
    assert abs(np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1]) < 0.1
    assert np.array_equal(again.noisy.pixels, first.noisy.pixels)  # the same seed and image: the same noise


def test_no_reference_gives_no_reference_scores(models: Loaded) -> None:
    result = pipeline.process(png(smooth_image(64, 64, channels=1)), None, BatchOptions(), models, RUNTIME)
    assert set(result.metrics) == {"brisque_noisy", "brisque"}
    assert result.denoised.pixels.shape == (64, 64, 1)


def test_reference_of_another_size_or_colour_is_refused(models: Loaded) -> None:
    with pytest.raises(ImageError, match="reference is 32x32 colour, the image is 64x64 colour"):
        pipeline.process(png(smooth_image(64, 64)), png(smooth_image(32, 32)), BatchOptions(), models, RUNTIME)
    with pytest.raises(ImageError, match="reference is 64x64 gray, the image is 64x64 colour"):
        pipeline.process(png(smooth_image(64, 64)), png(smooth_image(64, 64, channels=1)), BatchOptions(), models,
                         RUNTIME)


def test_explicit_sigma_overrides_the_estimate(models: Loaded) -> None:
    pic = decode(png(smooth_image()), RUNTIME.limits)
    denoiser = models.denoiser("ffdnet")
    a, _ = pipeline.denoise(pic, 5, denoiser, RUNTIME)
    b, _ = pipeline.denoise(pic, 50, denoiser, RUNTIME)
    blind, _ = pipeline.denoise(pic, None, denoiser, RUNTIME)
    assert not np.allclose(a.pixels, b.pixels) and not np.allclose(blind.pixels, b.pixels)
    kept, level = pipeline.denoise(pic, 0, denoiser, RUNTIME)  # "no noise": the network smoothed it all the same
    assert level == 0 and np.array_equal(kept.pixels, pic.pixels)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 2)])
def test_tiny_images_are_processed_with_the_scores_they_allow(models: Loaded, shape: tuple[int, int]) -> None:
    sink = Sink()
    data = png(np.full((*shape, 3), 120, np.uint8))
    for item, options in (("plain", BatchOptions()), ("noised", BatchOptions(add_noise=10))):
        assert pipeline.run_item(pipeline.Job(item, options, lambda d=data: (d, None)), models, RUNTIME, sink)
    assert set(sink.results) == {"plain", "noised"}, sink.failures
    assert sink.results["plain"].metrics == {"brisque_noisy": None, "brisque": None}
    assert sink.results["noised"].metrics["psnr"] is not None


class SlowDown(Exception):
    """Stands for Celery's SoftTimeLimitExceeded."""


def test_each_failure_fails_its_own_item_with_its_reason(models: Loaded) -> None:
    sink = Sink()
    good = png(smooth_image(40, 40))

    def lost() -> tuple[bytes, bytes | None]:
        raise FileNotFoundError("items/x/input")

    def slow() -> tuple[bytes, bytes | None]:
        raise SlowDown

    jobs = [pipeline.Job("broken", BatchOptions(), lambda: (b"not an image", None)),
            pipeline.Job("lost", BatchOptions(), lost),
            pipeline.Job("ok", BatchOptions(), lambda: (good, None)),
            pipeline.Job("slow", BatchOptions(), slow)]
    finished = [pipeline.run_item(job, models, RUNTIME, sink, time_limit=(SlowDown,)) for job in jobs]
    assert finished == [True, True, True, False]
    failures = sink.failures
    assert failures["broken"][1] == "bad_image" and "not an image" in failures["broken"][0]
    assert failures["lost"] == ("internal error: FileNotFoundError: items/x/input", "internal")
    assert failures["slow"][1] == "time_limit" and failures["slow"][0].startswith("time limit")
    assert set(sink.results) == {"ok"}


def test_a_time_limit_after_other_items_hands_the_item_back(models: Loaded) -> None:
    """The items before it took the task's time: it runs again, first in another task, rather than failing."""
    def slow() -> tuple[bytes, bytes | None]:
        raise SlowDown

    sink = Sink()
    assert not pipeline.run_item(pipeline.Job("late", BatchOptions(), slow), models, RUNTIME, sink,
                                 time_limit=(SlowDown,), first=False)
    assert sink.handed_back_ids == ["late"] and sink.failures == {}


def test_a_time_limit_inside_the_decoder_is_a_time_limit(models: Loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    def struck(*_: object, **__: object) -> None:
        raise SlowDown

    monkeypatch.setattr("core.imageio.Image.open", struck)
    sink = Sink()
    job = pipeline.Job("a", BatchOptions(), lambda: (png(smooth_image(40, 40)), None))
    assert not pipeline.run_item(job, models, RUNTIME, sink, time_limit=(SlowDown,))
    assert sink.failures["a"][1] == "time_limit" and sink.failures["a"][0].startswith("time limit")


def test_a_model_that_does_not_load_fails_its_item(tmp_path: Path) -> None:
    sink = Sink()
    empty = Loaded(tmp_path)  # no weights there
    job = pipeline.Job("a", BatchOptions(), lambda: (png(smooth_image(40, 40)), None))
    assert pipeline.run_item(job, empty, RUNTIME, sink)
    reason, kind = sink.failures["a"]
    assert kind == "model" and "weights not found" in reason


def test_a_denoiser_that_returns_nan_gives_the_input_back(weights_dir: Path) -> None:
    denoiser = load_denoiser("ffdnet", weights_dir, "cpu")
    poisoned = tiny_denoiser(3)
    with torch.no_grad():
        poisoned.tail.bias.fill_(float("nan"))
    denoiser.color = poisoned
    pic = decode(png(smooth_image(32, 32)), RUNTIME.limits)
    out, estimate = pipeline.denoise(pic, None, denoiser, RUNTIME)
    assert np.isfinite(estimate)
    np.testing.assert_allclose(out.pixels, pic.pixels)
    assert out.notes == (pipeline.UNDENOISED,)


def test_unknown_model_names_are_refused_by_the_options() -> None:
    with pytest.raises(ValueError, match="unknown denoiser 'bm3d'"):
        BatchOptions(denoiser="bm3d")
    with pytest.raises(ModelError):
        load_denoiser("bm3d", Path("."), "cpu")


@dataclass
class Seeing(Loaded):
    """Loaded whose captioner keeps the pixels it is given."""
    seen: list[np.ndarray] = field(default_factory=list)

    def captioner(self, name: str) -> CaptionBackend:
        backend = super().captioner(name)

        def caption(images: list[np.ndarray]) -> list[str]:
            self.seen += images
            return backend(images)
        caption.name, caption.version = backend.name, backend.version  # type: ignore[attr-defined]
        return caption  # type: ignore[return-value]


def test_the_captioner_sees_a_transparent_picture_as_a_viewer_does(models: Loaded) -> None:
    """Over white: under a logo's transparent background there is often black, which no one sees."""
    seeing, sink = Seeing(models.weights_dir), Sink()
    hidden = np.zeros((24, 24, 4), np.uint8)  # black, all of it transparent
    assert pipeline.run_item(pipeline.Job("a", BatchOptions(), lambda: (png(hidden), None)), seeing, RUNTIME, sink)
    assert len(seeing.seen) == 2 and all(np.allclose(image, 1) for image in seeing.seen)
