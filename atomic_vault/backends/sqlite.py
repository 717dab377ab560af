"""SQLite backends (standard library): an indexed run log, and a full-text index over notes.

The log store replaces log/*.jsonl on purpose: rows hold each record's JSON exactly as it
was hashed, plus indexed columns for the queries. The memory backend keeps the Markdown
files as the truth and derives an FTS5 index in ``.atomic_vault/search.sqlite3`` (safe to
delete). ``scan`` (every run) re-indexes notes whose stat signature changed; ``search``
first compares memory/'s mtime and entry count with the last sync, so creates, deletes
and rename-over saves are seen at once; an in-place edit that leaves the folder untouched
is picked up at the next run or ``reindex``.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from .. import runlog
from ..errors import BackendError, LockLost, LogError, NoteError
from ..notes import parse_note_text
from ..protocols import UNCHECKED, CostRow, LogQuery, Progress, SearchHit
from ..vault import AgentFolder
from .. import catalog
from . import rows
from .files import FileMemory, check_match, folder_mark, snippet, words

BATCH = 5000


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=60000")
    conn.execute("PRAGMA mmap_size=268435456")  # reads straight from the page cache
    conn.execute("PRAGMA cache_size=-32768")  # 32 MB per connection instead of 2 MB
    return conn


def _migrate(conn: sqlite3.Connection, steps: list[str], where: Path) -> None:
    """Apply the numbered schema steps this database lacks (PRAGMA user_version)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(steps):
        raise BackendError(f"the database is at schema version {version}, newer than this "
                           f"atomic-vault knows ({len(steps)})", path=where,
                           fix="upgrade atomic-vault")
    if version == len(steps):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number in range(version, len(steps)):
            for statement in steps[number].split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number + 1}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class _Connections:
    """One connection per (process, thread, database file), opened on first use."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, path: Path, steps: list[str]) -> sqlite3.Connection:
        cache = getattr(self._local, "cache", None)
        if cache is None or self._local.pid != os.getpid():
            cache = self._local.cache = {}
            self._local.pid = os.getpid()
        conn = cache.get(path)
        if conn is None:
            try:
                conn = _connect(path)
                _migrate(conn, steps, path)
            except sqlite3.DatabaseError as exc:
                raise BackendError(f"cannot open the SQLite database ({exc})", path=path,
                                   fix="check the path and its permissions; a damaged log database "
                                       "is restored from a backup or re-imported with `atomic-vault migrate`") from None
            cache[path] = conn
        return conn

    def drop(self, path: Path) -> None:
        conn = getattr(self._local, "cache", {}).pop(path, None)
        if conn is not None:
            conn.close()


# One trigger statement each (kept on one line: schema steps are split at ";\n").
_ADD = ("INSERT INTO day_costs VALUES ({row}.agent, {row}.day, 1, coalesce({row}.input_tokens, 0), "
        "coalesce({row}.output_tokens, 0), coalesce({row}.cost_usd, 0), {row}.cost_usd IS NULL) "
        "ON CONFLICT (agent, day) DO UPDATE SET runs = runs + 1, "
        "input_tokens = input_tokens + excluded.input_tokens, "
        "output_tokens = output_tokens + excluded.output_tokens, "
        "cost_usd = cost_usd + excluded.cost_usd, unknown_cost = unknown_cost + excluded.unknown_cost;")
_REMOVE = ("UPDATE day_costs SET runs = runs - 1, input_tokens = input_tokens - coalesce({row}.input_tokens, 0), "
           "output_tokens = output_tokens - coalesce({row}.output_tokens, 0), "
           "cost_usd = cost_usd - coalesce({row}.cost_usd, 0), "
           "unknown_cost = unknown_cost - ({row}.cost_usd IS NULL) "
           "WHERE agent = {row}.agent AND day = {row}.day;")

LOG_SCHEMA = ["""
CREATE TABLE records (
    id INTEGER PRIMARY KEY, agent TEXT NOT NULL, seq INTEGER, prev TEXT, hash TEXT,
    kind TEXT, ts TEXT, day TEXT, month TEXT, status TEXT, trigger TEXT, run_id TEXT,
    cost_usd REAL, input_tokens INTEGER, output_tokens INTEGER, json TEXT NOT NULL,
    UNIQUE (agent, seq));
