"""Training throughput on one GPU: the seed's stack against chef-genius, on the same rows.

Configurations (each in its own process, so peak memory is its own):
- baseline: Hugging Face Seq2SeqTrainer + PEFT LoRA r16 on q, v, bf16, batch 12, inputs padded to
  256 and targets to 512, gradient accumulation 4 (48 examples per optimizer step), as the seed;
- ours-seed-batch: chef-genius, batch 12 x 4, length-grouped batches padded to the batch;
- ours-max-throughput: chef-genius with a token budget per micro-batch (--max-tokens);
- ours-22gib: the largest token budget that stays under 22 GiB (the RTX 4090 preset's cap);
- ours-full: chef-genius full fine-tuning at batch 12 x 4 (against ours-seed-batch for LoRA).

Real tokens are non-pad prompt tokens plus target tokens. Model-FLOPs utilization:

    MFU = 6 * N * real_tokens_per_second / 800e12      (N: all model parameters)

the usual 6N estimate of training FLOPs per token (2N forward, 4N backward). With LoRA the weight
gradients of frozen layers are skipped, so 6N slightly overstates the work; the same formula is
used for every row so that they compare. Results go to benchmarks/results/throughput.json.

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
CONFIGS = ("baseline", "ours-seed-batch", "ours-max-throughput", "ours-22gib", "ours-full",
           "ours-seed-batch-compiled", "ours-seed-batch-no-lora-dropout", "ours-max-throughput-compiled")


def _ours(model: str, data: str, steps: int, overrides: dict) -> dict:
    import torch

    from chef_genius.config import build_config
    from chef_genius.training.data import Collator
    from chef_genius.training.trainer import Trainer

    settings = {"model.name": model, "data.path": data, "output_dir": "/tmp/throughput-run", "data.curriculum": False,
                "data.progressive_quality": False, "logging.report_to": ["jsonl"], "data.num_workers": 4,
                "gradient_noise.enabled": False, "model.max_source_tokens": 256}
    trainer = Trainer(build_config(None, {**settings, **overrides}))
    trainer.setup()
    epoch = trainer.epoch_data(0)
    batches = trainer._plan(0)
    collator = Collator(epoch.examples, trainer.pad_id, trainer.causal)
    accumulation = trainer.config.optim.gradient_accumulation_steps
    loader = trainer._loader(trainer_module_planned(batches, collator))
    warmup = 8 if trainer.config.model.compile_blocks else 3  # compiled code settles on a few shapes
    torch.cuda.reset_peak_memory_stats()
    tokens = examples = 0
    started = None
    for step in range(warmup + steps):
        micro = [next(loader) for _ in range(accumulation)]
        if step == warmup:
            torch.cuda.synchronize()
            started = time.perf_counter()
        trainer._optimizer_step(micro)
        if step >= warmup:
            tokens += sum(int(b["attention_mask"].sum()) + int((b["labels"] != -100).sum()) for b in micro)
            examples += sum(len(b["input_ids"]) for b in micro)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    parameters = sum(p.numel() for p in trainer.model.parameters())
    return {"tokens_per_second": tokens / seconds, "examples_per_second": examples / seconds,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "parameters": parameters,
            "optimizer_steps": steps, "seconds": seconds}


def trainer_module_planned(batches, collator):
    from chef_genius.training.data import PlannedBatches

    return PlannedBatches(batches * 4, collator)  # enough batches for warmup + steps


def _baseline(model: str, data: str, steps: int) -> dict:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        TrainerCallback,
    )

    from chef_genius.augment import canonical_prompt
    from chef_genius.config import SEED_TEMPLATES
    from chef_genius.recipe import serialize
    from chef_genius.training.data import load_split

    tokenizer = AutoTokenizer.from_pretrained(model)
    table = load_split(Path(data), "train")
    prompts = [canonical_prompt(SEED_TEMPLATES, t, n) for t, n in zip(table.titles, table.ner, strict=True)]
    targets = [serialize(table.recipe(i)) for i in range(len(table))]
    inputs = tokenizer(prompts, max_length=256, padding="max_length", truncation=True)
    labels = tokenizer(targets, max_length=512, padding="max_length", truncation=True)["input_ids"]
    pad = tokenizer.pad_token_id
    # decoder_input_ids as DataCollatorForSeq2Seq makes them (the Trainer pops labels when smoothing).
    rows = [{"input_ids": i, "attention_mask": m, "labels": [t if t != pad else -100 for t in lab],
             "decoder_input_ids": [pad, *lab[:-1]]}
            for i, m, lab in zip(inputs["input_ids"], inputs["attention_mask"], labels, strict=True)]

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            return {k: torch.tensor(v) for k, v in rows[i].items()}

    base = AutoModelForSeq2SeqLM.from_pretrained(model, dtype=torch.bfloat16)
    peft_model = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=16, lora_alpha=32,
                                                 lora_dropout=0.1, target_modules=["q", "v"]))
    warmup = 3
    timing: dict = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                torch.cuda.synchronize()
                timing["start"] = time.perf_counter()
                torch.cuda.reset_peak_memory_stats()
            if state.global_step == warmup + steps:
                torch.cuda.synchronize()
                timing["end"] = time.perf_counter()

    arguments = Seq2SeqTrainingArguments(output_dir="/tmp/baseline", per_device_train_batch_size=12,
                                         gradient_accumulation_steps=4, bf16=True, max_steps=warmup + steps,
                                         learning_rate=3e-4, report_to=[], save_strategy="no", logging_steps=1000,
                                         dataloader_num_workers=4, label_smoothing_factor=0.1, seed=0,
                                         remove_unused_columns=False)  # PeftModel.forward hides its arguments
    trainer = Seq2SeqTrainer(model=peft_model, args=arguments, train_dataset=Rows(), callbacks=[Clock()])
    trainer.train()
    seconds = timing["end"] - timing["start"]
    examples = steps * 48
    # Real tokens: the examples trained on times the data's mean real (non-pad) tokens per example.
    mean_real = sum(sum(r["attention_mask"]) + sum(t != -100 for t in r["labels"]) for r in rows) / len(rows)
    return {"tokens_per_second": examples * mean_real / seconds, "examples_per_second": examples / seconds,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
            "parameters": sum(p.numel() for p in peft_model.parameters()), "optimizer_steps": steps,
            "seconds": seconds, "mean_real_tokens_per_example": mean_real}


def measure(name: str, model: str, data: str, steps: int, max_tokens: int, cap_tokens: int) -> dict:
    if name == "baseline":
        return _baseline(model, data, steps)
    overrides = {
        "ours-seed-batch": {"optim.batch_size": 12, "optim.gradient_accumulation_steps": 4},
        "ours-max-throughput": {"optim.max_tokens": max_tokens, "optim.gradient_accumulation_steps": 1},
        "ours-22gib": {"optim.max_tokens": cap_tokens, "optim.gradient_accumulation_steps": 1},
        "ours-full": {"optim.batch_size": 12, "optim.gradient_accumulation_steps": 4, "lora.enabled": False},
        "ours-seed-batch-compiled": {"optim.batch_size": 12, "optim.gradient_accumulation_steps": 4,
                                     "model.compile_blocks": True},
        "ours-seed-batch-no-lora-dropout": {"optim.batch_size": 12, "optim.gradient_accumulation_steps": 4,
                                            "lora.dropout": 0.0},
        "ours-max-throughput-compiled": {"optim.max_tokens": max_tokens, "optim.gradient_accumulation_steps": 1,
                                         "model.compile_blocks": True},
    }[name]
    return _ours(model, data, steps, overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--cap-tokens", type=int, default=6144)
    parser.add_argument("--only", nargs="+", choices=CONFIGS)
    parser.add_argument("--config", choices=CONFIGS, help="measure one configuration (used internally)")
    args = parser.parse_args()
    if args.config:
        print("RESULT " + json.dumps(measure(args.config, args.model, args.data, args.steps, args.max_tokens,
                                             args.cap_tokens)))
        return
    results = {}
    for name in args.only or CONFIGS:
        done = subprocess.run([sys.executable, __file__, "--model", args.model, "--data", args.data, "--steps",
                               str(args.steps), "--max-tokens", str(args.max_tokens), "--cap-tokens",
                               str(args.cap_tokens), "--config", name], capture_output=True, text=True)
        line = next((out for out in done.stdout.splitlines() if out.startswith("RESULT ")), None)
        results[name] = json.loads(line[7:]) if line else {"error": done.stderr.strip()[-400:]}
    baseline = results.get("baseline", {}).get("tokens_per_second")
    print(f"{'configuration':<22} {'real tok/s':>11} {'x baseline':>10} {'examples/s':>11} {'peak GiB':>9} {'MFU':>6}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<22} error: {r['error'][-200:]}")
            continue
        r["mfu"] = 6 * r["parameters"] * r["tokens_per_second"] / PEAK_FLOPS
        ratio = f"{r['tokens_per_second'] / baseline:.2f}" if baseline else "-"
        print(f"{name:<22} {r['tokens_per_second']:>11,.0f} {ratio:>10} {r['examples_per_second']:>11.1f} "
              f"{r['peak_gib']:>9.1f} {100 * r['mfu']:>5.1f}%")
    import torch
    import transformers

    out = Path(__file__).parent / "results" / "throughput.json"
    out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                               "transformers": transformers.__version__, "python": platform.python_version(),
                               "command": " ".join(["python", "benchmarks/throughput.py", *sys.argv[1:]]),
                               "results": results}, indent=2))


if __name__ == "__main__":
    main()
