"""The teacher client against a real OpenAI-compatible HTTP server on loopback, and the resumable teacher run."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from memlora.corpus.dataset import load_examples, stage_path
from memlora.distill import cli as train_cli
from memlora.distill.cleaning import clean_split
from memlora.distill.rawlog import RawLog
from memlora.distill.teacher import OpenAIChatTeacher, TeacherError, make_transport
from memlora.distill.teacher_run import TeacherRunConfig, run_teacher
from memlora.errors import DataError

TRANSPORTS = ["urllib", "httpx"]


def _teacher(server, **kw):
    kw.setdefault("sleep", lambda s: None)
    return OpenAIChatTeacher(server.url, server.model, api_key_env="", **kw)


def _skip_without_httpx(transport):
    if transport == "httpx" and make_transport(1.0, prefer="auto").name == "urllib":
        pytest.skip("neither httpx nor httpx2 is installed")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_retries_a_500_then_succeeds(scripted_server, transport):
    _skip_without_httpx(transport)
    server = scripted_server(fail_first=1)
    teacher = _teacher(server, transport=transport)
    reply = teacher.chat([{"role": "system", "content": "Extract and organize relevant details."},
                          {"role": "user", "content": "Input:\nuser: Ana: I moved to Porto last week.\n"}])
    assert len(server.posts) == 2 and teacher.retries_done == 1
    assert reply.text.endswith('{"facts": ["Ana said I moved to Porto last week."]}')
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0 and reply.finish_reason == "stop"
    assert server.posts[0]["temperature"] == 0.0 and server.posts[0]["model"] == server.model


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_gives_up_after_max_retries_with_a_clear_error(scripted_server, transport):
    _skip_without_httpx(transport)
    server = scripted_server(fail_first=100, status=503)
    waits = []
    teacher = _teacher(server, transport=transport, max_retries=3, backoff_s=0.5, sleep=waits.append)
    with pytest.raises(TeacherError, match=r"unreachable after 4 attempts \(HTTP 503"):
        teacher.chat([{"role": "user", "content": "hi"}])
    assert len(server.posts) == 4 and waits == [0.5, 1.0, 2.0]  # exponential backoff


def test_a_4xx_is_not_retried(scripted_server):
    server = scripted_server()
    teacher = OpenAIChatTeacher(server.url, "no-such-model", api_key_env="", sleep=lambda s: None)
    with pytest.raises(TeacherError, match="refused the request"):
        teacher.chat([{"role": "user", "content": "hi"}])
    assert len(server.posts) == 1
    with pytest.raises(TeacherError, match="does not serve 'no-such-model'"):
        teacher.check()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_a_teacher_error():
    teacher = OpenAIChatTeacher(f"http://127.0.0.1:{_closed_port()}/v1", "m", api_key_env="", max_retries=2,
                                sleep=lambda s: None)
    with pytest.raises(TeacherError, match="unreachable after 3 attempts"):
        teacher.check()


def test_chat_many_keeps_concurrency_bounded(scripted_server):
    server = scripted_server(delay_s=0.05)
    teacher = _teacher(server, concurrency=2)
    requests = [[{"role": "user", "content": f"question {i}"}] for i in range(6)]
    got = dict(teacher.chat_many(requests))
    assert sorted(got) == list(range(6)) and all(r.text == "Porto" for r in got.values())
    assert server.max_in_flight == 2


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class FailingAfter:
    """Wraps a teacher; the (n+1)-th call raises, as if the process died there (calls already made are recorded)."""

    def __init__(self, teacher, n: int):
        self.teacher, self.n, self.calls = teacher, n, 0
        self.name, self.concurrency = teacher.name, teacher.concurrency

    def chat(self, messages):
        if self.calls >= self.n:
            raise RuntimeError("simulated crash")
        self.calls += 1
        return self.teacher.chat(messages)


def test_interrupted_run_resumes_with_every_example_exactly_once(scripted_server, sample_conversations, minilm, tmp_path):
    server = scripted_server()
    cfg = TeacherRunConfig(split="train", progress=False, concurrency=2, max_batches=6)
    scored = [q for q in sample_conversations[0].qa if q.category in cfg.categories and q.answer]

    reference = tmp_path / "reference"
    stats = run_teacher(_teacher(server), sample_conversations, reference, cfg, embedder=minilm)
    ref = {stage: _lines(stage_path(reference, "train", stage, raw=True)) for stage in ("extraction", "update", "generation")}
    assert len(ref["extraction"]) == 12 and len(ref["update"]) == 12 and len(ref["generation"]) == len(scored)
    assert stats.calls == 24 and stats.prompt_tokens > 0
    calls_full = len(server.posts)

    data = tmp_path / "data"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_teacher(FailingAfter(_teacher(server), 11), sample_conversations, data, cfg, embedder=minilm)
    partial = sum(len(_lines(stage_path(data, "train", s, raw=True))) for s in ("extraction", "update"))
    assert partial == 11  # every finished call is on disk
    with stage_path(data, "train", "update", raw=True).open("a") as fh:
        fh.write('{"id": "sample-1/Maya/00099/update/torn", "out')  # a write torn by a kill

    before = len(server.posts)
    stats = run_teacher(_teacher(server), sample_conversations, data, cfg, embedder=minilm)
    assert stats.replayed == 11 and stats.calls == 24 - 11 and len(server.posts) - before == 24 - 11
    assert stats.repaired_bytes > 0
    for stage, rows in ref.items():
        got = _lines(stage_path(data, "train", stage, raw=True))
        ids = Counter(r["id"] for r in got)
        assert set(ids) == {r["id"] for r in rows} and max(ids.values()) == 1, stage
        assert {r["id"]: r["output"] for r in got} == {r["id"]: r["output"] for r in rows}
    # a third run has nothing left to do
    again = run_teacher(_teacher(server), sample_conversations, data, cfg, embedder=minilm)
    assert again.calls == 0 and len(server.posts) == calls_full + 11 + 13

    report = clean_split(data, "train", ["extraction", "update", "generation"])
    update = load_examples(stage_path(data, "train", "update"))
    assert report.stages["update"].kept == 12 and all('"NONE"' not in ex["target"] for ex in update)
    assert report.stages["update"].none_ops_removed > 0
    gen = load_examples(stage_path(data, "train", "generation"))
    assert {ex["target"] for ex in gen} == {q.answer for q in scored}
    stats_file = json.loads((data / "train" / "teacher_stats.json").read_text())
    assert stats_file["totals"]["extraction"]["records"] == 12


def test_raw_log_rejects_corruption_in_the_middle(tmp_path):
    path = tmp_path / "x.raw.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(DataError, match=r"x.raw.jsonl:2: corrupt record"):
        RawLog(path)


def test_raw_log_keeps_a_complete_last_record_missing_its_newline(tmp_path):
    path = tmp_path / "x.raw.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}')
    with RawLog(path) as log:
        assert set(log.records) == {"a", "b"}
        log.append({"id": "c"})
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def _write_user_jsonl(path: Path) -> Path:
    conv = {"conversation_id": "chat-1", "speaker_a": "Ana", "speaker_b": "Ben",
            "sessions": [{"date_time": "10:00 am on 2 March, 2024",
                          "turns": [{"speaker": "Ana", "text": "I adopted a cat named Miso."},
                                    {"speaker": "Ben", "text": "Lovely! I started learning the cello."}]}],
            "qa": [{"question": "What is the name of Ana's cat?", "answer": "Miso"}]}
    path.write_text(json.dumps(conv) + "\n")
    return path


def test_user_conversations_jsonl_run_like_locomo(scripted_server, minilm, tmp_path):
    from memlora.distill.conversations import load_conversations

    server = scripted_server()
    convs = load_conversations(_write_user_jsonl(tmp_path / "mine.jsonl"))
    run_teacher(_teacher(server), convs, tmp_path / "data", TeacherRunConfig(progress=False), embedder=minilm)
    ext = _lines(stage_path(tmp_path / "data", "train", "extraction", raw=True))
    assert sorted(r["id"].split("/")[1] for r in ext) == ["Ana", "Ben"]
    assert all(r["id"].startswith("chat-1/") for r in ext)
    gen = _lines(stage_path(tmp_path / "data", "train", "generation", raw=True))
    assert gen[0]["meta"]["answer"] == "Miso"


@pytest.mark.parametrize(
    "line, message",
    [
        ({"conversation_id": "c", "speaker_a": "A", "speaker_b": "B", "sessions": [{"turns": [{"speaker": "C", "text": "x"}]}]},
         "neither speaker_a"),
        ({"conversation_id": "c", "speaker_a": "A", "sessions": []}, "'speaker_b' must be a non-empty str"),
    ],
)
def test_user_conversations_bad_input_names_the_problem(tmp_path, line, message):
    from memlora.distill.conversations import load_conversations

    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(DataError, match=message):
        load_conversations(path)


def test_cli_unreachable_teacher_is_one_line_and_writes_nothing(tmp_path):
    convs = _write_user_jsonl(tmp_path / "mine.jsonl")
    out = tmp_path / "DATA"
    result = CliRunner().invoke(train_cli.cli, [
        "teacher", "--teacher", f"http://127.0.0.1:{_closed_port()}/v1", "--model", "m", "--conversations", str(convs),
        "-o", str(out), "--max-retries", "0"], standalone_mode=False)
    assert isinstance(result.exception, TeacherError) and "unreachable after 1 attempts" in str(result.exception)
    assert not out.exists()
