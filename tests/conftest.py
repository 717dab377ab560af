import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from atomic_vault.models import ModelResponse

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


class ScriptedModel:
    """A model double that answers with a fixed text (or raises) and keeps the requests."""

    name = "scripted"

    def __init__(self, text="ok", error=None):
        self.text = text
        self.error = error
        self.requests = []

    def complete(self, request):
        self.requests.append(request)
        if self.error:
            raise self.error
        return ModelResponse(text=self.text, input_tokens=10, output_tokens=5, cost_usd=0.001,
                             model="scripted")


def capture_block(**fields):
    data = {"type": "project", "name": "Test note", "description": "a test note",
            "confidence": "high", "sources": ["test"], "body": "Body text."}
    data.update(fields)
    return "```atomic_capture\n" + json.dumps(data) + "\n```"


@pytest.fixture
def vault(tmp_path):
    """A copy of the sample vault (agent 'atlas') in a temporary folder."""
    root = tmp_path / "vault"
    shutil.copytree(SAMPLES, root)
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below root (derived state excluded)."""
    out = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".atomic_vault"]
        for name in files:
            path = Path(directory) / name
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def snap():
    return snapshot
