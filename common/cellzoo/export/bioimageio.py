"""A bundle's trained network as a BioImage Model Zoo package (model description format 0.5).

The description is built with bioimageio.spec's own classes (never written as YAML by hand) from what the
bundle already holds: the network and its window settings (inference.yaml, or quick.yaml's), the version,
licence and description (metadata.json), the model card (docs/README.md), and configs/bioimageio.yaml, which
declares what only the export needs: tags, citations, channel names, the intensity normalisation as the
specification's preprocessing operations, what the raw outputs mean and which cellzoo function turns them
into instances or boxes (the specification cannot express flow following, heatmap decoding or cascade
detections, so the package's documentation says it).

Weights: the PyTorch state dict with the architecture as an importable cellzoo callable, TorchScript (a
trace) and ONNX, each checked against the eager network on a second input size before it is written; a
network whose output the trace or the ONNX graph does not reproduce at another size gets a fixed input size.
Test tensors: a synthetic image in the input's raw units (before the normalisation, which the specification
applies) and the network's output on it, computed here with cellzoo's own implementation of that
normalisation (`reference_preprocessing`), so that bioimageio.core's test checks its normalisation against
the bundle's as well as the weights.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from cellzoo.errors import InputError

__all__ = ["DECLARATION", "ExportPlan", "export_bioimageio", "make_test_input", "plan_export", "reference_preprocessing", "validate"]

DECLARATION = "bioimageio.yaml"
INPUT_ID, OUTPUT_ID = "image", "output"
SPATIAL = ("y", "x")
# the characters the specification allows in a model's name
NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+- ()")


@dataclass
class ExportPlan:
    """What the package of one bundle network holds, before any file is written."""

    bundle: str
    network: torch.nn.Module
    architecture: dict  # callable, import_from, kwargs
    declaration: dict
    output: dict
    channels: list[str]
    window: int
    halo: int
    step: int
    fixed_size: bool
    quick: bool
    settings: dict = field(default_factory=dict)


def _declaration(bundle: str) -> dict:
    from cellzoo.bundles import bundle_path

    path = bundle_path(bundle) / "configs" / DECLARATION
    if not path.is_file():
        raise InputError(f"bundle '{bundle}' declares no bioimage.io export (configs/{DECLARATION})", path)
    return yaml.safe_load(path.read_text())


def _parser(bundle: str, quick: bool, settings: dict):
    from monai.bundle import ConfigParser

    from cellzoo.bundles import config_files

    parser = ConfigParser()
    parser.read_config(config_files(bundle, "inference", quick))
    parser.update(dict(settings))
    return parser


def _architecture(parser, declaration: dict) -> dict:
    """The network_def's target and its keyword arguments as plain values (references resolved)."""
    raw = parser.get("network_def")
    kwargs = {key: _plain(parser.get_parsed_content(f"network_def#{key}")) for key in raw if not key.startswith("_")}
    module, _, name = raw["_target_"].rpartition(".")
    if declaration.get("label_network"):  # the detector is wrapped (CUPre): the wrapper's own arguments
        module, _, name = declaration["label_network"].rpartition(".")
        kwargs = {"detector_kwargs": kwargs, **declaration.get("label_network_kwargs", {})}
    return {"callable": name, "import_from": module, "kwargs": kwargs}


