"""PostgreSQL backends (psycopg 3, extra ``[postgres]``): the run log and the notes in a
database shared by a fleet of agents. Both replace the files on purpose.

The URL is required; ``?schema=NAME`` keeps the tables in their own schema. The schema is
created and upgraded by numbered migrations applied under an advisory lock, so processes
that start at once do not race. An append locks the agent's head row, so concurrent
writers on any host take turns and the chain cannot fork.
"""

from __future__ import annotations

import os
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.types.json import Jsonb

from .. import runlog
from ..errors import BackendError, ConfigError, LockLost, LogError, NoteError
from ..notes import check_note_text, error_from_record, error_record, matching, summarize
from ..protocols import UNCHECKED, Claim, CostRow, LogQuery, Progress, QueueItem, SearchHit, note_changed
from ..vault import AgentFolder
from . import redact, rows
from .files import check_match, note_path, words
from .files_queue import STATES, check_item, new_key

MIGRATIONS: list[str] = [
    # 1: the log and the notes
    """
    CREATE TABLE log_records (
        id BIGSERIAL PRIMARY KEY, agent TEXT NOT NULL, seq BIGINT, prev TEXT, hash TEXT,
        kind TEXT, ts TEXT, day TEXT, month TEXT, status TEXT, trigger TEXT, run_id TEXT,
        cost_usd DOUBLE PRECISION, input_tokens BIGINT, output_tokens BIGINT,
        record TEXT NOT NULL, UNIQUE (agent, seq));
    CREATE INDEX log_records_ts ON log_records (agent, ts);
    CREATE INDEX log_records_status ON log_records (agent, status);
    CREATE INDEX log_records_trigger ON log_records (agent, trigger);
    CREATE INDEX log_records_run ON log_records (agent, run_id);
    CREATE INDEX log_records_day ON log_records (agent, kind, day);
    CREATE TABLE log_heads (agent TEXT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT,
        fence_name TEXT, fence_token BIGINT);
    CREATE TABLE notes (
        agent TEXT NOT NULL, file TEXT NOT NULL, text TEXT NOT NULL, summary JSONB,
        error JSONB, type TEXT, pinned BOOLEAN, current BOOLEAN, last_seen TEXT,
        tsv TSVECTOR, PRIMARY KEY (agent, file));
    CREATE INDEX notes_tsv ON notes USING GIN (tsv);
    CREATE TABLE memory_index (agent TEXT PRIMARY KEY, text TEXT NOT NULL)
    """,
    # 2: covering indexes, so cost rollups are index-only scans
    """
    CREATE INDEX log_records_day_cost ON log_records (agent, kind, day)
        INCLUDE (cost_usd, input_tokens, output_tokens);
    CREATE INDEX log_records_month_cost ON log_records (agent, kind, month)
        INCLUDE (cost_usd, input_tokens, output_tokens);
    DROP INDEX log_records_day
    """,
    # 3: spend per agent and day, kept by a trigger in the same transaction as each record,
    #    so a guardrail check reads about 31 rows whatever the size of the log (spec/12)
    """
    CREATE TABLE log_day_costs (agent TEXT NOT NULL, day TEXT NOT NULL, runs BIGINT NOT NULL,
        input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL,
        cost_usd DOUBLE PRECISION NOT NULL, unknown_cost BIGINT NOT NULL, PRIMARY KEY (agent, day));
    INSERT INTO log_day_costs SELECT agent, day, count(*), coalesce(sum(input_tokens), 0),
        coalesce(sum(output_tokens), 0), coalesce(sum(cost_usd), 0), count(*) - count(cost_usd)
        FROM log_records WHERE kind = 'run' GROUP BY agent, day;
    CREATE FUNCTION log_day_costs_apply() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $body$
    BEGIN
        IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.kind = 'run' THEN
            UPDATE log_day_costs SET runs = runs - 1,
                input_tokens = input_tokens - coalesce(OLD.input_tokens, 0),
                output_tokens = output_tokens - coalesce(OLD.output_tokens, 0),
                cost_usd = cost_usd - coalesce(OLD.cost_usd, 0),
                unknown_cost = unknown_cost - (CASE WHEN OLD.cost_usd IS NULL THEN 1 ELSE 0 END)
            WHERE agent = OLD.agent AND day = OLD.day;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.kind = 'run' THEN
            INSERT INTO log_day_costs AS d VALUES (NEW.agent, NEW.day, 1, coalesce(NEW.input_tokens, 0),
                coalesce(NEW.output_tokens, 0), coalesce(NEW.cost_usd, 0),
                CASE WHEN NEW.cost_usd IS NULL THEN 1 ELSE 0 END)
            ON CONFLICT (agent, day) DO UPDATE SET runs = d.runs + 1,
                input_tokens = d.input_tokens + excluded.input_tokens,
                output_tokens = d.output_tokens + excluded.output_tokens,
                cost_usd = d.cost_usd + excluded.cost_usd,
                unknown_cost = d.unknown_cost + excluded.unknown_cost;
        END IF;
        RETURN NULL;
    END
    $body$;
    CREATE TRIGGER log_records_day_costs AFTER INSERT OR UPDATE OR DELETE ON log_records
        FOR EACH ROW EXECUTE FUNCTION log_day_costs_apply()
    """,
    # 4: snapshots, the texts of each run by SHA-256 (spec/07)
    """
    CREATE TABLE log_snapshots (agent TEXT NOT NULL, sha TEXT NOT NULL, text TEXT NOT NULL,
        PRIMARY KEY (agent, sha))
    """,
    # 5: replays call the model too: their spend counts as runs' does (spec/12)
    """
    CREATE OR REPLACE FUNCTION log_day_costs_apply() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $body$
    BEGIN
        IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.kind IN ('run', 'replay') THEN
            UPDATE log_day_costs SET runs = runs - 1,
                input_tokens = input_tokens - coalesce(OLD.input_tokens, 0),
                output_tokens = output_tokens - coalesce(OLD.output_tokens, 0),
                cost_usd = cost_usd - coalesce(OLD.cost_usd, 0),
                unknown_cost = unknown_cost - (CASE WHEN OLD.cost_usd IS NULL THEN 1 ELSE 0 END)
            WHERE agent = OLD.agent AND day = OLD.day;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.kind IN ('run', 'replay') THEN
            INSERT INTO log_day_costs AS d VALUES (NEW.agent, NEW.day, 1, coalesce(NEW.input_tokens, 0),
                coalesce(NEW.output_tokens, 0), coalesce(NEW.cost_usd, 0),
                CASE WHEN NEW.cost_usd IS NULL THEN 1 ELSE 0 END)
            ON CONFLICT (agent, day) DO UPDATE SET runs = d.runs + 1,
                input_tokens = d.input_tokens + excluded.input_tokens,
                output_tokens = d.output_tokens + excluded.output_tokens,
                cost_usd = d.cost_usd + excluded.cost_usd,
                unknown_cost = d.unknown_cost + excluded.unknown_cost;
        END IF;
        RETURN NULL;
    END
    $body$;
    DELETE FROM log_day_costs;
    INSERT INTO log_day_costs SELECT agent, day, count(*), coalesce(sum(input_tokens), 0),
        coalesce(sum(output_tokens), 0), coalesce(sum(cost_usd), 0), count(*) - count(cost_usd)
        FROM log_records WHERE kind IN ('run', 'replay') GROUP BY agent, day
    """,
    # 6: a prompt's notes (pinned, the most recently seen) and the broken ones, read
    #    through indexes: a call's cost does not grow with the number of notes
    """
    CREATE INDEX notes_recent ON notes (agent, current, pinned, last_seen COLLATE "C" DESC NULLS LAST,
        file COLLATE "C" DESC) WHERE summary IS NOT NULL;
    CREATE INDEX notes_broken ON notes (agent, file) WHERE summary IS NULL
    """,
    # 7: the work queue (spec/19); times are Unix seconds of the database's clock, so the
    #    leases of workers on several hosts are measured by one clock
    """
    CREATE TABLE queue_items (
        id BIGSERIAL PRIMARY KEY, agent TEXT NOT NULL, work TEXT NOT NULL, key TEXT NOT NULL,
        priority INTEGER NOT NULL, max_attempts INTEGER NOT NULL, enqueued TEXT NOT NULL,
        state TEXT NOT NULL, due DOUBLE PRECISION NOT NULL, token BIGINT NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0, lease_until DOUBLE PRECISION, worker TEXT,
        error TEXT, result JSONB);
    CREATE INDEX queue_items_ready ON queue_items (priority DESC, id) WHERE state = 'ready';
    CREATE INDEX queue_items_claimed ON queue_items (lease_until) WHERE state = 'claimed';
    CREATE INDEX queue_items_agent ON queue_items (agent, state)
    """,
]
CHANNEL = "atomic_vault"  # NOTIFY atomic_vault, '<agent>:<seq>' after each append
QUEUE_CHANNEL = "atomic_vault_queue"  # NOTIFY atomic_vault_queue, '<agent>:<id>' after each enqueue
_ADVISORY_KEY = 0x61765F7363686D61  # "av_schma": serialises migrations across processes
_TSV = ("setweight(to_tsvector('simple', %(name)s), 'A') || setweight(to_tsvector('simple', "
        "%(description)s), 'B') || setweight(to_tsvector('simple', %(body)s), 'C')")
