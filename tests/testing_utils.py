"""Helpers the tests share: tiny random models built from configs, dense embeddings for comparisons, and a launcher
for 2-process runs. Imported by tests and by the scripts they launch; fixtures stay in `conftest.py`."""

import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

from r3hf import SIDRConfig, SIDRModel
from r3hf.utils import zeroed_token_ids

ROOT = Path(__file__).resolve().parents[1]

TINY_BERT = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    max_position_embeddings=512,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def make_tiny_sidr(tokenizer, seed: int = 0, **kwargs) -> SIDRModel:
    torch.manual_seed(seed)
    config = SIDRConfig(
        encoder_config=BertConfig(vocab_size=len(tokenizer), **TINY_BERT).to_dict(),
        zeroed_token_ids=zeroed_token_ids(tokenizer),
        **{"max_active_dims": 64, "query_max_length": 32, "passage_max_length": 64, **kwargs},
    )
    return SIDRModel(config, tokenizer=tokenizer).eval()


def dense_query(model, texts, **kwargs):
    """E(q) as a dense tensor."""
    return model.encode_query(texts, convert_to_sparse_tensor=False, **kwargs)


def dense_document(model, texts, **kwargs):
    """E(d) as a dense tensor."""
    return model.encode_document(texts, convert_to_sparse_tensor=False, **kwargs)


@contextlib.contextmanager
def transformers_messages():
    """The messages transformers logs inside the block, as a list (its logger does not propagate to pytest's)."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def make_tiny_causal_lm(tokenizer, seed: int = 0, num_hidden_layers: int = 1, **kwargs) -> LlamaForCausalLM:
    """A tiny random Llama over the tokenizer's vocabulary."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        **kwargs,
    )
    return LlamaForCausalLM(config).eval()


def launch_two_cpu_processes(script: str, *args: str, check: bool = True, env: dict | None = None):
    """Run a script under `accelerate launch` in 2 CPU processes (gloo), with `env` added to the environment; with
    `check`, fail with its output if it fails."""
    root = ROOT
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", **(env or {})}
    config = str(root / "recipes/accelerate_configs/cpu_2proc.yaml")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, str(root / script), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def write_original_checkpoint(
    path, bert_config: BertConfig, shift=999, topk=20, fmt="safetensors", shared=False, model_id="bert-base-uncased"
):
    """A checkpoint in the original SiDR layout, with random weights, as jzhoubu/sidr-* ships them."""
    path.mkdir()
    weights = {}
    sides = ["q"] if shared else ["q", "p"]
    for seed, side in enumerate(sides):
        torch.manual_seed(seed + 10)
        bert = BertModel(bert_config, add_pooling_layer=True)
        for k, v in bert.state_dict().items():
            weights[f"encoder_{side}.bert_model.{k}"] = v.clone()
        weights[f"encoder_{side}.ln.weight"] = torch.rand(bert_config.hidden_size) + 0.5
        weights[f"encoder_{side}.ln.bias"] = torch.randn(bert_config.hidden_size) * 0.1
    side_cfg = {"shift_vocab_num": shift, "topk": topk, "pooling": "max", "model_id": model_id}
    config = {
        "encoder_q": {**side_cfg, "max_len": 32},
        "encoder_p": {**side_cfg, "max_len": 64},
        "shared_encoder": shared,
    }
    (path / "config.json").write_text(json.dumps(config))
    if fmt == "safetensors":
        save_file(weights, path / "model.safetensors")
    else:
        torch.save(weights, path / "pytorch_model.bin")
    (path / "bert_config.json").write_text(bert_config.to_json_string())
    return weights


def original_embed(weights, side, ids, shift, topk, vocab_size):
    """The original vsearch VDREncoder.embed on one text: shifted vocab, elu1p, max, top-k ∪ bag of tokens."""
    bert = BertModel(BertConfig.from_dict({**TINY_BERT, "vocab_size": vocab_size}), add_pooling_layer=True)
    prefix = f"encoder_{side}.bert_model."
    bert.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)})
    bert.eval()
    with torch.no_grad():
        h = bert(input_ids=torch.tensor([ids])).last_hidden_state
        h = F.layer_norm(
            h, h.shape[-1:], weights[f"encoder_{side}.ln.weight"], weights[f"encoder_{side}.ln.bias"], 1e-5
        )
        vocab = (F.elu(h @ bert.embeddings.word_embeddings.weight[shift:].T) + 1).max(1)[0]
        topk_mask = torch.zeros_like(vocab, dtype=torch.bool).scatter_(-1, vocab.topk(topk).indices, True)
        bow = torch.zeros(1, vocab_size).scatter_(-1, torch.tensor([ids]), 1).bool()[:, shift:]
        return vocab * (topk_mask | bow)


