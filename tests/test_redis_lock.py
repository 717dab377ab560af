"""Redis lock specifics, against the real server: leases that expire while held, fencing
of a stale holder's write-back, release only by the owner, unreachable servers."""

import threading
import time

import pytest

from atomic_vault import AtomicAgent
from atomic_vault.backends import open_backend
from atomic_vault.backends.files import FileLog, FileMemory
from atomic_vault.backends.redis_lock import RedisLock
from atomic_vault.errors import BackendError, LockLost, LockTimeout
from atomic_vault.testing import make_agent

from conftest import ScriptedModel, capture_block


def test_an_expired_lease_is_lost_and_never_deletes_the_new_owners_lock(redis_url, tmp_path):
    agent = make_agent(tmp_path)
    lock = RedisLock(redis_url + "&lease=0.3", root=tmp_path)
    first = lock.hold(agent, 1)
    lease = first.__enter__()
    time.sleep(0.5)
    with lock.hold(agent, 1) as second:
        assert second.token > lease.token
        with pytest.raises(LockLost):
            lease.check()
        first.__exit__(None, None, None)  # the stale holder leaves: the new lock stays
        key, _ = lock.keys(agent)
        assert lock._redis().get(key).decode().startswith(second.value.split()[0])
        second.check()


def test_check_keeps_a_working_holder_alive(redis_url, tmp_path):
    agent = make_agent(tmp_path)
    lock = RedisLock(redis_url + "&lease=0.4", root=tmp_path)
    with lock.hold(agent, 1) as lease:
        for _ in range(4):
            time.sleep(0.2)
            lease.check()  # renews: never expires while its holder works
        with pytest.raises(LockTimeout):
            with lock.hold(agent, 0):
                pass


class SlowLog(FileLog):
    """Stalls the first append, before it is written, long enough for the lease to expire."""

    def __init__(self):
        super().__init__()
        self.entered = threading.Event()
        self.stall = True

    def append(self, folder, record, fence=None):
        if self.stall:
            self.stall = False
            self.entered.set()
            time.sleep(1.0)
        return super().append(folder, record, fence)


class SlowMemory(FileMemory):
    """Stalls after writing the first note, long enough for the lease to expire."""

    def __init__(self):
        super().__init__()
        self.entered = threading.Event()
        self.stall = True

    def put(self, folder, file, text, **kwargs):
        super().put(folder, file, text, **kwargs)
        if self.stall:
            self.stall = False
            self.entered.set()
            time.sleep(1.0)


def stale_and_fresh(vault, redis_url, answer, **slow):
    """A stale run stalled by ``slow`` while a fresh run takes the expired lock and logs."""
    lock = RedisLock(redis_url + "&lease=0.3", root=vault)
    stale = AtomicAgent("atlas", root=vault, model=ScriptedModel(answer), lock=lock, **slow)
    outcome = {}

    def run_stale():
        try:
            outcome["result"] = stale.call("the slow one")
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=run_stale)
    thread.start()
    assert next(iter(slow.values())).entered.wait(30)
    time.sleep(0.5)  # the stale run's lease has expired
    fresh = AtomicAgent("atlas", root=vault, model=ScriptedModel("second"), lock=lock).call("the quick one")
    thread.join(30)
    assert isinstance(outcome.get("error"), LockLost), outcome
    return stale.folder, fresh


def nothing_of_the_stale_run(folder, files):
    assert not any((folder.memory / file).exists() for file in files)
    assert not any(file in folder.index.read_text() for file in files)
    journal = "".join(p.read_text() for p in folder.journal.glob("*/*.md"))
    assert "the slow one" not in journal and "the quick one" in journal
    log = FileLog()
    records = list(log.records(folder))
    assert [r["summary"] for r in records] == ["second"]
    assert log.head(folder)["fence"][0] == "redis" and log.verify(folder).ok


def test_a_stale_holder_refused_at_the_log_leaves_no_note_no_index_line_no_journal(vault, redis_url):
    answer = "first\n" + capture_block(name="stale claim", body="Written by a run that lost its lock.")
    folder, fresh = stale_and_fresh(vault, redis_url, answer, log=SlowLog())
    assert fresh.seq == 1
    nothing_of_the_stale_run(folder, ["project_stale_claim.md"])


def test_a_stale_holder_refused_between_two_notes_takes_back_the_first(vault, redis_url):
    answer = "first\n" + "\n".join(capture_block(name=f"stale claim {n}", body=f"Claim {n}.")
                                    for n in (1, 2))
    folder, fresh = stale_and_fresh(vault, redis_url, answer, memory=SlowMemory())
    nothing_of_the_stale_run(folder, ["project_stale_claim_1.md", "project_stale_claim_2.md"])


def test_an_unreachable_redis_is_a_clear_error(tmp_path):
    agent = make_agent(tmp_path)
    lock = RedisLock("redis://:hunter2@127.0.0.1:1/0", root=tmp_path)
    with pytest.raises(BackendError) as caught:
        with lock.hold(agent, 1):
            pass
    assert "hunter2" not in str(caught.value) and ":***@127.0.0.1:1" in caught.value.message
    with pytest.raises(BackendError):
        RedisLock(None)


def test_selected_by_environment(redis_url, tmp_path, monkeypatch):
    monkeypatch.setenv("ATOMIC_VAULT_LOCK_BACKEND", "redis")
    monkeypatch.setenv("ATOMIC_VAULT_LOCK_URL", redis_url)
    lock = open_backend("lock", None, tmp_path)
    assert isinstance(lock, RedisLock) and lock.prefix == redis_url.split("prefix=")[1]
    monkeypatch.setenv("ATOMIC_VAULT_LOCK_BACKEND", "zookeeper")
    with pytest.raises(BackendError) as caught:
        open_backend("lock", None, tmp_path)
    assert "files" in caught.value.fix and "redis" in caught.value.fix


def test_hosts_sharing_a_vault_agree_on_the_key_when_named(redis_url, tmp_path):
    a = RedisLock(redis_url + "&vault=team", root=tmp_path / "mnt" / "a")
    b = RedisLock(redis_url + "&vault=team", root=tmp_path / "other" / "b")
    agent_a, agent_b = make_agent(tmp_path / "mnt" / "a"), make_agent(tmp_path / "other" / "b")
    assert a.keys(agent_a) == b.keys(agent_b)
    with a.hold(agent_a, 1):
        with pytest.raises(LockTimeout):
            with b.hold(agent_b, 0):
                pass
