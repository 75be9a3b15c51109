"""``memlora chat --bundle B --user NAME``: talk to a memory that lives on disk and remembers across runs.

Every line you type is remembered together with the previous assistant reply (the extraction and update experts decide
what to keep), then answered by the generation expert over the memories retrieved for it. Lines are read from stdin one
at a time, so a script (or a test) can pipe a conversation in. Commands: ``/memories`` lists what is remembered,
``/forget ID`` deletes one memory, ``/help``, ``/quit``.

    memlora chat --bundle bundle/ --user alice                 # store under the memlora cache, per bundle
    printf 'I adopted a dog named Rex\\n/memories\\n' | memlora chat --bundle bundle/ --user alice --store mem/
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from memlora.errors import MemloraError
from memlora.paths import cache_dir

COMMANDS_HELP = "/memories  list what is remembered   /forget ID  delete one memory   /help   /quit"


def default_store_dir(bundle_dir: str | Path) -> Path:
    """The store of a bundle under the memlora cache: ``stores/<bundle name>-<hash of its absolute path>``."""
    bundle_dir = Path(bundle_dir).resolve()
    digest = hashlib.sha256(str(bundle_dir).encode()).hexdigest()[:10]
    return cache_dir("stores", f"{bundle_dir.name}-{digest}")


@dataclass
class ChatTurn:
    """What one input line produced."""

    reply: str
    """Text to show (the answer, or a command's output)."""
    quit: bool = False
    """The user asked to stop."""


class ChatSession:
    """One user's conversation with a ``Memory``: ``handle(line)`` -> ``ChatTurn``; the CLI is a loop around it."""

    def __init__(self, memory, user_id: str):
        if not user_id:
            raise MemloraError("--user must be a non-empty name")
        self.memory, self.user_id = memory, user_id
        self.last_reply: str | None = None

    def handle(self, line: str) -> ChatTurn:
        line = line.strip()
        if not line:
            return ChatTurn("")
        if line.startswith("/"):
            return self._command(line)
        messages = ([{"role": "assistant", "content": self.last_reply}] if self.last_reply else []) + [
            {"role": "user", "content": line}
        ]
        self.memory.add(messages, user_id=self.user_id)
        answer = self.memory.answer(line, user_id=self.user_id)
        self.last_reply = answer.text
        return ChatTurn(answer.text)

    def _command(self, line: str) -> ChatTurn:
        name, _, arg = line.partition(" ")
        if name in ("/quit", "/exit"):
            return ChatTurn("bye", quit=True)
        if name == "/help":
            return ChatTurn(COMMANDS_HELP)
        if name == "/memories":
            records = self.memory.get_all(self.user_id)
            if not records:
                return ChatTurn("(no memories yet)")
            return ChatTurn("\n".join(f"{r.id}  {r.text}" for r in records))
        if name == "/forget":
            memory_id = arg.strip()
            if not memory_id:
                return ChatTurn("usage: /forget ID (see /memories)")
            record = self.memory.get(memory_id)
            if record is None or record.user_id != self.user_id:
                return ChatTurn(f"no memory {memory_id!r} for {self.user_id} (see /memories)")
            event = self.memory.delete(memory_id)
            return ChatTurn(f"forgot {event.id}: {event.text}")
        return ChatTurn(f"unknown command {name!r}; {COMMANDS_HELP}")


def run_chat(bundle_dir: Path, user_id: str, store_dir: Path | None = None, threads: int | None = None, verify: bool = True,
             stdin: TextIO | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
    """The chat loop of ``memlora chat``: read lines from ``stdin`` until EOF or /quit, answer each on ``stdout``
    (prompts and errors on ``stderr``); the memory is closed on the way out."""
    from memlora.runtime.memory import Memory  # FAISS (the memory store): off the import path of `memlora --help`

    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    store_dir = store_dir or default_store_dir(bundle_dir)
    memory = Memory.from_bundle(str(bundle_dir), store_dir=str(store_dir), verify=verify, threads=threads)
    interactive = stdin.isatty()
    try:
        session = ChatSession(memory, user_id)
        count = len(memory.get_all(user_id))
        print(f"memlora chat: {user_id}, {count} memories in {store_dir}. {COMMANDS_HELP}", file=stderr, flush=True)
        while True:
            if interactive:
                print("you> ", end="", file=stderr, flush=True)
            line = stdin.readline()
            if not line:
                break
            try:
                turn = session.handle(line)
            except MemloraError as exc:
                print(f"error: {exc}", file=stderr, flush=True)
                continue
            if turn.reply:
                print(turn.reply, file=stdout, flush=True)
            if turn.quit:
                break
    finally:
        memory.close()
