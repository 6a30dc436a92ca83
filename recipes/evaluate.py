"""Answer-recall@k and RAG accuracy (1 and 10 passages) for SIDR retrievers and bm25s on any QA dataset.

    python recipes/evaluate.py --retrievers outputs/demo-r3-minilm bm25s --dataset data/nq_test.jsonl.gz \
        --corpus data/corpus.jsonl.gz --llm smollm2-135m-instruct
"""

from r3hf.scripts.evaluate import main

if __name__ == "__main__":
    main()
