"""Secrets and file modes (spec/12 "Keys", spec/13 "Secrets"): no API key ever reaches a
file of the vault, wherever it shows up (errors, answers, captures, the work item); files
keep their permission bits when rewritten, and new files get the process umask.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest

from atomic_vault import AtomicAgent, keys, runlog
from atomic_vault.errors import ConfigError, ModelError
from atomic_vault.models import ModelResponse
from atomic_vault.vault import AgentFolder
from provider_stubs import anthropic_error, anthropic_message, openai_error

AGENT = "a"
KEYS = {  # where each key lives; each is long enough for redact (8 characters or more)
    "anthropic-env": "sk-ant-api03-ENVKEY-0123456789abcdef",
    "openai-env": "sk-proj-OPENAIKEY-0123456789abcdef",
    "custom-env": "corp-CUSTOMKEY-0123456789abcdef",
    "keys-file": "sk-ant-FILEKEY-0123456789abcdef",
}
CUSTOM_ENV = "CORP_LLM_CRED"  # a name no heuristic recognises: only model.md's api_key_env says it is a key


@pytest.fixture
def vault(tmp_path, monkeypatch):
    """A vault with agent 'a', every kind of key configured, model.md naming the custom
    variable, and retries without waiting."""
    root = tmp_path / "vault"
    agent = root / AGENT
    (agent / "persona").mkdir(parents=True)
    (agent / "persona" / "IDENTITY.md").write_text("A test agent.\n", encoding="utf-8")
    model_md(root, f"providers: {{corp: {{api_key_env: {CUSTOM_ENV}}}}}")
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEYS["anthropic-env"])
    monkeypatch.setenv("OPENAI_API_KEY", KEYS["openai-env"])
    monkeypatch.setenv(CUSTOM_ENV, KEYS["custom-env"])
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"anthropic": KEYS["keys-file"]}), encoding="utf-8")
    keys_file.chmod(0o600)
    monkeypatch.setenv("ATOMIC_VAULT_KEYS_FILE", str(keys_file))
    return root


def model_md(root: Path, extra: str = "") -> None:
    text = "retries: {attempts: 2, base_delay_s: 0, max_delay_s: 0}\n" + extra
    (root / AGENT / "model.md").write_text(f"# Model\n\n```yaml\n{text}\n```\n", encoding="utf-8")


def folder(root: Path) -> AgentFolder:
    return AgentFolder(root, AGENT)


def assert_no_key_anywhere(root: Path, *texts: str) -> None:
    """No key in any byte of any file below the vault (derived state and databases
    included), nor in the given texts (results, error messages)."""
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            raw = path.read_bytes()
            for where, key in KEYS.items():
                assert key.encode() not in raw, f"the {where} key is in {path}"
    for text in texts:
        for where, key in KEYS.items():
            assert key not in text, f"the {where} key is in {text!r}"


class Leaky:
    """A model whose first failure is a ModelError and second a plain exception, both
    carrying the key in message and fix; or, with ``answer``, an answer that repeats it."""

    name = "leaky"

    def __init__(self, key: str, answer: str | None = None, tools: tuple = ()):
        self.key, self.answer, self.tools, self.calls = key, answer, tools, 0

    def complete(self, request):
        self.calls += 1
        if self.answer is not None:
            return ModelResponse(text=self.answer, input_tokens=10, output_tokens=5, cost_usd=0.0,
                                 model="leaky", tool_captures=self.tools)
        if self.calls == 1:
            raise ModelError(f"HTTP 401: invalid x-api-key {self.key}", retryable=True, status=401,
                             fix=f"check that {self.key} is still active")
        raise RuntimeError(f"connection to https://user:{self.key}@api.example failed")


@pytest.mark.parametrize("where", sorted(KEYS))
def test_model_errors_carrying_the_key_are_redacted_everywhere(vault, where):
    key = KEYS[where]
    with pytest.raises(ModelError) as caught:
        AtomicAgent(AGENT, root=vault, model=Leaky(key)).call(f"do it (key {key})")
    record = list(runlog.records(folder(vault)))[-1][2]
    assert record["status"] == "error" and len(record["attempts"]) == 2
    assert "***" in record["error"] and "***" in record["attempts"][0]["error"]
    assert_no_key_anywhere(vault, str(caught.value), caught.value.fix or "")


@pytest.mark.parametrize("where", sorted(KEYS))
def test_a_key_pasted_into_the_work_item_and_repeated_by_the_model_is_redacted(vault, where):
    """Decision (spec/12): a key a user pastes into a work item is redacted from the
    journal and the log; the model still receives the work item as given."""
    key = KEYS[where]
    capture = {"type": "reference", "name": f"Key {key}", "description": f"the key {key}",
               "confidence": "high", "sources": [f"work item {key}"], "body": f"The key is {key}."}
    answer = f"You gave me {key}.\n```atomic_capture\n{json.dumps(capture)}\n```\n"
    tool = json.dumps({**capture, "name": "Tool note", "tags": [key[:60]]})
    model = Leaky(key, answer=answer, tools=(tool,))
    result = AtomicAgent(AGENT, root=vault, model=model).call(f"Remember my key: {key}\nthanks")
    assert [c["status"] for c in result.captures] == ["written", "written"]
    journal = folder(vault).journal_file(date.today()).read_text(encoding="utf-8")
    assert "Remember my key: ***" in journal
    assert_no_key_anywhere(vault, result.text, json.dumps(result.captures))


def test_keys_file_keys_are_redacted_even_when_no_provider_read_them(vault):
    """Regression: redact only knew keys read in this process, so a key from the keys
    file pasted into a work item of an offline run was journaled."""
    key = KEYS["keys-file"]
    assert keys.redact(f"x {key} y") == "x *** y"
    AtomicAgent(AGENT, root=vault).call(f"my key is {key}")
    assert_no_key_anywhere(vault)


def test_a_custom_key_variable_is_redacted_once_model_md_names_it(vault, monkeypatch):
    """Regression: a variable named only in model.md's api_key_env was unknown to redact
    unless its provider had been built in this process."""
    monkeypatch.setenv("CORP_OTHER_CRED", "corp-OTHERKEY-fedcba9876543210")  # no 16 characters of a known key
    assert "corp-OTHERKEY" in keys.redact("corp-OTHERKEY-fedcba9876543210")  # not named anywhere yet
    model_md(vault, "providers: {corp2: {api_key_env: CORP_OTHER_CRED}}")
    AtomicAgent(AGENT, root=vault).call("first run reads model.md")
    assert keys.redact("x corp-OTHERKEY-fedcba9876543210") == "x ***"


def test_model_md_rejects_an_api_key_env_that_is_not_a_variable_name(vault):
    model_md(vault, "providers: {corp: {api_key_env: 'sk-live key'}}")
    with pytest.raises(ConfigError) as caught:
        AtomicAgent(AGENT, root=vault).call("x")
    assert caught.value.field == "providers.corp.api_key_env" and caught.value.fix


def test_a_keys_file_that_is_not_a_regular_file_is_refused_not_waited_on(vault, tmp_path, monkeypatch):
    """Regression: a FIFO as the keys file blocked find_key (and redact) forever."""
    fifo = tmp_path / "keys.fifo"
    os.mkfifo(fifo)
    monkeypatch.setenv("ATOMIC_VAULT_KEYS_FILE", str(fifo))
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    assert keys.redact("nothing to hide") == "nothing to hide"
    with pytest.raises(ConfigError) as caught:
        keys.find_key("anthropic", ("ANTHROPIC_API_KEY",))
    assert caught.value.path == str(fifo) and caught.value.message == "is not a regular file"


@pytest.mark.parametrize("name, hidden", [("MY_SERVICE_KEY", True), ("DB_PASSWORD", True), ("GITHUB_TOKEN", True),
                                          ("X_APIKEY", True), ("AWS_SECRET", True), ("MY_NOTES_DIR", False)])
def test_variables_named_like_secrets_are_redacted(monkeypatch, name, hidden):
    monkeypatch.setenv(name, "value-0123456789")
    assert (keys.redact("see value-0123456789") == "see ***") is hidden


def test_redact_all_walks_records(vault):
    key = KEYS["anthropic-env"]
    record = {"trigger": f"t {key}", "warnings": [f"w {key}"], "n": 1, key: {"deep": (key,)}}
    assert keys.redact_all(record) == {"trigger": "t ***", "warnings": ["w ***"], "n": 1,
                                       "***": {"deep": ("***",)}}


def test_real_providers_echoing_the_key_in_errors_and_answers(vault, stub):
    """Through the SDKs and the stub servers: a 401 that quotes the key, then an answer
    that repeats it, for Anthropic (environment key) and an OpenAI-compatible server whose
    key comes from the custom variable."""
    (vault / AGENT / "model.md").write_text(f"""```yaml
model: anthropic:claude-haiku-4-5
fallback: openai:gpt-4o-mini
retries: {{attempts: 1}}
providers:
  anthropic: {{base_url: "{stub.url}", timeout_s: 5}}
  openai: {{base_url: "{stub.url}/v1", api_key_env: {CUSTOM_ENV}, timeout_s: 5}}
```
""", encoding="utf-8")
    a_key, c_key = KEYS["anthropic-env"], KEYS["custom-env"]
    stub.reply(body={"input_tokens": 500})  # count_tokens
    stub.reply(status=401, body=anthropic_error("authentication_error", f"invalid x-api-key: {a_key}"))
    stub.reply(status=401, body=openai_error(f"Incorrect API key provided: {c_key}", "invalid_request_error"))
    with pytest.raises(ModelError) as caught:
        AtomicAgent(AGENT, root=vault).call("first")
    sent = [" ".join(r.headers.values()) for r in stub.requests]
    assert any(a_key in h for h in sent) and any(c_key in h for h in sent)  # the keys were really used
    stub.reply(body={"input_tokens": 500})
    stub.reply(body=anthropic_message(f"Your key {a_key} works; the other is {c_key}."))
    result = AtomicAgent(AGENT, root=vault).call(f"second, with {c_key}")
    assert result.text == "Your key *** works; the other is ***."
    assert_no_key_anywhere(vault, str(caught.value), result.text)


def test_a_sqlite_log_holds_no_key_either(vault):
    key = KEYS["openai-env"]
    with pytest.raises(ModelError):
        AtomicAgent(AGENT, root=vault, model=Leaky(key), log="sqlite").call(f"key {key}")
    assert (folder(vault).log / "log.sqlite3").is_file()
    assert_no_key_anywhere(vault)


# ---- keys that reach the trigger, warnings and escaped captures ----------------------------

def test_a_key_in_the_trigger_is_redacted(vault):
    key = KEYS["openai-env"]
    AtomicAgent(AGENT, root=vault, trigger=f"hook-{key}").call("x")
    assert_no_key_anywhere(vault)


def test_a_key_pasted_as_the_model_name_is_redacted_from_the_error_and_the_record(vault):
    key = KEYS["anthropic-env"]
    (vault / AGENT / "model.md").write_text(f"```yaml\nmodel: {key}\n```\n", encoding="utf-8")
    with pytest.raises(ModelError) as caught:  # no such provider: the run fails on the record
        AtomicAgent(AGENT, root=vault).call("x")
    (vault / AGENT / "model.md").unlink()  # the operator's own file: only what the run wrote counts
    assert_no_key_anywhere(vault, str(caught.value))


def test_a_key_hidden_by_json_escapes_in_a_capture_is_redacted(vault):
    key = KEYS["openai-env"]
    escaped = key.replace("-", "\\u002d")
    raw = ('{"type": "reference", "name": "Escaped", "description": "d", "confidence": "low", '
           f'"sources": [], "body": "the key is {escaped}"}}')
    AtomicAgent(AGENT, root=vault, model=Leaky(key, answer=f"```atomic_capture\n{raw}\n```")).call("x")
    assert_no_key_anywhere(vault)


# ---- fragments of keys ----------------------------------------------------------------------

def fragments(key: str) -> dict[str, str]:
    """Three pieces of ``key``, none of them the whole key, each long enough to be hidden."""
    assert len(key) >= keys.FRAGMENT_MIN + 8
    return {"prefix": key[:-6], "suffix": key[5:], "middle": key[3:3 + keys.FRAGMENT_MIN]}


@pytest.mark.parametrize("where", ["anthropic-env", "keys-file"])
@pytest.mark.parametrize("piece", ["prefix", "suffix", "middle"])
def test_a_fragment_of_a_key_is_redacted_from_note_index_journal_and_log(vault, where, piece):
    """Regression: only whole keys were hidden, so the first 44 of a key's 56 characters
    reached the note, INDEX, the journal and the log."""
    fragment = fragments(KEYS[where])[piece]
    capture = {"type": "reference", "name": "Pasted credential", "description": f"starts {fragment}",
               "confidence": "high", "sources": [f"chat {fragment}"], "body": f"It read {fragment}."}
    answer = f"Noted {fragment}.\n```atomic_capture\n{json.dumps(capture)}\n```\n"
    result = AtomicAgent(AGENT, root=vault, model=Leaky("unused", answer=answer)).call(f"keep {fragment} safe")
    assert [c["status"] for c in result.captures] == ["written"]
    agent = folder(vault)
    note = (agent.memory / result.captures[0]["file"]).read_text(encoding="utf-8")
    assert "It read ***." in note and "chat ***" in note
    assert "starts ***" in agent.index.read_text(encoding="utf-8")
    assert "keep *** safe" in agent.journal_file(date.today()).read_text(encoding="utf-8")
    assert list(runlog.records(agent))[-1][2]["summary"].startswith("Noted ***.")
    for path in vault.rglob("*"):
        if path.is_file():
            assert fragment.encode() not in path.read_bytes(), f"the {piece} of the {where} key is in {path}"


def test_fragments_shorter_than_the_minimum_and_ordinary_words_are_kept(vault):
    key = KEYS["anthropic-env"]
    short = key[:keys.FRAGMENT_MIN - 1]
    assert keys.redact(f"a {key[:keys.FRAGMENT_MIN]} b") == "a *** b"
    assert keys.redact(f"a {short} b {key[-keys.FRAGMENT_MIN + 1:]}") == f"a {short} b {key[-keys.FRAGMENT_MIN + 1:]}"
    prose = ("Internationalization and responsibilities of the counterrevolutionaries: "
             "sk-ant-api03 keys, 0123456789 digits, abcdef letters, ENVKEY and FILEKEY.")
    assert keys.redact(prose) == prose
    assert keys.redact(f"{key}{key[:20]}") == "***"  # a key run on into a fragment: one span


# ---- file modes -----------------------------------------------------------------------------

def capture(name: str, body: str = "Body.", source: str = "s") -> str:
    data = {"type": "project", "name": name, "description": "d", "confidence": "high",
            "sources": [source], "body": body}
    return f"```atomic_capture\n{json.dumps(data)}\n```\n"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("update", ["refresh", "merge", "supersede"])
def test_a_note_keeps_its_mode_when_a_capture_rewrites_it(vault, update):
    memory = folder(vault).memory
    AtomicAgent(AGENT, root=vault, model=Leaky("", answer=capture("Private"))).call("x")
    note = memory / "project_private.md"
    note.chmod(0o600)
    folder(vault).index.chmod(0o640)
    folder(vault).head.chmod(0o600)
    answer = {"refresh": capture("Private", source="t"), "merge": capture("Other", "More.").replace(
        '"body"', '"merge_into": "project_private.md", "body"'),
              "supersede": capture("Private", "A new body.")}[update]
    before = note.read_bytes()
    result = AtomicAgent(AGENT, root=vault, model=Leaky("", answer=answer + capture("Fresh"))).call("x")
    assert result.captures[0]["status"] in ("refreshed", "merged", "written")
    assert note.read_bytes() != before  # really rewritten
    assert mode(note) == 0o600
    assert mode(folder(vault).index) == 0o640 and mode(folder(vault).head) == 0o600


def test_journal_and_log_day_files_keep_their_mode_when_appended(vault):
    AtomicAgent(AGENT, root=vault, model=Leaky("", answer="ok")).call("x")
    journal, log = folder(vault).journal_file(date.today()), folder(vault).log_file(date.today())
    journal.chmod(0o600)
    log.chmod(0o640)
    AtomicAgent(AGENT, root=vault, model=Leaky("", answer="ok")).call("y")
    assert (mode(journal), mode(log)) == (0o600, 0o640)


UMASK_RUN = textwrap.dedent("""
    import os, sys
    os.umask(int(sys.argv[2], 8))
    from atomic_vault import AtomicAgent
    result = AtomicAgent("a", root=sys.argv[1], model="offline").call("Plan.\\nremember: project: umask check")
    print(result.captures[0]["file"])
""")


@pytest.mark.parametrize("umask", [0o077, 0o022])
def test_new_files_and_folders_honour_the_umask(tmp_path, umask):
    root = tmp_path / "vault"
    (root / AGENT / "persona").mkdir(parents=True)
    (root / AGENT / "persona" / "IDENTITY.md").write_text("A test agent.\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMIC_VAULT_")}
    out = subprocess.run([sys.executable, "-c", UMASK_RUN, str(root), f"{umask:o}"], capture_output=True,
                         text=True, env=env, cwd=Path(__file__).resolve().parent.parent, check=True)
    f = folder(root)
    today = date.today()
    files = [f.memory / out.stdout.strip(), f.index, f.journal_file(today), f.log_file(today), f.head]
    folders = [f.memory, f.journal, f.journal_file(today).parent, f.log, f.log_file(today).parent, f.state]
    assert {p.name: mode(p) for p in files} == {p.name: 0o666 & ~umask for p in files}
    assert {p.name: mode(p) for p in folders} == {p.name: 0o777 & ~umask for p in folders}
