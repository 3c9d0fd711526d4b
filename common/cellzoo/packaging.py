"""Turning a bundle folder into a distributable zip, and installing such a zip safely.

The zip follows the layout `python -m monai.bundle download` expects: every entry lies under one top-level
`<name>/` folder, so extracting it into a bundle directory gives `<bundle_dir>/<name>/configs/metadata.json`.
Files too large for the zip are published beside it, at an http(s) address, and listed in
`<name>/large_files.yml`, the file that `python -m monai.bundle download_large_files` reads.
"""

from __future__ import annotations

import contextlib
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
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import yaml

from cellzoo.bundles import bundle_path
from cellzoo.errors import InputError
from cellzoo.io.files import write_atomically

logger = logging.getLogger(__name__)

LARGE_FILES_NAME = "large_files.yml"
HASH_TYPES = ("md5", "sha1", "sha256", "sha512")  # the ones monai.apps.utils.check_hash accepts
HTTP_SCHEMES = ("http", "https")  # the only ones large_files.yml may use: no file:// reads of this machine
# Caches anywhere in the bundle; run outputs only at its top level, where the configs write them.
CACHE_DIRS = {"__pycache__"}
OUTPUT_DIRS = {"runs", "predictions", "eval"}
RESUME_DIR = ("models", "resume")  # training states for --resume: large and of no use to a downloader
# Fixed timestamp (the earliest a zip can store) so that the same bundle always gives the same bytes.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
MB = 1024 * 1024
CHUNK = MB
PROGRESS_EVERY = 16 * CHUNK  # log download progress for files larger than this, every this many bytes
# Zip bomb limits of install_bundle (the CLI raises them with --max-size-mb and --max-ratio): all entries
# together inflate to at most MAX_SIZE_MB, each entry to MAX_RATIO times its compressed size, or to
# RATIO_FREE_BYTES whatever its ratio, since a small file of repeated bytes legitimately compresses 1000:1.
MAX_SIZE_MB = 2048
MAX_RATIO = 200
RATIO_FREE_BYTES = MB
# What zipfile and zlib raise on a damaged zip (RuntimeError: encrypted entry; NotImplementedError: unknown
# compression method; EOFError: compressed data cut short).
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError, NotImplementedError, RuntimeError)


# ---------------------------------------------------------------- packaging

def package_bundle(bundle: str | Path, out_dir: str | Path, large_file_mb: float = 25,
                   base_url: str | None = None, checkpoint: str | Path | None = None) -> Path:
    """Write `<out_dir>/<name>_v<version>.zip`; files over `large_file_mb` go to `<name>_v<version>_files/`.

    Large files are listed in the zip's `<name>/large_files.yml` with URL `<base_url>/<file name>` and their
    sha256, so a bundle with large files needs `base_url`: the http(s) address where they will be published
    (installs download large files over http(s) only). `checkpoint`: a trained model.pt shipped at the
    path the bundle's inference.yaml reads, in place of the bundle's own weights (see
    `_with_checkpoint`); the bundle folder itself is not changed. Returns the zip path.
    """
    root = bundle_path(bundle).resolve()
    if checkpoint is not None:
        with _with_checkpoint(root, Path(checkpoint)) as staged:
            return package_bundle(staged, out_dir, large_file_mb, base_url)
    name, version = root.name, bundle_version(root)
    out_dir = Path(out_dir).resolve()
    stem = f"{name}_v{version}"
    limit = float(large_file_mb) * MB
    # an out_dir inside the bundle must not ship the previous zips
    files = [rel for rel in bundle_files(root) if not (root / rel).is_relative_to(out_dir)]
    large = [rel for rel in files if _is_large(root / rel, rel, limit)]
    if large:
        _check_base_url(base_url, large, large_file_mb, root)  # before anything is written
    entries = {f"{name}/{rel}": (root / rel).read_bytes() for rel in files if rel not in large}
    out_dir.mkdir(parents=True, exist_ok=True)
    if large:
        listing = publish_large_files(root, large, out_dir / f"{stem}_files", base_url.rstrip("/"))
        entries[f"{name}/{LARGE_FILES_NAME}"] = yaml.safe_dump({"large_files": listing}, sort_keys=False).encode()
    zip_path = out_dir / f"{stem}.zip"
    write_zip_atomically(zip_path, entries)
    for entry in sorted(entries):
        logger.debug("zipped %s (%d bytes)", entry, len(entries[entry]))
    logger.info("packed %d files of %s into %s", len(entries), root, zip_path)
    for rel in large:
        logger.info("large file %s published beside it (not in the zip)", rel)
    return zip_path


