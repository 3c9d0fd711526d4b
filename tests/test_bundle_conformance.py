"""Every bundle in bundles/ meets MONAI's bundle conventions: metadata valid against the MONAI schema, a
changelog entry for its version, the required files, a network that matches its declared input/output
format, and the properties MONAI tools expect of train and inference configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cellzoo.bundles import list_bundles
from cellzoo.synthetic import synthesize
from conftest import SHARED

SCHEMA = SHARED / "monai" / "meta_schema_20240725.json"
BUNDLES = [Path(b["path"]) for b in list_bundles()]
REQUIRED_FILES = ["LICENSE", "configs/metadata.json", "configs/inference.yaml", "docs/README.md"]
# with train configs a bundle also has its CPU-sized override and its multi-GPU override
TRAINING_FILES = ["configs/quick.yaml", "configs/multi_gpu_train.yaml"]
# the synthetic data each bundle's configs read: (layout, train config's data key, inference config's
# input key, sub-folder of the layout that inference reads)
SYNTHETIC = {"mediar_cellseg": ("cellseg", "dataset_dir", "input_dir", "images"),
             "isl_segmentation": ("isl", "dataset_dir", "input_dir", "")}


def train_configs(bundle: Path) -> list[str]:
    """Names of a bundle's training configs: pretrain.yaml and train*.yaml (not the multi-GPU override)."""
    names = [p.stem for p in (bundle / "configs").glob("*.yaml")]
    return sorted(n for n in names if n == "pretrain" or (n.startswith("train")))

ids = [b.name for b in BUNDLES]


def test_bundles_exist():
    assert {"mediar_cellseg", "isl_segmentation"} <= set(ids)
    assert set(ids) <= set(SYNTHETIC), "add new bundles to SYNTHETIC"


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_required_files(bundle):
    required = REQUIRED_FILES + (TRAINING_FILES if train_configs(bundle) else [])
    missing = [name for name in required if not (bundle / name).is_file()]
    assert not missing, missing


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_metadata_valid_against_monai_schema(bundle):
    if not SCHEMA.is_file():
        pytest.skip(f"MONAI schema not present at {SCHEMA}")
    import jsonschema

    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    jsonschema.validate(meta, json.loads(SCHEMA.read_text()))
    assert meta["version"] in meta["changelog"]


def test_schema_check_can_fail():
    """The schema rejects metadata without a network_data_format (so the check above has teeth)."""
    if not SCHEMA.is_file():
        pytest.skip(f"MONAI schema not present at {SCHEMA}")
    import jsonschema

    meta = json.loads((BUNDLES[0] / "configs" / "metadata.json").read_text())
    del meta["network_data_format"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(meta, json.loads(SCHEMA.read_text()))


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_network_matches_declared_format(bundle):
    """MONAI's verify_net_in_out builds network_def (quick size) and checks shapes and dtypes of metadata."""
    configs = [str(bundle / "configs" / name) for name in ("inference.yaml", "quick.yaml")]
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file",
         str(bundle / "configs" / "metadata.json"), "--config_file", repr(configs), "--n", "4"],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def workflow(bundle: Path, config: str | Path, workflow_type: str, **overrides):
    from monai.bundle import ConfigWorkflow

    files = [str(config if isinstance(config, Path) else bundle / "configs" / f"{config}.yaml"),
             str(bundle / "configs" / "quick.yaml")]
    flow = ConfigWorkflow(config_file=files, meta_file=str(bundle / "configs" / "metadata.json"),
                          workflow_type=workflow_type, **overrides)
    flow.initialize()
    return flow


@pytest.fixture(scope="module", params=BUNDLES, ids=ids)
def bundle_with_data(request, tmp_path_factory):
    """A bundle, overrides pointing its train and inference configs at synthetic data, and a checkpoint."""
    import torch

    bundle = request.param
    layout, train_key, infer_key, images = SYNTHETIC[bundle.name]
    root = tmp_path_factory.mktemp(bundle.name)
    data = synthesize(layout, 4, root / "data", seed=1, size=(96, 96))
    ckpt = root / "model.pt"
    torch.save({"model": workflow_network(bundle).state_dict()}, ckpt)
    return {"bundle": bundle, "root": root,
            "train": {train_key: str(data), "bundle_root": str(root)},
            "infer": {infer_key: str(data / images), "checkpoints": [str(ckpt)], "bundle_root": str(root)}}


def workflow_network(bundle: Path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "inference.yaml"), str(bundle / "configs" / "quick.yaml")])
    return parser.get_parsed_content("network_def")


@pytest.mark.slow
def test_train_properties(bundle_with_data):
    bundle = bundle_with_data["bundle"]
    configs = train_configs(bundle)
    assert configs
    for config in configs:
        assert workflow(bundle, config, "train", **bundle_with_data["train"]).check_properties() == [], config


@pytest.mark.slow
def test_inference_properties(bundle_with_data):
    bundle = bundle_with_data["bundle"]
    assert workflow(bundle, "inference", "infer", **bundle_with_data["infer"]).check_properties() == []


@pytest.mark.slow
def test_property_check_reports_a_missing_inferer(bundle_with_data, tmp_path):
    bundle = bundle_with_data["bundle"]
    config = yaml.safe_load((bundle / "configs" / "inference.yaml").read_text())
    del config["inferer"]
    config["evaluator"]["inferer"] = {"_target_": "SimpleInferer"}  # still a working evaluator
    broken = tmp_path / "inference.yaml"
    broken.write_text(yaml.safe_dump(config))
    # MONAI reports a missing required property by raising a KeyError that names it
    with pytest.raises(KeyError, match="Property 'inferer'"):
        workflow(bundle, broken, "infer", **bundle_with_data["infer"]).check_properties()


@pytest.mark.slow
def test_every_train_config_takes_mlflow_tracking(bundle_with_data):
    """--tracking mlflow finds each train config's handler lists; TrackingExtras logs params and the checkpoint."""
    from monai.bundle import ConfigWorkflow

    bundle = bundle_with_data["bundle"]
    for config in train_configs(bundle):
        flow = ConfigWorkflow(config_file=[str(bundle / "configs" / f"{config}.yaml"), str(bundle / "configs" / "quick.yaml")],
                              meta_file=str(bundle / "configs" / "metadata.json"), workflow_type="train",
                              tracking="mlflow", **bundle_with_data["train"])
        train_handlers, val_handlers = flow.parser["train#handlers"], flow.parser["validate#handlers"]
        assert train_handlers[-1]["_target_"] == "MLFlowHandler", config
        assert val_handlers[-1]["_target_"] == "MLFlowHandler", config
        extras = [h for h in train_handlers if h.get("_target_") == "cellzoo.tracking.TrackingExtras"]
        assert len(extras) == 1 and "checkpoint" in extras[0] and "params" in extras[0], config
        assert any(h.get("_target_") == "cellzoo.tracking.TrackingExtras" for h in val_handlers), config
