"""Every bundle in bundles/ meets MONAI's bundle conventions and the platform's: metadata valid against the
MONAI schema with a changelog entry and recorded results, the required files, a network that matches its
declared input/output format, the properties MONAI tools expect, one real training step of every train
config, inference on synthetic images, MLflow patching and TorchScript export. A new bundle is covered by
adding it to bundles/ (its configs/study.yaml says which synthetic layout it reads)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import bundle_cli
from cellzoo.bundles import bundle_path, config_files
from cellzoo.engines import load_weights, read_curve
from cellzoo.synthetic import LAYOUTS, synthesize
from conftest import SHARED

SCHEMA = SHARED / "monai" / "meta_schema_20240725.json"
BUNDLES = bundle_cli.bundles()
REQUIRED_FILES = ["LICENSE", "configs/metadata.json", "configs/inference.yaml", "configs/evaluate.yaml",
                  "configs/study.yaml", "configs/logging.conf", "docs/README.md"]
# with train configs a bundle also has its CPU-sized override and its multi-GPU override
TRAINING_FILES = ["configs/quick.yaml", "configs/multi_gpu_train.yaml"]


def test_bundles_are_discovered():
    assert {"mediar_cellseg", "isl_segmentation"} <= set(BUNDLES)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_required_files_and_data_declaration(bundle):
    root = bundle_path(bundle)
    required = REQUIRED_FILES + (TRAINING_FILES if bundle_cli.train_configs(bundle) else [])
    assert [name for name in required if not (root / name).is_file()] == []
    assert bundle_cli.data_spec(bundle)["layout"] in LAYOUTS


@pytest.mark.parametrize("bundle", BUNDLES)
def test_each_config_header_gives_its_command(bundle):
    """The first comment lines of every config say how to run it (or, for overrides, what to add it to)."""
    for path in sorted((bundle_path(bundle) / "configs").glob("*.yaml")):
        header = "".join(line for line in path.read_text().splitlines(True)[:12] if line.startswith("#"))
        commands = ("python -m monai.bundle run", "cellzoo study", "cellzoo export-bioimageio", "--config_file")
        assert any(command in header for command in commands), path


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_valid_against_monai_schema(bundle):
    if not SCHEMA.is_file():
        pytest.skip(f"MONAI schema not present at {SCHEMA}")
    import jsonschema

    meta = json.loads((bundle_path(bundle) / "configs" / "metadata.json").read_text())
    jsonschema.validate(meta, json.loads(SCHEMA.read_text()))
    assert meta["version"] in meta["changelog"]
    assert meta["eval_metrics"], "metadata.json records no results (eval_metrics)"


def test_schema_check_can_fail():
    """The schema rejects metadata without a network_data_format (so the check above has teeth)."""
    if not SCHEMA.is_file():
        pytest.skip(f"MONAI schema not present at {SCHEMA}")
    import jsonschema

    meta = json.loads((bundle_path(BUNDLES[0]) / "configs" / "metadata.json").read_text())
    del meta["network_data_format"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(meta, json.loads(SCHEMA.read_text()))


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_network_matches_declared_format(bundle):
    """MONAI's verify_net_in_out builds network_def (quick size) and checks shapes and dtypes of metadata; a
    network whose output is not one tensor (study.yaml `export_input: null`) is checked against its declared
    output fields instead, since verify_net_in_out reads `output.shape`."""
    folder = bundle_path(bundle) / "configs"
    if bundle_cli.data_spec(bundle)["export_input"] is None:
        check_per_image_outputs(bundle)
        return
    shape = json.loads((folder / "metadata.json").read_text())["network_data_format"]["inputs"]["image"]["spatial_shape"]
    # a network built for one window size (UNETR's ViT) declares it in numbers: the quick network is built at it
    fixed = ["--roi_size", str(shape[0])] if all(isinstance(side, int) for side in shape) else []
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file",
         str(folder / "metadata.json"), "--config_file", repr(config_files(bundle, "inference", quick=True)), "--n", "4",
         *fixed], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def check_per_image_outputs(bundle: str) -> None:
    """The quick network_def in eval mode maps a batch of the declared input to one dict per image holding the
    fields metadata.json's output `channel_def` names, each with one row per detection."""
    meta = json.loads((bundle_path(bundle) / "configs" / "metadata.json").read_text())["network_data_format"]
    image, pred = meta["inputs"]["image"], meta["outputs"]["pred"]
    fields = [text.split()[0] for text in pred["channel_def"].values()]
    network = inference_network(bundle).eval()
    x = torch.rand(2, image["num_channels"], 64, 96, dtype=getattr(torch, image["dtype"]))
    with torch.no_grad():
        out = network(x)
    assert isinstance(out, list) and len(out) == 2
    for detections in out:
        assert sorted(detections) == sorted(fields)
        assert len({len(detections[field]) for field in fields}) == 1, {k: v.shape for k, v in detections.items()}


