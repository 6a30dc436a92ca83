"""Loading QA datasets and corpora from local files, URLs or the Hub."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import datasets

_LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".gz": "json", ".parquet": "parquet", ".csv": "csv"}


def load_table(
    path_or_id: str, split: str = "train", max_rows: int | None = None, config_name: str | None = None
) -> datasets.Dataset:
    """A `datasets.Dataset` from a JSON Lines (optionally gzipped) / Parquet / CSV file, DPR's passage file
    (`psgs_w100.tsv`, optionally gzipped: `id`, `text`, `title`, every field kept as a string), each a local path or
    an http(s) URL (downloaded once into the `datasets` cache), a folder saved with `save_to_disk`, or a Hub dataset
    id."""
    path = Path(path_or_id)
    url = path_or_id.startswith(("http://", "https://"))
    name = urlparse(path_or_id).path if url else path.name
    if (url or path.is_file()) and name.endswith((".tsv", ".tsv.gz")):
        dataset = datasets.load_dataset(
            "csv",
            data_files=path_or_id,
            split="train",
            delimiter="\t",
            na_filter=False,  # a passage that reads "NA" or "null" stays text
            features=datasets.Features(
                {"id": datasets.Value("string"), "text": datasets.Value("string"), "title": datasets.Value("string")}
            ),
        )
    elif url or path.is_file():
        suffix = Path(name).suffix
        dataset = datasets.load_dataset(_LOCAL_FORMATS.get(suffix, "json"), data_files=path_or_id, split="train")
    elif path.is_dir() and (path / "dataset_info.json").exists():
        dataset = datasets.load_from_disk(str(path))
    elif path.exists() or path_or_id.startswith((".", "/")):
        raise FileNotFoundError(f"{path_or_id} is not a data file or a saved dataset folder.")
    else:
        dataset = datasets.load_dataset(path_or_id, config_name, split=split)
    if max_rows is not None and max_rows < len(dataset):
        dataset = dataset.select(range(max_rows))
    return dataset


def _aliases(answer) -> list[str]:
    if isinstance(answer, str):
        return [answer]
    if isinstance(answer, dict):  # TriviaQA: {"value": ..., "aliases": [...]}
        return [a for a in dict.fromkeys([answer.get("value", ""), *answer.get("aliases", [])]) if a]
    return list(answer)


def load_qa_dataset(
    path_or_id: str, split: str = "train", max_rows: int | None = None, config_name: str | None = None
) -> datasets.Dataset:
    """A QA dataset with `question` and `answers` columns. An `answer` column (a string as in HotpotQA, a list as
    in NQ-open, or a `{"value","aliases"}` dict as in TriviaQA) becomes `answers`."""
    dataset = load_table(path_or_id, split, max_rows, config_name)
    if "answers" not in dataset.column_names and "answer" in dataset.column_names:
        dataset = dataset.map(lambda ex: {"answers": _aliases(ex["answer"])})
    if not {"question", "answers"} <= set(dataset.column_names):
        raise ValueError(f"{path_or_id} needs 'question' and 'answers' columns; it has {dataset.column_names}.")
    return dataset
