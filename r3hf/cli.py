"""The `r3hf` command line: `r3hf {index build|index push|index export|search|train|evaluate|convert-sidr} ...`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .utils import ArgumentParser, enable_logging


def _index_build(args) -> None:
    from .data import load_table
    from .index import BagOfTokensIndex
    from .models import load_retriever

    model = load_retriever(args.retriever)
    max_length = args.max_length or model.config.passage_max_length
    index = BagOfTokensIndex.build(
        load_table(args.corpus, args.split),
        model.tokenizer,
        max_length=max_length,
        show_progress_bar=True,
        num_proc=args.num_proc,
    )
    if args.bm25:
        index.add_bm25(stopwords=None if args.bm25_stopwords == "none" else args.bm25_stopwords)
    index.save_pretrained(args.output, max_shard_size=args.max_shard_size)
    print(f"Indexed {len(index)} passages ({index.nbytes / 2**20:.1f} MB) into {args.output}")
    if args.push_to:
        print(index.push_to_hub(args.push_to, private=args.private))


def _index_push(args) -> None:
    from .index import load_index

    print(load_index(args.index).push_to_hub(args.repo_id, private=args.private))


def _search(args) -> None:
    from .index import BagOfTokensIndex
    from .models import load_retriever

    model = load_retriever(args.retriever)
    pipeline = {
        "rerank_top_m": max(args.k, args.rerank_top_m),
        "first_stage": args.first_stage,
        "fusion": args.fusion,
        "fusion_weight": args.fusion_weight,
    }
    if args.qdrant:
        results, passages = _qdrant_search(args, model, pipeline)
    elif args.index:
        index = BagOfTokensIndex.from_pretrained(args.index, tokenizer=model.tokenizer)
        results, passages = model.retrieve(args.queries, index, k=args.k, **pipeline), index.get_passages
    else:
        raise SystemExit("r3hf: search needs --index (a saved index) or --qdrant (a collection made by index export).")
    for query, rows, scores in zip(args.queries, results.rows.tolist(), results.scores.tolist()):
        hits = [{"score": round(s, 4), **p} for p, s in zip(passages(rows), scores)]
        print(json.dumps({"query": query, "results": hits}, ensure_ascii=False))


def _qdrant_client(location: str):
    from .integrations.qdrant import connect

    try:
        return connect(location)
    except ConnectionError as error:
        raise SystemExit(f"r3hf: {error}") from None


def _index_export(args) -> None:
    from .index import BagOfTokensIndex
    from .integrations.qdrant import export_index
    from .models import load_retriever

    model = load_retriever(args.retriever) if args.retriever else None
    tokenizer = model.tokenizer if model is not None else None
    index = BagOfTokensIndex.from_pretrained(args.index, tokenizer=tokenizer)
    counts = export_index(
        index,
        _qdrant_client(args.qdrant),
        args.collection,
        model=model,
        batch_size=args.batch_size,
        show_progress_bar=True,
    )
    print(f"Collection {args.collection!r} holds {counts['passages']} passages ({counts['added']} added now)")


def _qdrant_search(args, model, pipeline: dict):
    """The results of `r3hf search --qdrant`, and a function giving the passages of result rows."""
    from .index import BagOfTokensIndex
    from .integrations.qdrant import QdrantRetriever

    bm25 = None
    if args.first_stage != "bag_of_tokens":
        if not args.index:
            raise SystemExit("r3hf: a bm25 or hybrid first stage through Qdrant needs --index (its bm25s tokenizer).")
        bm25 = BagOfTokensIndex.from_pretrained(args.index, tokenizer=model.tokenizer).require_bm25()
    client = _qdrant_client(args.qdrant)
    retriever = QdrantRetriever(client, args.collection, model, bm25=bm25, **pipeline)

    def passages(rows: list[int]) -> list[dict]:
        payloads = {p.id: p.payload for p in client.retrieve(args.collection, ids=rows)}
        return [payloads[i] for i in rows]

    return retriever.retrieve(args.queries, k=args.k), passages


def _train(args, rest: list[str]) -> None:
    from .scripts.train import run_from_command_line

    run_from_command_line(rest)


def _evaluate(args, rest: list[str]) -> None:
    from .scripts.evaluate import main

    main(rest)


def _convert(args) -> None:
    from .convert_sidr import convert_sidr_checkpoint

    convert_sidr_checkpoint(
        args.src,
        args.out,
        encoder_config=args.encoder_config,
        tokenizer=args.tokenizer,
        activate_lexical=not args.no_activate_lexical,
        allow_pickle=args.allow_pickle,
    )
    print(f"Wrote an r3hf SIDRModel to {args.out}")


def make_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="r3hf", description="Train and use R3 retrievers for RAG.")
    sub = parser.add_subparsers(dest="command", required=True)

    index = sub.add_parser("index", help="build or push a bag-of-tokens index").add_subparsers(
        dest="action", required=True
    )
    build = index.add_parser("build", help="tokenize a corpus into a bag-of-tokens index")
    build.add_argument("--corpus", required=True, help="JSONL/Parquet file or Hub dataset id (id, title, text)")
    build.add_argument(
        "--retriever",
        required=True,
        help="the retriever whose tokenizer the index uses (folder, Hub id or packaged name)",
    )
    build.add_argument("--output", required=True, help="the folder to save the index in")
    build.add_argument("--split", default="train", help="the split to index, for a Hub dataset")
    build.add_argument(
        "--max-length", type=int, default=None, help="passage tokens indexed (default: the retriever's passage length)"
    )
    build.add_argument("--num-proc", type=int, default=None, help="build in this many processes (one shard each)")
    build.add_argument("--max-shard-size", default="500MB", help="largest array file of the saved index")
    build.add_argument("--bm25", action="store_true", help="add a bm25s part (for bm25 and hybrid first stages)")
    build.add_argument("--bm25-stopwords", default="en", help="bm25s stopword list, or 'none'")
    build.add_argument("--push-to", default=None, help="also push to this dataset repo")
    build.add_argument("--private", action="store_true", help="make the pushed repo private")
    build.set_defaults(func=_index_build)
    push = index.add_parser("push", help="push a saved index to a Hub dataset repo")
    push.add_argument("index", help="a saved index folder")
    push.add_argument("repo_id", help="the Hub dataset repo to push to (made if missing)")
    push.add_argument("--private", action="store_true", help="make the repo private")
    push.set_defaults(func=_index_push)
    export = index.add_parser(
        "export",
        help="export a saved index to a search engine",
        description="Export a saved index to a Qdrant collection (made if missing; an interrupted export resumes).",
    )
    export.add_argument("engine", choices=["qdrant"], help="the engine to export to")
    export.add_argument("--index", required=True, help="a saved index: a folder or a Hub dataset id")
    export.add_argument("--qdrant", required=True, help="a Qdrant server URL (http://...) or a local folder")
    export.add_argument("--collection", required=True, help="the collection to make or complete")
    export.add_argument(
        "--retriever", default=None, help="also store this retriever's E(d), so Qdrant re-ranks in one request"
    )
    export.add_argument("--batch-size", type=int, default=256, help="passages uploaded at a time")
    export.set_defaults(func=_index_export)

    search = sub.add_parser(
        "search",
        help="late-parametric search of a saved index",
        description="Search a saved index; prints one JSON line per query, its top k passages best first.",
    )
    search.add_argument("queries", nargs="+", help="the questions to search for")
    search.add_argument(
        "--retriever",
        required=True,
        help="a SIDR checkpoint or a BERT-style encoder to start one from: a folder, a Hub id, or a packaged name such as all-minilm-l6-v2",
    )
    search.add_argument("--index", default=None, help="a saved index: a folder or a Hub dataset id")
    search.add_argument(
        "--qdrant",
        default=None,
        help="search a Qdrant collection instead: a server URL (http://...) or a local folder",
    )
    search.add_argument("--collection", default="r3hf", help="the Qdrant collection (with --qdrant)")
    search.add_argument("-k", type=int, default=5, help="passages printed per query")
    search.add_argument(
        "--rerank-top-m",
        type=int,
        default=100,
        help="candidates each first stage hands to the re-ranking by E(q)·E(d)",
    )
    from .scripts import add_first_stage_arguments

    add_first_stage_arguments(search)
    search.set_defaults(func=_search)

    sub.add_parser(
        "train", help="same as recipes/train.py (--config YAML, flags override)", add_help=False
    ).set_defaults(func=_train, passthrough=True)
    sub.add_parser("evaluate", help="same as recipes/evaluate.py", add_help=False).set_defaults(
        func=_evaluate, passthrough=True
    )

    convert = sub.add_parser("convert-sidr", help="convert an original SiDR checkpoint into an r3hf SIDRModel")
    convert.add_argument("src", help="the original checkpoint's folder")
    convert.add_argument("out", help="the folder to write the r3hf SIDRModel to")
    convert.add_argument("--encoder-config", default=None, help="BERT config (default: the checkpoint's model_id's)")
    convert.add_argument("--tokenizer", default=None, help="tokenizer path or Hub id (default: the one in src)")
    convert.add_argument("--no-activate-lexical", action="store_true", help="keep only the top-k dimensions")
    convert.add_argument("--allow-pickle", action="store_true", help="accept a trusted pytorch_model.bin")
    convert.set_defaults(func=_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    enable_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    if argv and argv[0] in ("train", "evaluate"):
        args = parser.parse_args(argv[:1])
        args.func(args, argv[1:])
        return
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
