"""Text -> 90/10 split -> vocabulary -> tf.data pipelines of character windows.

The first 90% of the characters train and the last 10% validate, the split of
the published char-level results (nanoGPT, char-rnn), so the numbers compare.
The vocabulary is the sorted set of training characters; the model's lookup
layer maps any other character to id 0, the unknown token.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import tensorflow as tf

from shared.errors import UserError

BUNDLED_TEXT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "tinyshakespeare.txt"
VALIDATION_FRACTION = 0.1


class TextDataError(UserError):
    """The training text cannot be used."""


def minimum_characters(seq_length: int) -> int:
    """The shortest text whose validation part still holds one window of ``seq_length + 1``."""
    return math.ceil((seq_length + 1) / VALIDATION_FRACTION)


def load_text(path: str | None, seq_length: int, window_flag: str = "--seq-length") -> str:
    """The bundled text, or the UTF-8 file at ``path``; raises `TextDataError` if unusable.

    ``seq_length`` is the longest window the run reads (``window_flag`` names the
    flag that set it, for the error message).
    """
    source = Path(path) if path else BUNDLED_TEXT
    if not source.is_file():
        raise TextDataError(f"no text file at {source}.")
    try:
        text = source.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise TextDataError(
            f"{source} is not UTF-8 text (byte {error.start} cannot be decoded); convert it, "
            "e.g. with: iconv -f latin1 -t utf-8"
        ) from None
    needed = minimum_characters(seq_length)
    if len(text) < needed:
        raise TextDataError(
            f"{source} has {len(text)} characters; {window_flag} {seq_length} needs at least "
            f"{needed} (10% of them validate, and validation needs one window of "
            f"{seq_length + 1})."
        )
    return text


def split_text(text: str) -> tuple[str, str]:
    """First 90% of the characters for training, last 10% for validation."""
    cut = int(len(text) * (1 - VALIDATION_FRACTION))
    return text[:cut], text[cut:]


def build_vocabulary(train_text: str) -> list[str]:
    """The sorted distinct characters of the training text."""
    return sorted(set(train_text))


def encode(text: str, vocabulary: list[str]) -> np.ndarray:
    """Character ids as the model's lookup layer assigns them: vocabulary[i] -> i + 1, else 0."""
    index = {char: i + 1 for i, char in enumerate(vocabulary)}
    return np.array([index.get(char, 0) for char in text], dtype=np.int32)


def training_dataset(
    ids: np.ndarray, seq_length: int, batch_size: int, seed: int
) -> tf.data.Dataset:
    """Endless batches of windows starting at random offsets: (ids, next-character ids).

    Random offsets, rather than one fixed tiling, give every epoch new contexts.
    """
    ids_tensor = tf.constant(ids)
    last_start = len(ids) - seq_length - 1

    def window(random_value: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        start = tf.math.floormod(random_value, last_start + 1)
        chunk = ids_tensor[start : start + seq_length + 1]
        return chunk[:-1], chunk[1:]

    return (
        tf.data.Dataset.random(seed=seed)
        .map(window, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def validation_dataset(ids: np.ndarray, seq_length: int, batch_size: int) -> tf.data.Dataset:
    """Consecutive non-overlapping windows covering the validation text once."""
    count = (len(ids) - 1) // seq_length
    inputs = ids[: count * seq_length].reshape(count, seq_length)
    targets = ids[1 : count * seq_length + 1].reshape(count, seq_length)
    return (
        tf.data.Dataset.from_tensor_slices((inputs, targets))
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def unigram_bits_per_character(train_text: str, validation_text: str) -> float:
    """Cross-entropy of the validation text under the training character frequencies, in bits.

    The score of a model that knows only how common each character is: any
    model that has learned something about order must do better.
    """
    counts = Counter(train_text)
    alphabet = set(train_text) | set(validation_text)
    total = len(train_text) + len(alphabet)  # add-one smoothing for characters unseen in training
    mean_log2 = np.mean([np.log2((counts[char] + 1) / total) for char in validation_text])
    return float(0.0 - mean_log2)  # 0.0 - x, not -x: a one-character text scores 0, not -0
