"""The files log's snapshot store: one append-only pack per day,
``log/snapshots/YYYY-MM-DD.jsonl``, one whole line per new text, and a derived index,
``.atomic_vault/snapshots.idx``, saying where each hash's line is (spec/07 "Snapshots").

Why packs: a file per snapshot cost every run a file fsync per new text plus a folder
fsync; a pack costs a run one fsync'd append (a folder fsync only for a day's first pack).

Why deltas: a text that extends or edits an earlier one (today's journal, which grows by a
section each run; INDEX.md after a capture) is stored as the hash of that earlier text
(``base``), how many characters of its start (``keep``) and end (``tail``) are unchanged,
and what lies between (``add``). Reading resolves it; the caller re-hashes the whole text,
so a wrong base or a forged delta reads as tampering, never as evidence.

The index is derived: it may be deleted (readers then scan the packs, the next writer
saves it again), and no entry is trusted unread: the line at its offset must name its
hash. Texts stored the old way, ``log/snapshots/<sha>.txt``, are still read and pruned.
The callers (``FileLog``) hold ``.atomic_vault/snapshots.lock`` around every write.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

from .. import fileio
from ..errors import AtomicVaultError
from ..vault import AgentFolder

SNAPSHOTS = "snapshots"
INDEX = "snapshots.idx"
PACK = re.compile(r"\d{4}-\d{2}-\d{2}\.jsonl\Z")
SHA = re.compile(r"[0-9a-f]{64}\Z")
MAX_DEPTH = 32  # a delta on a delta on ...: a read follows at most this many lines
MIN_DELTA = 256  # characters: a shorter text is stored whole (a delta line has ~170 bytes of its own)
HEAD_CHARS = 64  # texts that share their first 64 characters are tried as each other's base


class Index:
    """sha -> (pack, offset, length in bytes with the newline, depth), with what a writer
    needs to pick a base (``heads``) and to notice lines the index lacks (``covered``)."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, int, int, int]] = {}
        self.heads: dict[str, str] = {}  # head key -> newest sha whose text starts so
        self.head_of: dict[str, str] = {}  # sha -> its head key
        self.covered: dict[str, int] = {}  # pack -> end of its last indexed line
        self.last: dict[str, str] = {}  # pack -> the hash of that line
        self.file: tuple[int, int] | None = None  # (inode, bytes parsed) of the index file
        self.stale = False  # rebuilt or repaired in memory: a writer saves it whole

    def add(self, sha: str, pack: str, offset: int, length: int, depth: int, head: str | None) -> str:
        self.entries[sha] = (pack, offset, length, depth)
        if head:
            self.heads[head] = sha
            self.head_of[sha] = head
        if offset + length >= self.covered.get(pack, 0):
            self.covered[pack], self.last[pack] = offset + length, sha
        return f"{sha} {pack} {offset} {length} {depth} {head or '-'}\n"


_INDEXES: dict[Path, Index] = {}
_TEXTS: "OrderedDict[str, str]" = OrderedDict()  # recently stored or resolved texts, each hashed: bases


_FOLDERS: dict[Path, Path] = {}


def folder_of(folder: AgentFolder) -> Path:
    where = _FOLDERS.get(folder.path)
    if where is None:
        where = _FOLDERS[folder.path] = folder.log / SNAPSHOTS
    return where


def legacy_path(folder: AgentFolder, sha: str) -> Path:
    return folder_of(folder) / f"{sha}.txt"


def head_key(text: str) -> str | None:
    if len(text) < MIN_DELTA:
        return None
    return hashlib.sha1(text[:HEAD_CHARS].encode("utf-8")).hexdigest()[:16]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- the index