CREATE INDEX records_ts ON records (agent, ts);
CREATE INDEX records_status ON records (agent, status);
CREATE INDEX records_trigger ON records (agent, trigger);
CREATE INDEX records_run ON records (agent, run_id);
CREATE INDEX records_day ON records (agent, kind, day);
CREATE TABLE heads (agent TEXT PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT,
    fence_name TEXT, fence_token INTEGER)
""", """
CREATE INDEX records_day_cost ON records (agent, kind, day, cost_usd, input_tokens, output_tokens);
CREATE INDEX records_month_cost ON records (agent, kind, month, cost_usd, input_tokens, output_tokens);
DROP INDEX records_day
""", """
CREATE TABLE day_costs (agent TEXT NOT NULL, day TEXT NOT NULL, runs INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
    unknown_cost INTEGER NOT NULL, PRIMARY KEY (agent, day)) WITHOUT ROWID;
INSERT INTO day_costs SELECT agent, day, count(*), coalesce(sum(input_tokens), 0),
    coalesce(sum(output_tokens), 0), total(cost_usd), sum(cost_usd IS NULL)
    FROM records WHERE kind='run' GROUP BY agent, day;
CREATE TRIGGER day_costs_add AFTER INSERT ON records WHEN NEW.kind='run' BEGIN """ + _ADD.format(row="NEW") + """ END;
CREATE TRIGGER day_costs_remove AFTER DELETE ON records WHEN OLD.kind='run' BEGIN """ + _REMOVE.format(row="OLD") + """ END;
CREATE TRIGGER day_costs_change_old AFTER UPDATE ON records WHEN OLD.kind='run' BEGIN """ + _REMOVE.format(row="OLD") + """ END;
CREATE TRIGGER day_costs_change_new AFTER UPDATE ON records WHEN NEW.kind='run' BEGIN """ + _ADD.format(row="NEW") + """ END
""", """
CREATE TABLE snapshots (agent TEXT NOT NULL, sha TEXT NOT NULL, text TEXT NOT NULL,
    PRIMARY KEY (agent, sha)) WITHOUT ROWID
""", """
DROP TRIGGER day_costs_add;
DROP TRIGGER day_costs_remove;
DROP TRIGGER day_costs_change_old;
DROP TRIGGER day_costs_change_new;
DELETE FROM day_costs;
INSERT INTO day_costs SELECT agent, day, count(*), coalesce(sum(input_tokens), 0),
    coalesce(sum(output_tokens), 0), total(cost_usd), sum(cost_usd IS NULL)
    FROM records WHERE kind IN ('run', 'replay') GROUP BY agent, day;
