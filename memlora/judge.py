"""The LLM-as-a-judge score J: an OpenAI-compatible chat endpoint labels each answer CORRECT or WRONG with Mem0's prompt.

The paper (appendix D.4) uses Mem0's judge prompt with GPT-OSS-120B at temperature 0; any OpenAI-compatible server works
(vLLM: ``vllm serve openai/gpt-oss-120b`` then ``--judge http://host:8000/v1 --judge-model openai/gpt-oss-120b``).
The API key, when the server needs one, comes from ``$MEMLORA_JUDGE_API_KEY`` or ``$OPENAI_API_KEY``.

Replies are parsed tolerantly (JSON with a "label" key, possibly fenced or after reasoning text; else a lone CORRECT or
WRONG word). A reply that still cannot be read is retried; after the last attempt it counts as WRONG (Mem0 scores every
label other than CORRECT as 0) and is flagged ``parsed=False`` so reports can count judge failures.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from memlora.errors import MemloraError

# Mem0's ACCURACY_PROMPT (evaluation/metrics/llm_judge.py), which the paper reproduces in appendix D.4.
# (The paper's transcription reads "posed by one user to another usr"; Mem0's code, which the paper says it uses, reads "user".)
JUDGE_PROMPT = """
Your task is to label an answer to a question as ’CORRECT’ or ’WRONG’. You will be given the following data:
    (1) a question (posed by one user to another user), 
    (2) a ’gold’ (ground truth) answer, 
    (3) a generated answer
which you will score as CORRECT/WRONG.

The point of the question is to ask about something one user should know about the other user based on their prior conversations.
The gold answer will usually be a concise and short answer that includes the referenced topic, for example:
Question: Do you remember what I got the last time I went to Hawaii?
Gold answer: A shell necklace
The generated answer might be much longer, but you should be generous with your grading - as long as it touches on the same topic as the gold answer, it should be counted as CORRECT. 

For time related questions, the gold answer will be a specific date, month, year, etc. The generated answer might be much longer or use relative time references (like "last Tuesday" or "next month"), but you should be generous with your grading - as long as it refers to the same date or time period as the gold answer, it should be counted as CORRECT. Even if the format differs (e.g., "May 7th" vs "7 May"), consider it CORRECT if it's the same date.

Now it's time for the real question:
Question: {question}
Gold answer: {gold_answer}
Generated answer: {generated_answer}

First, provide a short (one sentence) explanation of your reasoning, then finish with CORRECT or WRONG. 
Do NOT include both CORRECT and WRONG in your response, or it will break the evaluation script.

Just return the label CORRECT or WRONG in a json format with the key as "label".
"""

LABELS = ("CORRECT", "WRONG")


class JudgeError(MemloraError):
    """The judge endpoint cannot be reached or keeps failing (after every retry)."""


@dataclass
class JudgeConfig:
    """Where the judge lives and how to call it."""

    url: str
    """OpenAI-compatible base URL (``http://host:8000/v1``) or the full ``.../chat/completions`` URL."""
    model: str
    """Model name the server knows (e.g. ``openai/gpt-oss-120b``)."""
    temperature: float = 0.0
    """Sampling temperature (0 for reproducibility, as the paper)."""
    max_tokens: int | None = 1024
    """Completion budget (reasoning models need room before the JSON); None: the server's default."""
    json_mode: bool = True
    """Send ``response_format={"type": "json_object"}`` as Mem0 does (turn off for servers that reject it)."""
    timeout_s: float = 120.0
    """Per-request timeout."""
    max_attempts: int = 4
    """Attempts per answer (network errors, 429/5xx and unreadable replies are retried)."""
    backoff_s: float = 1.0
    """First retry delay; doubles after each failed attempt."""
    api_key_env: tuple[str, ...] = ("MEMLORA_JUDGE_API_KEY", "OPENAI_API_KEY")
    """Environment variables searched for a bearer token."""


@dataclass
class Verdict:
    """One judged answer."""

    label: str
    """CORRECT or WRONG (WRONG too when the reply could not be read)."""
    parsed: bool
    """False when no attempt gave a readable label."""
    raw: str
    """The last reply's text."""
    attempts: int

    @property
    def score(self) -> int:
        return int(self.label == "CORRECT")


_LABEL_RE = re.compile(r"\b(CORRECT|WRONG)\b")
_JSON_LABEL_RE = re.compile(r"\{[^{}]*\"label\"\s*:\s*\"?([A-Za-z]+)\"?[^{}]*\}", re.S)


def parse_label(text: str | None) -> str | None:
    """CORRECT / WRONG from a judge reply, or None when unreadable (tolerates fences, reasoning text, loose JSON)."""
    if not text:
        return None
    text = re.sub(r"<think>.*?</think>", " ", text, flags=re.S)
    for match in reversed(_JSON_LABEL_RE.findall(text)):
        if match.upper() in LABELS:
            return match.upper()
    try:
        import json_repair

        obj = json_repair.loads(text)
        if isinstance(obj, dict) and str(obj.get("label", "")).strip().upper() in LABELS:
            return str(obj["label"]).strip().upper()
    except Exception:
        pass
    found = set(_LABEL_RE.findall(text.upper()))
    return found.pop() if len(found) == 1 else None


class JudgeClient:
    """Labels answers with an OpenAI-compatible chat endpoint (stdlib HTTP; no SDK needed)."""

    def __init__(self, config: JudgeConfig, sleep=time.sleep):
        self.config = config
        url = config.url.rstrip("/")
        self.endpoint = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.api_key = next((os.environ[k] for k in config.api_key_env if os.environ.get(k)), None)
        self._sleep = sleep

    def _request(self, prompt: str) -> str:
        cfg = self.config
        body = {"model": cfg.model, "messages": [{"role": "user", "content": prompt}], "temperature": cfg.temperature}
        if cfg.max_tokens:
            body["max_tokens"] = cfg.max_tokens
        if cfg.json_mode:
            body["response_format"] = {"type": "json_object"}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.endpoint, data=json.dumps(body).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=cfg.timeout_s) as resp:
            payload = json.loads(resp.read().decode("utf-8", "replace"))
        try:
            message = payload["choices"][0]["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"not a chat completion: {str(payload)[:200]}") from exc
        return message.get("content") or ""

    def judge(self, question: str, gold_answer, generated_answer) -> Verdict:
        """Label one answer; retries with exponential backoff; raises ``JudgeError`` only when the endpoint never answered."""
        prompt = JUDGE_PROMPT.format(question=question, gold_answer=gold_answer, generated_answer=generated_answer)
        delay, raw, last_error, answered = self.config.backoff_s, "", None, False
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                raw = self._request(prompt)
                answered = True
                label = parse_label(raw)
                if label:
                    return Verdict(label=label, parsed=True, raw=raw, attempts=attempt)
                last_error = f"unreadable reply: {raw[:120]!r}"
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:200] if exc.fp else ""
                last_error = f"HTTP {exc.code}: {detail}"
                if exc.code in (400, 401, 403, 404):  # our request is wrong: retrying cannot help
                    raise JudgeError(f"judge at {self.endpoint} refused the request ({last_error})") from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError, json.JSONDecodeError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if attempt < self.config.max_attempts:
                self._sleep(delay)
                delay *= 2
        if not answered:
            raise JudgeError(f"judge at {self.endpoint} failed {self.config.max_attempts} times (last: {last_error})")
        return Verdict(label="WRONG", parsed=False, raw=raw, attempts=self.config.max_attempts)
