"""Training throughput on one GPU: the seed's stack against chef-genius, on the same rows.

Configurations (each in its own process, so peak memory is its own):
- baseline: Hugging Face Seq2SeqTrainer + PEFT LoRA r16 on q, v, bf16, batch 12, inputs padded to
  256 and targets to 512, gradient accumulation 4 (48 examples per optimizer step), as the seed;
- ours-seed-batch: chef-genius, batch 12 x 4, length-grouped batches padded to the batch;
- ours-max-throughput: chef-genius with a token budget per micro-batch (--max-tokens);
- ours-22gib: the RTX 4090 preset (8 x 6), whose card leaves about 22 GiB to training;
- ours-full: chef-genius full fine-tuning at batch 12 x 4 (against ours-seed-batch for LoRA).

Real tokens are non-pad prompt tokens plus target tokens. Model-FLOPs utilization counts the
matrix products each real token passes through, against the H100's ~800 TFLOP/s (bf16, measured):

    MFU = k * (N_enc * source_tokens + N_dec * target_tokens) / seconds / 800e12

N_enc: encoder parameters; N_dec: decoder and LM-head parameters (the embedding lookup is not a
product); k = 2 forward + 2 backward (activation gradients) = 4 with LoRA, whose frozen weights
get no gradient, and 6 for full fine-tuning. Attention-score products are left out (short
sequences). Pad tokens count for nothing. Results go to benchmarks/results/throughput.json,
written after each configuration.

    python benchmarks/throughput.py --model /tmp/flan-t5-large --data /tmp/data --steps 20
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

PEAK_FLOPS = 800e12
CONFIGS = ("baseline", "ours-seed-batch", "ours-48x1", "ours-max-throughput", "ours-22gib", "ours-full-48x1",
           "plain-48x1", "plain-full-48x1", "plain-seed-batch", "ours-full-seed-batch",
           "48x1-no-graphs", "48x1-no-fused-norm", "48x1-no-shared-bias",
           "48x1-lora-fp32-inputs", "48x1-lora-dropout-0", "48x1-compiled-no-graphs", "max-throughput-no-graphs",
           "seed-batch-no-graphs", "seed-batch-not-compiled", "max-throughput-not-compiled", "22gib-token-budget",
           "hf-forward-seed-batch", "hf-forward-max-throughput")


def _ours(model: str, data: str, steps: int, overrides: dict) -> dict:
    import torch

    from chef_genius.config import build_config
    from chef_genius.dataset.collate import PlannedBatches
    from chef_genius.model.ranks import Ranks
    from chef_genius.training.run import build_run, start_state
    from chef_genius.training.trainer import batch_loader, collator, optimizer_step

    settings = {"model.name": model, "data.path": data, "output_dir": "/tmp/throughput-run", "data.curriculum": False,
                "data.progressive_quality": False, "logging.report_to": ["jsonl"], "data.num_workers": 4,
                "gradient_noise.enabled": False, "model.max_source_tokens": 256}
    run = build_run(build_config(None, {**settings, **overrides}), Ranks.start())
    state = start_state(run)
    batches = run.plan.batches(0)
    accumulation = run.config.optim.gradient_accumulation_steps
    loader = batch_loader(run, PlannedBatches(list(batches) * 8, collator(run, run.plan.epoch_data(0).examples)))
    # Warm-up: compiled code settles on a few shapes; CUDA graphs capture each batch shape once
    # (one pass over the epoch's batches), as the first steps of a long run do.
    warmup = 8 if run.config.model.compile_blocks else 3
    if run.graphed is not None:
        warmup = -(-len(batches) // accumulation)
    real = {"source": 0, "target": 0, "padded": 0}
    started = None
    torch.cuda.reset_peak_memory_stats()  # peaks include warm-up and graph capture
    for step in range(warmup + steps):
        micro = [next(loader) for _ in range(accumulation)]
        if step == warmup:
            torch.cuda.synchronize()
            started = time.perf_counter()
        optimizer_step(run, state, micro)
        if step >= warmup:
            for b in micro:
                real["source"] += int(b["attention_mask"].sum())
                real["target"] += int((b["labels"] != -100).sum())
                real["padded"] += b["input_ids"].numel() + b["labels"].numel()
                real["examples"] = real.get("examples", 0) + int((b["labels"] != -100).any(1).sum())
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens = real["source"] + real["target"]
    result = {"tokens_per_second": tokens / seconds, "peak_gib": torch.cuda.max_memory_reserved() / 2**30,
              "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
              "optimizer_steps": steps, "seconds": seconds, "padded_per_real_token": real["padded"] / tokens,
              "source_tokens": real["source"], "target_tokens": real["target"],
              **_parameter_split(run.model.saved), "lora": run.config.lora.enabled}
    result["examples_per_second"] = real["examples"] / seconds
    if run.graphed is not None:
        result["cuda_graphs"] = len(run.graphed.graphs)
        result["capture_seconds"] = run.graphed.capture_seconds
        result["graph_failures"] = run.graphed.failed[:3]
    return result


def _parameter_split(model) -> dict:
    """Parameters in the encoder, and in the decoder with the LM head (what each token passes)."""
    encoder = decoder = 0
    for name, param in model.named_parameters():
        if "lora_" in name or name.endswith("shared.weight"):
            continue  # adapters are tiny; an embedding lookup is not a matrix product
        if ".encoder." in f".{name}":
            encoder += param.numel()
        else:
            decoder += param.numel()
    return {"encoder_parameters": encoder, "decoder_parameters": decoder}


def model_flops(result: dict) -> float:
    """Matrix-product FLOPs of the timed steps: 2 per parameter and token forward, 2 backward
    for the activations' gradients, and 2 more for weight gradients when every weight trains."""
    factor = 4 if result.get("lora") else 6
    return factor * (result["encoder_parameters"] * result["source_tokens"]
                     + result["decoder_parameters"] * result["target_tokens"])


