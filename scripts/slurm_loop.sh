#!/usr/bin/env bash
# Several nodes under SLURM: one `accelerate launch` per node, GPUs x nodes processes in all.
#   sbatch --nodes 2 --gpus-per-node 8 scripts/slurm_loop.sh recipes/qwen2.5-1.5b-instruct/loop.yaml runs/qwen1.5b
#SBATCH --job-name=spc-train
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail
RECIPE=${1:?recipe}
RUN_DIR=${2:?run directory}
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-configs/accelerate/ddp.yaml}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MAIN_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
srun bash -c "accelerate launch --config_file $ACCELERATE_CONFIG \
  --num_machines $SLURM_NNODES --machine_rank \$SLURM_NODEID \
  --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
  --main_process_ip $MAIN_NODE --main_process_port 29500 \
  scripts/run_loop.py --config $RECIPE --run_dir $RUN_DIR"
