"""Face test fixtures: real photos analysed once per session with dlib, and tiny generated ONNX models
that insightface 2.1 routes as SCRFD + ArcFace, so its code path runs offline without weights.

The generated detector finds axis-aligned green squares (one box per square, 128 px in the 640 px
detection space); the generated recogniser's "identity" is the colour texture inside the square.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bot.faces.analysis import ImageAnalysis, analyse_image
from bot.faces.engines import DlibEngine, EngineSpec, FaceEngine, build_engine
from sim.testdata import TESTDATA_FACES

REPO_ROOT = Path(__file__).resolve().parents[2]
FACES = TESTDATA_FACES

# The fake detector boxes are 128 px at det size 640; on a 1024-wide image that is 204.8 px, placed on
# the stride-32 grid of the detection space: 51.2 px in the image.
CELL = 51.2
SQUARE = 205


@pytest.fixture(scope="session")
def analysed(dlib_engine: DlibEngine, faces_dir: Path) -> Callable[[str], ImageAnalysis]:
    """``analysed("obama/obama_1.jpg")``: the dlib analysis of a test photo, computed once per session."""
    cache: dict[str, ImageAnalysis] = {}

    def get(relative: str) -> ImageAnalysis:
        if relative not in cache:
            cache[relative] = analyse_image(dlib_engine, faces_dir / relative)
        return cache[relative]

    return get


# ------------------------------------------------------------------------------ generated ONNX models


def _make_detector(path: Path) -> None:
    """A 9-output SCRFD-shaped graph (strides 8/16/32, 2 anchors, with key points) that scores the
    top-left stride-32 cell of each green square and returns a fixed 128 px box with ArcFace's
    5-point template inside it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, values: object, dtype: type = np.float32) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)

    sharp = 10.0
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["cells"], kernel_shape=[32, 32], strides=[32, 32]),
        # "greenness" G - (R+B)/2 of each 32 px cell (input is (x-127.5)/128), squashed to 0..1
        helper.make_node("Conv", ["cells", "w_green", "b_green"], ["green_logit"]),
        helper.make_node("Sigmoid", ["green_logit"], ["green"]),
        # a cell that is green while its upper and left neighbours are not: a square's top-left corner
        helper.make_node("Conv", ["green", "w_corner", "b_corner"], ["corner_logit"], pads=[1, 1, 0, 0]),
        helper.make_node("Sigmoid", ["corner_logit"], ["map32"]),
    ]
    inits = [
        const("w_green", np.array([-0.5, 1.0, -0.5]).reshape(1, 3, 1, 1) * sharp),
        const("b_green", [-sharp]),
        const("w_corner", np.array([[0.0, -1.0], [-1.0, 1.0]]).reshape(1, 1, 2, 2) * sharp),
        const("b_corner", [-0.5 * sharp]),
        const("zero", [0.0]),
        const("rows", [-1, 1], np.int64),
        const("first", [0], np.int64),
        const("one", [1], np.int64),
    ]
    template = np.array(
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
    ) * (128.0 / 112.0)
    outputs: dict[str, list[str]] = {"score": [], "bbox": [], "kps": []}
    for stride in (8, 16, 32):
        if stride == 32:
            source = "map32"
        else:  # the finer heads never fire: zeros shaped like their grid
            nodes += [
                helper.make_node(
                    "AveragePool",
                    ["input.1"],
                    [f"p{stride}"],
                    kernel_shape=[stride] * 2,
                    strides=[stride] * 2,
                ),
                helper.make_node("Slice", [f"p{stride}", "first", "one", "one"], [f"c{stride}"]),
                helper.make_node("Mul", [f"c{stride}", "zero"], [f"map{stride}"]),
            ]
            source = f"map{stride}"
        score = f"score_{stride}"
        nodes += [
            helper.make_node("Transpose", [source], [f"t{stride}"], perm=[0, 2, 3, 1]),
            helper.make_node("Mul", [f"t{stride}", "zero"], [f"z{stride}"]),
            # two anchors per cell; only the first one scores
            helper.make_node("Concat", [f"t{stride}", f"z{stride}"], [f"a{stride}"], axis=3),
            helper.make_node("Reshape", [f"a{stride}", "rows"], [score]),
            helper.make_node("Mul", [score, "zero"], [f"zero_rows{stride}"]),
            helper.make_node("Add", [f"zero_rows{stride}", f"box{stride}"], [f"bbox_{stride}"]),
            helper.make_node("Add", [f"zero_rows{stride}", f"kp{stride}"], [f"kps_{stride}"]),
        ]
        inits += [
            const(f"box{stride}", np.array([[0.0, 0.0, 128.0, 128.0]]) / stride),
            const(f"kp{stride}", template.reshape(1, 10) / stride),
        ]
        outputs["score"].append(score)
        outputs["bbox"].append(f"bbox_{stride}")
        outputs["kps"].append(f"kps_{stride}")
    widths = {"score": 1, "bbox": 4, "kps": 10}
    graph_outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"n{name.rsplit('_', 1)[1]}", widths[kind]])
        for kind in ("score", "bbox", "kps")
        for name in outputs[kind]
    ]
    graph = helper.make_graph(
        nodes,
        "green_square_detector",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        graph_outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _make_recogniser(path: Path, dim: int = 512) -> None:
    """ArcFace-shaped (1×3×112×112 → 512): 8×8 pooled colours minus their mean, randomly projected."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    projection = np.random.default_rng(0).standard_normal((192, dim)) / np.sqrt(192)
    nodes = [
        helper.make_node(
            "AveragePool", ["input.1"], ["pooled"], kernel_shape=[14, 14], strides=[14, 14], name="pool"
        ),
        helper.make_node("ReduceMean", ["pooled"], ["mean"], axes=[2, 3], keepdims=1, name="mean"),
        # node names must not start with Sub/Mul, or insightface switches to MXNet normalisation
        helper.make_node("Sub", ["pooled", "mean"], ["centred"], name="centre"),
        helper.make_node("Flatten", ["centred"], ["flat"], axis=1, name="flatten"),
        helper.make_node("MatMul", ["flat", "projection"], ["embedding"], name="project"),
    ]
    graph = helper.make_graph(
        nodes,
        "texture_recogniser",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        [numpy_helper.from_array(projection.astype(np.float32), "projection")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


@pytest.fixture(scope="session")
def fake_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model-pack directory named like the real one, holding the two generated models."""
    pack = tmp_path_factory.mktemp("face_models") / "buffalo_l"
    pack.mkdir()
    _make_detector(pack / "det_10g.onnx")
    _make_recogniser(pack / "w600k_r50.onnx")
    return pack


@pytest.fixture(scope="session")
def fake_engine(fake_pack: Path) -> FaceEngine:
    return build_engine(EngineSpec("insightface", fake_pack, ("CPUExecutionProvider",)))


def synthetic_photo(
    squares: list[tuple[int, int, int]],
    *,
    size: tuple[int, int] = (1024, 768),
    noise_seed: int = 0,
    variant: int | None = None,
) -> bytes:
    """A BMP of grey noise with green "faces": (cell_x, cell_y, identity_seed) per square.

    A square's identity is a seeded 4×4 texture in its red and blue channels; ``variant`` adds a
    seeded perturbation (another photo of the same "person": similar, not identical).
    """
    import io

    import cv2
    from PIL import Image

    width, height = size
    rng = np.random.default_rng(noise_seed)
    image = rng.integers(70, 141, size=(height, width, 3), dtype=np.uint8)
    for cell_x, cell_y, identity in squares:
        x, y = round(cell_x * CELL), round(cell_y * CELL)
        texture = np.random.default_rng(1000 + identity).integers(0, 100, size=(4, 4, 2)).astype(np.int16)
        if variant is not None:
            texture += (
                np.random.default_rng(5000 + variant).integers(-40, 41, size=(4, 4, 2)).astype(np.int16)
            )
        texture = np.clip(texture, 0, 140).astype(np.uint8)
        big = cv2.resize(texture, (SQUARE, SQUARE), interpolation=cv2.INTER_NEAREST)
        patch = np.empty((SQUARE, SQUARE, 3), dtype=np.uint8)
        patch[:, :, 0], patch[:, :, 1], patch[:, :, 2] = big[:, :, 0], 255, big[:, :, 1]
        image[y : y + SQUARE, x : x + SQUARE] = patch
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="BMP")  # fast to encode; lossless
    return buffer.getvalue()


@pytest.fixture(scope="session")
def make_photo() -> Callable[..., bytes]:
    return synthetic_photo
