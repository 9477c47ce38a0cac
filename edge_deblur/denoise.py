"""The learned denoiser (the prior of plug-and-play restoration) and a noise-level estimator.

    from edge_deblur.denoise import Denoiser, estimate_noise_sigma
    d = Denoiser.load()                    # the bundled "denoiser" (.tflite), or a .tflite/.onnx path
    z = d(x, sigma)                        # x: HxW or HxWx3 float32 sRGB, sigma: float or HxW map

The model (trained by ``converters.denoiser``) takes ``[1, H, W, 4]``: the noisy image and a noise
level map, and gives the noise it sees, ``[1, H, W, 3]``; the denoised image is the input minus that,
computed here at the input's full precision (an INT8 model's rounding touches only the noise).
Runs on numpy, LiteRT and OpenCV (onnxruntime for ``.onnx``), never TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import ModelError
from .logs import native_logs_silenced
from .model import Quantization, open_interpreter, read_sidecar, resolve_model
from .tiling import TilePlan, plan_tiles, run_tiled

DEFAULT_DENOISER = "denoiser"


def _quant(detail: dict) -> Quantization | None:
    scale, zero = detail["quantization"]
    return Quantization(float(scale), int(zero), np.dtype(detail["dtype"])) if scale else None


class _LiteRT4:
    """A LiteRT interpreter for the ``[1, H, W, 4] -> [1, H, W, 3]`` denoiser, resized only when the
    window shape changes; float or full-INT8 (quantization read from the file)."""

    backend = "litert"

    def __init__(self, path: Path, threads: int):
        self.interp = open_interpreter(path, threads)
        ins, outs = self.interp.get_input_details(), self.interp.get_output_details()
        shape = lambda d: [int(v) for v in d.get("shape_signature", d["shape"])]
        if len(ins) != 1 or len(outs) != 1 or shape(ins[0])[-1] != 4 or shape(outs[0])[-1] != 3:
            raise ModelError(f"{path}: not a denoiser: expected one [1, H, W, 4] input (image and noise map) and "
                             f"one [1, H, W, 3] output, got {[shape(d) for d in ins]} -> {[shape(d) for d in outs]}")
        self.input, self.output = ins[0], outs[0]
        self.in_quant, self.out_quant = _quant(self.input), _quant(self.output)
        self.shape: tuple[int, ...] | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.in_quant is not None:
            x = self.in_quant.quantize(x)
        if x.shape != self.shape:
            self.interp.resize_tensor_input(self.input["index"], list(x.shape), strict=False)
            with native_logs_silenced():  # LiteRT's XNNPACK line, on the first allocation
                self.interp.allocate_tensors()
            self.shape = x.shape
        self.interp.set_tensor(self.input["index"], x)
        self.interp.invoke()
        y = self.interp.get_tensor(self.output["index"])
        return self.out_quant.dequantize(y) if self.out_quant is not None else y


class _OnnxRuntime4:
    """onnxruntime (CPU) for the same ``[1, H, W, 4] -> [1, H, W, 3]`` float graph."""

    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ModelError(f"{path}: running .onnx models needs onnxruntime (pip install 'edge-deblur[onnx]')") from e
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for a bad file
            raise ModelError(f"{path}: not a valid ONNX model: {e}") from e
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(ins) != 1 or len(outs) != 1 or ins[0].shape[-1] != 4 or outs[0].shape[-1] != 3:
            raise ModelError(f"{path}: not a denoiser: expected one [N, H, W, 4] input and one [N, H, W, 3] output")
        self.input, self.output = ins[0].name, outs[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output], {self.input: x})[0]


class Denoiser:
    """A loaded noise-level-conditioned denoiser: ``Denoiser.load()(image, sigma)``.

    ``image``: float HxW (gray) or HxWx3 (sRGB), nominally in [0, 1]; values somewhat outside (an
    HQS iterate) are taken as they are. ``sigma``: the noise standard deviation in the same units,
    a float or an HxW map. Returns float32 of the image's shape. Any size: the image is
    reflect-padded to the model's stride and cropped back; frames larger than ``tile`` are cut into
    overlapping windows blended without seams (``edge_deblur.tiling``). A gray image is replicated
    to three channels and the result averaged back.
    """

    def __init__(self, runner, path: Path, multiple: int, tile: int = 1024, overlap: int = 64):
        if tile % multiple:
            raise ModelError(f"{path}: tile {tile} is not a multiple of the model's stride {multiple}")
        self.runner, self.path, self.multiple, self.tile, self.overlap = runner, path, multiple, tile, overlap
        self._plans: dict[tuple[int, int], TilePlan] = {}

    @classmethod
    def load(cls, model: str | os.PathLike = DEFAULT_DENOISER, threads: int | None = None, *,
             tile: int = 1024, overlap: int = 64) -> Denoiser:
        """``model``: a bundled name (default ``"denoiser"``) or a ``.tflite``/``.onnx`` path (its
        ``.json`` sidecar gives the stride ``multiple``); ``threads``: CPU threads (default: all)."""
        path = resolve_model(model)
        threads = threads or os.cpu_count() or 1
        sidecar = read_sidecar(path)
        runner = _OnnxRuntime4(path, threads) if path.suffix.lower() == ".onnx" else _LiteRT4(path, threads)
        return cls(runner, path, int(sidecar.get("multiple", 8)), tile, overlap)

    @property
    def backend(self) -> str:
        return self.runner.backend

    def _noise(self, window: np.ndarray) -> np.ndarray:
        return self.runner(np.ascontiguousarray(window[None], dtype=np.float32))[0]

    def __call__(self, image: np.ndarray, sigma: float | np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)) or min(image.shape[:2]) < 1:
            raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")
        if image.dtype.kind != "f":
            raise ValueError(f"expected a float image in [0, 1], got dtype {image.dtype}")
        h, w = image.shape[:2]
        sigma_map = np.asarray(sigma, np.float32)
        if sigma_map.ndim == 3 and sigma_map.shape[2] == 1:
            sigma_map = sigma_map[..., 0]
        if sigma_map.ndim not in (0, 2) or (sigma_map.ndim == 2 and sigma_map.shape != (h, w)):
            raise ValueError(f"sigma must be a number or an HxW map of the image's {h}x{w}, got shape {sigma_map.shape}")
        if not np.all(np.isfinite(sigma_map)) or np.any(sigma_map < 0):
            raise ValueError("sigma must be finite and non-negative")
        x = image.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise ValueError("image holds NaN or infinite values")
        rgb = x[..., None] if x.ndim == 2 else x
        if rgb.shape[2] == 1:
            rgb = np.repeat(rgb, 3, axis=2)
        stacked = np.empty((h, w, 4), np.float32)
        stacked[..., :3] = rgb
        stacked[..., 3] = sigma_map
        key = (h, w)
        if key not in self._plans:
            self._plans[key] = plan_tiles(h, w, self.tile, self.overlap, self.multiple)
        clean = rgb - run_tiled(stacked, self._plans[key], self._noise)
        if image.ndim == 2:
            return clean.mean(axis=2, dtype=np.float32)
        if image.shape[2] == 1:
            return clean.mean(axis=2, keepdims=True, dtype=np.float32)
        return clean.astype(np.float32, copy=False)


# Immerkær's mask: the difference of two Laplacians, which cancels any locally planar (and most
# locally quadratic) signal and leaves 36 sigma^2 of white noise variance.
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
# On pure white noise the ``quantile``-th lowest of the 16x16 block estimates is this fraction of
# sigma (measured: 20 seeded 640x480 fields, 0.8915 +- 0.0033); dividing by it removes the bias
# that choosing the lowest blocks brings.
_BLOCK_BIAS = {(16, 0.1): 0.8915}


def estimate_noise_sigma(image: np.ndarray, block: int = 16, quantile: float = 0.1) -> float:
    """Standard deviation of additive white noise in an image (gray or RGB, float in [0, 1]).

    Immerkær (1996, "Fast noise variance estimation", CVIU 64(2)): the image is filtered with the
    mask ``N = [[1,-2,1],[-2,4,-2],[1,-2,1]]``, whose response to white noise of std sigma has std
    ``6 sigma`` and to smooth image content nearly 0, and sigma = sqrt(pi/2) mean|I * N| / 6 (the mean
    absolute value of a zero-mean Gaussian is sigma sqrt(2/pi)). Texture and edges leak into the
    response and inflate a whole-image mean (on the training photos by +3/255 on average at sigma 0),
    so the estimate is taken, as block-based estimators do (Shin, Paik & Kang 2005; Liu, Tanaka &
    Okutomi 2013 pick weak-texture patches likewise), over the flattest image blocks: the
    ``quantile``-th lowest of the per-block estimates on ``block`` x ``block`` blocks, divided by
    what that order statistic gives on pure noise (``_BLOCK_BIAS``). Colour: the mean of the three
    channels' estimates (per-channel noise, or gray noise replicated, both give the per-channel
    sigma). The border row and column are not used. Small images (under 4 blocks) use every pixel.
    """
    x = np.asarray(image, np.float32)
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[..., 0]
    if x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[2] != 3):
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {x.shape}")
    if min(x.shape[:2]) < 8:
        raise ValueError(f"image of {x.shape[1]}x{x.shape[0]} is too small to estimate noise (needs 8x8)")
    if not np.isfinite(x).all():
        raise ValueError("image holds NaN or infinite values")
    if (block, quantile) not in _BLOCK_BIAS:
        raise ValueError(f"no measured bias for block={block}, quantile={quantile} (have {sorted(_BLOCK_BIAS)})")
    planes = [x] if x.ndim == 2 else [np.ascontiguousarray(x[..., c]) for c in range(3)]
    estimates = []
    for plane in planes:
        response = np.abs(cv2.filter2D(plane, cv2.CV_32F, _IMMERKAER, borderType=cv2.BORDER_REFLECT_101))[1:-1, 1:-1]
        rows, cols = response.shape[0] // block, response.shape[1] // block
        if rows * cols < 4:
            estimates.append(float(np.sqrt(np.pi / 2) * response.mean() / 6.0))
            continue
        means = response[: rows * block, : cols * block].reshape(rows, block, cols, block).mean(axis=(1, 3))
        low = float(np.quantile(means, quantile))
        estimates.append(np.sqrt(np.pi / 2) * low / 6.0 / _BLOCK_BIAS[(block, quantile)])
    return float(np.mean(estimates))
