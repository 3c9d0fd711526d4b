"""Every bundle's lifecycle as docs/lifecycle.md gives it: `cellzoo package --checkpoint` -> served on loopback ->
`python -m monai.bundle download` -> the downloaded bundle's inference config, run with MONAI's runner ->
the same output as `cellzoo predict` with that checkpoint from the source bundle (packaging runs in-process,
the rest as a user's commands).

The checkpoint is each bundle's shipped (quick-trained) model, copied elsewhere so that packaging must take it
from the argument. The shared machinery (packaging, download) is tested in test_packaging.py; this is each
bundle's small part: its checkpoint path, its inference settings and its outputs survive the round trip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bundle_cli import bundles, data_spec
from loopback import serving

from cellzoo.cli import main
from cellzoo.shipped_weights import shipped_weights
from cellzoo.synthetic import synthesize

def _run(command: list, cwd: Path, **env) -> subprocess.CompletedProcess:
    """A user's command in a clean environment (no PYTHONPATH, no CELLZOO_BUNDLES unless given)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CELLZOO_BUNDLES")}
    done = subprocess.run([str(c) for c in command], cwd=cwd, env={**clean, **env}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _as_override(value) -> str:
    return value if isinstance(value, str) else repr(value)


def _outputs(folder: Path, pattern: str) -> dict[str, np.ndarray | str]:
    """The prediction files a bundle's study reads (study.yaml data.inference_output), by relative path."""
    import tifffile

    found = {}
    for path in sorted(folder.glob(pattern)):
        key = path.relative_to(folder).as_posix()
        found[key] = tifffile.imread(path) if path.suffix in (".tif", ".tiff") else path.read_text()
    return found


def _input_images(layout: str, shipped, folder: Path) -> Path:
    """Two images of the kind the shipped model was trained on: nuclear fluorescence in the bundle's layout
    where the benchmark writes that layout (ISL's shipped model reads a FLUO plane, which the synthetic isl
    fields lack), else the bundle's synthetic layout."""
    from cellzoo.benchmarks.layouts import NUCLEUS_LAYOUTS, write_layout
    from cellzoo.benchmarks.samples import synthetic_nuclei

    if shipped.record.get("kind") == "nuclei" and layout in NUCLEUS_LAYOUTS:
        return write_layout(layout, synthetic_nuclei(2, 0, seed=5, size=(128, 128))[0], folder)
    return Path(synthesize(layout, 2, folder, seed=5, size=(128, 128)))


@pytest.mark.slow
@pytest.mark.parametrize("bundle", bundles())
def test_packaged_downloaded_bundle_predicts_as_the_source(bundle, tmp_path):
    shipped = shipped_weights(bundle)
    assert shipped is not None and shipped.quick, f"{bundle} ships no quick weights"
    checkpoint = tmp_path / "trained" / "model.pt"
    checkpoint.parent.mkdir()
    shutil.copy(shipped.checkpoint, checkpoint)
    served = tmp_path / "served"
    main(["package", bundle, "--out", str(served), "--checkpoint", str(checkpoint)])  # in-process: saves a start-up
    (zip_path,) = served.glob(f"{bundle}_v*.zip")

    with serving(served) as url:
        _run([sys.executable, "-m", "monai.bundle", "download", "--name", bundle, "--url", f"{url}/{zip_path.name}",
              "--bundle_dir", tmp_path / "bundles_dl"], tmp_path)
    downloaded = tmp_path / "bundles_dl" / bundle
    # the checkpoint lies where the downloaded bundle's inference reads it
    assert (downloaded / shipped.record["checkpoint"]).read_bytes() == checkpoint.read_bytes()

    spec = data_spec(bundle)
    images = _input_images(spec["layout"], shipped, tmp_path / "data") / spec["inference_input"]
    configs = downloaded / "configs"
    settings = [arg for key, value in shipped.settings.items() for arg in (f"--{key}", _as_override(value))]
    _run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
          repr([str(configs / "inference.yaml"), str(configs / "quick.yaml")]), "--meta_file", configs / "metadata.json",
          "--bundle_root", downloaded, "--input_dir", images, "--output_dir", tmp_path / "from_download", *settings],
         tmp_path)
    # a process like the downloaded bundle's run: the same thread count, so the same floating-point sums
    _run([Path(sys.executable).parent / "cellzoo", "predict", bundle, "--input", images, "--output",
          tmp_path / "from_source", "--checkpoint", checkpoint, "--quick", "--set",
          repr(shipped.settings) if shipped.settings else "{}"], tmp_path)

    ours, theirs = (_outputs(tmp_path / name, spec["inference_output"]) for name in ("from_download", "from_source"))
    assert ours and sorted(ours) == sorted(theirs), (sorted(ours), sorted(theirs))
    # the shipped model finds something in these images: equal outputs are not two empty ones
    assert any(len(v) > 2 if isinstance(v, str) else np.any(v) for v in ours.values()), bundle
    for key, value in ours.items():
        if isinstance(value, str):
            assert value == theirs[key], key
        else:
            assert np.array_equal(value, theirs[key]), key
