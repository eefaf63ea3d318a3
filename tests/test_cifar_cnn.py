"""CIFAR CNN project: conv arithmetic, pipeline, quick runs, saved model, predict CLI."""

from __future__ import annotations

import json
import logging
import re
import tarfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from projects.cifar_cnn import airbench
from projects.cifar_cnn.config import (
    MINIMUM_IMAGE_SIZE,
    MODELS,
    SMALLEST_IMAGE_SIZE,
    CifarConfig,
)
from projects.cifar_cnn.data import limit_images, training_dataset
from projects.cifar_cnn.model import (
    augmentation,
    build_classifier,
    conv_output_size,
    same_padding,
    trained_network,
    window_layers,
)
from projects.cifar_cnn.train import (
    AIRBENCH_MEASURED_ACCURACY,
    budget_plan,
    choose_batch_size,
    expected_accuracy_note,
    learning_rate_schedule,
    narrower_width_hint,
)
from projects.cifar_cnn.train import main as train_cifar
from shared.errors import UserError
from shared.images import (
    BUNDLED_SAMPLE,
    CIFAR10_CLASSES,
    ImageDataError,
    load_bundled_sample,
)
from shared.precision import cpu_supports_bfloat16, precision_policy
from shared.runs import load_run
from tests.helpers import history_epochs, kill_after_first_epoch, run_module

# (H, W), filter, stride, padding -> (OH, OW): the CNN lecture's five exercises.
LECTURE_EXERCISES = [
    ((227, 227), 11, 4, 0, (55, 55)),
    ((64, 64), 7, 2, 0, (29, 29)),
    ((32, 32), 5, 1, 2, (32, 32)),
    ((32, 64), 5, 1, 0, (28, 60)),
    ((64, 32), 3, 1, 1, (64, 32)),
]


@pytest.mark.parametrize("size, kernel, stride, padding, expected", LECTURE_EXERCISES)
def test_conv_arithmetic_solves_the_lecture_exercises(size, kernel, stride, padding, expected):
    computed = tuple(conv_output_size(side, kernel, stride, padding) for side in size)
    assert computed == expected
    # Keras agrees: explicit zero padding, then a "valid" convolution.
    inputs = keras.Input((*size, 1))
    output = keras.layers.Conv2D(1, kernel, strides=stride)(
        keras.layers.ZeroPadding2D(padding)(inputs)
    )
    assert tuple(output.shape[1:3]) == expected


def test_the_floor_drops_a_partial_last_step():
    # (64 - 7) / 2 + 1 = 29.5: the 30th position would need a pixel that is not there.
    assert conv_output_size(64, 7, 2) == 29
    output = keras.layers.Conv2D(1, 7, strides=2)(keras.Input((64, 64, 1)))
    assert output.shape[1] == 29
    with pytest.raises(ValueError, match="does not fit"):
        conv_output_size(4, 7, 1, 1)


