"""Answer-recall@k, RAG accuracy (1 and 10 passages) and paired bootstrap intervals for SIDR retrievers and bm25s.

    python recipes/evaluate.py --retrievers outputs/demo/r3 all-minilm-l6-v2 bm25s --dataset data/nq_test.jsonl.gz \
        --corpus data/corpus.jsonl.gz --llm smollm2-135m-instruct --output-dir outputs/eval
"""

from r3hf.scripts.evaluate import main
from r3hf.utils import enable_logging

if __name__ == "__main__":
    enable_logging()
    main()
