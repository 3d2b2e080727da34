#!/usr/bin/env bash
# The quality run on the device machine (benchmarks/quality.py), in stages that fit its calls:
#   setup  DIR  install the carried wheels (.whl/), stash the GGUF's first part from DIR in /tmp/cg
#   launch DIR  join the GGUF parts (second part in DIR), unpack DIR/qdata.tar.xz (the shared corpora,
#               openrecipes already split into allrecipes.jsonl and heldout_sites.jsonl), prepare,
#               convert the GGUF, then start in the background (setsid): the LoRA fine-tune (today's
#               defaults, 3 epochs), the full fine-tune (--disable-lora, 4 epochs) and the base model's
#               samples
#   wait S      sleep up to S seconds while training runs, then show progress
#   generate    sample the candidates of every arm (quality.py generate) in parallel, in the background
#   gwait S     sleep up to S seconds while they run
#   collect     copy results, samples and logs to $OUT (one tar.gz)
#   (later rounds) bench-train, candidates, round3, pairs, dpo-candidates; stash DIR (files kept in
#   /tmp/cg for a later call), round4 DIR, round4-candidates; prep QDIR DIR, gemma DIR,
#   gemma-launch, gemma-candidates, gemma-dpo, gemma-dpo-candidates (Gemma 3 270M, its file carried in six
#   parts); rag, rag-candidates (reference recipes in the prompts): see each stage's comment
# Code runs from a copy in /tmp/cg/code, so a later call's tree does not change a running job.
set -uo pipefail
source "$(dirname "$0")/device_common.sh"
W=/tmp/cg/work; G=$GGUF; C=/tmp/cg/code
Q="python3 /tmp/cg/code/benchmarks/quality.py --work $W --gguf $G"
GEMMA=/tmp/cg/gemma-3-270m-q4_k_m.gguf  # docs/models.md: the four PyPI chunks joined
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
QG="python3 /tmp/cg/code/benchmarks/quality.py --work $W --gguf $GEMMA"
TRAIN="--max-tokens 16384 --gradient-accumulation-steps 1 --eval-steps 400 \
  --set schedule.first_cycle_steps=430 --set eval.max_eval_batches=40 --set logging.log_every=20"
bg() { setsid nohup bash -c "$1" > "$W/$2.out" 2>&1 < /dev/null & }
GENS=(  # name set n grounded tag
  "lora test 4 0 plain" "full test 4 0 plain" "full test 4 5 g5" "base test 1 0 plain"
  "full heldout 4 0 plain" "full heldout 4 5 g5" "lora heldout 1 0 plain" "full val 4 0 plain" "full val 4 5 g5")
