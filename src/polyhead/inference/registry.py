"""A speaker registry in one SQLite file: enrol named speakers, identify unknown audio.

WAL journal mode so concurrent readers (identify) do not block a writer (enrol), and every
write is one transaction, so concurrent enrolments never lose each other's rows.

Identify does not read the table on every call. Each registry object keeps, per embedding
size, an in-memory float32 matrix with one row per speaker: the mean of that speaker's unit
embeddings, renormalised (what ``speakers()`` returns), and scores a query against all of
them with one matrix-vector product (BLAS sgemv) and a partial sort for the top k (the
matrix is kept in blocks of BLOCK_ROWS rows, so it grows without copying). The matrix
is read from SQLite once; after that each identify asks SQLite only for the rows added since
(rowids above the last one read), so enrolments by any process (the service, ``polyhead
enroll``, another registry object) are seen at once. A delete or update anywhere bumps a
counter (triggers), and the matrix is then read again whole.

Why float32: 1M speakers x 192 is 768 MB and one product over it about 30 ms on one core.
float16 would halve the memory, but numpy has no float16 BLAS (about 30x slower than the
whole float32 product) and torch's float16 product was slower than numpy's float32 here
(37 ms against 29 ms) and depends on the CPU's half-precision support; so float32, and
memory grows with the speakers enrolled (768 bytes each at 192 dimensions, 4 per dimension).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

UNKNOWN = "unknown"
LOAD_ROWS = 50_000  # rows read from SQLite per step (bounded temporary memory while loading)
BLOCK_ROWS = 1 << 16  # speakers per block of the in-memory matrix (48 MB at 192 dimensions)


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


class _Index:
    """The speakers with embeddings of one size: row ``i`` of the matrix is speaker
    ``names[i]``'s mean unit embedding, renormalised; ``norms[i]`` the length of the sum it
    was made from (so the sum, row times norm, can take more embeddings). The matrix is
    stored in blocks of BLOCK_ROWS rows, so it grows without copying what is there (np.zeros:
    a block's rows cost memory once written)."""

    def __init__(self, dim: int):
        self.dim, self.n = dim, 0
        self.names: list[str] = []
        self.row: dict[str, int] = {}
        self.blocks: list[np.ndarray] = []
        self.norms = np.zeros(0, np.float32)

    def _rows(self, names: list[str]) -> np.ndarray:
        rows = np.empty(len(names), np.int64)
        for k, name in enumerate(names):
            i = self.row.get(name)
            if i is None:
                i = self.row[name] = len(self.names)
                self.names.append(name)
            rows[k] = i
        while len(self.blocks) * BLOCK_ROWS < len(self.names):
            self.blocks.append(np.zeros((BLOCK_ROWS, self.dim), np.float32))
        if len(self.norms) < len(self.names):
            norms = np.zeros(max(len(self.names), len(self.norms) * 3 // 2), np.float32)
            norms[:len(self.norms)] = self.norms
            self.norms = norms
        return rows

    def _by_block(self, rows: np.ndarray):
        """(block, positions in ``rows``, rows within the block) for sorted ``rows``."""
        bounds = np.searchsorted(rows, np.arange(len(self.blocks) + 1) * BLOCK_ROWS)
        for k, block in enumerate(self.blocks):
            if bounds[k] < bounds[k + 1]:
                yield block, slice(bounds[k], bounds[k + 1]), rows[bounds[k]:bounds[k + 1]] - k * BLOCK_ROWS

    def add(self, names: list[str], vectors: np.ndarray) -> None:
        """Unit embeddings ``vectors`` [k, dim] of ``names`` (k of them, repeats allowed)."""
        before = len(self.names)
        rows = self._rows(names)
        unique, first, counts = np.unique(rows, return_index=True, return_counts=True)
        # a new speaker with one embedding (every row of a bulk load, mostly): that unit vector
        simple = (unique >= before) & (counts == 1)
        if simple.any():
            new, v = unique[simple], vectors[first[simple]]
            for block, at, local in self._by_block(new):
                block[local] = v[at]
            self.norms[new] = np.sqrt(np.einsum("ij,ij->i", v, v))
        if not simple.all():
            rest = np.isin(rows, unique[~simple])
            self._accumulate(rows[rest], vectors[rest])
        self.n = len(self.names)

    def _accumulate(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Speakers' rows updated with more unit embeddings: row = unit(row * norm + their sum)."""
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        ends = np.flatnonzero(np.r_[rows[1:] != rows[:-1], True]) + 1
        touched = rows[ends - 1]
        # each touched speaker's new embeddings summed: differences of a running sum
        running = np.cumsum(vectors[order].astype(np.float64), axis=0)
        sums = running[ends - 1]
        sums[1:] -= running[ends[:-1] - 1]
        for block, at, local in self._by_block(touched):
            sums[at] += block[local] * self.norms[touched[at], None]  # the sum so far (new speakers: 0)
        norms = np.linalg.norm(sums, axis=1)
        units = (sums / (norms[:, None] + 1e-12)).astype(np.float32)
        for block, at, local in self._by_block(touched):
            block[local] = units[at]
        self.norms[touched] = norms

    def mean(self, name: str) -> np.ndarray | None:
        i = self.row.get(name)
        return None if i is None else self.blocks[i // BLOCK_ROWS][i % BLOCK_ROWS].astype(np.float64)

    def top(self, q: np.ndarray, k: int) -> list[tuple[float, str]]:
        blocks, n, names = list(self.blocks), self.n, self.names  # a snapshot: enrolments may go on
        if n == 0:
            return []
        q = q.astype(np.float32)
        scores = np.empty(n, np.float32)
        for b, block in enumerate(blocks):
            a = b * BLOCK_ROWS
            if a >= n:
                break
            np.matmul(block[:min(n - a, BLOCK_ROWS)], q, out=scores[a:a + BLOCK_ROWS])
        k = min(k, n)
        best = np.argpartition(scores, n - k)[n - k:] if k < n else np.arange(n)  # the k highest, unordered
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(float(scores[i]), names[i]) for i in best]


class SpeakerRegistry:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS enrolment (id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                       " embedding BLOB NOT NULL, dim INTEGER NOT NULL, created REAL NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS by_name ON enrolment(name)")
            # rows only ever added are read incrementally (by rowid); any other change is counted
            # here and makes every registry object read the table again
            db.execute("CREATE TABLE IF NOT EXISTS changes (n INTEGER NOT NULL)")
            db.execute("INSERT INTO changes (n) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM changes)")
            for event in ("DELETE", "UPDATE"):
                db.execute(f"CREATE TRIGGER IF NOT EXISTS count_{event.lower()} AFTER {event} ON enrolment "
                           "BEGIN UPDATE changes SET n = n + 1; END")
        self._lock = threading.Lock()
        self._indexes: dict[int, _Index] = {}
        self._changes: int | None = None  # the counter when the matrices were read whole; None: never
        self._last_id = 0

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

    def _refresh(self) -> None:
        """Bring the matrices up to date with the file (under ``self._lock``): the rows added
        since the last read, or everything again after a delete or update."""
        db = self._connect()
        try:
            db.execute("BEGIN")  # one snapshot: the counter and the rows agree
            changes = db.execute("SELECT n FROM changes").fetchone()[0]
            if changes != self._changes:
                self._indexes = {}
                self._changes, self._last_id = changes, 0
            cursor = db.execute("SELECT id, name, dim, embedding FROM enrolment WHERE id > ? ORDER BY id",
                                (self._last_id,))
            while batch := cursor.fetchmany(LOAD_ROWS):
                self._last_id = batch[-1][0]
                for dim in {row[2] for row in batch}:
                    mine = [row for row in batch if row[2] == dim]
                    vectors = np.frombuffer(b"".join(row[3] for row in mine), np.float32).reshape(len(mine), dim)
                    self._indexes.setdefault(dim, _Index(dim)).add([row[1] for row in mine], vectors)
            db.execute("COMMIT")
        finally:
            db.close()

    def load(self) -> int:
        """Read the file into memory now, so the first identify does not wait for it (1M
        enrolments: seconds); the number of speakers. The service calls it at start."""
        with self._lock:
            self._refresh()
            return sum(index.n for index in self._indexes.values())

    def speakers(self) -> dict[str, np.ndarray]:
        """Name -> mean of that speaker's unit embeddings (renormalised)."""
        with self._lock:
            self._refresh()
            return {name: index.mean(name) for index in self._indexes.values() for name in index.names}

    def means(self, names: list[str], dim: int) -> np.ndarray:
        """[len(names), dim]: the speakers' mean unit embeddings of size ``dim`` (as
        ``speakers()`` gives them, without building the whole dict); KeyError for a name not
        enrolled at that size."""
        with self._lock:
            self._refresh()
            index = self._indexes.get(dim)
        found = [index.mean(n) if index is not None else None for n in names]
        missing = [n for n, v in zip(names, found) if v is None]
        if missing:
            raise KeyError(f"not enrolled with {dim}-dimensional embeddings: {', '.join(missing[:5])}")
        return np.stack(found) if found else np.zeros((0, dim))

    def remove(self, name: str) -> int:
        with self._connect() as db:
            return db.execute("DELETE FROM enrolment WHERE name = ?", (name,)).rowcount

    def identify(self, embedding: np.ndarray, threshold: float, top_k: int = 3) -> dict:
        """Best matches by cosine; the answer is "unknown" below ``threshold``. Speakers
        enrolled with embeddings of another size (another model) are not compared."""
        q = _unit(embedding)
        with self._lock:
            self._refresh()
            index = self._indexes.get(len(q))
        scored = index.top(q, top_k) if index is not None else []
        if not scored:
            return {"speaker": UNKNOWN, "score": None, "candidates": []}
        best_score, best = scored[0]
        return {"speaker": best if best_score >= threshold else UNKNOWN, "score": best_score,
                "candidates": [{"speaker": k, "score": s} for s, k in scored]}


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / (np.linalg.norm(v) + 1e-12)
