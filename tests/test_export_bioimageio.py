"""bioimage.io packages of every bundle's quick network (cellzoo.export.bioimageio), checked with bioimageio.core
offline: its own test (format validation, then every weights format reproducing the test output from the test
input through the package's preprocessing), its prediction against cellzoo's network output, the declared
preprocessing against each bundle's own normalisation, and `cellzoo predict` on a `.onnx` checkpoint.

The networks carry their initial weights (seed 0) but MEDIAR's, which is the test session's quick-trained model:
the packaging, the normalisation and the reproduction are what is tested here; training is tested by each
bundle's end-to-end test.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

import bundle_cli
from cellzoo.bundles import bundle_path
from cellzoo.export.bioimageio import export_bioimageio, make_test_input, plan_export, reference_preprocessing, validate
from cellzoo.io import write_ome_tiff, write_tiff

pytest.importorskip("bioimageio.core")
pytestmark = pytest.mark.slow

EXPORTABLE = [b for b in bundle_cli.bundles() if (bundle_path(b) / "configs" / "bioimageio.yaml").is_file()]


def test_every_bundle_declares_an_export():
    assert EXPORTABLE == bundle_cli.bundles()


@pytest.fixture(scope="module")
def packages(tmp_path_factory, quick_mediar):
    """Every bundle's quick network as a package; MEDIAR's quick-trained (the session's model), so that the
    ONNX prediction below segments cells."""
    out = tmp_path_factory.mktemp("bioimageio")
    trained = {"mediar_cellseg": quick_mediar["ckpt"]}
    return {bundle: {**export_bioimageio(bundle, trained.get(bundle), out, quick=True), "checkpoint": trained.get(bundle)}
            for bundle in EXPORTABLE}


@pytest.mark.parametrize("bundle", EXPORTABLE)
def test_bioimageio_core_validates_and_reproduces_the_package(bundle, packages):
    summary = validate(packages[bundle]["zip"])
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed
    names = [d.name for d in summary.details]
    formats = ("pytorch_state_dict",) if bundle == "cupre_instance_seg" else ("pytorch_state_dict", "torchscript", "onnx")
    for weights in formats:
        assert f"Reproduce test outputs from test inputs ({weights})" in names, names


@pytest.mark.parametrize("bundle", EXPORTABLE)
def test_bioimageio_core_prediction_equals_the_cellzoo_network(bundle, packages):
    from bioimageio.core import create_prediction_pipeline, load_description
    from bioimageio.core.digest_spec import create_sample_for_model

    model = load_description(packages[bundle]["zip"])
    plan = plan_export(bundle, packages[bundle]["checkpoint"], quick=True)
    raw = make_test_input(plan, seed=3)  # not the package's own test input
    with create_prediction_pipeline(model) as pipeline:  # its preprocessing, then the first weights format
        sample = create_sample_for_model(model, inputs={"image": raw}, sample_id="s")
        # one window as cellzoo's network sees it: no halo padding of the input, no cropping of the output
        prediction = pipeline.predict_sample_without_blocking(sample, skip_input_padding=True, skip_output_cropping=True)
    theirs = prediction.members["output"].data.to_numpy()
    preprocessing = plan.declaration["input"].get("preprocessing", [])
    with torch.no_grad():
        ours = plan.network(torch.from_numpy(reference_preprocessing(preprocessing, raw))).numpy()
    assert theirs.shape == ours.shape
    if bundle == "cupre_instance_seg":
        # instance labels: rounding-level differences in the normalisation reorder near-equal scores, which
        # renumbers instances and moves a few pixels where masks overlap; the cells found are the same
        assert np.mean((theirs > 0) == (ours > 0)) > 0.99 and abs(int(theirs.max()) - int(ours.max())) <= 2
    else:
        assert np.allclose(theirs, ours, atol=1e-3, rtol=1e-3)


def _bundle_normalised(bundle: str, raw: np.ndarray, folder) -> np.ndarray:
    """The (C, Y, X) input of the bundle's network after its own inference preprocessing of `raw`'s files."""
    grey = raw[0, 0]
    if bundle == "mediar_cellseg":
        from cellzoo.methods.mediar import mediar_predict_transforms

        return np.asarray(mediar_predict_transforms(load=False)({"image": raw[0]})["image"])
    if bundle == "isl_segmentation":
        from cellzoo.methods.isl import isl_predict_transforms

        paths = [str(write_tiff(folder / f"input_P{k}.tif", plane, "YX")) for k, plane in enumerate(raw[0])]
        return np.asarray(isl_predict_transforms()({"image": paths})["image"])
    if bundle == "pmc_detection":
        from cellzoo.methods.pmc import folder_items, predict_transforms

        write_tiff(folder / "frame.tif", grey, "YX")
        return np.asarray(predict_transforms(median=1)(folder_items(folder)[0])["image"])
    if bundle == "unetr_lightmycells":
        from cellzoo.methods.unetr import unetr_predict_transforms

        path = write_ome_tiff(folder / "image_1_BF_z0.ome.tiff", grey, "YX")
        return np.asarray(unetr_predict_transforms()({"image": str(path)})["image"])
    from cellzoo.methods.cupre import detection_predict_transforms

    path = write_tiff(folder / "image.tif", grey, "YX")
    return np.asarray(detection_predict_transforms()({"image": str(path)})["image"])


@pytest.mark.parametrize("bundle", EXPORTABLE)
def test_declared_preprocessing_is_the_bundles_own_normalisation(bundle, tmp_path):
    """configs/bioimageio.yaml states the normalisation as specification operations; cellzoo's implementation of
    them equals what the bundle's inference chain does to the same image (PMC without its median filter,
    which the specification cannot express)."""
    plan = plan_export(bundle, None, quick=True)
    raw = make_test_input(plan, seed=5)
    declared = reference_preprocessing(plan.declaration["input"].get("preprocessing", []), raw)[0]
    assert np.allclose(_bundle_normalised(bundle, raw, tmp_path), declared, atol=1e-4), bundle


def test_documentation_cover_and_weights_of_a_package(packages):
    folder = packages["mediar_cellseg"]["folder"]
    readme = (folder / "README.md").read_text()
    assert "## This bioimage.io package" in readme and "cellzoo.postprocess.flows_to_instances" in readme
    assert "## Validation" in readme and readme.startswith("# MEDIAR")
    import imageio.v3 as iio

    image = iio.imread(folder / "cover.png")
    assert image.shape[1] == 2 * image.shape[0]  # input beside output, 2:1
    assert {"state_dict.pt", "torchscript.pt", "model.onnx", "rdf.yaml", "test_input.npy", "test_output.npy"} <= \
        {p.name for p in folder.iterdir()}
    assert not (packages["cupre_instance_seg"]["folder"] / "model.onnx").exists()  # data-dependent outputs


@pytest.mark.parametrize("bundle", [b for b in EXPORTABLE if b != "cupre_instance_seg"])
def test_the_torchscript_runs_on_the_device_it_is_loaded_on(bundle, packages):
    """Traced on the CPU, moved to the "meta" device (the stand-in for a GPU here): the output is there."""
    from cellzoo.export.bioimageio import runs_on_another_device

    folder = packages[bundle]["folder"]
    example = torch.from_numpy(np.load(next(folder.glob("test_input*.npy"))))
    plan = plan_export(bundle, packages[bundle]["checkpoint"], quick=True)
    with torch.no_grad():
        traced = torch.jit.trace(plan.network, example, check_trace=False)
    assert runs_on_another_device(traced, example)


def test_a_trace_that_bakes_in_the_cpu_is_found(monkeypatch):
    """smp's MiT placeholder as smp makes it (torch.empty on x.device): the trace holds a CPU constant."""
    import cellzoo.methods.mediar.network as mediar_network
    from cellzoo.export.bioimageio import runs_on_another_device
    from cellzoo.methods.mediar import MEDIARFormer

    network = MEDIARFormer(encoder_name="mit_b0", decoder_channels=[16, 16, 8, 8, 8], decoder_pab_channels=8).eval()
    example = torch.randn(1, 3, 64, 64)
    for placeholder, expected in ((mediar_network._placeholder_from_input, True), (lambda f, x: f, False)):
        monkeypatch.setattr(mediar_network, "_placeholder_from_input", placeholder)
        with torch.no_grad():
            traced = torch.jit.trace(network, example, check_trace=False)
        assert runs_on_another_device(traced, example) is expected


