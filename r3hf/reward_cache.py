"""An append-only store of reward scores shared by processes and runs: one SQLite segment per writer in a folder.

Every process appends only to its own segment (`<writer>.sqlite`), committed after each scored batch, so a crash loses
at most that batch and no file is ever written by two processes. Opening the store reads every segment in the folder,
whatever the number of processes that wrote them: a resumed run, with any number of processes, or a second run with
the same LLM and prompt, starts warm.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path


def reward_key(*parts) -> bytes:
    """A 16-byte key for what determines a score (LLM, prompt settings, query, passage, answers)."""
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=16).digest()


class RewardCache:
    """Scores by key, kept in memory and appended to this writer's segment of a folder.

    Args:
        folder: The store's folder (created if needed).
        writer: This process's segment name, e.g. `"rank0"`; two live processes must not share one. `None`: read
            only (nothing can be added).
    """

    def __init__(self, folder: str | os.PathLike, writer: str | None = "rank0"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.scores: dict[bytes, float] = {}
        for segment in sorted(self.folder.glob("*.sqlite")):
            with closing(sqlite3.connect(f"file:{segment}?mode=ro", uri=True)) as connection:
                try:
                    self.scores.update(connection.execute("SELECT key, score FROM scores"))
                except sqlite3.DatabaseError as error:
                    raise ValueError(
                        f"{segment} is not a readable reward-cache segment ({error}): delete it to start it afresh."
                    ) from error
        self._pending: dict[bytes, float] = {}
        self._connection = None
        if writer is not None:
            self._connection = sqlite3.connect(self.folder / f"{writer}.sqlite")
            self._connection.execute("CREATE TABLE IF NOT EXISTS scores (key BLOB PRIMARY KEY, score REAL NOT NULL)")
            self._connection.commit()

    def __len__(self) -> int:
        return len(self.scores)

    def __contains__(self, key: bytes) -> bool:
        return key in self.scores

    def __getitem__(self, key: bytes) -> float:
        return self.scores[key]

    def __setitem__(self, key: bytes, score: float) -> None:
        if self._connection is None:
            raise ValueError("This RewardCache was opened read-only (writer=None): open it with a writer name.")
        if key not in self.scores:
            self._pending[key] = score
        self.scores[key] = score

    def update(self, items: Iterable[tuple[bytes, float]]) -> None:
        for key, score in items:
            self[key] = score

    def flush(self) -> None:
        """Append the scores added since the last flush to this writer's segment, in one transaction."""
        if self._pending:
            with self._connection:
                self._connection.executemany(
                    "INSERT OR IGNORE INTO scores (key, score) VALUES (?, ?)", self._pending.items()
                )
            self._pending.clear()

    def close(self) -> None:
        if self._connection is not None:
            self.flush()
            self._connection.close()
