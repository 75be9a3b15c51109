"""Expert-training throughput: tokens/s of LoRA training steps on a synthetic model (random weights, real shape).

    memlora-bench train-throughput --model tiny
    memlora-bench train-throughput --model qwen2.5-0.5b --steps 3 --seq-len 256

For each LoRA placement (q_proj,v_proj as extraction/update use; all-linear as generation/vqa use) it runs a few
AdamW steps of the real training step (forward, completion-only loss, backward, optimiser) on random token batches
of a fixed shape and reports tokens/s over the timed steps (the first ``--warmup`` steps are not timed).
"""

from __future__ import annotations

import time


def measure(model_dir, target_modules, steps: int, warmup: int, batch_size: int, seq_len: int, threads: int | None) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.1, target_modules=target_modules,
                                             task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch_size, seq_len))
    labels = ids.clone()
    labels[:, : seq_len // 2] = -100  # half prompt (masked), half completion, as in expert training
    model.train()
    timed = 0.0
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step >= warmup:
            timed += time.perf_counter() - t0
    tokens = steps * batch_size * seq_len
    return {"target_modules": target_modules if isinstance(target_modules, str) else ",".join(target_modules),
            "trainable_parameters": int(sum(p.numel() for p in params)), "steps": steps, "batch_size": batch_size,
            "seq_len": seq_len, "seconds": round(timed, 3), "tokens_per_s": round(tokens / timed, 1)}
