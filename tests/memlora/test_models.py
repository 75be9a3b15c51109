"""Synthetic models: tiny ones load, generate and take a LoRA; rebuilds are byte-identical; real shapes have the published sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from memlora.errors import MemloraError
from memlora.models import (
    CHAT_TEMPLATE,
    SIZES,
    TEXT_ARCHS,
    build_model,
    build_tokenizer,
    ensure_model,
    model_cache_key,
    parameter_count,
    resolve_shape,
)

from helpers import run_memlora

torch.set_num_threads(2)


@pytest.mark.parametrize("arch", TEXT_ARCHS)
def test_tiny_model_loads_generates_and_takes_a_lora(tiny_model, arch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model(arch)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    assert model.config.model_type == arch
    assert model.config.vocab_size == len(tok)

    prompt = tok.apply_chat_template([{"role": "user", "content": "Maya: I moved to Porto last week."}],
                                     add_generation_prompt=True, return_dict=True, return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    assert isinstance(tok.decode(out[0, prompt["input_ids"].shape[1]:]), str)

    with torch.no_grad():
        base_logits = model(**prompt).logits
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    names = [n for n, _ in lora.named_parameters() if "lora_B" in n]
    assert len(names) == 2 * model.config.num_hidden_layers  # q and v in every layer
    with torch.no_grad():
        assert torch.equal(lora(**prompt).logits, base_logits)  # B = 0 at init: the adapter starts as a no-op
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
        assert not torch.allclose(lora(**prompt).logits, base_logits)
    loss = lora(**prompt, labels=prompt["input_ids"]).loss
    loss.backward()
    assert all(p.grad is not None for n, p in lora.named_parameters() if "lora_A" in n)


@pytest.mark.parametrize("arch", TEXT_ARCHS)
def test_rebuild_with_same_seed_is_byte_identical(tmp_path, arch):
    first = build_model(arch, "tiny", tmp_path / "a", seed=7)
    again = build_model(arch, "tiny", tmp_path / "b", seed=7)
    other = build_model(arch, "tiny", tmp_path / "c", seed=8)
    files = sorted(p.name for p in first.iterdir())
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    assert files == sorted(p.name for p in again.iterdir())
    for name in files:
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    assert (first / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()
    assert (first / "tokenizer.json").read_bytes() == (other / "tokenizer.json").read_bytes()


# Published parameter counts of the real models (model cards / safetensors metadata); tied embeddings counted once.
PUBLISHED = [
    ("qwen2", "qwen2.5-0.5b", 494_032_768, dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                                                intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True)),
    ("qwen2", "qwen2.5-1.5b", 1_543_714_304, dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                                                  intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True)),
    ("gemma2", "gemma2-2b", 2_614_341_888, dict(hidden_size=2304, num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                                                head_dim=256, intermediate_size=9216, vocab_size=256000, tie_word_embeddings=True)),
]


@pytest.mark.parametrize("arch,size,expected,fields", PUBLISHED, ids=[p[1] for p in PUBLISHED])
def test_real_shapes_have_published_parameter_counts(arch, size, expected, fields):
    shape = resolve_shape(arch, size)
    for key, value in fields.items():
        assert shape.fields[key] == value, key
    assert parameter_count(arch, size) == expected


def test_qwen_real_shape_rope_and_positions():
    fields = resolve_shape("qwen2", "qwen2.5-0.5b").fields
    assert fields["rope_parameters"]["rope_theta"] == 1_000_000.0
    assert fields["max_position_embeddings"] == 32768


def test_tokenizer_renders_chatml_and_keeps_specials_whole(tmp_path):
    tok = build_tokenizer(tmp_path)
    messages = [{"role": "system", "content": "Extract facts."}, {"role": "user", "content": 'Maya: {"facts": ["Lives in Porto"]}'}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nExtract facts.<|im_end|>\n"
                    '<|im_start|>user\nMaya: {"facts": ["Lives in Porto"]}<|im_end|>\n<|im_start|>assistant\n')
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text  # byte-level BPE round-trips
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(tok(special)["input_ids"]) == 1
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHAT_TEMPLATE
    # digits split one by one; every byte is encodable (no unknown token)
    assert tok.convert_ids_to_tokens(tok("2024")["input_ids"]) == ["2", "0", "2", "4"]
    assert tok.decode(tok("naïve café 😀")["input_ids"]) == "naïve café 😀"


def test_generation_config_stops_on_im_end(tiny_model):
    path = tiny_model("qwen2")
    gen = json.loads((path / "generation_config.json").read_text())
    tok = json.loads((path / "tokenizer.json").read_text())
    ids = {t["content"]: t["id"] for t in tok["added_tokens"]}
    assert gen["eos_token_id"][0] == ids["<|im_end|>"]
    assert gen["pad_token_id"] == ids["<|endoftext|>"]


def test_ensure_model_caches_and_a_failed_build_leaves_nothing(tmp_path, monkeypatch):
    import memlora.models as models

    monkeypatch.setenv("MEMLORA_CACHE", str(tmp_path))
    calls = []
    real_build = models.build_model

    def killed_build(arch, size, out_dir, seed=0, dtype="float32"):
        calls.append(out_dir)
        (Path(out_dir) / "config.json").write_text("{}")  # half-written, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "build_model", killed_build)
    with pytest.raises(KeyboardInterrupt):
        ensure_model("llama", "tiny", seed=3)
    assert list((tmp_path / "models").iterdir()) == []

    def counted_build(*args, **kwargs):
        calls.append(args)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(models, "build_model", counted_build)
    path = ensure_model("llama", "tiny", seed=3)
    assert path.name == model_cache_key("llama", "tiny", 3)
    assert (path / "model.safetensors").is_file()
    assert ensure_model("llama", "tiny", seed=3) == path
    assert len(calls) == 2  # one killed build + one real build; the second ensure_model hit the cache
    assert [p.name for p in (tmp_path / "models").iterdir()] == [path.name]


@pytest.mark.parametrize("arch,size,message", [
    ("gpt9", "tiny", "unknown arch 'gpt9'"),
    ("qwen2", "huge", "unknown size 'huge'"),
    ("gemma2", "qwen2.5-0.5b", "is a shape of arch qwen2"),
])
def test_resolve_shape_rejects_bad_names(arch, size, message):
    with pytest.raises(MemloraError, match=message):
        resolve_shape(arch, size)


def test_make_model_cli_writes_a_model(tmp_path):
    code, out, err = run_memlora(["make-model", "--arch", "llama", "--size", "tiny", "--seed", "1", "-o", str(tmp_path / "m")])
    assert code == 0, err
    assert f"model written to {tmp_path / 'm'}" in out
    assert f"parameters: {parameter_count('llama', 'tiny'):,}" in out
    assert (tmp_path / "m" / "model.safetensors").is_file()


@pytest.mark.parametrize("args,message", [
    (["--arch", "gpt9"], "unknown arch 'gpt9'"),
    (["--size", "7b"], "unknown size '7b'"),
    (["--arch", "llama", "--size", "gemma2-2b"], "is a shape of arch gemma2"),
    (["-o", "{file}/sub"], "cannot write to output dir"),
    (["-o", "{nonempty}"], "is not empty"),
])
def test_make_model_cli_bad_input_is_one_clear_line(tmp_path, args, message):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    nonempty = tmp_path / "full"
    nonempty.mkdir()
    (nonempty / "keep.txt").write_text("mine")
    args = [a.format(file=blocker, nonempty=nonempty) for a in args]
    code, out, err = run_memlora(["make-model", *args])
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err + out
    assert (nonempty / "keep.txt").read_text() == "mine"  # nothing lost


@pytest.mark.parametrize("size", sorted(SIZES))
def test_every_size_is_listed_in_make_model_help(size):
    code, out, _ = run_memlora(["make-model", "--help"])
    assert code == 0 and size in out
