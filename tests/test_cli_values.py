"""What the command line lets through: --set values are plain data in every command, booleans mean what
they say, number lists are checked, and every bundle's earlier predictions are protected."""

from __future__ import annotations

import glob

import numpy as np
import pytest

from cellzoo.io import write_tiff
from cellzoo.studies import load_study
from test_bad_input import cli, one_line_error
from test_cli import assert_one_line_error, run_cli

BUNDLES = ("cupre_instance_seg", "isl_segmentation", "mediar_cellseg", "pmc_detection", "unetr_lightmycells")


def code_values(marker) -> list[str]:
    """--set values that MONAI would run: an instantiation, an expression, a reference, nested ones."""
    touch = f"[[touch, {marker}]]"
    return [f"{{network_def: {{_target_: subprocess.call, args: {touch}}}}}",
            f"{{roi_size: '$__import__(\"os\").system(\"touch {marker}\") or 128'}}",
            "{tta: '@network_def'}",
            f"{{tta: [1, {{deeper: {{_requires_: '$open(\"{marker}\", \"w\")'}}}}]}}",
            "{tta: '%configs/inference.yaml#tta'}"]


@pytest.fixture
def images(tmp_path):
    write_tiff(tmp_path / "in" / "a.tif", np.zeros((64, 64), np.uint16), "YX")
    return tmp_path / "in"


@pytest.mark.parametrize("form", range(5))
def test_set_values_that_would_run_code_are_refused_in_every_command(form, tmp_path, images, capsys):
    marker = tmp_path / "MARK"
    value = code_values(marker)[form]
    commands = [["predict", "mediar_cellseg", "--input", str(images), "--output", str(tmp_path / "o"), "--set", value,
                 "--checkpoint", str(images / "a.tif")],
                ["study", "isl_segmentation", str(tmp_path), "--set", value],
                ["study", "isl_segmentation", str(tmp_path), "--pretrain-set", value],
                ["export-bioimageio", "mediar_cellseg", "--checkpoint", str(images / "a.tif"), "--out",
                 str(tmp_path / "e"), "--set", value]]
    for command in commands:
        code, _, err = run_cli(command, capsys)
        assert_one_line_error(code, err, "plain data")
        assert not marker.exists(), command


@pytest.mark.parametrize("value, allowed", [("false", False), ("No", False), ("0", False), ("TRUE", True),
                                            ("yes", True), ("maybe", None)])
def test_boolean_options_mean_what_they_say(value, allowed, tmp_path, images, capsys):
    """--overwrite false keeps earlier predictions; a word that is not a boolean is refused."""
    write_tiff(tmp_path / "o" / "labels" / "a_label.tiff", np.ones((4, 4), np.uint16), "YX")
    code, _, err = run_cli(["predict", "mediar_cellseg", "--input", str(images), "--output", str(tmp_path / "o"),
                            "--overwrite", value, "--checkpoint", str(tmp_path / "none.pt")], capsys)
    if allowed is None:
        assert_one_line_error(code, err, "--overwrite takes true or false", "maybe")
    elif allowed:  # the folder may be overwritten: the next check (the missing checkpoint) speaks
        assert_one_line_error(code, err, "checkpoint not found")
    else:
        assert_one_line_error(code, err, "already holds 1 prediction file")


@pytest.mark.parametrize("seeds", ["-1", "''", "0,x", "1.5"])
def test_seed_lists_must_be_non_negative_whole_numbers(seeds, tmp_path, capsys):
    for command in (["benchmark", "label-efficiency", "--seeds", seeds, "--out", str(tmp_path / "b")],
                    ["study", "isl_segmentation", str(tmp_path), "--seeds", seeds]):
        code, _, err = run_cli(command, capsys)
        assert_one_line_error(code, err, "--seeds must be comma-separated integers")
    assert not (tmp_path / "b").exists()


def test_benchmark_refuses_a_missing_realdata_folder(tmp_path, capsys):
    code, _, err = run_cli(["benchmark", "label-efficiency", "--realdata", str(tmp_path / "none"), "--out",
                            str(tmp_path / "b")], capsys)
    assert_one_line_error(code, err, "--realdata: folder not found", "none")


@pytest.mark.parametrize("option, value, message", [("--size", "0", "--size must be two integers >= 16"),
                                                     ("--seed", "-1", "--seed must lie in [0, ...]"),
                                                     ("--n", "2.5", "--n must be a whole number"),
                                                     ("--depth", "0", "--depth must lie in [2, ...]")])
def test_synth_refuses_sizes_seeds_counts_and_depths_out_of_range(option, value, message, tmp_path, capsys):
    args = {"--n": "2", "--size": "32,32"}
    args[option] = value
    command = ["synth", "ctc", "--out", str(tmp_path / "s")] + [x for pair in args.items() for x in pair]
    code, _, err = run_cli(command, capsys)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("bundle", BUNDLES)
def test_predict_keeps_each_bundles_earlier_outputs(bundle, tmp_path, images, capsys):
    """An output folder holding what the bundle writes (study.yaml `data.inference_output`) is refused."""
    declared = load_study(bundle).data["inference_output"]
    earlier = tmp_path / "o" / declared.replace("*", "x", 2)
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"earlier")
    assert glob.glob(str(tmp_path / "o" / declared))
    code, _, err = run_cli(["predict", bundle, "--input", str(images), "--output", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "already holds 1 prediction file")
    assert earlier.read_bytes() == b"earlier"


@pytest.mark.parametrize("in_channels, out_channels, message", [(1, 3, "takes 1 input channels"),
                                                                (3, 5, "gives 5 output channels, this bundle's network 3")])
def test_an_onnx_graph_of_another_network_is_refused(in_channels, out_channels, message, tmp_path, images, capsys):
    """MEDIAR's network takes 3 channels and gives 3 (flows and cell probability): a graph that differs in
    either is refused in one line before any prediction is written."""
    import torch

    pytest.importorskip("onnxruntime")
    graph = tmp_path / "other.onnx"
    torch.onnx.export(torch.nn.Conv2d(in_channels, out_channels, 3, padding=1), torch.zeros(1, in_channels, 64, 64),
                      str(graph), input_names=["input"], output_names=["output"], dynamo=False)
    code, _, err = cli("predict", "mediar_cellseg", "--input", str(images), "--output", str(tmp_path / "o"),
                       "--checkpoint", str(graph), "--quick")  # reaches the bundle run
    one_line_error(code, err, "other.onnx", message)
    assert not (tmp_path / "o" / "labels").exists()


def test_a_full_disk_is_one_line_naming_the_output(tmp_path, images, capsys, monkeypatch):
    """No space left while writing (raised, as the kernel does, without a file name): the user's file is
    named, nothing half-written stays behind."""
    import errno
    import os

    labels = tmp_path / "labels.tif"
    write_tiff(labels, np.pad(np.ones((8, 8), np.uint16), 28), "YX")

    def disk_full(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("cellzoo.io.files.os.replace", disk_full)
    code, _, err = run_cli(["measure", "--image", str(images / "a.tif"), "--labels", str(labels),
                            "--out", str(tmp_path / "cells.csv")], capsys)
    assert_one_line_error(code, err, "cells.csv", "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "labels.tif"]
