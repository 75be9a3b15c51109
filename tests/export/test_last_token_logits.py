"""The LM head on the last position only: same next-token logits as the full head, on ONNX Runtime GenAI, in fewer FLOPs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from memlora.errors import MemloraError
from memlora.export.cli import export_group
from memlora.export.last_token_logits import SLICE_NODE, rewrite_model_file


def _logits_dims(model_path) -> list:
    model = onnx.load(str(model_path), load_external_data=False)
    out = next(o for o in model.graph.output if o.name == "logits")
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in out.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def full_head_bundle(tiny_model, experts_dir, tmp_path_factory):
    """The session's fp32 ``qwen2`` bundle again, exported with ``--all-logits`` (the head on every position)."""
    out = tmp_path_factory.mktemp("all_logits") / "bundle"
    result = CliRunner().invoke(export_group, ["--base", str(tiny_model("qwen2")), "--adapters", str(experts_dir("qwen2")),
                                               "-o", str(out), "--precision", "fp32", "--all-logits", "--no-verify", "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


def test_default_export_slices_the_head_and_all_logits_keeps_it(bundles, full_head_bundle):
    pruned, full = bundles("qwen2"), full_head_bundle
    assert _logits_dims(pruned / "model" / "model.onnx")[1] == 1
    assert _logits_dims(full / "model" / "model.onnx")[1] == "sequence_length"
    assert json.loads((pruned / "bundle.json").read_text())["base"]["last_token_logits"] is True
    assert json.loads((full / "bundle.json").read_text())["base"]["last_token_logits"] is False
    nodes = {n.name for n in onnx.load(str(pruned / "model" / "model.onnx"), load_external_data=False).graph.node}
    assert SLICE_NODE in nodes


@pytest.mark.parametrize("adapter", [None, "extraction", "update", "generation"])
def test_same_greedy_logits_as_the_full_head_on_ort_genai(bundles, full_head_bundle, tiny_model, adapter):
    """Prefill of a multi-token prompt, then decode steps: ONNX Runtime GenAI takes the trimmed row as it is."""
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    from memlora.export.verify import chat_ids, ort_greedy

    ids = chat_ids(AutoTokenizer.from_pretrained(str(tiny_model("qwen2"))), "Alice moved to Lisbon last spring.")
    assert len(ids) > 8
    runs = []
    for bundle in (bundles("qwen2"), full_head_bundle):
        model = og.Model(str(bundle / "model"))
        adapters = None
        if adapter is not None:
            adapters = og.Adapters(model)
            adapters.load(str(bundle / "adapters" / f"{adapter}.onnx_adapter"), adapter)
        runs.append(ort_greedy(model, ids, 6, adapters, adapter))
    (pruned_logits, pruned_tokens), (full_logits, full_tokens) = runs
    assert pruned_logits.shape == full_logits.shape
    assert pruned_tokens == full_tokens
    np.testing.assert_allclose(pruned_logits, full_logits, atol=1e-5, rtol=0)


def _graph(tail_op: str | None, tmp_path):
    """hidden [b, s, 4] -> MatMul(W [4, 6]) -> (optional tail op) -> logits [b, s, 6], saved to a file."""
    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 6], np.arange(24, dtype=np.float32).tolist())
    nodes = [helper.make_node("MatMul", ["hidden", "W"], ["head"], name="/lm_head/MatMul")]
    if tail_op is None:
        nodes[0].output[0] = "logits"
    else:
        nodes.append(helper.make_node(tail_op, ["head"], ["logits"], name=f"/lm_head/{tail_op}"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["b", "s", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s", 6])], [w])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    return path


@pytest.mark.parametrize("tail_op", [None, "Tanh"])
def test_rewrite_gives_the_last_row_and_is_idempotent(tmp_path, tail_op):
    import onnxruntime as ort

    path = _graph(tail_op, tmp_path)
    x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"hidden": x})[0]
    assert rewrite_model_file(path) is True
    assert rewrite_model_file(path) is False  # already rewritten: left alone
    assert _logits_dims(path) == ["b", 1, 6]
    after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"hidden": x})[0]
    assert after.shape == (2, 1, 6)
    np.testing.assert_array_equal(after, before[:, -1:, :])


@pytest.mark.parametrize("tail_op, message", [
    ("Softmax", "unexpected Softmax node"),
    ("Identity", "unexpected Identity node"),
])
def test_an_unknown_head_is_one_error(tmp_path, tail_op, message):
    path = _graph(tail_op, tmp_path)
    with pytest.raises(MemloraError, match=message):
        rewrite_model_file(path)


def test_a_graph_without_logits_is_one_error(tmp_path):
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(MemloraError, match="no 'logits' output"):
        rewrite_model_file(path)
