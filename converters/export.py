"""Export the trained teacher for the runtime and the converters: TFLite, ONNX, Keras weights, sidecar.

    python -m converters.export --run runs/teacher --out edge_deblur/models

Both graphs take NHWC float32 RGB in [0, 1] with free height and width (multiples of the sidecar's
``multiple``); every export is checked against Keras on a real photo before it is bundled.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import keras
import numpy as np

from converters.data import SPLIT_NAME, load_photo
from converters.teacher import build_teacher, count_macs, multiple_of
from edge_deblur.images import AtomicFile

TOLERANCE = 1e-4  # float32 graphs of the same maths; measured differences are ~1e-6
CHECK_PHOTO = "kodak24/kodim05.png"  # held-out photo used only to compare exports with Keras


def _replace_atomic(path: Path, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path`` and move it into place
    (``edge_deblur.images.AtomicFile``, which keeps ``.weights.h5`` whole for Keras)."""
    with AtomicFile(path) as tmp:
        write(str(tmp))
    return Path(path)


def export_tflite(model: keras.Model, path: str | os.PathLike) -> Path:
    """Float32 TFLite flatbuffer with input signature ``[1, None, None, 3]`` (resize it with
    ``resize_tensor_input`` before ``allocate_tensors``)."""
    import tensorflow as tf

    fn = tf.function(lambda image: model(image, training=False),
                     input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32, name="image")])
    # No trackable object: given one, the converter keeps the weights as resource variables that the
    # interpreter never initialises (garbage outputs); without it they are frozen into constants.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    flatbuffer = converter.convert()
    return _replace_atomic(path, lambda tmp: Path(tmp).write_bytes(flatbuffer))


def export_onnx(model: keras.Model, path: str | os.PathLike, *, channels: int = 3, input_name: str = "image") -> Path:
    """ONNX (via Keras' exporter and tf2onnx) with one NHWC input named ``input_name`` of shape
    ``[batch, height, width, channels]``, the first three free."""
    import onnx

    def write(tmp: str) -> None:
        model.export(tmp, format="onnx", verbose=False,
                     input_signature=[keras.InputSpec(shape=(None, None, None, channels), dtype="float32")])
        graph = onnx.load(tmp)
        old = graph.graph.input[0].name
        graph.graph.input[0].name = input_name
        for dim, label in zip(graph.graph.input[0].type.tensor_type.shape.dim, ("batch", "height", "width")):
            dim.dim_param = label
        for node in graph.graph.node:
            node.input[:] = [input_name if name == old else name for name in node.input]
        onnx.checker.check_model(graph)
        onnx.save(graph, tmp)

    return _replace_atomic(path, write)


def tflite_predict(path: str | os.PathLike, image: np.ndarray) -> np.ndarray:
    """Run a TFLite model on one float32 HxWx3 image with LiteRT, resizing its input to fit."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=2)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], [1, *image.shape])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], image[None].astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])[0]


def onnx_predict(path: str | os.PathLike, image: np.ndarray) -> np.ndarray:
    """Run an ONNX model on one float32 HxWx3 image with onnxruntime (CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": image[None].astype(np.float32)})[0][0]


def check_exports(model: keras.Model, tflite: Path, onnx: Path, sizes=((256, 256), (480, 640))) -> dict:
    """Max absolute difference of each export from Keras on crops of a real held-out photo, at each
    size; raises if any exceeds ``TOLERANCE``."""
    photo = load_photo(CHECK_PHOTO).astype(np.float32) / 255.0
    tall, wide = (max(0, max(s[i] for s in sizes) - photo.shape[i]) for i in (0, 1))
    photo = np.pad(photo, ((0, tall), (0, wide), (0, 0)), mode="reflect")  # Kodak is 500x500, 640 is wider
    errors = {}
    for h, w in sizes:
        crop = photo[:h, :w]
        expected = np.asarray(model.predict_on_batch(crop[None]))[0]
        for path, run in ((tflite, tflite_predict), (onnx, onnx_predict)):
            errors[f"{path.suffix[1:]} {h}x{w}"] = float(np.abs(run(path, crop) - expected).max())
    bad = {k: v for k, v in errors.items() if v > TOLERANCE}
    if bad:
        raise RuntimeError(f"exports disagree with Keras beyond {TOLERANCE}: {bad}")
    return errors


def load_teacher(run_dir: str | os.PathLike) -> tuple[keras.Model, dict]:
    """The best EMA teacher of a training run and the run's record (config, state of the last checkpoint)."""
    run = Path(run_dir)
    if not (run / "best.weights.h5").exists():
        raise FileNotFoundError(f"{run / 'best.weights.h5'}: no best weights; train first (python -m converters.train)")
    config = json.loads((run / "config.json").read_text())
    latest = json.loads((run / "latest.json").read_text())["checkpoint"]
    state = json.loads((run / latest / "state.json").read_text())
    model = build_teacher(width=config["width"], enc_blocks=tuple(config["enc_blocks"]),
                          middle_blocks=config["middle_blocks"], dec_blocks=tuple(config["dec_blocks"]))
    model.load_weights(run / "best.weights.h5")
    return model, {"config": config, "state": state}


# The teacher's channel attention pools over the whole window, so windows of one frame see different
# statistics and tiled results drift (up to 15 levels at 256-pixel tiles on a 640x480 frame): a tile
# large enough for common frames keeps them in one pass.
def export_bundle(run_dir: str | os.PathLike, out_dir: str | os.PathLike, tile: int = 1024) -> dict:
    """Write ``teacher.tflite``, ``teacher.onnx``, ``teacher.weights.h5`` and the ``teacher.json``
    sidecar into ``out_dir`` from the best checkpoint of ``run_dir``; returns the sidecar."""
    out = Path(out_dir)
    model, record = load_teacher(run_dir)
    config, state = record["config"], record["state"]
    tflite = export_tflite(model, out / "teacher.tflite")
    onnx = export_onnx(model, out / "teacher.onnx")
    _replace_atomic(out / "teacher.weights.h5", model.save_weights)
    check_exports(model, tflite, onnx)
    multiple = multiple_of(model)
    if tile % multiple:
        raise ValueError(f"tile {tile} is not a multiple of {multiple}")
    sidecar = {
        "name": "teacher", "layout": "NHWC", "input_range": [0, 1], "multiple": multiple, "tile": tile,
        "macs_per_pixel": round(count_macs(model, tile, tile) / tile**2, 1),
        "params": int(model.count_params()),
        "architecture": {k: config[k] for k in ("width", "enc_blocks", "middle_blocks", "dec_blocks")},
        "training": {
            "steps": state["step"], "minutes": round(state["seconds"] / 60, 1),
            "best_val_psnr": round(state["best_val_psnr"], 3), "blurred_val_psnr": round(state["blurred_val_psnr"], 3),
            "seed": config["seed"], "split": SPLIT_NAME,
        },
    }
    _replace_atomic(out / "teacher.json", lambda tmp: Path(tmp).write_text(json.dumps(sidecar, indent=1) + "\n"))
    return sidecar


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/teacher", help="training run folder")
    parser.add_argument("--out", default="edge_deblur/models", help="bundle folder")
    args = parser.parse_args(argv)
    sidecar = export_bundle(args.run, args.out)
    print(json.dumps(sidecar, indent=1))
    return sidecar


if __name__ == "__main__":
    main()
