"""An INT8 student's output on its input's grid: the frame's own 8-bit steps, not the calibrated ones.

PTQ gives the output tensor the scale of its calibrated range: for the rpi5 student as PTQ made it
0.00503 per code with zero point -81, i.e. [-0.24, 1.05] in steps of 1.28 8-bit levels. So the
student's last op (the global residual ADD, ``x + correction``) rounds every frame to a grid
coarser than the 8-bit frame it came from, and the runtime then needs a lookup per pixel to map
those codes back to 8 bits (``edge_deblur.framepath``). Giving the output tensor the input's
quantization (scale 1/255, zero point -128: code = value - 128) makes that ADD round to the
frame's own grid and saturate at 0 and 255, which is what the runtime's clip and rounding did
anyway, on the finer grid; the runtime's output side becomes the same XOR as its input side.

Only the output tensor's (scale, zero point) changes; the op that writes it must requantize (ADD,
SUB, MUL, CONV_2D, DEPTHWISE_CONV_2D, QUANTIZE). Ops that pass values through (DEPTH_TO_SPACE,
RESHAPE ...) need one scale in and out and are refused.

    python -m converters.output_grid edge_deblur/models/student-rpi5.tflite build/grid/student-rpi5.tflite

The bundled rpi5 and rpi4 students were rewritten so (issue 14 part 3); their cards keep the PTQ
file's hash and output quantization (``output_grid.pre_rewrite``), which ``output_quantized_as``
restores exactly (``tests/test_output_grid.py``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REQUANTIZING = {"ADD", "SUB", "MUL", "CONV_2D", "DEPTHWISE_CONV_2D", "QUANTIZE"}


def output_on_input_grid(src: str | Path, dst: str | Path) -> Path:
    """Write ``src`` (a full-INT8 one-image-in, one-image-out .tflite) to ``dst`` with its output
    tensor quantized like its input; the sidecar (``.json``) is copied along when there is one."""
    src, dst = Path(src), Path(dst)
    _rewrite_output(src, dst, None)
    if src.with_suffix(".json").exists():
        sidecar = json.loads(src.with_suffix(".json").read_text())
        sidecar["output_grid"] = "input"
        dst.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
    else:
        dst.with_suffix(".json").unlink(missing_ok=True)
    return dst


def output_quantized_as(src: str | Path, dst: str | Path, scale: float, zero_point: int) -> Path:
    """``src`` written to ``dst`` with its output tensor's quantization set to (``scale``,
    ``zero_point``) and nothing else changed (no sidecar): the inverse of ``output_on_input_grid``
    given the scale and zero point it replaced."""
    return _rewrite_output(Path(src), Path(dst), (float(scale), int(zero_point)))


def _rewrite_output(src: Path, dst: Path, quant: tuple[float, int] | None) -> Path:
    """The output tensor's (scale, zero point) set to ``quant``, or to the input's when None."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    from converters.export import _replace_atomic

    model = flatbuffer_utils.read_model(str(src))
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(f"{src}: expected one input and one output")
    inp, out = graph.tensors[int(graph.inputs[0])], graph.tensors[int(graph.outputs[0])]
    if inp.quantization is None or out.quantization is None or inp.quantization.scale is None \
            or out.quantization.scale is None or inp.type != out.type:
        raise ValueError(f"{src}: input and output must be quantized tensors of one integer type")
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    writer = next(op for op in graph.operators if int(graph.outputs[0]) in [int(o) for o in op.outputs])
    code = model.operatorCodes[writer.opcodeIndex]
    name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode))
    if name not in REQUANTIZING:
        raise ValueError(f"{src}: the output is written by {name}, which cannot change scale (needs one of "
                         f"{', '.join(sorted(REQUANTIZING))})")
    if quant is None:
        out.quantization.scale = list(inp.quantization.scale)
        out.quantization.zeroPoint = list(inp.quantization.zeroPoint)
    else:
        out.quantization.scale, out.quantization.zeroPoint = [quant[0]], [quant[1]]
    dst.parent.mkdir(parents=True, exist_ok=True)
    _replace_atomic(dst, lambda tmp: flatbuffer_utils.write_model(model, tmp))
    return dst


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m converters.output_grid SRC.tflite DST.tflite")
    print(output_on_input_grid(sys.argv[1], sys.argv[2]))
