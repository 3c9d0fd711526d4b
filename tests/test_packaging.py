"""Bundle packaging, download with MONAI's own runner, and safe installing of bundle zips."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from cellzoo.cli import EXIT_BAD_INPUT, main
from cellzoo.errors import InputError
from cellzoo.packaging import ZIP_EPOCH, check_archive_members, install_bundle, package_bundle

NAME = "mediar_cellseg"
SOURCE = Path(__file__).resolve().parents[1] / "bundles" / NAME
VERSION = json.loads((SOURCE / "configs" / "metadata.json").read_text())["version"]
ZIP_NAME = f"{NAME}_v{VERSION}.zip"
LARGE_MB = 0.1  # above every file of the real bundle (all < 20 KB), below the fake weights
LARGE_BYTES = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


JUNK = ["configs/__pycache__/x.cpython-311.pyc", "helper.pyc", "runs/fold0/log.txt", "predictions/a.tiff",
        "eval/scores.json", "mlruns/0/meta.yaml", "mlruns.db", ".DS_Store", "docs/.ipynb_checkpoints/n.md"]


def copy_bundle(dst: Path) -> Path:
    """The real bundle copied to dst/<name>, plus caches and run outputs that packaging must leave out."""
    root = dst / NAME
    shutil.copytree(SOURCE, root, ignore=shutil.ignore_patterns("__pycache__", "runs", "predictions", "eval",
                                                                 "mlruns*", ".*"))
    shutil.rmtree(root / "models", ignore_errors=True)  # a local checkpoint of the source bundle is not ours
    (root / "models").mkdir()
    for rel in JUNK:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("junk")
    return root


def shipped_files(root: Path) -> set[str]:
    """Zip entry names expected for a bundle copy: its files except junk and the large file."""
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    return {f"{NAME}/{rel}" for rel in files - set(JUNK) - {"models/extra_weights.bin"}}


def read_zip(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output free of request lines
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A loopback HTTP server over a temp folder: (folder, base URL)."""
    root = tmp_path_factory.mktemp("served")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def packaged(server, tmp_path_factory):
    """The bundle with a tiny models/model.pt and 200 KB of fake weights, packaged into the served folder."""
    served, url = server
    root = copy_bundle(tmp_path_factory.mktemp("src"))
    torch.save({"model": {"w": torch.arange(4.0)}}, root / "models" / "model.pt")
    (root / "models" / "extra_weights.bin").write_bytes(LARGE_BYTES)
    out = served / "tiny"
    base_url = f"{url}/tiny/{NAME}_v{VERSION}_files"
    zip_path = package_bundle(root, out, large_file_mb=LARGE_MB, base_url=base_url)
    return {"root": root, "zip": zip_path, "url": f"{url}/tiny/{ZIP_NAME}", "base_url": base_url, "out": out}


# ---------------------------------------------------------------- packaging

def test_package_layout(packaged):
    zip_path, root = packaged["zip"], packaged["root"]
    assert zip_path == packaged["out"] / ZIP_NAME
    entries = read_zip(zip_path)
    expected = shipped_files(root) | {f"{NAME}/large_files.yml"}
    assert {f"{NAME}/configs/inference.yaml", f"{NAME}/models/model.pt", f"{NAME}/LICENSE"} <= expected
    assert set(entries) == expected  # no caches, run outputs, hidden files, nor the large file
    assert entries[f"{NAME}/configs/metadata.json"] == (root / "configs" / "metadata.json").read_bytes()
    assert entries[f"{NAME}/models/model.pt"] == (root / "models" / "model.pt").read_bytes()
    with zipfile.ZipFile(zip_path) as archive:
        assert {info.date_time for info in archive.infolist()} == {ZIP_EPOCH}
        assert [info.filename for info in archive.infolist()] == sorted(entries)


