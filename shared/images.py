"""Labelled images: an image folder, Keras's CIFAR-10 download, or a bundled sample.

    data = load_image_data(data_dir=None, image_size=32, validation_fraction=0.1, seed=0)

returns `ImageData`: decoded ``uint8`` arrays of shape ``(N, size, size, 3)``,
integer labels, the class names and a sentence saying which images are held out.
Sources, in order (one log line names the one used):

1. ``data_dir``: an image-folder tree ``DIR/train/<class>/*.png|jpg`` and, when
   present, ``DIR/test/<class>/*`` (the layout of Keras's
   ``image_dataset_from_directory`` and torchvision's ``ImageFolder``);
2. ``keras.datasets.cifar10.load_data()``: the official 50,000/10,000 split
   (downloaded once into ``~/.keras/datasets``);
3. ``shared/datasets/cifar10-sample.tar.gz``: 4,000 real CIFAR-10 training
   images (400 per class, JPEG), so the projects run without internet.

Without a test split, a seeded, class-balanced validation split is held out
from the training images. Images are decoded once, here; the training
pipeline then works on the arrays.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import os
import re
import tarfile
import warnings
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from shared.errors import UserError

log = logging.getLogger(__name__)

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
BUNDLED_SAMPLE = Path(__file__).resolve().parent / "datasets" / "cifar10-sample.tar.gz"


class ImageDataError(UserError):
    """An image folder is not laid out as expected, or an image cannot be read."""


@dataclasses.dataclass(frozen=True)
class ImageData:
    """Decoded images, split into training and held-out parts."""

    train_images: np.ndarray  # uint8, (N, H, W, 3)
    train_labels: np.ndarray  # int32, (N,)
    held_out_images: np.ndarray
    held_out_labels: np.ndarray
    class_names: tuple[str, ...]
    source: str  # where the images came from
    held_out_split: str  # "test" or "validation"
    held_out_note: str  # one sentence for logs and metrics.json


def decode_image(data: bytes, image_size: int, name: str) -> np.ndarray:
    """Decode PNG/JPEG/... bytes into an RGB ``uint8`` array of ``image_size`` squared.

    Any mode (grey, palette, RGBA, 16-bit) is converted to RGB and any size is
    resized with bilinear filtering, so photos of other sizes can be classified.

    Args:
        data: The encoded file's bytes.
        image_size: Side length of the square result, in pixels.
        name: The file's path, for error messages.

    Returns:
        Array of shape ``(image_size, image_size, 3)``, dtype ``uint8``.

    Raises:
        ImageDataError: ``data`` is not an image PIL can decode.
    """
    try:
        with warnings.catch_warnings():
            # Pillow's advice on palette transparency is about its own API: not for users.
            warnings.simplefilter("ignore", UserWarning)
            # Pillow only warns between 89 and 179 million pixels; refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image = _to_8_bit(image).convert("RGB")
                if image.size != (image_size, image_size):
                    image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
                return np.asarray(image, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        raise ImageDataError(
            f"cannot read {name}: the image is too large to decode safely ({size}; the limit "
            f"is {Image.MAX_IMAGE_PIXELS:,}). Resize it first."
        ) from None
    except UnidentifiedImageError:
        raise ImageDataError(
            f"cannot read {name}: it is not an image file Pillow can decode (PNG, JPEG, BMP, "
            "GIF, TIFF, WebP, ...), or it is damaged."
        ) from None
    except (OSError, ValueError) as error:
        reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "it", str(error))
        raise ImageDataError(f"cannot read {name} as an image ({reason}).") from None


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit grey images scaled to 8 bits (Pillow's convert clips them to white)."""
    if image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64) / 257.0  # 65535 -> 255
    elif image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) > 255:  # a 16-bit image read as 32-bit integers
            values = values / 257.0
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) <= 1.0:  # floats in [0, 1]
            values = values * 255.0
    else:
        return image
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def read_image_file(path: str | os.PathLike, image_size: int) -> np.ndarray:
    """`decode_image` of a file on disk; errors name the path."""
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise ImageDataError(f"{path} is a folder; give image files, e.g. {path}/*.png") from None
    except OSError as error:
        raise ImageDataError(f"cannot read {path}: {error.strerror or error}.") from None
    return decode_image(data, image_size, str(path))


def _visible(paths: Iterable[Path]) -> list[Path]:
    # Skip .DS_Store, ._* and similar files that file managers leave behind.
    return sorted(path for path in paths if not path.name.startswith("."))


