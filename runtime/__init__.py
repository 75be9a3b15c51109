"""On-device runtime: prompts, tolerant output parsing, the durable memory store, the embedder, engines and the loop."""

import os as _os

# On-device privacy: ONNX Runtime and ONNX Runtime GenAI write a device id and telemetry databases under
# ~/.cache/Microsoft/DeveloperTools unless this is set BEFORE onnxruntime is imported.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
