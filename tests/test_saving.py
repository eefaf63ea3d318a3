"""Atomic model saving and clear errors for missing or damaged model files."""

from __future__ import annotations

import logging
import zipfile

import keras
import numpy as np
import pytest

from shared.cli import exit_on_user_error
from shared.saving import (
    ModelFileError,
    atomic_folder,
    check_model_file,
    load_model,
    save_model,
)


def small_model(units: int = 3) -> keras.Model:
    inputs = keras.Input(shape=(4,))
    outputs = keras.layers.Dense(units)(inputs)
    return keras.Model(inputs, outputs)


class FailsToSerialise(keras.layers.Layer):
    """A real layer whose config cannot be written, so model.save fails mid-way."""

    def call(self, inputs):
        return inputs

    def get_config(self):
        raise RuntimeError("cannot serialise this layer")


def test_save_then_load_gives_the_same_outputs(tmp_path):
    model = small_model()
    path = save_model(model, tmp_path / "model.keras")
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), load_model(path).predict(x, verbose=0)
    )
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]  # no temporary files left


def test_a_failed_save_leaves_the_previous_model_intact(tmp_path):
    path = tmp_path / "model.keras"
    good = small_model(units=3)
    save_model(good, path)
    before = path.read_bytes()

    inputs = keras.Input(shape=(4,))
    broken = keras.Model(inputs, FailsToSerialise()(inputs))
    with pytest.raises(Exception, match="cannot serialise"):
        save_model(broken, path)

    assert path.read_bytes() == before
    assert load_model(path).output_shape == (None, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_keras_own_save_is_not_atomic_which_is_why_save_model_exists(tmp_path):
    # The failure mode save_model guards against: Keras writes in place.
    path = tmp_path / "model.keras"
    small_model().save(path)
    inputs = keras.Input(shape=(4,))
    with pytest.raises(Exception, match="cannot serialise"):
        keras.Model(inputs, FailsToSerialise()(inputs)).save(path)
    with pytest.raises(ModelFileError):
        check_model_file(path)


def test_save_model_requires_the_keras_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.keras"):
        save_model(small_model(), tmp_path / "model.h5")


def test_missing_file_error_names_the_file(tmp_path):
    with pytest.raises(ModelFileError, match=r"No model file at .*absent\.keras"):
        load_model(tmp_path / "absent.keras")


def test_truncated_file_error_says_truncated(tmp_path):
    path = tmp_path / "model.keras"
    save_model(small_model(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ModelFileError, match=r"model\.keras is not a valid Keras model file.*truncated"
    ):
        load_model(path)


def test_non_keras_files_are_named_as_such(tmp_path):
    text = tmp_path / "notes.keras"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="notes.keras is not a valid Keras model file"):
        load_model(text)
    other_zip = tmp_path / "other.keras"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    with pytest.raises(ModelFileError, match="not a Keras model"):
        load_model(other_zip)
    with pytest.raises(ModelFileError, match="is a folder"):
        load_model(tmp_path)


def test_corrupted_bytes_inside_the_archive_are_detected(tmp_path):
    path = tmp_path / "model.keras"
    save_model(small_model(), path)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model.weights.h5")
    data = bytearray(path.read_bytes())
    # Flip bytes in the middle of the stored weights file (past its local header).
    middle = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    data[middle : middle + 8] = bytes(255 - b for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="corrupt"):
        load_model(path)


def _exit_message(caplog, failing) -> tuple[int, str]:
    """Exit status and logged line of ``exit_on_user_error(failing)``."""
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stopped:
        exit_on_user_error(failing)
    return stopped.value.code, caplog.records[-1].getMessage()


def test_a_file_in_the_way_of_an_output_folder_is_one_line_saying_what_to_do(tmp_path, caplog):
    in_the_way = tmp_path / "results"
    in_the_way.write_text("not a folder")
    status, message = _exit_message(caplog, lambda: (in_the_way / "plots").mkdir(parents=True))
    assert status == 1
    assert str(in_the_way / "plots") in message
    assert "a file is where a folder has to be made; choose another output folder" in message
    assert in_the_way.read_text() == "not a folder"


def test_a_full_disk_is_one_line_saying_what_to_do(caplog):
    def write_to_a_full_disk():
        with open("/dev/full", "w") as device:  # every write fails with ENOSPC
            device.write("x")

    status, message = _exit_message(caplog, write_to_a_full_disk)
    assert status == 1
    assert "No space left on device" in message
    assert "free some disk space and run the command again" in message


def test_an_atomic_folder_never_replaces_a_file(tmp_path):
    a_file = tmp_path / "export"
    a_file.write_text("the user's own file")
    with pytest.raises(FileExistsError), atomic_folder(a_file) as scratch:
        (scratch / "model.tflite").write_text("new")
    assert a_file.read_text() == "the user's own file"
    assert [path.name for path in tmp_path.iterdir()] == ["export"]  # no scratch left
