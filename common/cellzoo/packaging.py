"""Turning a bundle folder into a distributable zip, and installing such a zip safely.

The zip follows the layout `python -m monai.bundle download` expects: every entry lies under one top-level
`<name>/` folder, so extracting it into a bundle directory gives `<bundle_dir>/<name>/configs/metadata.json`.
Files too large for the zip are published beside it and listed in `<name>/large_files.yml`, the file that
`python -m monai.bundle download_large_files` reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

import yaml

from cellzoo.bundles import bundle_path
from cellzoo.errors import InputError

logger = logging.getLogger(__name__)

LARGE_FILES_NAME = "large_files.yml"
HASH_TYPES = ("md5", "sha1", "sha256", "sha512")  # the ones monai.apps.utils.check_hash accepts
# Caches anywhere in the bundle; run outputs only at its top level, where the configs write them.
CACHE_DIRS = {"__pycache__"}
OUTPUT_DIRS = {"runs", "predictions", "eval"}
RESUME_DIR = ("models", "resume")  # training states for --resume: large and of no use to a downloader
# Fixed timestamp (the earliest a zip can store) so that the same bundle always gives the same bytes.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
CHUNK = 1024 * 1024
PROGRESS_EVERY = 16 * CHUNK  # log download progress for files larger than this, every this many bytes


# ---------------------------------------------------------------- packaging

def package_bundle(bundle: str | Path, out_dir: str | Path, large_file_mb: float = 25,
                   base_url: str | None = None) -> Path:
    """Write `<out_dir>/<name>_v<version>.zip`; files over `large_file_mb` go to `<name>_v<version>_files/`.

    Large files are listed in the zip's `<name>/large_files.yml` with URL `<base_url>/<file name>` and their
    sha256. Without `base_url` the URL is a file:// URL of the copy on this machine (fine for local use;
    pass the release URL when publishing). Returns the zip path.
    """
    root = bundle_path(bundle).resolve()
    name, version = root.name, bundle_version(root)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{name}_v{version}"
    limit = float(large_file_mb) * 1024 * 1024
    # an out_dir inside the bundle must not ship the previous zips
    files = [rel for rel in bundle_files(root) if not (root / rel).is_relative_to(out_dir)]
    large = [rel for rel in files if _is_large(root / rel, rel, limit)]
    small = [rel for rel in files if rel not in large]
    entries = {f"{name}/{rel}": (root / rel).read_bytes() for rel in small}
    if large:
        files_dir = out_dir / f"{stem}_files"
        url_base = base_url.rstrip("/") if base_url else files_dir.as_uri()
        listing = publish_large_files(root, large, files_dir, url_base)
        entries[f"{name}/{LARGE_FILES_NAME}"] = yaml.safe_dump({"large_files": listing}, sort_keys=False).encode()
        if not base_url:
            logger.warning("no base_url: large files point at %s, which only works on this machine", url_base)
    zip_path = out_dir / f"{stem}.zip"
    write_zip_atomically(zip_path, entries)
    for entry in sorted(entries):
        logger.debug("zipped %s (%d bytes)", entry, len(entries[entry]))
    logger.info("packed %d files of %s into %s", len(entries), root, zip_path)
    for rel in large:
        logger.info("large file %s published beside it (not in the zip)", rel)
    return zip_path


def bundle_version(root: Path) -> str:
    """The bundle's version from configs/metadata.json, which must also have a changelog entry for it."""
    meta_path = root / "configs" / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError as err:
        raise InputError("bundle has no configs/metadata.json", meta_path) from err
    except json.JSONDecodeError as err:
        raise InputError(f"invalid metadata.json ({err})", meta_path) from err
    version = str(meta.get("version", "")).strip()
    if not version:
        raise InputError("metadata.json has no 'version'", meta_path)
    if version not in (meta.get("changelog") or {}):
        raise InputError(f"version {version} has no entry in 'changelog'", meta_path)
    return version


def bundle_files(root: Path) -> list[PurePosixPath]:
    """Relative paths of the files to ship, sorted, without caches, run outputs and hidden files."""
    found = []
    for path in root.rglob("*"):
        rel = PurePosixPath(path.relative_to(root).as_posix())
        if path.is_file() and not _skipped(rel):
            found.append(rel)
    return sorted(found)


