"""Notes (spec/03): frontmatter schema, file names, order-keeping edits; INDEX.md updates."""

from datetime import date

import pytest

from atomic_vault import index
from conftest import SAMPLES
from atomic_vault.errors import NoteError
from atomic_vault.notes import (note_filename, read_note, render_note, slugify, update_frontmatter,
                                validate)

GOOD = {"schema_version": 1, "name": "Deploy window", "description": "When deploys happen",
        "type": "decision", "captured": date(2026, 1, 2), "last_seen": "2026-02-03",
        "sources": ["journal"], "confidence": "high"}


def write(tmp_path, name, fields, body="Body.\n"):
    path = tmp_path / name
    path.write_text(render_note(fields, body), encoding="utf-8")
    return path


def test_a_valid_note_parses_and_validates(tmp_path):
    path = write(tmp_path, "decision_deploy_window.md", GOOD)
    meta, body = read_note(path)
    validate(meta, path)
    assert body == "Body."
    assert list(meta) == list(GOOD)


@pytest.mark.parametrize("field, value, fragment", [
    ("type", "opinion", "is not a note type"),
    ("confidence", "sure", "is not allowed"),
    ("captured", "yesterday", "is not a date"),
    ("sources", "journal", "must be a list of strings"),
    ("name", "", "must be a non-empty string"),
    ("description", "x" * 301, "at most 300"),
    ("schema_version", 2, "this version reads 1"),
    ("pinned", "yes", "is not true or false"),
    ("superseded_by", "../etc/passwd", "is not a note file name"),
])
def test_each_bad_field_is_named_with_a_fix(tmp_path, field, value, fragment):
    path = write(tmp_path, "decision_deploy_window.md", {**GOOD, field: value})
    meta, _ = read_note(path)
    with pytest.raises(NoteError) as caught:
        validate(meta, path)
    assert caught.value.field == field
    assert fragment in caught.value.message
    assert caught.value.fix and str(path) in str(caught.value)


def test_missing_required_field(tmp_path):
    fields = dict(GOOD)
    del fields["confidence"]
    path = write(tmp_path, "decision_deploy_window.md", fields)
    with pytest.raises(NoteError, match="required field is missing") as caught:
        validate(read_note(path)[0], path)
    assert caught.value.field == "confidence"


def test_file_name_must_match_type_and_snake_case(tmp_path):
    for name in ("Decision_Deploy.md", "decision-deploy.md", "notes.md", "project_deploy_window.md"):
        path = write(tmp_path, name, GOOD)
        with pytest.raises(NoteError):
            validate(read_note(path)[0], path)


@pytest.mark.parametrize("content, fragment", [
    (b"no frontmatter here\n", "has no YAML frontmatter"),
    (b"---\nname: [unclosed\n---\nbody\n", "not valid YAML"),
    (b"---\n- a list\n---\nbody\n", "not a YAML mapping"),
    (b"---\nname: x\x00\n---\n", "binary"),
    (b"---\nname: \xff\xfe\n---\n", "not valid UTF-8"),
])
def test_unreadable_notes_are_reported(tmp_path, content, fragment):
    path = tmp_path / "reference_x.md"
    path.write_bytes(content)
    with pytest.raises(NoteError, match=fragment):
        read_note(path)


def test_a_directory_or_symlink_is_not_a_note(tmp_path):
    (tmp_path / "reference_dir.md").mkdir()
    with pytest.raises(NoteError, match="not a regular file"):
        read_note(tmp_path / "reference_dir.md")
    (tmp_path / "reference_link.md").symlink_to("/etc/hostname")
    with pytest.raises(NoteError, match="not a regular file"):
        read_note(tmp_path / "reference_link.md")


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs/path", "a\\b", "C:\\x", "..", "a/../b"])
def test_slugs_never_contain_path_separators(name):
    slug = slugify(name)
    assert "/" not in slug and "\\" not in slug and ".." not in slug and ":" not in slug


def test_slugs_keep_letters_of_any_script():
    assert slugify("Café Déjà-vu  2026") == "café_déjà_vu_2026"
    assert slugify("東京 meeting") == "東京_meeting"
    assert note_filename("user", "Ｆｕｌｌ width") == "user_full_width.md"
    assert slugify("İstanbul") == slugify("istanbul") == "istanbul"  # no stray "_" from the dot
    assert slugify("İZMİR") == "izmir" and slugify("ıı") == "ıı"
    with pytest.raises(NoteError):
        note_filename("user", "!!!")