def _plain(value):
    """YAML-representable value: tuples become lists, tensors and numpy scalars plain numbers."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item"):
        return value.item()
    return value


def _build(architecture: dict) -> torch.nn.Module:
    import importlib

    return getattr(importlib.import_module(architecture["import_from"]), architecture["callable"])(**architecture["kwargs"])


def plan_export(bundle: str, checkpoint: str | Path | None, quick: bool = False, settings: dict | None = None) -> ExportPlan:
    """The network with `checkpoint`'s weights (None: as initialised, seed 0) and its description settings."""
    from cellzoo.engines import load_weights

    settings = dict(settings or {})
    declaration = _declaration(bundle)
    parser = _parser(bundle, quick, settings)
    architecture = _architecture(parser, declaration)
    torch.manual_seed(0)
    network = _build(architecture)
    if checkpoint is not None:
        target = network.detector if declaration.get("label_network") else network
        load_weights(target, checkpoint)
    window_key, overlap_key = declaration.get("window", {}).get("size", "roi_size"), \
        declaration.get("window", {}).get("overlap", "sw_overlap")
    window = int(parser.get_parsed_content(window_key))
    overlap = float(parser.get_parsed_content(overlap_key))
    halo = overlap / 2 if overlap >= 1 else window * overlap / 2  # px, or a fraction of the window
    output = declaration["output"] if "output" in declaration else \
        declaration["outputs"][str(parser.get_parsed_content(declaration["output_by"]))]
    decl_in = declaration["input"]
    channels = [str(c) for c in (decl_in.get("channels") or parser.get_parsed_content(decl_in["channels_from"]))]
    plan = ExportPlan(bundle, network.eval(), architecture, declaration, output, channels, window, 0,
                      int(decl_in.get("step", 32)), False, bool(quick), settings)
    return _with_size(plan, bool(decl_in.get("fixed_size", False)), halo)


def _with_size(plan: ExportPlan, fixed: bool, halo: float) -> ExportPlan:
    """Fix the input size, or keep it a multiple of the step with a halo of a multiple of half a step.

    Consumers pad a tile by the output halo on both sides before the network sees it (bioimageio.core does),
    so tile + 2 halo must be a valid size again; a fixed-size network takes no halo.
    """
    half = plan.step // 2
    plan.fixed_size, plan.halo = fixed, 0 if fixed else int(round(halo / half)) * half
    return plan


# ---------------------------------------------------------------- test tensors and normalisation

def make_test_input(plan: ExportPlan, seed: int = 0) -> np.ndarray:
    """(1, C, window, window) float32 synthetic image in raw units (counts up to ~4000), before normalisation."""
    from cellzoo.synthetic import render_field

    size = (plan.window, plan.window)
    kind = plan.declaration["input"].get("test_image", "fluorescence")
    n = len(plan.channels)
    modality, planes = ("brightfield", tuple(np.linspace(-1, 1, n))) if kind == "labelfree" else ("nuclear", (0.0,))
    image = np.asarray(render_field(size, seed, None, "medium", (10, 18), (modality,), planes)["images"][modality])
    stack = image.reshape(-1, *size)  # (planes, Y, X); one plane is returned as (Y, X)
    channels = stack if len(stack) == n else np.repeat(stack[:1], n, axis=0)
    return (channels[None] * 4000.0).astype(np.float32)


def reference_preprocessing(operations: list[dict], x: np.ndarray) -> np.ndarray:
    """The declared preprocessing of a (1, C, Y, X) tensor, computed with the MONAI transforms the bundles use."""
    from monai.transforms import NormalizeIntensity, ScaleIntensityRangePercentiles

    out = np.asarray(x, dtype=np.float32)[0]
    for op in operations:
        kwargs = dict(op.get("kwargs") or {})
        per_channel = list(kwargs.get("axes") or ["channel", *SPATIAL]) == list(SPATIAL)
        if op["id"] == "scale_range":
            out = np.asarray(ScaleIntensityRangePercentiles(kwargs.get("min_percentile", 0.0), kwargs.get("max_percentile", 100.0),
                                                            0.0, 1.0, clip=False, channel_wise=per_channel)(out))
        elif op["id"] == "clip":
            out = np.clip(out, kwargs.get("min"), kwargs.get("max"))
        elif op["id"] == "zero_mean_unit_variance":
            out = np.asarray(NormalizeIntensity(channel_wise=per_channel)(out))
        else:
            raise InputError(f"{DECLARATION}: preprocessing {op['id']!r} has no cellzoo implementation here")
    return out[None].astype(np.float32)


