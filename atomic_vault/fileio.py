"""Crash-safe file primitives: atomic replace, whole-line appends, torn-line tolerant reads.

Every durable write in atomic_vault goes through this module, so the crash guarantees of
spec/02 are kept in one place. ``FSYNCS`` counts fsync calls for the benchmarks;
``fault_hook`` lets tests fail or kill a write at a named step.
"""

from __future__ import annotations

import errno
import json
import os
import stat as stat_module
import struct
import time
import zlib
from pathlib import Path
from typing import Callable

from .errors import ConfigError, LogError

FSYNCS = 0
DIR_FSYNCS = 0  # of FSYNCS, those of a folder (one per durable replace or new file)
TEMP_SUFFIX = ".avtmp"

# The fault-injection seam (tests and bench/torture.py only). When set, it is called as
# ``fault_hook(point, path)`` at each step below, with the file being written: raising
# there makes that step fail, killing the process there is a crash at that instant. Unset
# (None), a step costs one global lookup.
fault_hook: Callable[[str, Path], None] | None = None
FAULT_POINTS = (
    "atomic_write:before_temp",    # nothing written yet
    "temp:complete",               # temp file written (and synced), not yet renamed or linked
                                   # over the target, which is untouched
    "atomic_write:after_rename",   # the target is new; its folder not yet synced
    "append:before_write",         # nothing appended yet
    "append:before_fsync",         # the bytes are in the file, not yet synced
    "torn:before_truncate",        # torn bytes saved in the .torn file, still in the file
)


def _named(exc: OSError, path: Path) -> OSError:
    """The error of a write names the file it was for: ``os.write`` on a descriptor
    reports "No space left on device" without saying where."""
    if exc.filename is None:
        exc.filename = str(path)
    return exc


def _fsync(fd: int) -> None:
    global FSYNCS
    FSYNCS += 1
    os.fsync(fd)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a file creation in ``directory`` durable."""
    global DIR_FSYNCS
    DIR_FSYNCS += 1
    fd = os.open(directory, os.O_RDONLY)
    try:
        _fsync(fd)
    except OSError as exc:
        raise _named(exc, directory)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """Create ``directory`` and missing parents, fsyncing each parent so that the new
    folders survive a power loss along with the files written into them."""
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        fsync_dir(folder.parent)


def atomic_write(path: Path, data: str | bytes, *, durable: bool = True) -> bool:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a mix.

    Returns False, and touches nothing, when the file already holds exactly ``data``
    (so ``git diff`` shows only real changes). An existing file keeps its mode; a new one
    gets the umask's. ``durable=False`` skips fsync, for derived caches only.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and st.st_size == len(raw):
        with open(path, "rb") as existing:
            if existing.read() == raw:
                return False
    try:
        _replace(path, raw, st, durable)
    except OSError as exc:
        raise _named(exc, path)
    return True


def _replace(path: Path, raw: bytes, st: os.stat_result | None, durable: bool) -> None:
    if fault_hook is not None:
        fault_hook("atomic_write:before_temp", path)
    make_dirs(path.parent)
    temp = synced_temp(path, raw, st.st_mode & 0o7777 if st is not None else None, durable=durable)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if fault_hook is not None:
        fault_hook("atomic_write:after_rename", path)
    if durable:
        fsync_dir(path.parent)


def write_new_files(items: dict[Path, bytes]) -> None:
    """Atomic writes of several new files: every temp written and fsynced, then each
    renamed, then one fsync per folder (instead of one per file). A crash leaves each
    file whole or absent, never torn."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, raw in items.items():
            make_dirs(path.parent)
            temps.append((synced_temp(path, raw), path))
        for temp, path in temps:
            os.replace(temp, path)
    except BaseException:
        for temp, _ in temps:
            temp.unlink(missing_ok=True)
        raise
    for parent in dict.fromkeys(path.parent for path in items):
        fsync_dir(parent)


