"""Train a retriever with R3: `accelerate launch recipes/train.py --config recipes/configs/nq.yaml`.

See `r3hf/scripts/train.py` for the arguments; CLI flags override the YAML.
"""

from r3hf.scripts.train import run_from_command_line
from r3hf.utils import enable_logging

if __name__ == "__main__":
    enable_logging()
    run_from_command_line()
