"""dlib's face-recognition ResNet, run by onnxruntime instead of dlib's own CPU code.

``dlib-bin`` is built without BLAS, so its ResNet (the 128-D face descriptor, ~0.5 GFLOP per face) runs
on dlib's generic matrix code: ~75 ms per face here, a third of a curation's CPU time. onnxruntime's
kernels do the same arithmetic several times faster on one thread. This module reads the weights from
``dlib_face_recognition_resnet_model_v1.dat`` (dlib's serialisation format: compact integers, strings,
and tensors stored as raw little-endian float32) and builds the same network as an ONNX graph in
memory, once per process. Nothing is written to disk and no weights come from anywhere else.

The network (dlib's ``dnn_face_recognition_ex.cpp``): ``input_rgb_image_sized<150>`` →
conv 7×7/2 (32) → affine → relu → max_pool 3×3/2 → residual levels of 3×3 conv + affine blocks
(32, 64, 128, 256, 256 filters; "down" blocks use stride 2 and add an avg_pool 2×2/2 of their input)
→ global average → fc 128 without bias. dlib's ``add_prev`` adds tensors of different shapes by
zero-padding the smaller one at the end of each dimension; the graph does the same with ``Pad``.

The parser checks every layer name and shape against that architecture and refuses anything else;
tests compare its descriptors with dlib's own on the shared photos.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CHIP_SIZE = 150
CHIP_PADDING = 0.25


class DlibModelFormatError(ValueError):
    """The .dat file is not the network this converter knows."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int(self) -> int:
        control = self.data[self.pos]
        size = control & 0x0F
        if size == 0 or size > 8:
            raise DlibModelFormatError(f"bad integer at byte {self.pos}")
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def string(self) -> str:
        length = self.int()
        text = self.data[self.pos : self.pos + length].decode("ascii")
        self.pos += length
        return text

    def peek_string(self, prefix: str) -> bool:
        """Whether a string starting with ``prefix`` comes next (without consuming it)."""
        saved = self.pos
        try:
            length = self.int()
            return length >= len(prefix) and self.data[self.pos : self.pos + len(prefix)] == prefix.encode()
        except DlibModelFormatError:
            return False
        finally:
            self.pos = saved

    def boolean(self) -> bool:
        char = self.data[self.pos : self.pos + 1]
        self.pos += 1
        if char not in (b"0", b"1"):
            raise DlibModelFormatError(f"bad bool at byte {self.pos - 1}")
        return char == b"1"

    def real(self) -> float:
        # dlib's float_details: a 64-bit mantissa and a 16-bit exponent, both compact integers.
        mantissa = self.int()
        exponent = self.int()
        if exponent >= 32000:
            return {32000: float("inf"), 32001: float("-inf")}.get(exponent, float("nan"))
        return float(mantissa) * 2.0**exponent

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise DlibModelFormatError(f"unknown tensor version at byte {self.pos}")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos += 4 * count
        return values.reshape(shape).astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        if self.int() != 1:
            raise DlibModelFormatError(f"unknown alias_tensor version at byte {self.pos}")
        n, k, nr, nc = (self.int() for _ in range(4))
        return n, k, nr, nc


@dataclass
class _Layer:
    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class DlibResnet:
    """The parsed network: input normalisation and the layers from the input upwards."""

    mean_rgb: tuple[float, float, float]
    layers: list[_Layer]
    markers: list[str]  # top-down chain of "layer" / "marker" (tags and skips), for the structure


