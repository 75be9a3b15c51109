"""memlora: a private, on-device long-term memory run by a small language model with one LoRA expert per memory operation.

The package is one namespace over the repository's top-level folders:

- ``memlora.runtime``  (``runtime/``)    on-device: prompts, parsing, memory store, embedder, engines, the memory loop
- ``memlora.export``   (``export/``)     trained adapters -> verified ONNX Runtime GenAI multi-LoRA bundle
- ``memlora.distill``  (``distill/``)    teacher data, cleaning, expert training, LoCoMo and the synthetic world
- ``memlora.bench``    (``benchmarks/``) speed and quality harness
"""

__version__ = "0.1.0"

STAGES = ("extraction", "update", "generation", "vqa")
"""The memory operations, one expert adapter each (paper 3.2 and 3.3)."""

DEFAULT_WORLD_PRESET = "copy"
"""The synthetic-world preset (``memlora.distill.world_experts``) of ``memlora demo`` and ``memlora eval --world`` when
none is named; here, not there, so that the CLIs can name it without importing the world."""
