"""A speaker registry in one SQLite file: enrol named speakers, identify unknown audio.

WAL journal mode so concurrent readers (identify) do not block a writer (enrol), and every
write is one transaction, so concurrent enrolments never lose each other's rows.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np

UNKNOWN = "unknown"


def check_name(name: str) -> str:
    """The name to enrol under (surrounding space removed); ValueError for an empty name or
    for "unknown" in any case: identify answers that word when nobody matches, so a speaker
    of that name could not be told from no match."""
    name = (name or "").strip()
    if not name:
        raise ValueError("speaker name must not be empty")
    if name.casefold() == UNKNOWN:
        raise ValueError(f"speaker name {name!r} is reserved: identify answers {UNKNOWN!r} when no "
                         "enrolled speaker matches")
    return name


class SpeakerRegistry:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS enrolment (id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                       " embedding BLOB NOT NULL, dim INTEGER NOT NULL, created REAL NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS by_name ON enrolment(name)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30.0)

    def enroll(self, name: str, embeddings: list[np.ndarray]) -> int:
        """Add embeddings for ``name``; returns how many the speaker now has."""
        check_name(name)
        rows = [(name, _unit(e).astype(np.float32).tobytes(), len(e), time.time()) for e in embeddings]
        if not rows:
            raise ValueError("no audio to enrol")
        with self._connect() as db:
            db.executemany("INSERT INTO enrolment (name, embedding, dim, created) VALUES (?, ?, ?, ?)", rows)
            return db.execute("SELECT COUNT(*) FROM enrolment WHERE name = ?", (name,)).fetchone()[0]

    def speakers(self) -> dict[str, np.ndarray]:
        """Name -> mean of that speaker's unit embeddings (renormalised)."""
        sums: dict[str, np.ndarray] = {}
        with self._connect() as db:
            for name, blob in db.execute("SELECT name, embedding FROM enrolment"):
                v = np.frombuffer(blob, dtype=np.float32)
                sums[name] = sums.get(name, 0) + v
        return {k: _unit(v) for k, v in sums.items()}

    def remove(self, name: str) -> int:
        with self._connect() as db:
            return db.execute("DELETE FROM enrolment WHERE name = ?", (name,)).rowcount

    def identify(self, embedding: np.ndarray, threshold: float, top_k: int = 3) -> dict:
        """Best matches by cosine; the answer is "unknown" below ``threshold``."""
        known = self.speakers()
        if not known:
            return {"speaker": UNKNOWN, "score": None, "candidates": []}
        q = _unit(embedding)
        scored = sorted(((float(v @ q), k) for k, v in known.items()), reverse=True)[:top_k]
        best_score, best = scored[0]
        return {"speaker": best if best_score >= threshold else UNKNOWN, "score": best_score,
                "candidates": [{"speaker": k, "score": s} for s, k in scored]}


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / (np.linalg.norm(v) + 1e-12)