_NON_LATIN = re.compile(r"[^\x00-\u024f]")


def _split_url(url: str | None, kind: str) -> tuple[str, str | None]:
    """(conninfo without our own options, schema)."""
    if not url:
        raise BackendError(f"the postgres {kind} backend needs a URL", field=kind,
                           fix=f"set ATOMIC_VAULT_{kind.upper()}_URL, or url: in atomic_vault.yaml "
                               "(e.g. postgresql://user@host:5432/db)")
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in params if k == "schema"), None)
    if schema is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
        raise BackendError(f"schema {schema!r} is not a plain identifier", field="url",
                           fix="use letters, digits and _ in ?schema=")
    query = urlencode([(k, v) for k, v in params if k != "schema"])
    return urlunsplit(parts._replace(query=query)), schema


_SHARED = threading.local()  # (conninfo, schema) -> (connection, pid), per thread


class _Database:
    """One connection per process and thread; reconnects after a lost connection. The
    memory and log backends of one database share it, also across AtomicAgent instances:
    connecting and preparing took most of a warm call. A shared connection's schema version
    is checked again (one query) for each new backend."""

    def __init__(self, url: str | None, kind: str):
        self.url = url
        self.kind = kind
        self.conninfo, self.schema = _split_url(url, kind)
        self._local = threading.local()

    def connection(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and (self._local.pid != os.getpid() or conn.closed or conn.broken):
            conn = None
        if conn is None:
            shared = getattr(_SHARED, "conns", None)
            if shared is None:
                shared = _SHARED.conns = {}
            key = (self.conninfo, self.schema)
            reused = shared.get(key)
            if reused is not None and reused[1] == os.getpid() and not (reused[0].closed or reused[0].broken):
                conn = reused[0]
                try:
                    version = conn.execute("SELECT max(version) FROM atomic_vault_schema").fetchone()[0]
                except psycopg.Error:
                    version = None
                if version != len(MIGRATIONS):
                    self._prepare(conn)  # upgrades, or refuses a newer database
            else:
                try:
                    conn = psycopg.connect(self.conninfo, connect_timeout=5, autocommit=True)
                except psycopg.Error as exc:
                    raise self.unreachable(exc) from None
                self._prepare(conn)
                shared[key] = (conn, os.getpid())
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def unreachable(self, exc: Exception) -> BackendError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return BackendError(f"PostgreSQL at {redact(self.url)} cannot be reached ({first})",
                            field=self.kind, fix=f"start PostgreSQL, or check ATOMIC_VAULT_{self.kind.upper()}_URL "
                                                 "/ atomic_vault.yaml")

    def _prepare(self, conn: psycopg.Connection) -> None:
        """Schema and search path, then the migrations this database lacks."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_KEY,))
            if self.schema:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                conn.execute(f'SET search_path TO "{self.schema}"')
            conn.execute("CREATE TABLE IF NOT EXISTS atomic_vault_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM atomic_vault_schema").fetchone()
            version = row[0] or 0
            if version > len(MIGRATIONS):
                raise BackendError(f"the database schema is at version {version}, newer than this "
                                   f"atomic-vault knows ({len(MIGRATIONS)})", field=self.kind,
                                   fix="upgrade atomic-vault")
            for number in range(version, len(MIGRATIONS)):
                conn.execute(MIGRATIONS[number])
                conn.execute("INSERT INTO atomic_vault_schema VALUES (%s)", (number + 1,))

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        conn = self.connection()
        try:
            with conn.transaction():
                yield conn
        except psycopg.OperationalError as exc:
            conn.close()
            raise self.unreachable(exc) from None


class PostgresLog:
    """The run log in PostgreSQL: one row per record (the JSON as hashed), a head per agent."""

    name = "postgres"

    def __init__(self, url: str | None = None, root: Path | None = None):
        self.db = _Database(url, "log")

    def _where(self) -> str:
        return f"postgres:{redact(self.db.url)}"

    def ready(self, folder: AgentFolder) -> None:
        with self.db.transaction() as conn:
            head = conn.execute("SELECT seq FROM log_heads WHERE agent=%s", (folder.name,)).fetchone()
            last = conn.execute("SELECT max(seq) FROM log_records WHERE agent=%s", (folder.name,)).fetchone()[0] or 0
        if head is not None and head[0] > last:
            raise LogError(f"HEAD says the log reaches seq {head[0]} but it ends at {last}: records are missing",
                           path=self._where(), fix="run `atomic-vault verify AGENT`; restore from a backup")

    def append(self, folder: AgentFolder, record: dict[str, Any],
               fence: tuple[str, int] | None = None) -> dict[str, Any]:
        if record.get("agent") != folder.name:
            raise LogError(f"the record names agent {record.get('agent')!r}, not {folder.name!r}",
                           field="agent", fix="append an agent's records to its own log")
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO log_heads (agent, seq) VALUES (%s, 0) ON CONFLICT DO NOTHING",
                         (folder.name,))
            seq, prev, fence_name, fence_token = conn.execute(
                "SELECT seq, hash, fence_name, fence_token FROM log_heads WHERE agent=%s FOR UPDATE",
                (folder.name,)).fetchone()
            refusal = rows.fence_refusal(fence, fence_name, fence_token)
            if refusal:
                raise LockLost(refusal, path=self._where(), fix="raise the lock lease, or look for a hung run")
            if fence is not None:
                fence_name, fence_token = fence
            chained = {**record, "seq": seq + 1, "prev": prev}
            chained["hash"] = runlog.record_hash(chained)
            conn.execute(_INSERT, rows.columns(folder.name, chained))
            conn.execute("UPDATE log_heads SET seq=%s, hash=%s, fence_name=%s, fence_token=%s WHERE agent=%s",
                         (chained["seq"], chained["hash"], fence_name, fence_token, folder.name))
            # Delivered when (and only if) the transaction commits: listeners wake without polling.
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{folder.name}:{chained['seq']}"))
        return chained

    def generation(self, folder: AgentFolder) -> int:
        """Moves on every commit of this agent's log (its head's seq): one indexed row."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT seq FROM log_heads WHERE agent=%s", (folder.name,)).fetchone()
        return int(row[0]) if row else 0

    def get(self, folder: AgentFolder, run_id: str) -> dict[str, Any] | None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT record FROM log_records WHERE agent=%s AND run_id=%s "
                               "ORDER BY id DESC LIMIT 1", (folder.name, run_id)).fetchone()
        return rows.loads(row[0], self._where()) if row else None

    def query(self, folder: AgentFolder, query: LogQuery = LogQuery()) -> list[dict[str, Any]]:
        where, args = rows.query_filter(folder.name, query, "%s")
        sql = f"SELECT record FROM log_records WHERE {where} ORDER BY id DESC"
        if query.limit is not None:
            sql += f" LIMIT {max(int(query.limit), 0)}"
        with self.db.transaction() as conn:
            found = conn.execute(sql, args).fetchall()
        return [rows.loads(row[0], self._where()) for row in reversed(found)]

    def cost(self, folder: AgentFolder, by: str = "day", *, since: str | None = None,
             until: str | None = None) -> list[CostRow]:
        group, where, args = rows.cost_filter(folder.name, by, since, until, "%s")
        sql = (f"SELECT {group}, sum(runs), sum(input_tokens), sum(output_tokens), sum(cost_usd), "
               f"sum(unknown_cost) FROM log_day_costs WHERE {where} GROUP BY {group} "
               f"HAVING sum(runs) > 0 ORDER BY {group}")
        with self.db.transaction() as conn:
            found = conn.execute(sql, args).fetchall()
        return [CostRow(p, int(n), int(i), int(o), round(float(c), 10), int(u)) for p, n, i, o, c, u in found]

    def records(self, folder: AgentFolder) -> Iterator[dict[str, Any]]:
        for _, _, record, _ in self._entries(folder):
            yield record

    def _entries(self, folder: AgentFolder, check: bool = False) -> Iterator[tuple[str, int, Any, Any]]:
        """(where, row id, record, problem) in chain order; with ``check``, a row whose
        indexed columns disagree with its JSON carries the reason as its problem."""
        last = 0
        while True:
            with self.db.transaction() as conn:
                chunk = conn.execute(f"SELECT id, record, {', '.join(rows.COLUMNS)} FROM log_records "
                                     "WHERE agent=%s AND id>%s ORDER BY id LIMIT 5000",
                                     (folder.name, last)).fetchall()
            if not chunk:
                return
            for row_id, text, *stored in chunk:
                yield (f"{self._where()}#{row_id}", row_id,
                       *rows.parsed(folder.name, text, stored if check else None))
            last = chunk[-1][0]

    def head(self, folder: AgentFolder) -> dict[str, Any] | None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT seq, hash, fence_name, fence_token FROM log_heads WHERE agent=%s",
                               (folder.name,)).fetchone()
        if row is None or (row[0] == 0 and row[1] is None and row[2] is None):
            return None
        head: dict[str, Any] = {"seq": row[0], "hash": row[1]}
        if row[2] is not None:
            head["fence"] = [row[2], row[3]]
        return head

    def verify(self, folder: AgentFolder, anchor: str | None = None) -> runlog.Verification:
        head = self.head(folder)
        result = runlog.check_chain(folder.name, self._entries(folder, check=True), head,
                                    f"{self._where()}#log_heads", anchor=anchor)
        if result.ok:
            problem = self._spend_problem(folder)
            if problem:
                result.fail(f"{self._where()}#log_day_costs", 1, None, problem)
        return result

    def records_from(self, folder: AgentFolder, seq: int) -> list[dict[str, Any]]:
        """The records from ``seq`` to the end, in chain order (by the (agent, seq) key)."""
        with self.db.transaction() as conn:
            found = conn.execute("SELECT record FROM log_records WHERE agent=%s AND seq>=%s ORDER BY seq",
                                 (folder.name, seq)).fetchall()
        return [rows.loads(row[0], self._where()) for row in found]

    def chain_text(self, folder: AgentFolder, record: dict[str, Any]) -> str | None:
        """The stored JSON of the records from ``record`` to the end, one per line, as
        stored (canonical); None when the rows do not start with it or skip a seq."""
        with self.db.transaction() as conn:
            found = conn.execute("SELECT seq, record FROM log_records WHERE agent=%s AND seq>=%s ORDER BY seq",
                                 (folder.name, record.get("seq"))).fetchall()
        return rows.chain_text(found, record, self._where())

    def put_snapshots(self, folder: AgentFolder, texts: dict[str, str]) -> None:
        if not texts:
            return
        with self.db.transaction() as conn:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO log_snapshots (agent, sha, text) VALUES (%s, %s, %s) "
                                "ON CONFLICT DO NOTHING", [(folder.name, sha, text) for sha, text in texts.items()])

    def get_snapshot(self, folder: AgentFolder, sha: str) -> str | None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT text FROM log_snapshots WHERE agent=%s AND sha=%s",
                               (folder.name, sha)).fetchone()
        return row[0] if row else None

    def snapshot_hashes(self, folder: AgentFolder) -> list[str]:
        with self.db.transaction() as conn:
            return [row[0] for row in conn.execute(
                "SELECT sha FROM log_snapshots WHERE agent=%s ORDER BY sha", (folder.name,)).fetchall()]

    def delete_snapshots(self, folder: AgentFolder, hashes: Iterable[str]) -> int:
        hashes = list(hashes)
        if not hashes:
            return 0
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM log_snapshots WHERE agent=%s AND sha = ANY(%s)",
                               (folder.name, hashes))
            return cur.rowcount

    def _spend_problem(self, folder: AgentFolder) -> str | None:
        """The spend table against the sums of the (already checked) columns, in one
        statement: one snapshot, so a run appending meanwhile changes neither alone."""
        sql = ("SELECT 's', day, runs, input_tokens, output_tokens, cost_usd, unknown_cost "
               "FROM log_day_costs WHERE agent=%s UNION ALL "
               "SELECT 'r', day, count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
               "coalesce(sum(cost_usd), 0), count(*) - count(cost_usd) FROM log_records "
               "WHERE agent=%s AND kind IN ('run', 'replay') GROUP BY day")
        with self.db.transaction() as conn:
            found = conn.execute(sql, (folder.name, folder.name)).fetchall()
        return rows.spend_problem([r[1:] for r in found if r[0] == "s"], [r[1:] for r in found if r[0] == "r"])

    def import_records(self, folder: AgentFolder, records: Iterable[dict[str, Any]],
                       progress: Progress | None = None) -> int:
        count, batch = 0, []
        for record in records:
            batch.append(record)
            if len(batch) >= 5000:
                count += self._import_batch(folder, batch, progress)
                batch = []
        if batch:
            count += self._import_batch(folder, batch, progress)
        if count:
            self._vacuum()
        return count

    def _vacuum(self) -> None:
        """After a bulk import: statistics and the visibility map, so that queries and
        rollups use index-only scans at once rather than after autovacuum's next pass."""
        conn = self.db.connection()
        try:
            conn.execute("VACUUM (ANALYZE) log_records")
        except psycopg.Error:
            pass  # an optimisation only; the data is committed

    def _import_batch(self, folder: AgentFolder, batch: list[dict[str, Any]],
                      progress: Progress | None) -> int:
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO log_heads (agent, seq) VALUES (%s, 0) ON CONFLICT DO NOTHING",
                         (folder.name,))
            seq, prev = conn.execute("SELECT seq, hash FROM log_heads WHERE agent=%s FOR UPDATE",
                                     (folder.name,)).fetchone()
            values = []
            for record in batch:
                if "seq" not in record and "hash" not in record:
                    if seq or record.get("agent") != folder.name:
                        raise LogError("an unchained (legacy) record after the chain began, or of "
                                       "another agent", field="seq", fix="the source log must verify")
                else:
                    seq, prev = runlog.continues(record, seq, prev, folder.name)
                values.append(rows.columns(folder.name, record))
            with conn.cursor() as cursor:
                cursor.executemany(_INSERT, values)
            conn.execute("UPDATE log_heads SET seq=%s, hash=%s WHERE agent=%s", (seq, prev, folder.name))
        if progress:
            progress(len(batch))
        return len(batch)


