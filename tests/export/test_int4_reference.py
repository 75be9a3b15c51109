"""``int4_round_trip`` equals the weights the int4 bundle's MatMulNBits kernels dequantize (the builder's own output)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


def _dequantize_matmulnbits(model_path, node_name: str) -> np.ndarray:
    """The [N, K] float weight a symmetric 4-bit MatMulNBits node computes with (low nibble first, zero point 8)."""
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    node = next(n for n in model.graph.node if n.name == node_name)
    attrs = {a.name: a.i for a in node.attribute}
    n, k, block = attrs["N"], attrs["K"], attrs["block_size"]
    inits = {i.name: i for i in model.graph.initializer}
    packed = numpy_helper.to_array(inits[node.input[1]]).reshape(n, -1)
    scales = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32).reshape(n, -1)
    assert len(node.input) < 4 or not node.input[3], "symmetric bundles carry no zero points"
    q = np.empty((n, packed.shape[1] * 2), dtype=np.float32)
    q[:, 0::2], q[:, 1::2] = packed & 0x0F, packed >> 4
    blocks = (q - 8).reshape(n, -1, block) * scales[:, :, None]
    return blocks.reshape(n, -1)[:, :k]


def test_round_trip_matches_the_int4_bundle(bundles, tiny_model):
    from transformers import AutoModelForCausalLM

    from memlora.export.int4_reference import int4_round_trip

    bundle = bundles("qwen2-int4")
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model("qwen2")), dtype=torch.float32)
    onnx_model = onnx.load(str(bundle / "model" / "model.onnx"), load_external_data=False)
    names = [n.name for n in onnx_model.graph.node if n.op_type == "MatMulNBits"]
    down = next(n for n in names if "layers.0/" in n and "down_proj" in n)
    for node_name, weight in ((down, model.model.layers[0].mlp.down_proj.weight),):
        kernel = _dequantize_matmulnbits(bundle / "model" / "model.onnx", node_name)
        ours = int4_round_trip(weight).numpy()
        assert kernel.shape == ours.shape
        np.testing.assert_allclose(ours, kernel, rtol=0, atol=1e-6 * float(np.abs(kernel).max()))
        assert not np.allclose(ours, weight.detach().numpy(), atol=1e-4)  # the round trip did change the weight


def test_quantize_like_int4_bundle_changes_each_quantized_tensor_once(tiny_model):
    from transformers import AutoModelForCausalLM

    from memlora.export.int4_reference import int4_round_trip, quantize_like_int4_bundle

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model("qwen2")), dtype=torch.float32)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    changed = quantize_like_int4_bundle(model)
    linears = sum(1 for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in name)
    tied = model.get_input_embeddings().weight is model.get_output_embeddings().weight
    assert changed == linears + (1 if tied else 2)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight") or name.endswith(".bias"):
            assert torch.equal(p, before[name]), name  # norms and biases stay fp32 in the bundle
        elif p.dim() == 2:
            assert torch.equal(p, int4_round_trip(before[name])), name