@pytest.mark.parametrize("size", [5, 8, 13, 32])
@pytest.mark.parametrize("kernel", [1, 2, 3, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_conv_arithmetic_matches_keras_valid_and_same_layers(size, kernel, stride):
    inputs = keras.Input((size, size, 1))
    for padding in (0, 1, 2):
        if kernel > size + 2 * padding:
            continue
        padded = keras.layers.ZeroPadding2D(padding)(inputs)
        output = keras.layers.Conv2D(1, kernel, strides=stride)(padded)
        assert output.shape[1] == conv_output_size(size, kernel, stride, padding)
    same = keras.layers.Conv2D(1, kernel, strides=stride, padding="same")(inputs)
    before, after = same_padding(size, kernel, stride)
    assert same.shape[1] == (size + before + after - kernel) // stride + 1
    pooled = keras.layers.MaxPooling2D(kernel, strides=stride, padding="same")(inputs)
    assert pooled.shape[1] == same.shape[1]


@pytest.mark.parametrize("architecture", MODELS)
def test_every_conv_and_pool_layer_of_every_model_obeys_the_formula(architecture):
    if architecture == "airbench":  # with a learned first layer, a Conv2D like the others
        model = airbench.build_airbench(10, 32, np.zeros(3), np.ones(3), whitening_kernel=None)
    else:
        model = build_classifier(architecture, 10, 32, 8, np.zeros(3), np.ones(3))
    windows = window_layers(model)
    assert len(windows) >= 4  # LeNet-5: two convolutions, two poolings
    for window in windows:
        actual = model.get_layer(window.name).output.shape
        assert window.output_height == actual[1], window
        assert "//" in window.formula()


def test_precision_policy_on_a_cpu_machine():
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this test is about machines without a GPU")
    # This machine's own answer: bfloat16 exactly when its CPU computes it natively.
    expected = "mixed_bfloat16" if cpu_supports_bfloat16() else "float32"
    assert precision_policy("auto") == expected
    assert precision_policy("off") == "float32"
    assert precision_policy("on") == "mixed_bfloat16"


def test_limit_images_keeps_classes_balanced():
    images, labels = load_bundled_sample(32)
    images, labels = limit_images(images, labels, 100, seed=0)
    assert images.shape == (100, 32, 32, 3)
    assert np.bincount(labels).tolist() == [10] * 10


def test_augmentation_moves_pixels_but_keeps_them_uint8():
    images, labels = load_bundled_sample(32)
    images, labels = limit_images(images, labels, 100, seed=0)
    data = training_dataset(images, labels, 10, 50, augmentation(0.125, True, seed=0), seed=0)
    batch, one_hot = next(iter(data))
    assert batch.dtype == tf.uint8 and tuple(batch.shape) == (50, 32, 32, 3)
    assert one_hot.shape == (50, 10)
    np.testing.assert_allclose(one_hot.numpy().sum(axis=1), 1.0)
    batch = batch.numpy()
    unchanged = sum(any(np.array_equal(image, original) for original in images) for image in batch)
    assert unchanged < 25, "augmentation left most images unchanged"
    # Flips and nearest-pixel shifts only rearrange pixels: every augmented image's
    # colours are a subset of one original's.
    palettes = [{tuple(pixel) for pixel in original.reshape(-1, 3)} for original in images]
    for image in batch[:10]:
        colours = {tuple(pixel) for pixel in image.reshape(-1, 3)}
        assert any(colours <= palette for palette in palettes)


# The default airbench (Muon, frozen whitening, test-time views), lenet5 and alexnet
# train under 2-replica MirroredStrategy (conftest.py splits the CPU into two logical
# devices); the others on one device, as by default. airbench trains on one device in its
# SGD recipe's test and in the --minutes tests. (Mirrored, inception and densenet took
# 45 and 66 s to trace their many layers for 7 steps, against 22 and 23 s on one device.)
MIRRORED = ("airbench", "lenet5", "alexnet")


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """One --quick run of each architecture (bundled sample; Keras's download fails here)."""
    root = tmp_path_factory.mktemp("cifar")
    return {
        architecture: (
            root / architecture,
            train_cifar(
                CifarConfig(
                    model=architecture,
                    run_dir=str(root / architecture),
                    strategy="mirrored" if architecture in MIRRORED else "auto",
                    **CifarConfig.QUICK,
                )
            ),
        )
        for architecture in MODELS
    }


@pytest.mark.parametrize("architecture", MODELS)
def test_quick_run_of_each_model_writes_a_complete_run(quick_runs, architecture):
    run_dir, metrics = quick_runs[architecture]
    assert metrics["model"] == architecture
    for name in ("model.keras", "best.keras", "metrics.json", "history.csv", "train.log"):
        assert (run_dir / name).exists(), name
    for plot in ("confusion_matrix.png", "examples.png", "training_curves.png"):
        assert (run_dir / "plots" / plot).stat().st_size > 1000, plot
    saved = json.loads((run_dir / "metrics.json").read_text())
    confusion = np.array(saved["confusion_matrix"])
    assert confusion.shape == (10, 10)
    assert confusion.sum() == saved["held_out_images"]
    assert saved["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
    per_class = confusion.diagonal() / confusion.sum(axis=1)
    assert list(saved["per_class_accuracy"].values()) == pytest.approx(per_class.tolist())
    assert saved["class_names"][3] == "cat"
    assert saved["held_out_split"] in ("test", "validation")
    assert saved["jit_compile"] is False  # --jit-compile auto: no XLA on a CPU
    log = (run_dir / "train.log").read_text()
    assert "Convolution arithmetic" in log and "Total params" in log
    assert "accuracy is reported on" in log
    # The log says what is used (--quick trains on a class-balanced 512-image subset).
    used = saved["train_images"]
    assert 500 <= used <= 512
    assert f"Training on {used} of the 3600 training images (--max-train-images 512" in log
    assert f"(7 steps per epoch over {7 * 64} images)" in log
    if architecture == "airbench":  # the default recipe is airbench94_muon's
        assert "Muon rate 0.24 on the 3x3 kernels" in log
    if architecture in MIRRORED:
        assert "MirroredStrategy with 2 replica(s)" in log
    else:
        assert "with 1 replica(s)" in log


def test_saved_model_takes_raw_uint8_images_and_gives_probabilities(quick_runs):
    # Reloads in a fresh process: the airbench model, whose custom layers and test-time
    # views are the harder case, in test_airbench.py and by predict's command line below.
    run_dir, _ = quick_runs["resnet"]
    model = keras.models.load_model(run_dir / "model.keras")
    assert model.input.dtype == "uint8"
    images, _ = load_bundled_sample(32)
    probabilities = model.predict(images[:16], verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_predict_cli_classifies_images_and_reports_a_non_image(quick_runs, tmp_path):
    # airbench: its saved model holds custom layers, which a fresh process must find by
    # itself.
    run_dir, _ = quick_runs["airbench"]
    with tarfile.open(BUNDLED_SAMPLE) as archive:
        member = next(m for m in archive.getmembers() if m.name.startswith("train/ship/"))
        (tmp_path / "ship.jpg").write_bytes(archive.extractfile(member).read())
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 90), dtype=np.uint8))
    big.convert("L").save(tmp_path / "grey 120x90.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "more").mkdir()
    names = ("ship.jpg", "notes.txt", "grey 120x90.png", "more")
    paths = [str(tmp_path / name) for name in names]
    result = run_module("projects.cifar_cnn.predict", "--run-dir", str(run_dir), *paths)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [paths[0], paths[2]]
    for line in lines:
        ranked = line.split(": ", 1)[1].split(", ")
        assert len(ranked) == 3
        probabilities = [float(entry.rsplit(" ", 1)[1]) for entry in ranked]
        assert probabilities == sorted(probabilities, reverse=True)
        assert all(
            entry.rsplit(" ", 1)[0]
            in json.loads((run_dir / "metrics.json").read_text())["class_names"]
            for entry in ranked
        )
    assert f"cannot read {paths[1]}: it is not an image file" in result.stderr
    assert f"{paths[3]} is a folder; give image files, e.g. {paths[3]}/*.png" in result.stderr
    assert "Traceback" not in result.stderr


def test_training_on_an_image_folder_reports_its_validation_split(tmp_path):
    images, labels = load_bundled_sample(32)
    images, labels = limit_images(images, labels, 200, seed=0)
    names = CIFAR10_CLASSES
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = tmp_path / "data" / "train" / names[label] / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    config = CifarConfig(
        data_dir=str(tmp_path / "data"),
        run_dir=str(tmp_path / "run"),
        model="simple",
        validation_fraction=0.2,
        **{**CifarConfig.QUICK, "max_train_images": 0},
    )
    metrics = train_cifar(config)
    assert metrics["held_out_split"] == "validation"
    assert metrics["held_out_images"] == 40 and metrics["train_images"] == 160
    assert "validation split: 40 of the 200 training images" in metrics["held_out_note"]


@pytest.mark.parametrize("architecture", MODELS)
def test_each_model_builds_at_its_minimum_image_size_and_not_below(architecture):
    smallest = MINIMUM_IMAGE_SIZE.get(architecture, SMALLEST_IMAGE_SIZE)
    mean, variance = np.zeros(3), np.ones(3)

    def build(size: int) -> keras.Model:
        if architecture == "airbench":  # with the test-time views that are saved
            net = airbench.build_airbench(10, size, mean, variance, None, width=8)
            return airbench.with_test_time_augmentation(net, 2)
        return build_classifier(architecture, 10, size, 8, mean, variance)

    assert build(smallest).output.shape == (None, 10)
    if architecture not in MINIMUM_IMAGE_SIZE:
        return  # it builds at the flag's floor (and maybe below, which the flag refuses)
    with pytest.raises(ValueError, match="negative|zero"):
        build(smallest - 1)
    with pytest.raises(UserError, match=f"at least {smallest} pixels"):
        CifarConfig(model=architecture, image_size=smallest - 1)


def test_too_small_an_image_size_is_refused_before_tensorflow_loads(tmp_path):
    result = run_module(
        "projects.cifar_cnn.train", "--image-size", "8", "--run-dir", str(tmp_path / "run")
    )
    assert result.returncode == 2
    assert (
        "--image-size 8 is too small for --model airbench: its convolutions and poolings need "
        "at least 9 pixels; use --image-size 9 or more." in result.stderr
    )
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_bad_data_dir_is_refused_with_what_to_do(tmp_path):
    # An ImageDataError: a UserError, which the command line prints as one line
    # (tests/test_images.py feeds the image reader every malformed folder, this one too).
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "picture.jpg").write_bytes(b"\xff\xd8")
    config = CifarConfig.create(quick=True, data_dir=str(tmp_path), run_dir=str(tmp_path / "run"))
    with pytest.raises(ImageDataError, match="picture.jpg is a file directly inside"):
        train_cifar(config)
    # The run chose bfloat16 on a CPU with it: models built after the error are float32.
    assert keras.mixed_precision.global_policy().name == "float32"


def test_killed_run_resumes_from_its_last_epoch(tmp_path, caplog):
    run_dir = tmp_path / "run"
    args = ["--quick", "--epochs", "4", "--model", "simple", "--run-dir", str(run_dir)]
    kill_after_first_epoch("projects.cifar_cnn.train", args, run_dir)
    assert 1 <= len(history_epochs(run_dir / "history.csv")) < 4

    # The same run, resumed in this process (a fresh one would add TensorFlow's start-up).
    with caplog.at_level(logging.INFO):
        train_cifar(CifarConfig.create(quick=True, epochs=4, model="simple", run_dir=str(run_dir)))
    assert "Resuming the interrupted run" in caplog.text
    assert history_epochs(run_dir / "history.csv") == list(range(4))
    assert json.loads((run_dir / "metrics.json").read_text())["model"] == "simple"


@pytest.mark.parametrize(
    ("requested", "images", "expected"),
    [
        (0, 45_000, 256),
        (0, 3_600, 64),
        (0, 12_800, 256),
        (0, 12_799, 128),
        (0, 100, 8),
        (0, 5, 5),
        (100, 3_600, 100),
        (512, 300, 300),
    ],
)
def test_automatic_batch_size_gives_an_epoch_50_steps(requested, images, expected):
    assert choose_batch_size(requested, images) == expected


def test_learning_rate_is_scaled_with_the_batch_size():
    config = CifarConfig(learning_rate=0.2, epochs=2, warmup_epochs=1.0)
    schedule = learning_rate_schedule(config, batch_size=64, steps_per_epoch=10, epochs=2)
    assert float(schedule(10)) == pytest.approx(0.05)  # peak, at the end of warm-up
    assert float(schedule(0)) == pytest.approx(0.0)
    constant = CifarConfig(learning_rate=0.2, lr_schedule="constant")
    assert learning_rate_schedule(constant, batch_size=512, steps_per_epoch=10, epochs=2) == 0.4


def test_a_time_budget_sets_the_epochs_from_a_timed_epoch(tmp_path, caplog, capfd):
    import logging

    caplog.set_level(logging.INFO)
    # A budget of 0.1 minutes (6 s) against a measured epoch: a whole number of epochs.
    # In airbench94's SGD recipe (--optimizer sgd: Nesterov SGD, triangular schedule,
    # lookahead), which no other test trains.
    config = {**CifarConfig.QUICK, "minutes": 0.1, "optimizer": "sgd"}
    metrics = train_cifar(CifarConfig(run_dir=str(tmp_path / "run"), **config))
    assert "(the airbench recipe's, scaled to the batch)" in caplog.text
    assert "Muon" not in caplog.text
    assert metrics["model"] == "airbench" and metrics["test_time_views"] == 6
    chosen = int(re.search(r"so training runs (\d+) epochs?\b", caplog.text).group(1))
    assert metrics["epochs"] == chosen >= 1
    assert len(history_epochs(tmp_path / "run" / "history.csv")) == chosen
    assert "a validation pass took" in caplog.text  # the epoch includes its validation
    # The timing traces the test step on one validation batch; had that dataset a cache,
    # TensorFlow would warn (on the process's stderr) that the cache was not filled.
    assert "did not fully read the dataset" not in capfd.readouterr().err


def test_the_budget_log_quotes_the_measured_runs_around_the_planned_epochs():
    measured = AIRBENCH_MEASURED_ACCURACY["muon", 32]
    most = max(measured)
    below = max(count for count in measured if count < most)
    assert below < most - 1  # a gap to plan into
    exact = expected_accuracy_note("airbench", "muon", 32, most)
    assert f"{most} epochs measured {measured[most]:.1%}" in exact and " and " not in exact
    between = expected_accuracy_note("airbench", "muon", 32, most - 1)
    assert f"measured {measured[below]:.1%} and {most} epochs {measured[most]:.1%}" in between
    beyond = expected_accuracy_note("airbench", "muon", 32, most + 5)
    assert f"the nearest measured count, {most} epochs, reached" in beyond
    assert expected_accuracy_note("resnet", "muon", 32, most) == ""
    # Another width is another network: the width-32 figures do not describe it.
    assert expected_accuracy_note("airbench", "muon", 64, most) == ""


def test_a_budget_that_fits_few_epochs_suggests_the_measured_narrower_net():
    narrow = AIRBENCH_MEASURED_ACCURACY["muon", 16]
    hint = narrower_width_hint("airbench", "muon", 32, 1)
    assert "Only 1 epoch fit at --width 32" in hint and hint.endswith("Try --width 16.")
    # The measured narrow run beat the wide one at the same budget, or there is no hint.
    assert max(narrow.values()) > AIRBENCH_MEASURED_ACCURACY["muon", 32][1]
    assert f"to {narrow[max(narrow)]:.1%} validation accuracy" in hint
    assert narrower_width_hint("airbench", "muon", 32, 3) == ""  # enough epochs fit
    assert narrower_width_hint("airbench", "muon", 16, 1) == ""  # already narrow
    assert narrower_width_hint("resnet", "muon", 32, 1) == ""
    assert narrower_width_hint("airbench", "sgd", 32, 1) == ""  # not measured with SGD


@pytest.mark.parametrize(
    "flags, timed, chosen",
    [
        # The slow CPU's measured plans: 1 epoch of width 32, 4 of width 16.
        ({}, {32: (1, 577.0), 16: (4, 230.0)}, (16, 4, 230.0)),
        ({}, {32: (3, 360.0)}, (32, 3, 360.0)),  # enough epochs fit: 16 is not timed
        ({}, {32: (1, 900.0), 16: (1, 700.0)}, (32, 1, 900.0)),  # 16 fits no more
        ({"width": 32}, {32: (1, 577.0)}, (32, 1, 577.0)),  # asked for by the user
        ({"model": "resnet"}, {32: (1, 577.0)}, (32, 1, 577.0)),  # measured for airbench only
        ({"optimizer": "sgd"}, {32: (1, 577.0)}, (32, 1, 577.0)),  # measured for Muon only
        ({"init_from": "runs/cifar"}, {32: (1, 577.0)}, (32, 1, 577.0)),  # its weights' width
    ],
)
def test_automatic_width_trains_the_narrow_airbench_when_more_of_its_epochs_fit(
    flags, timed, chosen
):
    timed_widths = []

    def plan(width: int) -> tuple[int, float]:
        timed_widths.append(width)
        return timed[width]

    assert budget_plan(CifarConfig(**{"minutes": 20, **flags}), plan) == chosen
    assert timed_widths == list(timed)


def test_an_automatic_width_run_resumed_after_its_timing_keeps_the_width_it_chose(tmp_path, caplog):
    # A --width 0 run stopped after timing both widths (before its first epoch ended):
    # resumed, it trains the width those timings chose, without timing again.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    plans = {"budget.json": (1, 60.0), "budget-width16.json": (2, 3.0)}
    for name, (epochs, seconds) in plans.items():
        record = {"minutes": 0.1, "seconds_per_epoch": seconds, "epochs": epochs}
        (run_dir / name).write_text(json.dumps(record))
    config = {**CifarConfig.QUICK, "width": 0, "minutes": 0.1, "run_dir": str(run_dir)}
    with caplog.at_level(logging.INFO):
        metrics = train_cifar(CifarConfig(**config))
    assert "so the run trains --width 16" in caplog.text
    assert caplog.text.count("keeping this run's") == 2
    assert (metrics["width"], metrics["epochs"]) == (16, 2)
    assert len(history_epochs(run_dir / "history.csv")) == 2
    network = trained_network(load_run(run_dir).model)
    first_group = next(layer for layer in network.layers if layer.name.endswith("_conv"))
    assert first_group.kernel.shape[-1] == 2 * 16  # the recipe's 64 filters at width 32


def test_evaluate_rescores_an_airbench_run_with_each_number_of_views(quick_runs, tmp_path):
    from projects.cifar_cnn.evaluate import evaluate

    run_dir, metrics = quick_runs["airbench"]
    scored = evaluate(str(run_dir), out=str(tmp_path))
    views = scored["accuracy_by_test_time_views"]
    assert set(views) == {1, 2, 6}
    assert views[6] == pytest.approx(metrics["accuracy"])  # the saved model uses 6 views
    assert scored["accuracy"] == pytest.approx(metrics["accuracy"])
    assert scored["images"] == metrics["held_out_images"]


def _sample_folder(root, classes, per_class):
    """``root/<class>/<n>.png`` of bundled-sample images of the given classes."""
    images, labels = load_bundled_sample(32)
    for name in classes:
        chosen = np.flatnonzero(labels == CIFAR10_CLASSES.index(name))[:per_class]
        (root / name).mkdir(parents=True)
        for index in chosen:
            Image.fromarray(images[index]).save(root / name / f"{index}.png")
    return root


@pytest.mark.parametrize("architecture", ["airbench", "densenet"])
def test_inspect_cli_writes_kernels_feature_maps_and_grad_cam(
    quick_runs, tmp_path, architecture, capsys
):
    from projects.cifar_cnn.inspect import main as inspect_main

    run_dir, _ = quick_runs[architecture]
    folder = _sample_folder(tmp_path / "images", ["cat"], 1)
    image = next((folder / "cat").iterdir())
    out = tmp_path / "out"
    args = ["--run-dir", str(run_dir), "--class", "dog", "--out", str(out), str(image)]
    if architecture == "airbench":  # the command line, in a fresh process
        result = run_module("projects.cifar_cnn.inspect", *args)
        assert result.returncode == 0, result.stderr[-2000:]
        stdout, stderr = result.stdout, result.stderr
    else:  # DenseNet's concatenated layers: the same command in this process
        capsys.readouterr()
        assert inspect_main(args) == 0
        stdout, stderr = capsys.readouterr()
    printed = dict(line.split(": ", 1) for line in stdout.strip().splitlines())
    assert printed["kernels"] == str(out / "kernels.png")
    assert sum(what.startswith("features ") for what in printed) == 2  # early and late
    assert "grad-cam dog" in printed and sum(w.startswith("grad-cam ") for w in printed) >= 1
    for path in printed.values():
        assert Image.open(path).format == "PNG"
    assert "Traceback" not in stderr


def test_inspect_cli_names_a_bad_layer_and_a_non_image(quick_runs, tmp_path, capsys):
    from projects.cifar_cnn.inspect import main as inspect_main

    run_dir, _ = quick_runs["airbench"]  # the answers do not depend on the architecture
    image = next((_sample_folder(tmp_path / "images", ["cat"], 1) / "cat").iterdir())
    # In this process: test_inspect_cli_writes_kernels_feature_maps_and_grad_cam runs the
    # command line in a fresh one.
    capsys.readouterr()
    with pytest.raises(SystemExit) as bad_layer:
        inspect_main(["--run-dir", str(run_dir), "--layer", "nope", str(image)])
    said = capsys.readouterr().err
    assert bad_layer.value.code == 2
    assert "--layer 'nope' is not a feature-map layer" in said
    assert "valid names:" in said and "Traceback" not in said
    (tmp_path / "notes.txt").write_text("not an image")
    capsys.readouterr()
    with pytest.raises(SystemExit) as not_image:
        inspect_main(["--run-dir", str(run_dir), str(tmp_path / "notes.txt")])
    said = capsys.readouterr().err
    assert not_image.value.code == 2
    assert f"cannot read {tmp_path / 'notes.txt'}: it is not an image file" in said


def test_grad_cam_finds_the_region_that_raises_the_class_score():
    from projects.cifar_cnn.inspect import grad_cam

    # Class 0's logit is the mean of the red channel, class 1's its negative: Grad-CAM
    # of class 0 must light up exactly where the image is red, and class 1 nowhere.
    images = keras.Input((32, 32, 3), dtype="uint8")
    x = keras.layers.Rescaling(1.0)(images)  # uint8 -> float32
    features = keras.layers.Conv2D(1, 1, use_bias=False, name="red")(x)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    logits = keras.layers.Dense(2, use_bias=False)(pooled)
    network = keras.Model(images, logits)
    network.get_layer("red").set_weights([np.array([1.0, 0.0, 0.0]).reshape(1, 1, 3, 1)])
    network.layers[-1].set_weights([np.array([[1.0, -1.0]])])
    image = np.zeros((32, 32, 3), np.uint8)
    image[4:12, 20:28, 0] = 200
    heat = grad_cam(network, network.get_layer("red"), image, 0)
    assert heat.shape == (32, 32) and heat.min() >= 0
    assert heat[4:12, 20:28].min() == pytest.approx(1.0) and heat.max() == pytest.approx(1.0)
    assert heat[20:, :10].max() == 0
    assert not grad_cam(network, network.get_layer("red"), image, 1).any()


def test_grad_cam_of_a_trained_run_has_the_image_shape(quick_runs):
    from projects.cifar_cnn.inspect import grad_cam, logits_network, spatial_layers

    run_dir, _ = quick_runs["resnet"]
    network = logits_network(load_run(run_dir).model)
    images, _ = load_bundled_sample(32)
    heat = grad_cam(network, spatial_layers(network)[-1], images[0], 3)
    assert heat.shape == (32, 32) and heat.min() >= 0 and heat.max() <= 1


def test_evaluate_scores_a_labelled_folder_and_names_unknown_classes(quick_runs, tmp_path, capsys):
    from projects.cifar_cnn.evaluate import main as evaluate_main

    run_dir, _ = quick_runs["vgg"]
    folder = _sample_folder(tmp_path / "mine", ["cat", "ship"], 5)
    out = tmp_path / "out"
    args = ["--run-dir", str(run_dir), "--data-dir", str(folder), "--out", str(out)]
    result = run_module("projects.cifar_cnn.evaluate", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    scored = json.loads((out / "evaluation.json").read_text())
    confusion = np.asarray(scored["confusion_matrix"])
    assert confusion.sum(axis=1)[CIFAR10_CLASSES.index("cat")] == 5
    assert confusion.sum(axis=1)[CIFAR10_CLASSES.index("ship")] == 5 and confusion.sum() == 10
    assert f"accuracy {scored['accuracy']:.4f} on 10 images" in result.stdout
    for plot in ("confusion_matrix.png", "examples.png"):
        assert Image.open(out / plot).format == "PNG"

    # An unknown class, in this process (the command line ran above).
    (folder / "wolf").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "wolf" / "0.png")
    capsys.readouterr()
    with pytest.raises(SystemExit) as bad:
        evaluate_main(["--run-dir", str(run_dir), "--data-dir", str(folder)])
    said = capsys.readouterr().err
    assert bad.value.code == 2
    assert "class folders the model does not know: wolf" in said
    assert "The model's classes: airplane, automobile" in said


def test_init_from_copies_every_layer_but_a_head_for_other_classes(quick_runs, tmp_path):
    from projects.cifar_cnn.model import initialize_from, trained_network

    run_dir, _ = quick_runs["airbench"]
    source = trained_network(load_run(run_dir).model)
    images, _ = load_bundled_sample(32)
    mean, variance = np.full(3, 120.0), np.full(3, 3000.0)
    whitening = airbench.patch_whitening_filters(images[:500], mean, variance)
    fresh = airbench.build_airbench(3, 32, mean, variance, whitening, width=8)
    note = initialize_from(fresh, str(run_dir), ("cat", "dog", "ship"))
    assert "classifier head 'dense'" in note and "this data has 3 (cat, dog, ship)" in note
    for layer, trained in zip(fresh.layers, source.layers, strict=True):
        theirs = trained.get_weights()
        if layer.name == "dense":
            assert layer.get_weights()[0].shape == (theirs[0].shape[0], 3)
        else:
            for mine, original in zip(layer.get_weights(), theirs, strict=True):
                np.testing.assert_array_equal(mine, original)

    folder = _sample_folder(tmp_path / "data" / "train", ["cat", "dog", "ship"], 40)
    metrics = train_cifar(
        CifarConfig(
            data_dir=str(folder.parent),
            init_from=str(run_dir),
            run_dir=str(tmp_path / "tuned"),
            **{**CifarConfig.QUICK, "max_train_images": 0, "batch_size": 32},
        )
    )
    assert metrics["class_names"] == ["cat", "dog", "ship"]
    assert "its classifier head 'dense'" in (tmp_path / "tuned" / "train.log").read_text()
    with pytest.raises(UserError, match="train with --model airbench --width 8"):
        initialize_from(build_classifier("resnet", 10, 32, 8, mean, variance), str(run_dir), ())


def test_tour_trains_each_model_once_and_a_diverged_one_is_a_row_not_its_end(tmp_path, capsys):
    from projects.cifar_cnn.tour import main as tour_main

    out = tmp_path / "tour"
    # As shared.runs leaves a run whose loss became NaN: metrics.json marked diverged.
    (out / "lenet5").mkdir(parents=True)
    (out / "lenet5" / "metrics.json").write_text('{"status": "diverged"}\n')
    args = ["--quick", "--models", "lenet5", "simple", "--out", str(out)]
    first = run_module("projects.cifar_cnn.tour", *args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "lenet5 diverged; the table says so" in first.stderr
    rows = (out / "tour.md").read_text().splitlines()
    assert "a validation split: 400 of the 4000 training images" in rows[-1]
    assert rows[2].startswith("| lenet5 |") and "diverged: its loss became NaN" in rows[2]
    assert rows[3].startswith("| simple | ")  # trained after it, as usual
    assert (out / "simple" / "model.keras").exists()
    assert Image.open(out / "tour.png").format == "PNG"
    # Again, in this process (the command line ran above): both runs are reused.
    capsys.readouterr()
    assert tour_main(args) == 0
    again = capsys.readouterr()
    assert again.err.count("finished before, reused") == 2
    assert again.out == first.stdout


def test_forward_flops_count_two_operations_per_weight_and_position():
    from projects.cifar_cnn.parameters import forward_flops

    images = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 5, name="conv")(images)  # 28 x 28 positions
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    model = keras.Model(images, outputs)
    assert forward_flops(model) == 2 * 28 * 28 * 5 * 5 * 3 * 16 + 2 * 28 * 28 * 16 * 10


def test_xla_with_two_cpu_replicas_is_refused_with_what_to_do(tmp_path):
    # conftest.py splits the CPU into two logical devices, as a two-replica run has.
    config = CifarConfig(
        strategy="mirrored", jit_compile="on", run_dir=str(tmp_path / "run"), **CifarConfig.QUICK
    )
    with pytest.raises(UserError, match="--jit-compile on does not work with 2 CPU replicas"):
        train_cifar(config)
