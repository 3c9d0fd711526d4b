"""Bundle packaging, download with MONAI's own runner, and safe installing of bundle zips."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from cellzoo.bundles import bundle_path
from cellzoo.cli import EXIT_BAD_INPUT, main
from cellzoo.errors import InputError
from cellzoo.packaging import MB, ZIP_EPOCH, check_archive_members, install_bundle, package_bundle
from loopback import serving

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
    shutil.rmtree(root / "models", ignore_errors=True)  # the shipped weights: each test puts its own there
    (root / "models").mkdir()
    # the shipped weights' picture (0.2 MB) would be a "large file" at these tests' 0.1 MB limit
    (root / "docs" / "release_overlay.png").unlink(missing_ok=True)
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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A loopback HTTP server over a temp folder: (folder, base URL)."""
    root = tmp_path_factory.mktemp("served")
    with serving(root) as url:
        yield root, url


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


@pytest.mark.parametrize("base_url", [None, "", "file:///srv/files", "ftp://example.org/files", "example.org/f"])
def test_package_large_files_need_http_base_url(packaged, tmp_path, base_url):
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        package_bundle(packaged["root"], out, large_file_mb=LARGE_MB, base_url=base_url)
    message = str(err.value)
    assert message.startswith(f"{packaged['root']}: files over 0.1 MB stay out of the zip (models/extra_weights.bin)")
    assert "must be http(s)" in message and (repr(base_url) if base_url else "none given") in message
    assert "pass --base-url with the http(s) address where the large files will be published" in message
    assert not out.exists()  # refused before the zip or the large-file folder was written


def test_install_local_zip_fetches_large_files_over_http(packaged, tmp_path):
    installed = install_bundle(packaged["zip"], tmp_path / "installed")  # a path; large files from loopback
    assert (installed / "models" / "extra_weights.bin").read_bytes() == LARGE_BYTES


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)], ids=["umask022", "umask027"])
def test_package_files_get_umask_permissions(packaged, tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        zip_path = package_bundle(packaged["root"], tmp_path, large_file_mb=LARGE_MB, base_url=packaged["base_url"])
    finally:
        os.umask(before)
    assert stat.S_IMODE(zip_path.stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / f"{NAME}_v{VERSION}_files" / "extra_weights.bin").stat().st_mode) == mode


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


def relisted(packaged, path: Path, **fields) -> Path:
    """The packaged zip, written to `path`, with `fields` changed in its large file's large_files.yml record."""
    entries = read_zip(packaged["zip"])
    listing = yaml.safe_load(entries[f"{NAME}/large_files.yml"])
    listing["large_files"][0].update(fields)
    entries[f"{NAME}/large_files.yml"] = yaml.safe_dump(listing).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


@pytest.fixture
def tampered(packaged, tmp_path):
    """The packaged zip with a wrong hash_val for its large file."""
    return relisted(packaged, tmp_path / ZIP_NAME, hash_val="f" * 64)


def test_install_refuses_large_file_with_wrong_hash(tampered, tmp_path):
    target = tmp_path / "bundles"
    with pytest.raises(InputError, match=f"hash mismatch for models/extra_weights.bin: expected {'f' * 64}, "
                                         f"got {sha256(LARGE_BYTES)}"):
        install_bundle(tampered, target)
    assert not target.exists()  # neither the bundle nor the bad file nor a staging folder nor the folder itself


def test_monai_download_large_files_refuses_wrong_hash(tampered, tmp_path):
    from monai.apps.utils import HashCheckError
    from monai.bundle.scripts import download_large_files

    with zipfile.ZipFile(tampered) as archive:
        archive.extractall(tmp_path / "dl")
    bundle = tmp_path / "dl" / NAME
    with pytest.raises(HashCheckError, match="sha256 hash check of downloaded file failed"):
        download_large_files(bundle_path=str(bundle))
    assert not (bundle / "models" / "extra_weights.bin").exists()


# ---------------------------------------------------------------- damaged zips, zip bombs, failed installs

