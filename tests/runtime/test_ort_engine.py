"""OrtGenAIEngine on a real exported bundle: parity with TorchEngine + peft, the loop on it, bad input, ``memlora chat``.

The bundle is the bench's tiny fp32 one (``memlora.bench.bench_bundles``: tiny Qwen2 + three real peft experts with random,
non-zero B — q,v r16 for extraction/update, all linear r16 for generation — exported by ``memlora.export``), built once and
cached like the tiny models.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from memlora.errors import AdapterError, BundleError, ImageError

from helpers import make_store

MESSAGES = [
    [{"role": "system", "content": "Extract facts. Strictly JSON."}, {"role": "user", "content": "Input: I adopted a dog named Rex."}],
    [{"role": "user", "content": "Maya: Hi Jonas! 12 apples, café ünïcödé 😀\n\n  spaced"}],
    [{"role": "user", "content": "Old memories: []. New facts: [\"Likes pottery\"]", "name": None}],
]
ADAPTERS = [None, "extraction", "update", "generation"]


@pytest.fixture(scope="module")
def bench_tiny():
    from memlora.bench.bench_bundles import ensure_bench_bundles

    return ensure_bench_bundles("qwen2", "tiny", precision="fp32", variants=("multilora", "merged"), quiet=True)


@pytest.fixture(scope="module")
def bundle(bench_tiny) -> Path:
    return bench_tiny.bundles["multilora"]


@pytest.fixture(scope="module")
def ort(bundle):
    from memlora.runtime.ort_engine import OrtGenAIEngine

    return OrtGenAIEngine(bundle, threads=1, prefix_cache=False)


@pytest.fixture(scope="module")
def ort_cached(bundle):
    from memlora.runtime.ort_engine import OrtGenAIEngine

    return OrtGenAIEngine(bundle, threads=1, prefix_cache=True)


@pytest.fixture(scope="module")
def torch_engine(bench_tiny):
    from memlora.runtime.torch_engine import TorchEngine

    return TorchEngine(bench_tiny.base_dir, bench_tiny.adapters_dir, threads=1)


@pytest.fixture(scope="module")
def embedder(ort):
    from memlora.runtime.ort_engine import bundle_embedder

    return bundle_embedder(ort.bundle, threads=1)


def test_engine_loads_every_expert_and_the_chat_template_matches_transformers(ort, torch_engine):
    import onnxruntime_genai as og

    assert set(ort.adapters) == {"extraction", "update", "generation"} == set(torch_engine.adapters)
    native = og.Tokenizer(ort.base_model)
    for messages in MESSAGES:
        assert ort.render(messages) == torch_engine.render(messages)
        clean = [{k: v for k, v in m.items() if v is not None} for m in messages]
        assert native.apply_chat_template(json.dumps(clean), add_generation_prompt=True) == ort.chat_template.render(messages)
    assert ort.count_tokens("café 😀 Rex") == torch_engine.count_tokens("café 😀 Rex")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_generation_is_identical_to_torch_and_peft(ort, ort_cached, torch_engine, adapter):
    outputs = []
    for messages in MESSAGES:
        a = ort.generate(messages, adapter=adapter, max_new_tokens=12)
        b = torch_engine.generate(messages, adapter=adapter, max_new_tokens=12)
        c = ort_cached.generate(messages, adapter=adapter, max_new_tokens=12)  # rewinds to the shared prefix (the default)
        assert a.token_ids == b.token_ids == c.token_ids
        assert a.text == b.text == c.text
        assert a.prompt_tokens == b.prompt_tokens and a.completion_tokens == len(a.token_ids) == 12
        assert a.timings.total_s >= a.timings.prefill_s + a.timings.decode_s + a.timings.switch_s - 1e-6
        outputs.append(tuple(a.token_ids))
    if adapter is not None:  # different prompts, different outputs: the comparison is not vacuous
        assert len(set(outputs)) > 1


def test_each_expert_changes_the_output(ort):
    outs = {adapter: tuple(ort.generate(MESSAGES[0], adapter=adapter, max_new_tokens=8).token_ids) for adapter in ADAPTERS}
    assert len(set(outs.values())) == len(ADAPTERS)


def test_merged_experts_are_served_by_their_own_model(bench_tiny, torch_engine):
    from memlora.runtime.ort_engine import OrtGenAIEngine

    merged = OrtGenAIEngine(bench_tiny.bundles["merged"], threads=1, prefix_cache=False)
    assert all(e.mode == "merged" for e in merged.bundle.experts.values())
    for adapter in ADAPTERS:
        got = merged.generate(MESSAGES[1], adapter=adapter, max_new_tokens=10)
        assert got.token_ids == torch_engine.generate(MESSAGES[1], adapter=adapter, max_new_tokens=10).token_ids


def test_min_new_tokens_ignores_eos_and_the_budget_caps(ort, torch_engine):
    a = ort.generate(MESSAGES[0], adapter="update", max_new_tokens=40, min_new_tokens=40)
    b = torch_engine.generate(MESSAGES[0], adapter="update", max_new_tokens=40, min_new_tokens=40)
    assert a.completion_tokens == 40 and a.token_ids == b.token_ids
    assert not set(a.token_ids) & ort.eos_ids


def _scripted(memory):
    """A fixed add/answer sequence; returns everything it produced."""
    from memlora.corpus.locomo import ingestion_batches, load_locomo
    from memlora.paths import data_file

    conv = load_locomo(data_file("sample_conversation.json"))[0]
    trace = []
    for batch in list(ingestion_batches(conv))[:3]:
        result = memory.add(batch.messages, user_id=batch.user_id, timestamp=batch.timestamp)
        trace.append(("add", result.facts, [e.to_dict() for e in result.events], [(r.item, r.reason) for r in result.rejected],
                      {stage: g.text for stage, g in result.generations.items()}))
    for qa in conv.qa[:2]:
        answer = memory.answer(qa.question, user_id=conv.speaker_a)
        trace.append(("answer", answer.text, answer.generation.token_ids))
    return trace


def _tables(store, users):
    memories = [(r.id, r.user_id, r.text, r.timestamp, r.source_ids) for u in users for r in store.get_all(u)]
    rejections = [(r.batch, r.user_id, json.dumps(r.item, sort_keys=True, default=str), r.reason) for r in store.rejections()]
    return memories, rejections


def _memory(engine, embedder, path):
    from memlora.runtime.memory import Memory, MemoryConfig

    store = make_store(path, embedder.dim, ids="m%d", first_id=0, clock=lambda: "2024-01-01T00:00:00+00:00")
    config = MemoryConfig(max_new_tokens={"extraction": 24, "update": 24, "generation": 12})
    return Memory(engine, embedder, store, config)


def test_the_same_scripted_loop_on_both_engines_gives_the_same_texts_and_tables(ort, ort_cached, torch_engine, embedder, tmp_path):
    users = ["Maya", "Jonas"]
    with _memory(ort, embedder, tmp_path / "ort") as on_ort, _memory(torch_engine, embedder, tmp_path / "torch") as on_torch, \
            _memory(ort_cached, embedder, tmp_path / "cached") as on_cached:
        trace_ort, trace_torch, trace_cached = _scripted(on_ort), _scripted(on_torch), _scripted(on_cached)
        assert trace_ort == trace_torch == trace_cached
        assert _tables(on_ort.store, users) == _tables(on_torch.store, users) == _tables(on_cached.store, users)
        # random-weight experts write unusable output: the loop records it instead of breaking
        assert _tables(on_ort.store, users)[1]


def test_memory_from_bundle_uses_the_bundle_embedder_and_budgets(bundle, tmp_path):
    from memlora.runtime.embedder import OnnxEmbedder
    from memlora.runtime.memory import Memory

    with Memory.from_bundle(str(bundle), store_dir=str(tmp_path / "store"), threads=1) as memory:
        assert isinstance(memory.embedder, OnnxEmbedder) and memory.embedder.dim == 384
        manifest = json.loads((bundle / "bundle.json").read_text())
        assert memory.config.max_new_tokens["update"] == manifest["experts"]["update"]["generation"]["max_new_tokens"]
        assert memory.stage_adapters == {"extraction": "extraction", "update": "update", "generation": "generation", "vqa": None}
        result = memory.add("I adopted a dog named Rex.", user_id="alice")
        assert result.generations["extraction"].completion_tokens > 0


@pytest.mark.parametrize("sets, given, expected", [
    ({}, None, "memlora"),  # the exporter's default
    ({"extraction": "memlora-textfirst", "update": "memlora-textfirst", "generation": "memlora-textfirst"}, None, "memlora-textfirst"),
    ({"update": "memlora-textfirst"}, None, "memlora"),  # the experts disagree: the config's default
    ({"extraction": "memlora-textfirst", "update": "memlora-textfirst", "generation": "memlora-textfirst"}, "memlora", "memlora"),
])
def test_memory_from_bundle_renders_with_the_prompt_set_its_experts_share(bundle, tmp_path, sets, given, expected):
    """The manifest records each expert's prompt set; the loop renders every stage with the one they share (the
    Android bridge's ``Memory.open`` does the same, see the manifest golden cases)."""
    from memlora.runtime.memory import Memory

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "bundle.json").read_text())
    for stage, prompt_set in sets.items():
        manifest["experts"][stage]["prompt_set"] = prompt_set
    (copy / "bundle.json").write_text(json.dumps(manifest))
    config = {} if given is None else {"prompt_set": given}
    with Memory.from_bundle(str(copy), threads=1, verify=False, **config) as memory:
        assert memory.config.prompt_set == expected


