"""The pulled SmolLM2-135M-Instruct folder is an ordinary checkpoint for training and the PyTorch runtime: an expert
trains on it (real chat template, system role kept), loads in ``Memory.from_pretrained``, and the base answers in English."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_expert_trains_on_smollm2_and_serves_through_memory(smollm2_dir, tmp_path):
    from memlora.corpus.dataset import render_prompt
    from memlora.distill.train import TrainConfig, load_tokenizer, train_expert
    from memlora.runtime.memory import Memory
    from memlora.runtime.prompts import MEMLORA_EXTRACTION_PROMPT, extraction_messages

    examples = []
    for i, (who, hobby) in enumerate([("Alice", "chess"), ("Bob", "tennis"), ("Carol", "golf")]):
        chat = [{"role": "user", "content": f"{who}: I play {hobby} every week."}]
        examples.append({"id": f"s-{i}", "stage": "extraction", "messages": extraction_messages(chat),
                         "target": json.dumps({"facts": [f"{who} plays {hobby}"]}), "source": "test"})
    tokenizer = load_tokenizer(smollm2_dir)
    prompt = render_prompt(tokenizer, examples[0]["messages"])
    assert prompt.startswith("<|im_start|>system\n" + MEMLORA_EXTRACTION_PROMPT.format() + "<|im_end|>\n<|im_start|>user\n")
    assert prompt.endswith("<|im_start|>assistant\n")

    config = TrainConfig(stage="extraction", target_modules=["q_proj", "v_proj"], rank=8, alpha=16, lr=1e-3,
                         batch_size=2, max_epochs=1, threads=2, progress=False)
    result = train_expert(smollm2_dir, examples[:2], examples[2:3], tmp_path / "out" / "extraction", config)
    assert (tmp_path / "out" / "extraction" / "adapter_config.json").is_file()
    assert result.epochs and result.best_val_loss is not None and result.best_val_loss < float("inf")

    memory = Memory.from_pretrained(str(smollm2_dir), adapters=str(tmp_path / "out"), store_dir=str(tmp_path / "mem"))
    try:
        assert "extraction" in memory.engine.adapters
        answer = memory.engine.generate([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=12)
        assert "Paris" in answer.text, answer.text
        expert = memory.engine.generate(examples[0]["messages"], adapter="extraction", max_new_tokens=8)
        assert expert.completion_tokens > 0
    finally:
        memory.close()
