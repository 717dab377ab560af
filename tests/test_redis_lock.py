"""Redis lock specifics, against the real server: leases that expire while held, fencing
of a stale holder's write-back, release only by the owner, unreachable servers."""

import threading
import time

import pytest

from atomic_vault import AtomicAgent
from atomic_vault.backends import open_backend
from atomic_vault.backends.files import FileJournal, FileLog
from atomic_vault.backends.redis_lock import RedisLock
from atomic_vault.errors import BackendError, LockLost, LockTimeout
from atomic_vault.testing import make_agent

from conftest import ScriptedModel


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


class SlowJournal(FileJournal):
    """Stalls the first write-back long enough for its lease to expire."""

    def __init__(self):
        super().__init__()
        self.entered = threading.Event()
        self.stall = True

    def append(self, folder, when, section):
        if self.stall:
            self.stall = False
            self.entered.set()
            time.sleep(1.0)
        super().append(folder, when, section)


def test_a_stale_holders_write_back_is_fenced_off(vault, redis_url):
    lock = RedisLock(redis_url + "&lease=0.3", root=vault)
    slow = SlowJournal()
    stale = AtomicAgent("atlas", root=vault, model=ScriptedModel("first"), lock=lock, journal=slow)
    outcome = {}

    def run_stale():
        try:
            outcome["result"] = stale.call("the slow one")
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=run_stale)
    thread.start()
    assert slow.entered.wait(30)
    time.sleep(0.5)  # the stale run's lease has expired
    fresh = AtomicAgent("atlas", root=vault, model=ScriptedModel("second"), lock=lock).call("the quick one")
    thread.join(30)
    assert isinstance(outcome.get("error"), LockLost), outcome
    log = FileLog()
    records = list(log.records(stale.folder))
    assert [r["summary"] for r in records] == ["second"] and records[0]["seq"] == fresh.seq
    assert log.head(stale.folder)["fence"][0] == "redis"
    assert log.verify(stale.folder).ok


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