@contextlib.contextmanager
def _with_checkpoint(root: Path, checkpoint: Path):
    """A temporary copy of the bundle with `checkpoint` at the path inference.yaml reads (its defaults:
    ISL's task, UNETR's organelle). The shipped-weights record goes: it describes the weights replaced."""
    from cellzoo.bundles import parse_config_value
    from cellzoo.engines import read_state_dict

    if not checkpoint.is_file():
        raise InputError("checkpoint not found", checkpoint)
    read_state_dict(checkpoint)  # a file torch cannot read (or that holds pickled code) is refused here
    target = Path(parse_config_value(root, "inference", "checkpoints")[0]).resolve()
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / root.name
        for rel in bundle_files(root):
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, staged / rel)
        (staged / "models" / "release.json").unlink(missing_ok=True)
        placed = staged / target.relative_to(root)
        placed.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, placed)
        logger.info("packaging %s as %s", checkpoint, target.relative_to(root))
        yield staged


def _check_base_url(base_url: str | None, large: list[PurePosixPath], large_file_mb: float, root: Path) -> None:
    """InputError unless `base_url` is an http(s) URL that the large files can be listed under."""
    if base_url and _is_http(base_url):
        return
    given = f"got {base_url!r}" if base_url else "none given"
    shown = ", ".join(map(str, large[:3])) + (f" (+{len(large) - 3} more)" if len(large) > 3 else "")
    raise InputError(f"files over {large_file_mb:g} MB stay out of the zip ({shown}) and are downloaded from "
                     f"the base URL, which must be http(s) ({given}): pass --base-url with the http(s) address "
                     "where the large files will be published", root)


def _is_http(url: str) -> bool:
    """Whether `url` is an http or https URL with a host."""
    parsed = urllib.parse.urlparse(url)
    return parsed.scheme.lower() in HTTP_SCHEMES and bool(parsed.netloc)


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
    listing = []
    for rel in large:
        source, target = root / rel, files_dir / rel.name
        write_atomically(target, lambda tmp, source=source: shutil.copyfile(source, tmp))
        listing.append({"path": str(rel), "url": f"{url_base}/{urllib.parse.quote(rel.name)}",
                        "hash_val": file_hash(target), "hash_type": "sha256"})
    return listing


def write_zip_atomically(zip_path: Path, entries: dict[str, bytes]) -> None:
    """Write a deterministic zip (sorted names, fixed time and mode) through write_atomically (umask mode)."""
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w") as archive:
            for name in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                archive.writestr(info, entries[name])

    write_atomically(zip_path, write)


