"""The evidence bundle of one run (``export`` / ``verify-bundle``, spec/07 "Evidence
bundle"): the record, its snapshots, the chain from it to HEAD and HEAD, checkable with
no vault. Reading never extracts: members are read into memory by exact name, so no
member can write anywhere, and any name outside the format is reported as added."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import snapshots
from .errors import LogError
from .fileio import atomic_write, loads_strict, write_new_files
from .protocols import LogQuery
from .runlog import _parse_anchor, record_hash

FORMAT = "atomic-vault-bundle/1"
FIXED = ("README.md", "MANIFEST.json", "record.json", "chain.jsonl", "HEAD.json")
SNAPSHOT_NAME = re.compile(r"snapshots/([0-9a-f]{64})\.txt\Z")
MAX_MEMBER = 256 * 1024 * 1024
MAX_TOTAL = 4 * 1024 ** 3  # a compressed bomb is refused, not read into memory
COMPRESSION = 1  # gzip level: an old run's chain is every record since; level 6 took 4x as long for 10% less

README = """# Evidence bundle of one atomic-vault run

Format {format}. Files:

- `record.json`: the run's log record, as hashed (canonical JSON: sorted keys, no spaces).
- `snapshots/<sha256>.txt`: each text the record names (layers as sent, work item,
  answer, errors, raw captures), named by the SHA-256 of its UTF-8 bytes.
- `chain.jsonl`: every record of the agent's log from this one to HEAD, one per line;
  each one's `prev` is the `hash` of the line before, each `hash` is the SHA-256 of the
  record's canonical JSON without `hash`.
- `HEAD.json`: the log's HEAD (`seq`, `hash`) when the bundle was made.
- `MANIFEST.json`: the SHA-256 of every other file, and the snapshots that were already
  pruned (a `prune` record in `chain.jsonl` removed them).

Check it with `atomic-vault verify-bundle FILE [--anchor SEQ:HASH]` (no vault needed):
the record hashes to its hash, the chain links it to HEAD, each snapshot matches its
name, and no file is altered, missing or added. An anchor (a HEAD kept elsewhere) proves
the chain was not rewritten as a whole.
"""


def _canonical_line(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_to_head(log: Any, folder: Any, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The records from ``record`` to the end, read from its day on (a recent run costs a
    few days of records; the whole log is read only if the clock went back meanwhile)."""
    seq = record.get("seq")
    since = str(record.get("ts", ""))[:10] or None
    if callable(getattr(log, "records_from", None)):  # a database log reads by its seq index
        found = log.records_from(folder, seq)
    else:
        found = [r for r in log.query(folder, LogQuery(since=since)) if isinstance(r.get("seq"), int) and r["seq"] >= seq]
    if not found or found[0].get("hash") != record.get("hash") or any(
            b["seq"] != a["seq"] + 1 for a, b in zip(found, found[1:])):
        found = [r for r in log.records(folder) if isinstance(r.get("seq"), int) and r["seq"] >= seq]
    return found


def chain_bytes(log: Any, folder: Any, record: dict[str, Any]) -> bytes:
    """chain.jsonl: the stored lines from ``record`` to HEAD as the store holds them
    (``chain_text``: every built-in store keeps each record's canonical JSON, so nothing is
    parsed again), else each record of ``chain_to_head`` serialised."""
    text = log.chain_text(folder, record) if callable(getattr(log, "chain_text", None)) else None
    if text is None:
        text = "".join(_canonical_line(r) + "\n" for r in chain_to_head(log, folder, record))
    return text.encode("utf-8") if isinstance(text, str) else text