def _read_layer(reader: _Reader) -> _Layer:
    name = reader.string()
    if name in ("con_4", "con_5", "con_6"):
        params = reader.tensor().reshape(-1)
        filters = reader.int()
        nr, nc, stride_y, stride_x = reader.int(), reader.int(), reader.int(), reader.int()
        pad_y, pad_x = reader.int(), reader.int()
        shape = reader.alias()
        reader.alias()  # biases
        for _ in range(4):  # learning-rate and weight-decay multipliers
            reader.real()
        use_bias = reader.boolean() if name in ("con_5", "con_6") else True
        if name == "con_6":
            reader.boolean()  # use_relu (fused relu is not used by this model)
        size = int(np.prod(shape))
        weights = params[:size].reshape(shape)
        bias = params[size : size + filters] if use_bias else np.zeros(filters, np.float32)
        if (nr, nc) != shape[2:] or shape[0] != filters or stride_y != stride_x or pad_y != pad_x:
            raise DlibModelFormatError(f"unexpected convolution {shape} stride {stride_y} pad {pad_y}")
        return _Layer("con", {"w": weights, "b": bias, "stride": stride_y, "pad": pad_y})
    if name in ("affine_", "affine_2"):
        params = reader.tensor().reshape(-1)
        gamma = reader.alias()
        reader.alias()
        mode = reader.int()
        disabled = reader.boolean() if name == "affine_2" else False
        channels = int(np.prod(gamma))
        if mode != 0 or disabled:  # 0 = CONV_MODE: one gamma/beta per channel
            raise DlibModelFormatError("unexpected affine layer mode")
        return _Layer("affine", {"gamma": params[:channels], "beta": params[channels : 2 * channels]})
    if name in ("relu_", "relu_2"):
        if name == "relu_2" and reader.boolean():
            raise DlibModelFormatError("disabled relu")
        return _Layer("relu")
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc, stride_y, stride_x, pad_y, pad_x = (reader.int() for _ in range(6))
        if nr != nc or stride_y != stride_x or pad_y != pad_x:
            raise DlibModelFormatError("unexpected pooling layer")
        return _Layer(name[:-2], {"size": nr, "stride": stride_y, "pad": pad_y})
    if name == "add_prev_":
        return _Layer("add_prev")
    if name in ("fc_2", "fc_3"):
        outputs, inputs = reader.int(), reader.int()
        params = reader.tensor().reshape(-1)
        reader.alias()
        reader.alias()
        bias_mode = reader.int()
        for _ in range(4):
            reader.real()
        if name == "fc_3":
            reader.boolean()
        if bias_mode != 1:  # FC_NO_BIAS
            raise DlibModelFormatError("fc layer with bias")
        return _Layer("fc", {"w": params[: inputs * outputs].reshape(inputs, outputs)})
    raise DlibModelFormatError(f"unknown layer {name!r}")


def parse_dlib_resnet(path: Path) -> DlibResnet:
    """Read ``dlib_face_recognition_resnet_model_v1.dat``."""
    return parse_dlib_resnet_bytes(Path(path).read_bytes())


def parse_dlib_resnet_bytes(data: bytes) -> DlibResnet:
    """Parse the content of ``dlib_face_recognition_resnet_model_v1.dat``."""
    try:
        return _parse(_Reader(data))
    except DlibModelFormatError:
        raise
    except (IndexError, ValueError) as exc:  # truncated or foreign data (UnicodeDecodeError included)
        raise DlibModelFormatError(f"not dlib's face ResNet: {exc}") from exc


def _parse(reader: _Reader) -> DlibResnet:
    if reader.int() != 1 or reader.string() != "loss_metric_2":
        raise DlibModelFormatError("not a dlib metric-learning network")
    reader.real()  # margin
    reader.real()  # distance threshold
    chain: list[str] = []
    version = 0
    while not reader.peek_string("input_rgb_image"):
        version = reader.int()
        # add_layer writes version 2 (3 for the newest input layer); add_tag_layer/add_skip_layer write 1.
        chain.append("marker" if version == 1 else "layer")
    bottom_version = version  # the add_layer right above the input layer
    if reader.string() != "input_rgb_image_sized":
        raise DlibModelFormatError("unexpected input layer")
    mean = (reader.real(), reader.real(), reader.real())
    if (reader.int(), reader.int()) != (CHIP_SIZE, CHIP_SIZE):
        raise DlibModelFormatError("unexpected input size")
    layers: list[_Layer] = []
    for index in range(chain.count("layer")):
        layers.append(_read_layer(reader))
        for _ in range(3):
            reader.boolean()
        for _ in range(3):  # x_grad, cached_output, params_grad: empty in a saved model
            reader.tensor()
        if index == 0 and bottom_version >= 3:
            reader.int()  # _sample_expansion_factor
    if reader.pos != len(reader.data):
        raise DlibModelFormatError(f"{len(reader.data) - reader.pos} unread bytes")
    return DlibResnet(mean, layers, chain)