def test_package_large_files(packaged):
    listing = yaml.safe_load(read_zip(packaged["zip"])[f"{NAME}/large_files.yml"])
    assert listing == {"large_files": [{
        "path": "models/extra_weights.bin", "url": f"{packaged['base_url']}/extra_weights.bin",
        "hash_val": sha256(LARGE_BYTES), "hash_type": "sha256"}]}
    copy = packaged["out"] / f"{NAME}_v{VERSION}_files" / "extra_weights.bin"
    assert copy.read_bytes() == LARGE_BYTES


def test_package_is_deterministic(packaged, tmp_path):
    again = package_bundle(packaged["root"], tmp_path, large_file_mb=LARGE_MB, base_url=packaged["base_url"])
    assert again.read_bytes() == packaged["zip"].read_bytes()
    assert not list(tmp_path.glob(".*"))  # no temp file left behind


def test_package_without_base_url_points_at_local_copy(packaged, tmp_path):
    zip_path = package_bundle(packaged["root"], tmp_path, large_file_mb=LARGE_MB)
    [entry] = yaml.safe_load(read_zip(zip_path)[f"{NAME}/large_files.yml"])["large_files"]
    assert entry["url"] == (tmp_path / f"{NAME}_v{VERSION}_files" / "extra_weights.bin").as_uri()
    installed = install_bundle(zip_path, tmp_path / "installed")  # file:// works for local installs
    assert (installed / "models" / "extra_weights.bin").read_bytes() == LARGE_BYTES


@pytest.mark.parametrize("meta, problem", [({"changelog": {}}, "no 'version'"),
                                           ({"version": "0.2.0", "changelog": {"0.1.0": "x"}}, "changelog")])
