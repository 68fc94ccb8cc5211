"""The operator's model commands and the catalogue's start-up checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from jobs.gpu.catalogue import Catalogue, CatalogueError


def gateway(data_dir, *args):
    env = {**os.environ, "DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    env.pop("MODELS_FILE", None)
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_make_tiny_registers_a_loadable_model(tmp_path):
    made = gateway(tmp_path, "models", "make-tiny", str(tmp_path / "m" / "tiny"), "--id", "dev")
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "m" / "tiny" / "model_index.json").is_file()
    listed = gateway(tmp_path, "models", "list")
    models = json.loads(listed.stdout)["models"]
    assert [m["modelID"] for m in models] == ["dev"]
    assert models[0]["allowedWidths"] and models[0]["defaultSampler"] == "DPM++ 2M Karras"
    # a second model is added, the first kept
    again = gateway(tmp_path, "models", "make-tiny", str(tmp_path / "m" / "b"), "--id", "dev2")
    assert again.returncode == 0, again.stderr
    checked = gateway(tmp_path, "models", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "dev: loaded StableDiffusionPipeline on cpu float32" in checked.stdout
    assert "dev2: loaded" in checked.stdout


def test_check_reports_a_missing_model(tmp_path):
    (tmp_path / "models.json").write_text(json.dumps(
        {"models": [{"id": "gone", "path": "nowhere"}]}))
    checked = gateway(tmp_path, "models", "check")
    assert checked.returncode == 1
    assert "gone: FAILED Model gone is not installed on this worker" in checked.stdout


@pytest.mark.parametrize("entry, problem", [
    ({"path": "x"}, "needs 'id'"),
    ({"id": "Bad Id", "path": "x"}, "must match"),
    ({"id": "a", "path": "x", "kind": "music"}, "kind must be one of"),
    ({"id": "a", "path": "x", "samplers": ["Nope"], "defaultSampler": "Nope"}, "samplers"),
    ({"id": "a", "path": "x", "allowedWidths": [500]}, "multiples of 8"),
    ({"id": "a", "path": "x", "defaultResolution": [1024, 1024]}, "outside its own limits"),
    ({"id": "a", "path": "x", "minSteps": 30, "defaultSteps": 20}, "minSteps"),
    ({"id": "a", "path": "x", "colour": "red"}, "unknown model keys: colour"),
])
def test_catalogue_refuses_a_bad_model_file(tmp_path, entry, problem):
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": [entry]}))
    with pytest.raises(CatalogueError, match=problem):
        Catalogue.from_file(path)


def test_catalogue_paths_resolve_next_to_the_file(tmp_path):
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": [{"id": "a", "path": "weights/a"},
                                           {"id": "b", "path": "/abs/b"}]}))
    catalogue = Catalogue.from_file(path)
    assert catalogue.find("a").path == str(tmp_path / "weights" / "a")
    assert catalogue.find("b").path == "/abs/b"
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps({"models": [{"id": "a", "path": "x"}, {"id": "a", "path": "y"}]}))
    with pytest.raises(CatalogueError, match="unique"):
        Catalogue.from_file(dup)
