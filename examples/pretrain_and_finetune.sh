#!/usr/bin/env bash
# Multi-session pretraining, then fine-tuning on held-out sessions, then evaluation, with
# `accelerate launch`: the whole NEDS workflow on the synthetic corpus (no internet, no GPU).
#
# Usage (from the repository root):
#   bash examples/pretrain_and_finetune.sh [cpu1|cpu2|gpu]
#     cpu1  one CPU process (default; a few minutes on 2 cores)
#     cpu2  two data-parallel CPU processes on gloo (ACCELERATE_USE_CPU=1 + --multi_gpu)
#     gpu   every GPU of this machine, bf16 (examples/accelerate/multi_gpu.yaml)
#
# Environment:
#   WORK       where the corpus, dataset, runs and evaluation go (default runs/example)
#   MAX_STEPS  optimizer steps of each training stage (default: synthetic_small.yaml's 100)
#   NEDS_HF    the neds-hf command (default neds-hf; from a source checkout without
#              installing: NEDS_HF="python -m neds_hf.cli" with PYTHONPATH=src)
#
# Steps:
#   1. neds-hf make-synthetic   6 IBL-like sessions in the ALF layout + a ONE cache
#   2. neds-hf prepare-data     the neds_hf dataset (Parquet + card), through the ONE loader
#   3. pretraining              on 4 sessions (neds_hf.train, examples/configs/synthetic_small.yaml)
#   4. fine-tuning              on the 2 held-out sessions (neds_hf.finetune), from step 3's model
#   5. evaluation               encoding and decoding on the held-out test trials (quickstart.py)
#
# The real IBL data (needs internet and tens of GB; GPUs recommended) is at the end of this
# file, commented out.
set -euo pipefail

MODE="${1:-cpu1}"
WORK="${WORK:-runs/example}"
NEDS_HF="${NEDS_HF:-neds-hf}"
STEP_ARGS=()
if [[ -n "${MAX_STEPS:-}" ]]; then
  STEP_ARGS=(--max_steps "$MAX_STEPS")
fi

# ---- how to launch: the same training code runs under all three
case "$MODE" in
  cpu1)
    # One process; `python -m neds_hf.train ...` is equivalent.
    LAUNCH=(accelerate launch --config_file examples/accelerate/cpu_single.yaml)
    ;;
  cpu2)
    # Two CPU processes. ACCELERATE_USE_CPU=1 is required: `--cpu --num_processes 2`, or a
    # config file with distributed_type MULTI_CPU, silently runs ONE process.
    # The global batch is per_device_train_batch_size x 2.
    export ACCELERATE_USE_CPU=1
    LAUNCH=(accelerate launch --multi_gpu --num_processes 2 --main_process_port 29512)
    ;;
  gpu)
    # All GPUs of this machine with DDP and bf16; across machines use
    # examples/accelerate/multi_node.yaml.
    N_GPUS="$(nvidia-smi --list-gpus | wc -l)"
    LAUNCH=(accelerate launch --config_file examples/accelerate/multi_gpu.yaml
            --num_processes "$N_GPUS")
    ;;
  *)
    echo "usage: $0 [cpu1|cpu2|gpu]" >&2
    exit 2
    ;;
esac

mkdir -p "$WORK"
# A private datasets cache for this run: `datasets` keys its Arrow cache of a local folder by
# the folder name and its configs, so another dataset folder of the same name with the same
# session ids (an earlier run with other sizes, say) could otherwise be read instead.
export HF_DATASETS_CACHE="${HF_DATASETS_CACHE:-$WORK/hf_datasets_cache}"

# ---- 1. synthetic sessions (printed one session id per line after a summary line)
$NEDS_HF make-synthetic --output "$WORK/one_cache" --sessions 6 --seed 0 \
  | tee "$WORK/make_synthetic.log"
mapfile -t EIDS < <(grep -E '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' \
  "$WORK/make_synthetic.log")
if [[ "${#EIDS[@]}" -ne 6 ]]; then
  echo "expected 6 session ids from make-synthetic, got ${#EIDS[@]}" >&2
  exit 1
fi
PRETRAIN_EIDS=("${EIDS[@]:0:4}")
HELDOUT_EIDS=("${EIDS[@]:4:2}")

# ---- 2. the dataset: every session; the split into pretraining / held-out sessions is made
# at training time with --sessions (one dataset, two session lists)
$NEDS_HF prepare-data --cache-dir "$WORK/one_cache" --eids "${EIDS[@]}" \
  --output "$WORK/dataset" --overwrite --no-progress

# ---- 3. multi-session pretraining (flags override the YAML config)
"${LAUNCH[@]}" -m neds_hf.train --config examples/configs/synthetic_small.yaml \
  --dataset "$WORK/dataset" --output_dir "$WORK/pretrain" --overwrite_output_dir true \
  --sessions "${PRETRAIN_EIDS[@]}" "${STEP_ARGS[@]}"

# ---- 4. fine-tuning on the held-out sessions: fresh per-session parameters, the pretrained
# encoder kept; the encoder is frozen for the first 20 steps while the new stitchers adapt
# (--freeze_encoder none | warmup | all), with the reference's fine-tuning mask ratio 0.1
"${LAUNCH[@]}" -m neds_hf.finetune --config examples/configs/synthetic_small.yaml \
  --model_name_or_path "$WORK/pretrain/model" --dataset "$WORK/dataset" \
  --output_dir "$WORK/finetune" --overwrite_output_dir true \
  --sessions "${HELDOUT_EIDS[@]}" --mask_ratio 0.1 \
  --freeze_encoder warmup --freeze_warmup_steps 20 "${STEP_ARGS[@]}"

# ---- 5. encoding and decoding on the held-out sessions' test trials
python examples/quickstart.py --model "$WORK/finetune/model" --dataset "$WORK/dataset" \
  --output "$WORK/evaluation"

echo "done: models in $WORK/pretrain/model and $WORK/finetune/model," \
  "evaluation in $WORK/evaluation"

# ---- The real IBL data (needs internet: --online downloads through ONE from the public
# IBL server into --cache-dir; tens of GB and hours for the 74 sessions):
#
# neds-hf prepare-data --online --cache-dir ~/ibl_one_cache \
#   --eids-file src/neds_hf/data/eids/neds_pretrain_eids.txt --output data/neds_pretrain
# neds-hf prepare-data --online --cache-dir ~/ibl_one_cache \
#   --eids-file src/neds_hf/data/eids/neds_heldout_eids.txt --output data/neds_heldout
#
# accelerate launch --config_file examples/accelerate/multi_gpu.yaml \
#   -m neds_hf.train --config examples/configs/pretrain_ibl.yaml
# accelerate launch -m neds_hf.finetune --config examples/configs/finetune_ibl.yaml
# python examples/quickstart.py --model runs/neds_finetune/model --dataset data/neds_heldout \
#   --output runs/neds_finetune/evaluation
#
# The same commands on CPU processes only, for a small trial run of the IBL configs:
# ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 \
#   -m neds_hf.train --config examples/configs/pretrain_ibl.yaml --max_steps 10