_INSERT = (f"INSERT INTO log_records ({', '.join(rows.COLUMNS)}, record) "
           f"VALUES ({', '.join(['%s'] * (len(rows.COLUMNS) + 1))})")


class PostgresMemory:
    """Notes and INDEX.md stored in PostgreSQL, searched through a weighted tsvector."""

    name = "postgres"

    def __init__(self, url: str | None = None, root: Path | None = None):
        self.db = _Database(url, "memory")

    def scan(self, folder: AgentFolder):
        notes: dict[str, dict[str, Any]] = {}
        errors: dict[str, NoteError] = {}
        with self.db.transaction() as conn:
            for file, summary, error in conn.execute(
                    "SELECT file, summary, error FROM notes WHERE agent=%s", (folder.name,)):
                if summary is not None:
                    notes[file] = summary
                else:
                    errors[file] = error_from_record(error)
        return notes, errors

    def selection(self, folder: AgentFolder, today: str, count: int
                  ) -> tuple[list[str], list[str], dict[str, NoteError]]:
        """What a prompt needs, as assembly.select_notes chooses it from a scan: (pinned
        live notes, the ``count`` most recently seen other live notes oldest first, the
        broken notes), by three indexed queries instead of reading every summary."""
        # COLLATE "C": code point order, as Python compares the same strings
        live = ("agent=%s AND summary IS NOT NULL AND current AND pinned={} AND (summary->>'expires_at' "
                "IS NULL OR summary->>'expires_at' COLLATE \"C\" >= %s)")
        with self.db.transaction() as conn:
            pinned = [row[0] for row in conn.execute(
                f"SELECT file FROM notes WHERE {live.format('true')} ORDER BY file COLLATE \"C\"",
                (folder.name, today))]
            recent = [row[0] for row in conn.execute(
                f"SELECT file FROM notes WHERE {live.format('false')} ORDER BY last_seen COLLATE \"C\" "
                "DESC NULLS LAST, file COLLATE \"C\" DESC LIMIT %s", (folder.name, today, max(count, 0)))]
            broken = {file: error_from_record(error) for file, error in conn.execute(
                "SELECT file, error FROM notes WHERE agent=%s AND summary IS NULL", (folder.name,))}
        return pinned, recent[::-1], broken

    def list(self, folder: AgentFolder, *, type: str | None = None, pinned: bool | None = None,
             archived: bool | None = None, recent: int | None = None) -> list[dict[str, Any]]:
        if type is not None:
            matching([], type=type)  # the same error for an unknown type
        where, args = ["agent=%s", "summary IS NOT NULL"], [folder.name]
        for column, value in (("type", type), ("pinned", pinned)):
            if value is not None:
                where.append(f"{column}=%s")
                args.append(value)
        if archived is not None:
            where.append("current=%s")
            args.append(not archived)
        sql = (f"SELECT summary FROM notes WHERE {' AND '.join(where)} "
               "ORDER BY last_seen DESC NULLS LAST, file")
        if recent is not None:
            sql += f" LIMIT {max(int(recent), 0)}"
        with self.db.transaction() as conn:
            return [row[0] for row in conn.execute(sql, args)]

    def get(self, folder: AgentFolder, file: str) -> str | None:
        note_path(folder, file)
        with self.db.transaction() as conn:
            row = conn.execute("SELECT text FROM notes WHERE agent=%s AND file=%s", (folder.name, file)).fetchone()
        return row[0] if row else None

    def put(self, folder: AgentFolder, file: str, text: str, *,
            expected: str | None = UNCHECKED) -> None:
        where = note_path(folder, file)
        summary, error, body = None, None, text
        try:
            meta, body = check_note_text(text, where)
            summary = summarize(meta, file)
        except NoteError as exc:
            error = error_record(exc)
            meta = {}
        row = {"agent": folder.name, "file": file, "text": text,
               "expected": expected if isinstance(expected, str) else None,
               "summary": Jsonb(summary) if summary else None,
               "error": Jsonb(error) if error else None,
               "type": summary and summary["type"], "pinned": summary and summary["pinned"],
               "current": bool(summary) and not (summary["archived"] or summary["superseded_by"]),
               "last_seen": summary and summary["last_seen"],
               "name": str(meta.get("name", "")), "description": str(meta.get("description", "")),
               "body": body}
        columns = "text, summary, error, type, pinned, current, last_seen, tsv"
        values = (f"%(text)s, %(summary)s, %(error)s, %(type)s, %(pinned)s, %(current)s, "
                  f"%(last_seen)s, {_TSV}")
        insert = f"INSERT INTO notes (agent, file, {columns}) VALUES (%(agent)s, %(file)s, {values})"
        if expected is UNCHECKED:
            sql = (f"{insert} ON CONFLICT (agent, file) DO UPDATE SET "
                   + ", ".join(f"{c}=excluded.{c}" for c in columns.split(", ")))
        elif expected is None:
            sql = f"{insert} ON CONFLICT (agent, file) DO NOTHING"
        else:  # compare-and-swap in one statement: the row is updated only if unchanged
            sql = (f"UPDATE notes SET ({columns}) = ({values}) "
                   "WHERE agent=%(agent)s AND file=%(file)s AND text=%(expected)s")
        with self.db.transaction() as conn:
            if conn.execute(sql, row).rowcount == 0:
                raise note_changed(where, expected)

    def delete(self, folder: AgentFolder, file: str) -> bool:
        note_path(folder, file)
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM notes WHERE agent=%s AND file=%s",
                                (folder.name, file)).rowcount > 0

    def get_index(self, folder: AgentFolder) -> str | None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT text FROM memory_index WHERE agent=%s", (folder.name,)).fetchone()
        return row[0] if row else None

    def put_index(self, folder: AgentFolder, text: str, *,
                  expected: str | None = UNCHECKED) -> None:
        if expected is UNCHECKED:
            sql, args = ("INSERT INTO memory_index VALUES (%s, %s) ON CONFLICT (agent) DO UPDATE "
                         "SET text=excluded.text", (folder.name, text))
        elif expected is None:
            sql, args = ("INSERT INTO memory_index VALUES (%s, %s) ON CONFLICT (agent) DO NOTHING",
                         (folder.name, text))
        else:
            sql, args = ("UPDATE memory_index SET text=%s WHERE agent=%s AND text=%s",
                         (text, folder.name, expected))
        with self.db.transaction() as conn:
            if conn.execute(sql, args).rowcount == 0:
                raise note_changed(folder.index, expected)

    def search(self, folder: AgentFolder, query: str, *, limit: int = 10,
               match: str = "all") -> list[SearchHit]:
        check_match(match)
        terms = list(dict.fromkeys(words(query)))
        if not terms or limit <= 0:
            return []
        spaced = [t for t in terms if not _NON_LATIN.search(t)]
        unspaced = [t for t in terms if _NON_LATIN.search(t)]  # CJK and others: substrings
        tests, args = [], []
        if spaced:
            tests.append("tsv @@ to_tsquery('simple', %s)")
            args.append((" & " if match == "all" else " | ").join(
                "'" + t.replace("'", "''").replace("\\", "\\\\") + "'" for t in spaced))
        for term in unspaced:
            tests.append("strpos(lower(text), %s) > 0")
            args.append(term)
        where = ["agent=%s", "(" + (" AND " if match == "all" else " OR ").join(tests) + ")"]
        args.insert(0, folder.name)
        rank = "ts_rank_cd(tsv, to_tsquery('simple', %s))" if spaced else "0.0"
        if match == "any":
            # ts_rank_cd knows nothing of how rare a word is: a note holding more of the
            # words comes first, then the density of the matches (normalised below 1).
            rank = " + ".join(["(tsv @@ to_tsquery('simple', %s))::int"] * len(spaced)
                              + ["(strpos(lower(text), %s) > 0)::int"] * len(unspaced)
                              + (["ts_rank_cd(tsv, to_tsquery('simple', %s), 32)"] if spaced else []))
        headline_query = " | ".join("'" + t.replace("'", "''").replace("\\", "\\\\") + "'" for t in terms)
        # Rank every match, but build snippets (costly: they re-parse the text) for the top only.
        sql = (f"SELECT file, name, note_type, score, ts_headline('simple', text, to_tsquery('simple', %s), "
               f"'StartSel=[, StopSel=], MaxWords=30, MinWords=12, MaxFragments=1') FROM ("
               f"SELECT file, text, coalesce(summary->>'name', '') AS name, "
               f"coalesce(type, split_part(file, '_', 1)) AS note_type, {rank} AS score "
               f"FROM notes WHERE {' AND '.join(where)} ORDER BY score DESC, file LIMIT %s) AS best "
               f"ORDER BY score DESC, file")
        quoted = ["'" + t.replace("'", "''").replace("\\", "\\\\") + "'" for t in spaced]
        ranked = (quoted + unspaced + ([args[1]] if spaced else [])) if match == "any" else \
            ([args[1]] if spaced else [])
        params = [headline_query] + ranked + args + [limit]
        with self.db.transaction() as conn:
            found = conn.execute(sql, params).fetchall()
        return [SearchHit(file, name, note_type, float(score), _one_line(snip, terms))
                for file, name, note_type, score, snip in found]

    def reindex(self, folder: AgentFolder, progress: Progress | None = None) -> int:
        with self.db.transaction() as conn:
            texts = conn.execute("SELECT file, text FROM notes WHERE agent=%s", (folder.name,)).fetchall()
        for n, (file, text) in enumerate(texts, start=1):
            self.put(folder, file, text)
            if progress and n % 500 == 0:
                progress(500)
        if progress:
            progress(len(texts) % 500)
        return len(self.scan(folder)[0])

    def check(self, folder: AgentFolder) -> list[str]:
        """Problems doctor reports: invalid notes stored in the database."""
        _, errors = self.scan(folder)
        return [f"{len(errors)} invalid note(s) stored (e.g. {sorted(errors)[0]})"] if errors else []