def index(folder: AgentFolder) -> Index:
    """The index of this agent's packs, kept in memory and brought up to date with the
    index file (lines other writers appended are read; a replaced file is read again)."""
    path = folder.state / INDEX
    idx = _INDEXES.get(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    if idx is not None and st is not None and idx.file is not None and idx.file[0] == st.st_ino \
            and idx.file[1] <= st.st_size:
        if idx.file[1] < st.st_size:
            _read_index(path, idx, idx.file[1])
        return idx
    if idx is not None and st is None and idx.file is None:
        return idx  # never saved (a reader's rebuild): still ours
    idx = Index()
    _INDEXES[path] = idx
    if st is None:
        rebuild(folder, idx)
    else:
        _read_index(path, idx, 0)
        if idx.stale:  # a line that does not parse: the index cannot say what it lacks
            rebuild(folder, idx)
    return idx


def _read_index(path: Path, idx: Index, start: int) -> None:
    try:
        with open(path, "rb") as handle:
            ino = os.fstat(handle.fileno()).st_ino
            handle.seek(start)
            raw = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        idx.stale = True
        return
    whole = raw.rfind(b"\n") + 1
    if whole < len(raw):
        idx.stale = True  # a torn last line (a crash while appending): rewritten by a writer
    for line in raw[:whole].split(b"\n"):
        parts = line.split(b" ")
        if len(parts) != 6:
            if line:
                idx.stale = True
            continue
        try:
            sha, pack = parts[0].decode("ascii"), parts[1].decode("ascii")
            offset, length, depth = int(parts[2]), int(parts[3]), int(parts[4])
        except (UnicodeDecodeError, ValueError):
            idx.stale = True
            continue
        if not (SHA.match(sha) and PACK.match(pack)) or offset < 0 or length <= 0:
            idx.stale = True
            continue
        head = parts[5].decode("ascii", "replace")
        idx.add(sha, pack, offset, length, depth, None if head == "-" else head)
    idx.file = (ino, start + whole)


def rebuild(folder: AgentFolder, idx: Index) -> None:
    """Every pack scanned from its start: the index as the packs say it is."""
    fresh = Index()
    for pack in packs(folder):
        _scan(folder, fresh, pack, 0)
    idx.entries, idx.heads, idx.head_of = fresh.entries, fresh.heads, fresh.head_of
    idx.covered, idx.last = fresh.covered, fresh.last
    idx.stale = True


def packs(folder: AgentFolder) -> list[str]:
    try:
        names = os.listdir(folder_of(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(name for name in names if PACK.match(name))


def _scan(folder: AgentFolder, idx: Index, pack: str, start: int) -> list[str]:
    """Index the whole lines of ``pack`` from byte ``start``; the index lines added."""
    raw = _read_from(folder_of(folder) / pack, start)
    added = []
    at = start
    for line in raw[:raw.rfind(b"\n") + 1].split(b"\n")[:-1]:
        length = len(line) + 1
        entry = _parse(line)
        if entry is not None:
            sha = entry["sha"]
            if "text" in entry:
                depth, head = 0, head_key(entry["text"])
            else:
                base = idx.entries.get(entry["base"])
                depth = base[3] + 1 if base is not None else MAX_DEPTH
                size = entry["keep"] + len(entry["add"]) + entry["tail"]
                head = None
                if size >= MIN_DELTA and entry["keep"] >= HEAD_CHARS:  # starts as its base does
                    head = idx.head_of.get(entry["base"])
            added.append(idx.add(sha, pack, at, length, depth, head))
        at += length
    idx.covered[pack] = max(idx.covered.get(pack, 0), at)
    return added


def _read_from(path: Path, start: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except (FileNotFoundError, NotADirectoryError, OSError):
        return b""
    try:
        os.lseek(fd, start, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _parse(line: bytes) -> dict[str, Any] | None:
    """A pack line as a whole text ``{sha, text}`` or a delta ``{sha, base, keep, add,
    tail}``; None for anything else (it names no text the index could point at)."""
    try:
        entry = fileio.loads_strict(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("sha"), str) or not SHA.match(entry["sha"]):
        return None
    if isinstance(entry.get("text"), str):
        return entry
    if (isinstance(entry.get("base"), str) and isinstance(entry.get("add"), str)
            and all(isinstance(entry.get(k), int) and not isinstance(entry.get(k), bool) and entry[k] >= 0
                    for k in ("keep", "tail"))):
        return entry
    return None


def save(folder: AgentFolder, idx: Index, lines: list[str]) -> None:
    """Writers only (read-only commands change nothing on disk): append ``lines`` to the
    index file, or write it whole when it was rebuilt, repaired or is torn. Derived, so
    never fsynced, and a failure to save fails nothing."""
    path = folder.state / INDEX
    try:
        folder.ensure_state_dir()
        if idx.stale or idx.file is None or fileio.ends_torn(path):
            text = "".join(f"{sha} {pack} {offset} {length} {depth} {idx.head_of.get(sha, '-')}\n"
                           for sha, (pack, offset, length, depth) in idx.entries.items())
            fileio.atomic_write(path, text, durable=False)
        elif lines:
            fileio.append_text(path, "".join(lines), durable=False)
        else:
            return
        st = os.stat(path)
        idx.file, idx.stale = (st.st_ino, st.st_size), False
    except (OSError, AtomicVaultError):  # derived state: the packs stay the truth
        idx.stale = True


def catch_up(folder: AgentFolder, idx: Index, pack: str) -> list[str]:
    """Lines of ``pack`` past what the index covers (a writer that crashed between its
    pack append and its index append, or an older index): indexed now. A pack that
    shrank, or whose covered end is no longer a line's end, is indexed again whole."""
    try:
        size = os.stat(folder_of(folder) / pack, follow_symlinks=False).st_size
    except (FileNotFoundError, NotADirectoryError):
        if pack in idx.covered:
            _drop(idx, pack)
        return []
    covered = idx.covered.get(pack, 0)
    last = idx.last.get(pack)
    aligned = covered == 0 or (last is not None and _stored(folder, idx, last, legacy=False))
    if size == covered and aligned:
        return []
    if size > covered and aligned:  # the indexed part is where the index says: read on from there
        return _scan(folder, idx, pack, covered)
    _drop(idx, pack)
    _scan(folder, idx, pack, 0)
    idx.stale = True
    return []


def refresh(folder: AgentFolder, idx: Index) -> None:
    """Every pack brought up to date with what is on disk (``catch_up`` of each; a pack
    gone drops its entries). In memory; a writer that saves it next writes it whole."""
    present = packs(folder)
    for pack in set(idx.covered) - set(present):
        _drop(idx, pack)
        idx.stale = True
    for pack in present:
        if catch_up(folder, idx, pack):
            idx.stale = True


def _drop(idx: Index, pack: str) -> None:
    gone = [sha for sha, entry in idx.entries.items() if entry[0] == pack]
    for sha in gone:
        del idx.entries[sha]
    idx.heads = {head: sha for head, sha in idx.heads.items() if sha in idx.entries}
    idx.head_of = {sha: head for sha, head in idx.head_of.items() if sha in idx.entries}
    idx.covered.pop(pack, None)
    idx.last.pop(pack, None)


def _read_at(folder: AgentFolder, pack: str, offset: int, length: int) -> bytes | None:
    try:
        fd = os.open(os.path.join(folder_of(folder), pack), os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return None
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


# ---------------------------------------------------------------- reading

def _line(folder: AgentFolder, idx: Index, sha: str) -> dict[str, Any] | None:
    """The parsed pack line of ``sha`` if the index points at one that names it."""
    entry = idx.entries.get(sha)
    if entry is None:
        return None
    raw = _read_at(folder, entry[0], entry[1], entry[2])
    if not raw or not raw.endswith(b"\n"):
        return None
    line = _parse(raw[:-1])
    return line if line is not None and line["sha"] == sha else None


def read(folder: AgentFolder, sha: str) -> str | None:
    """The text stored under ``sha``, resolved through its deltas, or None. Not checked
    here: the caller re-hashes it (``snapshots.load``)."""
    return _read(folder, index(folder), sha, 0)


def _read(folder: AgentFolder, idx: Index, sha: str, depth: int) -> str | None:
    line = _line(folder, idx, sha)
    if line is None:
        text = _legacy(folder, sha)
        if text is not None:
            return text
        entry = idx.entries.get(sha)
        if entry is not None:  # the index points at something else: that pack again, whole
            _drop(idx, entry[0])
            _scan(folder, idx, entry[0], 0)
            idx.stale = True
        else:  # not indexed: lines appended since, or a pack replaced
            refresh(folder, idx)
        line = _line(folder, idx, sha)
        if line is None:
            return None
    if "text" in line:
        return line["text"]
    if depth >= 2 * MAX_DEPTH:  # a forged cycle of deltas: what is stored, which cannot hash
        return json.dumps(line)
    base = _read(folder, idx, line["base"], depth + 1)
    if base is None:
        return None
    return base[:line["keep"]] + line["add"] + (base[len(base) - line["tail"]:] if line["tail"] else "")


def _legacy(folder: AgentFolder, sha: str) -> str | None:
    path = legacy_path(folder, sha)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:  # missing, or a link (never followed out of the agent folder)
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    except OSError:  # a folder of that name
        return None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="replace")


def hashes(folder: AgentFolder) -> list[str]:
    """Every stored hash: the packs' (brought up to date) and the old per-file ones."""
    idx = index(folder)
    refresh(folder, idx)
    try:
        names = os.listdir(folder_of(folder))
    except (FileNotFoundError, NotADirectoryError):
        names = []
    old = {n[:-4] for n in names if n.endswith(".txt") and SHA.match(n[:-4])}
    return sorted(old | set(idx.entries))


# ---------------------------------------------------------------- writing

def _stored(folder: AgentFolder, idx: Index, sha: str, fds: dict[str, int] | None = None,
            legacy: bool = True) -> bool:
    """Whether ``sha`` is stored: its indexed line (read back: it must name the hash and
    end where the index says), else its old per-file copy."""
    entry = idx.entries.get(sha)
    if entry is not None:
        prefix = f'{{"sha":"{sha}"'.encode("ascii")
        fd = fds.get(entry[0]) if fds is not None else None
        if fd is None:
            try:
                fd = os.open(os.path.join(folder_of(folder), entry[0]), os.O_RDONLY | _NOFOLLOW)
            except OSError:
                fd = -1
            if fds is not None:
                fds[entry[0]] = fd
        if fd >= 0:
            try:
                raw = os.pread(fd, len(prefix), entry[1])
                end = os.pread(fd, 1, entry[1] + entry[2] - 1)
            finally:
                if fds is None:
                    os.close(fd)
            if raw == prefix and end == b"\n":
                return True
        if _line(folder, idx, sha) is not None:  # a line written with its keys in another order
            return True
    return legacy and os.path.isfile(os.path.join(folder_of(folder), f"{sha}.txt"))


def _base(folder: AgentFolder, idx: Index, text: str, pack: str) -> tuple[str, str] | None:
    """(hash, text) of the newest stored text that starts as ``text`` does and may carry a
    delta: not too deep, in this pack or an older one (prune rewrites packs newest first)."""
    head = head_key(text)
    sha = idx.heads.get(head) if head else None
    entry = idx.entries.get(sha) if sha else None
    if entry is None or entry[3] >= MAX_DEPTH or entry[0] > pack:
        return None
    if not _stored(folder, idx, sha, legacy=False):  # even when known here: a prune may have removed it
        return None
    base = _TEXTS.get(sha)
    if base is None:
        base = _read(folder, idx, sha, 0)
        if base is None or digest(base) != sha:
            return None
    return sha, base


def common_ends(base: str, text: str) -> tuple[int, int]:
    """(characters both start with, characters both end with after those)."""
    most = min(len(base), len(text))
    lo, hi = 0, most
    while lo < hi:  # binary search: each step compares only the part not yet known equal
        mid = (lo + hi + 1) // 2
        if base[lo:mid] == text[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    keep, most = lo, most - lo
    lo, hi = 0, most
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if base[len(base) - mid:len(base) - lo] == text[len(text) - mid:len(text) - lo]:
            lo = mid
        else:
            hi = mid - 1
    return keep, lo


def _pack_line(folder: AgentFolder, idx: Index, sha: str, text: str, pack: str) -> tuple[str, int, str | None]:
    """(the line, its depth, its head key) storing ``text``: a delta when an earlier text
    shares most of it, else the text whole."""
    found = _base(folder, idx, text, pack) if len(text) >= MIN_DELTA else None
    if found is not None:
        base_sha, base = found
        keep, tail = common_ends(base, text)
        add = text[keep:len(text) - tail]
        if len(add) * 2 <= len(text):
            line = {"sha": sha, "base": base_sha, "keep": keep, "add": add, "tail": tail}
            head = head_key(text) if keep >= HEAD_CHARS else None
            return json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n", \
                idx.entries[base_sha][3] + 1, head
    return json.dumps({"sha": sha, "text": text}, ensure_ascii=False, separators=(",", ":")) + "\n", 0, \
        head_key(text)


def remember(sha: str, text: str) -> None:
    """Keep a hashed text in memory as a base for the next run of this process."""
    if len(text) < MIN_DELTA or len(text) > 16_000_000:
        return
    _TEXTS[sha] = text
    _TEXTS.move_to_end(sha)
    while len(_TEXTS) > 64:
        _TEXTS.popitem(last=False)


def _unstored(folder: AgentFolder, idx: Index, texts: dict[str, str]) -> list[tuple[str, str]]:
    fds: dict[str, int] = {}
    try:
        return [(sha, text) for sha, text in texts.items() if not _stored(folder, idx, sha, fds)]
    finally:
        for fd in fds.values():
            if fd >= 0:
                os.close(fd)


def put(folder: AgentFolder, texts: dict[str, str], pack: str) -> None:
    """Append every text not stored yet to ``pack`` in one fsync'd write, then index them.
    The caller holds the snapshots lock."""
    idx = index(folder)
    added = catch_up(folder, idx, pack)
    new = _unstored(folder, idx, texts)
    wrong = {idx.entries[sha][0] for sha, _ in new if sha in idx.entries}
    for pack_name in wrong:  # the index points at lines that are not these: index those packs again
        _drop(idx, pack_name)
        _scan(folder, idx, pack_name, 0)
        idx.stale = True
    if wrong:
        new = _unstored(folder, idx, dict(new))
    if not new:
        if added or idx.stale:
            save(folder, idx, added)
        return
    path = folder_of(folder) / pack
    fileio.make_dirs(path.parent)
    if fileio.ends_torn(path):  # a run that died mid-append: its record was never written
        fileio.move_torn_tail(path)
        added += catch_up(folder, idx, pack)
    lines, meta = [], []
    for sha, text in new:
        line, depth, head = _pack_line(folder, idx, sha, text, pack)
        lines.append(line)
        meta.append((sha, len(line.encode("utf-8")), depth, head))
    try:
        offset = os.stat(path).st_size
    except FileNotFoundError:
        offset = 0
    fileio.append_text(path, "".join(lines))
    for sha, length, depth, head in meta:
        added.append(idx.add(sha, pack, offset, length, depth, head))
        offset += length
    for sha, text in new:
        remember(sha, text)
    save(folder, idx, added)


def delete(folder: AgentFolder, hashes: Iterable[str]) -> int:
    """Remove these texts (prune): each pack holding one is rewritten without it, newest
    pack first, and a kept delta whose base goes is written whole in the same rewrite, so
    at every instant each kept text can be read. Returns how many were there."""
    idx = index(folder)
    rebuild(folder, idx)
    gone = {sha for sha in hashes if isinstance(sha, str) and SHA.match(sha)}
    removed = 0
    for sha in sorted(gone):
        path = legacy_path(folder, sha)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            continue
        removed += 1
    in_packs = gone & set(idx.entries)
    removed += len(in_packs)
    by_pack: dict[str, dict[str, Any]] = {}
    for pack in packs(folder):
        raw = _read_from(folder_of(folder) / pack, 0)
        by_pack[pack] = {"raw": raw, "lines": raw[:raw.rfind(b"\n") + 1].split(b"\n")[:-1]}
    whole: dict[str, str] = {}  # kept deltas on a removed base, resolved before anything changes
    for pack, content in by_pack.items():
        for line in content["lines"]:
            entry = _parse(line)
            if entry is not None and entry["sha"] not in gone and entry.get("base") in gone:
                text = _read(folder, idx, entry["sha"], 0)
                if text is not None:
                    whole[entry["sha"]] = text
    for pack in sorted(by_pack, reverse=True):
        kept, changed = [], False
        for line in by_pack[pack]["lines"]:
            entry = _parse(line)
            sha = entry["sha"] if entry else None
            if sha in gone:
                changed = True
                continue
            if sha in whole:
                line = json.dumps({"sha": sha, "text": whole[sha]}, ensure_ascii=False,
                                  separators=(",", ":")).encode("utf-8")
                changed = True
            kept.append(line + b"\n")
        if not changed:
            continue
        path = folder_of(folder) / pack
        if kept:
            raw = by_pack[pack]["raw"]
            fileio.atomic_write(path, b"".join(kept) + raw[raw.rfind(b"\n") + 1:])  # a torn tail stays
        else:
            path.unlink()
    if removed:
        fileio.fsync_dir(folder_of(folder))
    rebuild(folder, idx)
    save(folder, idx, [])
    return removed