def test_update_frontmatter_keeps_order_formatting_and_body(tmp_path):
    text = ("---\nschema_version: 1\nname: X   # a comment\nsources:\n  - a\n  - b\n"
            "confidence: high\n---\nBody line 1\n\n  indented body\n")
    updated = update_frontmatter(text, {"sources": ["a", "b", "c"], "last_seen": date(2026, 3, 4)})
    assert updated.startswith("---\nschema_version: 1\nname: X   # a comment\nsources:\n- a\n- b\n- c\n"
                              "confidence: high\nlast_seen: 2026-03-04\n---\n")
    assert updated.endswith("---\nBody line 1\n\n  indented body\n")


def test_rendered_notes_use_plain_yaml_without_aliases():
    text = render_note({**GOOD, "captured": date(2026, 1, 1), "last_seen": date(2026, 1, 1)}, "b")
    assert "&id" not in text and "*id" not in text
    assert "captured: 2026-01-01\nlast_seen: 2026-01-01\n" in text
    assert text.endswith("---\nb\n")


def test_index_upsert_adds_moves_and_removes_lines_keeping_hand_edits():
    text = "# Memory Index\n\nHand-written intro.\n\n## Active Projects\n- [A](project_a.md) — a\n\n## Reference\n"
    changes = {
        "project_b.md": ("Active Projects", "- [B](project_b.md) — b"),
        "project_a.md": ("Archive", "- [A](project_a.md) — a"),
        "user_c.md": ("User Profile", "- [C](user_c.md) — c"),
        "reference_gone.md": None,
    }
    out = index.upsert(text + "- [Gone](reference_gone.md) — g\n", changes)
    assert "Hand-written intro." in out
    assert index.listed(out) == {"project_b.md": "Active Projects", "project_a.md": "Archive",
                                 "user_c.md": "User Profile"}
    assert out.index("## User Profile") < out.index("## Active Projects") < out.index("## Archive")
    assert out.endswith("\n") and "\n\n\n" not in out


def test_index_render_sorts_lines_in_canonical_sections():
    out = index.render([("Reference", "- [b](reference_b.md) — b"), ("Reference", "- [a](reference_a.md) — a")])
    assert out.split("\n")[:2] == ["# Memory Index", ""]
    assert out.index("- [a]") < out.index("- [b]")
    assert [line for line in out.split("\n") if line.startswith("## ")] == [
        "## User Profile", "## Critical Feedback", "## Active Projects", "## Locked Decisions",
        "## Reference", "## Archive"]


def _upsert_by_lines(text, changes):
    """The definition of upsert, line by line: drop every line of a changed file, then add
    each new line at the end of its section (creating the section in canonical order)."""
    lines = [l for l in text.rstrip("\n").split("\n")
             if not ((m := index._LINK.match(l)) and m.group("file") in changes)]
    for change in changes.values():
        if change is None:
            continue
        title, new = change
        heading = f"## {title}"
        if heading not in lines:
            slot = index._section_slot(lines, title)
            if slot < len(lines):
                lines[slot:slot] = [heading, ""]
            else:
                lines.extend(["", heading] if lines and lines[-1] != "" else [heading])
        at = lines.index(heading) + 1
        while at < len(lines) and not lines[at].startswith("## "):
            at += 1
        while lines[at - 1] == "" and at - 1 > lines.index(heading):
            at -= 1
        lines.insert(at, new)
    return "\n".join(lines).rstrip("\n") + "\n"


def test_index_upsert_matches_its_line_by_line_definition():
    import random
    rng = random.Random(7)
    titles = [*index.SECTIONS.values(), index.ARCHIVE]
    for _ in range(2000):
        entries = [(rng.choice(titles), f"- [n{i}](reference_n{i}.md) — d") for i in range(rng.randint(0, 8))]
        text = index.render(entries)
        if rng.random() < 0.3:
            text = text.replace(f"## {rng.choice(titles)}\n", "")
        if rng.random() < 0.2:
            text = "A hand-written line mentioning ](reference_n1.md) in prose.\n" + text
        changes = {}
        for _ in range(rng.randint(1, 4)):
            name = f"reference_n{rng.randint(0, 10)}.md"
            changes[name] = None if rng.random() < 0.3 else (rng.choice(titles), f"- [x]({name}) — new")
        assert index.upsert(text, changes) == _upsert_by_lines(text, changes)


def test_a_link_in_the_description_is_not_taken_for_the_notes_own_link():
    """A description may link to another note; the line still belongs to its own note."""
    summary = {"name": "Deploy \\ [window]", "file": "decision_deploy_window.md",
               "description": "see [other](reference_x.md) and [more](user_y.md)"}
    line = index.entry_line(summary)
    text = index.upsert("", {summary["file"]: ("Locked Decisions", line)})
    assert index.listed(text) == {"decision_deploy_window.md": "Locked Decisions"}
    assert index.listed(index.upsert(text, {summary["file"]: None})) == {}
    hand = "- [a [b] c](project_a.md) — see [x](reference_x.md)\n- [a\\](b)](project_b.md) — b\n"
    assert index.listed(hand) == {"project_a.md": "", "project_b.md": ""}


