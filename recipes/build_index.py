"""Build (and optionally push) the bag-of-tokens index of a corpus; same as `r3hf index build`.

python recipes/build_index.py --corpus data/corpus.jsonl.gz --retriever all-minilm-l6-v2 --output outputs/index
"""

import sys

from r3hf.cli import main

if __name__ == "__main__":
    main(["index", "build", *sys.argv[1:]])
