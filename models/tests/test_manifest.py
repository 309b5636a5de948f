"""The model's backbone/head keys and shapes are the official checkpoint's (as listed in
shared/HMR2_FACTS.md; see also test_official_keys.py)."""

import json
import re

from models.hmr2 import trunk_param_count, trunk_shapes
from models.manifest import MANIFEST_PATH, SOURCE, expected_keys, load_manifest, render


def test_manifest_file_is_current():
    assert load_manifest() == expected_keys(), f"regenerate {MANIFEST_PATH} with python -m models.manifest"
    assert MANIFEST_PATH.read_text() == render(), f"regenerate {MANIFEST_PATH} with python -m models.manifest"


def test_manifest_says_what_it_was_made_from():
    doc = json.loads(MANIFEST_PATH.read_text())
    assert doc["source"] == SOURCE
    assert "HMR2_FACTS.md" in doc["source"] and "not read from a checkpoint" in doc["source"]
    assert doc["count"] == len(doc["keys"]) == 503


def test_full_preset_matches_the_checkpoint_manifest():
    model, manifest = trunk_shapes("full"), load_manifest()
    assert sorted(set(manifest) - set(model)) == [], "keys of the checkpoint the model lacks"
    assert sorted(set(model) - set(manifest)) == [], "keys of the model the checkpoint lacks"
    wrong = {k: (model[k], manifest[k]) for k in manifest if model[k] != manifest[k]}
    assert wrong == {}


def test_full_preset_parameter_count():
    counts = trunk_param_count("full")
    print(f"full preset parameters: {counts}")
    assert counts == {"backbone": 630_912_000, "smpl_head": 39_547_037, "total": 670_459_037}


def test_tiny_preset_has_the_same_layout():
    def pattern(keys):
        return {re.sub(r"\.(blocks|layers)\.\d+\.", r".\1.N.", k) for k in keys}

    assert pattern(trunk_shapes("tiny")) == pattern(load_manifest())
