"""The whole Generator-Critic loop under `accelerate launch` (or plain python): a thin entry to `spc-train loop`.

Usage:
    accelerate launch --config_file configs/accelerate/ddp.yaml scripts/run_loop.py \
        --config recipes/qwen2.5-1.5b-instruct/loop.yaml --run_dir runs/qwen1.5b

Generation and training use every process (shards per process; DDP/FSDP/ZeRO training), the critic and the small
stages run on the main process, and only the main process writes shared files. Re-run the same command to resume.
"""

import sys

from spc_train.cli import main

if __name__ == "__main__":
    sys.exit(main(["loop", *sys.argv[1:]]))