def _seeded_store(bundle, path) -> str:
    """A store on disk with one memory; returns the sha256 of its files."""
    from memlora.runtime.memory import Memory
    from memlora.runtime.update import ResolvedOp

    with Memory.from_bundle(str(bundle), store_dir=str(path), threads=1, verify=False) as memory:
        memory.store.apply_update("alice", [ResolvedOp("ADD", None, "Has a dog named Rex")],
                                  {"Has a dog named Rex": memory.embedder.encode(["Has a dog named Rex"])[0]})
    return _digest(path)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    for item in sorted(path.rglob("*")):
        if item.is_file():
            digest.update(item.name.encode() + item.read_bytes())
    return digest.hexdigest()


def _corrupt_adapter(root: Path) -> None:
    target = root / "adapters" / "update.onnx_adapter"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))


def _drop_expert_file(root: Path) -> None:
    (root / "adapters" / "generation.onnx_adapter").unlink()


def _break_manifest(root: Path) -> None:
    (root / "bundle.json").write_text("{not json")


@pytest.mark.parametrize("damage, message", [
    (_corrupt_adapter, "sha256"),
    (_drop_expert_file, "missing"),
    (_break_manifest, "not valid JSON"),
])
def test_a_corrupt_bundle_is_refused_and_the_store_is_untouched(bundle, tmp_path, damage, message):
    from memlora.runtime.memory import Memory

    store = tmp_path / "store"
    before = _seeded_store(bundle, store)
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    damage(broken)
    with pytest.raises(BundleError, match=message):
        Memory.from_bundle(str(broken), store_dir=str(store), threads=1)
    assert _digest(store) == before


