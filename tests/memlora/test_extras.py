"""The ``eval`` extra: without its packages (rouge-score, nltk, bm25s, matplotlib) the core still installs, imports and
runs its help; an evaluation that needs one says, in one line, which extra to install."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from memlora.errors import MemloraError
from memlora.extras import EVAL, has_module, import_extra

EVAL_PACKAGES = ("rouge_score", "nltk", "bm25s", "matplotlib")
HINT = "needs the 'eval' extra: pip install 'memlora[eval]'"


def block(monkeypatch, *packages: str) -> None:
    """Make ``packages`` (and their submodules) unimportable, as if the eval extra were not installed."""
    for name in list(sys.modules):
        if name.split(".")[0] in packages:
            monkeypatch.delitem(sys.modules, name)
    for package in packages:
        monkeypatch.setitem(sys.modules, package, None)


def test_the_eval_extra_lists_the_evaluation_packages_and_the_test_extra_includes_it(repo_root):
    import tomllib

    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert sorted(extras[EVAL]) == ["bm25s", "matplotlib", "nltk", "rouge-score"]
    assert "memlora[eval]" in extras["test"]
    core = " ".join(project["dependencies"])
    assert not any(p in core for p in ("rouge-score", "nltk", "bm25s", "matplotlib"))


def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch):
    from memlora import text_metrics

    assert text_metrics.rouge1_f("a red car", "the red car") > 0  # installed here: the real scorer
    block(monkeypatch, "rouge_score")
    text_metrics._rouge_scorer.cache_clear()
    with pytest.raises(MemloraError) as info:
        text_metrics.rouge1_f("a red car", "the red car")
    assert str(info.value) == f"ROUGE-1 (rouge-score) {HINT} (module rouge_score not found)"
    assert not has_module("rouge_score") and has_module("json")
    assert import_extra("json", "anything") is json


@pytest.mark.parametrize("entry, args", [
    ("memlora", ["eval", "--retrieval", "hybrid", "--retrieval-only", "--quiet", "--threads", "1"]),
    ("memlora-bench", ["locomo-retrieval", "--split", "test", "--no-cache", "--threads", "1"]),
])
def test_memlora_eval_and_memlora_bench_say_which_extra_to_install(monkeypatch, capsys, tmp_path, entry, args):
    from memlora.bench.cli import main as bench_main
    from memlora.cli import main
    from memlora.paths import data_file

    conversations = json.loads(data_file("sample_conversation.json").read_text())
    conversations[0]["sample_id"] = "conv-49"  # a test-split id, so the test split finds it
    locomo = tmp_path / "locomo.json"
    locomo.write_text(json.dumps(conversations))
    block(monkeypatch, "bm25s")
    run = {"memlora": lambda a: main([*a, "--out", str(tmp_path / "run")]), "memlora-bench": bench_main}[entry]
    with pytest.raises(SystemExit) as exit_info:
        run([*args, "--locomo", str(locomo)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: hybrid retrieval (bm25s) {HINT} (module bm25s not found)"


CORE_WITHOUT_EVAL = f"""
import importlib.abc, sys

class NoEval(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EVAL_PACKAGES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

sys.meta_path.insert(0, NoEval())
import memlora.runtime, memlora.export, memlora.runtime.memory, memlora.export.compiler
from memlora.bench.cli import main as bench_main
from memlora.cli import main, train_main
from memlora.export.cli import main as export_main
for entry, command in ((main, ["demo", "--help"]), (main, ["pull", "--help"]), (main, ["eval", "--help"]),
                       (bench_main, ["--help"]), (bench_main, ["store", "--help"]), (export_main, ["--help"]),
                       (train_main, ["world", "export", "--help"])):
    try:
        entry(command)
    except SystemExit as exc:
        assert exc.code in (0, None), (command, exc.code)
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in {EVAL_PACKAGES!r}))
"""


def test_the_core_imports_and_helps_without_the_eval_packages():
    proc = subprocess.run([sys.executable, "-c", CORE_WITHOUT_EVAL], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "ok []"
