"""Test doubles and builders shared by the test modules (``from helpers import ...``; tests/conftest.py puts this folder
on ``sys.path``, and tests/android/android_golden.py does the same when it runs as a script).

- ``ScriptedEngine``: the runtime ``Engine`` protocol with scripted replies (a queue, then an optional reply function);
- ``FakeEmbedder``: the runtime ``Embedder`` protocol with deterministic vectors (MD5 bytes, or keyword indicators);
- ``counter`` / ``make_store``: a ``MemoryStore`` with deterministic ids and clock;
- ``shown_ids`` / ``shown_facts`` / ``add_every_fact``: what an update prompt shows, read the way a model reads it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memlora.errors import MemloraError
from memlora.runtime.engine import Generation
from memlora.runtime.store import MemoryStore

Reply = Callable[[list, "str | None"], str]


class ScriptedEngine:
    """An ``Engine`` without a model: each call returns the next item of ``queue`` (a string, or a function of the prompt
    messages, like a model reading its prompt); with the queue empty, ``reply(messages, adapter)``; with neither, the call
    fails with ``MemloraError``. Every call is recorded first in ``calls`` as a dict (messages, adapter, images,
    max_new_tokens, min_new_tokens). Token counts are whitespace words."""

    def __init__(self, adapters: Sequence[str] = ("extraction", "update", "generation"), supports_images: bool = False,
                 reply: Reply | None = None):
        self.adapters = tuple(adapters)
        self.supports_images = supports_images
        self.reply = reply
        self.queue: list[str | Callable[[list], str]] = []
        self.calls: list[dict[str, Any]] = []

    def generate(self, messages, adapter=None, images=None, max_new_tokens=128, **options) -> Generation:
        self.calls.append({"messages": messages, "adapter": adapter, "images": images, "max_new_tokens": max_new_tokens,
                           "min_new_tokens": options.get("min_new_tokens", 0)})
        if self.queue:
            item = self.queue.pop(0)
            text = item(messages) if callable(item) else item
        elif self.reply is not None:
            text = self.reply(messages, adapter)
        else:
            raise MemloraError("scripted engine: no output left for this call")
        return Generation(text, prompt_tokens=sum(len(m["content"].split()) for m in messages),
                          completion_tokens=len(text.split()))

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class FakeEmbedder:
    """An ``Embedder`` without a model. With ``keywords``: the indicator vector of the keywords a text contains (lower
    case) plus a constant 0.1, so ties keep the given order and a test can work out a ranking by hand (dim = keywords + 1).
    Without: the first ``dim`` bytes of the text's MD5, L2-normalised. Every text it encoded is kept in ``table``."""

    def __init__(self, dim: int = 8, keywords: Sequence[str] = ()):
        self.keywords = tuple(keywords)
        self.dim = len(self.keywords) + 1 if self.keywords else dim
        if not self.keywords and not 0 < self.dim <= 16:
            raise ValueError("an MD5 vector has at most 16 components")
        self.table: dict[str, list[float]] = {}

    def vector(self, text: str) -> np.ndarray:
        if self.keywords:
            return np.array([float(k in text.lower()) for k in self.keywords] + [0.1], dtype=np.float32)
        digest = hashlib.md5(text.encode("utf-8")).digest()
        v = np.array([(b - 127.5) / 127.5 for b in digest[: self.dim]], dtype=np.float32)
        return v / np.linalg.norm(v)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            v = self.vector(text)
            self.table[text] = v.tolist()
            rows.append(v)
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)


def counter(fmt: str, start: int = 1) -> Callable[[], str]:
    """``fmt % n`` for n = start, start + 1, ... (deterministic ids and clocks)."""
    state = {"n": start - 1}

    def next_value() -> str:
        state["n"] += 1
        return fmt % state["n"]

    return next_value


def make_store(path: str | Path | None = None, dim: int = 384, *, ids: str | Callable[[], str] = "mem-%04d",
               clock: str | Callable[[], str] = "2025-01-01T00:00:%02d+00:00", first_id: int = 1, first_tick: int = 0,
               **kwargs) -> MemoryStore:
    """A real ``MemoryStore`` (in memory when ``path`` is None) with deterministic ids and clock: a format string counts
    from ``first_id`` / ``first_tick``; a callable is used as it is."""
    id_factory = counter(ids, first_id) if isinstance(ids, str) else ids
    clock_fn = counter(clock, first_tick) if isinstance(clock, str) else clock
    return MemoryStore(path, dim=dim, id_factory=id_factory, clock=clock_fn, **kwargs)


def shown_ids(messages) -> dict[str, str]:
    """text -> small id of the memories the update prompt shows (what a model reads)."""
    match = re.search(r"Old memories: (\[.*?\])\. New retrieved facts: ", messages[-1]["content"], re.DOTALL)
    return {m["text"]: m["id"] for m in json.loads(match.group(1))}


def shown_facts(messages) -> list[str]:
    """The new facts the update prompt shows."""
    match = re.search(r"New retrieved facts: (\[.*?\])\. Return memory update", messages[-1]["content"], re.DOTALL)
    return json.loads(match.group(1))


def add_every_fact(messages) -> str:
    """An update stage's reply that ADDs every new fact its prompt shows."""
    return json.dumps({"memory": [{"id": str(i), "text": f, "event": "ADD"} for i, f in enumerate(shown_facts(messages))]})


def run_memlora(args: list[str]) -> tuple[int, str, str]:
    """Run ``memlora <args>`` the way the console script does (through ``run_cli``), capturing exit code, stdout and stderr."""
    from click.testing import CliRunner  # the CLI and click stay off the import path of the tests that do not run it

    from memlora import cli as memlora_cli

    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        try:
            memlora_cli.main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue().decode(), err.getvalue().decode()


def make_lora(base_dir: Path, out_dir: Path, modules, rank: int, seed: int = 0, **lora_kwargs) -> Path:
    """A real peft LoRA adapter dir with random, non-zero A and B (so the expert visibly changes the logits)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    kwargs = dict(r=rank, lora_alpha=2 * rank, target_modules=list(modules), lora_dropout=0.0)
    kwargs.update(lora_kwargs)
    peft_model = get_peft_model(model, LoraConfig(**kwargs))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.1)
    peft_model.save_pretrained(str(out_dir))
    return out_dir