def _baseline(model: str, data: str, steps: int) -> dict:
    import torch
    from seed_stack import SOURCE_PAD, TARGET_PAD, rows_dataset, seed_lora_model, seed_rows
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

    rows = seed_rows(model, data)
    peft_model = seed_lora_model(model)
    warmup = 3
    timing: dict = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                torch.cuda.synchronize()
                timing["start"] = time.perf_counter()
            if state.global_step == warmup + steps:
                torch.cuda.synchronize()
                timing["end"] = time.perf_counter()

    arguments = Seq2SeqTrainingArguments(output_dir="/tmp/baseline", per_device_train_batch_size=12,
                                         gradient_accumulation_steps=4, bf16=True, max_steps=warmup + steps,
                                         learning_rate=3e-4, report_to=[], save_strategy="no", logging_steps=1000,
                                         dataloader_num_workers=4, label_smoothing_factor=0.1, seed=0,
                                         remove_unused_columns=False)  # PeftModel.forward hides its arguments
    trainer = Seq2SeqTrainer(model=peft_model, args=arguments, train_dataset=rows_dataset(rows), callbacks=[Clock()])
    trainer.train()
    seconds = timing["end"] - timing["start"]
    examples = steps * 48
    # Real tokens: the examples trained on times the data's mean real (non-pad) tokens per example.
    mean_source = sum(sum(r["attention_mask"]) for r in rows) / len(rows)
    mean_target = sum(sum(t != -100 for t in r["labels"]) for r in rows) / len(rows)
    mean_real = mean_source + mean_target
    return {"tokens_per_second": examples * mean_real / seconds, "examples_per_second": examples / seconds,
            "peak_gib": torch.cuda.max_memory_reserved() / 2**30,
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30, "optimizer_steps": steps,
            "seconds": seconds,
            "mean_real_tokens_per_example": mean_real, "source_tokens": examples * mean_source,
            "target_tokens": examples * mean_target, "padded_per_real_token": (SOURCE_PAD + TARGET_PAD) / mean_real,
            **_parameter_split(peft_model), "lora": True}


SEED_BATCH = {"optim.batch_size": 12, "optim.gradient_accumulation_steps": 4}
ONE_BATCH = {"optim.batch_size": 48, "optim.gradient_accumulation_steps": 1}
NO_LEVERS = {"model.cuda_graphs": False, "model.fused_norm": False, "model.shared_bias_attention": False,
             "lora.fp32_inputs": True, "model.compile_blocks": False, "model.fast_forward": False}