def _class_folders(split_dir: Path) -> dict[str, list[Path]]:
    entries = _visible(split_dir.iterdir())
    stray_files = [path for path in entries if not path.is_dir()]
    if stray_files:
        raise ImageDataError(
            f"{stray_files[0]} is a file directly inside {split_dir}; images must be in one "
            f"folder per class: {split_dir}/<class>/<image>."
        )
    if not entries:
        raise ImageDataError(
            f"{split_dir} has no class folders; expected {split_dir}/<class>/<image> "
            "(e.g. train/cat/0001.png)."
        )
    folders = {}
    for folder in entries:
        files = _visible(folder.iterdir())
        nested = [path for path in files if path.is_dir()]
        if nested:
            raise ImageDataError(
                f"{nested[0]} is a folder inside class folder {folder}; each class folder "
                "must hold image files only."
            )
        if not files:
            raise ImageDataError(f"class folder {folder} holds no images.")
        folders[folder.name] = files
    return folders


def _read_split(folders: dict[str, list[Path]], class_names: tuple[str, ...], image_size: int):
    images, labels = [], []
    for label, name in enumerate(class_names):
        for path in folders[name]:
            images.append(read_image_file(path, image_size))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int32)


def load_image_folder(data_dir: str | os.PathLike, image_size: int):
    """Read ``DIR/train/<class>/*`` and, if present, ``DIR/test/<class>/*``.

    Classes are the sorted folder names of ``train/``; ``test/`` must have the
    same ones.

    Returns:
        ``(train_images, train_labels), test_or_None, class_names``.

    Raises:
        ImageDataError: The layout is wrong or a file is not a readable image;
            the message names the first offending path.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise ImageDataError(f"--data-dir {root} does not exist or is not a folder.")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise ImageDataError(
            f"{train_dir} not found: --data-dir must hold train/<class>/<image> "
            "(and optionally test/<class>/<image>)."
        )
    train_folders = _class_folders(train_dir)
    class_names = tuple(train_folders)
    if len(class_names) < 2:
        raise ImageDataError(f"{train_dir} has only one class folder; a classifier needs two.")
    test = None
    test_dir = root / "test"
    if test_dir.is_dir():
        test_folders = _class_folders(test_dir)
        if tuple(test_folders) != class_names:
            only_train = sorted(set(class_names) - set(test_folders))
            only_test = sorted(set(test_folders) - set(class_names))
            raise ImageDataError(
                f"the classes of {test_dir} differ from those of {train_dir}: "
                f"only in train: {only_train or 'none'}; only in test: {only_test or 'none'}. "
                "Both must have the same class folders."
            )
        test = _read_split(test_folders, class_names, image_size)
    return _read_split(train_folders, class_names, image_size), test, class_names


def load_labelled_folder(
    folder: str | os.PathLike, image_size: int, class_names: tuple[str, ...] | list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``FOLDER/<class>/*`` labelled with the indices of a model's ``class_names``.

    The folder may hold any subset of the classes (a folder of cats only is fine).

    Returns:
        ``(images, labels)``: ``uint8`` images and ``int32`` indices into ``class_names``.

    Raises:
        ImageDataError: The folder is missing or malformed, holds a class the model
            does not know (the message lists both sets), or an unreadable file.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ImageDataError(f"{root} does not exist or is not a folder.")
    # Checked before the class folders: their check would only say that train/<class>
    # is a folder inside a class folder.
    splits = [name for name in ("train", "test") if name not in class_names]
    if any((root / name).is_dir() for name in splits):
        instead = root / "test" if (root / "test").is_dir() else "a folder of class folders"
        raise ImageDataError(
            f"{root} is laid out for training (train/<class>/<image>); scoring needs "
            f"FOLDER/<class>/<image>: pass {instead} instead."
        )
    folders = _class_folders(root)
    unknown = sorted(set(folders) - set(class_names))
    if unknown:
        raise ImageDataError(
            f"{root} has class folders the model does not know: {', '.join(unknown)}. "
            f"The model's classes: {', '.join(class_names)}."
        )
    images, labels = [], []
    for name in folders:
        for path in folders[name]:
            images.append(read_image_file(path, image_size))
            labels.append(list(class_names).index(name))
    return np.stack(images), np.asarray(labels, dtype=np.int32)


@functools.lru_cache(maxsize=2)
def load_bundled_sample(image_size: int, path: Path = BUNDLED_SAMPLE):
    """Decode the bundled CIFAR-10 sample (``train/<class>/<n>.jpg`` inside a tar.gz).

    Decoding the 4,000 JPEGs takes seconds, and one process may train several models on
    them (the tour, the tests), so the arrays are kept. They are read-only: indexing gives
    writable copies, and an in-place change of the shared arrays fails instead of
    silently altering every later run.
    """
    index = {name: label for label, name in enumerate(CIFAR10_CLASSES)}
    images, labels = [], []
    with tarfile.open(path) as archive:
        for member in sorted(archive.getmembers(), key=lambda member: member.name):
            if not member.isfile():
                continue
            class_name = PurePosixPath(member.name).parent.name
            data = archive.extractfile(member).read()
            images.append(decode_image(data, image_size, f"{path}:{member.name}"))
            labels.append(index[class_name])
    images, labels = np.stack(images), np.asarray(labels, dtype=np.int32)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def _quiet_keras_download():
    """Keras's CIFAR-10 arrays, or None (with the reason logged) when it cannot download."""
    import keras

    try:
        (train_x, train_y), (test_x, test_y) = keras.datasets.cifar10.load_data()
    except Exception as error:  # noqa: BLE001 - any failure means: use the bundled sample
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return None, reason[:200]
    labels = (train_y.reshape(-1).astype(np.int32), test_y.reshape(-1).astype(np.int32))
    return ((train_x, labels[0]), (test_x, labels[1])), None