CREATE TRIGGER day_costs_add AFTER INSERT ON records WHEN NEW.kind IN ('run', 'replay') BEGIN """ + _ADD.format(row="NEW") + """ END;
CREATE TRIGGER day_costs_remove AFTER DELETE ON records WHEN OLD.kind IN ('run', 'replay') BEGIN """ + _REMOVE.format(row="OLD") + """ END;
CREATE TRIGGER day_costs_change_old AFTER UPDATE ON records WHEN OLD.kind IN ('run', 'replay') BEGIN """ + _REMOVE.format(row="OLD") + """ END;
CREATE TRIGGER day_costs_change_new AFTER UPDATE ON records WHEN NEW.kind IN ('run', 'replay') BEGIN """ + _ADD.format(row="NEW") + """ END
"""]
# 2: covering indexes, so cost rollups never read the records themselves.
# 3: spend per agent and day, kept by triggers in the same transaction as each record, so
#    a guardrail check reads about 31 rows whatever the size of the log (spec/12).
# 4: snapshots, the texts of each run by SHA-256 (spec/07).
# 5: replays call the model too: their spend counts as runs' does (spec/12).


_INSERT = f"INSERT INTO records ({', '.join(rows.COLUMNS)}, json) VALUES ({', '.join('?' * 15)})"


class SQLiteLog:
    """The run log in SQLite: ``<agent>/log/log.sqlite3``, or one database for every agent
    when a URL (``sqlite:///abs.db``, ``sqlite:rel.db`` or a path) is given."""

    name = "sqlite"

    def __init__(self, url: str | None = None, root: Path | None = None):
        self.url = url
        self.root = Path(root) if root is not None else Path.cwd()
        self._conns = _Connections()

    def path(self, folder: AgentFolder) -> Path:
        if not self.url:
            return folder.log / "log.sqlite3"
        raw = self.url
        for prefix in ("sqlite:///", "sqlite://", "sqlite:"):
            if raw.startswith(prefix):
                raw = ("/" if prefix == "sqlite:///" else "") + raw[len(prefix):]
                break
        path = Path(raw).expanduser()
        return path if path.is_absolute() else self.root / path

    def _db(self, folder: AgentFolder) -> sqlite3.Connection:
        return self._conns.get(self.path(folder), LOG_SCHEMA)

    @contextmanager
    def _read(self, folder: AgentFolder) -> Iterator[sqlite3.Connection]:
        try:
            yield self._db(folder)
        except sqlite3.DatabaseError as exc:
            raise LogError(f"the log database cannot be read ({exc})", path=self.path(folder),
                           fix="restore it from a backup, or re-import the log with `atomic-vault migrate`") from None

    def ready(self, folder: AgentFolder) -> None:
        with self._read(folder) as db:
            head = db.execute("SELECT seq FROM heads WHERE agent=?", (folder.name,)).fetchone()
            last = db.execute("SELECT max(seq) FROM records WHERE agent=?", (folder.name,)).fetchone()[0] or 0
        if head is not None and head[0] > last:
            raise LogError(f"HEAD says the log reaches seq {head[0]} but it ends at {last}: records are missing",
                           path=self.path(folder), fix="run `atomic-vault verify AGENT`; restore from a backup")

    def append(self, folder: AgentFolder, record: dict[str, Any],
               fence: tuple[str, int] | None = None) -> dict[str, Any]:
        if record.get("agent") != folder.name:
            raise LogError(f"the record names agent {record.get('agent')!r}, not {folder.name!r}",
                           field="agent", fix="append an agent's records to its own log")
        with self._read(folder) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                head = db.execute("SELECT seq, hash, fence_name, fence_token FROM heads WHERE agent=?",
                                  (folder.name,)).fetchone()
                seq, prev, fence_name, fence_token = head if head else (0, None, None, None)
                last = db.execute("SELECT max(seq) FROM records WHERE agent=?", (folder.name,)).fetchone()[0] or 0
                if last != seq:
                    raise LogError(f"HEAD (seq {seq}) and the last record (seq {last}) disagree; nothing was appended",
                                   path=self.path(folder), fix="run `atomic-vault verify AGENT`")
                refusal = rows.fence_refusal(fence, fence_name, fence_token)
                if refusal:
                    raise LockLost(refusal, path=self.path(folder),
                                   fix="raise the lock lease, or look for a hung run")
                if fence is not None:
                    fence_name, fence_token = fence
                chained = {**record, "seq": seq + 1, "prev": prev}
                chained["hash"] = runlog.record_hash(chained)
                db.execute(_INSERT, rows.columns(folder.name, chained))
                db.execute("INSERT INTO heads (agent, seq, hash, fence_name, fence_token) VALUES (?,?,?,?,?) "
                           "ON CONFLICT(agent) DO UPDATE SET seq=excluded.seq, hash=excluded.hash, "
                           "fence_name=excluded.fence_name, fence_token=excluded.fence_token",
                           (folder.name, chained["seq"], chained["hash"], fence_name, fence_token))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return chained

    def get(self, folder: AgentFolder, run_id: str) -> dict[str, Any] | None:
        with self._read(folder) as db:
            row = db.execute("SELECT json FROM records WHERE agent=? AND run_id=? ORDER BY id DESC LIMIT 1",
                             (folder.name, run_id)).fetchone()
        return rows.loads(row[0], str(self.path(folder))) if row else None

    def query(self, folder: AgentFolder, query: LogQuery = LogQuery()) -> list[dict[str, Any]]:
        where, args = rows.query_filter(folder.name, query, "?")
        sql = f"SELECT json FROM records WHERE {where} ORDER BY id DESC"
        if query.limit is not None:
            sql += f" LIMIT {max(int(query.limit), 0)}"
        with self._read(folder) as db:
            found = db.execute(sql, args).fetchall()
        return [rows.loads(row[0], str(self.path(folder))) for row in reversed(found)]

    def cost(self, folder: AgentFolder, by: str = "day", *, since: str | None = None,
             until: str | None = None) -> list[CostRow]:
        group, where, args = rows.cost_filter(folder.name, by, since, until, "?")
        sql = (f"SELECT {group}, sum(runs), sum(input_tokens), sum(output_tokens), total(cost_usd), "
               f"sum(unknown_cost) FROM day_costs WHERE {where} GROUP BY {group} "
               f"HAVING sum(runs) > 0 ORDER BY {group}")
        with self._read(folder) as db:
            found = db.execute(sql, args).fetchall()
        return [CostRow(p, n, i or 0, o or 0, round(c, 10), u or 0) for p, n, i, o, c, u in found]

    def records(self, folder: AgentFolder) -> Iterator[dict[str, Any]]:
        for _, _, record, _ in self._entries(folder):
            yield record

    def _entries(self, folder: AgentFolder, check: bool = False) -> Iterator[tuple[str, int, Any, Any]]:
        """(where, row id, record, problem) in chain order; with ``check``, a row whose
        indexed columns disagree with its JSON carries the reason as its problem."""
        where = str(self.path(folder))
        last = 0
        while True:
            with self._read(folder) as db:
                chunk = db.execute(f"SELECT id, json, {', '.join(rows.COLUMNS)} FROM records "
                                   "WHERE agent=? AND id>? ORDER BY id LIMIT ?",
                                   (folder.name, last, BATCH)).fetchall()
            if not chunk:
                return
            for row_id, text, *stored in chunk:
                yield (f"{where}#{row_id}", row_id, *rows.parsed(folder.name, text, stored if check else None))
            last = chunk[-1][0]

    def generation(self, folder: AgentFolder) -> int:
        """Moves on every commit of this agent's log: the seq its HEAD names (one small read)."""
        return int((self.head(folder) or {}).get("seq", 0))

    def head(self, folder: AgentFolder) -> dict[str, Any] | None:
        with self._read(folder) as db:
            row = db.execute("SELECT seq, hash, fence_name, fence_token FROM heads WHERE agent=?",
                             (folder.name,)).fetchone()
        if row is None:
            return None
        head: dict[str, Any] = {"seq": row[0], "hash": row[1]}
        if row[2] is not None:
            head["fence"] = [row[2], row[3]]
        return head

    def verify(self, folder: AgentFolder, anchor: str | None = None) -> runlog.Verification:
        head = self.head(folder)
        result = runlog.check_chain(folder.name, self._entries(folder, check=True), head,
                                    f"{self.path(folder)}#heads", anchor=anchor)
        if result.ok:
            problem = self._spend_problem(folder)
            if problem:
                result.fail(f"{self.path(folder)}#day_costs", 1, None, problem)
        return result

    def records_from(self, folder: AgentFolder, seq: int) -> list[dict[str, Any]]:
        """The records from ``seq`` to the end, in chain order (by the (agent, seq) index)."""
        with self._read(folder) as db:
            found = db.execute("SELECT json FROM records WHERE agent=? AND seq>=? ORDER BY seq",
                               (folder.name, seq)).fetchall()
        return [rows.loads(row[0], str(self.path(folder))) for row in found]

    def chain_text(self, folder: AgentFolder, record: dict[str, Any]) -> str | None:
        """The stored JSON of the records from ``record`` to the end, one per line, as
        stored (canonical): no record is parsed again. None when the rows do not start with
        ``record`` or skip a seq (the caller then reads records)."""
        with self._read(folder) as db:
            found = db.execute("SELECT seq, json FROM records WHERE agent=? AND seq>=? ORDER BY seq",
                               (folder.name, record.get("seq"))).fetchall()
        return rows.chain_text(found, record, str(self.path(folder)))

    def put_snapshots(self, folder: AgentFolder, texts: dict[str, str]) -> None:
        if not texts:
            return
        with self._read(folder) as db:
            with _tx(db):
                db.executemany("INSERT OR IGNORE INTO snapshots (agent, sha, text) VALUES (?,?,?)",
                               [(folder.name, sha, text) for sha, text in texts.items()])

    def get_snapshot(self, folder: AgentFolder, sha: str) -> str | None:
        with self._read(folder) as db:
            row = db.execute("SELECT text FROM snapshots WHERE agent=? AND sha=?", (folder.name, sha)).fetchone()
        return row[0] if row else None

    def snapshot_hashes(self, folder: AgentFolder) -> list[str]:
        with self._read(folder) as db:
            return [row[0] for row in db.execute("SELECT sha FROM snapshots WHERE agent=? ORDER BY sha",
                                                 (folder.name,))]

    def delete_snapshots(self, folder: AgentFolder, hashes: Iterable[str]) -> int:
        hashes = list(hashes)
        with self._read(folder) as db:
            with _tx(db):
                before = db.total_changes
                db.executemany("DELETE FROM snapshots WHERE agent=? AND sha=?",
                               [(folder.name, sha) for sha in hashes])
                return db.total_changes - before

    def _spend_problem(self, folder: AgentFolder) -> str | None:
        """The spend table against the sums of the (already checked) columns, both read
        in one transaction so that a run appending meanwhile changes neither alone."""
        with self._read(folder) as db:
            db.execute("BEGIN")
            try:
                stored = db.execute("SELECT day, runs, input_tokens, output_tokens, cost_usd, unknown_cost "
                                    "FROM day_costs WHERE agent=?", (folder.name,)).fetchall()
                derived = db.execute("SELECT day, count(*), coalesce(sum(input_tokens), 0), "
                                     "coalesce(sum(output_tokens), 0), total(cost_usd), sum(cost_usd IS NULL) "
                                     "FROM records WHERE agent=? AND kind IN ('run', 'replay') GROUP BY day",
                                     (folder.name,)).fetchall()
            finally:
                db.execute("COMMIT")
        return rows.spend_problem(stored, derived)

    def import_records(self, folder: AgentFolder, records: Iterable[dict[str, Any]],
                       progress: Progress | None = None) -> int:
        count = 0
        batch: list[dict[str, Any]] = []
        for record in records:
            batch.append(record)
            if len(batch) >= BATCH:
                count += self._import_batch(folder, batch, progress)
                batch = []
        if batch:
            count += self._import_batch(folder, batch, progress)
        return count

    def _import_batch(self, folder: AgentFolder, batch: list[dict[str, Any]],
                      progress: Progress | None) -> int:
        with self._read(folder) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                head = db.execute("SELECT seq, hash FROM heads WHERE agent=?", (folder.name,)).fetchone()
                seq, prev = head if head else (0, None)
                values = []
                for record in batch:
                    if "seq" not in record and "hash" not in record:
                        if seq or head is not None:
                            raise LogError("an unchained (legacy) record after the chain began",
                                           field="seq", fix="the source log must verify")
                        if record.get("agent") != folder.name:
                            raise LogError(f"a legacy record belongs to agent {record.get('agent')!r}",
                                           field="agent", fix="migrate each agent into its own agent")
                    else:
                        seq, prev = runlog.continues(record, seq, prev, folder.name)
                    values.append(rows.columns(folder.name, record))
                db.executemany(_INSERT, values)
                if seq:
                    db.execute("INSERT INTO heads (agent, seq, hash) VALUES (?,?,?) ON CONFLICT(agent) "
                               "DO UPDATE SET seq=excluded.seq, hash=excluded.hash", (folder.name, seq, prev))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if progress:
            progress(len(batch))
        return len(batch)


SEARCH_SCHEMA = ["""
CREATE TABLE docs (id INTEGER PRIMARY KEY, file TEXT UNIQUE NOT NULL, signature TEXT, name TEXT, type TEXT);
CREATE VIRTUAL TABLE fts USING fts5(file UNINDEXED, name, description, body, tokenize='porter unicode61 remove_diacritics 2');
CREATE TABLE sync (key TEXT PRIMARY KEY, value TEXT)
"""]


class SQLiteMemory(FileMemory):
    """Notes stay Markdown files; search goes through a derived FTS5 index (words, with
Porter stemming; CJK characters indexed one by one)."""

    name = "sqlite"

    def __init__(self, url: str | None = None, root: Path | None = None):
        super().__init__(url, root)
        self._conns = _Connections()
        self._synced: dict[Path, Any] = {}

    def path(self, folder: AgentFolder) -> Path:
        return folder.state / "search.sqlite3"

    def _db(self, folder: AgentFolder) -> sqlite3.Connection:
        folder.ensure_state_dir()
        try:
            return self._conns.get(self.path(folder), SEARCH_SCHEMA)
        except (BackendError, sqlite3.DatabaseError):
            return self._rebuild_file(folder)

    def _rebuild_file(self, folder: AgentFolder) -> sqlite3.Connection:
        """The index is derived: a damaged database file is replaced by a fresh one."""
        self._conns.drop(self.path(folder))
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path(folder)) + suffix).unlink(missing_ok=True)
        conn = self._conns.get(self.path(folder), SEARCH_SCHEMA)
        self._sync(folder, conn)
        return conn

    # -- writes keep the index current
    def put(self, folder: AgentFolder, file: str, text: str, *,
            expected: str | None = UNCHECKED) -> None:
        super().put(folder, file, text, expected=expected)  # a refused swap indexes nothing
        self._index_one(folder, file, text)

    def delete(self, folder: AgentFolder, file: str) -> bool:
        removed = super().delete(folder, file)
        db = self._db(folder)
        with _tx(db):
            _unstore(db, file)
        return removed

    def scan(self, folder: AgentFolder):
        found = super().scan(folder)
        if self._synced.get(folder.memory) is not found[0]:  # the catalog changed since
            self._sync(folder, self._db(folder))
            self._synced[folder.memory] = found[0]
        return found

    def _index_one(self, folder: AgentFolder, file: str, text: str | None) -> None:
        db = self._db(folder)
        with _tx(db):
            _store(db, folder, file, text)

    def _sync(self, folder: AgentFolder, db: sqlite3.Connection,
              progress: Progress | None = None) -> None:
        """Bring the index in line with the files: compare the catalog's stat signatures
        with the stored ones and re-read what differs."""
        current = catalog.signatures(folder)
        notes, _ = catalog.scan(folder, persist=False)
        stored = dict(db.execute("SELECT file, signature FROM docs").fetchall())
        stale = [f for f, sig in current.items() if sig is None or stored.get(f) != sig]
        gone = [f for f in stored if f not in current]
        with _tx(db):
            for file in gone:
                _unstore(db, file)
            for n, file in enumerate(stale, start=1):
                _store(db, folder, file, None, current[file], notes.get(file))
                if progress and n % 1000 == 0:
                    progress(1000)
            db.execute("INSERT OR REPLACE INTO sync VALUES ('folder', ?)", (folder_mark(folder),))
        if progress:
            progress(len(stale) % 1000)

    def search(self, folder: AgentFolder, query: str, *, limit: int = 10,
               match: str = "all") -> list[SearchHit]:
        check_match(match)
        terms = words(query)
        if not terms or limit <= 0:
            return []
        db = self._db(folder)
        try:
            mark = db.execute("SELECT value FROM sync WHERE key='folder'").fetchone()
        except sqlite3.DatabaseError:
            db = self._rebuild_file(folder)
            mark = db.execute("SELECT value FROM sync WHERE key='folder'").fetchone()
        if mark is None or mark[0] != folder_mark(folder):
            catalog.scan(folder)
            self._sync(folder, db)
        quoted = ['"' + _spaced(t).strip().replace('"', '""') + '"' for t in dict.fromkeys(terms)]
        ranked = _ranked if match == "all" else _ranked_any
        expression = (" AND " if match == "all" else " OR ").join(quoted)
        try:
            found = ranked(db, expression, limit)
        except sqlite3.DatabaseError:
            db = self._rebuild_file(folder)
            found = ranked(db, expression, limit)
        types = dict(db.execute(f"SELECT id, type FROM docs WHERE id IN ({','.join('?' * len(found))})",
                                [row[0] for row in found]).fetchall()) if found else {}
        return [SearchHit(file, name, types.get(row_id, ""), round(-score, 6),
                          self._snippet(folder, file, terms)) for row_id, file, name, score in found]

    def _snippet(self, folder: AgentFolder, file: str, terms: list[str]) -> str:
        try:
            text = super().get(folder, file) or ""
        except NoteError:
            return ""
        return snippet(text.split("\n---", 1)[-1] if text.startswith("---") else text, terms)

    def reindex(self, folder: AgentFolder, progress: Progress | None = None) -> int:
        catalog.forget(folder)
        notes, _ = super().scan(folder)
        self._conns.drop(self.path(folder))
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path(folder)) + suffix).unlink(missing_ok=True)
        folder.ensure_state_dir()
        self._sync(folder, self._conns.get(self.path(folder), SEARCH_SCHEMA), progress)
        self._synced[folder.memory] = notes
        return len(notes)

    def check(self, folder: AgentFolder) -> list[str]:
        """Where the derived index and the files differ (doctor)."""
        try:
            db = self._conns.get(self.path(folder), SEARCH_SCHEMA)
            stored = dict(db.execute("SELECT file, signature FROM docs").fetchall())
        except (BackendError, sqlite3.DatabaseError) as exc:
            return [f"the search index is damaged ({exc})"]
        super().scan(folder)
        current = catalog.signatures(folder)
        problems = []
        missing = [f for f in current if f not in stored]
        stale = [f for f in current if f in stored and stored[f] != current[f]]
        gone = [f for f in stored if f not in current]
        if missing:
            problems.append(f"the search index misses {len(missing)} note(s) (e.g. {missing[0]})")
        if stale:
            problems.append(f"the search index is out of date for {len(stale)} note(s) (e.g. {stale[0]})")
        if gone:
            problems.append(f"the search index lists {len(gone)} note(s) that no longer exist (e.g. {gone[0]})")
        return problems


