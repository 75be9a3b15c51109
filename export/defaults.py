"""What ``memlora-export --adapters out/`` fills in when it is not told: the base model the experts' training cards name, the
int4 block size they were trained against, and the bundle directory beside ``out/``.

Every expert ``memlora-train`` writes carries a ``training_card.json`` whose ``base_model.dir`` is the resolved base model
directory it was trained on (a ``memlora pull`` model is a folder in the memlora cache, named the same way); the experts
shipped in the package name it by its pull name instead (``base_model.pull``), resolved to this machine's cache. All experts must
name the same directory; an expert without a card or without that field, a disagreement, or a directory that no longer exists is
refused with one ``AdapterError`` line that says how to pass ``--base``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from memlora.errors import AdapterError
from memlora.export.adapters import CARD_FILE, discover_experts
from memlora.export.pull import MODELS, model_dir

DEFAULT_BUNDLE_NAME = "bundle"
"""Bundle directory created beside ``out/`` when ``-o`` is not given."""


@dataclass(frozen=True)
class CardBase:
    """The base model the experts' training cards agree on."""

    path: Path
    """The base model directory (exists)."""
    cards: tuple[Path, ...]
    """The training cards that name it, in stage order."""


def _read_card(card: Path, hint: str = "") -> dict:
    """A training card's JSON object ({} for any other JSON value); one ``AdapterError`` line when it is not JSON."""
    try:
        data = json.loads(card.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{card}: not valid JSON ({exc.msg}){hint}") from None
    return data if isinstance(data, dict) else {}


def _card_base_dir(card: Path) -> str:
    """The ``base_model.dir`` a training card records; refuses a card without one."""
    if not card.is_file():
        raise AdapterError(f"{card.parent} has no {CARD_FILE}, so its base model is unknown: pass --base MODEL_DIR")
    base = _read_card(card, "; pass --base MODEL_DIR").get("base_model")
    value = base.get("dir") if isinstance(base, dict) else None
    pulled = base.get("pull") if isinstance(base, dict) else None
    if not value and isinstance(pulled, str) and pulled in MODELS:  # shipped experts name their base by its pull name
        return str(model_dir(pulled))
    if not isinstance(value, str) or not value:
        raise AdapterError(f"{card} records no base model (base_model.dir; written before cards named it): "
                           "pass --base MODEL_DIR")
    return value


def _missing_hint(path: Path) -> str:
    """How to get a missing base back: ``memlora pull NAME`` when the folder is a pulled model's, else ``--base``."""
    if path.name in MODELS:
        return f"run `memlora pull {path.name}` to restore it, or pass --base MODEL_DIR"
    return "pass --base MODEL_DIR (the model the experts were trained on)"


def base_from_cards(adapters_dir: str | Path) -> CardBase:
    """The one base model directory every expert in ``adapters_dir`` was trained on, read from their training cards."""
    adapters_dir = Path(adapters_dir)
    specs = discover_experts(adapters_dir)
    if not specs:
        raise AdapterError(f"{adapters_dir} holds no experts (no adapter_config.json in any subdir)")
    named: dict[str, list[tuple[str, Path]]] = {}
    for spec in specs:
        card = spec.path / CARD_FILE
        base = Path(_card_base_dir(card))
        key = str(base.resolve()) if base.is_dir() else str(base)  # one folder reached through a symlink is one base
        named.setdefault(key, []).append((spec.stage, card))
    if len(named) > 1:
        parts = "; ".join(f"{', '.join(stage for stage, _ in users)} -> {base}" for base, users in named.items())
        raise AdapterError(f"the experts' training cards name different base models ({parts}): "
                           "retrain them on one base, or pass --base MODEL_DIR")
    (base, users), = named.items()
    path = Path(base)
    if not path.is_dir():
        raise AdapterError(f"base model {path}, named by {users[0][1]}, no longer exists: {_missing_hint(path)}")
    return CardBase(path=path, cards=tuple(card for _, card in users))


def int4_block_from_cards(adapters_dir: str | Path) -> int | None:
    """The int4 block size the experts in ``adapters_dir`` were trained against (``memlora-train --int4-base BLOCK``,
    recorded as ``hyperparameters.base_int4_block`` in each training card), so that an int4 bundle runs the weights its
    experts learnt around; None when none of them was (trained on the full-precision base, or no card). Experts trained
    against different block sizes are refused with one ``AdapterError`` line."""
    blocks: dict[int, list[str]] = {}
    for spec in discover_experts(adapters_dir):
        card = spec.path / CARD_FILE
        hyper = (_read_card(card) if card.is_file() else {}).get("hyperparameters")
        block = hyper.get("base_int4_block") if isinstance(hyper, dict) else None
        if block is not None:
            if not isinstance(block, int) or isinstance(block, bool) or block <= 0:
                raise AdapterError(f"{card}: hyperparameters.base_int4_block is {block!r}, not a block size")
            blocks.setdefault(block, []).append(spec.stage)
    if len(blocks) > 1:
        parts = "; ".join(f"{', '.join(stages)} -> {block}" for block, stages in sorted(blocks.items()))
        raise AdapterError(f"the experts were trained against different int4 block sizes ({parts}): "
                           "retrain them against one, or pass --int4-block-size")
    return next(iter(blocks), None)


def default_output(adapters_dir: str | Path) -> Path:
    """The bundle directory used when ``-o`` is not given: ``bundle/`` beside ``out/``."""
    return Path(adapters_dir).resolve().parent / DEFAULT_BUNDLE_NAME
