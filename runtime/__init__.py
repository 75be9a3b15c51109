"""On-device runtime: prompts, tolerant output parsing, the durable memory store, the embedder, engines and the loop."""