NUMBERS = " ".join(map(str, range(60000))).encode()  # 350 KB that deflates to 130 KB of varied codes
ZEROS_MB = 50  # deflates to about 50 KB: a compression ratio of about 1000


def bundle_zip(path: Path, entries: dict[str, bytes]) -> Path:
    """A deflated bundle zip: the real metadata.json plus `entries`."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{NAME}/configs/metadata.json", (SOURCE / "configs" / "metadata.json").read_bytes())
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def forged(zip_path: Path, path: Path, entry: str, offset: int, value: int) -> Path:
    """A copy of a zip at `path` with one 4-byte field of `entry`'s central directory record set to `value`.

    Offsets: 16 CRC-32, 20 compressed size, 24 uncompressed size. Only the directory is changed: zipfile
    takes sizes and CRC from it, not from the local header.
    """
    data = bytearray(zip_path.read_bytes())
    record = data.rindex(entry.encode()) - 46  # the directory comes last, so the name's last copy is in it
    assert data[record:record + 4] == b"PK\x01\x02"
    struct.pack_into("<I", data, record + offset, value)
    path.write_bytes(bytes(data))
    return path


def corrupt_zip(path: Path, case: str) -> Path:
    """A bundle zip damaged as `case` says."""
    member = f"{NAME}/models/numbers.txt"
    good = bundle_zip(path, {member: NUMBERS})
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:
        info = archive.getinfo(member)
    if case == "random_bytes":
        data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    elif case == "truncated":
        data = data[: len(data) // 2]
    elif case == "bad_crc":
        return forged(good, path, member, 16, info.CRC ^ 1)
    elif case == "broken_deflate":  # 0xFF bytes mid-stream: zlib's "invalid block type"
        name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
        middle = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
        data[middle:middle + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    return path


CORRUPT = {"random_bytes": "File is not a zip file", "truncated": "File is not a zip file",
           "bad_crc": f"Bad CRC-32 for file '{NAME}/models/numbers.txt'", "broken_deflate": "invalid block type"}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_install_refuses_corrupt_zip_naming_the_url(server, tmp_path, case):
    served, url = server
    (served / "corrupt").mkdir(exist_ok=True)
    corrupt_zip(served / "corrupt" / f"{case}.zip", case)
    source = f"{url}/corrupt/{case}.zip"
    target = tmp_path / "bundles"
    with pytest.raises(InputError) as err:
        install_bundle(source, target)  # no sha256: the zip's own CRCs and structure are checked
    message = str(err.value)
    assert message.startswith(f"{source}: corrupt or unreadable zip (") and CORRUPT[case] in message
    assert message.endswith("nothing was installed")
    assert tempfile.gettempdir() not in message  # not the downloaded copy's path
    assert not target.exists()


@pytest.fixture(scope="module")
def bomb_zip(tmp_path_factory):
    """A bundle zip holding 50 MB of zeros as models/zeros.bin."""
    return bundle_zip(tmp_path_factory.mktemp("bomb") / "bomb.zip", {f"{NAME}/models/zeros.bin": bytes(ZEROS_MB * MB)})


def test_install_limits_compression_ratio(bomb_zip, tmp_path):
    target = tmp_path / "bundles"
    with pytest.raises(InputError) as err:
        install_bundle(bomb_zip, target)
    message = str(err.value)
    assert message.startswith(f"{bomb_zip}: entry '{NAME}/models/zeros.bin' inflates to over 200 times its "
                              "compressed size (a zip bomb?); nothing was installed")
    assert message.endswith("raise the limit with --max-ratio (max_ratio of install_bundle)")
    assert not target.exists()
    bundle = install_bundle(bomb_zip, target, max_ratio=5000)
    assert (bundle / "models" / "zeros.bin").stat().st_size == ZEROS_MB * MB


def test_install_limits_total_size(bomb_zip, tmp_path):
    target = tmp_path / "bundles"
    (target / "other").mkdir(parents=True)
    (target / "other" / "keep.txt").write_text("keep")
    with pytest.raises(InputError) as err:
        install_bundle(bomb_zip, target, max_ratio=5000, max_size_mb=10)
    message = str(err.value)
    assert message.startswith(f"{bomb_zip}: the zip inflates to over 10 MB (a zip bomb?); nothing was installed")
    assert message.endswith("raise the limit with --max-size-mb (max_size_mb of install_bundle)")
    assert [p.relative_to(target).as_posix() for p in sorted(target.rglob("*"))] == ["other", "other/keep.txt"]
    with pytest.raises(InputError, match="max_size_mb and max_ratio must be positive, got 0 and 200"):
        install_bundle(bomb_zip, target, max_size_mb=0)
    bundle = install_bundle(bomb_zip, target, max_ratio=5000, max_size_mb=ZEROS_MB + 1)
    assert (bundle / "models" / "zeros.bin").stat().st_size == ZEROS_MB * MB


@pytest.mark.parametrize("offset, value, needle", [
    (20, 2**31, "inflates to over 200 times"),  # claims 2 GB compressed: the ratio counts the zip's real size
    (24, 1000, "Bad CRC-32"),  # claims 1000 bytes: reading stops there, and the CRC of all 50 MB mismatches
])
def test_install_refuses_zip_whose_directory_lies(bomb_zip, tmp_path, offset, value, needle):
    entry = f"{NAME}/models/zeros.bin"
    liar = forged(bomb_zip, tmp_path / "liar.zip", entry, offset, value)
    with zipfile.ZipFile(liar) as archive:  # what a check of the declared sizes alone would see
        info = archive.getinfo(entry)
        assert info.file_size <= 200 * info.compress_size
    target = tmp_path / "bundles"
    with pytest.raises(InputError, match=needle) as err:
        install_bundle(liar, target)
    assert str(err.value).startswith(f"{liar}: ")
    assert not target.exists()


@pytest.mark.parametrize("scheme", ["file", "ftp"])
def test_install_refuses_large_file_url_not_http(packaged, tmp_path, scheme):
    copy = packaged["out"] / f"{NAME}_v{VERSION}_files" / "extra_weights.bin"  # right bytes, right hash
    url = copy.as_uri() if scheme == "file" else "ftp://127.0.0.1:1/extra_weights.bin"
    zip_path = relisted(packaged, tmp_path / ZIP_NAME, url=url)
    target = tmp_path / "bundles"
    with pytest.raises(InputError) as err:
        install_bundle(zip_path, target)
    assert str(err.value) == (f"{NAME}/large_files.yml in {zip_path}: large file models/extra_weights.bin has "
                              f"URL {url!r}; only http and https URLs are allowed")
    assert not target.exists()


FAILURES = ["zip_hash", "unsafe_entry", "corrupt_member", "ratio_limit", "size_limit", "large_hash", "large_scheme"]


def failing_install(case: str, tmp_path: Path, packaged, bomb_zip) -> tuple[Path, dict, str]:
    """A zip whose install fails as `case` says, the install_bundle keywords, and a fragment of the error."""
    path = tmp_path / f"{case}.zip"
    if case == "zip_hash":
        return Path(shutil.copy(packaged["zip"], path)), {"sha256": "0" * 64}, "hash mismatch: expected 000"
    if case == "unsafe_entry":
        return evil_zip(path, "../evil.txt"), {}, "unsafe archive entry '../evil.txt'"
    if case == "corrupt_member":
        return corrupt_zip(path, "bad_crc"), {}, "corrupt or unreadable zip"
    if case in ("ratio_limit", "size_limit"):
        limits = {} if case == "ratio_limit" else {"max_ratio": 5000, "max_size_mb": 10}
        return Path(shutil.copy(bomb_zip, path)), limits, "--max-ratio" if case == "ratio_limit" else "--max-size-mb"
    if case == "large_hash":  # fails after extraction into the staging folder, while fetching the large file
        return relisted(packaged, path, hash_val="f" * 64), {}, "hash mismatch for models/extra_weights.bin"
    return relisted(packaged, path, url="ftp://127.0.0.1:1/extra_weights.bin"), {}, "only http and https"


def error_label(case: str, source: str, packaged) -> str:
    """What the error of a failing install names: the user's zip, or for large-file problems what is at fault."""
    if case == "large_hash":
        return f"{packaged['base_url']}/extra_weights.bin"
    if case == "large_scheme":
        return f"{NAME}/large_files.yml in {source}"
    return source