def _spec_operations(operations: list[dict]) -> list:
    from bioimageio.spec.model import v0_5 as spec

    built = []
    for op in operations:
        kwargs = dict(op.get("kwargs") or {})
        if "axes" in kwargs:
            kwargs["axes"] = [spec.AxisId(a) for a in kwargs["axes"]]
        descr, args = {"scale_range": (spec.ScaleRangeDescr, spec.ScaleRangeKwargs),
                       "clip": (spec.ClipDescr, spec.ClipKwargs),
                       "zero_mean_unit_variance": (spec.ZeroMeanUnitVarianceDescr, spec.ZeroMeanUnitVarianceKwargs)}[op["id"]]
        built.append(descr(kwargs=args(**kwargs)))
    return built


# ---------------------------------------------------------------- weights

def _reproduces(module, network: torch.nn.Module, x: torch.Tensor, atol: float = 1e-4) -> bool:
    try:
        with torch.no_grad():
            return bool(torch.allclose(module(x), network(x), atol=atol, rtol=1e-3))
    except Exception:  # noqa: BLE001 - a graph that cannot run this size does not reproduce it
        return False


def runs_on_another_device(traced: torch.jit.ScriptModule, example: torch.Tensor) -> bool:
    """Whether a TorchScript trace made on the CPU runs where it is moved: moved to PyTorch's "meta" device
    (shapes without data, the stand-in for a GPU on a machine without one), its output must come out there.
    A trace that recorded a device as a constant (smp's MiT placeholder, before MEDIAR-Former built it from
    its input) fails: it mixes CPU tensors into the other device's computation. Pass a fresh trace (a loaded
    or copied ScriptModule cannot move to "meta"); it is moved, the traced network is not."""
    try:
        with torch.no_grad():
            out = traced.to("meta")(example.to("meta"))
        return isinstance(out, torch.Tensor) and out.device.type == "meta"
    except Exception:  # noqa: BLE001 - any failure there is a trace that would fail on a GPU
        return False


def _onnx_runner(path: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {INPUT_ID: x.numpy()})[0])


