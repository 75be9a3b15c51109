"""Teacher backends behind one small interface: ``chat(messages) -> TeacherReply``.

- ``OpenAIChatTeacher``: any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, Ollama, llama.cpp server, a hosted
  API). Greedy (temperature 0), a timeout per request, retries with exponential backoff on 429 / 5xx / timeouts /
  refused connections (``Retry-After`` honoured), bounded concurrency through ``chat_many`` (a thread pool). The API
  key comes from an environment variable (``OPENAI_API_KEY`` by default; none needed for a local server). HTTP goes
  through ``httpx`` when it is installed (or its API-compatible ``httpx2``), else the standard library's urllib.
- ``LocalTransformersTeacher``: a local transformers checkpoint, greedy, through ``memlora.runtime.torch_engine``.

A 27B-120B teacher is served past one GPU with vLLM tensor parallelism (``vllm serve MODEL --tensor-parallel-size N``)
and used here as ``OpenAIChatTeacher("http://host:8000/v1", MODEL)``.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence, runtime_checkable

from memlora.errors import MemloraError
from memlora.runtime.torch_engine import TorchEngine


class TeacherError(MemloraError):
    """The teacher cannot be reached or keeps failing (the message says which URL/model and why)."""


@dataclass
class TeacherReply:
    """One teacher completion."""

    text: str
    """The message content (for reasoning models served with a separate channel, the final answer)."""
    prompt_tokens: int = 0
    """Prompt tokens as reported by the server (0 when it reports none)."""
    completion_tokens: int = 0
    """Completion tokens as reported by the server (0 when it reports none)."""
    reasoning: str | None = None
    """A separate reasoning channel (vLLM's ``reasoning_content``), kept raw; cleaning drops it."""
    finish_reason: str | None = None
    """Why generation stopped ("stop", "length", ...)."""


@runtime_checkable
class Teacher(Protocol):
    """Anything that answers chat messages greedily."""

    name: str
    """Model name recorded in the data (``source: "teacher:<name>"``)."""

    def chat(self, messages: list[dict]) -> TeacherReply: ...


# ----------------------------------------------------------------------------------------------------------- transport
@dataclass
class _HTTPResult:
    status: int
    body: bytes
    retry_after: float | None


class _Transport:
    """POST/GET JSON with a timeout; connection-level failures raise ``ConnectionError`` / ``TimeoutError``."""

    name = "urllib"

    def __init__(self, timeout: float):
        self.timeout = timeout

    def request(self, method: str, url: str, headers: dict, payload: dict | None) -> _HTTPResult:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return _HTTPResult(resp.status, resp.read(), None)
        except urllib.error.HTTPError as exc:
            return _HTTPResult(exc.code, exc.read() or b"", _retry_after(exc.headers.get("Retry-After")))
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError) or "timed out" in str(exc.reason):
                raise TimeoutError(str(exc.reason)) from None
            raise ConnectionError(str(exc.reason)) from None
        except (TimeoutError, OSError) as exc:
            if isinstance(exc, TimeoutError) or "timed out" in str(exc):
                raise TimeoutError(str(exc)) from None
            raise ConnectionError(str(exc)) from None

    def close(self) -> None:
        pass


class _HttpxTransport(_Transport):
    """The same over an ``httpx``-API client (connection pooling, keep-alive; thread-safe)."""

    def __init__(self, timeout: float, module, concurrency: int):
        super().__init__(timeout)
        self.httpx = module
        self.name = module.__name__
        limits = module.Limits(max_connections=max(1, concurrency), max_keepalive_connections=max(1, concurrency))
        self.client = module.Client(timeout=timeout, limits=limits, trust_env=False)

    def request(self, method, url, headers, payload):
        hx = self.httpx
        try:
            resp = self.client.request(method, url, headers=headers, json=payload)
        except hx.TimeoutException as exc:
            raise TimeoutError(str(exc) or "timed out") from None
        except hx.TransportError as exc:
            raise ConnectionError(str(exc) or type(exc).__name__) from None
        return _HTTPResult(resp.status_code, resp.content, _retry_after(resp.headers.get("retry-after")))

    def close(self):
        self.client.close()


def _retry_after(value) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def make_transport(timeout: float, concurrency: int = 1, prefer: str = "auto") -> _Transport:
    """``httpx`` (or ``httpx2``) when importable and ``prefer`` allows it, else urllib."""
    if prefer in ("auto", "httpx"):
        for name in ("httpx", "httpx2"):
            try:
                module = __import__(name)
            except ImportError:
                continue
            return _HttpxTransport(timeout, module, concurrency)
        if prefer == "httpx":
            raise MemloraError("httpx is not installed: pip install httpx, or use the urllib transport")
    return _Transport(timeout)


