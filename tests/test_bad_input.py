"""Bad input, tampering and unwritable outputs through the `cellzoo` command and the bundle runner: each ends
in one line naming the file and the problem (CLI exit code 2), nothing a user passes runs as config code,
and outputs get the permissions the umask gives. docs/reliability.md lists these cases with their tests."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import bundle_cli
from cellzoo.bundles import as_config_data, parse_config_value
from cellzoo.cli import EXIT_BAD_INPUT, main
from cellzoo.synthetic import synthesize

BUNDLE = "mediar_cellseg"


def cli(*args: str) -> tuple[int, str, str]:
    """Run `cellzoo ARGS` in this process; (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exit_:
            code = exit_.code or 0
    return code, out.getvalue(), err.getvalue()


def one_line_error(code: int, err: str, *fragments: str) -> None:
    """Exit code 2 and a single `cellzoo: error:` line containing every fragment, no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("cellzoo: error:")]
    assert code == EXIT_BAD_INPUT, err[-2000:]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def quick_checkpoint(tmp_path_factory) -> Path:
    """Untrained weights of the quick MEDIAR inference network (shapes are what the checks look at)."""
    path = tmp_path_factory.mktemp("ckpt") / "quick.pt"
    torch.manual_seed(0)
    torch.save({"model": parse_config_value(BUNDLE, "inference", "network_def", quick=True).state_dict()}, path)
    return path


@pytest.fixture()
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "good.tif", (np.random.default_rng(0).random((64, 64)) * 1000).astype(np.uint16))
    return folder


def predict(images: Path, output: Path, checkpoint: Path, *extra: str) -> tuple[int, str, str]:
    return cli("predict", BUNDLE, "--input", str(images), "--output", str(output), "--checkpoint", str(checkpoint),
               "--quick", *extra)


# ---------------------------------------------------------------- values never run as config code


@pytest.mark.parametrize("value", ['$__import__("pathlib").Path("MARKER").touch() or "out"', "@input_dir",
                                   "%configs/metadata.json#version", "a@::b"])
def test_override_values_reach_configs_as_data(value, tmp_path, monkeypatch):
    """What run_config hands MONAI parses back to the very same string, and nothing is executed."""
    from monai.bundle import ConfigParser

    monkeypatch.chdir(tmp_path)
    parser = ConfigParser({"input_dir": "elsewhere", "value": as_config_data(value), "listed": as_config_data([value])})
    assert parser.get_parsed_content("value") == value
    assert parser.get_parsed_content("listed") == [value]
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.slow
@pytest.mark.parametrize("prefix", ["$", "@", "%"])
def test_predict_paths_with_config_prefixes_are_plain_paths(prefix, images, quick_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = {"$": '$__import__("pathlib").Path("MARKER").touch() or "x"', "@": "@input_dir",
            "%": "%configs#x"}[prefix]
    code, _, err = predict(images, Path(name), quick_checkpoint)
    assert code == 0, err[-2000:]
    assert not (tmp_path / "MARKER").exists()
    assert (tmp_path / name / "labels" / "good_label.tiff").is_file()  # the output went where it was named
    assert sorted(p.name for p in images.iterdir()) == ["good.tif"]  # not into the input folder (@input_dir)


def test_every_command_that_runs_a_config_passes_data(tmp_path, monkeypatch):
    """demo and study reach MONAI's runner only through run_config, which encodes their values."""
    import monai.bundle

    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(monai.bundle, "run", lambda **kwargs: calls.append(kwargs) or (_ for _ in ()).throw(StopRun))
    risky = Path("$x")  # relative, so the value MONAI gets starts with "$"
    with pytest.raises(StopRun):
        from cellzoo.demo import run_demo

        run_demo(risky, n_train=1, n_heldout=1, size=(32, 32))
    assert calls[-1]["dataset_dir"].startswith("$bytes.fromhex(")
    from monai.bundle import ConfigParser

    assert ConfigParser({"d": calls[-1]["dataset_dir"]}).get_parsed_content("d") == str(risky / "data" / "train")


class StopRun(Exception):
    """Raised by the stand-in runner once the arguments are recorded."""


# ---------------------------------------------------------------- predict: bad images and checkpoints


def write(folder: Path, name: str, content) -> None:
    if isinstance(content, bytes):
        (folder / name).write_bytes(content)
    else:
        tifffile.imwrite(folder / name, content, **({} if name != "pages.tif" else {"metadata": None}))


CASES = {
    "empty folder": (None, None, "no image files found"),
    "0-byte file": ("empty.tif", b"", "cannot read image"),
    "truncated TIFF": ("cut.tif", "truncate", "cannot read image"),
    "not a TIFF": ("text.tif", b"hello, not an image", "cannot read image"),
    "3D stack": ("stack.tif", "stack", "expected a 2D image"),
    "pages of unknown axes": ("pages.tif", np.zeros((5, 32, 32), np.uint16), "axes are ambiguous"),
    "NaN pixels": ("nan.tif", "nan", "NaN or inf"),
    "inf pixels": ("inf.tif", "inf", "NaN or inf"),
    "two files, one stem": ("good.png", np.zeros((32, 32), np.uint8), "two files share the stem 'good'"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_predict_refuses_bad_images_with_one_line(case, tmp_path, quick_checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    name, content, message = CASES[case]
    if name is not None:
        if case != "two files, one stem":
            tifffile.imwrite(folder / "ok.tif", np.zeros((32, 32), np.uint16))
        else:
            tifffile.imwrite(folder / "good.tif", np.zeros((32, 32), np.uint16))
        if isinstance(content, str) and content == "truncate":
            tifffile.imwrite(folder / name, np.ones((64, 64), np.uint16))
            (folder / name).write_bytes((folder / name).read_bytes()[:300])
        elif isinstance(content, str) and content == "stack":
            tifffile.imwrite(folder / name, np.zeros((4, 32, 32), np.uint16), metadata={"axes": "ZYX"})
        elif isinstance(content, str):  # "nan" or "inf"
            bad = np.ones((32, 32), np.float32)
            bad[3, 4] = np.nan if content == "nan" else np.inf
            tifffile.imwrite(folder / name, bad)
        else:
            write(folder, name, content)
    code, _, err = predict(folder, tmp_path / "out", quick_checkpoint)
    one_line_error(code, err, message, str(folder) if name is None or "stem" in message else name)


def test_predict_refuses_bad_checkpoints(images, quick_checkpoint, tmp_path):
    random_bytes = tmp_path / "random.pt"
    random_bytes.write_bytes(os.urandom(2000))
    one_line_error(*predict(images, tmp_path / "o", random_bytes)[::2], "random.pt", "cannot load checkpoint")
    other = tmp_path / "isl.pt"
    torch.save({"model": parse_config_value("isl_segmentation", "inference", "network_def", quick=True).state_dict()},
               other)
    code, _, err = predict(images, tmp_path / "o", other)
    one_line_error(code, err, "isl.pt", "does not fit the network", "missing", "unexpected")
    assert "--quick" not in err  # it fits neither size of this bundle's network
    # a quick checkpoint without --quick: the sizes do not fit, and the message says what to do
    code, _, err = cli("predict", BUNDLE, "--input", str(images), "--output", str(tmp_path / "o"),
                       "--checkpoint", str(quick_checkpoint))
    one_line_error(code, err, "quick.pt", "of another shape", "add --quick (it fits the quick network)")
    assert not list((tmp_path / "o").rglob("*.tiff"))  # refused when the checkpoint loads, before predicting
    # the bioimage.io export loads it the same way and gives the same hint
    code, _, err = cli("export-bioimageio", BUNDLE, "--checkpoint", str(quick_checkpoint), "--out",
                       str(tmp_path / "pkg"), "--validate", "false")
    one_line_error(code, err, "quick.pt", "of another shape", "add --quick (it fits the quick network)")


# ---------------------------------------------------------------- outputs: overwrite, permissions, unwritable


@pytest.mark.slow
def test_predict_output_modes_and_overwrite(images, quick_checkpoint, tmp_path):
    old = os.umask(0o022)
    try:
        code, _, err = predict(images, tmp_path / "out", quick_checkpoint)
    finally:
        os.umask(old)
    assert code == 0, err[-2000:]
    written = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert [p.name for p in written] == ["good_label.tiff", "good_cells.csv", "good_overlay.png"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in written} == {0o644}
    code, _, err = predict(images, tmp_path / "out", quick_checkpoint)
    one_line_error(code, err, "already holds 3 prediction file(s)", "--overwrite")
    code, out, err = predict(images, tmp_path / "out", quick_checkpoint, "--overwrite")
    assert code == 0 and "replacing the earlier predictions for good" in out + err


def unwritable(tmp_path: Path) -> Path:
    """A folder this process may not write into (for root, which may write into any mode-0500 folder: /sys)."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    return locked if not os.access(locked, os.W_OK) else Path("/sys")


def test_json_and_csv_outputs_refuse_folders_existing_files_and_read_only_places(tmp_path):
    gt = tmp_path / "gt"
    labels = np.zeros((20, 20), np.uint16)
    labels[5:10, 5:10] = 1
    gt.mkdir()
    tifffile.imwrite(gt / "a.tif", labels)
    args = ["evaluate", "instance", "--pred", str(gt), "--gt", str(gt)]
    one_line_error(*cli(*args, "--json", str(tmp_path))[::2], "--json names a folder")
    report = tmp_path / "report.json"
    assert cli(*args, "--json", str(report))[0] == 0 and report.is_file()
    one_line_error(*cli(*args, "--json", str(report))[::2], "--json exists; pass --overwrite")
    assert cli(*args, "--json", str(report), "--overwrite")[0] == 0
    one_line_error(*cli(*args, "--json", str(unwritable(tmp_path) / "r.json"))[::2], "r.json", "Permission denied")
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.ones((20, 20), np.uint16))
    old = os.umask(0o022)
    try:
        assert cli("measure", "--image", str(image), "--labels", str(gt / "a.tif"), "--out", str(tmp_path / "c.csv"))[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c.csv").stat().st_mode) == 0o644
    one_line_error(*cli("measure", "--image", str(image), "--labels", str(gt / "a.tif"), "--out",
                        str(tmp_path / "c.csv"))[::2], "--out exists")


def test_set_takes_only_keys_of_the_config(images, quick_checkpoint, tmp_path):
    code, _, err = predict(images, tmp_path / "o", quick_checkpoint, "--set", "{no_such_key: 1}")
    one_line_error(code, err, "--set: 'no_such_key' is not a key of mediar_cellseg's inference.yaml")
    code, _, err = predict(images, tmp_path / "o", quick_checkpoint, "--set", "[1, 2]")
    one_line_error(code, err, "--set must be a mapping")


def test_number_options_are_checked(tmp_path):
    args = ["evaluate", "instance", "--pred", str(tmp_path), "--gt", str(tmp_path)]
    one_line_error(*cli(*args, "--iou", "abc")[::2], "--iou must be a number, got 'abc'")
    one_line_error(*cli(*args, "--iou", "1.5")[::2], "--iou must lie in (0.0, 1.0)")
    one_line_error(*cli(*args, "--border", "-1")[::2], "--border must lie in [0, ...]")


def test_border_that_excludes_every_cell_is_reported_not_scored(tmp_path):
    gt = tmp_path / "gt"
    gt.mkdir()
    labels = np.zeros((20, 20), np.uint16)
    labels[0:4, 0:4] = 1  # touches the border
    tifffile.imwrite(gt / "a.tif", labels)
    code, out, err = cli("evaluate", "instance", "--pred", str(gt), "--gt", str(gt), "--border", "2")
    one_line_error(code, err, "every ground-truth cell lies within 2 px of the image border")
    assert '"f1": 1.0' not in out


# ---------------------------------------------------------------- training: bad data sets stop before any step


def run_train(*args: str) -> subprocess.CompletedProcess:
    command = bundle_cli.bundle_command(BUNDLE, ["train", "quick"], *args)
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_training_without_labels_or_with_a_label_of_another_size_stops_with_one_line(tmp_path):
    data = synthesize("cellseg", 3, tmp_path / "data", seed=0, size=(64, 64))
    for label in (data / "labels").iterdir():
        label.rename(tmp_path / label.name)
    result = run_train("--bundle_root", str(tmp_path / "b1"), "--dataset_dir", str(data))
    assert result.returncode == 2  # EXIT_BAD_INPUT, as the cellzoo command
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no labelled items to train on: none of the 3 item(s) found has 'label'" in errors[0]
    assert str(data) in errors[0] and "Traceback" not in result.stderr and "Epoch" not in result.stdout

    (tmp_path / "cell_00001_label.tiff").rename(data / "labels" / "cell_00001_label.tiff")
    tifffile.imwrite(data / "labels" / "cell_00002_label.tiff", np.ones((48, 64), np.uint16))
    result = run_train("--bundle_root", str(tmp_path / "b2"), "--dataset_dir", str(data))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert "cell_00002.tif" in errors[0] and "differ in size" in errors[0] and "48x64" in errors[0]
    assert "Epoch" not in result.stdout
