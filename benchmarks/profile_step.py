"""Where an optimizer step's time goes: wall time against GPU kernel time, kernel launches, and
the heaviest kernels, for one chef-genius training configuration (run on the GPU machine).

A step whose kernel time is far below its wall time is bound by the host (Python, launches);
one whose kernel time is close to it is bound by the GPU.

    python benchmarks/profile_step.py --model /tmp/flan-t5-large --data /tmp/data \
        --set optim.batch_size=12 --set optim.gradient_accumulation_steps=4 --json /tmp/p.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--attn", choices=["eager", "sdpa"], help="attention implementation (default: the model's)")
    parser.add_argument("--no-dropout", action="store_true", help="turn every dropout off")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json")
    args = parser.parse_args()

    import yaml

    from chef_genius.config import build_config
    from chef_genius.dataset.collate import PlannedBatches
    from chef_genius.model.ranks import Ranks
    from chef_genius.training.run import build_run, start_state
    from chef_genius.training.trainer import batch_loader, collator, optimizer_step

    settings = {"model.name": args.model, "data.path": args.data, "output_dir": "/tmp/profile-run",
                "data.curriculum": False, "data.progressive_quality": False, "logging.report_to": ["jsonl"],
                "data.num_workers": 4, "gradient_noise.enabled": False, "model.max_source_tokens": 256}
    overrides = {key: yaml.safe_load(value) for key, value in (a.split("=", 1) for a in args.set)}
    run = build_run(build_config(None, {**settings, **overrides}), Ranks.start())
    state = start_state(run)
    base = run.model.saved
    if args.attn:
        base.set_attn_implementation(args.attn)
    if args.no_dropout:
        for module in base.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
            elif isinstance(getattr(module, "dropout", None), float):
                module.dropout = 0.0
    batches = run.plan.batches(0)
    loader = batch_loader(run, PlannedBatches(list(batches) * 8, collator(run, run.plan.epoch_data(0).examples)))
    accumulation = run.config.optim.gradient_accumulation_steps
    warmup = 8 if run.config.model.compile_blocks else 3
    if run.graphed is not None:  # capture every batch shape first
        warmup = -(-len(batches) // accumulation)

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step() -> int:
        micro = [next(loader) for _ in range(accumulation)]
        optimizer_step(run, state, micro)
        return sum(int(b["attention_mask"].sum()) + int((b["labels"] != -100).sum()) for b in micro)

    for _ in range(warmup):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started, tokens = time.perf_counter(), 0
    for _ in range(args.steps):
        tokens += step()
    sync()
    wall = (time.perf_counter() - started) / args.steps
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        step()
        sync()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernel_ms = sum(e.device_time for e in kernels) / 1e3  # device_time: microseconds
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.top, max_name_column_width=90)
    result = {"settings": args.set, "attn": args.attn or "default", "no_dropout": args.no_dropout,
              "wall_ms_per_step": 1e3 * wall, "tokens_per_second": tokens / args.steps / wall,
              "kernel_ms_per_step": kernel_ms, "kernels_per_step": len(kernels),
              "gpu_busy_fraction": kernel_ms / (1e3 * wall),
              "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
    print(json.dumps(result))
    print(table)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({**result, "table": table}, handle, indent=2)


if __name__ == "__main__":
    main()