def _is_large(path: Path, rel: PurePosixPath, limit: float) -> bool:
    # configs/ always goes in the zip: metadata.json marks a bundle and MONAI reads it right after extracting
    return rel.parts[0] != "configs" and path.stat().st_size > limit


def _skipped(rel: PurePosixPath) -> bool:
    if any(part.startswith(".") or part in CACHE_DIRS for part in rel.parts):
        return True
    if rel.parts[0] in OUTPUT_DIRS or rel.parts[0].startswith("mlruns") or rel.parts[:2] == RESUME_DIR:
        return True
    return rel.suffix == ".pyc"


def publish_large_files(root: Path, large: list[PurePosixPath], files_dir: Path, url_base: str) -> list[dict]:
    """Copy large files into `files_dir` under their file names; their large_files.yml records (MONAI keys).

    The copies are flat because GitHub release assets (one place to publish them) have no folders;
    hence two large files with one file name are refused.
    """
    names = [rel.name for rel in large]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise InputError(f"large files share a file name, rename one: {', '.join(clashes)}", root)
    files_dir.mkdir(parents=True, exist_ok=True)
    listing = []
    for rel in large:
        source, target = root / rel, files_dir / rel.name
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        listing.append({"path": str(rel), "url": f"{url_base}/{urllib.parse.quote(rel.name)}",
                        "hash_val": file_hash(target), "hash_type": "sha256"})
    return listing