def _ranked(db: sqlite3.Connection, match: str, limit: int) -> list[tuple]:
    """The best ``limit`` matches. Notes matching in their name or description come first
    (bm25 within each tier): ranking every body match of a common word costs a few
    microseconds per match, so the body tier is ranked only when the first is short."""
    sql = ("SELECT rowid, file, name, bm25(fts, 0.0, 10.0, 4.0, 1.0) AS score FROM fts "
           "WHERE fts MATCH ? ORDER BY score LIMIT ?")
    found: list[tuple] = []
    seen: set[int] = set()
    for tier in (f"{{name description}} : ({match})", match):
        for row in db.execute(sql, (tier, limit + len(found))).fetchall():
            if row[0] not in seen and len(found) < limit:
                seen.add(row[0])
                found.append(row)
        if len(found) >= limit:
            break
    return found


def _ranked_any(db: sqlite3.Connection, match: str, limit: int) -> list[tuple]:
    """The best ``limit`` notes holding any of the words, by bm25 over name, description
    and body together (no tiers: a word in the body of the right note must outrank a
    common word in the description of another)."""
    return db.execute("SELECT rowid, file, name, bm25(fts, 0.0, 10.0, 4.0, 1.0) AS score FROM fts "
                      "WHERE fts MATCH ? ORDER BY score LIMIT ?", (match, limit)).fetchall()


