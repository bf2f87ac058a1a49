#!/usr/bin/env bash
# ELF-B on OpenWebText on one TPU v5p-64 slice (32 chips, 8 hosts) through XPK (GKE + JobSet).
#
# Plan it first, on any machine with the dev install (compile-only: no TPU needed), with ELF_ARGS as set below:
#   python -m elf_eqx.train $ELF_ARGS --dry-run --target v5p-64
#
# XPK runs the command on every host of the slice; GKE's TPU webhook sets TPU_WORKER_HOSTNAMES and
# TPU_WORKER_ID, from which jax.distributed finds its peers (no process flags). A preemption (SIGTERM
# to every host) stops all hosts after the same step, saves it and exits 0; a lost host makes the
# others exit 42 within --heartbeat-timeout-s; XPK restarts the whole workload on exit 42 or a
# signal (128-255), up to --max-restarts times, and not on 1 (a bug) or 2 (bad input). Every start
# resumes from the newest complete checkpoint in the bucket.
#
#   CLUSTER=my-v5p-cluster BUCKET=gs://my-bucket/elf IMAGE=gcr.io/my-project/elf_eqx:latest bash launch/xpk_v5p64.sh
set -euo pipefail
: "${CLUSTER:?the XPK cluster (xpk cluster create --tpu-type v5p-64 ...)}"
: "${BUCKET:?where the run writes, gs://bucket/prefix}"
: "${IMAGE:?a container image with elf_eqx installed (pip install -e . jax[tpu]==0.10.2)}"
WORKLOAD=${WORKLOAD:-elf-b-owt}

# The run's arguments. The
# cluster owns restarts here (--max-restarts below), so elf_eqx's own stay 0.
ELF_ARGS="--preset owt_elf_b --output-dir ${BUCKET}/runs/owt_elf_b --heartbeat-timeout-s 60 --max-restarts 0"

xpk workload create \
  --cluster "$CLUSTER" --workload "$WORKLOAD" \
  --tpu-type v5p-64 --num-slices 1 \
  --docker-image "$IMAGE" \
  --max-restarts 10 \
  --termination-grace-period-seconds 300 \
  --command "python -m elf_eqx.train $ELF_ARGS"
