#!/usr/bin/env bash
# Profiles of one training step (benchmarks/profile_step.py) in several configurations on one GPU, on
# a FLAN-T5-large-shaped model (run on the device machine; needs .whl and .devdata carried, see
# device_common.sh). One line per configuration; logs and JSON in $OUT.
set -u
CODE=$PWD; source "$(dirname "$0")/device_common.sh"
device_wheels && device_model flan-t5-large /tmp/fl && device_data /tmp/data
P="python3 benchmarks/profile_step.py --model /tmp/fl --data /tmp/data"
SEED="--set optim.batch_size=12 --set optim.gradient_accumulation_steps=4"
T16="--set optim.max_tokens=16384 --set optim.gradient_accumulation_steps=1"
i=0
run() { i=$((i+1)); name=$1; shift; $P "$@" --json $OUT/$name.json > $OUT/$name.log 2>&1; grep '^{' $OUT/$name.log | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print(f\"$name: {r['wall_ms_per_step']:.0f} ms/step {r['tokens_per_second']:.0f} tok/s kernels {r['kernels_per_step']} kernel_ms {r['kernel_ms_per_step']:.0f} busy {r['gpu_busy_fraction']:.2f} peak {r['peak_gib']:.1f}\")" || { echo "$name FAILED"; tail -3 $OUT/$name.log; }; }
run seed $SEED
run seed-nofusednorm $SEED --set model.fused_norm=false
run seed-noshared $SEED --set model.shared_bias_attention=false
run seed-lorafp32 $SEED --set lora.fp32_inputs=true
run b48 --set optim.batch_size=48 --set optim.gradient_accumulation_steps=1
run t16 $T16
run t16-nolevers $T16 --set model.fused_norm=false --set model.shared_bias_attention=false --set lora.fp32_inputs=true
run t16-loradrop0 $T16 --set lora.dropout=0.0
run t16-nodropout $T16 --no-dropout
run t16-full $T16 --set lora.enabled=false
run t32 --set optim.max_tokens=32768 --set optim.gradient_accumulation_steps=1
run t16-compile $T16 --set model.compile_blocks=true
run b48-compile --set optim.batch_size=48 --set optim.gradient_accumulation_steps=1 --set model.compile_blocks=true
head -30 $OUT/t16.log | grep -A 20 Name
