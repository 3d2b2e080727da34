#!/usr/bin/env bash
# GPU kill/resume check (run on the device machine; needs .whl and .devdata carried, see device_common.sh):
# the same chef-genius training twice at once on one GPU, one SIGKILLed right after its step-20 checkpoint
# (so during step 21-30 or the step-30 checkpoint write) and resumed with --resume auto; compares the
# logged steps and losses with the uninterrupted run. Writes $OUT/kill_resume_gpu.json.
CODE=$PWD; source "$(dirname "$0")/device_common.sh"
device_wheels && device_data /tmp/data
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor; rm -rf /tmp/run /tmp/whole
device_model flan-t5-small /tmp/fts .devdata/recipenlg_sample_1k.csv
CMD="python3 -m chef_genius train --model /tmp/fts --data /tmp/data --epochs 2 --batch-size 12 --gradient-accumulation-steps 4 --eval-steps 30 --report-to jsonl --set checkpoint.save_steps=10 --set logging.log_every=1 --set eval.generate_samples=false"
($CMD --output-dir /tmp/whole > $OUT/whole.txt 2>&1; echo "uninterrupted rc=$?" >> $OUT/whole.txt) &
$CMD --output-dir /tmp/run > $OUT/train_a.txt 2>&1 &
PID=$!
for i in $(seq 1 400); do [ -d /tmp/run/checkpoints/step-00000020 ] && break; sleep 0.5; done
sleep 3; kill -9 $PID; wait $PID; echo "first run killed: rc=$?"
ls /tmp/run/checkpoints | tr '\n' ' '; echo
tail -c 300 /tmp/run/metrics.jsonl | tail -1 | cut -c1-80
$CMD --output-dir /tmp/run --resume auto > $OUT/train_b.txt 2>&1; echo "resumed rc=$?"
grep -h "resumed from\|CUDA graphs\|trained" $OUT/train_b.txt
wait; tail -1 $OUT/whole.txt
python3 - <<'PY'
import json
def rows(p): return [json.loads(l) for l in open(p)]
a, b = rows("/tmp/run/metrics.jsonl"), rows("/tmp/whole/metrics.jsonl")
sa = [r["step"] for r in a if "train/loss" in r]; sb = [r["step"] for r in b if "train/loss" in r]
print("killed+resumed: steps", len(sa), "unique", len(set(sa)), "== uninterrupted's", sa == sb)
la = {r["step"]: r["train/loss"] for r in a if "train/loss" in r}; lb = {r["step"]: r["train/loss"] for r in b if "train/loss" in r}
common = [s for s in sb if s in la]
d = {s: abs(la[s] - lb[s]) / lb[s] for s in common}
print("common steps", len(common), "train/loss max relative difference: steps <= 20 %.2e, after %.2e" % (max([v for s, v in d.items() if s <= 20], default=-1), max([v for s, v in d.items() if s > 20], default=-1)))
print("val_loss killed+resumed", [(r["step"], round(r["val_loss"], 4)) for r in a if "val_loss" in r])
print("val_loss uninterrupted ", [(r["step"], round(r["val_loss"], 4)) for r in b if "val_loss" in r])
json.dump({"killed_resumed": a, "uninterrupted": b}, open("/tmp/out_cmp.json", "w"))
PY
cp /tmp/out_cmp.json $OUT/kill_resume_gpu.json
