"""TorchEngine on the tiny model with two real peft adapters: per-call switching gives exactly what peft gives with that one
adapter active (and the plain model for ``adapter=None``); bad adapters fail with ``AdapterError``."""

from __future__ import annotations

import json

import pytest
import torch

from memlora.errors import AdapterError, ImageError, MemloraError
from memlora.runtime.engine import Engine
from memlora.runtime.torch_engine import TorchEngine, resolve_adapter_dirs

MESSAGES = [
    {"role": "system", "content": "Extract and organize relevant details."},
    {"role": "user", "content": "Input:\nuser: John: Hi, my name is John. I am a software engineer.\n"},
]
N_TOKENS = 16


@pytest.fixture(scope="module")
def engine(tiny_model, tiny_adapters):
    return TorchEngine(tiny_model("qwen2"), tiny_adapters, threads=1)


@pytest.fixture(scope="module")
def reference(tiny_model, tiny_adapters):
    """Greedy ``generate`` of a fresh plain model / a fresh PeftModel holding only that adapter (cached per adapter)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = tiny_model("qwen2")
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    cache = {}

    def run(adapter, messages=MESSAGES, n=N_TOKENS):
        key = (adapter, json.dumps(messages), n)
        if key not in cache:
            model = AutoModelForCausalLM.from_pretrained(str(base_dir)).eval()
            if adapter is not None:
                model = PeftModel.from_pretrained(model, str(tiny_adapters / adapter)).eval()
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, -1]
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                     min_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            cache[key] = (out[0, ids.shape[1]:].tolist(), logits)
        return cache[key]

    return run


def test_is_an_engine_with_the_stage_adapters(engine):
    assert isinstance(engine, Engine)
    assert engine.adapters == ("extraction", "update")
    assert set(engine.model.peft_config) == {"expert_extraction", "expert_update"}  # loaded once, side by side


def test_adapters_really_differ(reference):
    """The fixture adapters change the model (so the parity test below can fail)."""
    logits = {a: reference(a)[1] for a in (None, "extraction", "update")}
    assert not torch.allclose(logits[None], logits["extraction"], atol=1e-3)
    assert not torch.allclose(logits[None], logits["update"], atol=1e-3)
    assert not torch.allclose(logits["extraction"], logits["update"], atol=1e-3)
    tokens = {a: tuple(reference(a)[0]) for a in (None, "extraction", "update")}
    assert len(set(tokens.values())) == 3


def test_switching_matches_peft_with_that_adapter_alone(engine, reference):
    # interleaved, so each switch (and the return to the base model) is exercised
    for adapter in ["extraction", None, "update", "extraction", "update", None]:
        generation = engine.generate(MESSAGES, adapter=adapter, max_new_tokens=N_TOKENS, min_new_tokens=N_TOKENS)
        expected, _ = reference(adapter)
        assert generation.token_ids == expected, adapter


def test_generation_fields(engine):
    generation = engine.generate(MESSAGES, adapter="update", max_new_tokens=8, min_new_tokens=8)
    assert generation.prompt_tokens == len(engine.render(MESSAGES))
    assert generation.completion_tokens == len(generation.token_ids) == 8
    assert not set(generation.token_ids) & engine.eos_ids  # EOS masked until min_new_tokens
    assert generation.text == engine.tokenizer.decode(generation.token_ids, skip_special_tokens=True)
    t = generation.timings
    assert t.prefill_s > 0 and t.decode_s > 0 and t.switch_s >= 0
    assert t.total_s >= t.prefill_s + t.decode_s


def test_stops_at_eos_like_generate(engine, reference):
    """Without a minimum, decoding ends at the first EOS (same token ids as transformers' greedy generate)."""
    from transformers import AutoTokenizer

    generation = engine.generate(MESSAGES, adapter="extraction", max_new_tokens=N_TOKENS)
    assert len(generation.token_ids) <= N_TOKENS
    eos_positions = [i for i, t in enumerate(generation.token_ids) if t in engine.eos_ids]
    assert eos_positions in ([], [len(generation.token_ids) - 1])
    tokenizer = AutoTokenizer.from_pretrained(str(engine.model_dir))
    assert tokenizer.eos_token_id in engine.eos_ids


def test_count_tokens(engine):
    text = "Name is John. Loves cheese pizza!"
    assert engine.count_tokens(text) == len(engine.tokenizer(text, add_special_tokens=False)["input_ids"]) > 0


def test_unknown_adapter_and_images(engine):
    with pytest.raises(AdapterError, match="unknown adapter 'generation'"):
        engine.generate(MESSAGES, adapter="generation", max_new_tokens=2)
    with pytest.raises(ImageError):
        engine.generate(MESSAGES, images=["photo.png"], max_new_tokens=2)
    # the failed calls changed nothing
    assert engine.generate(MESSAGES, adapter="extraction", max_new_tokens=4, min_new_tokens=4).completion_tokens == 4


def test_min_new_tokens_option_is_a_floor(tiny_model, tiny_adapters):
    # the engine's own minimum (forced-length benchmarks) is never lowered by a call's smaller one
    forced = TorchEngine(tiny_model("qwen2"), tiny_adapters, threads=1, min_new_tokens=6)
    assert forced.generate(MESSAGES, adapter="extraction", max_new_tokens=6, min_new_tokens=1).completion_tokens == 6


def test_adapter_for_another_base_is_rejected(tiny_model, tmp_path, random_adapter):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    other = tmp_path / "other-base"
    config = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=2048)
    Qwen2ForCausalLM(config).save_pretrained(str(other))
    adapter = random_adapter(other, tmp_path / "foreign", r=4, lora_alpha=8, target_modules=["q_proj"], seed=1)
    with pytest.raises(AdapterError, match="does not fit the base model"):
        TorchEngine(tiny_model("qwen2"), {"extraction": adapter})


@pytest.mark.parametrize("case", ["missing-dir", "no-config", "not-lora", "empty-out-dir", "bad-experts-json"])
def test_bad_adapter_dirs(case, tmp_path, tiny_adapters):
    if case == "missing-dir":
        arg = tmp_path / "nope"
    elif case == "no-config":
        (tmp_path / "x").mkdir()
        arg = {"extraction": tmp_path / "x"}
    elif case == "not-lora":
        (tmp_path / "ia3").mkdir()
        (tmp_path / "ia3" / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
        arg = {"extraction": tmp_path / "ia3"}
    elif case == "empty-out-dir":
        arg = tmp_path
    else:
        (tmp_path / "experts.json").write_text("{not json")
        arg = tmp_path
    with pytest.raises(AdapterError):
        resolve_adapter_dirs(arg)


def test_adapter_dir_forms(tiny_adapters, tmp_path):
    assert resolve_adapter_dirs(tiny_adapters) == {"extraction": tiny_adapters / "extraction", "update": tiny_adapters / "update"}
    assert resolve_adapter_dirs(tiny_adapters / "update") == {"update": tiny_adapters / "update"}
    assert resolve_adapter_dirs(None) == {}
    # experts.json decides names and paths when present
    (tmp_path / "experts.json").write_text(json.dumps(
        {"format": 1, "experts": {"generation": {"path": str(tiny_adapters / "extraction"), "prompt_set": "memlora"}}}
    ))
    assert resolve_adapter_dirs(tmp_path) == {"generation": tiny_adapters / "extraction"}


def test_missing_model_dir(tmp_path):
    with pytest.raises(MemloraError, match="no model"):
        TorchEngine(tmp_path)