def workflow(bundle: str, files: list[str], workflow_type: str, **overrides):
    from monai.bundle import ConfigWorkflow

    flow = ConfigWorkflow(config_file=files, meta_file=str(bundle_path(bundle) / "configs" / "metadata.json"),
                          workflow_type=workflow_type, **overrides)
    flow.initialize()
    return flow


def inference_network(bundle: str) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files(bundle, "inference", quick=True))
    return parser.get_parsed_content("network_def")


@pytest.fixture(scope="module", params=BUNDLES)
def bundle_with_data(request, tmp_path_factory):
    """A bundle, synthetic data in its layout and a checkpoint of its (quick, untrained) inference network."""
    bundle = request.param
    root = tmp_path_factory.mktemp(bundle)
    data = synthesize(bundle_cli.data_spec(bundle)["layout"], 4, root / "data", seed=1, size=(96, 96))
    torch.manual_seed(0)
    network = inference_network(bundle).eval()
    torch.save({"model": network.state_dict()}, root / "model.pt")
    return {"bundle": bundle, "root": root, "data": data, "network": network}


@pytest.mark.slow
def test_train_configs_have_properties_and_take_a_step(bundle_with_data):
    """Each train config: MONAI's train properties, then one real iteration, validation and best model.pt."""
    bundle, root = bundle_with_data["bundle"], bundle_with_data["root"]
    configs = bundle_cli.train_configs(bundle)
    assert configs
    for config in configs:
        out = root / f"one_step_{config}"
        flow = workflow(bundle, config_files(bundle, config, quick=True), "train", bundle_root=str(out),
                        dataset_dir=str(bundle_with_data["data"]), output_dir=str(out / "runs"),
                        ckpt_dir=str(out / "models"), max_epochs=1, samples_per_epoch=2, batch_size=2, n_folds=2)
        assert flow.check_properties() == [], config
        flow.run()
        state = flow.parser.get_parsed_content("train#trainer").state
        assert state.epoch == 1 and state.iteration == state.epoch_length >= 1, config
        best = out / "models" / "model.pt"
        assert best.is_file(), config
        # the saved best model loads strictly into the config's own network
        load_weights(flow.parser.get_parsed_content("network_def"), best)
        # the shared convergence rule wrote the curve beside it: one row per epoch, the validation score in it
        curve = read_curve(out / "models" / "training_curve.csv")
        assert [row["iteration"] for row in curve] == [state.iteration], config
        assert curve[0]["val_metric"] is not None and (out / "models" / "training_curve.png").is_file(), config
        if config == "train":  # timm's check: every trainable parameter got a gradient in the step
            network = flow.parser.get_parsed_content("network")
            idle = [n for n, p in network.named_parameters() if p.requires_grad and p.grad is None]
            assert idle == [], f"{config}: parameters without a gradient: {idle[:8]}"
        flow.finalize()


@pytest.mark.slow
def test_inference_properties_and_outputs(bundle_with_data):
    bundle, root = bundle_with_data["bundle"], bundle_with_data["root"]
    images = bundle_with_data["data"] / bundle_cli.data_spec(bundle)["inference_input"]
    flow = workflow(bundle, config_files(bundle, "inference", quick=True), "infer", bundle_root=str(root),
                    input_dir=str(images), checkpoints=[str(root / "model.pt")], output_dir=str(root / "pred"))
    assert flow.check_properties() == []
    flow.run()
    # one output per input image, where the bundle's study.yaml says inference writes it
    pattern = bundle_cli.data_spec(bundle)["inference_output"]
    written = sorted(str(p.relative_to(root / "pred")) for p in (root / "pred").glob(pattern))
    assert len(written) == 4, written


def test_property_check_reports_a_missing_inferer(tmp_path):
    """MONAI's check_properties has teeth: a config without `inferer` is reported (by a KeyError naming it)."""
    bundle = BUNDLES[0]
    spec = bundle_cli.data_spec(bundle)
    images = synthesize(spec["layout"], 1, tmp_path / "data", size=(64, 64)) / spec["inference_input"]
    torch.save(inference_network(bundle).state_dict(), tmp_path / "model.pt")
    files = config_files(bundle, "inference", quick=True)
    config = yaml.safe_load(Path(files[0]).read_text())
    del config["inferer"]
    config["evaluator"]["inferer"] = {"_target_": "SimpleInferer"}  # still a working evaluator
    broken = tmp_path / "inference.yaml"
    broken.write_text(yaml.safe_dump(config))
    with pytest.raises(KeyError, match="Property 'inferer'"):
        workflow(bundle, [str(broken), *files[1:]], "infer", input_dir=str(images),
                 checkpoints=[str(tmp_path / "model.pt")]).check_properties()


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_train_config_takes_mlflow_tracking(bundle, tmp_path):
    """--tracking mlflow finds each train config's handler lists, which TrackingExtras then prepares."""
    from monai.bundle import ConfigWorkflow

    for config in bundle_cli.train_configs(bundle):
        flow = ConfigWorkflow(config_file=config_files(bundle, config, quick=True), workflow_type="train",
                              meta_file=str(bundle_path(bundle) / "configs" / "metadata.json"), tracking="mlflow",
                              bundle_root=str(tmp_path))
        assert flow.parser["train#handlers"][-1]["_target_"] == "MLFlowHandler", config
        assert flow.parser["validate#handlers"][-1]["_target_"] == "MLFlowHandler", config
        extras = flow.parser["tracking"]
        assert extras["_target_"] == "cellzoo.tracking.TrackingExtras", config
        assert extras["handlers"].replace("::", "#") == "@train#handlers", config
        assert extras["val_handlers"].replace("::", "#") == "@validate#handlers", config
        assert "$@tracking" in flow.parser["run"], config
        # the executed config is logged as an artifact (MONAI writes it into the run's output folder);
        # TrackingExtras adds the checkpoint and the curve to these artifacts, keeping them
        assert flow.parser["train#handlers"][-1]["artifacts"] == "@save_execute_config", config
        written = flow.parser.get_parsed_content("save_execute_config")
        output_dir = flow.parser.get_parsed_content("output_dir")
        assert written.startswith(output_dir) and written.endswith(".json"), (config, written)