@contextmanager
def _tx(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _signature(folder: AgentFolder, file: str) -> str | None:
    try:
        st = os.stat(folder.memory / file, follow_symlinks=False)
    except OSError:
        return None
    return catalog.signature_text((st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino))


def _store(db: sqlite3.Connection, folder: AgentFolder, file: str, text: str | None,
           signature: str | None = None, summary: dict[str, Any] | None = None) -> None:
    """(Re)index one note from ``text`` or, when None, from its file. A None signature
    (a file changed too recently to trust its stat) is stored as such: re-read next time.
    With the catalog's ``summary`` the frontmatter is not parsed a second time."""
    signature = signature if text is None else _signature(folder, file)
    if text is None:
        try:
            raw = (folder.memory / file).read_bytes().decode("utf-8", "replace")
        except OSError:
            raw = None
        text = raw
    _unstore(db, file)
    if text is None:
        return
    if summary is not None and text.startswith("---"):
        closing = text.find("\n---", 3)
        meta, body = summary, (text[text.find("\n", closing + 4) + 1:] if closing > 0 else text)
    else:
        try:
            meta, body = parse_note_text(text, folder.memory / file)
        except NoteError:
            meta, body = {}, text
    name = str(meta.get("name", "")) if isinstance(meta, dict) else ""
    description = str(meta.get("description", "")) if isinstance(meta, dict) else ""
    note_type = str(meta.get("type", file.split("_", 1)[0])) if isinstance(meta, dict) else ""
    row_id = db.execute("INSERT INTO docs (file, signature, name, type) VALUES (?,?,?,?)",
                        (file, signature, name, note_type)).lastrowid
    db.execute("INSERT INTO fts (rowid, file, name, description, body) VALUES (?,?,?,?,?)",
               (row_id, file, _spaced(name), _spaced(description), _spaced(body)))


def _unstore(db: sqlite3.Connection, file: str) -> None:
    """Drop one note from the index (the FTS row shares the docs row's id)."""
    row = db.execute("SELECT id FROM docs WHERE file=?", (file,)).fetchone()
    if row is not None:
        db.execute("DELETE FROM fts WHERE rowid=?", (row[0],))
        db.execute("DELETE FROM docs WHERE id=?", (row[0],))


# Scripts written without spaces between words: each character is indexed as a word of its
# own, and a query word in them becomes a phrase of its characters, so any substring matches.
_UNSPACED = re.compile(r"([\u2e80-\u2fdf\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
                       r"\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f])")


def _spaced(text: str) -> str:
    return _UNSPACED.sub(r" \1 ", text)