def file_hash(path: str | Path, hash_type: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(hash_type)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- safe installing

@contextlib.contextmanager
def _zip_errors(source: str | Path):
    """Turn a damaged zip's errors (zipfile, zlib, EOF) into one InputError naming `source`."""
    try:
        yield
    except ZIP_ERRORS as err:
        raise InputError(f"corrupt or unreadable zip ({type(err).__name__}: {err}); nothing was installed",
                         source) from err


def check_archive_members(zip_path: str | Path, target_dir: str | Path,
                          source: str | Path | None = None) -> list[zipfile.ZipInfo]:
    """Refuse the whole archive if any entry is absolute, has '..', lands outside target_dir or is a symlink.

    Every entry is checked before anything is written. MONAI's extractor (monai.apps.utils._extract_zip)
    checks entry by entry while writing, so a bad entry late in the zip leaves the earlier files on disk;
    this function exists to refuse such an archive up front. Errors name `source` (default: zip_path).
    Returns the entries.
    """
    source = zip_path if source is None else source
    root = Path(target_dir).resolve()
    with _zip_errors(source), zipfile.ZipFile(zip_path) as archive:
        members = archive.infolist()
    for info in members:
        problem = _member_problem(info, root)
        if problem:
            raise InputError(f"unsafe archive entry {info.filename!r}: {problem}; nothing was extracted", source)
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


def install_bundle(source: str | Path, bundle_dir: str | Path, sha256: str | None = None,
                   max_size_mb: float = MAX_SIZE_MB, max_ratio: float = MAX_RATIO) -> Path:
    """Download (URL) or read (path) a bundle zip, verify it and extract it; returns `<bundle_dir>/<name>`.

    All or nothing: the zip's sha256 (when given), every entry's path and every entry's CRC are checked
    before anything is written; entries are inflated as streams, counting bytes, and refused past
    `max_size_mb` MB in all or `max_ratio` times an entry's compressed size (zip bombs). The bundle is
    extracted and its large files fetched and hash-checked in a temporary folder, and only a complete
    bundle is renamed into place; a failed install removes the folders it created.
    """
    if not (max_size_mb > 0 and max_ratio > 0):  # written so that NaN fails too
        raise InputError(f"max_size_mb and max_ratio must be positive, got {max_size_mb} and {max_ratio}")
    bundle_dir = Path(bundle_dir)
    created = _missing_dirs(bundle_dir)
    try:
        target = _install(str(source), bundle_dir, sha256, (float(max_size_mb), float(max_ratio)))
    except BaseException:
        for folder in created:  # deepest first; rmdir, not rmtree: never delete what someone else put there
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    logger.info("installed %s from %s", target, source)
    return target


def _missing_dirs(path: Path) -> list[Path]:
    """`path` and those of its ancestors that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _install(source: str, bundle_dir: Path, sha256: str | None, limits: tuple[float, float]) -> Path:
    """install_bundle's steps; on failure the staging folder is gone but `bundle_dir` may remain."""
    with tempfile.TemporaryDirectory(prefix="cellzoo-install-") as scratch:
        zip_path = _local_copy(source, Path(scratch))
        if sha256:
            _verify(zip_path, sha256.strip().lower(), "sha256", source)
        members = check_archive_members(zip_path, bundle_dir, source)
        name = _bundle_name([info.filename for info in members], source)
        target = bundle_dir / name
        if target.exists():
            raise InputError(f"{name} is already installed at {target}; remove it first", source)
        _inflate(zip_path, members, None, source, limits)  # every CRC and limit, before anything is written
        bundle_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.installing-", dir=bundle_dir))
        try:
            _inflate(zip_path, members, staging, source, limits)
            fetch_large_files(staging / name, f"{name}/{LARGE_FILES_NAME} in {source}")
            os.replace(staging / name, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass
class _Budget:
    """The zip bomb limits of one pass over a zip, and the bytes inflated so far."""
    max_size_mb: float
    max_ratio: float
    zip_bytes: int
    source: str
    used: int = 0

    def check(self, info: zipfile.ZipInfo, size: int) -> None:
        """InputError saying which limit and how to raise it when `size` bytes of `info` break one."""
        if size > info.file_size:
            raise InputError(f"entry {info.filename!r} inflates past the {info.file_size} bytes the zip "
                             "declares for it (a forged zip?); nothing was installed", self.source)
        # a forged directory may claim a huge compressed size; no entry holds more bytes than the zip file
        if size > max(min(info.compress_size, self.zip_bytes) * self.max_ratio, RATIO_FREE_BYTES):
            raise InputError(f"entry {info.filename!r} inflates to over {self.max_ratio:g} times its compressed "
                             "size (a zip bomb?); nothing was installed; if you trust this zip, raise the limit "
                             "with --max-ratio (max_ratio of install_bundle)", self.source)
        if self.used + size > self.max_size_mb * MB:
            raise InputError(f"the zip inflates to over {self.max_size_mb:g} MB (a zip bomb?); nothing was "
                             "installed; if you trust this zip, raise the limit with --max-size-mb (max_size_mb "
                             "of install_bundle)", self.source)


def _inflate(zip_path: Path, members: list[zipfile.ZipInfo], out_dir: Path | None, source: str,
             limits: tuple[float, float]) -> None:
    """Inflate every entry into `out_dir`, or nowhere (None) to check CRCs and limits; errors name `source`."""
    budget = _Budget(*limits, zip_path.stat().st_size, source)
    with _zip_errors(source), zipfile.ZipFile(zip_path) as archive:
        for info in members:
            budget.check(info, info.file_size)  # the declared size: refuse a bomb before inflating it
            budget.used += _copy_member(archive, info, out_dir, budget)


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, out_dir: Path | None, budget: _Budget) -> int:
    """Stream one entry into `out_dir` (or nowhere), checking the limits chunk by chunk; returns its size."""
    # the name was checked by check_archive_members: relative, without '..'; drop empty and '.' parts
    parts = [part for part in info.filename.split("/") if part not in ("", ".")]
    path = None if out_dir is None else out_dir.joinpath(*parts)
    if info.is_dir():
        if path:
            path.mkdir(parents=True, exist_ok=True)
        return 0
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    # zipfile checks the CRC when the entry's last byte is read
    with archive.open(info) as stream, (open(path, "wb") if path else contextlib.nullcontext()) as out:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            size += len(chunk)
            budget.check(info, size)  # the real size: the zip's directory may lie
            if out:
                out.write(chunk)
    return size


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
                    logger.info("%s: %d of %d MB", target.name, done // MB, round(total / MB))
                    next_log += PROGRESS_EVERY
            if total > PROGRESS_EVERY:  # the last line says it is complete, not "16 of 19 MB"
                logger.info("%s: %d MB downloaded", target.name, round(done / MB))
    except (OSError, ValueError) as err:  # URLError and HTTPError are OSErrors
        raise InputError(f"download failed ({err})", url) from err


def _verify(path: Path, expected: str, hash_type: str, source: str, label: str = "") -> None:
    """InputError naming `source` unless the file's digest equals `expected`."""
    actual = file_hash(path, hash_type)
    if actual != expected:
        raise InputError(f"hash mismatch{label}: expected {expected}, got {actual} ({hash_type})", source)


def _bundle_name(names: list[str], source: str) -> str:
    """The single top-level folder of the zip's entry `names`, which must hold configs/metadata.json."""
    tops = sorted({name.split("/")[0] for name in names})
    if len(tops) != 1 or not any(name.startswith(f"{tops[0]}/") for name in names):
        raise InputError(f"a bundle zip holds exactly one top-level folder, found {tops}", source)
    if f"{tops[0]}/configs/metadata.json" not in names:
        raise InputError(f"no {tops[0]}/configs/metadata.json in the zip", source)
    return tops[0]


def fetch_large_files(root: Path, label: str | None = None) -> list[Path]:
    """Download every file listed in `<root>/large_files.yml` and check its hash; returns their paths.

    Each file is downloaded next to its target and renamed into place only after its hash matched, so a
    corrupt or tampered file is never left in the bundle. Entries without a hash or with a URL other than
    http(s) are refused. Errors about the listing name `label` (default: its path).
    """
    listing_path = root / LARGE_FILES_NAME
    if not listing_path.is_file():
        return []
    label = label or str(listing_path)
    fetched = []
    for entry in _large_file_entries(listing_path, label):
        target = _large_file_target(root, entry["path"], label)
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


def _large_file_entries(listing_path: Path, label: str) -> list[dict]:
    """Validated records of large_files.yml: path, url (http or https), hash_val (lower case) and hash_type."""
    try:
        entries = (yaml.safe_load(listing_path.read_text()) or {}).get("large_files") or []
    except (yaml.YAMLError, AttributeError, UnicodeDecodeError) as err:
        raise InputError(f"invalid {LARGE_FILES_NAME} ({err})", label) from err
    records = []
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("path") or not entry.get("url"):
            raise InputError(f"each large file needs 'path' and 'url', got {entry!r}", label)
        if not _is_http(str(entry["url"])):
            raise InputError(f"large file {entry['path']} has URL {str(entry['url'])!r}; only http and https "
                             "URLs are allowed", label)
        if not entry.get("hash_val"):
            raise InputError(f"large file {entry['path']} has no hash_val; refusing an unverifiable file", label)
        hash_type = str(entry.get("hash_type") or "sha256").lower()
        if hash_type not in HASH_TYPES:
            raise InputError(f"unsupported hash_type {hash_type!r} for {entry['path']}", label)
        records.append({"path": str(entry["path"]), "url": str(entry["url"]),
                        "hash_val": str(entry["hash_val"]).strip().lower(), "hash_type": hash_type})
    return records


def _large_file_target(root: Path, rel: str, label: str) -> Path:
    """Where a large file goes; a path that leaves the bundle folder is refused."""
    resolved = root.resolve()
    target = (resolved / rel).resolve()
    if PurePosixPath(rel).is_absolute() or not target.is_relative_to(resolved) or target == resolved:
        raise InputError(f"large file path {rel!r} leaves the bundle folder", label)
    return target