def tree(folder: Path) -> dict[str, bytes | None]:
    """Relative path -> contents (None for folders) of everything under `folder`."""
    return {p.relative_to(folder).as_posix(): None if p.is_dir() else p.read_bytes() for p in folder.rglob("*")}


@pytest.mark.parametrize("existed", [False, True])
@pytest.mark.parametrize("case", FAILURES)
def test_failed_install_leaves_bundle_dir_as_it_was(packaged, bomb_zip, tmp_path, case, existed):
    zip_path, keywords, fragment = failing_install(case, tmp_path, packaged, bomb_zip)
    target = tmp_path / "new" / "bundles"  # two folders that install_bundle creates when missing
    if existed:
        (target / "other").mkdir(parents=True)
        (target / "other" / "keep.txt").write_text("keep")
    before = tree(tmp_path / "new")
    with pytest.raises(InputError) as err:
        install_bundle(zip_path, target, **keywords)
    assert str(err.value).startswith(f"{error_label(case, str(zip_path), packaged)}: ") and fragment in str(err.value)
    assert (tmp_path / "new").exists() == existed
    assert tree(tmp_path / "new") == before  # no bundle, staging folder or partial large file
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("case", FAILURES)
def test_install_error_names_the_url_not_a_temp_copy(packaged, bomb_zip, server, tmp_path, case):
    served, url = server
    zip_path, keywords, fragment = failing_install(case, tmp_path, packaged, bomb_zip)
    (served / "failing").mkdir(exist_ok=True)
    shutil.copy(zip_path, served / "failing" / zip_path.name)
    source = f"{url}/failing/{zip_path.name}"
    with pytest.raises(InputError) as err:
        install_bundle(source, tmp_path / "bundles", **keywords)
    message = str(err.value)
    assert message.startswith(f"{error_label(case, source, packaged)}: ") and fragment in message
    assert tempfile.gettempdir() not in message and "cellzoo-install-" not in message
    assert not (tmp_path / "bundles").exists()


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


