"""Peak GPU memory of each --preset with FLAN-T5-large, in the worst case.

Each preset runs in its own process: the real trainer is set up (model, LoRA, optimizer) and
takes two optimizer steps whose micro-batches are all full length (prompt max_source_tokens,
target max_target_tokens), so the peak is an upper bound for real data. Prints a table and
writes benchmarks/results/preset_memory.json.

    python benchmarks/preset_memory.py --model /tmp/flan-t5-large --data /tmp/data
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

CARDS_GIB = {"rtx3090": 24, "rtx4090": 24, "rtx5090": 32, "h100": 80}


def measure(model: str, data: str, preset: str) -> dict:
    import torch

    from chef_genius.config import build_config
    from chef_genius.training.trainer import Trainer

    config = build_config(None, {"model.name": model, "data.path": data, "preset": preset,
                                 "output_dir": f"/tmp/preset-{preset}", "logging.report_to": ["jsonl"],
                                 "data.num_workers": 0})
    trainer = Trainer(config)
    trainer.setup()
    o, m = config.optim, config.model
    source = torch.randint(3, 1000, (o.batch_size, m.max_source_tokens))
    labels = torch.randint(3, 1000, (o.batch_size, m.max_target_tokens))
    batch = {"input_ids": source, "attention_mask": torch.ones_like(source), "labels": labels}
    torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        trainer._optimizer_step([batch] * o.gradient_accumulation_steps)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30
    reserved = torch.cuda.max_memory_reserved() / 2**30
    return {"preset": preset, "batch_size": o.batch_size, "gradient_accumulation_steps": o.gradient_accumulation_steps,
            "lora_r": config.lora.r, "tokens_per_example": m.max_source_tokens + m.max_target_tokens,
            "peak_allocated_gib": round(peak, 2), "peak_reserved_gib": round(reserved, 2),
            "card_gib": CARDS_GIB[preset], "margin_gib": round(CARDS_GIB[preset] - reserved, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", help="measure one preset in this process (used internally)")
    parser.add_argument("--only", nargs="+", choices=sorted(CARDS_GIB), help="measure these presets only")
    args = parser.parse_args()
    if args.preset:
        print("RESULT " + json.dumps(measure(args.model, args.data, args.preset)))
        return
    rows = []
    for preset in args.only or CARDS_GIB:
        done = subprocess.run([sys.executable, __file__, "--model", args.model, "--data", args.data,
                               "--preset", preset], capture_output=True, text=True)
        line = next((out for out in done.stdout.splitlines() if out.startswith("RESULT ")), None)
        rows.append(json.loads(line[7:]) if line else {"preset": preset, "error": done.stderr.strip()[-300:]})
    print(f"{'preset':<8} {'batch x accum':>13} {'r':>3} {'peak alloc GiB':>15} {'peak reserved GiB':>18} "
          f"{'card GiB':>9} {'margin GiB':>11}")
    for r in rows:
        if "error" in r:
            print(f"{r['preset']:<8} error: {r['error']}")
            continue
        print(f"{r['preset']:<8} {r['batch_size']:>6} x {r['gradient_accumulation_steps']:<4} {r['lora_r']:>3} "
              f"{r['peak_allocated_gib']:>15} {r['peak_reserved_gib']:>18} {r['card_gib']:>9} {r['margin_gib']:>11}")
    import torch

    out = Path(__file__).parent / "results" / "preset_memory.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"model": "FLAN-T5-large architecture (random weights)", "rows": rows,
                               "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                               "python": platform.python_version(),
                               "command": "python benchmarks/preset_memory.py --model MODEL --data DATA"}, indent=2))


if __name__ == "__main__":
    main()
