"""The judge client against a scripted OpenAI-compatible server on 127.0.0.1 started by the test."""

from __future__ import annotations

import pytest

from memlora.judge import JUDGE_PROMPT, JudgeClient, JudgeConfig, JudgeError, parse_label


def client(url, **kw):
    return JudgeClient(JudgeConfig(url=url, model="judge-x", backoff_s=0.0, **kw), sleep=lambda s: None)


@pytest.mark.parametrize(
    "script, label, parsed, attempts",
    [
        ([(200, '{"label": "CORRECT"}')], "CORRECT", True, 1),
        ([(200, 'Same topic as the gold answer.\n```json\n{"label": "WRONG"}\n```')], "WRONG", True, 1),
        ([(200, "<think>gold is May 7</think>{'label': 'CORRECT'}")], "CORRECT", True, 1),
        ([(200, "The dates agree, so: CORRECT")], "CORRECT", True, 1),
        ([(200, "I am not sure."), (200, '{"label": "CORRECT"}')], "CORRECT", True, 2),  # malformed, then fine
        ([(200, "CORRECT or WRONG?"), (200, '{"label": "maybe"}'), (200, "")], "WRONG", False, 3),  # never readable
        ([(500, "overloaded"), (429, "slow down"), (200, '{"label": "CORRECT"}')], "CORRECT", True, 3),
    ],
)
def test_judge_replies(judge_server, script, label, parsed, attempts):
    judge_server.script = list(script)
    verdict = client(judge_server.url, max_attempts=3).judge("When did Mel paint?", "7 May 2023", "On May 7th")
    assert (verdict.label, verdict.parsed, verdict.attempts) == (label, parsed, attempts)
    assert verdict.score == int(label == "CORRECT")
    assert len(judge_server.requests) == attempts


def test_judge_request_is_mem0s(judge_server, monkeypatch):
    monkeypatch.setenv("MEMLORA_JUDGE_API_KEY", "sk-test")
    judge_server.script = [(200, '{"label": "CORRECT"}')]
    client(judge_server.url + "/chat/completions").judge("Q?", "gold", "generated")
    body = judge_server.requests[0]
    assert body["model"] == "judge-x" and body["temperature"] == 0.0
    assert body["response_format"] == {"type": "json_object"}
    (message,) = body["messages"]
    assert message["role"] == "user"
    assert message["content"] == JUDGE_PROMPT.format(question="Q?", gold_answer="gold", generated_answer="generated")
    assert "Question: Q?\nGold answer: gold\nGenerated answer: generated" in message["content"]
    assert judge_server.headers[0]["Authorization"] == "Bearer sk-test"


def test_judge_refusal_raises(judge_server):
    judge_server.script = [(401, "bad key")]
    with pytest.raises(JudgeError, match="HTTP 401"):
        client(judge_server.url).judge("Q", "a", "b")
    assert len(judge_server.requests) == 1  # not retried


def test_judge_unreachable_raises():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(JudgeError, match="failed 2 times"):
        client(f"http://127.0.0.1:{port}/v1", max_attempts=2, timeout_s=2).judge("Q", "a", "b")


@pytest.mark.parametrize(
    "text, label",
    [
        ('{"label": "CORRECT"}', "CORRECT"),
        ('{"label": "wrong"}', "WRONG"),
        ('reasoning... {"reason": "x", "label": "CORRECT"}', "CORRECT"),
        ("CORRECT", "CORRECT"),
        ("CORRECT or WRONG", None),
        ("", None),
        (None, None),
        ('{"label": "unknown"}', None),
    ],
)
def test_parse_label(text, label):
    assert parse_label(text) == label


def test_prompt_matches_the_paper_appendix():
    # The paper's appendix D.4 reproduces Mem0's prompt (reflowed); the words must be the same.
    words = " ".join(JUDGE_PROMPT.split())
    for sentence in [
        "Your task is to label an answer to a question as ’CORRECT’ or ’WRONG’.",
        "The gold answer will usually be a concise and short answer that includes the referenced topic, for example:",
        'Even if the format differs (e.g., "May 7th" vs "7 May"), consider it CORRECT if it\'s the same date.',
        'Just return the label CORRECT or WRONG in a json format with the key as "label".',
    ]:
        assert sentence in words