def write_zip_atomically(zip_path: Path, entries: dict[str, bytes]) -> None:
    """Write a deterministic zip (sorted names, fixed time and mode) to a temp file, then rename it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{zip_path.name}.", suffix=".tmp", dir=zip_path.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            for name in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                archive.writestr(info, entries[name])
        os.replace(tmp, zip_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def file_hash(path: str | Path, hash_type: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(hash_type)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- safe installing

def check_archive_members(zip_path: str | Path, target_dir: str | Path) -> list[zipfile.ZipInfo]:
    """Refuse the whole archive if any entry is absolute, has '..', lands outside target_dir or is a symlink.

    Every entry is checked before anything is written. MONAI's extractor (monai.apps.utils._extract_zip)
    checks entry by entry while writing, so a bad entry late in the zip leaves the earlier files on disk;
    this function exists to refuse such an archive up front. Returns the entries.
    """
    root = Path(target_dir).resolve()
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile as err:
        raise InputError(f"not a zip file ({err})", zip_path) from err
    for info in members:
        problem = _member_problem(info, root)
        if problem:
            raise InputError(f"unsafe archive entry {info.filename!r}: {problem}; nothing was extracted", zip_path)
    return members


def _member_problem(info: zipfile.ZipInfo, root: Path) -> str | None:
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        return "absolute path"
    if ".." in parts:
        return "contains '..'"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    if not (root / name).resolve().is_relative_to(root):
        return f"resolves outside {root}"
    return None


def install_bundle(source: str | Path, bundle_dir: str | Path, sha256: str | None = None) -> Path:
    """Download (URL) or read (path) a bundle zip, verify it and extract it; returns `<bundle_dir>/<name>`.

    All or nothing: the zip's sha256 (when given) and every entry are checked before anything is written,
    the bundle is extracted and its large files fetched and hash-checked in a temporary folder, and only a
    complete bundle is renamed into place.
    """
    bundle_dir = Path(bundle_dir)
    with tempfile.TemporaryDirectory(prefix="cellzoo-install-") as scratch:
        zip_path = _local_copy(str(source), Path(scratch))
        if sha256:
            _verify(zip_path, sha256.strip().lower(), "sha256", str(source))
        check_archive_members(zip_path, bundle_dir)
        name = _bundle_name(zip_path)
        target = bundle_dir / name
        if target.exists():
            raise InputError("a bundle is already installed there; remove it first", target)
        bundle_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.installing-", dir=bundle_dir))
        try:
            with zipfile.ZipFile(zip_path) as archive:
                archive.extractall(staging)
            fetch_large_files(staging / name)
            os.replace(staging / name, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("installed %s from %s", target, source)
    return target


def _local_copy(source: str, scratch: Path) -> Path:
    """The zip as a local file: a local path as is, a URL downloaded into `scratch`."""
    if urllib.parse.urlparse(source).scheme in ("http", "https", "file"):
        target = scratch / (Path(urllib.parse.urlparse(source).path).name or "bundle.zip")
        download(source, target)
        return target
    path = Path(source)
    if not path.is_file():
        raise InputError("bundle zip not found", path)
    return path


def download(url: str, target: Path) -> None:
    """Stream `url` to `target` (http, https or file), logging progress for large files."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done, next_log = 0, PROGRESS_EVERY
            for chunk in iter(lambda: response.read(CHUNK), b""):
                out.write(chunk)
                done += len(chunk)
                if total > PROGRESS_EVERY and done >= next_log:
                    logger.info("%s: %d of %d MB", target.name, done // CHUNK, total // CHUNK)
                    next_log += PROGRESS_EVERY
    except (OSError, ValueError) as err:  # URLError and HTTPError are OSErrors
        raise InputError(f"download failed ({err})", url) from err


def _verify(path: Path, expected: str, hash_type: str, source: str, label: str = "") -> None:
    """InputError naming `source` unless the file's digest equals `expected`."""
    actual = file_hash(path, hash_type)
    if actual != expected:
        raise InputError(f"hash mismatch{label}: expected {expected}, got {actual} ({hash_type})", source)


def _bundle_name(zip_path: Path) -> str:
    """The single top-level folder of the zip, which must hold configs/metadata.json."""
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
    tops = sorted({name.split("/")[0] for name in names})
    if len(tops) != 1 or not any(name.startswith(f"{tops[0]}/") for name in names):
        raise InputError(f"a bundle zip holds exactly one top-level folder, found {tops}", zip_path)
    if f"{tops[0]}/configs/metadata.json" not in names:
        raise InputError(f"no {tops[0]}/configs/metadata.json in the zip", zip_path)
    return tops[0]


def fetch_large_files(root: Path) -> list[Path]:
    """Download every file listed in `<root>/large_files.yml` and check its hash; returns their paths.

    Each file is downloaded next to its target and renamed into place only after its hash matched, so a
    corrupt or tampered file is never left in the bundle. Entries without a hash are refused.
    """
    listing_path = root / LARGE_FILES_NAME
    if not listing_path.is_file():
        return []
    fetched = []
    for entry in _large_file_entries(listing_path):
        target = _large_file_target(root, entry["path"], listing_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:
            download(entry["url"], partial)
            _verify(partial, entry["hash_val"], entry["hash_type"], entry["url"], label=f" for {entry['path']}")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        fetched.append(target)
        logger.info("fetched large file %s", entry["path"])
    return fetched


def listed_large_files(zip_path: str | Path) -> list[dict]:
    """The large_files.yml records of a packaged zip (empty when every file is inside it)."""
    with zipfile.ZipFile(zip_path) as archive:
        listing = [name for name in archive.namelist() if name.split("/")[1:] == [LARGE_FILES_NAME]]
        text = archive.read(listing[0]).decode() if listing else ""
    return (yaml.safe_load(text) or {}).get("large_files") or []


def _large_file_entries(listing_path: Path) -> list[dict]:
    """Validated records of large_files.yml: path, url, hash_val (lower case) and hash_type."""
    try:
        entries = (yaml.safe_load(listing_path.read_text()) or {}).get("large_files") or []
    except (yaml.YAMLError, AttributeError) as err:
        raise InputError(f"invalid {LARGE_FILES_NAME} ({err})", listing_path) from err
    records = []
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("path") or not entry.get("url"):
            raise InputError(f"each large file needs 'path' and 'url', got {entry!r}", listing_path)
        if not entry.get("hash_val"):
            raise InputError(f"large file {entry['path']} has no hash_val; refusing an unverifiable file",
                             listing_path)
        hash_type = str(entry.get("hash_type") or "sha256").lower()
        if hash_type not in HASH_TYPES:
            raise InputError(f"unsupported hash_type {hash_type!r} for {entry['path']}", listing_path)
        records.append({"path": str(entry["path"]), "url": str(entry["url"]),
                        "hash_val": str(entry["hash_val"]).strip().lower(), "hash_type": hash_type})
    return records


def _large_file_target(root: Path, rel: str, listing_path: Path) -> Path:
    """Where a large file goes; a path that leaves the bundle folder is refused."""
    resolved = root.resolve()
    target = (resolved / rel).resolve()
    if PurePosixPath(rel).is_absolute() or not target.is_relative_to(resolved) or target == resolved:
        raise InputError(f"large file path {rel!r} leaves the bundle folder", listing_path)
    return target
