"""DCE-Net as an ONNX graph: built from the network's definition, and read back (checked) from ``.onnx`` files.

The graph is written node by node from the network's definition (Conv, Relu, Concat, Tanh; with the curves
also Slice, Mul, Sub, Add, Clip), not traced, so it needs only the ``onnx`` package, any opset from
:data:`~scl_lle.defaults.MIN_OPSET` works, and batch, height and width are dynamic.

Two variants:

- the network alone (default): ``image (batch, 3, height, width)`` in [0, 1] → ``curve_maps (batch, 24, height,
  width)`` in [-1, 1]. This is what the engine runs (:func:`scl_lle.engine.backends.onnxruntime_session`):
  tiling, ``scale`` (estimation on a shrunk image, bilinear upsampling) and the curves stay in the engine, so the
  ONNX backend gives the same results as PyTorch for every setting.
- ``with_curves=True``: ``image`` → ``enhanced (batch, 3, height, width)``, the eight curves applied and
  the result clipped to [0, 1]: the network and its curves at full resolution for use outside scl-lle, without
  the engine's finishing (:mod:`scl_lle.engine.finishing`), i.e. what ``Enhancer(finish=False)`` gives.

The model's metadata says which (``scl_lle.outputs``: ``curve_maps`` or ``enhanced``).

An ``.onnx`` file given to :func:`read_onnx` is checked before anything runs it, each refusal a one-line
:class:`~scl_lle.models.hub.WeightsError`: it must parse; use only default-domain operators; hold all its tensors
inside (external data is refused, never looked for); take one float image ``(batch, 3, height, width)`` of any
height and width (a batch fixed at 1 is run a picture at a time); have one float output; and have finite
initialisers. (The session then checks that it turns the 32x32 test image of the PyTorch checks into finite curve
maps ``(1, 3 * iterations, 32, 32)``, ``iterations`` from the metadata, default 8, and a 24x40 one into maps of
that size.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..defaults import DEFAULT_OPSET, MIN_OPSET
from .dcenet import DCENet
from .hub import WeightsError, _first_line, load_dcenet

__all__ = ["build_onnx", "curve_channels", "read_onnx", "require"]

_INSTALL_HINT = "pip install onnx onnxruntime"


def require(module: str) -> Any:
    """The ``onnx`` or ``onnxruntime`` module, or an :class:`ImportError` that says how to install it."""
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(f"the ONNX features need the '{module}' package ({_INSTALL_HINT})") from error


def _model_of(weights: str | os.PathLike[str] | DCENet | None) -> DCENet:
    model = weights if isinstance(weights, DCENet) else load_dcenet(weights)
    return model.to(device="cpu", dtype=torch.float32).eval()


def _flush_subnormals(array: np.ndarray) -> np.ndarray:
    """``array`` (float32) with subnormal values (below about 1.2e-38) set to 0.

    The released SCL-LLE checkpoint has weights down to 1e-44; ONNX Runtime's CPU kernels take a slow path on
    them that ``torch.set_flush_denormal`` does not reach (a 256x256 image: 14.6 s instead of 0.3 s). Zeroing
    them changes no output visibly (the PyTorch backend flushes them on the CPU too, see engine/enhancer.py)."""
    # Read the bits: once denormals are flushed (engine/enhancer.py), float comparisons would see these values as 0.
    bits = np.ascontiguousarray(array, np.float32).view(np.uint32)
    subnormal = ((bits & 0x7F800000) == 0) & ((bits & 0x007FFFFF) != 0)  # exponent 0, mantissa not 0
    return np.where(subnormal, np.float32(0), array) if subnormal.any() else array


def _network_nodes(helper: Any, nodes: list[Any]) -> str:
    """Append DCE-Net's nodes (the seven convolutions of :meth:`~scl_lle.models.dcenet.DCENet.curve_maps`, their
    activations and skip concatenations) reading ``image``; returns the name of the curve maps."""

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
    return conv(7, concat(x1, x6), "Tanh")


def _curve_nodes(helper: Any, nodes: list[Any], initializers: list[Any], maps: str, iterations: int) -> str:
    """Append the ``iterations`` curves of :func:`~scl_lle.core.curves.apply_curves` applied to ``image`` with
    ``maps``, then the clip to [0, 1]; returns the name of the result (``enhanced``)."""
    from onnx import TensorProto

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
    return "enhanced"


def build_onnx(
    weights: str | os.PathLike[str] | DCENet | None, *, opset: int = DEFAULT_OPSET, with_curves: bool = False
) -> Any:
    """Build the ONNX ``ModelProto`` of DCE-Net (see the module docstring for the two variants).

    ``weights``: anything :func:`~scl_lle.models.hub.load_dcenet` takes, or a :class:`~scl_lle.models.dcenet.DCENet`.
    """
    onnx = require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    latest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= latest:
        raise ValueError(f"opset must be within {MIN_OPSET}..{latest} (this onnx package), got {opset}")
    model = _model_of(weights)
    state = {k: _flush_subnormals(v.detach().cpu().numpy().astype(np.float32)) for k, v in model.state_dict().items()}
    initializers = [numpy_helper.from_array(value, name) for name, value in state.items()]
    nodes: list[Any] = []
    maps = _network_nodes(helper, nodes)
    iterations = model.iterations
    dims = ["batch", 3, "height", "width"]
    if with_curves:
        output = _curve_nodes(helper, nodes, initializers, maps, iterations)
        outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, dims)]
    else:
        nodes.append(helper.make_node("Identity", [maps], ["curve_maps"], name="curve_maps"))
        outputs = [helper.make_tensor_value_info("curve_maps", TensorProto.FLOAT, ["batch", 3 * iterations, *dims[2:]])]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)
    graph = helper.make_graph(nodes, "dce_net", [image], outputs, initializer=initializers)
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
            "scl_lle.outputs": "enhanced" if with_curves else "curve_maps",
            "scl_lle.iterations": str(iterations),
            "scl_lle.channels": str(model.channels),
            "scl_lle.version": __version__,
        },
    )
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _subgraphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every graph nested in its nodes' attributes (If, Loop, Scan bodies)."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _subgraphs(sub)


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of ``graph`` and its subgraphs: initialisers and constant attributes."""
    for g in _subgraphs(graph):
        yield from g.initializer
        for sparse in g.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        for node in g.node:
            for attribute in node.attribute:
                yield from ([attribute.t] if attribute.HasField("t") else []) + list(attribute.tensors)
                if attribute.HasField("sparse_tensor"):
                    yield from (attribute.sparse_tensor.values, attribute.sparse_tensor.indices)


