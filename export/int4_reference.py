"""The base weights an int4 bundle runs on, in PyTorch: the builder's int4 round trip (quantize, then dequantize).

``memlora-export --precision int4`` (the ONNX Runtime GenAI builder, default symmetric RTN) stores every decoder
linear layer, the LM head and the embedding table as 4-bit blocks along the input dimension: per block of
``block_size`` values, ``scale = v / -8`` where ``v`` is the value of largest magnitude (sign kept), ``q = clamp(round(x
/ scale) + 8, 0, 15)`` and the weight the kernels see is ``(q - 8) * scale`` (MLAS ``MlasQuantizeBlockwise``).

``int4_round_trip`` reproduces that tensor, and ``quantize_like_int4_bundle`` puts it in place of a transformers model's
weights, so that an expert can be trained against the weights it will run on (``TrainConfig.base_int4_block``,
QLoRA-style): a LoRA expert's effect is small next to int4 noise, and an expert trained on fp32 weights alone can lose
its first decision (JSON or not) once the base is quantized.
"""

from __future__ import annotations

INT4_DEFAULT_BLOCK = 32
"""The builder's int4 block size when ``BuilderConfig.block_size`` is None (its default)."""


def int4_round_trip(weight, block_size: int = INT4_DEFAULT_BLOCK):
    """``weight`` [out, in] (a Linear's or an embedding table's) -> the same shape, each row's blocks of ``block_size``
    input values quantized to symmetric int4 and back, in float32 (a last short block is padded with zeros)."""
    import torch

    rows, cols = weight.shape
    padded = -(-cols // block_size) * block_size
    w = torch.zeros(rows, padded, dtype=torch.float32, device=weight.device)
    w[:, :cols] = weight.detach().float()
    blocks = w.view(rows, padded // block_size, block_size)
    index = blocks.abs().argmax(dim=-1, keepdim=True)
    scale = blocks.gather(-1, index) / -8.0
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.clamp(torch.round(blocks / safe) + 8, 0, 15)
    out = ((q - 8) * scale).view(rows, padded)[:, :cols]
    return out.contiguous()


def quantize_like_int4_bundle(model, block_size: int = INT4_DEFAULT_BLOCK) -> int:
    """Replace, in place, the weights the int4 builder quantizes (the decoder layers' linear layers, the LM head, the
    input embedding table) by their int4 round trip; returns how many tensors changed. Tied embeddings change once."""
    import torch

    tensors = [module.weight for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and ".layers." in name and "vision" not in name]
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None:
            tensors.append(module.weight)
    seen: set[int] = set()
    with torch.no_grad():
        for weight in tensors:
            if id(weight) in seen:
                continue
            seen.add(id(weight))
            weight.copy_(int4_round_trip(weight, block_size).to(weight.dtype))
    return len(seen)