case "$1" in
  setup)
    device_setup "$2" ;;
  launch)
    cp "$2"/*.part* /tmp/cg/ && cat /tmp/cg/gguf.part1 /tmp/cg/gguf.part2 > $G && ls -la $G
    rm -rf /tmp/cg/code && mkdir -p /tmp/cg/code $W /tmp/cg/shared && cp -r src benchmarks /tmp/cg/code/
    tar -xJf "$2/qdata.tar.xz" -C /tmp/cg/shared
    $Q prepare --shared /tmp/cg/shared || exit 1
    python3 -c "from pathlib import Path; from chef_genius.model.loading import gguf_folder; print(gguf_folder(Path('$G')))" || exit 1
    bg "$Q train --name lora -- --epochs 3 $TRAIN" train-lora
    bg "$Q train --name full -- --epochs 4 --disable-lora $TRAIN" train-full
    sleep 60; tail -n 3 $W/*.out; tail -n 2 $W/train-*.log; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv ;;
  wait)
    for _ in $(seq 1 $(( $2 / 15 ))); do
      [ -f $W/part-train-lora.json ] && [ -f $W/part-train-full.json ] && break; sleep 15; done
    tail -n 3 $W/*.out; for r in lora full; do tail -c 300 $W/$r/metrics.jsonl; echo; done ;;
  generate)
    for spec in "${GENS[@]}"; do
      read -r name set n grounded tag <<< "$spec"
      bg "$Q generate --name $name --set $set --n $n --grounded $grounded --tag $tag --examples 500 --batch-size $(( 64 * n ))" \
        "gen-$name-$set-$tag"
    done
    sleep 45; tail -n 2 $W/gen-*.out; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv ;;
  gwait)
    for _ in $(seq 1 $(( $2 / 15 ))); do
      [ "$(ls $W/gen-*.meta.json 2>/dev/null | wc -l)" -ge "${#GENS[@]}" ] && break; sleep 15; done
    ls $W/gen-*.meta.json; tail -n 1 $W/gen-*.out ;;
  oneshot)  # a short lease: launch's preparation, the full fine-tune for EPOCHS (default 1) in the
            # foreground (at most TRAIN_S seconds), then the candidates of GENS_SHORT in parallel, then collect
    cp "$2"/*.part* /tmp/cg/ && cat /tmp/cg/gguf.part1 /tmp/cg/gguf.part2 > $G && ls -la $G
    rm -rf /tmp/cg/code && mkdir -p /tmp/cg/code $W /tmp/cg/shared && cp -r src benchmarks /tmp/cg/code/
    tar -xJf "$2/qdata.tar.xz" -C /tmp/cg/shared
    $Q prepare --shared /tmp/cg/shared || exit 1
    timeout ${TRAIN_S:-300} $Q train --name full -- --epochs ${EPOCHS:-1} --disable-lora $TRAIN; tail -n 4 $W/train-full.log
    for spec in "full test 4 0 plain" "full test 4 5 g5" "full val 4 0 plain" "full val 4 5 g5" "full heldout 4 0 plain"; do
      read -r name set n grounded tag <<< "$spec"
      bg "timeout ${GEN_S:-200} $Q generate --name $name --set $set --n $n --grounded $grounded --tag $tag --examples ${EXAMPLES:-500} --batch-size $(( 64 * n ))" "gen-$name-$set-$tag"
    done
    sleep 20; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
    for _ in $(seq 1 $(( ${GEN_S:-200} / 10 ))); do [ "$(ls $W/gen-*.meta.json 2>/dev/null | wc -l)" -ge 5 ] && break; sleep 10; done
    tail -n 2 $W/gen-*.out
    "$0" collect ;;
  bench-train)  # DIR (the GGUF's second part, qdata.tar.xz): prepare; the engine's profile and the
                # server's load test on the base model first (an idle GPU), then the full fine-tune for
                # EPOCHS (default 2) in the background; waits up to WAIT_S seconds
    cp "$2"/gguf.part2 /tmp/cg/ && cat /tmp/cg/gguf.part1 /tmp/cg/gguf.part2 > $G && ls -la $G
    rm -rf /tmp/cg/code && mkdir -p /tmp/cg/code $W /tmp/cg/shared && cp -r src benchmarks tests /tmp/cg/code/
    tar -xJf "$2/qdata.tar.xz" -C /tmp/cg/shared
    $Q prepare --shared /tmp/cg/shared || exit 1
    timeout 150 python3 /tmp/cg/code/benchmarks/profile_generation.py --model $G --data $W/heldout --batch 64 \
      --out $OUT/generation_profile.json > $OUT/profile.log 2>&1; head -5 $OUT/profile.log
    timeout 100 python3 /tmp/cg/code/benchmarks/serve_load.py --model $G --requests 64 --max-tokens 256 \
      --server-arg=--device=cuda --out $OUT/serve_load_h200.json 2>&1 | tail -4
    bg "$Q train --name full2 -- --epochs ${EPOCHS:-2} --disable-lora $TRAIN" train-full2
    for _ in $(seq 1 $(( ${WAIT_S:-200} / 10 ))); do [ -f $W/part-train-full2.json ] && break; sleep 10; done
    tail -n 3 $W/train-full2.out; tail -c 400 $W/full2/metrics.jsonl ;;
  candidates)  # after bench-train: wait for the fine-tune (up to WAIT_S), then its candidates, then collect
    for _ in $(seq 1 $(( ${WAIT_S:-300} / 10 ))); do [ -f $W/part-train-full2.json ] && break; sleep 10; done
    tail -n 4 $W/train-full2.out
    for spec in "full2 test 4 160" "full2 heldout 4 500" "full2 val 4 160"; do
      read -r name set n examples <<< "$spec"
      bg "timeout ${GEN_S:-200} $Q generate --name $name --set $set --n $n --tag plain --examples $examples --batch-size 250" \
        "gen-$name-$set-plain"
    done
    sleep 20; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
    for _ in $(seq 1 $(( ${GEN_S:-200} / 10 ))); do [ "$(ls $W/gen-full2-*.meta.json 2>/dev/null | wc -l)" -ge 3 ] && break; sleep 10; done
    tail -n 2 $W/gen-*.out
    "$0" collect ;;
  round3)  # DIR (the GGUF's second part, qdata.tar.xz): prepare; on the idle GPU the engine's greedy
            # identity with the grouped attention (same = 1.0) and the server's load test on its slots;
            # then the 2-epoch full fine-tune (full2r) in the background, the GPU tests beside it; waits up to WAIT_S
    cp "$2"/gguf.part2 /tmp/cg/ && cat /tmp/cg/gguf.part1 /tmp/cg/gguf.part2 > $G && ls -la $G
    rm -rf $C && mkdir -p $C $W /tmp/cg/shared && cp -r src benchmarks tests pyproject.toml $C/
    tar -xJf "$2/qdata.tar.xz" -C /tmp/cg/shared
    $Q prepare --shared /tmp/cg/shared || exit 1
    timeout 100 python3 $C/benchmarks/generation.py --model $G --data $W/heldout --out $OUT/generation.json \
      --label h200-grouped --batches 16 64 --decodings greedy --examples 64 --batches-per-run 1 --max-new-tokens 64 \
      > $OUT/smoke.log 2>&1; tail -n 6 $OUT/smoke.log
    timeout 100 python3 $C/benchmarks/serve_load.py --model $G --requests 64 --max-tokens 256 \
      --server-arg=--device=cuda --out $OUT/serve_load_h200_slots.json > $OUT/serve.log 2>&1; tail -n 6 $OUT/serve.log
    bg "$Q train --name full2r -- --epochs 2 --disable-lora $TRAIN" train-full2r
    (cd $C && export CHEF_GENIUS_SHARED_DATA=/tmp/cg/shared
     timeout 200 python3 -m pytest -p no:cacheprovider tests/test_gpu.py tests/test_generation_engine.py tests/test_generation_t5.py tests/test_generation_gemma.py -m gpu -rs
     timeout 100 python3 -m pytest -p no:cacheprovider tests/test_generation_slots.py -k cuda -rs) > $OUT/gpu-tests.log 2>&1
    tail -n 4 $OUT/gpu-tests.log
    for _ in $(seq 1 $(( ${WAIT_S:-200} / 10 ))); do [ -f $W/part-train-full2r.json ] && break; sleep 10; done
    tail -n 2 $W/train-full2r.out; tail -c 300 $W/full2r/metrics.jsonl ;;
  pairs)  # after round3: wait for full2r (up to WAIT_S); its candidates (test, held-out sites, val) and the
          # preference pairs (PAIRS_N training prompts x 2 samples) side by side; then the DPO arms
          # (DPO_ARMS: "name lr sft_weight" ...) in the background; waits up to WAIT2_S for them
    for _ in $(seq 1 $(( ${WAIT_S:-120} / 5 ))); do [ -f $W/part-train-full2r.json ] && break; sleep 5; done
    tail -n 2 $W/train-full2r.out
    for spec in "test 4 160" "heldout 4 500" "val 4 160"; do
      read -r set n examples <<< "$spec"
      bg "timeout ${GEN_S:-300} $Q generate --name full2r --set $set --n $n --tag plain --examples $examples \
        --batch-size 256" "gen-full2r-$set-plain"
    done
    timeout ${GEN_S:-300} python3 -m chef_genius preference-pairs $W/full2r --data $W/data --split train \
      --max-examples ${PAIRS_N:-3000} --samples 2 --batch-size 256 --out $W/pairs.jsonl > $W/pairs.out 2>&1
    tail -n 2 $W/pairs.out
    while read -r name lr sft; do
      [ -n "$name" ] && bg "$Q train --name $name -- --model $W/full2r --preference $W/pairs.jsonl --epochs 1 \
        --disable-lora --learning-rate $lr --dpo-sft-weight $sft $TRAIN" train-$name
    done <<< "${DPO_ARMS:-dpo1 2e-6 0
dpo2 1e-5 1}"
    for _ in $(seq 1 $(( ${WAIT2_S:-200} / 10 ))); do
      [ "$(ls $W/part-train-dpo*.json $W/gen-full2r-*.meta.json 2>/dev/null | wc -l)" -ge 5 ] && break; sleep 10; done
    ls $W; tail -n 2 $W/*.out ;;
  dpo-candidates)  # after pairs: wait for the DPO arms, then their candidates (val, held-out sites), then collect
    for _ in $(seq 1 $(( ${WAIT_S:-200} / 5 ))); do [ "$(ls $W/part-train-dpo*.json | wc -l)" -ge 2 ] && break; sleep 5; done
    for name in dpo1 dpo2; do for spec in "val 4 160" "heldout 4 500"; do
      read -r set n examples <<< "$spec"
      bg "timeout ${GEN_S:-250} $Q generate --name $name --set $set --n $n --tag plain --examples $examples \
        --batch-size 256" "gen-$name-$set-plain"
    done; done
    for _ in $(seq 1 $(( ${GEN_S:-250} / 10 ))); do [ "$(ls $W/gen-dpo*.meta.json 2>/dev/null | wc -l)" -ge 4 ] && break; sleep 10; done
    tail -n 1 $W/gen-*.out; "$0" collect ;;
  stash)  # DIR: its files kept in /tmp/cg for a later stage (a GGUF part a call, as the tree's limit allows)
    mkdir -p /tmp/cg && cp "$2"/* /tmp/cg/ && ls -la /tmp/cg ;;
  round4)  # DIR (qdata.tar.xz), after setup and the GGUF's second part stashed: the wheels; prepare; the 2-epoch full fine-tune
            # (full2r) in the foreground (up to TRAIN_S); preference pairs that do not depend on the verdict
            # (--keep-all: the real recipe over each of the model's samples, PAIRS_N prompts x 2); then the
            # DPO arms (DPO_ARMS: "name lr sft_weight" ...) in the background
    device_wheels || exit 1; cat /tmp/cg/gguf.part1 /tmp/cg/gguf.part2 > $G && ls -la $G
    rm -rf $C && mkdir -p $C $W /tmp/cg/shared && cp -r src benchmarks tests pyproject.toml $C/
    tar -xJf "$2/qdata.tar.xz" -C /tmp/cg/shared
    $Q prepare --shared /tmp/cg/shared || exit 1
    # 1,460 steps: 263-349 s of training plus start-up; a run stopped by TRAIN_S leaves its best
    # checkpoint, which preference-pairs then uses (and says so)
    timeout ${TRAIN_S:-450} $Q train --name full2r -- --epochs 2 --disable-lora $TRAIN > $W/train-full2r.out 2>&1
    tail -n 2 $W/train-full2r.out
    timeout ${GEN_S:-200} python3 -m chef_genius preference-pairs $W/full2r --data $W/data --split train \
      --max-examples ${PAIRS_N:-1300} --samples 2 --batch-size 320 --keep-all --out $W/pairs-all.jsonl > $W/pairs-all.out 2>&1
    tail -n 2 $W/pairs-all.out
    while read -r name lr sft; do
      [ -n "$name" ] && bg "$Q train --name $name -- --model $W/full2r --preference $W/pairs-all.jsonl --epochs 1 \
        --disable-lora --learning-rate $lr --dpo-sft-weight $sft $TRAIN" train-$name
    done <<< "${DPO_ARMS:-dpok1 1e-5 1}"
    sleep 30; tail -n 2 $W/train-dpok*.out; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv ;;
  round4-candidates)  # after round4: wait for its DPO arms (DPO_ARMS, as round4; up to WAIT_S), then their
                      # candidates (val, held-out sites) in parallel, then collect
    arms=$(awk 'NF {print $1}' <<< "${DPO_ARMS:-dpok1 1e-5 1}"); count=$(wc -w <<< "$arms")
    for _ in $(seq 1 $(( ${WAIT_S:-300} / 5 ))); do
      [ "$(for a in $arms; do ls $W/part-train-$a.json 2>/dev/null; done | wc -l)" -ge "$count" ] && break; sleep 5; done
    for name in $arms; do tail -n 1 $W/train-$name.out; done
    for name in $arms; do for spec in "val 4 160" "heldout 4 500"; do
      read -r set n examples <<< "$spec"
      bg "timeout ${GEN_S:-250} $Q generate --name $name --set $set --n $n --tag plain --examples $examples \
        --batch-size 256" "gen-$name-$set-plain"
    done; done
    for _ in $(seq 1 $(( ${GEN_S:-250} / 10 ))); do
      [ "$(for a in $arms; do ls $W/gen-$a-*.meta.json 2>/dev/null; done | wc -l)" -ge $(( 2 * count )) ] && break; sleep 10; done
    tail -n 1 $W/gen-*.out; "$0" collect ;;
  prep)  # QDIR STASHDIR (session 5's first call): the wheels; STASHDIR's files (the Gemma file's last
         # part, its tokenizer as Transformers 5.25 writes it) stashed; the code copied; the corpora prepared
    device_wheels || exit 1; "$0" stash "$3" > /dev/null
    rm -rf $C && mkdir -p $C $W /tmp/cg/shared && cp -r src benchmarks tests pyproject.toml $C/
    tar -xJf "$2/qdata.tar.xz" -C /tmp/cg/shared && $Q prepare --shared /tmp/cg/shared ;;
  gemma)  # DIR (the Gemma file's last part), after prep and stashes of the other parts: the GGUF joined
          # and checked, converted by this Transformers (its weights are right, its Gemma tokenizer is not:
          # docs/models.md) with the tokenizer files 5.25 writes put in its place and checked; the full
          # fine-tune (gemma: full2r's flags, at most GEMMA_STEPS steps: 900 took 431 s) waited for (up to
          # WAIT_S), then its candidates started in the background. Run gemma-candidates in the SAME call
          # (`gemma DIR; gemma-candidates`): a machine left idle for 30 s is given back, and everything here
          # goes with it; twice a next call fired at once after this one's ~7 minutes found a fresh machine.
    cp "$2"/* /tmp/cg/ && cat /tmp/cg/g.[0-5] > $GEMMA && rm -f /tmp/cg/g.[0-5]
    echo "$GEMMA_SHA  $GEMMA" | sha256sum -c || exit 1
    rm -rf $C && mkdir -p $C && cp -r src benchmarks tests pyproject.toml $C/
    python3 - "$GEMMA" <<'PY' || exit 1
import lzma, shutil, sys
from pathlib import Path
from chef_genius.model.loading import gguf_folder
folder = gguf_folder(Path(sys.argv[1]))
(folder / "tokenizer.json").write_bytes(lzma.decompress(Path("/tmp/cg/tokenizer.json.xz").read_bytes()))
shutil.copy("/tmp/cg/tokenizer_config.json", folder / "tokenizer_config.json")
from transformers import AutoTokenizer
ids = AutoTokenizer.from_pretrained(folder)("Preheat the oven").input_ids
print(folder, ids)
assert ids[0] == 2 and len(ids) == 5, "the Gemma tokenizer is not the one Transformers 5.25 writes"
PY
    # One cosine cycle that ends with the run (warmup: 10 % of the steps): session 6's run kept full2r's 430-step
    # cycle, restarted at the peak learning rate at step ~490 and ended there at 92 % of it (train's warning
    # said so), and its numbers lost digits ("350 degrees F (17 degrees C)"; docs/models.md)
    steps=${GEMMA_STEPS:-700}
    bg "$QG train --name gemma -- --epochs 2 --disable-lora $TRAIN --eval-steps $(( steps / 2 )) --max-steps $steps \
      --set schedule.first_cycle_steps=$(( steps - steps / 10 ))" train-gemma
    for _ in $(seq 1 $(( ${WAIT_S:-420} / 5 ))); do [ -f $W/part-train-gemma.json ] && break; sleep 5; done
    tail -n 2 $W/train-gemma.out; tail -c 400 $W/gemma/metrics.jsonl; echo
    [ -f $W/part-train-gemma.json ] || { echo "gemma: still training; gemma-candidates waits for it"; exit 0; }
    if [ "${GEMMA_LAUNCH:-1}" = 1 ]; then "$0" gemma-launch; fi ;;
  gemma-dpo)  # right after `gemma` (GEMMA_LAUNCH=0), in the SAME call: preference pairs from the Gemma run's own
              # samples (PAIRS_N training prompts x 2, the verdict's rejects against the real recipe), then DPO
              # with dpo2's flags (learning rate 1e-5, --dpo-sft-weight 1) in the background as `gdpo`
    [ -f $W/part-train-gemma.json ] || { echo "no finished Gemma run on this machine" >&2; exit 1; }
    timeout ${GEN_S:-200} python3 -m chef_genius preference-pairs $W/gemma --data $W/data --split train \
      --max-examples ${PAIRS_N:-1200} --samples 2 --batch-size 256 --out $W/gpairs.jsonl > $W/gpairs.out 2>&1
    tail -n 2 $W/gpairs.out; [ -s $W/gpairs.jsonl ] || exit 1
    # one cosine cycle about as long as the run (dpo2: 5,125 pairs in 109 steps of 16,384 tokens, ~47 a step), so
    # that it ends annealed: the unannealed Gemma run lost its digits (docs/models.md)
    cycle=$(( $(wc -l < $W/gpairs.jsonl) / 47 )); [ $cycle -ge 10 ] || cycle=10
    bg "$QG train --name gdpo -- --model $W/gemma --preference $W/gpairs.jsonl --epochs 1 --disable-lora \
      --learning-rate 1e-5 --dpo-sft-weight 1 $TRAIN --set schedule.first_cycle_steps=$cycle" train-gdpo
    sleep 60; tail -n 3 $W/train-gdpo.out; tail -c 300 $W/gdpo/metrics.jsonl; echo ;;
  gemma-dpo-candidates)  # after gemma-dpo: wait for gdpo (up to WAIT_S), its candidates (held-out sites 500 x 4,
                         # val 160 x 4) waited for (up to GEN_S), then collect
    for _ in $(seq 1 $(( ${WAIT_S:-300} / 5 ))); do [ -f $W/part-train-gdpo.json ] && break; sleep 5; done
    tail -n 2 $W/train-gdpo.out; [ -f $W/part-train-gdpo.json ] || { "$0" collect; exit 1; }
    for spec in "heldout 4 500" "val 4 160"; do
      read -r set n examples <<< "$spec"
      bg "timeout ${GEN_S:-200} $QG generate --name gdpo --set $set --n $n --tag n4 --examples $examples \
        --batch-size 256" "gen-gdpo-$set-n4"
    done
    for _ in $(seq 1 $(( ${GEN_S:-200} / 5 ))); do [ "$(ls $W/gen-gdpo-*.meta.json 2>/dev/null | wc -l)" -ge 2 ] && break; sleep 5; done
    tail -n 1 $W/gen-gdpo-*.out; "$0" collect ;;
  gemma-launch)  # the Gemma run's candidates in the background: held-out sites (500 prompts, 1 each), val (160)
    for spec in "heldout 1 500" "val 1 160"; do
      read -r set n examples <<< "$spec"
      bg "timeout ${GEN_S:-400} $QG generate --name gemma --set $set --n $n --tag plain --examples $examples \
        --batch-size 256" "gen-gemma-$set-plain"
    done ;;
  gemma-candidates)  # right after gemma, on the same (warm) machine: its fine-tune finished or stopped (SIGTERM
                     # keeps its checkpoints) after WAIT_S, the candidates waited for (up to GEN_S), then collect
    [ -d $W/gemma ] || { echo "no Gemma run on this machine (a fresh one: the last was given back); run gemma again" >&2; exit 1; }
    if [ ! -f $W/part-train-gemma.json ]; then
      for _ in $(seq 1 $(( ${WAIT_S:-120} / 5 ))); do [ -f $W/part-train-gemma.json ] && break; sleep 5; done
      pkill -TERM -f "output-dir $W/gemma" && for _ in $(seq 1 30); do pgrep -f "output-dir $W/gemma" > /dev/null || break; sleep 2; done
      "$0" gemma-launch
    fi
    for _ in $(seq 1 $(( ${GEN_S:-400} / 10 ))); do [ "$(ls $W/gen-gemma-*.meta.json 2>/dev/null | wc -l)" -ge 2 ] && break; sleep 10; done
    tail -n 2 $W/gen-gemma-*.out; "$0" collect ;;
  rag)  # DIR (the SmolLM2 GGUF's last third, gguf.p3), after `prep .dev3 .r1` and `stash .r2` (its first two
        # pieces: with the tree at 17.7 MiB, a half no longer fits a call): full2r's 2-epoch full fine-tune with a
        # reference recipe in every prompt (data.reference: the nearest training recipe, chef_genius.retrieval)
        # in the background as `rag`; waits up to WAIT_S
    cp "$2"/gguf.p3 /tmp/cg/ && cat /tmp/cg/gguf.p1 /tmp/cg/gguf.p2 /tmp/cg/gguf.p3 > $G && ls -la $G
    echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $G" | sha256sum -c || exit 1
    bg "$Q train --name rag -- --epochs 2 --disable-lora $TRAIN --reference --set model.max_source_tokens=384" train-rag
    for _ in $(seq 1 $(( ${WAIT_S:-420} / 10 ))); do [ -f $W/part-train-rag.json ] && break; sleep 10; done
    tail -n 3 $W/train-rag.out; tail -c 400 $W/rag/metrics.jsonl; echo ;;
  rag-candidates)  # after rag, on the same machine: wait for it (up to WAIT_S; then SIGTERM, which keeps its
                   # checkpoints), its candidates (held-out sites 500 x 4, val 160 x 4) waited for (up to GEN_S), collect
    [ -d $W/rag ] || { echo "no rag run on this machine" >&2; exit 1; }
    for _ in $(seq 1 $(( ${WAIT_S:-200} / 5 ))); do [ -f $W/part-train-rag.json ] && break; sleep 5; done
    if [ ! -f $W/part-train-rag.json ]; then
      pkill -TERM -f "output-dir $W/rag" && for _ in $(seq 1 30); do pgrep -f "output-dir $W/rag" > /dev/null || break; sleep 2; done
    fi
    tail -n 3 $W/train-rag.out
    for spec in "heldout 4 500" "val 4 160"; do
      read -r set n examples <<< "$spec"
      bg "timeout ${GEN_S:-200} $Q generate --name rag --set $set --n $n --tag n4 --examples $examples \
        --batch-size 256" "gen-rag-$set-n4"
    done
    for _ in $(seq 1 $(( ${GEN_S:-200} / 5 ))); do [ "$(ls $W/gen-rag-*.meta.json 2>/dev/null | wc -l)" -ge 2 ] && break; sleep 5; done
    tail -n 1 $W/gen-rag-*.out; "$0" collect ;;
  collect)
    (cd $W && tar -czf "$OUT/quality.tar.gz" --ignore-failed-read part-*.json gen-*.jsonl gen-*.meta.json *.out *.log \
      lora/samples full/samples lora/metrics.jsonl full/metrics.jsonl lora/run_summary.json full/run_summary.json \
      full2/samples full2/metrics.jsonl full2/run_summary.json pairs.jsonl pairs.out \
      {full2r,dpo1,dpo2,dpok1,dpok2,gemma,gdpo,rag}/{samples,metrics.jsonl,run_summary.json} pairs-all.out \
      gpairs.out gpairs.jsonl)
    ls -la "$OUT" ;;
esac