def test_doctor_repair_settles_a_note_whose_description_links_elsewhere(vault):
    from atomic_vault import doctor
    from atomic_vault.backends.files import FileMemory
    from atomic_vault.vault import open_agent
    folder = open_agent("atlas", vault)
    path = folder.memory / "decision_linked.md"
    path.write_text(render_note({**GOOD, "name": "Linked", "description": "see [other](reference_x.md)"},
                                "Body."), encoding="utf-8")
    memory = FileMemory()
    notes = memory.scan(folder)[0]
    memory.put_index(folder, index.upsert(memory.get_index(folder), doctor.index_changes(folder, memory, notes)))
    assert doctor.index_changes(folder, memory, memory.scan(folder)[0]) == {}


@pytest.mark.parametrize("value, fix", [(2, "upgrade atomic-vault"), (0, "set schema_version: 1"),
                                        ("1", "set schema_version: 1")])
def test_a_schema_version_problem_points_at_the_right_remedy(tmp_path, value, fix):
    # `atomic-vault migrate` copies between backends: it cannot fix a note's schema.
    path = write(tmp_path, "decision_deploy_window.md", {**GOOD, "schema_version": value})
    meta, _ = read_note(path)
    with pytest.raises(NoteError) as caught:
        validate(meta, path)
    assert fix in caught.value.fix and "migrate" not in caught.value.fix


SIMPLE_CASES = [
    "schema_version: 1\nname: Lead driver 3\ndescription: Service the backlog\ntype: decision\n"
    "captured: 2026-10-29\nlast_seen: 2026-12-01\nsources:\n- email from Pedro\n- meeting on 2026-10-29\n"
    "confidence: low\nruntime_hash: 8c1ec0dc3e036c50\ntags: [verdemar, dagster]\npinned: true\n",
    "\nname: x\nsources:\n  - a\n  - b\n\n",
    *(f"k: {value}\n" for value in [
        "8e10", "1e5", "0b101", "0x1f", "012", "007", "0", "7", "abc", "a: b", "a #c", "a#b", "on", "Off",
        "yes", "No", "Null", "~", "true", "True", "2026-02-30", "2026-01-05", "2026-1-5", "[a, b]", "[a,b]",
        "[]", "[ ]", "[a, on]", "[1, 2]", "[a b, c]", "x:", "foo bar ", "é", "a'b", 'a"b', "deadbeef",
        "1_000", "1:20", "- x", "{a: 1}", "a,b", "a]b", "a [b]", "[a, [b]]", "[a, ]", "'q'", '"q"',
        "12e3", "0e1", "0bad", "1.5", ".inf", "a\u2028b", "a\x85b", "a\tb", "&a", "*a", "!t x", "|", ">"]),
    "k:\n", "k: 1\nk: 2\n", "yes: 1\n", "k: a\n  continued\n", "k:\n- a\n  - b\n", "k: v # note\n",
    "k:\n- [a]\n", "k: v\n# comment\n", "k: v\r\n",
]


@pytest.mark.parametrize("fm", SIMPLE_CASES)
def test_simple_frontmatter_reads_exactly_what_yaml_reads_or_leaves_it_to_yaml(fm):
    import yaml
    from atomic_vault.notes import _YAML_LOADER, simple_frontmatter

    simple = simple_frontmatter(fm)
    if simple is None:
        return  # YAML decides (or reports the error with its line)
    reference = yaml.load(fm, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    assert simple == reference
    assert [type(v) for v in simple.values()] == [type(v) for v in reference.values()]
    assert all([type(x) for x in simple[k]] == [type(x) for x in reference[k]]
               for k in simple if isinstance(simple[k], list))


def test_the_first_case_is_read_without_yaml():
    from atomic_vault.notes import simple_frontmatter
    assert simple_frontmatter(SIMPLE_CASES[0])["tags"] == ["verdemar", "dagster"]


def test_every_sample_note_reads_the_same_with_and_without_the_simple_reader():
    import yaml
    from atomic_vault import notes

    paths = sorted(SAMPLES.glob("*/memory/*.md"))
    assert paths
    for path in paths:
        if path.name == "INDEX.md":
            continue
        fm, _ = notes._HANDLER.split(path.read_text(encoding="utf-8").lstrip("\ufeff"))
        simple = notes.simple_frontmatter(fm)
        assert simple is None or simple == yaml.load(fm, Loader=notes._YAML_LOADER)  # noqa: S506