@pytest.mark.slow
def test_torchscript_export_matches_eager(bundle_with_data, tmp_path):
    """MONAI's ckpt_export (traced) gives the eager network's output."""
    bundle, network = bundle_with_data["bundle"], bundle_with_data["network"]
    shape = bundle_cli.data_spec(bundle)["export_input"]
    if shape is None:
        pytest.skip(f"{bundle}: its network's output is not one tensor, so it is not exported by tracing")
    folder = bundle_path(bundle) / "configs"
    exported = tmp_path / "model.ts"
    subprocess.run(
        [sys.executable, "-m", "monai.bundle", "ckpt_export", "--net_id", "network_def", "--filepath", str(exported),
         "--ckpt_file", str(bundle_with_data["root"] / "model.pt"), "--key_in_ckpt", "model",
         "--meta_file", str(folder / "metadata.json"), "--config_file", repr(config_files(bundle, "inference", True)),
         "--use_trace", "True", "--input_shape", str(list(shape))], check=True, capture_output=True)
    scripted = torch.jit.load(str(exported))
    x = torch.rand(2, *shape[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(scripted(x), network(x), atol=1e-4)


@pytest.mark.parametrize("quick", [False, True])
@pytest.mark.parametrize("bundle", BUNDLES)
def test_train_and_inference_build_the_same_network(bundle, quick):
    """network_def is written in train.yaml and in inference.yaml (each config runs alone): they must agree,
    or a trained checkpoint would not load for inference."""
    from monai.bundle import ConfigParser

    defs = []
    for config in ("train", "inference"):
        parser = ConfigParser()
        parser.read_config(config_files(bundle, config, quick=quick))
        defs.append(parser.get("network_def"))
    assert defs[0] == defs[1]


# blocks every bundle's train.yaml writes the same way (bundles stay self-contained: each is downloaded alone)
SHARED_TRAIN_BLOCKS = ("convergence", "resume_state", "tracking", "resume", "min_delta", "max_minutes", "min_iterations")


def test_shared_train_blocks_are_identical_in_every_bundle():
    blocks = {}
    for bundle in BUNDLES:
        config = yaml.safe_load((bundle_path(bundle) / "configs" / "train.yaml").read_text())
        blocks[bundle] = {key: config[key] for key in SHARED_TRAIN_BLOCKS}
        blocks[bundle]["resume_state"] = {k: v for k, v in config["resume_state"].items() if k != "state"}
        assert config["resume_state"]["state"]["convergence"] == "@convergence", bundle
        assert "$@convergence.attach(@train#trainer)" in config["run"], bundle
        assert config["run"][-1] == "$@train#trainer.run()", bundle
    first = blocks[BUNDLES[0]]
    for bundle, block in blocks.items():
        for key in SHARED_TRAIN_BLOCKS:
            assert block[key] == first[key], f"{bundle}: {key} differs from {BUNDLES[0]}"


def test_bundle_versions_named_in_the_docs_are_the_metadata_versions():
    """A zip name or `--version` copied from a page must exist: `<bundle>_v<version>` and `--name <bundle>
    --version <version>` in README.md, docs/ and the model cards are the versions metadata.json declares."""
    import re

    root = Path(__file__).resolve().parents[1]
    versions = {path.parent.parent.name: json.loads(path.read_text())["version"]
                for path in (root / "bundles").glob("*/configs/metadata.json")}
    pages = [root / "README.md", *(root / "docs").glob("*.md"), *(root / "bundles").glob("*/docs/*.md")]
    named = re.compile(r"\b(" + "|".join(versions) + r")(?:_v| --version )(\d+\.\d+\.\d+)")
    found = [(page.name, bundle, version) for page in pages for bundle, version in named.findall(page.read_text())]
    assert found, "the docs name no bundle version: the pattern is stale"
    assert [f for f in found if f[2] != versions[f[1]]] == []