def _check_onnx(path: Path, proto: Any) -> int:
    """Check a parsed ``.onnx`` before ONNX Runtime sees it (see the module docstring); returns the number of
    curve-map channels the engine needs from it."""
    onnx = require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    tensors = list(_tensors(graph))
    external = [t.name for t in tensors if t.data_location == TensorProto.EXTERNAL or len(t.external_data)]
    if external:
        raise WeightsError(
            f"{path}: refers to external data for {external[:3]}; give a self-contained .onnx "
            "(scl-lle export writes one)"
        )
    foreign = sorted({n.domain for g in _subgraphs(graph) for n in g.node if n.domain not in ("", "ai.onnx")})
    if foreign or len(proto.functions):
        names = foreign or sorted({f.domain for f in proto.functions})
        raise WeightsError(f"{path}: uses operators outside the default ONNX domain ({', '.join(names)})")
    try:
        onnx.checker.check_model(proto)
    except Exception as error:
        raise WeightsError(f"{path}: not a valid ONNX model ({_first_line(error)})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if props.get("scl_lle.outputs", "curve_maps") != "curve_maps":
        raise WeightsError(
            f"{path} was exported with the curves included; the engine needs the network alone "
            "(scl-lle export --onnx PATH, without --with-curves)"
        )
    constants = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    image = inputs[0].type if len(inputs) == 1 else None
    dims = image.tensor_type.shape.dim if image is not None and image.HasField("tensor_type") else []
    if image is None or image.tensor_type.elem_type != TensorProto.FLOAT or len(dims) != 4 or dims[1].dim_value != 3:
        found = "; ".join(f"{i.name}: {helper.printable_type(i.type)}" for i in inputs) or "none"
        raise WeightsError(f"{path}: needs exactly one input, a float image (batch, 3, height, width); has {found}")
    fixed = [
        d.dim_value for i, d in enumerate(dims) if i != 1 and d.HasField("dim_value") and (i, d.dim_value) != (0, 1)
    ]
    if fixed:  # a batch of 1 is taken one picture at a time (OnnxEstimator); a fixed height or width never fits
        shape = ", ".join(str(d.dim_value) if d.HasField("dim_value") else d.dim_param or "?" for d in dims)
        raise WeightsError(
            f"{path}: its input has a fixed size ({shape}); the engine needs any height and width, and a batch "
            "of any size or 1 (scl-lle export --onnx writes such a graph)"
        )
    outputs = list(graph.output)
    if len(outputs) != 1 or outputs[0].type.tensor_type.elem_type != TensorProto.FLOAT:
        found = "; ".join(f"{o.name}: {helper.printable_type(o.type)}" for o in outputs) or "none"
        raise WeightsError(f"{path}: needs exactly one output, float curve maps; has {found}")
    floats = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16)
    for tensor in (t for t in tensors if t.data_type in floats):
        if not np.isfinite(numpy_helper.to_array(tensor).astype(np.float32)).all():
            raise WeightsError(f"{path}: initialiser {tensor.name} is not finite (NaN or infinity)")
    try:
        return curve_channels(proto)
    except ValueError:
        raise WeightsError(f"{path}: scl_lle.iterations is not a number") from None


def curve_channels(proto: Any) -> int:
    """The curve-map channels a network-alone graph gives: 3 x its ``scl_lle.iterations`` metadata (default 8)."""
    props = {p.key: p.value for p in proto.metadata_props}
    return 3 * int(props.get("scl_lle.iterations", "8"))


def read_onnx(path: Path) -> tuple[bytes, int]:
    """The bytes of a checked ``.onnx`` file and the curve-map channels it must give (see :func:`_check_onnx`)."""
    onnx = require("onnx")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise WeightsError(f"{path}: cannot read it ({error.strerror or error})") from None
    try:
        proto = onnx.load_from_string(data)  # never resolves external data
    except Exception as error:
        raise WeightsError(f"{path}: not a readable ONNX model ({_first_line(error)})") from None
    channels = _check_onnx(path, proto)
    from onnx import TensorProto, numpy_helper

    flushed = False  # subnormal weights: see _flush_subnormals (files exported before it was used)
    for tensor in (t for t in proto.graph.initializer if t.data_type == TensorProto.FLOAT):
        values = numpy_helper.to_array(tensor)
        if (new := _flush_subnormals(values)) is not values:
            tensor.CopyFrom(numpy_helper.from_array(new, tensor.name))
            flushed = True
    return (proto.SerializeToString() if flushed else data), channels