def build(log: Any, folder: Any, record: dict[str, Any]) -> tuple[dict[str, bytes], dict[str, Any]]:
    """(file name -> bytes, the manifest) of the bundle; refused when a snapshot is
    altered or missing without a prune record (run `verify`): evidence is never forged."""
    from .evidence import load_texts

    loaded = load_texts(log, folder, record)
    if loaded.tampered or loaded.missing:
        sha, what = (loaded.tampered[0], "does not match its hash (tampering)") if loaded.tampered else \
            (loaded.missing[0], "is missing and no prune record removed it")
        raise LogError(f"snapshot {sha} of run {record.get('run_id')} {what}; no bundle was written",
                       path=folder.log, field="snapshot",
                       fix=f"`atomic-vault verify {folder.name}` names the damage; restore the log from a backup")
    head = log.head(folder) or {}
    files: dict[str, bytes] = {
        "README.md": README.format(format=FORMAT).encode("utf-8"),
        "record.json": (_canonical_line(record) + "\n").encode("utf-8"),
        "chain.jsonl": chain_bytes(log, folder, record),
        "HEAD.json": (json.dumps({"agent": folder.name, "seq": head.get("seq"), "hash": head.get("hash")},
                                 sort_keys=True) + "\n").encode("utf-8"),
    }
    for sha, text in loaded.texts.items():
        files[f"snapshots/{sha}.txt"] = text.encode("utf-8")
    manifest = {"format": FORMAT, "agent": folder.name, "run_id": record.get("run_id"),
                "seq": record.get("seq"), "files": {name: _sha(raw) for name, raw in sorted(files.items())},
                "pruned": {sha: seq for sha, seq in sorted(loaded.pruned.items())}}
    files["MANIFEST.json"] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8")
    return files, manifest