def synced_temp(path: Path, raw: bytes, mode: int | None = None, *, durable: bool = True) -> Path:
    """Steps 4-6 of an atomic write: a new temp file beside ``path`` holding ``raw``, with
    permission bits ``mode`` (None: those of ``path`` if it exists, else the umask's),
    written whole and fsynced, ready to be renamed or linked over ``path``, which is not
    touched. On failure it is removed."""
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            pass
    temp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}{TEMP_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            _write_all(fd, raw)
            if durable:
                _fsync(fd)
        finally:
            os.close(fd)
        if fault_hook is not None:
            fault_hook("temp:complete", path)
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _named(exc, path)
        raise
    return temp


def _write_all(fd: int, raw: bytes) -> None:
    view = memoryview(raw)
    while view:
        view = view[os.write(fd, view):]


def append_text(path: Path, text: str, *, durable: bool = True) -> None:
    """Append ``text`` with one write call, then fsync; the file and its folder are created
    as needed. If any step fails, the bytes already written are cut off again and the
    error propagates, so a failed append leaves the file as it was (a crash mid-write
    may still leave a torn tail, which readers detect). ``durable=False`` skips the
    fsyncs, for derived state only."""
    raw = text.encode("utf-8")
    try:
        make_dirs(path.parent)
        created = not path.exists()
        # O_NOFOLLOW: a day file that is a link must not carry an append out of the folder
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError("is a link; journal and log files are written only inside the agent "
                              "folder, and nothing was appended", path=path,
                              fix="replace the link with the plain file it points to") from None
        raise _named(exc, path)
    written = 0
    try:
        if fault_hook is not None:
            fault_hook("append:before_write", path)
        written = os.write(fd, raw)
        while written < len(raw):  # only on a full disk or a signal; finish, then report
            written += os.write(fd, memoryview(raw)[written:])
        if fault_hook is not None:
            fault_hook("append:before_fsync", path)
        if durable:
            _fsync(fd)
            if created:
                fsync_dir(path.parent)
    except BaseException as exc:
        if written:
            _cut_back(fd, written)
        if isinstance(exc, OSError):
            raise _named(exc, path)
        raise
    finally:
        os.close(fd)


def _cut_back(fd: int, written: int) -> None:
    """Undo a failed append: truncate to where it began, unless someone appended after it
    (then its bytes stay, as a torn line that readers report). Best effort: this runs
    while another error is already on its way up."""
    try:
        end = os.lseek(fd, 0, os.SEEK_CUR)  # O_APPEND: just after this call's bytes
        if os.fstat(fd).st_size == end:
            os.ftruncate(fd, end - written)
            _fsync(fd)
    except OSError:
        pass


def create_new(path: Path, text: str, *, durable: bool = True, mtime: float | None = None) -> bool:
    """Create ``path`` holding ``text`` unless it exists (then False): the content is
    complete before the name appears (hard link of a synced temp file), so concurrent
    creators never see, or add to, a half-made file. ``durable=False`` skips fsync, for
    derived state only. ``mtime`` is the modification time the file has from the start."""
    try:
        make_dirs(path.parent)
        temp = synced_temp(path, text.encode("utf-8"), durable=durable)
        if mtime is not None:
            os.utime(temp, (mtime, mtime))
        try:
            os.link(temp, path)
            created = True
        except FileExistsError:
            created = False
        finally:
            temp.unlink(missing_ok=True)
        if created and durable:
            fsync_dir(path.parent)
    except OSError as exc:
        raise _named(exc, path)
    return created


def move(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` (same file system) and make the change durable in
    both folders. A missing ``source`` raises FileNotFoundError untouched: of several
    processes moving one file, exactly one succeeds (the work queue's claims rely on it)."""
    try:
        make_dirs(target.parent)
    except OSError as exc:
        raise _named(exc, target)
    if fault_hook is not None:
        fault_hook("move:before_rename", source)
    try:
        os.rename(source, target)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _named(exc, source)
    fsync_dir(target.parent)
    if source.parent != target.parent:
        fsync_dir(source.parent)


def append_jsonl(path: Path, record: dict) -> str:
    """Append ``record`` as one whole JSON line; returns the line written (without newline)."""
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    if ends_torn(path):
        raise LogError("the last line is torn (a crash during a write?); nothing was appended",
                       path=path, fix="run `atomic-vault doctor AGENT --repair` to move it aside")
    append_text(path, line + "\n")
    return line


def ends_torn(path: Path) -> bool:
    """True when the file exists, is not empty and does not end with a newline."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return False
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
    except FileNotFoundError:
        return False


def move_torn_tail(path: Path) -> tuple[int, Path]:
    """Move the bytes after the last newline into ``<file>.torn`` (appended, plus a
    newline, and synced), then cut them from the file: kept, never deleted. Returns their
    count and the .torn file. Safe to repeat after a crash between the two steps: bytes
    identical to the .torn file's last line are not saved twice."""
    raw = path.read_bytes()
    keep = raw.rfind(b"\n") + 1
    tail = raw[keep:]
    torn = path.with_name(path.name + ".torn")
    if not tail:
        return 0, torn
    try:
        previous = torn.read_bytes()
    except FileNotFoundError:
        previous = b""
    line = tail + b"\n"
    if not (previous == line or previous.endswith(b"\n" + line)):
        fd = os.open(torn, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            _write_all(fd, line)
            _fsync(fd)
        finally:
            os.close(fd)
    if fault_hook is not None:
        fault_hook("torn:before_truncate", path)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, keep)
        _fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    return len(tail), torn


# Frames: the checksummed records of the derived caches (the catalog cache, the word index),
# each a 4-byte little-endian payload length, the payload's CRC-32 (little-endian), the payload.
FRAME = struct.Struct("<II")


def frame(payload: bytes) -> bytes:
    """``payload`` as one frame."""
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def append_frame(path: Path, payload: bytes) -> None:
    """Append ``payload`` as one frame with one ``write`` call and no fsync: for derived
    state only, whose readers stop at a torn or damaged frame (``read_frames``)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, frame(payload))
    except OSError as exc:
        raise _named(exc, path)
    finally:
        os.close(fd)


def read_frames(raw: bytes) -> tuple[list[memoryview], bool]:
    """(the payloads of the frames in ``raw``, in order, up to the first that is torn or
    fails its checksum, as views of ``raw``, not copies; whether every byte of ``raw``
    was a whole, sound frame)."""
    payloads, at = [], 0
    raw = memoryview(raw)
    while at + FRAME.size <= len(raw):
        size, crc = FRAME.unpack_from(raw, at)
        payload = raw[at + FRAME.size:at + FRAME.size + size]
        if len(payload) != size or zlib.crc32(payload) != crc:
            return payloads, False
        payloads.append(payload)
        at += FRAME.size + size
    return payloads, at == len(raw)


class DuplicateKey(ValueError):
    """A JSON object names one key twice: readers disagree on which copy counts (Python
    keeps the last, others the first), so a forged first copy could hide behind a hash."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise DuplicateKey(twice)
    return out


def loads_strict(text: str | bytes) -> object:
    """json.loads that refuses duplicate keys (raises DuplicateKey, a ValueError)."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except DuplicateKey as exc:
        lenient = json.loads(text)  # only to name the record in the message
        seq = lenient.get("seq") if isinstance(lenient, dict) else None
        where = f"record seq {seq}" if isinstance(seq, int) else "one record"
        raise DuplicateKey(f"duplicate key {exc.args[0]!r} in {where} (a second copy of a field: "
                           "one of them is forged)") from None


def read_jsonl(path: Path) -> tuple[list[tuple[int, dict]], list[tuple[int, str]]]:
    """Read a JSONL file into (line number, record) pairs plus (line number, problem) pairs.

    A last line without its newline is reported as torn, never parsed: it may be a prefix
    of a longer record that happens to be valid JSON. A line naming a key twice is a
    problem starting with "tampered:", never a record (see ``loads_strict``).
    """
    records: list[tuple[int, dict]] = []
    problems: list[tuple[int, str]] = []
    with open(path, "rb") as handle:
        raw = handle.read()
    lines = raw.split(b"\n")
    last = len(lines) - 1  # the piece after the final newline: empty unless torn
    for number, chunk in enumerate(lines, start=1):
        if number - 1 == last:
            if chunk:
                problems.append((number, "torn last line (no newline: a crash during a write?)"))
            break
        if not chunk.strip():
            continue
        try:
            value = loads_strict(chunk)
        except DuplicateKey as exc:
            problems.append((number, f"tampered: {exc}"))
            continue
        except (UnicodeDecodeError, ValueError) as exc:
            problems.append((number, f"not valid JSON ({exc})"))
            continue
        if not isinstance(value, dict):
            problems.append((number, "not a JSON object"))
            continue
        records.append((number, value))
    return records, problems


def last_line(path: Path, chunk: int = 65536) -> bytes | None:
    """The last complete, non-blank line of ``path`` (without newline), reading only the
    file's tail. A torn tail (bytes after the final newline) is ignored; None if no line."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return None
    with handle:
        size = handle.seek(0, os.SEEK_END)
        start = size
        while start > 0:
            start = max(0, start - chunk)
            handle.seek(start)
            data = handle.read(size - start)
            whole = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]
            for line in reversed(whole if start == 0 else whole[1:]):  # whole[0] may be cut
                if line.strip():
                    return line
        return None


_TEXTS: dict[Path, tuple[tuple[int, int, int, int], str]] = {}
RACY_NS = 2_000_000_000  # a file changed this recently may change again unseen by stat


def read_text_cached(path: Path) -> str | None:
    """A UTF-8 file's text, or None when it is missing or not a regular file. While the
    file's stat signature is unchanged the *same* string object is returned, so callers
    may memoise work on it by identity (INDEX.md is megabytes at 100,000 notes). Files
    changed within the last 2 s are re-read every time. UnicodeDecodeError propagates."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat_module.S_ISREG(st.st_mode):
        return None
    signature = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
    hit = _TEXTS.get(path)
    if hit is not None and hit[0] == signature:
        return hit[1]
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    if max(st.st_mtime_ns, st.st_ctime_ns) < time.time_ns() - RACY_NS:
        if len(_TEXTS) > 512:
            _TEXTS.clear()
        _TEXTS[path] = (signature, text)
    return text