def overrides_for(name: str, max_tokens: int, cap_tokens: int) -> dict:
    """Each configuration's settings; an ablation turns one lever off from the defaults."""
    budget = {"optim.max_tokens": max_tokens, "optim.gradient_accumulation_steps": 1}
    return {
        "ours-seed-batch": SEED_BATCH,
        "ours-48x1": ONE_BATCH,
        "ours-max-throughput": budget,
        "ours-22gib": {"optim.batch_size": 8, "optim.gradient_accumulation_steps": 6},  # the rtx4090 preset
        "ours-full-48x1": {**ONE_BATCH, "lora.enabled": False},
        "plain-48x1": {**ONE_BATCH, **NO_LEVERS},
        "plain-full-48x1": {**ONE_BATCH, **NO_LEVERS, "lora.enabled": False},
        "plain-seed-batch": {**SEED_BATCH, **NO_LEVERS},
        "ours-full-seed-batch": {**SEED_BATCH, "lora.enabled": False},
        "48x1-no-graphs": {**ONE_BATCH, "model.cuda_graphs": False},
        "48x1-no-fused-norm": {**ONE_BATCH, "model.fused_norm": False},
        "48x1-no-shared-bias": {**ONE_BATCH, "model.shared_bias_attention": False},
        "48x1-lora-fp32-inputs": {**ONE_BATCH, "lora.fp32_inputs": True},
        "48x1-lora-dropout-0": {**ONE_BATCH, "lora.dropout": 0.0},
        "48x1-compiled-no-graphs": {**ONE_BATCH, "model.cuda_graphs": False, "model.compile_blocks": True},
        "max-throughput-no-graphs": {**budget, "model.cuda_graphs": False},
        "seed-batch-no-graphs": {**SEED_BATCH, "model.cuda_graphs": False},
        "seed-batch-not-compiled": {**SEED_BATCH, "model.compile_blocks": False},
        "max-throughput-not-compiled": {**budget, "model.compile_blocks": False},
        "22gib-token-budget": {"optim.max_tokens": cap_tokens, "optim.gradient_accumulation_steps": 1},
        "hf-forward-seed-batch": {**SEED_BATCH, "model.fast_forward": False},
        "hf-forward-max-throughput": {**budget, "model.fast_forward": False},
    }[name]


def measure(name: str, model: str, data: str, steps: int, max_tokens: int, cap_tokens: int) -> dict:
    if name == "baseline":
        return _baseline(model, data, steps)
    return _ours(model, data, steps, overrides_for(name, max_tokens, cap_tokens))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--cap-tokens", type=int, default=6144)
    parser.add_argument("--only", nargs="+", choices=CONFIGS)
    parser.add_argument("--config", choices=CONFIGS, help="measure one configuration (used internally)")
    parser.add_argument("--timeout", type=int, default=240, help="seconds allowed per configuration")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "throughput.json"))
    args = parser.parse_args()
    if args.config:
        print("RESULT " + json.dumps(measure(args.config, args.model, args.data, args.steps, args.max_tokens,
                                             args.cap_tokens)))
        return
    import torch
    import transformers

    out = Path(args.out)
    header = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "transformers": transformers.__version__, "python": platform.python_version(),
              "command": " ".join(["python", "benchmarks/throughput.py", *sys.argv[1:]])}
    results: dict = {}
    print(f"{'configuration':<26} {'real tok/s':>11} {'x base':>7} {'ex/s':>7} {'peak GiB':>9} {'MFU':>6} "
          f"{'pad/real':>8} {'graphs':>6}", flush=True)
    for name in args.only or CONFIGS:
        try:
            done = subprocess.run([sys.executable, __file__, "--model", args.model, "--data", args.data, "--steps",
                                   str(args.steps), "--max-tokens", str(args.max_tokens), "--cap-tokens",
                                   str(args.cap_tokens), "--config", name], capture_output=True, text=True,
                                  timeout=args.timeout)
            line = next((o for o in done.stdout.splitlines() if o.startswith("RESULT ")), None)
            r = json.loads(line[7:]) if line else {"error": done.stderr.strip()[-600:]}
        except subprocess.TimeoutExpired:
            r = {"error": f"timed out after {args.timeout} s"}
        results[name] = r
        if "error" in r:
            print(f"{name:<26} error: {r['error'][-300:]}", flush=True)
        else:
            baseline = results.get("baseline", {}).get("tokens_per_second")
            r["mfu"] = model_flops(r) / r["seconds"] / PEAK_FLOPS
            r["x_baseline"] = r["tokens_per_second"] / baseline if baseline else None
            ratio = f"{r['x_baseline']:.2f}" if baseline else "-"
            print(f"{name:<26} {r['tokens_per_second']:>11,.0f} {ratio:>7} {r['examples_per_second']:>7.1f} "
                  f"{r['peak_gib']:>9.1f} {100 * r['mfu']:>5.1f}% {r['padded_per_real_token']:>8.2f} "
                  f"{r.get('cuda_graphs', '-'):>6}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**header, "results": results}, indent=2))  # kept after each configuration


if __name__ == "__main__":
    main()
