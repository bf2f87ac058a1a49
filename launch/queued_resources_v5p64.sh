#!/usr/bin/env bash
# ELF-B on OpenWebText on a TPU v5p-64 slice (32 chips, 8 TPU VMs) through queued resources:
# create the slice, run the same command on every VM, delete the slice.
#
# Plan it first, on any machine with the dev install (compile-only: no TPU needed), with ELF_ARGS as set below:
#   python -m elf_eqx.train $ELF_ARGS --dry-run --target v5p-64
#
# On a TPU VM jax.distributed finds the slice's other VMs through the VM's metadata (no process
# flags). Nothing else restarts the job here, so elf_eqx does: each VM reruns its process after a
# lost peer or a killed worker (--max-restarts 3) and every start resumes from the newest complete
# checkpoint in the bucket. A preemption (SIGTERM to every VM) stops all of them after the same step,
# saves it and exits 0; rerun this script to continue. Bad input or a bug ends it at once (exit 2, 1).
#
#   PROJECT=my-project ZONE=us-east5-a BUCKET=gs://my-bucket/elf bash launch/queued_resources_v5p64.sh
set -euo pipefail
: "${PROJECT:?the Google Cloud project}"
: "${ZONE:?a zone with v5p capacity, e.g. us-east5-a}"
: "${BUCKET:?where the run writes, gs://bucket/prefix}"
NAME=${NAME:-elf-b-owt}
REPO=${REPO:-https://github.com/OWNER/elf_eqx.git}  # this repository

ELF_ARGS="--preset owt_elf_b --output-dir ${BUCKET}/runs/owt_elf_b --heartbeat-timeout-s 60 --max-restarts 3"

gcloud compute tpus queued-resources create "$NAME" --node-id "$NAME" \
  --project "$PROJECT" --zone "$ZONE" \
  --accelerator-type v5p-64 --runtime-version v2-alpha-tpuv5 ${SPOT:+--spot}
until [[ "$(gcloud compute tpus queued-resources describe "$NAME" --project "$PROJECT" --zone "$ZONE" \
            --format='value(state.state)')" == ACTIVE ]]; do
  sleep 30
done
trap 'gcloud compute tpus queued-resources delete "$NAME" --project "$PROJECT" --zone "$ZONE" --force --quiet' EXIT

gcloud compute tpus tpu-vm ssh "$NAME" --project "$PROJECT" --zone "$ZONE" --worker=all --command "
  set -e
  [ -d elf_eqx ] || git clone $REPO elf_eqx
  cd elf_eqx && pip install -q -e . 'jax[tpu]==0.10.2'
  python -m elf_eqx.train $ELF_ARGS"
