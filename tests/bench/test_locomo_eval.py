"""``memlora eval --memories oracle`` on one real LoCoMo test conversation (skips when the file is absent)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from click.testing import CliRunner

from memlora.bench.locomo_eval import RESULTS_FILE, EvalConfig, EvalParts, run_locomo_eval
from memlora.bench.metrics import AnswerScorer, ScorerConfig
from memlora.cli import eval_command

from helpers import ScriptedEngine, add_every_fact

CONV = "conv-49"
pytestmark = pytest.mark.locomo


@pytest.fixture(scope="module")
def conversation(locomo_path):
    from memlora.corpus.locomo import load_locomo

    convs = load_locomo(locomo_path)
    (conv,) = [c for c in convs if c.sample_id == CONV]
    return convs, conv


@pytest.fixture(scope="module")
def embedder():
    from memlora.bench.embedding_cache import CachedEmbedder
    from memlora.runtime.embedder import SentenceTransformerEmbedder

    return CachedEmbedder(SentenceTransformerEmbedder(threads=2))


def test_cli_oracle_retrieval_only_report(locomo_path, conversation, tmp_path):
    _, conv = conversation
    out = tmp_path / "run"
    result = CliRunner().invoke(
        eval_command,
        ["--locomo", str(locomo_path), "--split", "test", "--conversation", CONV, "--memories", "oracle",
         "--retrieval-only", "--retrieval", "both", "--out", str(out), "--json", str(tmp_path / "r.json"), "--quiet"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report == json.loads((out / "report.json").read_text())
    assert (out / "report.png").stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "| k | hit@k vector | hit@k hybrid | cover@k vector | cover@k hybrid |" in md

    scored = [q for q in conv.qa if q.category in (1, 2, 3, 4)]
    expected = Counter(str(q.category) for q in scored)
    with_evidence = Counter(str(q.category) for q in scored if q.evidence)
    assert report["setup"]["conversations"] == [CONV]
    for variant in ("vector", "hybrid"):
        v = report["variants"][variant]
        assert v["overall"]["n"] == len(scored)
        assert {c: a["n"] for c, a in v["by_category"].items()} == dict(expected)
        assert {c: a["n_with_evidence"] for c, a in v["by_category"].items()} == dict(with_evidence)
        hits = [v["overall"][f"hit@{k}"] for k in (5, 10, 20, 30)]
        covers = [v["overall"][f"cover@{k}"] for k in (5, 10, 20, 30)]
        assert hits == sorted(hits) and covers == sorted(covers)  # recall grows with k
        assert all(c <= h for c, h in zip(covers, hits))  # covering all evidence is harder than hitting one id
        assert 0.3 < hits[-1] <= 1.0  # 60 of ~240 observations retrieved: far above chance for evidence
    lines = (out / RESULTS_FILE).read_text().splitlines()
    assert len(lines) == 2 * len(scored)


def test_resume_skips_done_questions_and_redoes_a_cut_line(conversation, embedder, tmp_path):
    convs, conv = conversation
    config = EvalConfig(out_dir=str(tmp_path), conversations=(CONV,), retrieval_only=True, limit=6)
    parts = EvalParts(embedder=embedder)
    first = run_locomo_eval(convs, config, parts, progress=False)
    results = tmp_path / RESULTS_FILE
    lines = results.read_text().splitlines()
    assert len(lines) == 6
    # a run killed mid-write leaves a cut line: the rerun redoes exactly that question
    results.write_text("\n".join(lines[:5]) + "\n" + lines[5][: len(lines[5]) // 2])
    second = run_locomo_eval(convs, config, parts, progress=False)
    redone = results.read_text().splitlines()
    assert redone[:5] == lines[:5] and len(redone) == 6
    assert json.loads(redone[5])["key"] == json.loads(lines[5])["key"]
    assert second["variants"] == first["variants"]


def test_generation_with_tiny_model_and_judge(conversation, embedder, tiny_model, judge_server, tmp_path):
    from memlora.judge import JudgeClient, JudgeConfig
    from memlora.runtime.torch_engine import TorchEngine

    convs, conv = conversation
    engine = TorchEngine(tiny_model("qwen2"), threads=2)
    judge_config = JudgeConfig(url=judge_server.url, model="judge-x", backoff_s=0.0, max_attempts=2)
    # scripted verdicts: CORRECT, (malformed then) WRONG, malformed twice -> WRONG and flagged unparsed
    judge_server.script = [(200, '{"label": "CORRECT"}'), (200, "hmm"), (200, '{"label": "WRONG"}'), (200, "?"), (200, "")]
    config = EvalConfig(out_dir=str(tmp_path), conversations=(CONV,), limit=3, top_k=5, max_new_tokens=8, judge=judge_config)
    parts = EvalParts(embedder=embedder, engine=engine, scorer=AnswerScorer(ScorerConfig(), embedder=embedder),
                      judge=JudgeClient(judge_config))
    report = run_locomo_eval(convs, config, parts, progress=False)
    rows = [json.loads(line) for line in (tmp_path / RESULTS_FILE).read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert isinstance(row["prediction"], str) and row["answer_tokens"] <= 8
        assert len(row["retrieved"]) == 2 and all(len(ids) <= 5 for ids in row["retrieved"].values())
        m = row["metrics"]
        assert 0.0 <= m["f1"] <= 1.0 and 0.0 <= m["rouge1_f"] <= 1.0 and m["bertscore_f1"] is None
    assert [r["judge"]["label"] for r in rows] == ["CORRECT", "WRONG", "WRONG"]
    assert [r["judge"]["parsed"] for r in rows] == [True, True, False]
    assert rows[0]["question"] in judge_server.requests[0]["messages"][0]["content"]
    overall = report["variants"]["vector"]["overall"]
    assert overall["n"] == 3 and overall["j"] == pytest.approx(1 / 3) and overall["judge_unparsed"] == 1
    assert "bertscore_f1" in report["unavailable"] and "j" not in report["unavailable"]
    assert report["l_label"].startswith("L[") and "bertscore_f1" not in report["l_label"]
    assert overall["f1"] == pytest.approx(sum(r["metrics"]["f1"] for r in rows) / 3)


def test_cli_refuses_answers_without_a_model(locomo_path, tmp_path):
    result = CliRunner().invoke(eval_command, ["--locomo", str(locomo_path), "--out", str(tmp_path), "--quiet"])
    assert result.exit_code != 0
    assert "--retrieval-only" in str(result.exception)


@pytest.mark.parametrize("value, expected", [(None, None), ("none", ()), ("extraction, update", ("extraction", "update"))])
def test_experts_option_values(value, expected):
    from memlora.cli import parse_experts

    assert parse_experts(value) == expected


@pytest.mark.parametrize("values, expected", [
    ((), None), (("extraction=1", "update=2"), {"extraction": 1, "update": 2}),
    (("extraction=1,update=2", "generation=0"), {"extraction": 1, "update": 2, "generation": 0}),
    (("extraction",), "takes STAGE=N"), (("recall=1",), "takes STAGE=N"), (("update=-1",), "takes STAGE=N"),
    (("3",), "takes STAGE=N"),
])
def test_min_new_tokens_option_values(values, expected):
    from memlora.cli_support import parse_stage_counts
    from memlora.errors import MemloraError

    if not isinstance(expected, str):
        assert parse_stage_counts(values, "--min-new-tokens") == expected
    else:
        with pytest.raises(MemloraError, match=expected):
            parse_stage_counts(values, "--min-new-tokens")


def test_stage_minimums_are_part_of_the_fingerprint_only_when_set():
    assert "min_new_tokens" not in EvalConfig(out_dir="x", memories="loop").fingerprint()  # older runs still resume
    assert EvalConfig(out_dir="x", memories="loop", min_new_tokens={"extraction": 1}).fingerprint()["min_new_tokens"] == {
        "extraction": 1}


def test_cli_refuses_an_unknown_expert_stage(locomo_path, tmp_path):
    result = CliRunner().invoke(eval_command, ["--locomo", str(locomo_path), "--out", str(tmp_path), "--quiet",
                                               "--memories", "loop", "--experts", "extraction,recall"])
    assert result.exit_code != 0
    assert "experts must be among extraction, update, generation, got recall" in str(result.exception)


def echo_reply(messages, adapter) -> str:
    """A deterministic stand-in for a trained model: extraction keeps the store owner's own turns as facts, update ADDs
    them, generation repeats the first memory. It exercises the real ``Memory`` + ``MemoryStore`` under the eval."""
    content = messages[-1]["content"]
    if adapter == "extraction":
        return json.dumps({"facts": [line[len("user: "):] for line in content.splitlines() if line.startswith("user: ")]})
    if adapter == "update":
        return add_every_fact(messages)
    lines = [line for line in content.splitlines() if line.startswith("- [")]
    return lines[0].split("] ", 1)[1] if lines else "unknown"


def test_loop_mode_ingests_with_the_real_memory_and_resumes(conversation, embedder, tmp_path):
    from memlora.runtime.memory import Memory, MemoryConfig
    from memlora.runtime.store import MemoryStore

    convs, conv = conversation
    engine = ScriptedEngine(reply=echo_reply)

    def memory_factory(store_dir):
        return Memory(engine, embedder, MemoryStore(str(store_dir), dim=embedder.dim), MemoryConfig())

    config = EvalConfig(out_dir=str(tmp_path), conversations=(CONV,), memories="loop", max_sessions=1, limit=4, top_k=5)
    parts = EvalParts(embedder=embedder, engine=engine, memory_factory=memory_factory)
    report = run_locomo_eval(convs, config, parts, progress=False)
    calls = Counter(c["adapter"] for c in engine.calls)
    session1 = conv.sessions[0]
    own_turns = len(session1.turns)  # every turn is "user" in its speaker's own store -> one memory per turn
    rows = [json.loads(line) for line in (tmp_path / RESULTS_FILE).read_text().splitlines()]
    assert sum(rows[0]["n_memories"].values()) == own_turns
    assert calls["extraction"] == calls["update"] == 2 * -(-own_turns // 2)  # 2 turns per add, both stores
    progress = json.loads((tmp_path / "stores" / CONV / "progress.json").read_text())
    assert progress["complete"] and progress["batches_done"] == calls["extraction"]
    # questions whose evidence lies in session 1 are found: the memories carry their turns' dia_ids as sources
    in_s1 = [r for r in rows if any(e.startswith(f"D{session1.index}:") for e in r["evidence"])]
    assert in_s1 and all(r["hit@30"] == 1.0 for r in in_s1)
    assert all(r["prediction"] for r in rows)
    assert report["variants"]["vector"]["overall"]["n"] == 4
    loop = report["loop"]  # the loop's own counts: every add, its valid outputs and events
    assert loop["adds"] == calls["extraction"] and loop["facts"] == own_turns
    assert loop["extraction"]["calls"] == calls["extraction"] and loop["extraction"]["valid_rate"] == 1.0
    assert loop["extraction"]["tokens_per_call"] > 0
    assert loop["update"]["valid_rate"] == 1.0 and loop["events"] == {"ADD": own_turns, "UPDATE": 0, "DELETE": 0}
    assert all(r["answer_s"] >= 0 for r in rows) and report["variants"]["vector"]["overall"]["answer_s"] is not None
    # a rerun ingests nothing again and answers nothing again
    n_calls = len(engine.calls)
    run_locomo_eval(convs, config, parts, progress=False)
    assert len(engine.calls) == n_calls


@pytest.mark.parametrize("experts, expected", [
    (None, "memlora"),  # no --adapters, no --bundle
    ({"update": {"path": "update"}}, "memlora"),
    ({"update": {"path": "update", "prompt_set": "memlora-textfirst"},
      "generation": {"path": "generation", "prompt_set": "memlora-textfirst"}}, "memlora-textfirst"),
])
def test_eval_renders_with_the_prompt_set_the_adapters_were_trained_with(tmp_path, experts, expected):
    from memlora.export.adapters import trained_prompt_set

    adapters = None
    if experts is not None:
        adapters = tmp_path / "out"
        for entry in experts.values():
            (adapters / entry["path"]).mkdir(parents=True)
        (adapters / "experts.json").write_text(json.dumps({"format": 1, "experts": experts}))
    assert trained_prompt_set(adapters) == expected


def _loop_run(convs, embedder, out, reply, experts=None):
    from memlora.runtime.memory import Memory, MemoryConfig
    from memlora.runtime.store import MemoryStore

    engine = ScriptedEngine(reply=reply)
    stage_adapters = None if experts is None else {s: (s if s in experts else None) for s in ("extraction", "update")}

    def memory_factory(store_dir):
        return Memory(engine, embedder, MemoryStore(str(store_dir), dim=embedder.dim), MemoryConfig(stage_adapters=stage_adapters))

    config = EvalConfig(out_dir=str(out), conversations=(CONV,), memories="loop", max_sessions=1, limit=3, top_k=5,
                        experts=experts, command=f"memlora eval --out {out}")
    parts = EvalParts(embedder=embedder, engine=engine, memory_factory=memory_factory,
                      scorer=AnswerScorer(ScorerConfig(), embedder=embedder))
    return engine, run_locomo_eval(convs, config, parts, progress=False)


def chatty_base(messages, adapter) -> str:
    """The base model alone: a friendly reply, never the JSON the loop asks for."""
    return "Sure! Here is what I noticed about the conversation." if adapter is None else echo_reply(messages, adapter)


def test_an_expert_left_out_is_served_by_the_base_and_its_invalid_output_counted(conversation, embedder, tmp_path):
    convs, _ = conversation
    engine, report = _loop_run(convs, embedder, tmp_path / "gen-only", chatty_base, experts=("generation",))
    adapters = Counter(c["adapter"] for c in engine.calls)
    assert adapters[None] == report["loop"]["adds"] and adapters["extraction"] == adapters["update"] == 0
    assert adapters["generation"] == 3  # the answers still come from the generation expert
    loop = report["loop"]
    assert loop["extraction"]["valid_rate"] == 0.0 and loop["update"]["calls"] == 0 and loop["facts"] == 0
    assert loop["events"] == {"ADD": 0, "UPDATE": 0, "DELETE": 0}
    assert report["setup"]["command"].startswith("memlora eval --out")


def test_locomo_table_rows_side_by_side_with_ratios(conversation, embedder, tmp_path):
    from memlora.bench.locomo_table import markdown, write_table

    convs, _ = conversation
    _loop_run(convs, embedder, tmp_path / "base", chatty_base, experts=())
    _loop_run(convs, embedder, tmp_path / "experts", echo_reply)
    paths = write_table([("base", tmp_path / "base"), ("experts", tmp_path / "experts")], tmp_path / "table")
    doc = json.loads(paths["json"].read_text())
    base, experts = doc["rows"]
    assert doc["reference"] == "base" and base["f1_x"] in (1.0, None)
    assert base["extraction_valid"] == 0.0 and experts["extraction_valid"] == 1.0
    assert base["events"]["ADD"] == 0 and experts["events"]["ADD"] > 0
    if base["f1"]:
        assert experts["f1_x"] == pytest.approx(experts["f1"] / base["f1"])
    assert experts["l_offline"] == pytest.approx((experts["rouge1_f"] + experts["meteor"] + experts["sbert"]) / 3)
    md = markdown(doc)
    assert "| base |" in md and "| experts |" in md and "memlora eval --out" in md
    assert paths["chart"].stat().st_size > 1000


def test_locomo_table_refuses_a_run_without_a_report(tmp_path):
    from memlora.bench.locomo_table import load_rows
    from memlora.errors import MemloraError

    with pytest.raises(MemloraError, match="report.json not found"):
        load_rows([("base", tmp_path / "nothing")])