def test_a_missing_expert_and_an_image_give_clear_errors_and_the_store_is_untouched(bundle, ort, tmp_path):
    from memlora.runtime.memory import Memory

    store = tmp_path / "store"
    before = _seeded_store(bundle, store)
    with pytest.raises(AdapterError, match="vqa"):
        Memory.from_bundle(str(bundle), store_dir=str(store), threads=1, verify=False, stage_adapters={"generation": "vqa"})
    assert _digest(store) == before
    with pytest.raises(AdapterError, match="unknown adapter 'vqa'"):
        ort.generate(MESSAGES[0], adapter="vqa")
    with pytest.raises(ImageError, match="text-only"):
        ort.generate(MESSAGES[0], adapter="generation", images=[np.zeros((4, 4, 3), dtype=np.uint8)])
    with Memory.from_bundle(str(bundle), store_dir=str(store), threads=1, verify=False) as memory:
        with pytest.raises(ImageError):
            memory.answer("What is in the picture?", user_id="alice", image=np.zeros((4, 4, 3), dtype=np.uint8))
        assert [r.text for r in memory.get_all("alice")] == ["Has a dog named Rex"]


def test_chat_remembers_across_runs(bundle, tmp_path):
    from click.testing import CliRunner

    from memlora.cli import chat
    from memlora.runtime.store import MemoryStore

    store = tmp_path / "chat-store"
    _seeded_store(bundle, store)
    args = ["--bundle", str(bundle), "--user", "alice", "--store", str(store), "--threads", "1", "--no-verify"]
    runner = CliRunner()

    first = runner.invoke(chat, args, input="I adopted a dog named Rex.\n/memories\n/quit\nnever read\n")
    assert first.exit_code == 0, first.output
    (memory_id, text), = [line.split("  ", 1) for line in first.stdout.splitlines() if "Has a dog named Rex" in line]
    assert text == "Has a dog named Rex"

    second = runner.invoke(chat, args, input=f"/memories\n/forget nope\n/forget {memory_id}\nWhat is my dog called?\n/memories\n")
    assert second.exit_code == 0, second.output
    assert f"{memory_id}  Has a dog named Rex" in second.stdout  # remembered from the first run
    assert "no memory 'nope'" in second.stdout and f"forgot {memory_id}" in second.stdout
    assert second.stdout.rstrip().endswith("(no memories yet)")

    with MemoryStore(store, dim=384) as reopened:  # both runs' chat lines went through the loop and left their trace
        assert reopened.get_all("alice") == [] and len(reopened.rejections("alice")) >= 2


def test_no_telemetry_files_are_written(bundle, tmp_path):
    import os
    import subprocess
    import sys

    code = (
        "from memlora.runtime.memory import Memory\n"
        f"m = Memory.from_bundle({str(bundle)!r}, threads=1, verify=False)\n"
        "m.answer('Where does Maya live?', user_id='alice')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env["HOME"] = str(tmp_path)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    assert not (tmp_path / ".cache" / "Microsoft").exists()