def paper_datasets(n: int = 8) -> dict:
    """Tiny stand-ins for the QA datasets the paper recipes name, with their Hub schemas (columns, types, configs,
    splits): the answer to question i is "river {i % 3}", which passage i of `dpr_passages` holds."""
    import datasets

    questions = [f"which river flows past town {i}" for i in range(n)]
    answers = [f"river {i % 3}" for i in range(n)]
    nq = datasets.Dataset.from_dict({"question": questions, "answer": [[a] for a in answers]})
    string_list = datasets.Sequence(datasets.Value("string"))
    trivia = datasets.Dataset.from_dict(
        {
            "question": questions,
            "question_id": [f"tc_{i}" for i in range(n)],
            "question_source": ["http://www.quiz.example/"] * n,
            "entity_pages": [{"doc_source": [], "filename": [], "title": [], "wiki_context": []}] * n,
            "search_results": [
                {"description": [], "filename": [], "rank": [], "title": [], "url": [], "search_context": []}
            ]
            * n,
            "answer": [
                {
                    "aliases": [a, a.title()],
                    "normalized_aliases": [a],
                    "matched_wiki_entity_name": "",
                    "normalized_matched_wiki_entity_name": "",
                    "normalized_value": a,
                    "type": "WikipediaEntity",
                    "value": a.title(),
                }
                for a in answers
            ],
        },
        features=datasets.Features(
            {
                "question": datasets.Value("string"),
                "question_id": datasets.Value("string"),
                "question_source": datasets.Value("string"),
                "entity_pages": {
                    "doc_source": string_list,
                    "filename": string_list,
                    "title": string_list,
                    "wiki_context": string_list,
                },
                "search_results": {
                    "description": string_list,
                    "filename": string_list,
                    "rank": datasets.Sequence(datasets.Value("int32")),
                    "title": string_list,
                    "url": string_list,
                    "search_context": string_list,
                },
                "answer": {
                    "aliases": string_list,
                    "normalized_aliases": string_list,
                    "matched_wiki_entity_name": datasets.Value("string"),
                    "normalized_matched_wiki_entity_name": datasets.Value("string"),
                    "normalized_value": datasets.Value("string"),
                    "type": datasets.Value("string"),
                    "value": datasets.Value("string"),
                },
            }
        ),
    )
    hotpot = datasets.Dataset.from_dict(
        {
            "id": [f"5a8b{i:04d}" for i in range(n)],
            "question": questions,
            "answer": answers,
            "type": ["bridge"] * n,
            "level": ["medium"] * n,
            "supporting_facts": [{"title": [f"Town {i}"], "sent_id": [0]} for i in range(n)],
            "context": [
                {"title": [f"Town {i}"], "sentences": [[f"Town {i} lies on river {i % 3}."]]} for i in range(n)
            ],
        },
        features=datasets.Features(
            {
                "id": datasets.Value("string"),
                "question": datasets.Value("string"),
                "answer": datasets.Value("string"),
                "type": datasets.Value("string"),
                "level": datasets.Value("string"),
                "supporting_facts": {"title": string_list, "sent_id": datasets.Sequence(datasets.Value("int32"))},
                "context": {"title": string_list, "sentences": datasets.Sequence(string_list)},
            }
        ),
    )
    health, health_test = closed_set_datasets(n)
    arc = arc_dataset(n)
    return {
        "google-research-datasets/nq_open": {"nq_open": {"train": nq, "validation": nq}},
        "mandarjoshi/trivia_qa": {"rc.nocontext": {"train": trivia, "validation": trivia, "test": trivia}},
        "hotpotqa/hotpot_qa": {"distractor": {"train": hotpot, "validation": hotpot}},
        "ImperialCollegeLondon/health_fact": {"default": {"train": health, "validation": health, "test": health_test}},
        "allenai/ai2_arc": {
            name: {"train": arc, "validation": arc, "test": arc} for name in ("ARC-Challenge", "ARC-Easy")
        },
    }


def closed_set_datasets(n: int = 8):
    """Stand-ins for `ImperialCollegeLondon/health_fact` with its columns and ClassLabel (false, mixture, true,
    unproven): `n` true or false claims about the towns of `dpr_passages`, and a test split with two more claims
    labelled mixture and unproven (left out by the loader)."""
    import datasets

    def rows(count: int, labels) -> list[dict]:
        return [
            {
                "claim_id": str(i),
                "claim": f"Town {i} lies on river {i % 3 if label == 2 else (i + 1) % 3}.",
                "date_published": "2020-01-01",
                "explanation": "A map.",
                "fact_checkers": "",
                "main_text": "",
                "sources": "",
                "label": label,
                "subjects": "Geography",
            }
            for i, label in zip(range(count), labels)
        ]

    strings = (
        "claim_id",
        "claim",
        "date_published",
        "explanation",
        "fact_checkers",
        "main_text",
        "sources",
        "subjects",
    )
    features = datasets.Features(
        {
            **{k: datasets.Value("string") for k in strings},
            "label": datasets.ClassLabel(names=["false", "mixture", "true", "unproven"]),
        }
    )
    true_false = [2 if i % 2 == 0 else 0 for i in range(n)]
    train = datasets.Dataset.from_list(rows(n, true_false), features=features)
    test = datasets.Dataset.from_list(rows(n + 2, [*true_false, 1, 3]), features=features)
    return train, test


def arc_dataset(n: int = 8):
    """A stand-in for `allenai/ai2_arc`'s configurations: `id`, `question`, `choices` {`text`, `label`},
    `answerKey`."""
    import datasets

    return datasets.Dataset.from_list(
        [
            {
                "id": f"Mercury_{i}",
                "question": f"Which river flows past town {i}?",
                "choices": {"text": [f"river {j}" for j in range(4)], "label": list("ABCD")},
                "answerKey": "ABCD"[i % 3],
            }
            for i in range(n)
        ]
    )