def test_package_refuses_bad_metadata(tmp_path, meta, problem):
    root = tmp_path / "b"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=problem):
        package_bundle(root, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.zip"))


# ---------------------------------------------------------------- MONAI's own downloader

def monai_bundle(*args, cwd, timeout=600):
    """Run `python -m monai.bundle ...` without PYTHONPATH or CELLZOO_BUNDLES, as a user would."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CELLZOO_BUNDLES")}
    done = subprocess.run([sys.executable, "-m", "monai.bundle", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_monai_download_over_loopback(packaged, tmp_path):
    dl = tmp_path / "bundles_dl"
    monai_bundle("download", "--name", NAME, "--url", packaged["url"], "--bundle_dir", dl, cwd=tmp_path)
    bundle = dl / NAME
    # compared with the packaged copy: the source bundle may be edited while the tests run
    source = packaged["root"]
    assert (bundle / "configs" / "metadata.json").read_bytes() == (source / "configs" / "metadata.json").read_bytes()
    assert (bundle / "models" / "model.pt").read_bytes() == (packaged["root"] / "models" / "model.pt").read_bytes()
    assert not (bundle / "models" / "extra_weights.bin").exists()
    monai_bundle("download_large_files", "--bundle_path", bundle, cwd=tmp_path)
    assert (bundle / "models" / "extra_weights.bin").read_bytes() == LARGE_BYTES


@pytest.fixture(scope="module")
def trained_bundle_zip(server, quick_mediar, tmp_path_factory):
    """The bundle with the quick-trained models/model.pt, packaged with default limits, served: its URL."""
    served, url = server
    root = copy_bundle(tmp_path_factory.mktemp("trained_src"))
    shutil.copy(quick_mediar["ckpt"], root / "models" / "model.pt")
    zip_path = package_bundle(root, served / "trained")
    return f"{url}/trained/{zip_path.name}"


@pytest.mark.slow
def test_downloaded_bundle_segments_new_images(trained_bundle_zip, tmp_path):
    """monai.bundle download over loopback, then the downloaded bundle's inference config on unseen images."""
    from cellzoo.metrics.folders import evaluate_instance_folders
    from cellzoo.synthetic import synthesize

    dl = tmp_path / "bundles_dl"
    monai_bundle("download", "--name", NAME, "--url", trained_bundle_zip, "--bundle_dir", dl, cwd=tmp_path)
    bundle = dl / NAME
    assert not (bundle / "large_files.yml").exists()  # the quick model fits under the 25 MB default
    data = synthesize("cellseg", 2, tmp_path / "new", seed=77, size=(128, 128), modalities=("nuclear",))
    out = tmp_path / "pred"
    # only the downloaded folder is named: configs, metadata and weights all come from it
    configs = [str(bundle / "configs" / f"{name}.yaml") for name in ("inference", "quick")]
    monai_bundle("run", "--config_file", repr(configs), "--meta_file", bundle / "configs" / "metadata.json",
                 "--bundle_root", bundle, "--input_dir", data / "images", "--output_dir", out, cwd=tmp_path)
    images = sorted((data / "images").glob("*.tif"))
    assert len(images) == 2
    for image in images:
        labels = tifffile.imread(out / "labels" / f"{image.stem}_label.tiff")
        assert labels.shape == tifffile.imread(image).shape[-2:]
    scores = evaluate_instance_folders(str(out / "labels"), str(data / "labels"))
    assert scores["f1"] >= 0.6, scores


# ---------------------------------------------------------------- safe installing

def test_install_checks_sha256(packaged, tmp_path):
    target = tmp_path / "bundles"
    good = sha256(packaged["zip"].read_bytes())
    with pytest.raises(InputError, match=f"hash mismatch: expected {'0' * 64}, got {good}") as err:
        install_bundle(packaged["url"], target, sha256="0" * 64)
    assert packaged["url"] in str(err.value)
    assert not target.exists()
    bundle = install_bundle(packaged["url"], target, sha256=good.upper())
    assert bundle == target / NAME
    assert sorted(p.name for p in target.iterdir()) == [NAME]  # no staging folder left
    assert (bundle / "models" / "extra_weights.bin").read_bytes() == LARGE_BYTES
    source = packaged["root"] / "configs" / "train.yaml"
    assert (bundle / "configs" / "train.yaml").read_bytes() == source.read_bytes()
    with pytest.raises(InputError, match="already installed"):
        install_bundle(packaged["zip"], target)


def evil_zip(path: Path, bad_name: str, symlink: bool = False) -> Path:
    """A zip whose first entry is harmless bundle metadata and whose second is `bad_name`."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{NAME}/configs/metadata.json", (SOURCE / "configs" / "metadata.json").read_bytes())
        info = zipfile.ZipInfo(bad_name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd" if symlink else "evil")
    return path


def evil_cases(tmp_path: Path) -> dict[str, tuple[str, Path | None]]:
    """Entry name -> (description, the file it would write outside the target) for the refused zips."""
    target = tmp_path / "bundles"
    absolute = tmp_path / "abs" / "evil.txt"
    return {"../evil.txt": ("'..'", target.parent / "evil.txt"),
            f"{NAME}/../../evil2.txt": ("'..'", target.parent / "evil2.txt"),
            absolute.as_posix(): ("absolute", absolute),
            f"{NAME}/models/link": ("symbolic link", None)}


@pytest.mark.parametrize("case", range(4))
def test_install_refuses_unsafe_entries_before_writing(tmp_path, case):
    bad_name, (problem, escaped) = list(evil_cases(tmp_path).items())[case]
    zip_path = evil_zip(tmp_path / "evil.zip", bad_name, symlink=escaped is None)
    target = tmp_path / "bundles"
    with pytest.raises(InputError, match=problem) as err:
        install_bundle(zip_path, target)
    assert repr(bad_name) in str(err.value)
    assert not target.exists()
    assert escaped is None or not escaped.exists()
    with pytest.raises(InputError):
        check_archive_members(zip_path, target)


def test_monai_extractor_leaves_earlier_entries(tmp_path):
    """Why check_archive_members exists: MONAI refuses the bad entry only after writing the good one."""
    from monai.apps.utils import extractall

    zip_path = evil_zip(tmp_path / "evil.zip", "../evil.txt")
    with pytest.raises(ValueError, match="Unsafe path"):
        extractall(zip_path, tmp_path / "monai_out", has_base=True)
    assert (tmp_path / "monai_out" / NAME / "configs" / "metadata.json").is_file()
    assert not (tmp_path / "evil.txt").exists()


def test_install_refuses_zip_without_one_bundle_folder(tmp_path):
    zip_path = tmp_path / "two.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr(f"{NAME}/configs/metadata.json", "{}")
        archive.writestr("other/readme.txt", "x")
    with pytest.raises(InputError, match="exactly one top-level folder"):
        install_bundle(zip_path, tmp_path / "bundles")
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr(f"{NAME}/configs/train.yaml", "{}")
    with pytest.raises(InputError, match="metadata.json"):
        install_bundle(zip_path, tmp_path / "bundles")
    assert not (tmp_path / "bundles").exists()


@pytest.fixture
def tampered(packaged, tmp_path):
    """The packaged zip with a wrong hash_val for its large file."""
    entries = read_zip(packaged["zip"])
    listing = yaml.safe_load(entries[f"{NAME}/large_files.yml"])
    listing["large_files"][0]["hash_val"] = "f" * 64
    entries[f"{NAME}/large_files.yml"] = yaml.safe_dump(listing).encode()
    path = tmp_path / ZIP_NAME
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def test_install_refuses_large_file_with_wrong_hash(tampered, tmp_path):
    target = tmp_path / "bundles"
    with pytest.raises(InputError, match=f"hash mismatch for models/extra_weights.bin: expected {'f' * 64}, "
                                         f"got {sha256(LARGE_BYTES)}"):
        install_bundle(tampered, target)
    assert list(target.iterdir()) == []  # neither the bundle nor the bad file nor a staging folder


def test_monai_download_large_files_refuses_wrong_hash(tampered, tmp_path):
    from monai.apps.utils import HashCheckError
    from monai.bundle.scripts import download_large_files

    with zipfile.ZipFile(tampered) as archive:
        archive.extractall(tmp_path / "dl")
    bundle = tmp_path / "dl" / NAME
    with pytest.raises(HashCheckError, match="sha256 hash check of downloaded file failed"):
        download_large_files(bundle_path=str(bundle))
    assert not (bundle / "models" / "extra_weights.bin").exists()


# ---------------------------------------------------------------- CLI

def run_cli(args, capsys) -> tuple[int, str, str]:
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_package_prints_zip_and_large_files(packaged, tmp_path, capsys):
    code, out, _ = run_cli(["package", packaged["root"], "--out", tmp_path, "--large-file-mb", LARGE_MB,
                            "--base-url", packaged["base_url"]], capsys)
    assert code == 0
    assert out.splitlines() == [str(tmp_path / ZIP_NAME),
                                f"large file models/extra_weights.bin -> {packaged['base_url']}/extra_weights.bin"]
    assert (tmp_path / ZIP_NAME).read_bytes() == packaged["zip"].read_bytes()


def test_cli_install(packaged, tmp_path, capsys):
    code, out, _ = run_cli(["install", packaged["url"], "--bundle-dir", tmp_path / "b"], capsys)
    assert code == 0
    assert out.strip() == str(tmp_path / "b" / NAME)


@pytest.mark.parametrize("extra, needle", [([], "'../evil.txt'"), (["--sha256", "abc"], "64 hex digits")])
def test_cli_install_bad_zip_is_one_line_exit_2(tmp_path, capsys, extra, needle):
    zip_path = evil_zip(tmp_path / "evil.zip", "../evil.txt")
    code, out, err = run_cli(["install", zip_path, "--bundle-dir", tmp_path / "b", *extra], capsys)
    assert code == EXIT_BAD_INPUT
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "b").exists() and not (tmp_path / "evil.txt").exists()
