"""Python's ``Memory.from_bundle`` on a real bundle, recorded for the Java bridge to reproduce (``BundleLoopParity``).

``write_bundle_loop(bundle_dir, script, out_dir)`` runs the loop on ONNX Runtime GenAI and writes ``bundle_loop.json``:
the config, every step's result (facts, events, tagged rejections, retrieved ids; answers with their memories) and,
per engine call, the messages, adapter, budget, the prompt text (Jinja), its token ids, the generated token ids and the
decoded text; the store state after each step; and the vectors the embedder gave (a deterministic MD5 table, so the
Java side embeds the same texts to the same vectors; the exported ONNX embedder runs on ONNX Runtime's core Java API,
which has no host build here).

The store gets deterministic ids and clock (``id_factory`` / ``clock``), as in the golden loop session.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from android_golden import FORMAT, _hits, _rejections, jsonable

from helpers import FakeEmbedder, make_store

THREADS = 1
"""Decoder threads on both sides (the Java engine applies them through ``Config.overlay``)."""
MIN_NEW_TOKENS = {"extraction": 1, "update": 1}
"""Stage minimums on both sides (Python masks EOS logits on its cached generator, Java sets GenAI's ``min_length``)."""


class RecordingEngine:
    """Delegates to ``OrtGenAIEngine`` and records each call with its prompt text and token ids."""

    def __init__(self, engine):
        self.engine, self.adapters, self.calls = engine, engine.adapters, []

    def generate(self, messages, adapter=None, images=None, max_new_tokens=128, **options):
        min_new_tokens = int(options.get("min_new_tokens", 0))
        generation = self.engine.generate(messages, adapter=adapter, max_new_tokens=max_new_tokens,
                                          min_new_tokens=min_new_tokens)
        self.calls.append({
            "messages": [dict(m) for m in messages], "adapter": adapter, "max_new_tokens": max_new_tokens,
            "min_new_tokens": min_new_tokens,
            "prompt": self.engine.chat_template.render(messages), "prompt_ids": self.engine.render(messages),
            "token_ids": list(generation.token_ids), "text": generation.text,
        })
        return generation

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def close(self) -> None:
        self.engine.close()


def world_script(world_config=None, n_batches: int = 4, n_questions: int = 4, seed: bool = True) -> list[dict]:
    """The first batches and questions of the world's first held-out conversation (``world_config``; the small world
    preset's by default), as loop steps. ``seed``: first a "seed" step per batch owner that stores the conversation's
    gold facts (through the store, as ADD operations), for experts that write no usable JSON: the seeded memories are
    then what retrieval, the update prompts' memory lists and the answer prompts show."""
    # function-level imports: the world generator and the demo are only needed to build this script
    from memlora.demo import world_demo_data
    from memlora.world.experts import get_preset

    data = world_demo_data(world_config or get_preset("small").world)
    steps = []
    if seed:
        seeds: dict[str, list[str]] = {}
        for b in data.batches:
            seeds.setdefault(b["user_id"], []).extend(f for f in b["gold_facts"] or [] if f not in seeds[b["user_id"]])
        steps += [{"op": "seed", "user_id": user, "texts": texts, "timestamp": data.batches[0]["timestamp"]}
                  for user, texts in seeds.items()]
    steps += [{"op": "add", "user_id": b["user_id"], "timestamp": b["timestamp"],
              "messages": [{k: m[k] for k in ("role", "content", "dia_id") if k in m} for m in b["messages"]]}
             for b in data.batches[:n_batches]]
    steps += [{"op": "answer", "user_id": q.speaker, "question": q.question} for q in data.questions[:n_questions]]
    return steps


def bundle_loop_cases(bundle_dir: Path, script: list[dict]) -> dict[str, Any]:
    from memlora.runtime.memory import Memory
    from memlora.runtime.ort_engine import _session_overlay
    from memlora.runtime.update import ResolvedOp

    embedder = FakeEmbedder()
    memory = Memory.from_bundle(str(bundle_dir), embedder=embedder, threads=THREADS, min_new_tokens=MIN_NEW_TOKENS)
    memory.store.close()
    memory.store = make_store(dim=embedder.dim, ids="m%d", clock="2024-02-01T10:00:%02d+00:00", first_tick=1)
    engine = memory.engine = RecordingEngine(memory.engine)
    users = sorted({s["user_id"] for s in script})
    cases = []
    try:
        for i, step in enumerate(script):
            engine.calls = []
            case = {"id": f"bundle-{i}-{step['op']}", "step": step}
            if step["op"] == "add":
                r = memory.add(step["messages"], step["user_id"], timestamp=step.get("timestamp"))
                case["result"] = {"facts": r.facts, "events": jsonable(r.events), "rejected": _rejections(r.rejected),
                                  "retrieved": [h.record.id for h in r.retrieved]}
            elif step["op"] == "seed":
                ops = [ResolvedOp(event="ADD", memory_id=None, text=t) for t in step["texts"]]
                vectors = dict(zip(step["texts"], embedder.encode(step["texts"])))
                batch = memory.store.apply_update(step["user_id"], ops, vectors, timestamp=step["timestamp"], actor="seed")
                case["result"] = {"events": jsonable(list(batch))}
            else:
                r = memory.answer(step["question"], step["user_id"])
                case["result"] = {"text": r.text, "memories": _hits(r.memories)}
            case["calls"] = jsonable(engine.calls)
            case["state"] = {"records": {u: jsonable(memory.store.get_all(u)) for u in users},
                             "rejections": jsonable(memory.store.rejections()), "batch_seq": memory.store.batch_seq}
            cases.append(case)
        config = {"id": "config", "bundle": str(bundle_dir), "threads": THREADS,
                  "session_overlay": json.dumps(_session_overlay(THREADS)), "dim": embedder.dim,
                  "prompt_set": memory.config.prompt_set, "max_new_tokens": dict(memory.config.max_new_tokens),
                  "min_new_tokens": dict(memory.config.min_new_tokens),
                  "top_s": memory.config.top_s, "answer_k": memory.config.answer_k,
                  "stage_adapters": memory.stage_adapters, "vectors": embedder.table}
    finally:
        memory.close()
    return {"format": FORMAT, "cases": [config, *cases]}


def write_bundle_loop(bundle_dir: Path, script: list[dict], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "bundle_loop.json"
    path.write_text(json.dumps(bundle_loop_cases(bundle_dir, script), ensure_ascii=False, indent=1), encoding="utf-8")
    return path
