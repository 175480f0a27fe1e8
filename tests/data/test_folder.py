"""load_folder on the shared real PNG folders and on small synthetic files written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from activesynth.data.resize import parse_size, resize_images, resize_masks
from activesynth.data.sources.folder import load_folder, natural_key
from activesynth.errors import ConfigError, DataError


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _gray(h: int = 16, w: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def _mask(h: int = 16, w: int = 20, value: int = 255) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[4:10, 5:12] = value
    return m


# ---- real data ---------------------------------------------------------------------------------


def test_lgg_png_folder(shared_data: Path) -> None:
    root = shared_data / "lgg_mri_seg" / "png256"
    cases = sorted(p for p in root.iterdir() if p.is_dir())
    n_images = sum(1 for c in cases for f in c.glob("*.png") if not f.stem.endswith("_mask"))
    d = load_folder(root)
    assert len(d) == n_images
    assert d.images.shape == (n_images, 256, 256, 3) and d.images.dtype == np.uint8
    assert set(np.unique(d.groups)) == {c.name for c in cases}
    assert set(np.unique(d.masks).tolist()) == {0, 1}
    assert 0 < d.foreground().sum() < n_images
    assert not any(p.endswith("_mask.png") for p in d.meta["source_path"])
    pairs = zip(d.meta["source_path"], d.meta["mask_path"], strict=True)
    assert all(Path(m).name == Path(s).stem + "_mask.png" for s, m in pairs)
    first = cases[0].name
    slices = [int(i.rsplit("_", 1)[1]) for i in d.ids[d.groups == first]]
    assert slices == sorted(slices) and slices[0] == 1  # natural order: _2 before _10
    # Tumour pixels in the mask file are exactly the 255s of the file.
    k = int(np.flatnonzero(d.foreground())[0])
    raw = np.asarray(Image.open(d.meta["mask_path"][k]))
    np.testing.assert_array_equal(d.masks[k], (raw == 255).astype(np.uint8))


def test_lgg_png_folder_resized(shared_data: Path) -> None:
    d = load_folder(shared_data / "lgg_mri_seg" / "png256", size=128)
    assert d.images.shape[1:] == (128, 128, 3)
    assert d.masks is not None and d.masks.shape[1:] == (128, 128)
    assert set(np.unique(d.masks).tolist()) == {0, 1}
    assert (d.meta["original_shape"] == [256, 256]).all()


def test_jsrt_images_and_labels_folders(shared_data: Path) -> None:
    root = shared_data / "jsrt_scr_lung" / "png1024"
    d = load_folder(root / "Images", root / "Labels", mask_pattern="{stem}_labels.png", size=256)
    ids = sorted(p.stem for p in (root / "Images").glob("*.png"))
    assert sorted(d.ids.tolist()) == ids and sorted(d.groups.tolist()) == ids
    assert d.images.shape == (len(ids), 256, 256, 1)
    assert d.masks is not None and set(np.unique(d.masks).tolist()) == {0, 1}
    lung = d.masks.reshape(len(d), -1).mean(axis=1)
    assert ((lung > 0.1) & (lung < 0.6)).all()  # two lung fields, not the whole image
    assert (d.meta["original_shape"] == [1024, 1024]).all()


# ---- formats -----------------------------------------------------------------------------------


def test_tiff_16bit_rescaled_per_image(tmp_path: Path) -> None:
    a = np.linspace(1000, 4000, 16 * 20).reshape(16, 20).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", a)
    tifffile.imwrite(tmp_path / "b.tiff", (a // 2).astype(np.uint16))
    d = load_folder(tmp_path, allow_unlabelled=True)
    assert d.masks is None and d.images.shape == (2, 16, 20, 1) and d.images.dtype == np.uint8
    for img in d.images:
        assert img.min() == 0 and img.max() == 255
    diff = np.abs(d.images[0].astype(int) - d.images[1])
    assert diff.max() <= 1  # per-image min-max: half the intensities give the same image


def test_png_16bit_and_masks_as_tiff(tmp_path: Path) -> None:
    a = (np.arange(16 * 20).reshape(16, 20) * 100).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "x.png")  # mode I;16
    tifffile.imwrite(tmp_path / "x_mask.tif", _mask(value=1))
    d = load_folder(tmp_path, mask_pattern="{stem}_mask.tif")
    assert d.images[0].max() == 255 and d.images[0].min() == 0
    assert d.masks is not None and d.masks.sum() == _mask(value=1).sum()


def test_jpeg_rgba_and_channels(tmp_path: Path) -> None:
    rgb = np.zeros((16, 20, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    rgb[..., 2] = 50
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    rgba = np.dstack([rgb, np.full((16, 20), 7, np.uint8)])
    _png(tmp_path / "a.png", rgba)
    _png(tmp_path / "b.png", _gray())
    for stem in ("a", "b", "c"):
        _png(tmp_path / f"{stem}_m.png", _mask())
    d = load_folder(tmp_path, mask_pattern="{stem}_m.png")
    assert d.ids.tolist() == ["a", "b", "c"]
    assert d.images.shape == (3, 16, 20, 3) and d.channel_names == ("red", "green", "blue")
    np.testing.assert_array_equal(d.images[0], rgb)  # alpha dropped, colour kept
    assert np.abs(d.images[2].astype(int) - rgb).max() <= 8  # JPEG is lossy
    assert (d.images[1][..., 0] == d.images[1][..., 2]).all()  # grey replicated
    g = load_folder(tmp_path, mask_pattern="{stem}_m.png", channels="gray")
    assert g.images.shape == (3, 16, 20, 1)
    assert abs(int(g.images[0, 0, 0, 0]) - round(0.299 * 200 + 0.114 * 50)) <= 1


def test_rgb_with_equal_channels_is_gray_in_auto(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", np.repeat(_gray()[..., None], 3, axis=-1))
    d = load_folder(tmp_path, allow_unlabelled=True)
    assert d.images.shape == (1, 16, 20, 1)
    np.testing.assert_array_equal(d.images[0, ..., 0], _gray())
    assert load_folder(tmp_path, allow_unlabelled=True, channels="rgb").n_channels == 3


# ---- masks -------------------------------------------------------------------------------------


def test_mask_files_are_not_images_and_ids_are_kept(tmp_path: Path) -> None:
    for i in (1, 2, 10):
        _png(tmp_path / f"slice_{i}.png", _gray(seed=i))
        m = _mask(value=1)
        m[0, :3] = 2
        _png(tmp_path / f"slice_{i}_mask.png", m)
    d = load_folder(tmp_path)
    assert d.ids.tolist() == ["slice_1", "slice_2", "slice_10"]
    assert d.class_names == ("background", "class_1", "class_2")
    assert set(np.unique(d.masks).tolist()) == {0, 1, 2}
    with pytest.raises(DataError, match=r"Unexpected mask values \[2\]"):
        load_folder(tmp_path, mask_values="binary")


def test_unexpected_mask_values(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", _gray())
    m = _mask(value=7)
    m[0, 0] = 200
    _png(tmp_path / "a_mask.png", m)
    with pytest.raises(DataError, match=r"\[7, 200\]") as err:
        load_folder(tmp_path)
    assert "a_mask.png" in str(err.value)


def test_mask_shape_mismatch_names_both_files(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", _gray(16, 20))
    _png(tmp_path / "a_mask.png", _mask(16, 21))
    with pytest.raises(DataError) as err:
        load_folder(tmp_path)
    msg = str(err.value)
    assert "a_mask.png" in msg and "a.png" in msg and "16x21" in msg and "16x20" in msg


def test_missing_masks(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", _gray())
    _png(tmp_path / "b.png", _gray())
    with pytest.raises(DataError, match="allow_unlabelled"):
        load_folder(tmp_path)
    assert load_folder(tmp_path, allow_unlabelled=True).masks is None
    _png(tmp_path / "a_mask.png", _mask())
    with pytest.raises(DataError, match=r"b_mask\.png"):
        load_folder(tmp_path, allow_unlabelled=True)


def test_masks_in_sibling_folder_per_patient(tmp_path: Path) -> None:
    for pat in ("p1", "p2"):
        for k in (1, 2):
            _png(tmp_path / "img" / pat / f"{pat}_{k}.png", _gray(seed=k))
            _png(tmp_path / "seg" / pat / f"{pat}_{k}_labels.png", _mask(value=1))
    d = load_folder(tmp_path / "img", tmp_path / "seg", mask_pattern="{stem}_labels.png")
    assert d.groups.tolist() == ["p1", "p1", "p2", "p2"]
    assert d.ids.tolist() == ["p1/p1_1", "p1/p1_2", "p2/p2_1", "p2/p2_2"]
    with pytest.raises(DataError, match="No images found"):  # none directly in img/
        load_folder(tmp_path / "img", recursive=False, allow_unlabelled=True)


# ---- groups and labels -------------------------------------------------------------------------


def test_group_pattern_and_labels_csv(tmp_path: Path) -> None:
    names = ["pat01_1", "pat01_2", "pat02_1"]
    for n in names:
        _png(tmp_path / f"{n}.png", _gray())
    (tmp_path / "labels.csv").write_text(
        "filename,label\npat01_1.png,nodule\npat01_2.png,normal\npat02_1,nodule\n"
    )
    d = load_folder(tmp_path, group_pattern=r"^(pat\d+)_", labels_csv=tmp_path / "labels.csv")
    assert d.groups.tolist() == ["pat01", "pat01", "pat02"]
    assert d.label_names == ("nodule", "normal") and d.labels.tolist() == [0, 1, 0]
    assert d.masks is None
    with pytest.raises(DataError, match="does not match"):
        load_folder(tmp_path, group_pattern=r"^(case\d+)_", allow_unlabelled=True)
    with pytest.raises(ConfigError, match="capturing group"):
        load_folder(tmp_path, group_pattern=r"^pat", allow_unlabelled=True)
    (tmp_path / "few.csv").write_text("filename,label\npat01_1.png,1\n")
    with pytest.raises(DataError, match="no label for 2"):
        load_folder(tmp_path, labels_csv=tmp_path / "few.csv")


# ---- errors ------------------------------------------------------------------------------------


def test_truncated_png_names_the_file(tmp_path: Path) -> None:
    _png(tmp_path / "good.png", _gray())
    path = _png(tmp_path / "broken.png", _gray(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"broken\.png"):
        load_folder(tmp_path, allow_unlabelled=True)


def test_garbage_tiff_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all" * 10)
    with pytest.raises(DataError, match=r"junk\.tif"):
        load_folder(tmp_path, allow_unlabelled=True)


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError) as err:
        load_folder(tmp_path)
    assert str(tmp_path) in str(err.value) and ".png" in str(err.value)
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "nowhere")
    with pytest.raises(DataError, match="nowhere"):
        load_folder(tmp_path / "nowhere")


def test_differing_sizes_need_size(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", _gray(16, 20))
    _png(tmp_path / "b.png", _gray(24, 20))
    with pytest.raises(DataError) as err:
        load_folder(tmp_path, allow_unlabelled=True)
    msg = str(err.value)
    assert "a.png" in msg and "b.png" in msg and "size=" in msg
    d = load_folder(tmp_path, allow_unlabelled=True, size=(8, 10))
    assert d.images.shape == (2, 8, 10, 1)
    assert d.meta["original_shape"].tolist() == [[16, 20], [24, 20]]


def test_bad_options(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", _gray())
    with pytest.raises(ConfigError, match="channels"):
        load_folder(tmp_path, channels="grey", allow_unlabelled=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="stem"):
        load_folder(tmp_path, mask_pattern="mask.png")
    with pytest.raises(ConfigError, match="size"):
        load_folder(tmp_path, size=0, allow_unlabelled=True)


# ---- resize helpers ----------------------------------------------------------------------------


def test_resize_helpers() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 32, 40, 4), dtype=np.uint8)
    out = resize_images(imgs, (16, 20))
    assert out.shape == (3, 16, 20, 4) and out.dtype == np.uint8
    const = np.full((1, 32, 40, 3), 77, np.uint8)
    assert (resize_images(const, (7, 9)) == 77).all()
    f = resize_images(imgs.astype(np.float32), (64, 80))
    assert f.dtype == np.float32 and f.shape == (3, 64, 80, 4)
    # Anti-aliased: a 1-pixel checkerboard shrinks to its mean, not to one of its values.
    checker = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)[None, ..., None]
    assert abs(float(resize_images(checker, (8, 8)).mean()) - 127.5) < 2
    m = np.zeros((2, 30, 30), np.uint8)
    m[0, 3:20, 5:9] = 4
    m[1, 10:, :] = 2
    small = resize_masks(m, (10, 10))
    assert small.dtype == np.uint8 and set(np.unique(small).tolist()) <= {0, 2, 4}
    assert set(np.unique(resize_masks(m, (97, 13))).tolist()) == {0, 2, 4}
    assert parse_size(64) == (64, 64) and parse_size((32, 48)) == (32, 48)
    assert parse_size(None) is None


def test_natural_key() -> None:
    names = ["slice_10", "slice_2", "Slice_1", "slice_2b"]
    assert sorted(names, key=natural_key) == ["Slice_1", "slice_2", "slice_2b", "slice_10"]
