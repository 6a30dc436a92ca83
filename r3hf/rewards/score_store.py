"""An append-only store of reward scores shared by processes and runs: one SQLite segment per writer in a folder.

Every process appends only to its own segment (`<writer>.sqlite`), committed after each scored batch, so a crash loses
at most that batch and no file is ever written by two processes. Lookups read every segment in the folder, whatever
the number of processes that wrote them, including segments other live processes add: a resumed run, with any number
of processes, or a second run with the same LLM and prompt, starts warm. Scores stay on disk (about 35 bytes per
entry, see `benchmarks/bench_reward_store.py`), so a store of tens of millions of pairs costs no process memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

# Under SQLite's smallest limit on bound parameters (999 before 3.32).
_LOOKUP_CHUNK = 900


def reward_key(*parts) -> bytes:
    """A 16-byte key for what determines a score (LLM, prompt settings, query, passage, answers)."""
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=16).digest()


class RewardCache:
    """Scores by key, appended to this writer's segment of a folder and looked up in all of its segments.

    Args:
        folder: The store's folder (created if needed).
        writer: This process's segment name, e.g. `"rank0"`; two live processes must not share one. `None`: read
            only (nothing can be added).
    """

    def __init__(self, folder: str | os.PathLike, writer: str | None = "rank0"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._pending: dict[bytes, float] = {}
        self._connection = None
        self._own = None
        self._readers: dict[Path, sqlite3.Connection] = {}
        if writer is not None:
            self._own = self.folder / f"{writer}.sqlite"
            self._connection = sqlite3.connect(self._own, timeout=60)
            self._connection.execute(
                "CREATE TABLE IF NOT EXISTS scores (key BLOB PRIMARY KEY, score REAL NOT NULL) WITHOUT ROWID"
            )
            self._connection.commit()
        self._open_new_segments()

    def _open_new_segments(self) -> None:
        for segment in sorted(self.folder.glob("*.sqlite")):
            if segment == self._own or segment in self._readers:
                continue
            # timeout: a reader waits while another process commits to that segment
            connection = sqlite3.connect(f"file:{segment}?mode=ro", uri=True, timeout=60)
            try:
                connection.execute("SELECT key, score FROM scores LIMIT 1").fetchall()
            except sqlite3.DatabaseError as error:
                connection.close()
                if "no such table" in str(error):  # another process is creating its segment right now
                    continue
                raise ValueError(
                    f"{segment} is not a readable reward-cache segment ({error}): delete it to start it afresh."
                ) from error
            self._readers[segment] = connection

    def _segments(self) -> list[sqlite3.Connection]:
        self._open_new_segments()
        return ([self._connection] if self._connection is not None else []) + list(self._readers.values())

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, float]:
        """The stored scores of those `keys` that have one."""
        found = {k: self._pending[k] for k in keys if k in self._pending}
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        for connection in self._segments():
            for start in range(0, len(missing), _LOOKUP_CHUNK):
                chunk = missing[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(connection.execute(f"SELECT key, score FROM scores WHERE key IN ({marks})", chunk))
            missing = [k for k in missing if k not in found]
            if not missing:
                break
        return found

    def __len__(self) -> int:
        """Stored rows over all segments (a pair scored by two processes counts twice) plus those not yet flushed."""
        return len(self._pending) + sum(
            c.execute("SELECT COUNT(*) FROM scores").fetchone()[0] for c in self._segments()
        )

    def __setitem__(self, key: bytes, score: float) -> None:
        if self._connection is None:
            raise ValueError("This RewardCache was opened read-only (writer=None): open it with a writer name.")
        self._pending[key] = score

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
            self._connection = None
        for connection in self._readers.values():
            connection.close()
        self._readers.clear()