def test_predict_with_the_onnx_weights_equals_torch(packages, tmp_path):
    """`cellzoo predict` on the package's model.onnx (run in onnxruntime) writes the labels that the PyTorch
    state dict of the same package gives."""
    from cellzoo.cli import main
    from cellzoo.synthetic import synthesize

    data = synthesize("cellseg", 2, tmp_path / "data", seed=21, size=(160, 160), modalities=("nuclear",))
    folder = packages["mediar_cellseg"]["folder"]
    for backend, checkpoint in (("onnxruntime", folder / "model.onnx"), ("torch", folder / "state_dict.pt")):
        main(["predict", "mediar_cellseg", "--input", str(data / "images"), "--output", str(tmp_path / backend),
              "--checkpoint", str(checkpoint), "--quick"])
    written = sorted((tmp_path / "torch" / "labels").glob("*.tiff"))
    assert len(written) == 2
    for path in written:
        ours, theirs = tifffile.imread(path), tifffile.imread(tmp_path / "onnxruntime" / "labels" / path.name)
        assert ours.any() and np.mean((ours > 0) == (theirs > 0)) > 0.999


def test_onnx_needs_a_tensor_network_and_no_mix_with_pytorch(packages, tmp_path, capsys):
    from cellzoo.cli import main

    images = tmp_path / "images"
    images.mkdir()
    folder = packages["mediar_cellseg"]["folder"]
    cases = [("mediar_cellseg", f"{folder / 'model.onnx'},{folder / 'state_dict.pt'}", "only .onnx checkpoints or only"),
             ("cupre_instance_seg", str(folder / "model.onnx"), "has no ONNX form")]
    for bundle, checkpoint, message in cases:
        with pytest.raises(SystemExit) as done:
            main(["predict", bundle, "--input", str(images), "--output", str(tmp_path / "out"), "--checkpoint",
                  checkpoint, "--quick"])
        assert done.value.code == 2 and message in capsys.readouterr().err
