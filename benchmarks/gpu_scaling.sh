#!/usr/bin/env bash
# DDP scaling on the two-GPU device machine (nvidia-h200-x2), and FSDP on real GPUs.
# Needs .whl and .devdata carried (see device_common.sh). The same chef-genius training (FLAN-T5-base
# architecture, LoRA, 32 examples a rank a step, eager fast forward: DDP turns CUDA graphs off, so the
# one-GPU run does too, and compilation is off in both to keep the call short) on 1 GPU, then on 2
# under torchrun; then a short FSDP full fine-tuning on 2. Writes $OUT/scaling.json.
set -u
CODE=$PWD; source "$(dirname "$0")/device_common.sh"
device_wheels
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > $OUT/env.txt
device_model flan-t5-base /tmp/ftb .devdata/recipenlg_sample_1k.csv
device_data /tmp/data
ARGS="--model /tmp/ftb --data /tmp/data --epochs 2 --batch-size 32 --gradient-accumulation-steps 1 --eval-steps 100000 --report-to jsonl --set checkpoint.save_steps=100000 --set logging.log_every=1 --set eval.generate_samples=false --set model.cuda_graphs=false --set model.compile_blocks=false --set data.num_workers=4"
CUDA_VISIBLE_DEVICES=0 timeout 120 python3 -m chef_genius train $ARGS --output-dir /tmp/g1 > $OUT/g1.txt 2>&1; echo "1 GPU rc=$?"
timeout 120 torchrun --standalone --nproc_per_node 2 -m chef_genius train $ARGS --output-dir /tmp/g2 > $OUT/g2.txt 2>&1; echo "2 GPUs rc=$?"
timeout 120 torchrun --standalone --nproc_per_node 2 -m chef_genius train --model /tmp/ftb --data /tmp/data --epochs 1 --batch-size 16 --disable-lora --fsdp --eval-steps 100000 --report-to jsonl --set checkpoint.save_steps=20 --set logging.log_every=5 --set eval.generate_samples=false --set model.compile_blocks=false --output-dir /tmp/fsdp > $OUT/fsdp.txt 2>&1; echo "FSDP rc=$?"
ls /tmp/fsdp/final /tmp/fsdp/checkpoints 2>&1 | tr '\n' ' '; echo
python3 - <<'PY' | tee $OUT/scaling.txt
import json, os
out = {"device": open(os.environ.get("OUT", "/tmp/out") + "/env.txt").read().strip()}
for name in ("g1", "g2", "fsdp"):
    try:
        rows = [json.loads(l) for l in open(f"/tmp/{name}/metrics.jsonl")]
        summary = json.load(open(f"/tmp/{name}/run_summary.json"))
    except OSError as e:
        out[name] = {"error": str(e)}; continue
    steps = [r for r in rows if "train/tokens_per_step" in r]
    tokens = sum(r["train/tokens_per_step"] for r in steps) if name != "fsdp" else None
    timed = steps[5:]  # after warm-up
    step_rate = sum(r["train/tokens_per_second"] for r in timed) / max(len(timed), 1)
    out[name] = {"steps": summary["steps"], "seconds": round(summary["seconds"], 1), "tokens": tokens,
                 "wall_tokens_per_second": round(tokens / summary["seconds"]) if tokens else None,
                 "mean_step_tokens_per_second_after_5": round(step_rate),
                 "losses_first_last": [round(steps[0]["train/loss"], 3), round(steps[-1]["train/loss"], 3)],
                 "val_loss": [round(r["val_loss"], 4) for r in rows if "val_loss" in r]}
if "tokens" in out.get("g1", {}) and "tokens" in out.get("g2", {}):
    out["speedup_wall"] = round(out["g2"]["wall_tokens_per_second"] / out["g1"]["wall_tokens_per_second"], 2)
    out["speedup_step"] = round(out["g2"]["mean_step_tokens_per_second_after_5"] / out["g1"]["mean_step_tokens_per_second_after_5"], 2)
print(json.dumps(out, indent=1))
json.dump(out, open(os.environ.get("OUT", "/tmp/out") + "/scaling.json", "w"), indent=1)
PY
