"""Size and speed of the reward store (`r3hf.rewards.score_store.RewardCache`) per million entries.

Appends `--entries` random (key, score) pairs split over `--writers` segments, in batches of `--batch` as the trainer
flushes them (one batch per scored training step), then looks up steps' worth of keys (half stored, half new) in every segment as a resumed run does.

    python benchmarks/bench_reward_store.py --entries 1000000 --out benchmarks/results/reward_store.json
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from pathlib import Path

from r3hf.rewards.score_store import RewardCache, reward_key
from r3hf.scripts.utils import write_result
from r3hf.utils import ArgumentParser


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--writers", type=int, default=4, help="segments, one per process")
    parser.add_argument(
        "--batch", type=int, default=128 * 20, help="entries per flush (paper: 128 questions × top 20)"
    )
    parser.add_argument("--lookups", type=int, default=50, help="steps' worth of lookups timed after reopening")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        for w in range(args.writers):
            store = RewardCache(folder, writer=f"rank{w}")
            share = range(w, args.entries, args.writers)
            for i in range(0, len(share), args.batch):
                store.update(
                    (reward_key("llm", "prompt", f"question {j}", f"passage {j}", ["answer"]), rng.random())
                    for j in share[i : i + args.batch]
                )
                store.flush()
            store.close()
        write_s = time.perf_counter() - start
        size = sum(p.stat().st_size for p in Path(folder).iterdir())
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        reopened = RewardCache(folder, writer=None)
        start = time.perf_counter()
        hits = 0
        for _ in range(args.lookups):
            # one training step's keys: half scored before, half new
            ids = [
                rng.randrange(args.entries) if i % 2 else args.entries + rng.randrange(10**9)
                for i in range(args.batch)
            ]
            keys = [reward_key("llm", "prompt", f"question {j}", f"passage {j}", ["answer"]) for j in ids]
            found = reopened.get_many(keys)
            hits += sum(k in found for k in keys)
        lookup_s = (time.perf_counter() - start) / args.lookups
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert hits == args.lookups * (args.batch // 2), hits
        assert len(reopened) == args.entries, len(reopened)
    per_million = 1e6 / args.entries
    report = {
        "entries": args.entries,
        "writers": args.writers,
        "batch": args.batch,
        "disk_bytes": size,
        "disk_mb_per_million": size * per_million / 1e6,
        "bytes_per_entry": size / args.entries,
        "write_s_per_million": write_s * per_million,
        "lookup_s_per_step": lookup_s,  # `--batch` keys, hashing included, every segment searched
        "peak_memory_growth_mb_while_looking_up": (rss_after - rss_before) * 1024 / 1e6,  # ru_maxrss is in KiB
    }
    print(json.dumps(report, indent=1))
    if args.out:
        write_result(args.out, report)


if __name__ == "__main__":
    main()