def write(files: dict[str, bytes], out: Path) -> str:
    """A .tar.gz (or .tgz) file, a .tar file (not compressed: an old run's chain is most of
    the log, and gzip is most of the time its export takes), else a new folder; an
    existing target is refused."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise LogError("already exists; nothing was written", path=out, field="-o",
                       fix="name a new file (FILE.tar.gz) or a new folder")
    if out.name.endswith((".tar.gz", ".tgz", ".tar")):
        buffer = io.BytesIO()
        plain = out.name.endswith(".tar")
        with tarfile.open(fileobj=buffer, mode="w" if plain else "w:gz", format=tarfile.PAX_FORMAT,
                          **({} if plain else {"compresslevel": COMPRESSION})) as tar:
            for name, raw in sorted(files.items()):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(raw), 0o644, 0
                tar.addfile(info, io.BytesIO(raw))
        atomic_write(out, buffer.getvalue())
        return "tar" if plain else "tar.gz"
    temp = out.parent / f".{out.name}.{os.getpid()}.partial"
    write_new_files({temp / name: raw for name, raw in files.items()})
    os.rename(temp, out)  # the folder appears whole or not at all
    return "folder"


@dataclass
class Checked:
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    record: dict[str, Any] | None = None
    head: dict[str, Any] | None = None

    def bad(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        record = self.record or {}
        return {"ok": self.ok, "problems": self.problems, "notes": self.notes,
                "run_id": record.get("run_id"), "seq": record.get("seq"), "agent": record.get("agent"),
                "head": self.head}


def read_members(path: Path) -> tuple[dict[str, bytes], list[str]]:
    """(name -> bytes, problems) of a bundle file or folder, without extracting anything:
    a link, a device, an absolute or climbing name is a problem, never followed."""
    path = Path(path)
    members: dict[str, bytes] = {}
    problems: list[str] = []
    if path.is_dir():
        for directory, dirs, names in os.walk(path, followlinks=False):
            for name in sorted(dirs):
                if (Path(directory) / name).is_symlink():
                    problems.append(f"added: {(Path(directory) / name).relative_to(path).as_posix()} (a link)")
            for name in sorted(names):
                full = Path(directory) / name
                rel = full.relative_to(path).as_posix()
                if full.is_symlink() or not full.is_file():
                    problems.append(f"added: {rel} (not a regular file)")
                elif full.stat().st_size > MAX_MEMBER:
                    problems.append(f"added: {rel} (larger than any bundle file)")
                else:
                    members[rel] = full.read_bytes()
        return members, problems
    try:
        tar = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise LogError(f"is not a bundle (not a folder nor a readable tar file: {exc})", path=path,
                       fix="pass the FILE.tar.gz or folder `atomic-vault export` wrote") from None
    total = 0
    with tar:
        try:
            for info in tar:
                name = info.name
                if info.isdir() and name.rstrip("/") == "snapshots":
                    continue
                if not info.isfile() or name.startswith("/") or ".." in name.split("/") or "\\" in name:
                    problems.append(f"added: {name} (not a plain file of the bundle; not read)")
                    continue
                if info.size > MAX_MEMBER:
                    problems.append(f"added: {name} (larger than any bundle file)")
                    continue
                if name in members:
                    problems.append(f"added: {name} (a second copy)")
                    continue
                total += info.size
                if total > MAX_TOTAL:
                    problems.append(f"added: {name} and what follows (more than any bundle holds; not read)")
                    break
                members[name] = tar.extractfile(info).read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            problems.append(f"altered: the archive is damaged ({exc})")
    return members, problems


def verify(path: Path, anchor: str | None = None) -> Checked:
    """Check a bundle standalone and name every altered, missing or added file."""
    want_anchor = _parse_anchor(anchor) if anchor is not None else None
    members, problems = read_members(path)
    out = Checked()
    for problem in problems:
        out.bad(problem)
    if "MANIFEST.json" not in members:
        out.bad("missing: MANIFEST.json (nothing can be checked against it)")
    manifest = _json(members.get("MANIFEST.json"), "MANIFEST.json", out)
    listed = manifest.get("files") if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else {}
    if manifest is not None and not listed:
        out.bad("altered: MANIFEST.json (it lists no files)")
    for name in sorted(set(members) - set(listed) - {"MANIFEST.json"}):
        out.bad(f"added: {name}")
    for name in sorted(listed):
        if name not in members:
            out.bad(f"missing: {name}")
        elif _sha(members[name]) != listed[name]:
            out.bad(f"altered: {name} (its SHA-256 is not the manifest's)")
    for name in FIXED:
        if name not in members and name not in listed and name != "MANIFEST.json":
            out.bad(f"missing: {name}")
    record = _json(members.get("record.json"), "record.json", out)
    if not isinstance(record, dict):
        return out
    out.record = record
    if record.get("hash") != record_hash(record):
        out.bad("altered: record.json (the record does not match its hash)")
    chain = _chain(members.get("chain.jsonl"), out)
    head = _json(members.get("HEAD.json"), "HEAD.json", out)
    out.head = head if isinstance(head, dict) else None
    if chain:
        if chain[0].get("hash") != record.get("hash") or chain[0] != record:
            out.bad("altered: chain.jsonl (its first record is not record.json)")
        if out.head is not None and (chain[-1].get("seq"), chain[-1].get("hash")) != (
                out.head.get("seq"), out.head.get("hash")):
            out.bad("altered: chain.jsonl or HEAD.json (the chain does not end at HEAD)")
        if want_anchor is not None:
            at = {r.get("seq"): r.get("hash") for r in chain}
            if want_anchor[0] not in at:
                out.bad(f"the anchor seq {want_anchor[0]} is outside this bundle's chain "
                        f"(seq {chain[0].get('seq')} to {chain[-1].get('seq')}): it cannot be checked here")
            elif at[want_anchor[0]] != want_anchor[1]:
                out.bad(f"the anchor differs from record seq {want_anchor[0]} of the chain: the log was rewritten")
    pruned = snapshots.pruned_by(chain or [])
    for sha in snapshots.named(record):
        name = f"snapshots/{sha}.txt"
        if name in members:
            if hashlib.sha256(members[name]).hexdigest() != sha:
                out.bad(f"altered: {name} (its text does not match its name: tampering)")
        elif sha in pruned:
            out.notes.append(f"{name} was pruned (prune record seq {pruned[sha]} in the chain)")
        elif name not in listed:
            out.bad(f"missing: {name} (the record names it and no prune record removed it)")
    for name in members:
        match = SNAPSHOT_NAME.match(name)
        if name.startswith("snapshots/") and (not match or match.group(1) not in snapshots.named(record)):
            out.bad(f"added: {name} (the record names no such snapshot)")
    out.problems = list(dict.fromkeys(out.problems))
    return out


def _json(raw: bytes | None, name: str, out: Checked) -> Any:
    if raw is None:
        return None
    try:
        return loads_strict(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        out.bad(f"altered: {name} (not valid JSON)")
        return None


def _chain(raw: bytes | None, out: Checked) -> list[dict[str, Any]]:
    if raw is None:
        return []
    chain: list[dict[str, Any]] = []
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        try:
            record = loads_strict(line)
        except ValueError:
            out.bad(f"altered: chain.jsonl line {number} (not a JSON record)")
            return chain
        if not isinstance(record, dict) or record.get("hash") != record_hash(record):
            out.bad(f"altered: chain.jsonl line {number} (the record does not match its hash)")
            return chain
        if chain and (record.get("seq") != chain[-1].get("seq", 0) + 1 or record.get("prev") != chain[-1].get("hash")
                      or record.get("agent") != chain[0].get("agent")):
            out.bad(f"altered: chain.jsonl line {number} (it does not continue the record before)")
            return chain
        chain.append(record)
    return chain


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
