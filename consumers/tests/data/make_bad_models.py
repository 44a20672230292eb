#!/usr/bin/env python3
"""Writes the broken models of consumers/tests/scorer_refusal.rs.

Each is the shipped models/hosp_risk/1.0.0/model.onnx (a skl2onnx
LinearClassifier: input `features` [N, 97], outputs `label` and
`probabilities` [N, 2]) with one defect, so that the metadata.json of
1.0.0 (version aside) no longer fits it:

  wrong_output_name.onnx   `probabilities` is called `probs`
  wrong_input_name.onnx    `features` is called `x`
  wrong_feature_count.onnx the input is [N, 96] (last coefficient dropped)
  nan_output.onnx          every probability is NaN
  out_of_range.onnx        every probability is 1 + p (in [1, 2])
  nan_when_onset_over_1000.onnx
                           like the shipped model, except that a row whose
                           column 95 (`case_onset_interval`) is at least
                           1000 gets NaN probabilities: the load-time probe
                           passes, scoring such a row gives NaN

The files are committed, so the tests need no Python; run this again
(python3 consumers/tests/data/make_bad_models.py, with `onnx` and
`onnxruntime` from ml/requirements.txt) only to change them. It checks each
output with onnxruntime before writing.
"""

from __future__ import annotations

import copy
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
SOURCE = REPO / "models" / "hosp_risk" / "1.0.0" / "model.onnx"
OUT = HERE / "bad_models"
N_FEATURES = 97
ONSET_COLUMN = 95


def base() -> onnx.ModelProto:
    return onnx.load(str(SOURCE))


def rename_output(m: onnx.ModelProto, old: str, new: str) -> None:
    for node in m.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
    for o in m.graph.output:
        if o.name == old:
            o.name = new


def rename_input(m: onnx.ModelProto, old: str, new: str) -> None:
    for node in m.graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
    for i in m.graph.input:
        if i.name == old:
            i.name = new


def wrong_output_name() -> onnx.ModelProto:
    m = base()
    rename_output(m, "probabilities", "probs")
    return m


def wrong_input_name() -> onnx.ModelProto:
    m = base()
    rename_input(m, "features", "x")
    return m


def wrong_feature_count() -> onnx.ModelProto:
    m = base()
    node = m.graph.node[0]
    for a in node.attribute:
        if a.name == "coefficients":
            per_class = np.array(a.floats, dtype=np.float32).reshape(-1, N_FEATURES)
            kept = per_class[:, : N_FEATURES - 1].reshape(-1)
            del a.floats[:]
            a.floats.extend(float(v) for v in kept)
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = N_FEATURES - 1
    return m


def post_process(m: onnx.ModelProto, nodes: list, inits: list) -> onnx.ModelProto:
    """Renames the classifier's `probabilities` to `raw` and appends `nodes`,
    which must compute `probabilities` from `raw` (and `features`)."""
    rename_output(m, "probabilities", "raw")
    # The graph output is `probabilities` again, now the last node's.
    for o in m.graph.output:
        if o.name == "raw":
            o.name = "probabilities"
    m.graph.node.extend(nodes)
    m.graph.initializer.extend(inits)
    return m


def scalar(name: str, value: float) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.FLOAT, [], [value])


def nan_output() -> onnx.ModelProto:
    return post_process(
        base(),
        [helper.make_node("Mul", ["raw", "nan"], ["probabilities"])],
        [scalar("nan", float("nan"))],
    )


def out_of_range() -> onnx.ModelProto:
    return post_process(
        base(),
        [helper.make_node("Add", ["raw", "one"], ["probabilities"])],
        [scalar("one", 1.0)],
    )


