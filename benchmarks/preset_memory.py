"""Peak GPU memory of each --preset with FLAN-T5-large, in the worst case.

Each preset runs in its own process: the real trainer is set up (model, LoRA, optimizer) and
takes two optimizer steps whose micro-batches are all full length (prompt max_source_tokens,
target max_target_tokens), then one micro-batch of every other batch shape the collator can make,
then a validation pass and sample generation: the peak is an upper bound for real data. The
defaults are on (compiled layers; CUDA graphs, one capture per batch shape in a shared pool).
Prints a table and writes benchmarks/results/preset_memory.json (or --out) after every preset,
so a run cut short keeps what it measured.

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


def measure(model: str, data: str, preset: str, descending: bool = False) -> dict:
    """Peaks after (1) two optimizer steps of full-length micro-batches, (2) one micro-batch of
    every other batch shape a run can meet (with CUDA graphs each is captured; all share one pool),
    (3) a validation pass and sample generation, as a run does at every evaluation."""
    import torch

    from chef_genius.config import build_config
    from chef_genius.model.ranks import Ranks
    from chef_genius.training.evaluating import sample_recipes, validation_loss
    from chef_genius.training.run import build_run, start_state
    from chef_genius.training.trainer import GRAPH_SOURCE_MULTIPLE, GRAPH_TARGET_MULTIPLE, optimizer_step

    config = build_config(None, {"model.name": model, "data.path": data, "preset": preset,
                                 "output_dir": f"/tmp/preset-{preset}", "logging.report_to": ["jsonl"],
                                 "data.num_workers": 0})
    run = build_run(config, Ranks.start())
    state = start_state(run)
    o, m = config.optim, config.model

    def batch(source_width: int, target_width: int) -> dict:
        source = torch.randint(3, 1000, (o.batch_size, source_width))
        labels = torch.randint(3, 1000, (o.batch_size, target_width))
        return {"input_ids": source, "attention_mask": torch.ones_like(source), "labels": labels}

    def peaks() -> tuple[float, float]:
        torch.cuda.synchronize()
        return (round(torch.cuda.max_memory_allocated() / 2**30, 2), round(torch.cuda.max_memory_reserved() / 2**30, 2))

    torch.cuda.reset_peak_memory_stats()
    longest = batch(m.max_source_tokens, m.max_target_tokens)
    for _ in range(2):
        optimizer_step(run, state, [longest] * o.gradient_accumulation_steps)
    one_shape = peaks()
    widths = [(s, t) for s in range(GRAPH_SOURCE_MULTIPLE, m.max_source_tokens + GRAPH_SOURCE_MULTIPLE,
                                    GRAPH_SOURCE_MULTIPLE)
              for t in range(GRAPH_TARGET_MULTIPLE, m.max_target_tokens + GRAPH_TARGET_MULTIPLE, GRAPH_TARGET_MULTIPLE)]
    for source_width, target_width in sorted(widths, key=lambda w: w[0] * w[1], reverse=descending):
        optimizer_step(run, state, [batch(min(source_width, m.max_source_tokens),
                                          min(target_width, m.max_target_tokens))])
    all_shapes = peaks()
    validation_loss(run)
    sample_recipes(run, state)
    with_eval = peaks()
    card = CARDS_GIB[preset]
    return {"preset": preset, "batch_size": o.batch_size, "gradient_accumulation_steps": o.gradient_accumulation_steps,
            "lora_r": config.lora.r, "tokens_per_example": m.max_source_tokens + m.max_target_tokens,
            "peak_allocated_gib": with_eval[0], "peak_reserved_gib": with_eval[1],
            "one_shape_reserved_gib": one_shape[1], "all_shapes_reserved_gib": all_shapes[1],
            "batch_shapes": len(run.graphed.graphs) if run.graphed else len(widths),
            "card_gib": card, "margin_gib": round(card - with_eval[1], 2),
            "shape_order": "descending" if descending else "ascending",
            "inactive_split_gib": round(torch.cuda.memory_stats()["inactive_split_bytes.all.current"] / 2**30, 2),
            "compiled_layers": m.compile_blocks, "cuda_graphs": run.graphed is not None,
            "graph_capture_s": round(run.graphed.capture_seconds, 1) if run.graphed else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", help="measure one preset in this process (used internally)")
    parser.add_argument("--only", nargs="+", choices=sorted(CARDS_GIB), help="measure these presets only")
    parser.add_argument("--descending", action="store_true", help="meet the other batch shapes largest first")
    parser.add_argument("--timeout", type=float, default=400, help="seconds allowed per preset")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "preset_memory.json")
    args = parser.parse_args()
    if args.preset:
        print("RESULT " + json.dumps(measure(args.model, args.data, args.preset, args.descending)))
        return
    rows = []
    for preset in args.only or CARDS_GIB:
        try:
            done = subprocess.run([sys.executable, __file__, "--model", args.model, "--data", args.data,
                                   "--preset", preset] + ["--descending"] * args.descending,
                                  capture_output=True, text=True, timeout=args.timeout)
            line = next((out for out in done.stdout.splitlines() if out.startswith("RESULT ")), None)
            rows.append(json.loads(line[7:]) if line else {"preset": preset, "error": done.stderr.strip()[-300:]})
        except subprocess.TimeoutExpired:
            rows.append({"preset": preset, "error": f"over {args.timeout:.0f} s"})
        write(args.out, rows)
    print(f"{'preset':<8} {'batch x accum':>13} {'r':>3} {'1 shape':>8} {'all shapes':>10} {'peak alloc GiB':>15} "
          f"{'peak reserved GiB':>18} {'card GiB':>9} {'margin GiB':>11}")
    for r in rows:
        if "error" in r:
            print(f"{r['preset']:<8} error: {r['error']}")
            continue
        print(f"{r['preset']:<8} {r['batch_size']:>6} x {r['gradient_accumulation_steps']:<4} {r['lora_r']:>3} "
              f"{r['one_shape_reserved_gib']:>8} {r['all_shapes_reserved_gib']:>10} {r['peak_allocated_gib']:>15} "
              f"{r['peak_reserved_gib']:>18} {r['card_gib']:>9} {r['margin_gib']:>11}")


def write(out: Path, rows: list[dict]) -> None:
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": "FLAN-T5-large architecture (random weights)", "rows": rows,
                               "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                               "python": platform.python_version(),
                               "command": "python benchmarks/preset_memory.py --model MODEL --data DATA"}, indent=2))


if __name__ == "__main__":
    main()