def build_onnx(net: DlibResnet) -> bytes:
    """The network as a serialised ONNX model: input ``chips`` (N, 150, 150, 3) uint8 RGB,
    output ``descriptors`` (N, 128) float32, the values dlib's ``compute_face_descriptor`` returns."""
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    counter = iter(range(1_000_000))

    def const(array: np.ndarray, dtype: Any = np.float32) -> str:
        name = f"c{next(counter)}"
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        out = f"t{next(counter)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    # to_tensor: (pixel - mean) / 256, planes R, G, B.
    mean = np.array(net.mean_rgb, np.float32).reshape(1, 3, 1, 1)
    x = node("Cast", ["chips"], to=TensorProto.FLOAT)
    x = node("Transpose", [x], perm=[0, 3, 1, 2])
    x = node("Mul", [node("Sub", [x, const(mean)]), const(np.array(1 / 256, np.float32))])
    shape: tuple[int, int, int] = (3, CHIP_SIZE, CHIP_SIZE)  # channels, rows, cols of x

    # Bottom-up walk of the top-down chain: markers tell where tag1 / tag2+skip1 sit.
    chain = list(reversed(net.markers))
    layer_iter = iter(enumerate(net.layers))
    fused_affine = False
    saved: dict[str, tuple[str, tuple[int, int, int]]] = {}
    pending_markers = 0
    previous_kind = ""
    for entry in chain:
        if entry == "marker":
            pending_markers += 1
            continue
        index, layer = next(layer_iter)
        if fused_affine:  # folded into the convolution below it
            if layer.kind != "affine" or pending_markers:
                raise DlibModelFormatError("unexpected layer after a convolution")
            fused_affine = False
            continue
        if pending_markers == 1:  # tag1: the input of a residual block
            saved = {"tag1": (x, shape)}
        elif pending_markers == 2:  # tag2 (block output) then skip1 (back to the block's input)
            saved["tag2"] = (x, shape)
            x, shape = saved["tag1"]
        elif pending_markers:
            raise DlibModelFormatError("unexpected tag/skip layout")
        pending_markers = 0
        if layer.kind == "con":
            w, b = layer.params["w"], layer.params["b"]
            stride, pad, size = layer.params["stride"], layer.params["pad"], w.shape[2]
            following = net.layers[index + 1] if index + 1 < len(net.layers) else None
            if following is not None and following.kind == "affine":
                # affine(conv(x)) = gamma·(w∗x + b) + beta: one convolution with scaled weights. Besides
                # saving a pass, onnxruntime would otherwise keep fused copies of every weight (+50 MB).
                gamma, beta = following.params["gamma"], following.params["beta"]
                w = (w * gamma.reshape(-1, 1, 1, 1)).astype(np.float32)
                b = (b * gamma + beta).astype(np.float32)
                fused_affine = True
            x = node(
                "Conv",
                [x, const(w), const(b)],
                kernel_shape=[size, size],
                strides=[stride, stride],
                pads=[pad] * 4,
            )
            shape = (
                w.shape[0],
                (shape[1] + 2 * pad - size) // stride + 1,
                (shape[2] + 2 * pad - size) // stride + 1,
            )
        elif layer.kind == "affine":
            gamma = layer.params["gamma"].reshape(1, -1, 1, 1)
            beta = layer.params["beta"].reshape(1, -1, 1, 1)
            x = node("Add", [node("Mul", [x, const(gamma)]), const(beta)])
        elif layer.kind == "relu":
            x = node("Relu", [x])
        elif layer.kind in ("max_pool", "avg_pool"):
            size, stride, pad = layer.params["size"], layer.params["stride"], layer.params["pad"]
            if size == 0:  # avg_pool_everything
                x = node("GlobalAveragePool", [x])
                shape = (shape[0], 1, 1)
            else:
                op = "MaxPool" if layer.kind == "max_pool" else "AveragePool"
                x = node(op, [x], kernel_shape=[size, size], strides=[stride, stride], pads=[pad] * 4)
                shape = (
                    shape[0],
                    (shape[1] + 2 * pad - size) // stride + 1,
                    (shape[2] + 2 * pad - size) // stride + 1,
                )
        elif layer.kind == "add_prev":
            other, other_shape = saved.get("tag2") or saved["tag1"]
            target = (
                max(shape[0], other_shape[0]),
                max(shape[1], other_shape[1]),
                max(shape[2], other_shape[2]),
            )
            x = node(
                "Add",
                [_pad_to(node, const, x, shape, target), _pad_to(node, const, other, other_shape, target)],
            )
            shape = target
            saved.pop("tag2", None)
        elif layer.kind == "fc":
            x = node("Flatten", [x], axis=1)
            x = node("MatMul", [x, const(layer.params["w"])])
        previous_kind = layer.kind
    if previous_kind != "fc" or fused_affine or next(layer_iter, None) is not None:
        raise DlibModelFormatError("the network does not end in its fc layer")
    nodes[-1].output[0] = "descriptors"
    graph = helper.make_graph(
        nodes,
        "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["n", CHIP_SIZE, CHIP_SIZE, 3])],
        [helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["n", 128])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _pad_to(node: Any, const: Any, x: str, shape: tuple[int, int, int], target: tuple[int, int, int]) -> str:
    """Zero-pad ``x`` (N, C, H, W) at the end of C, H and W up to ``target`` (dlib's add_prev)."""
    if shape == target:
        return x
    pads = [0, 0, 0, 0, 0, target[0] - shape[0], target[1] - shape[1], target[2] - shape[2]]
    return node("Pad", [x, const(np.array(pads, np.int64), np.int64)], mode="constant")


class OnnxDescriptor:
    """Face descriptors from 150×150 aligned chips (``dlib.get_face_chip``), one onnxruntime thread."""

    def __init__(self, dat_path: Path, *, threads: int = 1) -> None:
        import onnxruntime

        from bot.faces.dlib_cache import resnet_onnx

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # EXTENDED, not ALL: the layout pass of ALL (NCHWc) makes ~1.3 ms/face faster convolutions but
        # keeps a re-laid-out copy of every weight, +47 MB in each worker; the 400 MiB budget of a
        # curation's process tree matters more. No arena either: its chunks outlive the batch.
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.enable_cpu_mem_arena = False
        try:
            self._session = onnxruntime.InferenceSession(
                resnet_onnx(dat_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception:  # onnxruntime raises its own types: a damaged cached graph, rebuild it
            self._session = onnxruntime.InferenceSession(
                resnet_onnx(dat_path, rebuild=True), options, providers=["CPUExecutionProvider"]
            )

    def compute(self, chips: list[np.ndarray]) -> np.ndarray:
        """(N, 128) float32 descriptors for N chips of 150×150×3 uint8."""
        if not chips:
            return np.zeros((0, 128), np.float32)
        batch = np.ascontiguousarray(np.stack(chips).astype(np.uint8, copy=False))
        (out,) = self._session.run(["descriptors"], {"chips": batch})
        return np.asarray(out, dtype=np.float32)


__all__ = [
    "CHIP_PADDING",
    "CHIP_SIZE",
    "DlibModelFormatError",
    "OnnxDescriptor",
    "build_onnx",
    "parse_dlib_resnet",
    "parse_dlib_resnet_bytes",
]
