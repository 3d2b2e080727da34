#!/bin/sh
# `docker run IMAGE --epochs 5 ...` (flags only, as in the seed's usage) means `chef-genius train`,
# writing to the mounted models folder and resuming there after a restart.
set -e
case "${1:-}" in
  -*) exec chef-genius train --output-dir /workspace/models/run --resume auto "$@" ;;
  *)  exec chef-genius "$@" ;;
esac