def nan_when_onset_over_1000() -> onnx.ModelProto:
    # probabilities = raw + 0 * log(1000 - x[:, 95:96]):
    # log of a number <= 0 is NaN or -inf, and 0 * either is NaN.
    nodes = [
        helper.make_node("Gather", ["features", "onset_col"], ["onset"], axis=1),
        helper.make_node("Sub", ["thousand", "onset"], ["room"]),
        helper.make_node("Log", ["room"], ["log_room"]),
        helper.make_node("Mul", ["log_room", "zero"], ["poison"]),
        helper.make_node("Add", ["raw", "poison"], ["probabilities"]),
    ]
    inits = [
        helper.make_tensor("onset_col", TensorProto.INT64, [1], [ONSET_COLUMN]),
        scalar("thousand", 1000.0),
        scalar("zero", 0.0),
    ]
    return post_process(base(), nodes, inits)


def fails_when_onset_over_1000() -> onnx.ModelProto:
    # probabilities = raw + 0 * table[int(x[:, 95:96])], table of 1000 zeros:
    # Gather refuses an index outside [-1000, 999] at run time.
    nodes = [
        helper.make_node("Gather", ["features", "onset_col"], ["onset"], axis=1),
        helper.make_node("Cast", ["onset"], ["onset_index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "onset_index"], ["looked_up"], axis=0),
        helper.make_node("Add", ["raw", "looked_up"], ["probabilities"]),
    ]
    inits = [
        helper.make_tensor("onset_col", TensorProto.INT64, [1], [ONSET_COLUMN]),
        helper.make_tensor("table", TensorProto.FLOAT, [1000], [0.0] * 1000),
    ]
    return post_process(base(), nodes, inits)


def probabilities(m: onnx.ModelProto, x: np.ndarray, input_name="features", output="probabilities"):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run([output], {input_name: x})[0]


def main() -> None:
    OUT.mkdir(exist_ok=True)
    rows = np.zeros((4, N_FEATURES), dtype=np.float32)
    rows[1, 0] = 1.0
    rows[2, ONSET_COLUMN] = 5000.0
    rows[3, ONSET_COLUMN] = -8.0
    good = probabilities(base(), rows)

    models = {
        "wrong_output_name": wrong_output_name(),
        "wrong_input_name": wrong_input_name(),
        "wrong_feature_count": wrong_feature_count(),
        "nan_output": nan_output(),
        "out_of_range": out_of_range(),
        "nan_when_onset_over_1000": nan_when_onset_over_1000(),
        "fails_when_onset_over_1000": fails_when_onset_over_1000(),
    }
    for name, m in models.items():
        m = copy.deepcopy(m)
        onnx.checker.check_model(m)
        m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        # Keep the graph's declared outputs only (no value_info noise).
        del m.graph.value_info[:]
        models[name] = m

    # What each one does, checked with onnxruntime.
    p = probabilities(models["wrong_output_name"], rows, output="probs")
    assert np.allclose(p, good)
    p = probabilities(models["wrong_input_name"], rows, input_name="x")
    assert np.allclose(p, good)
    p = probabilities(models["wrong_feature_count"], rows[:, : N_FEATURES - 1])
    assert p.shape == (4, 2)
    assert np.isnan(probabilities(models["nan_output"], rows)).all()
    p = probabilities(models["out_of_range"], rows)
    assert ((p >= 1.0) & (p <= 2.0)).all()
    p = probabilities(models["nan_when_onset_over_1000"], rows)
    assert np.isnan(p[2]).all(), p
    finite = [0, 1, 3]
    assert np.allclose(p[finite], good[finite]), p

    p = probabilities(models["fails_when_onset_over_1000"], rows[finite])
    assert np.allclose(p, good[finite]), p
    try:
        probabilities(models["fails_when_onset_over_1000"], rows)
    except Exception as e:  # onnxruntime's own exception types
        assert "out of" in str(e) or "bounds" in str(e), e
    else:
        raise AssertionError("a row with onset 5000 must fail")

    for name, m in models.items():
        path = OUT / f"{name}.onnx"
        path.write_bytes(m.SerializeToString())
        print(f"{path.relative_to(REPO)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