def _one_line(snip: str, terms: list[str]) -> str:
    """ts_headline's fragment as one line; CJK words (not in the tsvector) are marked too."""
    flat = " ".join(snip.split())
    for term in terms:
        if _NON_LATIN.search(term) and f"[{term}]" not in flat:
            flat = re.sub(re.escape(term), lambda m: f"[{m.group(0)}]", flat, flags=re.IGNORECASE)
    return flat


_ITEM = ("id, agent, work, key, priority, max_attempts, enqueued, state, due, token, attempts, "
         "error, result")
_NOW = "extract(epoch from clock_timestamp())"


class PostgresQueue:
    """The work queue in PostgreSQL, for workers on any number of hosts: a claim takes the
    next due row with ``FOR UPDATE SKIP LOCKED`` (claimers never wait on each other), and
    every later change of the claim names its token, so an older claim changes nothing."""

    name = "postgres"

    def __init__(self, url: str | None = None, root: Path | None = None):
        self.db = _Database(url, "queue")
        self._listeners = threading.local()  # one LISTEN connection per waiting thread

    def _where(self) -> str:
        return f"postgres:{redact(self.db.url)}#queue_items"

    @staticmethod
    def _item(row: Any) -> QueueItem:
        (id, agent, work, key, priority, max_attempts, enqueued, state, due, token, attempts,
         error, result) = row
        return QueueItem(id=id, agent=agent, work=work, key=key, priority=priority,
                         max_attempts=max_attempts, enqueued=enqueued, state=state, due=due,
                         token=token, attempts=attempts, error=error, result=result)

    def enqueue(self, agent: str, work: str, *, key: str | None = None, priority: int = 0,
                due: float | None = None, max_attempts: int = 5) -> QueueItem:
        check_item(agent, work, key, priority, max_attempts)
        enqueued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.db.transaction() as conn:
            row = conn.execute(
                f"INSERT INTO queue_items (agent, work, key, priority, max_attempts, enqueued, state, due) "
                f"VALUES (%s, %s, %s, %s, %s, %s, 'ready', coalesce(%s, {_NOW})) RETURNING {_ITEM}",
                (agent, work, key or new_key(), priority, max_attempts, enqueued, due)).fetchone()
            conn.execute("SELECT pg_notify(%s, %s)", (QUEUE_CHANNEL, f"{agent}:{row[0]}"))
        return self._item(row)

    def claim(self, worker: str, lease: float, agents: Iterable[str] | None = None) -> Claim | None:
        only, args = "", []
        if agents is not None:
            only, args = " AND agent = ANY(%s)", [list(agents)]
        with self.db.transaction() as conn:
            conn.execute(  # claims out of attempts whose lease ran out: dead, with the reason
                "UPDATE queue_items SET state='dead', lease_until=NULL, error='the lease of claim ' || token "
                "|| ' expired (its worker died, hung or lost the queue) and no attempt is left' WHERE id IN "
                f"(SELECT id FROM queue_items WHERE state='claimed' AND lease_until < {_NOW} "
                "AND attempts >= max_attempts FOR UPDATE SKIP LOCKED)")
            for pick in (f"state='claimed' AND lease_until < {_NOW}", f"state='ready' AND due <= {_NOW}"):
                order = "lease_until" if pick.startswith("state='claimed'") else "priority DESC, id"
                row = conn.execute(
                    "UPDATE queue_items q SET state='claimed', token=q.token+1, attempts=q.attempts+1, "
                    f"lease_until={_NOW} + %s, worker=%s, error=CASE WHEN q.state='claimed' THEN "
                    "'the lease of claim ' || q.token || ' expired (its worker died, hung or lost the queue)' "
                    f"ELSE q.error END FROM (SELECT id FROM queue_items WHERE {pick}{only} ORDER BY {order} "
                    f"LIMIT 1 FOR UPDATE SKIP LOCKED) c WHERE q.id = c.id RETURNING "
                    + ", ".join(f"q.{c}" for c in _ITEM.split(", ")),
                    [float(lease), worker, *args]).fetchone()
                if row is not None:
                    item = self._item(row)
                    return Claim(item=item, token=item.token, worker=worker, handle=item.id)
        return None

    def _lost(self, claim: Claim) -> LockLost:
        return LockLost(f"the claim (token {claim.token}) of queue item {claim.item.id} is no longer held: "
                        "its lease expired and it was claimed again", path=self._where(),
                        fix="renew the lease more often than it lasts (worker --lease); the item is "
                            "delivered again and its idempotency key keeps it from running twice")

    def _change(self, claim: Claim, sets: str, args: list[Any]) -> None:
        with self.db.transaction() as conn:
            changed = conn.execute(f"UPDATE queue_items SET {sets} WHERE id=%s AND token=%s AND state='claimed'",
                                   [*args, claim.item.id, claim.token]).rowcount
        if changed != 1:
            raise self._lost(claim)

    def renew(self, claim: Claim, lease: float) -> None:
        self._change(claim, f"lease_until={_NOW} + %s", [float(lease)])

    def complete(self, claim: Claim, result: dict[str, Any]) -> None:
        self._change(claim, "state='done', lease_until=NULL, result=%s", [Jsonb(result)])

    def fail(self, claim: Claim, error: str, retry_in: float | None, *, counted: bool = True) -> str:
        back = "" if counted else ", attempts=attempts-1"
        if retry_in is None:
            self._change(claim, f"state='dead', lease_until=NULL, error=%s{back}", [error])
            return "dead"
        self._change(claim, f"state='ready', lease_until=NULL, error=%s, due={_NOW} + %s{back}",
                     [error, float(retry_in)])
        return "ready"

    def stats(self, agent: str | None = None) -> dict[str, int]:
        where, args = ("WHERE agent=%s", [agent]) if agent is not None else ("", [])
        out = {"ready": 0, "scheduled": 0, "claimed": 0, "done": 0, "dead": 0}
        with self.db.transaction() as conn:
            for state, count in conn.execute(
                    f"SELECT CASE WHEN state='ready' AND due > {_NOW} THEN 'scheduled' ELSE state END, "
                    f"count(*) FROM queue_items {where} GROUP BY 1", args):
                out[state] = out.get(state, 0) + int(count)
        return out

    def list(self, state: str | None = None, agent: str | None = None,
             limit: int | None = None) -> list[QueueItem]:
        if state is not None and state not in STATES:
            raise ConfigError(f"unknown queue state {state!r}", field="state", fix=f"use one of: {', '.join(STATES)}")
        where, args = ["true"], []
        for column, value in (("state", state), ("agent", agent)):
            if value is not None:
                where.append(f"{column}=%s")
                args.append(value)
        sql = f"SELECT {_ITEM} FROM queue_items WHERE {' AND '.join(where)} ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {max(int(limit), 0)}"
        with self.db.transaction() as conn:
            return [self._item(row) for row in conn.execute(sql, args)]

    def wait(self, timeout: float) -> None:
        """Sleep until an item is enqueued (LISTEN atomic_vault_queue) or ``timeout`` passes."""
        listener = getattr(self._listeners, "conn", None)
        try:
            if listener is None or listener.closed or listener.broken or self._listeners.pid != os.getpid():
                listener = self._listeners.conn = psycopg.connect(self.db.conninfo, connect_timeout=5,
                                                                  autocommit=True)
                self._listeners.pid = os.getpid()
                listener.execute(f"LISTEN {QUEUE_CHANNEL}")
            for _ in listener.notifies(timeout=timeout, stop_after=1):
                pass
        except psycopg.Error:
            self._listeners.conn = None
            time.sleep(timeout)  # the next claim reports the lost database, clearly
