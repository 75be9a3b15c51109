"""Learning test: the extraction expert trained on LoCoMo observation targets (train split) learn their output format on the tiny model.

The base is the tiny random qwen2 with its final RMSNorm gain raised from 1 to 8. With gain 1 and embeddings of
std 0.02 (tied output layer), logits are capped near |h| * |e| = 8 * 0.16 = 1.3 whatever the adapter does: no LoRA
can make any token more likely than ~0.2%, so no loss could ever halve. Gain 8 is still a random model (it answers
garbage: < 10% valid), but one whose output layer can express a confident prediction, as a pretrained model's can.
"""

from __future__ import annotations

import json

import pytest
import torch

from memlora.distill.locomo import load_locomo, split_conversations
from memlora.distill.observations import ObservationConfig, observation_examples
from memlora.distill.train import TrainConfig, encode_example, load_tokenizer, train_expert

MAX_TOKENS = {"extraction": 200}
KEYS = {"extraction": "facts", "update": "memory"}


def strictly_valid(stage: str, text: str) -> bool:
    """Strict JSON (no repair): ``{"facts": [str...]}`` or ``{"memory": [{"id", "text", "event"}...]}``."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return False
    if not isinstance(obj, dict) or set(obj) != {KEYS[stage]} or not isinstance(obj[KEYS[stage]], list):
        return False
    items = obj[KEYS[stage]]
    if stage == "extraction":
        return all(isinstance(f, str) for f in items)
    return all(isinstance(op, dict) and {"id", "text", "event"} <= set(op) for op in items)


@pytest.fixture(scope="module")
def sharp_tiny(tiny_model, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    src = tiny_model("qwen2")
    out = tmp_path_factory.mktemp("sharp-tiny")
    model = AutoModelForCausalLM.from_pretrained(str(src))
    with torch.no_grad():
        model.model.norm.weight.mul_(8.0)
    model.save_pretrained(str(out))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        if (src / name).exists():
            (out / name).write_bytes((src / name).read_bytes())
    return out


@pytest.fixture(scope="module")
def observation_data(locomo_path, minilm, sharp_tiny):
    convs = load_locomo(locomo_path)
    tok = load_tokenizer(sharp_tiny)

    def build(split, n_convs, max_batches):
        cfg = ObservationConfig(split=split, max_batches=max_batches, stages=("extraction",), empty_ratio=None)
        examples, _ = observation_examples(split_conversations(convs, split)[:n_convs], cfg, minilm)
        return {s: [e for e in ex if len(encode_example(tok, e)[0]) <= MAX_TOKENS[s]] for s, ex in examples.items()}

    return build("train", 2, 40), build("val", 1, 30)


@pytest.mark.locomo
@pytest.mark.parametrize("stage, n_train, epochs", [("extraction", 120, 4)])
def test_expert_learns_its_format_on_observation_targets(sharp_tiny, observation_data, tmp_path, stage, n_train, epochs):
    """Measured (2 cores, contended): val loss 10.02 -> 6.82 (-32%), >= 90% strictly valid vs 0% for the base. Sensitive
    to the data: trained on conv-26's first 70 pairs instead, the same settings give 0% valid (looping output). The
    update expert does NOT learn its format on this model in CI time (0% valid after 6 epochs): not asserted here."""
    from memlora.runtime.torch_engine import TorchEngine

    train_data, val_data = observation_data
    train, val = train_data[stage][:n_train], val_data[stage][:20]
    assert len(train) >= n_train // 2 and len(val) >= 8, (len(train), len(val))
    result = train_expert(sharp_tiny, train, val, tmp_path / stage,
                          TrainConfig(stage=stage, lr=1e-2, batch_size=8, max_epochs=epochs, patience=1, threads=2, progress=False))

    engine = TorchEngine(sharp_tiny, {stage: tmp_path / stage}, threads=2)
    trained = [engine.generate(ex["messages"], stage, max_new_tokens=96).text for ex in val]
    base = [engine.generate(ex["messages"], None, max_new_tokens=48).text for ex in val]
    valid = sum(strictly_valid(stage, t) for t in trained) / len(val)
    base_valid = sum(strictly_valid(stage, t) for t in base) / len(val)
    assert base_valid < 0.10, base[:3]
    assert valid >= 0.90, trained[:5]
    assert result.best_val_loss <= 0.75 * result.initial_val_loss, [e.val_loss for e in result.epochs]