# ------------------------------------------------------------------------------------------------------------- backends
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class OpenAIChatTeacher:
    """A teacher behind an OpenAI-compatible chat-completions endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_retries: int = 5,
        concurrency: int = 4,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        extra_body: dict | None = None,
        transport: str = "auto",
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not base_url or "://" not in base_url:
            raise TeacherError(f"teacher URL {base_url!r} is not an http(s) URL (e.g. http://localhost:8000/v1)")
        if not model:
            raise TeacherError("a teacher model name is required (the name the server serves, e.g. openai/gpt-oss-120b)")
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1") and "/v1/" not in self.base_url + "/":
            self.base_url += "/v1"
        self.name = model
        self.model = model
        self.api_key = os.environ.get(api_key_env, "") if api_key_env else ""
        self.timeout, self.max_retries, self.concurrency = float(timeout), int(max_retries), max(1, int(concurrency))
        self.max_tokens, self.temperature = int(max_tokens), float(temperature)
        self.backoff_s, self.max_backoff_s = float(backoff_s), float(max_backoff_s)
        self.extra_body = dict(extra_body or {})
        self._sleep = sleep
        self._transport = make_transport(self.timeout, self.concurrency, transport)
        self.retries_done = 0
        self._lock = threading.Lock()

    # -- HTTP
    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _call(self, method: str, path: str, payload: dict | None) -> dict:
        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = None
            try:
                res = self._transport.request(method, url, self._headers(), payload)
            except (TimeoutError, ConnectionError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= res.status < 300:
                    try:
                        return json.loads(res.body.decode("utf-8"))
                    except (UnicodeDecodeError, json.JSONDecodeError):
                        raise TeacherError(f"teacher at {url} answered status {res.status} with a body that is not JSON") from None
                snippet = res.body[:300].decode("utf-8", "replace")
                last = f"HTTP {res.status}: {snippet}"
                if res.status not in RETRYABLE_STATUS:
                    raise TeacherError(f"teacher at {url} refused the request ({last}); check the model name and API key")
                wait = res.retry_after
            if attempt < self.max_retries:
                with self._lock:
                    self.retries_done += 1
                self._sleep(min(self.max_backoff_s, wait if wait is not None else self.backoff_s * (2**attempt)))
        raise TeacherError(f"teacher at {url} unreachable after {self.max_retries + 1} attempts ({last})")

    def check(self) -> list[str]:
        """Fail fast with a clear ``TeacherError`` when the server is down; returns the served model ids."""
        data = self._call("GET", "/models", None)
        models = [m.get("id") for m in data.get("data", []) if isinstance(m, dict)]
        if models and self.model not in models:
            raise TeacherError(f"teacher at {self.base_url} does not serve {self.model!r}; it serves: {', '.join(models)}")
        return models

    # -- chat
    def chat(self, messages: list[dict]) -> TeacherReply:
        payload = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            **self.extra_body,
        }
        data = self._call("POST", "/chat/completions", payload)
        try:
            choice = data["choices"][0]
            message = choice.get("message") or {}
            text = message.get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise TeacherError(f"teacher at {self.base_url} returned no choices: {json.dumps(data)[:300]}") from None
        usage = data.get("usage") or {}
        return TeacherReply(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            reasoning=message.get("reasoning_content") or message.get("reasoning"),
            finish_reason=choice.get("finish_reason"),
        )

    def chat_many(self, requests: Sequence[list[dict]]) -> Iterator[tuple[int, TeacherReply]]:
        """Run many chats with at most ``concurrency`` in flight; yields ``(index, reply)`` as they complete."""
        yield from chat_concurrently(self, requests, self.concurrency)

    def close(self) -> None:
        self._transport.close()

    def __repr__(self) -> str:
        return f"OpenAIChatTeacher({self.base_url!r}, {self.model!r}, transport={self._transport.name})"


def chat_concurrently(teacher: Teacher, requests: Sequence[list[dict]], concurrency: int) -> Iterator[tuple[int, TeacherReply]]:
    """Bounded-concurrency map of ``teacher.chat`` (a thread pool); the first failure is raised after in-flight calls end."""
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="teacher") as pool:
        futures = {pool.submit(teacher.chat, msgs): i for i, msgs in enumerate(requests)}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            for fut in futures:
                fut.cancel()


class LocalTransformersTeacher:
    """A local transformers checkpoint as the teacher (greedy), run by the PyTorch engine."""

    concurrency = 1

    def __init__(self, model_dir: str | os.PathLike, max_new_tokens: int = 512, threads: int | None = None):
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise TeacherError(f"local teacher not found: {model_dir} has no config.json")

        self.name = model_dir.name
        self.max_new_tokens = int(max_new_tokens)
        self.engine = TorchEngine(model_dir, threads=threads)
        self._lock = threading.Lock()

    def chat(self, messages: list[dict]) -> TeacherReply:
        with self._lock:  # one model, one generation at a time
            gen = self.engine.generate(messages, None, max_new_tokens=self.max_new_tokens)
        return TeacherReply(text=gen.text, prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens)

    def close(self) -> None:
        pass


def make_teacher(spec: str, model: str | None = None, **kwargs) -> Teacher:
    """``spec`` is an http(s) URL (OpenAI-compatible server; ``model`` required) or a local model directory."""
    if "://" in spec:
        return OpenAIChatTeacher(spec, model or "", **kwargs)
    local = {k: v for k, v in kwargs.items() if k in ("max_new_tokens", "threads")}
    if "max_tokens" in kwargs:
        local.setdefault("max_new_tokens", kwargs["max_tokens"])
    return LocalTransformersTeacher(spec, **local)


