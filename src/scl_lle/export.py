"""ONNX export of DCE-Net and the ONNX Runtime session behind ``Enhancer(backend="onnxruntime")``.

The graph is written node by node from the network's definition (Conv, Relu, Concat, Tanh; with the curves
also Slice, Mul, Sub, Add, Clip), not traced, so it needs only the ``onnx`` package, any opset from
:data:`MIN_OPSET` works, and batch, height and width are dynamic.

Two variants:

- the network alone (default): ``image (batch, 3, height, width)`` in [0, 1] → ``curve_maps (batch, 24, height,
  width)`` in [-1, 1]. This is what the engine runs: tiling, ``scale`` (estimation on a shrunk image, bilinear
  upsampling) and the curves stay in the engine, so the ONNX backend gives the same results as PyTorch for
  every setting.
- ``include_curves=True``: ``image`` → ``enhanced (batch, 3, height, width)``, the eight curves applied and
  the result clipped to [0, 1]: the network and its curves at full resolution for use outside scl-lle, without
  the engine's finishing (:mod:`scl_lle.finishing`), i.e. what ``Enhancer(finish=False)`` gives.

The model's metadata says which (``scl_lle.outputs``: ``curve_maps`` or ``enhanced``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .atomic import atomic_write
from .model import DCENet
from .weights import is_onnx_file, load_dcenet

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "build_onnx", "export_onnx", "onnxruntime_session"]

#: Opset written by default (Clip with min/max inputs needs 11; 17 is widely supported by runtimes).
DEFAULT_OPSET = 17
MIN_OPSET = 11

_INSTALL_HINT = "pip install onnx onnxruntime"


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(f"the ONNX features need the '{module}' package ({_INSTALL_HINT})") from error


def _model_of(weights: str | os.PathLike[str] | DCENet | None) -> DCENet:
    model = weights if isinstance(weights, DCENet) else load_dcenet(weights)
    return model.to(device="cpu", dtype=torch.float32).eval()


def build_onnx(
    weights: str | os.PathLike[str] | DCENet | None, *, opset: int = DEFAULT_OPSET, include_curves: bool = False
) -> Any:
    """Build the ONNX ``ModelProto`` of DCE-Net (see the module docstring for the two variants)."""
    onnx = _require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    latest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= latest:
        raise ValueError(f"opset must be within {MIN_OPSET}..{latest} (this onnx package), got {opset}")
    model = _model_of(weights)
    state = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    initializers = [numpy_helper.from_array(value, name) for name, value in state.items()]
    nodes = []

    def conv(index: int, inputs: str, activation: str) -> str:
        name = f"e_conv{index}"
        nodes.append(
            helper.make_node(
                "Conv",
                [inputs, f"{name}.weight", f"{name}.bias"],
                [f"{name}_out"],
                name=name,
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
                strides=[1, 1],
                dilations=[1, 1],
                group=1,
            )
        )
        nodes.append(helper.make_node(activation, [f"{name}_out"], [f"x{index}"], name=f"{activation.lower()}{index}"))
        return f"x{index}"

    def concat(a: str, b: str) -> str:
        name = f"cat_{a}_{b}"
        nodes.append(helper.make_node("Concat", [a, b], [name], name=name, axis=1))
        return name

    x1 = conv(1, "image", "Relu")
    x2 = conv(2, x1, "Relu")
    x3 = conv(3, x2, "Relu")
    x4 = conv(4, x3, "Relu")
    x5 = conv(5, concat(x3, x4), "Relu")
    x6 = conv(6, concat(x2, x5), "Relu")
    maps = conv(7, concat(x1, x6), "Tanh")
    iterations = model.iterations
    dims = ["batch", 3, "height", "width"]
    if include_curves:
        ints = TensorProto.INT64
        initializers.append(helper.make_tensor("axis_channels", ints, [1], [1]))
        initializers.append(helper.make_tensor("clip_min", TensorProto.FLOAT, [], [0.0]))
        initializers.append(helper.make_tensor("clip_max", TensorProto.FLOAT, [], [1.0]))
        x = "image"
        for i in range(iterations):
            initializers.append(helper.make_tensor(f"start{i}", ints, [1], [3 * i]))
            initializers.append(helper.make_tensor(f"end{i}", ints, [1], [3 * i + 3]))
            r, sq, diff, step, nxt = (f"r{i}", f"sq{i}", f"diff{i}", f"step{i}", f"curve{i}")
            nodes.append(helper.make_node("Slice", [maps, f"start{i}", f"end{i}", "axis_channels"], [r], name=r))
            nodes.append(helper.make_node("Mul", [x, x], [sq], name=sq))
            nodes.append(helper.make_node("Sub", [sq, x], [diff], name=diff))
            nodes.append(helper.make_node("Mul", [r, diff], [step], name=step))
            nodes.append(helper.make_node("Add", [x, step], [nxt], name=nxt))
            x = nxt
        nodes.append(helper.make_node("Clip", [x, "clip_min", "clip_max"], ["enhanced"], name="clip"))
        outputs = [helper.make_tensor_value_info("enhanced", TensorProto.FLOAT, dims)]
    else:
        nodes.append(helper.make_node("Identity", [maps], ["curve_maps"], name="curve_maps"))
        outputs = [helper.make_tensor_value_info("curve_maps", TensorProto.FLOAT, ["batch", 3 * iterations, *dims[2:]])]
    graph = helper.make_graph(
        nodes,
        "dce_net",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
        outputs,
        initializer=initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="scl-lle",
        producer_version=__version__,
        doc_string="DCE-Net (SCL-LLE / Zero-DCE curve estimation); input image (batch, 3, height, width) in [0, 1]",
    )
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    helper.set_model_props(
        proto,
        {
            "scl_lle.outputs": "enhanced" if include_curves else "curve_maps",
            "scl_lle.iterations": str(iterations),
            "scl_lle.channels": str(model.channels),
            "scl_lle.version": __version__,
        },
    )
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(
    weights: str | os.PathLike[str] | DCENet | None,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    include_curves: bool = False,
) -> Path:
    """Write DCE-Net as ONNX to ``path`` (atomically) and return the path.

    Args:
        weights: as for :class:`~scl_lle.inference.Enhancer` (a weights file, a pretrained name, a DCENet).
        path: the ``.onnx`` file to write (replaced if it exists).
        opset: ONNX opset, :data:`MIN_OPSET` up to what the installed ``onnx`` knows (default
            :data:`DEFAULT_OPSET`).
        include_curves: export network + curves (output ``enhanced``) instead of the network alone (output
            ``curve_maps``, which ``Enhancer(backend="onnxruntime")`` needs).
    """
    proto = build_onnx(weights, opset=opset, include_curves=include_curves)
    final = Path(path)
    with atomic_write(final) as temporary:
        temporary.write_bytes(proto.SerializeToString())
    return final


def onnxruntime_session(
    weights: str | os.PathLike[str] | DCENet | None,
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
) -> Any:
    """An ONNX Runtime session that estimates curve maps (the network-alone export).

    ``weights``: a ``.onnx`` file from :func:`export_onnx` (the network alone), or anything
    :class:`~scl_lle.inference.Enhancer` takes (exported in memory). CUDA devices use ONNX Runtime's CUDA
    provider, which must be installed (``onnxruntime-gpu``). ``threads``: intra-op threads (``None``: PyTorch's
    thread count, so both backends use the same).
    """
    ort = _require("onnxruntime")
    device = torch.device(device)
    if is_onnx_file(weights):
        data = Path(weights).read_bytes()
        onnx = _require("onnx")
        props = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
        if props.get("scl_lle.outputs", "curve_maps") != "curve_maps":
            raise ValueError(
                f"{weights} was exported with the curves included; the engine needs the network alone "
                "(scl-lle export --onnx PATH, without --with-curves)"
            )
    else:
        data = build_onnx(weights).SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No busy-waiting between runs: the engine's PyTorch threads run right after each call (upsampling, curves)
    # and would compete with spinning ONNX Runtime workers for the same cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("onnxruntime has no CUDA provider here (install onnxruntime-gpu) or use --device cpu")
        providers: list[Any] = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    elif device.type == "cpu":
        providers = ["CPUExecutionProvider"]
    else:
        raise ValueError(f"the onnxruntime backend runs on cpu or cuda, not {device}")
    return ort.InferenceSession(data, options, providers=providers)
