#!/usr/bin/env bash
# Builds the chef-genius image for real on a CPU machine and tests what it promises.
#
#   sudo bash docker/test_image.sh        (or: sudo make docker-test)
#
# Needs root (it starts dockerd and runs debootstrap) and a few minutes; not part of CI.
# 1. starts dockerd if none answers (overlay2, or vfs where overlay2 does not start);
# 2. makes a local Debian bookworm base once (debootstrap + docker import; the root file system
#    is cached as a tarball in $CACHE), since no registry serves pytorch/pytorch here;
# 3. builds the image from the project's Dockerfile with BASE_IMAGE=that base and the CPU wheel of
#    PyTorch in docker/wheels/ (pip download, from this machine's local index);
# 4. runs the checks, each printing one PASS or FAIL line, and ends with "N passed, N failed"
#    (exit status 1 if any failed). Logs of every container are kept in $WORK.
#
# Settings (environment): IMAGE, BASE_IMAGE, WORK, CACHE, TORCH_SPEC, NO_CACHE=1 (build without
# the layer cache), DOCKER (the client), DOCKERD_STORAGE_DRIVER, DEBIAN_MIRROR, MAX_IMAGE_MB.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

IMAGE=${IMAGE:-chef-genius:cpu-test}
BASE_IMAGE=${BASE_IMAGE:-chef-genius-base:bookworm}
WORK=${WORK:-/tmp/chef-genius-docker-test}
CACHE=${CACHE:-/var/cache/chef-genius-docker}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
MAX_IMAGE_MB=${MAX_IMAGE_MB:-2500}
# The seed's flags-only usage, one epoch of the offline demo (the `tiny` model on the bundled
# sample: 21 optimizer steps with the defaults of 2026-11-30, 6 before); a checkpoint every 2 steps so that a killed run has one to resume.
TRAIN_FLAGS=(--epochs 1 --set checkpoint.save_steps=2)
KILL_NAME=chef-genius-test-kill

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
note() { echo "      $*"; }
die() { echo "ERROR: $*" >&2; exit 2; }
seconds_since() { echo $(($(date +%s) - $1)); }

[ "$(id -u)" = 0 ] || die "needs root (dockerd, debootstrap): sudo bash docker/test_image.sh"
mkdir -p "$WORK" "$CACHE"

# --- the engine -----------------------------------------------------------------------------
apt_install() {
    echo "installing $* (apt-get)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >/dev/null; then
        die "apt-get install $* failed"
    fi
}
command -v dockerd >/dev/null || apt_install docker.io