def test_download_progress_ends_with_the_whole_size(tmp_path, caplog):
    """A file over the progress step logs its progress and, last, that it is complete."""
    from cellzoo.packaging import download  # not in the module's imports above: only this test uses it

    source = tmp_path / "big.bin"
    source.write_bytes(b"\0" * (17 * 2**20 + 5))
    with caplog.at_level("INFO", logger="cellzoo.packaging"):
        download(source.as_uri(), tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").stat().st_size == source.stat().st_size
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["copy.bin: 16 of 17 MB", "copy.bin: 17 MB downloaded"]


def test_package_ships_the_given_checkpoint_where_inference_reads_it(tmp_path):
    """--checkpoint: the trained file goes to the bundle's inference path in the zip (PMC: models/detection/),
    the shipped-weights record it replaces stays out, and the bundle folder is left as it was."""
    checkpoint = tmp_path / "trained.pt"
    torch.save({"model": {"weight": torch.arange(6.0)}}, checkpoint)
    root = bundle_path("pmc_detection")
    before = (root / "models" / "detection" / "model.pt").read_bytes()
    zip_path = package_bundle("pmc_detection", tmp_path / "dist", checkpoint=checkpoint)
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.read("pmc_detection/models/detection/model.pt") == checkpoint.read_bytes()
        assert "pmc_detection/models/release.json" not in archive.namelist()
        assert "pmc_detection/configs/inference.yaml" in archive.namelist()
    assert (root / "models" / "detection" / "model.pt").read_bytes() == before
    assert (root / "models" / "release.json").is_file()
    with pytest.raises(InputError, match="checkpoint not found"):
        package_bundle("pmc_detection", tmp_path / "dist2", checkpoint=tmp_path / "none.pt")
