"""Input pipelines: decoded ``uint8`` arrays -> batches of (image, one-hot label).

Images are decoded once when loaded (``shared.images``); the pipeline caches
the arrays as tensors, reshuffles every epoch, augments whole batches in
parallel with the model's training step, and prefetches.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from shared.images import class_balanced_split


def limit_images(
    images: np.ndarray, labels: np.ndarray, limit: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced subset of at most ``limit`` images (all of them if 0)."""
    if not limit or limit >= len(labels):
        return images, labels
    _, chosen = class_balanced_split(labels, limit / len(labels), seed)
    return images[chosen], labels[chosen]


def training_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    augment,
    seed: int,
) -> tf.data.Dataset:
    """Shuffled, augmented, one-hot batches; the last partial batch is dropped.

    ``augment`` is a Keras layer (see ``model.augmentation``) mapping a
    ``uint8`` batch to an augmented batch of the same values' type.
    """

    def augment_batch(batch_images, batch_labels):
        augmented = augment(tf.cast(batch_images, tf.float32), training=True)
        # Flips and nearest-pixel shifts only move pixels, so this cast is exact.
        return tf.cast(tf.round(augmented), tf.uint8), batch_labels

    return (
        tf.data.Dataset.from_tensor_slices((images, _one_hot(labels, num_classes)))
        .cache()
        .shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size, drop_remainder=len(labels) >= batch_size)
        .map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def evaluation_dataset(
    images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int
) -> tf.data.Dataset:
    """The images in order, unaugmented, with one-hot labels."""
    # No .cache(): the arrays are in memory already, and a partial pass over a cached
    # dataset (the --minutes timing traces the test step on one batch) makes TensorFlow
    # warn that the cache was not filled.
    return (
        tf.data.Dataset.from_tensor_slices((images, _one_hot(labels, num_classes)))
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    # One-hot because Keras's label smoothing exists only for CategoricalCrossentropy.
    return np.eye(num_classes, dtype=np.float32)[labels]