# A client that builds with BuildKit (COPY --chmod and RUN --mount need it): one with the buildx
# plugin, or a client older than 23 (Debian's docker.io 20.10), whose DOCKER_BUILDKIT=1 uses the
# engine's own BuildKit. A newer client without buildx (here: /usr/local/bin/docker 28.2) refuses.
pick_client() {
    local candidate major
    for candidate in docker /usr/bin/docker; do
        command -v "$candidate" >/dev/null || continue
        if "$candidate" buildx version >/dev/null 2>&1; then echo "$candidate"; return; fi
        major=$("$candidate" --version | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')
        if [ -n "$major" ] && [ "$major" -lt 23 ]; then echo "$candidate"; return; fi
    done
}
DOCKER=${DOCKER:-$(pick_client)}
[ -n "$DOCKER" ] || die "no docker client that builds with BuildKit (install docker-buildx, or Debian's docker.io)"
export DOCKER_BUILDKIT=1

if "$DOCKER" info >/dev/null 2>&1; then
    echo "dockerd: already running ($("$DOCKER" info --format '{{.Driver}}') storage)"
else
    # vfs copies the whole image for every container (2m18s for `docker run IMAGE true` with this
    # 1.8 GB image, measured here; 0.5 s with overlay2), so overlay2 is tried first.
    for driver in ${DOCKERD_STORAGE_DRIVER:-overlay2 vfs}; do
        dockerd --storage-driver="$driver" >"$WORK/dockerd.log" 2>&1 &
        dockerd_pid=$!
        for _ in $(seq 60); do
            "$DOCKER" info >/dev/null 2>&1 && break
            kill -0 "$dockerd_pid" 2>/dev/null || break
            sleep 1
        done
        if "$DOCKER" info >/dev/null 2>&1; then
            echo "dockerd: started (pid $dockerd_pid, $driver storage, log $WORK/dockerd.log; left running)"
            break
        fi
        echo "dockerd with $driver storage did not start: $(tail -1 "$WORK/dockerd.log")"
        kill "$dockerd_pid" 2>/dev/null
        wait "$dockerd_pid" 2>/dev/null
    done
    "$DOCKER" info >/dev/null 2>&1 || die "dockerd does not start (see $WORK/dockerd.log)"
fi
echo "client: $DOCKER ($("$DOCKER" --version)); engine $("$DOCKER" version --format '{{.Server.Version}}')"

# --- the local Debian base ------------------------------------------------------------------
if "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "base: $BASE_IMAGE (cached)"
else
    rootfs_tar="$CACHE/bookworm-minbase.tar"
    if [ ! -s "$rootfs_tar" ]; then
        command -v debootstrap >/dev/null || apt_install debootstrap
        started=$(date +%s)
        rm -rf "$CACHE/rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            bookworm "$CACHE/rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
            || die "debootstrap failed (see $WORK/debootstrap.log)"
        # No package archives or lists in the base (the image installs nothing with apt).
        rm -f "$CACHE"/rootfs/var/cache/apt/archives/*.deb "$CACHE"/rootfs/var/cache/apt/*.bin
        find "$CACHE/rootfs/var/lib/apt/lists" -maxdepth 1 -type f -delete
        tar -C "$CACHE/rootfs" -cf "$rootfs_tar.part" . && mv "$rootfs_tar.part" "$rootfs_tar"
        rm -rf "$CACHE/rootfs"
        echo "base: debootstrap bookworm (minbase + python3, python3-venv, python3-pip) in $(seconds_since "$started") s"
    fi
    "$DOCKER" import -m "debootstrap --variant=minbase bookworm (chef-genius docker/test_image.sh)" \
        "$rootfs_tar" "$BASE_IMAGE" >/dev/null || die "docker import failed"
    echo "base: $BASE_IMAGE imported from $rootfs_tar"
fi

# --- the CPU wheel of PyTorch ---------------------------------------------------------------
if ! ls docker/wheels/torch-*.whl >/dev/null 2>&1; then
    pyver=$("$DOCKER" run --rm --network none "$BASE_IMAGE" python3 -c \
        'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
    python3 -m pip download --quiet "$TORCH_SPEC" --no-deps --only-binary=:all: --python-version "$pyver" \
        --implementation cp --abi "cp$pyver" --platform "manylinux_2_28_$(uname -m)" -d docker/wheels \
        || die "pip download $TORCH_SPEC failed"
fi
for wheel in docker/wheels/torch-*.whl; do
    case "$wheel" in
        *+cpu*) echo "wheel: $wheel ($(du -m "$wheel" | cut -f1) MB)" ;;
        *) die "$wheel is not a CPU build (a CUDA build costs several GB): put a torch-*+cpu wheel in docker/wheels/" ;;
    esac
done

# --- the build ------------------------------------------------------------------------------
build_args=(--progress=plain --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE")
[ "${NO_CACHE:-0}" = 1 ] && build_args+=(--no-cache)
# Behind a TLS-intercepting proxy pip in the build needs the proxy's CA: handed over as a build
# secret (mounted for that one RUN, never stored in a layer or in the history).
ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$ca" ] && build_args+=(--secret "id=pip-ca,src=$ca")
echo "build: DOCKER_BUILDKIT=1 $DOCKER build ${build_args[*]} ."
started=$(date +%s)
if ! "$DOCKER" build "${build_args[@]}" . >"$WORK/build.log" 2>&1; then
    tail -30 "$WORK/build.log"
    die "the build failed (see $WORK/build.log)"
fi
build_seconds=$(seconds_since "$started")
pip_step=$(grep -m1 -o '^#[0-9]* \[[^]]*\] RUN --mount' "$WORK/build.log" | cut -d' ' -f1)
if [ -n "$pip_step" ] && grep -q "^$pip_step CACHED" "$WORK/build.log"; then
    echo "build: $build_seconds s (layers from the cache; NO_CACHE=1 for a fresh build)"
else
    echo "build: $build_seconds s"
fi

# --- the checks -----------------------------------------------------------------------------
run_dirs=("$WORK/models-train" "$WORK/logs-train" "$WORK/models-kill" "$WORK/models-wandb" "$WORK/models-user")
rm -rf "${run_dirs[@]}"
mkdir -p "${run_dirs[@]}"
# The image runs as uid 1000 (user chef): a mounted folder must be writable by uid 1000 (on most
# Linux desktops that is the first user, so the files are yours); --user UID:GID runs as another.
chown 1000:1000 "$WORK/models-train" "$WORK/logs-train" "$WORK/models-kill" "$WORK/models-wandb"
chown 4321:4321 "$WORK/models-user"
"$DOCKER" rm -f -v "$KILL_NAME" >/dev/null 2>&1
trap '"$DOCKER" rm -f -v "$KILL_NAME" >/dev/null 2>&1' EXIT

steps_of() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["steps"])' "$1/run_summary.json" 2>/dev/null; }

# 1. The image's user is not root.
user=$("$DOCKER" image inspect -f '{{.Config.User}}' "$IMAGE")
runtime_id=$("$DOCKER" run --rm --network none --entrypoint id "$IMAGE")
case "$user" in
    ""|0|0:*|root|root:*) fail "the image runs as root (USER '$user')" ;;
    *) pass "the image's user is not root: USER $user, in a container: $runtime_id" ;;
esac

# 2. No secret in the history or the configuration, and no build secret left in the image.
metadata="$WORK/image-metadata.txt"
{ "$DOCKER" history --no-trunc --format '{{.CreatedBy}}' "$IMAGE"; "$DOCKER" image inspect "$IMAGE"; } >"$metadata"
secret_pattern='(WANDB_API_KEY|HF_TOKEN|HUGGING_FACE_HUB_TOKEN|API_KEY|_TOKEN|PASSWORD|SECRET_KEY)=|BEGIN CERTIFICATE|BEGIN [A-Z ]*PRIVATE KEY'
leftover=$("$DOCKER" run --rm --network none --entrypoint sh "$IMAGE" -c 'ls -A /run/secrets 2>/dev/null')
if grep -E -q "$secret_pattern" "$metadata"; then
    fail "docker history / docker inspect hold a secret: $(grep -E -o "$secret_pattern" "$metadata" | sort -u | tr '\n' ' ')"
elif [ -n "$leftover" ]; then
    fail "the image keeps build secrets in /run/secrets: $leftover"
else
    pass "no secret in docker history / docker inspect (no WANDB key, no token, no key or certificate; /run/secrets empty)"
fi

# 3. Size, and nothing inside that does not belong there.
size_mb=$(( $("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE") / 1000000 ))
base_mb=$(( $("$DOCKER" image inspect -f '{{.Size}}' "$BASE_IMAGE") / 1000000 ))
stray=$("$DOCKER" run --rm --network none --entrypoint sh "$IMAGE" -c \
    'ls -d /opt/chef-genius/tests /opt/chef-genius/benchmarks /opt/chef-genius/build /opt/chef-genius/.git \
        /opt/chef-genius/src/*.egg-info /workspace/models/* /root/.cache /home/chef/.cache 2>/dev/null;
     find / -xdev \( -name "torch-*.whl" -o -name .venv \) 2>/dev/null')
if [ -n "$stray" ]; then
    fail "the image holds files that do not belong there: $(echo "$stray" | tr '\n' ' ')"
elif [ "$size_mb" -gt "$MAX_IMAGE_MB" ]; then
    fail "image $IMAGE is $size_mb MB (over $MAX_IMAGE_MB MB)"
else
    pass "image $IMAGE is $size_mb MB (base $base_mb MB + $((size_mb - base_mb)) MB: PyTorch CPU and the training stack); no caches, tests, runs or wheels inside"
fi
"$DOCKER" history --format '{{.Size}}'$'\t''{{.CreatedBy}}' "$IMAGE" | awk -F'\t' '$1 != "0B" {print "      layer " $1 "\t" substr($2, 1, 70)}'

# 4. The seed's flags-only usage trains into the mounted folder as the image's user, with a report.
echo "train: $DOCKER run --rm --network none -v $WORK/models-train:/workspace/models -v $WORK/logs-train:/workspace/logs $IMAGE ${TRAIN_FLAGS[*]}"
started=$(date +%s)
"$DOCKER" run --rm --network none -v "$WORK/models-train:/workspace/models" -v "$WORK/logs-train:/workspace/logs" \
    "$IMAGE" "${TRAIN_FLAGS[@]}" >"$WORK/train.log" 2>&1
rc=$?
train_seconds=$(seconds_since "$started")
reference_steps=$(steps_of "$WORK/models-train/run")
if [ "$rc" = 0 ] && [ -s "$WORK/models-train/run/report.html" ] && [ -d "$WORK/models-train/run/final" ]; then
    pass "flags-only training (${TRAIN_FLAGS[*]}) finished offline in $train_seconds s: $reference_steps steps, run/final and run/report.html in the mounted models folder"
    note "$(grep -E '^(trained|report:)' "$WORK/train.log" | tr '\n' ' ')"
else
    fail "flags-only training (exit $rc, see $WORK/train.log): $(tail -3 "$WORK/train.log" | tr '\n' ' ')"
fi
not_owned=$(find "$WORK/models-train" ! -uid 1000 | head -3)
if [ -z "$not_owned" ] && [ -n "$(ls -A "$WORK/models-train")" ]; then
    pass "every file the run wrote on the host is owned by uid 1000 (the image's user chef), none by root"
else
    fail "files on the host not owned by uid 1000: $not_owned"
fi

# 5. --user UID:GID runs as the host user who owns the folder.
"$DOCKER" run --rm --network none --user 4321:4321 -v "$WORK/models-user:/workspace/models" "$IMAGE" \
    "${TRAIN_FLAGS[@]}" --max-steps 2 >"$WORK/train-user.log" 2>&1
rc=$?
not_owned=$(find "$WORK/models-user" ! -uid 4321 | head -3)
if [ "$rc" = 0 ] && [ -s "$WORK/models-user/run/report.html" ] && [ -z "$not_owned" ]; then
    pass "with --user 4321:4321 training writes its files as uid 4321 on the host (for a host user other than uid 1000)"
else
    fail "--user 4321:4321 (exit $rc, see $WORK/train-user.log): not owned by 4321: $not_owned"
fi

# 6. A container killed mid-training and started again with the same command resumes and ends
# with the same steps (and the same losses) as the uninterrupted run.
kill_cmd=("$DOCKER" run --network none -v "$WORK/models-kill:/workspace/models" "$IMAGE" "${TRAIN_FLAGS[@]}")
"${kill_cmd[@]:0:2}" -d --name "$KILL_NAME" "${kill_cmd[@]:2}" >/dev/null
killed_at=""
for _ in $(seq 1200); do
    checkpoint=$(find "$WORK/models-kill/run/checkpoints" -maxdepth 1 -name 'step-*' 2>/dev/null | sort | head -1)
    if [ -n "$checkpoint" ]; then
        "$DOCKER" kill "$KILL_NAME" >/dev/null && killed_at=$(basename "$checkpoint")
        break
    fi
    [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$KILL_NAME")" = true ] || break
    sleep 0.5
done
"$DOCKER" wait "$KILL_NAME" >/dev/null
exit_code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$KILL_NAME")
"$DOCKER" logs "$KILL_NAME" >"$WORK/kill-first.log" 2>&1
"$DOCKER" rm -v "$KILL_NAME" >/dev/null
if [ -z "$killed_at" ] || [ -e "$WORK/models-kill/run/report.html" ]; then
    fail "could not kill the container mid-training (exit $exit_code; see $WORK/kill-first.log)"
else
    note "docker kill once checkpoints/$killed_at appeared: exit code $exit_code, no report yet"
    "${kill_cmd[@]:0:2}" --rm "${kill_cmd[@]:2}" >"$WORK/kill-resume.log" 2>&1
    rc=$?
    resumed=$(grep -m1 '^resumed from' "$WORK/kill-resume.log")
    steps=$(steps_of "$WORK/models-kill/run")
    logged=$(python3 - "$WORK/models-kill/run/metrics.jsonl" <<'EOF'
import json, sys
steps = [json.loads(line)["step"] for line in open(sys.argv[1]) if '"train/loss"' in line]
print("once" if steps == sorted(set(steps)) else f"repeated: {steps}")
EOF
)
    if [ "$rc" = 0 ] && [ -n "$resumed" ] && [ "$steps" = "$reference_steps" ] && [ "$logged" = once ]; then
        pass "killed (docker kill, exit $exit_code) after $killed_at and started again with the same command: '${resumed#resumed from /workspace/models/run/checkpoints/}', finished with $steps steps, as the uninterrupted run ($reference_steps); each step logged once"
    else
        fail "resume after docker kill (exit $rc, '$resumed', $steps steps against $reference_steps, steps logged $logged; see $WORK/kill-resume.log)"
    fi
    # The final adapter is compared byte for byte; so is val_loss. (The train/loss logged at step 5
    # is a mean over the logging window, which after the resume holds steps 3-5 only.)
    same=$(python3 - "$WORK/models-kill/run" "$WORK/models-train/run" <<'EOF'
import hashlib, json, sys
def digest(run):
    return hashlib.sha256(open(f"{run}/final/adapter_model.safetensors", "rb").read()).hexdigest()
def val_loss(run):
    return [r["val_loss"] for r in map(json.loads, open(f"{run}/metrics.jsonl")) if "val_loss" in r]
a, b = sys.argv[1], sys.argv[2]
print(f"yes {digest(a)[:12]} {val_loss(a)}" if (digest(a), val_loss(a)) == (digest(b), val_loss(b))
      else f"no: adapter {digest(a)[:12]} against {digest(b)[:12]}, val_loss {val_loss(a)} against {val_loss(b)}")
EOF
)
    if [ "${same%% *}" = yes ]; then
        read -r _ digest losses <<<"$same"
        pass "the resumed run's final adapter is byte-identical to the uninterrupted run's (sha256 $digest...), val_loss $losses in both"
    else
        fail "the resumed run differs from the uninterrupted run: $same"
    fi
fi

# 7. generate prints a recipe from the trained run.
"$DOCKER" run --rm --network none -v "$WORK/models-train:/workspace/models" "$IMAGE" \
    generate /workspace/models/run "tomato soup" >"$WORK/generate.log" 2>"$WORK/generate.err"
rc=$?
if [ "$rc" = 0 ] && grep -q '^## Ingredients' "$WORK/generate.log" && grep -q '^## Steps' "$WORK/generate.log"; then
    pass "generate /workspace/models/run \"tomato soup\" printed a recipe ($(wc -l <"$WORK/generate.log") lines: title, ## Ingredients, ## Steps)"
    grep -v '^$' "$WORK/generate.log" | head -6 | cut -c1-90 | sed 's/^/      | /'
else
    fail "generate (exit $rc, see $WORK/generate.log, $WORK/generate.err)"
fi

# 8. A W&B key passed with -e reaches W&B's offline mode and is stored nowhere.
WANDB_API_KEY=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')  # a made-up key, 40 hex digits
export WANDB_API_KEY
seen=$("$DOCKER" run --rm --network none -e WANDB_API_KEY -e WANDB_MODE=offline --entrypoint python "$IMAGE" -c \
    'import os, wandb; s = wandb.setup().settings; print(s.api_key == os.environ["WANDB_API_KEY"], s.mode)' 2>&1 | tail -1)
"$DOCKER" run --rm --network none -e WANDB_API_KEY -e WANDB_MODE=offline -v "$WORK/models-wandb:/workspace/models" \
    "$IMAGE" "${TRAIN_FLAGS[@]}" --report-to jsonl,wandb >"$WORK/train-wandb.log" 2>&1
rc=$?
offline_run=$(find "$WORK/models-wandb/run/wandb" -maxdepth 1 -type d -name 'offline-run-*' 2>/dev/null | head -1)
stored=$(grep -r -l -F "$WANDB_API_KEY" "$WORK/models-wandb" "$metadata" 2>/dev/null
         "$DOCKER" history --no-trunc "$IMAGE" | grep -l -F "$WANDB_API_KEY" 2>/dev/null
         "$DOCKER" image inspect "$IMAGE" | grep -l -F "$WANDB_API_KEY" 2>/dev/null)
if [ "$rc" = 0 ] && [ "$seen" = "True offline" ] && [ -n "$offline_run" ] && [ -z "$stored" ]; then
    pass "-e WANDB_API_KEY reaches W&B in the container (wandb.setup().settings.api_key is the key, mode offline), training logged $(basename "$offline_run"), and the key is in no file of the run folder ($(find "$WORK/models-wandb/run" -type f | wc -l) files) nor in the image"
else
    fail "W&B key (exit $rc; wandb sees the key, mode: '$seen'; offline run '$offline_run'; key stored in: $stored; see $WORK/train-wandb.log)"
fi
unset WANDB_API_KEY

echo "image $IMAGE: $size_mb MB; build $build_seconds s; flags-only training $train_seconds s; logs in $WORK"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
