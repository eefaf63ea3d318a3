"""shared.images: the three image sources, the validation split and bad-input errors."""

from __future__ import annotations

import logging
import tarfile
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from shared.images import (
    BUNDLED_SAMPLE,
    CIFAR10_CLASSES,
    ImageDataError,
    class_balanced_split,
    decode_image,
    load_bundled_sample,
    load_image_data,
    load_labelled_folder,
)


def write_image(path: Path, seed: int, size=(32, 32), mode="RGB", fmt=None) -> np.ndarray:
    """Write a random image; return its RGB pixels as a PNG decoder would give them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    image.save(path, format=fmt)
    return np.asarray(image.convert("RGB"))


def make_folder(root: Path, classes=("cat", "dog", "frog"), per_class=10, test_per_class=0):
    for split, count in (("train", per_class), ("test", test_per_class)):
        for index, name in enumerate(classes):
            for number in range(count):
                write_image(root / split / name / f"{number:03d}.png", seed=100 * index + number)
    return root


def test_bundled_sample_is_real_class_balanced_cifar10():
    assert BUNDLED_SAMPLE.stat().st_size < 3_000_000
    pixels, labels = load_bundled_sample(32)
    assert pixels.shape == (4000, 32, 32, 3) and pixels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [400] * 10
    with tarfile.open(BUNDLED_SAMPLE) as archive:
        names = archive.getnames()
    assert all(name.startswith(("train/",)) for name in names)
    # Real photographs, not noise: neighbouring pixels are strongly correlated.
    flat = pixels[:200].astype(np.float64)
    correlation = np.corrcoef(flat[:, :, :-1].ravel(), flat[:, :, 1:].ravel())[0, 1]
    assert correlation > 0.8


def test_offline_cifar10_falls_back_to_the_bundled_sample(monkeypatch, caplog):
    def unreachable():
        # What keras.utils.get_file raises when the download fails.
        raise Exception(
            "URL fetch failure on https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz: "
            "None -- [Errno -3] Temporary failure in name resolution"
        )

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", unreachable)
    with caplog.at_level(logging.INFO):
        data = load_image_data(None, 32, 0.1, seed=0)
    assert data.class_names == CIFAR10_CLASSES
    assert data.held_out_split == "validation"
    assert len(data.train_labels) == 3600 and len(data.held_out_labels) == 400
    assert np.bincount(data.held_out_labels).tolist() == [40] * 10
    source_lines = [record.message for record in caplog.records if "Images:" in record.message]
    assert len(source_lines) == 1
    assert "bundled CIFAR-10 sample" in source_lines[0]
    assert "URL fetch failure" in source_lines[0]


def test_cifar10_download_is_used_with_its_official_test_split(monkeypatch, caplog):
    # keras.datasets.cifar10.load_data's documented result: uint8 (N, 32, 32, 3) images
    # and uint8 (N, 1) labels, train then test. Real CIFAR-10 pixels from the sample.
    pixels, labels = load_bundled_sample(32)
    train = (pixels[:300], labels[:300].astype(np.uint8).reshape(-1, 1))
    test = (pixels[300:400], labels[300:400].astype(np.uint8).reshape(-1, 1))
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: (train, test))
    with caplog.at_level(logging.INFO):
        data = load_image_data(None, 32, 0.1, seed=0)
    assert data.held_out_split == "test"
    np.testing.assert_array_equal(data.train_images, pixels[:300])
    np.testing.assert_array_equal(data.held_out_labels, labels[300:400])
    assert data.train_labels.shape == (300,)
    assert any("keras.datasets.cifar10.load_data()" in r.message for r in caplog.records)


def test_image_folder_without_test_split_holds_out_a_balanced_seeded_validation_split(tmp_path):
    root = make_folder(tmp_path / "data", per_class=10)
    data = load_image_data(root, 32, 0.2, seed=3)
    assert data.class_names == ("cat", "dog", "frog")
    assert data.held_out_split == "validation"
    assert "validation split: 6 of the 30" in data.held_out_note
    assert np.bincount(data.held_out_labels).tolist() == [2, 2, 2]
    assert np.bincount(data.train_labels).tolist() == [8, 8, 8]
    again = load_image_data(root, 32, 0.2, seed=3)
    np.testing.assert_array_equal(data.held_out_images, again.held_out_images)
    other = load_image_data(root, 32, 0.2, seed=4)
    assert not np.array_equal(data.held_out_images, other.held_out_images)
    # No image is in both parts.
    train_keys = {image.tobytes() for image in data.train_images}
    assert not any(image.tobytes() in train_keys for image in data.held_out_images)


def test_image_folder_with_test_split_uses_it(tmp_path):
    root = make_folder(tmp_path / "data", per_class=4, test_per_class=3)
    data = load_image_data(root, 32, 0.2, seed=0)
    assert data.held_out_split == "test"
    assert len(data.train_labels) == 12 and len(data.held_out_labels) == 9
    expected = write_image(tmp_path / "copy.png", seed=100 * 2 + 1)
    np.testing.assert_array_equal(data.held_out_images[-2], expected)


def test_images_of_any_size_and_mode_are_converted(tmp_path):
    for mode in ("L", "P", "RGBA", "CMYK"):
        path = tmp_path / f"{mode}.png"
        if mode == "CMYK":
            path = path.with_suffix(".jpg")
        write_image(path, seed=1, size=(57, 40), mode=mode)
        array = decode_image(path.read_bytes(), 32, str(path))
        assert array.shape == (32, 32, 3) and array.dtype == np.uint8


def test_class_balanced_split_keeps_every_class_in_training():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 1)
    keep, held_out = class_balanced_split(labels, 0.5, seed=0)
    assert sorted(np.concatenate([keep, held_out]).tolist()) == list(range(13))
    assert np.bincount(labels[keep]).tolist() == [5, 1, 1]
    assert np.bincount(labels[held_out], minlength=3).tolist() == [5, 1, 0]


@pytest.mark.parametrize(
    "breakage, expected",
    [
        ("missing_dir", "does not exist"),
        ("no_train", "train not found"),
        ("no_classes", "has no class folders"),
        ("stray_file", "stray.png is a file directly inside"),
        ("empty_class", "dog holds no images"),
        ("nested_folder", "extra is a folder inside class folder"),
        ("unreadable", "cannot read"),
        ("classes_differ", "only in train: ['frog']; only in test: ['horse']"),
        ("one_class", "only one class folder"),
        ("one_image_per_class", "one image per class, so none can be held out"),
    ],
)
def test_bad_image_folders_name_the_first_offending_path(tmp_path, breakage, expected):
    root = tmp_path / "data"
    if breakage != "missing_dir":
        make_folder(root, per_class=1 if breakage == "one_image_per_class" else 2)
    if breakage == "no_train":
        (root / "train").rename(root / "training")
    elif breakage == "no_classes":
        for path in sorted((root / "train").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    elif breakage == "stray_file":
        write_image(root / "train" / "stray.png", seed=0)
    elif breakage == "empty_class":
        for path in (root / "train" / "dog").iterdir():
            path.unlink()
    elif breakage == "nested_folder":
        write_image(root / "train" / "cat" / "extra" / "x.png", seed=0)
    elif breakage == "unreadable":
        (root / "train" / "dog" / "001.png").write_text("this is not a PNG")
    elif breakage == "classes_differ":
        make_folder(root, classes=("cat", "dog", "horse"), per_class=0, test_per_class=1)
    elif breakage == "one_class":
        for name in ("dog", "frog"):
            for path in (root / "train" / name).iterdir():
                path.unlink()
            (root / "train" / name).rmdir()
    with pytest.raises(ImageDataError) as error:
        load_image_data(root, 32, 0.1, seed=0)
    message = str(error.value)
    assert expected in message
    if breakage == "unreadable":
        assert str(root / "train" / "dog" / "001.png") in message


def test_a_training_layout_given_for_scoring_says_which_folder_to_pass(tmp_path):
    classes = ("cat", "dog", "frog")
    with_test = make_folder(tmp_path / "both", classes, per_class=2, test_per_class=1)
    with pytest.raises(ImageDataError, match=f"pass {with_test / 'test'} instead"):
        load_labelled_folder(with_test, 32, classes)
    images, labels = load_labelled_folder(with_test / "test", 32, classes)
    assert images.shape == (3, 32, 32, 3) and sorted(labels) == [0, 1, 2]
    train_only = make_folder(tmp_path / "train_only", classes, per_class=2)
    with pytest.raises(ImageDataError, match="pass a folder of class folders instead"):
        load_labelled_folder(train_only, 32, classes)


def test_16_bit_grey_pngs_keep_their_grey_levels(tmp_path):
    # A horizontal ramp from black to white in 16 bits; Pillow's convert("RGB") alone
    # would clip every value above 255 to white.
    ramp = np.tile(np.linspace(0, 65535, 32).round().astype(np.uint16), (32, 1))
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I;16")
    array = decode_image(path.read_bytes(), 32, str(path))
    expected = np.rint(ramp / 257).astype(np.uint8)
    assert np.abs(array[..., 0].astype(int) - expected).max() <= 1
    assert (array[..., 0] == array[..., 2]).all()
    assert array[0, 0, 0] == 0 and array[0, -1, 0] == 255 and 120 <= array[0, 16, 0] <= 135


def test_a_decompression_bomb_is_a_clear_error_naming_the_file(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (15000, 15000)).save(path)  # 27 KB on disk, 225 million pixels
    with pytest.raises(ImageDataError) as raised:
        decode_image(path.read_bytes(), 32, str(path))
    message = str(raised.value)
    assert f"cannot read {path}: the image is too large to decode safely" in message
    assert "225,000,000 pixels" in message


def test_errors_name_the_file_not_a_python_object(tmp_path):
    path = tmp_path / "notes.png"
    path.write_bytes(b"this is not a picture")
    with pytest.raises(ImageDataError) as raised:
        decode_image(path.read_bytes(), 32, str(path))
    assert str(path) in str(raised.value) and "BytesIO" not in str(raised.value)
    truncated = tmp_path / "truncated.png"
    write_image(truncated, seed=3, size=(64, 64))
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ImageDataError) as raised:
        decode_image(truncated.read_bytes(), 32, str(truncated))
    assert str(truncated) in str(raised.value) and "0x" not in str(raised.value)