def _resize_all(images: np.ndarray, image_size: int) -> np.ndarray:
    if images.shape[1:3] == (image_size, image_size):
        return images
    return np.stack(
        [
            np.asarray(Image.fromarray(image).resize((image_size, image_size)), np.uint8)
            for image in images
        ]
    )


def class_balanced_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(keep, held_out)`` holding out ``fraction`` of every class.

    The same labels, fraction and seed always give the same split. Each class
    keeps at least one training image and, if it has two or more, gives at
    least one to the held-out part.
    """
    rng = np.random.default_rng(seed)
    keep, held_out = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        count = round(len(members) * fraction)
        count = min(max(count, 1 if len(members) > 1 else 0), len(members) - 1)
        held_out.append(members[:count])
        keep.append(members[count:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held_out))


def load_image_data(
    data_dir: str | os.PathLike | None,
    image_size: int,
    validation_fraction: float,
    seed: int,
) -> ImageData:
    """Load labelled images from the first available source (see the module docstring).

    Args:
        data_dir: An image-folder tree, or None/"" for CIFAR-10 (download or bundled).
        image_size: Side of the square images the model takes.
        validation_fraction: Share of each class held out when there is no test split.
        seed: Seed of that split.

    Returns:
        The images, with the held-out part described.

    Raises:
        ImageDataError: ``data_dir`` is malformed or holds unreadable files.
    """
    test = None
    if data_dir:
        train, test, class_names = load_image_folder(data_dir, image_size)
        source = f"image folder {data_dir}"
    else:
        class_names = CIFAR10_CLASSES
        downloaded, reason = _quiet_keras_download()
        if downloaded is not None:
            (train_x, train_y), test = downloaded
            train = (_resize_all(train_x, image_size), train_y)
            test = (_resize_all(test[0], image_size), test[1])
            source = "CIFAR-10 via keras.datasets.cifar10.load_data()"
        else:
            train = load_bundled_sample(image_size)
            source = (
                f"bundled CIFAR-10 sample {BUNDLED_SAMPLE.name} "
                f"(keras.datasets.cifar10 download failed: {reason})"
            )
    train_images, train_labels = train
    if test is not None:
        held_out_images, held_out_labels = test
        split, note = "test", f"the test split ({len(held_out_labels)} images)"
    else:
        keep, held_out = class_balanced_split(train_labels, validation_fraction, seed)
        if not len(held_out):  # only when every class has one image: it trains on it
            raise ImageDataError(
                f"{data_dir}/train holds one image per class, so none can be held out to "
                "measure accuracy on: add images, or a test/<class>/ folder to score on."
            )
        held_out_images, held_out_labels = train_images[held_out], train_labels[held_out]
        train_images, train_labels = train_images[keep], train_labels[keep]
        split = "validation"
        note = (
            f"a validation split: {len(held_out)} of the {len(keep) + len(held_out)} training "
            f"images ({validation_fraction:.0%} of each class, seed {seed}), never trained on; "
            "there is no test split"
        )
    log.info(
        "Images: %s; %d training images, %d classes; accuracy is reported on %s.",
        source,
        len(train_labels),
        len(class_names),
        note,
    )
    return ImageData(
        train_images=train_images,
        train_labels=train_labels,
        held_out_images=held_out_images,
        held_out_labels=held_out_labels,
        class_names=tuple(class_names),
        source=source,
        held_out_split=split,
        held_out_note=note,
    )