def write_weights(plan: ExportPlan, example: torch.Tensor, folder: Path) -> dict[str, Path]:
    """state_dict.pt always; torchscript.pt and model.onnx where they reproduce the eager network."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"pytorch_state_dict": folder / "state_dict.pt"}
    torch.save(plan.network.state_dict(), files["pytorch_state_dict"])
    if plan.declaration.get("label_network"):  # data-dependent outputs: a state dict only (see its bioimageio.yaml)
        return files
    # a second size, one step larger (the example's own pixels, repeated at the edge)
    other = torch.cat([example, example[..., -plan.step:]], -1)
    other = torch.cat([other, other[..., -plan.step:, :]], -2)
    with torch.no_grad():
        traced = torch.jit.trace(plan.network, example, check_trace=False)
    traced.save(str(folder / "torchscript.pt"))
    files["torchscript"] = folder / "torchscript.pt"
    axes = {0: "batch"} if plan.fixed_size else {0: "batch", 2: "y", 3: "x"}
    dynamic = {INPUT_ID: axes, OUTPUT_ID: axes}
    torch.onnx.export(plan.network, (example,), str(folder / "model.onnx"), input_names=[INPUT_ID], output_names=[OUTPUT_ID],
                      dynamic_axes=dynamic, opset_version=17, dynamo=False)
    files["onnx"] = folder / "model.onnx"
    if not plan.fixed_size and not (_reproduces(traced, plan.network, other)
                                    and _reproduces(_onnx_runner(files["onnx"]), plan.network, other)):
        _with_size(plan, True, 0)  # the trace or the graph baked in the window size
    if not runs_on_another_device(traced, example):  # last: this moves the trace off the CPU
        raise RuntimeError(f"{plan.bundle}: the TorchScript trace runs only on the CPU it was traced on (a device "
                           "constant in the graph); fix the network's forward before exporting")
    return files


# ---------------------------------------------------------------- documentation and cover

def _cover(test_in: np.ndarray, test_out: np.ndarray, path: Path) -> Path:
    """2:1 PNG: the test input's first channel beside the output's first channel, each scaled to its range."""
    from cellzoo.io import write_png

    def grey(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        low, high = np.percentile(a, [1, 99.8])
        return np.clip((a - low) / (high - low + 1e-12), 0, 1)

    image = np.concatenate([grey(test_in[0, 0]), grey(test_out[0, 0])], axis=1)
    return write_png(path, np.round(image * 255).astype(np.uint8))


def _documentation(plan: ExportPlan, path: Path, weights: dict[str, Path]) -> Path:
    from cellzoo.bundles import bundle_path

    card = (bundle_path(plan.bundle) / "docs" / "README.md").read_text()
    ops = ", ".join(f"{op['id']}({', '.join(f'{k}={v}' for k, v in (op.get('kwargs') or {}).items())})"
                    for op in plan.declaration["input"].get("preprocessing", []))
    size = f"exactly {plan.window} x {plan.window}" if plan.fixed_size else \
        f"{plan.window} + k * {plan.step} px per side (the bundle's window), outputs cropped by a halo of {plan.halo} px"
    section = "\n".join([
        "", "## This bioimage.io package", "",
        f"Exported by `cellzoo export-bioimageio {plan.bundle}`{' --quick' if plan.quick else ''} from the bundle's "
        f"inference network ({'quick.yaml size' if plan.quick else 'paper scale'}). Weights: "
        f"{', '.join(weights)}.", "",
        f"- **Input** `{INPUT_ID}`: (batch, channel, y, x), channels {', '.join(plan.channels)}; tiles of {size}.",
        f"- **Preprocessing** (in the description): {ops or 'none'}. {plan.declaration['input'].get('notes', '')}",
        f"- **Output** `{OUTPUT_ID}`: channels {', '.join(plan.output['channels'])}. {plan.output['meaning']}",
        f"- **Post-processing** (not expressible in the specification): {plan.output['cellzoo_postprocessing']}", "",
        "## Validation", "",
        "The package's test input is a synthetic image in raw units and its test output the network's output after "
        "cellzoo's own normalisation; `bioimageio.core`'s `test_model` runs the package's preprocessing and every "
        "weights format on the test input and compares with the test output (checked with bioimageio.core when "
        "exported). Quantitative results of the bundle are in the model card above.", ""])
    path.write_text(card.rstrip() + "\n" + section)
    return path


# ---------------------------------------------------------------- the description

def _axes(plan: ExportPlan, output_channels: list[str]):
    from bioimageio.spec.model import v0_5 as spec

    size = plan.window if plan.fixed_size else spec.ParameterizedSize(min=plan.window, step=plan.step)
    inputs = [spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in plan.channels])] + \
        [spec.SpaceInputAxis(id=spec.AxisId(a), size=size) for a in SPATIAL]
    def spatial(axis: str):
        size = spec.SizeReference(tensor_id=spec.TensorId(INPUT_ID), axis_id=spec.AxisId(axis))
        if plan.halo:
            return spec.SpaceOutputAxisWithHalo(id=spec.AxisId(axis), size=size, halo=plan.halo)
        return spec.SpaceOutputAxis(id=spec.AxisId(axis), size=size)

    outputs = [spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in output_channels])] + \
        [spatial(a) for a in SPATIAL]
    return inputs, outputs


def describe(plan: ExportPlan, files: dict[str, Path], weights: dict[str, Path]):
    """The ModelDescr of the package (files given as local paths; bioimageio.spec packs them)."""
    from bioimageio.spec.model import v0_5 as spec

    from cellzoo.bundles import bundle_path

    meta = json.loads((bundle_path(plan.bundle) / "configs" / "metadata.json").read_text())
    torch_version = spec.Version(torch.__version__.split("+")[0])
    inputs, outputs = _axes(plan, plan.output["channels"])
    entries = {"pytorch_state_dict": spec.PytorchStateDictWeightsDescr(
        source=weights["pytorch_state_dict"], pytorch_version=torch_version,
        architecture=spec.ArchitectureFromLibraryDescr(**plan.architecture))}
    if "torchscript" in weights:
        entries["torchscript"] = spec.TorchscriptWeightsDescr(source=weights["torchscript"], pytorch_version=torch_version,
                                                              parent="pytorch_state_dict")
    if "onnx" in weights:
        entries["onnx"] = spec.OnnxWeightsDescr(source=weights["onnx"], opset_version=17, parent="pytorch_state_dict")
    cite = [spec.CiteEntry(text=c["text"], **({"doi": spec.Doi(c["doi"])} if "doi" in c else {"url": spec.HttpUrl(c["url"])}))
            for c in plan.declaration["cite"]]
    name = "".join(c for c in f"{meta['name']} (cellzoo{' quick' if plan.quick else ''})" if c in NAME_CHARACTERS)
    return spec.ModelDescr(
        name=name[:128],
        description=meta["description"][:1024],
        version=spec.Version(meta["version"]),
        authors=[spec.Author(name=meta.get("authors", "cellzoo contributors"))],
        cite=cite,
        license=spec.LicenseId("Apache-2.0"),
        tags=list(plan.declaration["tags"]),
        documentation=spec.FileDescr(source=files["documentation"]),
        covers=[spec.FileDescr(source=files["cover"])],
        inputs=[spec.InputTensorDescr(id=spec.TensorId(INPUT_ID), axes=inputs, test_tensor=spec.FileDescr(source=files["test_input"]),
                                      data=spec.IntervalOrRatioDataDescr(type="float32"),
                                      preprocessing=_spec_operations(plan.declaration["input"].get("preprocessing", [])))],
        outputs=[spec.OutputTensorDescr(id=spec.TensorId(OUTPUT_ID), axes=outputs,
                                        test_tensor=spec.FileDescr(source=files["test_output"]),
                                        data=spec.IntervalOrRatioDataDescr(type="float32"))],
        weights=spec.WeightsDescr(**entries),
    )


def export_bioimageio(bundle: str, checkpoint: str | Path | None, out: str | Path, quick: bool = False,
                      settings: dict | None = None) -> dict[str, Path]:
    """Write <out>/<bundle>/ (the package as a folder) and <out>/<bundle>.zip; returns their paths."""
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder

    out = Path(out)
    plan = plan_export(bundle, checkpoint, quick, settings)
    work = out / f".{bundle}_files"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    raw = make_test_input(plan)
    example = torch.from_numpy(reference_preprocessing(plan.declaration["input"].get("preprocessing", []), raw))
    weights = write_weights(plan, example, work)
    with torch.no_grad():
        expected = plan.network(example).numpy().astype(np.float32)
    files = {"test_input": work / "test_input.npy", "test_output": work / "test_output.npy"}
    np.save(files["test_input"], raw)
    np.save(files["test_output"], expected)
    files["cover"] = _cover(raw, expected, work / "cover.png")
    files["documentation"] = _documentation(plan, work / "README.md", weights)
    description = describe(plan, files, weights)
    folder = save_bioimageio_package_as_folder(description, output_path=out / bundle)
    package = save_bioimageio_package(description, output_path=out / f"{bundle}.zip")
    shutil.rmtree(work, ignore_errors=True)
    return {"folder": Path(folder), "zip": Path(package)}


def validate(package: str | Path):
    """bioimageio.core's own test of a package (validation, then prediction of the test input with every
    weights format); returns its ValidationSummary."""
    from bioimageio.core import test_model

    return test_model(str(package), devices=["cpu"])
