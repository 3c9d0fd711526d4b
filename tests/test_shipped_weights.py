"""The weights the bundles ship (scripts/train_release_models.py): intact, loadable, the recorded output, and the
default of `cellzoo predict`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cellzoo.bundles import ENV_VAR, bundles_dir, parse_config_value
from cellzoo.engines import load_weights
from cellzoo.io import read_labels, write_tiff
from cellzoo.packaging import file_hash
from cellzoo.shipped_weights import RECORD, output_digest, reference_image, shipped_weights
from test_cli import assert_one_line_error, run_cli

BUNDLES = sorted(p.parents[1].name for p in bundles_dir().glob(f"*/{RECORD}"))
MAX_MB = 25


def test_every_bundle_ships_weights():
    assert BUNDLES == sorted(p.name for p in bundles_dir().iterdir() if (p / "configs").is_dir())


@pytest.mark.parametrize("bundle", BUNDLES)
def test_shipped_weights_are_intact_and_give_the_recorded_output(bundle):
    shipped = shipped_weights(bundle)
    assert shipped.checkpoint.stat().st_size <= MAX_MB * 1e6
    assert file_hash(shipped.checkpoint) == shipped.sha256
    network = parse_config_value(bundle, "inference", "network_def", quick=shipped.quick, **shipped.settings)
    network = load_weights(network, str(shipped.checkpoint)).eval()  # refuses weights that do not fit
    reference = shipped.record["reference"]
    with torch.no_grad():
        digest = output_digest(network(reference_image(reference["channels"], reference["size"])))
    np.testing.assert_allclose(digest, reference["digest"], rtol=1e-3, atol=1e-3)


def test_predict_uses_the_shipped_weights(tmp_path, capsys):
    """No --checkpoint: MEDIAR's shipped quick weights segment a synthetic nucleus image."""
    image = (reference_image(1, size=128)[0, 0].numpy() * 60000).astype(np.uint16)
    write_tiff(tmp_path / "in" / "field.tif", image, "YX")
    code, _, err = run_cli(["predict", "mediar_cellseg", "--input", str(tmp_path / "in"), "--output",
                            str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert "using the shipped weights models/model.pt" in err
    labels = read_labels(tmp_path / "out" / "labels" / "field_label.tiff")
    assert len(np.unique(labels)) - 1 >= 5


def test_a_bundle_without_shipped_weights_asks_for_a_checkpoint(tmp_path, capsys, monkeypatch):
    shutil.copytree(bundles_dir() / "mediar_cellseg" / "configs", tmp_path / "mediar_cellseg" / "configs")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    (tmp_path / "in").mkdir()
    code, _, err = run_cli(["predict", "mediar_cellseg", "--input", str(tmp_path / "in"), "--output",
                            str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, "--checkpoint is required", "ships no trained weights")


def test_release_validation_holds_out_one_real_image_per_source_and_never_a_test_item():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from train_release_models import held_out_real

    names = ["dsb_a", "dsb_b", "dsb_c", "hela_a", "hela_b", "gowt1_a", "gowt1_b"]
    test = ["dsb_a", "hela_a"]
    chosen = held_out_real(names, test, seed=0)
    assert sorted(n.split("_")[0] for n in chosen) == ["dsb", "gowt1", "hela"] and not set(chosen) & set(test)
    assert chosen == held_out_real(names, test, seed=0)  # seeded
    assert "hela_b" not in held_out_real(names, ["hela_a", "hela_b"], seed=1)  # a source left with no item is skipped
