"""The shipped blind denoiser under each CPU runtime, in one run: seconds per 512x512 color image and the blind
PSNR on CBSD68 at sigma 25 (the papers' protocol), against PyTorch eager float32.

python -m bench.runtimes [--threads 2] [--limit 68] [--repeats 5]

Rows: PyTorch eager float32 (the old default), channels-last, bfloat16 autocast (the default where the CPU has it
natively: models/precision.py); ONNX Runtime and OpenVINO (float32, and OpenVINO's bfloat16) from an ONNX export.
ONNX Runtime and OpenVINO come with the bench extra only.
"""
import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.real_noise import read
from core import quality
from core.config import get_settings
from models.ffdnet import FFDNet
from models.registry import load_denoiser

Run = Callable[[np.ndarray], np.ndarray]  # (1, 3, H, W) float32 -> same, denoised


class Blind(nn.Module):
    """The estimator's map fed to the body: the whole blind denoiser as one graph, for export."""

    def __init__(self, net: FFDNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.net.estimate(x))


def torch_run(model: nn.Module, channels_last: bool = False, dtype: torch.dtype | None = None) -> Run:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            y = model(torch.from_numpy(x).contiguous(memory_format=fmt))
        return y.float().contiguous().numpy()
    return run


def export(model: nn.Module, folder: Path) -> Path:
    path = folder / "ffdnet.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (torch.rand(1, 3, 64, 64),), path, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {2: "h", 3: "w"}}, opset_version=17, dynamo=False)
    return path


def onnxruntime_run(path: Path, threads: int) -> Run:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # its idle threads would spin
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


def openvino_run(path: Path, threads: int, precision: str) -> Run:
    import openvino as ov
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                          "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1})
    request = compiled.create_infer_request()
    return lambda x: request.infer({"x": x})[0]


def seconds(run: Run, x: np.ndarray, repeats: int) -> float:
    run(x)
    start = time.perf_counter()
    for _ in range(repeats):
        run(x)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=68)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    s = get_settings()
    model = Blind(load_denoiser("ffdnet", s.weights_dir, "cpu", precision="float32").color).eval()
    files = sorted((s.shared_data / "denoise" / "test" / "cbsd68").iterdir())[:a.limit]
    rng = np.random.default_rng(0)
    cleans = [read(f) for f in files]
    noisies = [(c + rng.standard_normal(c.shape).astype(np.float32) * 25 / 255).transpose(2, 0, 1)[None]
               for c in cleans]
    x512 = np.random.default_rng(1).random((1, 3, 512, 512), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export(model, Path(tmp))
        rows: dict[str, Callable[[], Run]] = {  # each made just before it is measured: no idle pools meanwhile
            "PyTorch eager float32": lambda: torch_run(model),
            "PyTorch channels-last float32": lambda: torch_run(model, channels_last=True),
            "PyTorch bfloat16 autocast": lambda: torch_run(model, dtype=torch.bfloat16),
            "PyTorch bfloat16 channels-last": lambda: torch_run(model, channels_last=True, dtype=torch.bfloat16),
            "ONNX Runtime float32": lambda: onnxruntime_run(onnx, a.threads),
            "OpenVINO float32": lambda: openvino_run(onnx, a.threads, "f32"),
            "OpenVINO bfloat16": lambda: openvino_run(onnx, a.threads, "bf16"),
        }
        base_time = base_psnr = 0.0
        print(f"{'runtime':32s} {'s/512x512':>10s} {'speed-up':>9s} {'CBSD68 s25 dB':>14s} {'delta dB':>9s}")
        for name, make in rows.items():
            run = make()
            t = seconds(run, x512, a.repeats)
            psnr = float(np.mean([quality.psnr(c, run(n)[0].transpose(1, 2, 0)) for c, n in zip(cleans, noisies)]))
            base_time, base_psnr = (t, psnr) if not base_time else (base_time, base_psnr)
            print(f"{name:32s} {t:10.3f} {base_time / t:8.2f}x {psnr:14.3f} {psnr - base_psnr:+9.3f}", flush=True)
            del run
    print(f"command: python -m bench.runtimes --threads {a.threads} --limit {a.limit} --repeats {a.repeats}")


if __name__ == "__main__":
    main()
