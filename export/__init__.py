"""memlora.export: trained experts + base model -> a verified ONNX Runtime GenAI multi-LoRA bundle.

Entry points: ``compiler.export_bundle(ExportConfig)``, ``verify.verify_bundle``, ``add_adapter.add_adapter``; the CLI is
``memlora-export`` (``cli.py``). The bundle loader lives in ``memlora.runtime.bundle`` (the runtime must not import the exporter).
"""
