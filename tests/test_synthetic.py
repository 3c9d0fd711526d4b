"""Synthetic microscopy generator: geometry, optics, time-lapse and every dataset layout."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from scipy import ndimage

from cellzoo.errors import InputError
from cellzoo.synthetic import LAYOUTS, add_noise, layout_options, overview_figure, render_field, render_timelapse
from cellzoo.synthetic import synthesize
from cellzoo.io import label_image_to_coco
from cellzoo.synthetic.shapes import cell_mask

SMALL = (128, 128)
# pycocotools' decoder trips a NumPy 2 deprecation that is not ours to fix
COCO_WARNING = "ignore:__array__ implementation:DeprecationWarning"


@pytest.fixture(scope="module")
def field():
    return render_field(size=SMALL, seed=3, density="dense")


def _grad_energy(img: np.ndarray) -> float:
    gy, gx = np.gradient(img.astype(np.float64))
    return float((gy**2 + gx**2).mean())


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- single fields

def test_same_seed_identical_different_seed_differs(field):
    again = render_field(size=SMALL, seed=3, density="dense")
    other = render_field(size=SMALL, seed=4, density="dense")
    for key in ("labels_cells", "labels_nuclei"):
        assert np.array_equal(field[key], again[key])
        assert not np.array_equal(field[key], other[key])
    for m, img in field["images"].items():
        assert img.dtype == np.float32 and img.shape == SMALL
        assert 0.0 <= img.min() and img.max() <= 1.0
        assert np.array_equal(img, again["images"][m])
        assert not np.array_equal(img, other["images"][m])


def test_labels_consistent_with_images(field):
    lc, ln, nuc = field["labels_cells"], field["labels_nuclei"], field["images"]["nuclear"]
    assert lc.dtype == np.int32 and ln.dtype == np.int32
    assert lc.max() >= 10
    assert set(np.unique(ln)) <= set(np.unique(lc))
    assert np.array_equal(lc[ln > 0], ln[ln > 0])  # every nucleus pixel lies in its own cell
    assert nuc[ln > 0].mean() > nuc[lc == 0].mean() + 0.1
    mem = field["images"]["membrane"]
    assert mem[(lc > 0) & (ln == 0)].mean() > mem[lc == 0].mean() + 0.05
    # each nucleus is one connected piece
    for i in np.unique(ln[ln > 0]):
        assert ndimage.label(ln == i)[1] == 1


def test_confluent_cells_touch_and_overlap():
    f = render_field(size=SMALL, seed=1, density="confluent")
    lc = f["labels_cells"]
    a, b = lc[:, :-1], lc[:, 1:]
    touching = {tuple(sorted(p)) for p in zip(a[(a != b) & (a > 0) & (b > 0)], b[(a != b) & (a > 0) & (b > 0)])}
    assert len(touching) >= 10
    occluded = 0
    for c in f["cells"]:
        sl, mask = cell_mask(c, SMALL)
        seen = lc[sl][mask]
        occluded += int(((seen != c.cid) & (seen > 0)).sum() > 0)
    assert occluded >= 3  # later cells cover parts of earlier ones
    assert (lc > 0).mean() > 0.7


def test_sizes_vary_with_radius_range():
    f = render_field(size=(192, 192), seed=2, density="medium", cell_radius=(5, 22))
    areas = np.bincount(f["labels_cells"].ravel())[1:]
    p10, p50, p90 = np.percentile(areas[areas > 0], (10, 50, 90))
    assert p90 / p10 > 3.0  # radius 5..22 px spans more than an order of magnitude in area
    big = render_field(size=(192, 192), seed=2, density="medium", cell_radius=(18, 24))
    assert np.median(np.bincount(big["labels_cells"].ravel())[1:]) > 1.5 * p50


def test_poisson_gaussian_noise_grows_with_signal(field):
    rng = np.random.default_rng(0)
    photons, read, offset = 100.0, 3.0, 10.0
    scale = photons * 1.6 + offset  # add_noise maps counts to [0, 1] by this full scale
    for level in (0.0, 0.1, 0.8):
        img = add_noise(np.full((200, 200), level, np.float32), rng, photons, read, offset)
        # Poisson-Gaussian: variance in counts = photons * signal + read_noise^2
        expected = photons * level + read**2
        assert abs(img.var() * scale**2 - expected) < 0.1 * expected
        assert abs(img.mean() * scale - (photons * level + offset)) < 0.5
    bg = field["images"]["nuclear"][ndimage.binary_erosion(field["labels_cells"] == 0, iterations=4)]
    assert bg.std() > 0.002


def test_modalities_differ(field):
    imgs = field["images"]
    names = list(imgs)
    assert names == ["nuclear", "membrane", "brightfield", "phase", "dic"]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            r = np.corrcoef(imgs[a].ravel(), imgs[b].ravel())[0, 1]
            assert abs(r) < 0.9, (a, b, r)


def test_defocus_blurs_and_flips_transmitted_contrast():
    f = render_field(size=SMALL, seed=5, modalities=("nuclear", "brightfield"), z_planes=(0.0, 1.0, 2.0, 3.0),
                     photons=2000)
    energy = [_grad_energy(p) for p in f["images"]["nuclear"]]
    assert f["images"]["nuclear"].shape == (4, *SMALL)
    assert all(e1 > e2 for e1, e2 in zip(energy, energy[1:]))
    g = render_field(size=SMALL, seed=5, modalities=("brightfield",), z_planes=(-2.0, 2.0))
    ln, fg = g["labels_nuclei"], g["labels_cells"] > 0
    # compare with nearby background so the smooth illumination field does not bias the sign
    ring = ndimage.binary_dilation(fg, iterations=10) & ~ndimage.binary_dilation(fg, iterations=5)
    contrast = [p[ln > 0].mean() - p[ring].mean() for p in g["images"]["brightfield"]]
    assert contrast[0] < -0.02 and contrast[1] > 0.02


def test_rgb_brightfield_and_organelles():
    f = render_field(size=SMALL, seed=6, modalities=("brightfield_rgb", "mitochondria", "tubulin", "actin"))
    rgb, lc = f["images"]["brightfield_rgb"], f["labels_cells"]
    assert rgb.shape == (*SMALL, 3)
    inside, outside = rgb[lc > 0].mean(0), rgb[lc == 0].mean(0)
    assert (inside < outside).all() and inside[1] < inside[0]  # eosin/haematoxylin absorb green most
    for m in ("mitochondria", "tubulin", "actin"):
        img = f["images"][m]
        assert img[lc > 0].mean() > img[lc == 0].mean() + 0.03


def test_3d_stack_shapes():
    f = render_field(size=(64, 64), seed=7, depth=8, modalities=("nuclear", "brightfield"))
    assert f["labels_cells"].shape == (8, 64, 64) and f["labels_nuclei"].shape == (8, 64, 64)
    assert f["images"]["nuclear"].shape == (8, 64, 64) and f["images"]["brightfield"].shape == (8, 64, 64)
    area = (f["labels_cells"] > 0).sum((1, 2))
    assert area[3:5].max() > area[0] and area[3:5].max() > area[-1]
    ln = f["labels_nuclei"]
    assert np.array_equal(f["labels_cells"][ln > 0], ln[ln > 0])


def test_bad_arguments_raise():
    with pytest.raises(InputError):
        render_field(size=SMALL, modalities=("xray",))
    with pytest.raises(InputError):
        render_field(size=SMALL, density="packed")
    with pytest.raises(InputError):
        synthesize("cellseg", 2, "unused", colour=True)
    with pytest.raises(InputError):
        synthesize("nope", 2, "unused")


# ---------------------------------------------------------------- time-lapse

def _check_tracks(labels: np.ndarray, tracks: np.ndarray) -> None:
    ends = {int(L): int(E) for L, _, E, _ in tracks}
    for L, B, E, P in tracks:
        present = [t for t in range(len(labels)) if (labels[t] == L).any()]
        assert present == list(range(B, E + 1))
        if P:
            assert P in ends and B > ends[P]
    for t in range(len(labels)):
        assert set(np.unique(labels[t])) - {0} <= set(ends)


def test_timelapse_moves_grows_divides():
    tl = render_timelapse(size=SMALL, n_frames=24, seed=1)
    ln, tracks = tl["labels_nuclei"], tl["tracks"]
    assert tl["images"]["nuclear"].shape == (24, *SMALL)
    _check_tracks(ln, tracks)
    daughters = tracks[tracks[:, 3] > 0]
    assert len(daughters) >= 2
    assert (np.bincount(daughters[:, 3]) == 2).any()  # a mother with two daughters
    first = tracks[(tracks[:, 1] == 0) & (tracks[:, 2] >= 5)]
    shifts = [np.hypot(*np.subtract(ndimage.center_of_mass(ln[0] == L), ndimage.center_of_mass(ln[5] == L)))
              for L in first[:, 0]]
    assert np.median(shifts) > 1.0


# ---------------------------------------------------------------- layouts

def test_layouts_listed():
    assert LAYOUTS == ("cellseg", "ctc", "coco", "lightmycells", "isl")
    assert "modalities" in layout_options("cellseg") and "depth" in layout_options("ctc")


def test_cellseg_layout(tmp_path):
    out = synthesize("cellseg", 5, tmp_path / "cs", seed=1, size=(96, 96))
    names = [f"cell_{i:05d}" for i in range(1, 6)]
    exts = [".tif", ".tif", ".png", ".tif", ".tif"]
    assert _files(out) == ({f"images/{n}{e}" for n, e in zip(names, exts)}
                           | {f"labels/{n}_label.tiff" for n in names} | {"README.txt"})
    dtypes = [np.uint16, np.uint16, np.uint8, np.uint8, np.uint16]
    for n, e, dt in zip(names, exts, dtypes):
        img = iio.imread(out / "images" / f"{n}{e}") if e == ".png" else tifffile.imread(out / "images" / f"{n}{e}")
        lab = tifffile.imread(out / "labels" / f"{n}_label.tiff")
        assert img.dtype == dt and lab.dtype == np.uint16
        assert img.shape[:2] == lab.shape == (96, 96) and lab.max() > 0
    assert iio.imread(out / "images" / "cell_00003.png").shape == (96, 96, 3)
    only = synthesize("cellseg", 2, tmp_path / "ph", size=(64, 64), modalities=("phase",))
    assert {p.name for p in (only / "images").iterdir()} == {"cell_00001.tif", "cell_00002.tif"}
    assert "seed" in (out / "README.txt").read_text()


def test_ctc_layout(tmp_path):
    out = synthesize("ctc", 7, tmp_path / "ctc", seed=2, size=(96, 96), n_sequences=2)
    for seq in ("01", "02"):
        expected = ({f"{seq}/t{t:03d}.tif" for t in range(7)}
                    | {f"{seq}_ST/SEG/man_seg{t:03d}.tif" for t in range(7)}
                    | {f"{seq}_GT/SEG/man_seg{t:03d}.tif" for t in (0, 3, 6)}
                    | {f"{seq}_GT/TRA/man_track{t:03d}.tif" for t in range(7)} | {f"{seq}_GT/TRA/man_track.txt"})
        assert expected <= _files(out)
    assert len(_files(out)) == 2 * (7 + 7 + 3 + 7 + 1) + 1
    seg = np.stack([tifffile.imread(out / "01_ST" / "SEG" / f"man_seg{t:03d}.tif") for t in range(7)])
    tra = np.stack([tifffile.imread(out / "01_GT" / "TRA" / f"man_track{t:03d}.tif") for t in range(7)])
    img = tifffile.imread(out / "01" / "t000.tif")
    assert img.dtype == np.uint16 and seg.dtype == np.uint16 and tra.dtype == np.uint16 and img.shape == (96, 96)
    for t in range(7):
        assert set(np.unique(tra[t])) == set(np.unique(seg[t]))
        assert ((tra[t] > 0) <= (seg[t] == tra[t])).all() and (tra[t] > 0).sum() < (seg[t] > 0).sum()
    assert np.array_equal(tifffile.imread(out / "01_GT" / "SEG" / "man_seg003.tif"), seg[3])
    tracks = np.loadtxt(out / "01_GT" / "TRA" / "man_track.txt", dtype=np.int64, ndmin=2)
    _check_tracks(seg, tracks)


def test_ctc_3d_layout(tmp_path):
    out = synthesize("ctc", 3, tmp_path / "ctc3", seed=2, size=(64, 64), depth=6, gt_every=2)
    assert tifffile.imread(out / "01" / "t002.tif").shape == (6, 64, 64)
    assert tifffile.imread(out / "01_GT" / "TRA" / "man_track001.tif").shape == (6, 64, 64)
    assert {p.name for p in (out / "01_GT" / "SEG").iterdir()} == {"man_seg000.tif", "man_seg002.tif"}


@pytest.mark.filterwarnings(COCO_WARNING)
def test_coco_polygons_match_masks():
    f = render_field(size=SMALL, seed=8, density="confluent")
    lc = f["labels_cells"]
    from pycocotools import mask as mask_utils

    anns = label_image_to_coco(lc, 1, 1)
    assert len(anns) == lc.max()
    for i, a in enumerate(anns, start=1):
        truth = lc == i
        rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], *lc.shape))
        m = mask_utils.decode(rle).astype(bool)
        np.testing.assert_array_equal(m, truth)  # pixel-edge polygons rasterise back exactly
        assert a["area"] == truth.sum()
        ys, xs = np.nonzero(truth)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


@pytest.mark.filterwarnings(COCO_WARNING)
def test_coco_layout(tmp_path):
    from pycocotools.coco import COCO

    out = synthesize("coco", 5, tmp_path / "coco", seed=3, size=(96, 128))
    names = {f"images/SYNTH_Phase_{i:05d}.tif" for i in range(1, 6)}
    assert _files(out) == names | {"coco_train.json", "coco_val.json", "coco_test.json", "README.txt"}
    counts, seen = [], set()
    for part in ("train", "val", "test"):
        coco = COCO(str(out / f"coco_{part}.json"))
        counts.append(len(coco.imgs))
        assert coco.loadCats(coco.getCatIds()) == [{"id": 1, "name": "cell"}]
        for im in coco.imgs.values():
            img = tifffile.imread(out / "images" / im["file_name"])
            assert img.dtype == np.uint8 and img.shape == (im["height"], im["width"]) == (96, 128)
            seen.add(im["id"])
        for a in coco.loadAnns(coco.getAnnIds()):
            m = coco.annToMask(a)
            assert abs(int(m.sum()) - a["area"]) <= 0.1 * a["area"] + 2
            assert a["iscrowd"] == 0 and a["category_id"] == 1
    assert counts == [3, 1, 1] and seen == {1, 2, 3, 4, 5}


def test_lightmycells_layout(tmp_path):
    out = synthesize("lightmycells", 4, tmp_path / "lmc", seed=4, size=(96, 96))
    files = _files(out)
    for i, (study, code) in enumerate([(1, "BF"), (1, "BF"), (2, "PC"), (2, "PC")], start=1):
        for k in range(3):
            assert f"Study_{study}/image_{i}_{code}_z{k}.ome.tiff" in files
    targets = [f for f in files if not f.endswith("README.txt") and "_z" not in f]
    assert len(targets) < 4 * 4  # some organelle is missing somewhere
    assert any(f.endswith("_Nucleus.ome.tiff") for f in targets)
    assert len(files) == 1 + 12 + len(targets)
    for f in files - {"README.txt"}:
        with tifffile.TiffFile(out / f) as tif:
            assert tif.is_ome and tif.series[0].axes == "YX"
            arr = tif.asarray()
        assert arr.dtype == np.uint16 and arr.shape == (96, 96)
    z = [tifffile.imread(out / "Study_1" / f"image_1_BF_z{k}.ome.tiff").astype(float) for k in range(3)]
    assert not np.array_equal(z[0], z[2])


def test_isl_layout(tmp_path):
    out = synthesize("isl", 2, tmp_path / "isl", seed=5, size=(96, 96))
    names = ["input_BRIGHTFIELD_z0", "input_BRIGHTFIELD_z1", "input_PHASE_CONTRAST", "input_DIC", "target_DAPI",
             "target_CELLMASK", "label_nuclei", "label_cells"]
    assert _files(out) == {f"field_{i:03d}/{n}.tif" for i in (1, 2) for n in names} | {"README.txt"}
    arrs = {n: tifffile.imread(out / "field_001" / f"{n}.tif") for n in names}
    assert all(a.dtype == np.uint16 and a.shape == (96, 96) for a in arrs.values())
    ln, lc = arrs["label_nuclei"], arrs["label_cells"]
    assert np.array_equal(lc[ln > 0], ln[ln > 0])
    assert arrs["target_DAPI"][ln > 0].mean() > 2 * arrs["target_DAPI"][lc == 0].mean()


@pytest.mark.parametrize("layout,n", [("cellseg", 4), ("coco", 3), ("lightmycells", 2), ("ctc", 3)])
def test_layout_folders_deterministic(tmp_path, layout, n):
    a = synthesize(layout, n, tmp_path / "a", seed=9, size=(64, 64))
    b = synthesize(layout, n, tmp_path / "b", seed=9, size=(64, 64))
    c = synthesize(layout, n, tmp_path / "c", seed=10, size=(64, 64))
    assert _files(a) == _files(b)
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in _files(a))
    # another seed may drop other organelles, so compare only the files both folders have
    shared = [f for f in _files(a) & _files(c) if f != "README.txt"]
    assert shared and any((a / f).read_bytes() != (c / f).read_bytes() for f in shared)


def test_overview_figure(tmp_path):
    out = synthesize("isl", 1, tmp_path / "isl", seed=1, size=(64, 64))
    png = overview_figure(out, "isl", tmp_path / "fig.png")
    img = iio.imread(png)
    assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 10
    assert json.loads((out / "README.txt").read_text().split("\n", 3)[3])["layout"] == "isl"
