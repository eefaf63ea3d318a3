"""Shakespeare project: data split and errors, vocabulary round trip, generator, resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from projects.shakespeare.attention import attention_maps
from projects.shakespeare.attention import main as attention_main
from projects.shakespeare.config import ShakespeareConfig
from projects.shakespeare.data import (
    BUNDLED_TEXT,
    TextDataError,
    build_vocabulary,
    encode,
    load_text,
    minimum_characters,
    split_text,
    training_dataset,
    unigram_bits_per_character,
    validation_dataset,
)
from projects.shakespeare.generate import GenerationError, Generator, generate
from projects.shakespeare.generate import main as generate_main
from projects.shakespeare.model import LOGITS_LAYER, build_char_model, core_of
from projects.shakespeare.train import main as train_shakespeare
from shared.saving import load_model, save_model
from tests.helpers import run_module

QUICK = ShakespeareConfig.QUICK


def test_bundled_text_split_matches_published_results():
    text = load_text(None, seq_length=100)
    assert len(text) == 1_115_394
    train, val = split_text(text)
    assert (len(train), len(val)) == (1_003_854, 111_540)
    assert train + val == text
    assert len(build_vocabulary(train)) == 65


def test_text_errors_are_clear(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(TextDataError, match="has 0 characters; --seq-length 100 needs at least"):
        load_text(str(empty), seq_length=100)
    short = tmp_path / "short.txt"
    short.write_text("x" * (minimum_characters(50) - 1))
    with pytest.raises(TextDataError, match=f"needs at least {minimum_characters(50)}"):
        load_text(str(short), seq_length=50)
    short.write_text("x" * minimum_characters(50))
    assert len(load_text(str(short), seq_length=50)) == minimum_characters(50)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café ".encode("latin-1") * 1000)
    with pytest.raises(TextDataError, match="is not UTF-8 text"):
        load_text(str(latin1), seq_length=10)
    with pytest.raises(TextDataError, match="no text file at"):
        load_text(str(tmp_path / "absent.txt"), seq_length=10)


def test_a_text_without_the_prompts_characters_or_newlines_trains_to_the_end(tmp_path, caplog):
    # The epoch samples fell back to a newline, which this text lacks: the run stopped
    # after its first epoch with "the prompt has characters the model never saw".
    text = tmp_path / "ab.txt"
    rng = np.random.default_rng(0)
    text.write_text("".join(rng.choice(["a", "b"], 5000)))
    config = ShakespeareConfig(
        text=str(text), run_dir=str(tmp_path / "run"), **ShakespeareConfig.QUICK
    )
    with caplog.at_level(logging.INFO):
        metrics = train_shakespeare(config)
    assert (tmp_path / "run" / "metrics.json").exists()
    assert set(metrics["sample"]) <= {"a", "b"} and len(metrics["sample"]) > 1
    # The command it suggests next uses a prompt this model can read.
    assert f"--run-dir {tmp_path / 'run'} --prompt {metrics['sample_prompt']}" in caplog.text
    assert metrics["sample_prompt"] in ("a", "b")


def test_unigram_baseline():
    assert unigram_bits_per_character("abcd" * 100, "abcd") == pytest.approx(2.0, abs=0.02)
    assert unigram_bits_per_character("ab" * 100, "ab") < unigram_bits_per_character(
        "abcd" * 100, "abcd"
    )
    # A one-character text is certain: 0 bits, printed "0.0000" (not "-0.0000").
    assert f"{unigram_bits_per_character('a' * 100, 'aa'):.4f}" == "0.0000"


def small_model(vocabulary, cell="gru", layers=1, window=64):
    return build_char_model(
        vocabulary,
        embedding_dim=8,
        cell=cell,
        units=16,
        layers=layers,
        dropout=0.0,
        heads=2,
        seq_length=window,
    )


@pytest.mark.parametrize("cell", ["gru", "transformer"])
def test_vocabulary_including_newline_survives_save_and_load(tmp_path, cell):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\tTabs & ünïcödé!"
    vocabulary = build_vocabulary(text)
    assert "\n" in vocabulary and "\t" in vocabulary and " " in vocabulary
    model = small_model(vocabulary, cell)
    save_model(model, tmp_path / "model.keras")
    reloaded = load_model(tmp_path / "model.keras")
    lookup = reloaded.get_layer("char_to_id")
    assert lookup.get_vocabulary() == ["[UNK]", *vocabulary]
    ids = lookup(tf.constant([list(vocabulary)])).numpy()[0]
    np.testing.assert_array_equal(ids, np.arange(1, len(vocabulary) + 1))
    np.testing.assert_array_equal(ids, encode("".join(vocabulary), vocabulary))
    assert lookup(tf.constant([["\n"]])).numpy()[0, 0] == vocabulary.index("\n") + 1
    assert lookup(tf.constant([["Z"]])).numpy()[0, 0] == 0  # unknown
    sample = tf.constant([list("hear me\nspeak")])
    np.testing.assert_allclose(model(sample), reloaded(sample), rtol=1e-6)


def test_bfloat16_attention_model_reloads_in_a_float32_process(tmp_path):
    # A run trained in mixed_bfloat16 is loaded by processes whose global policy is float32:
    # the layers built inside the blocks must keep the saved precision.
    vocabulary = build_vocabulary("to be or not to be\n")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = small_model(vocabulary, "transformer", layers=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    save_model(model, tmp_path / "model.keras")
    reloaded = load_model(tmp_path / "model.keras")
    sample = tf.constant([list("not to be\n")])
    np.testing.assert_allclose(model(sample), reloaded(sample), rtol=1e-6)
    assert generate(reloaded, "to ", length=20, temperature=0.0) == generate(
        model, "to ", length=20, temperature=0.0
    )


def test_training_windows_are_next_character_pairs_at_random_offsets():
    text = load_text(None, seq_length=20)[:5000]
    vocabulary = build_vocabulary(text)
    ids = encode(text, vocabulary)
    batches = list(training_dataset(ids, 20, 8, seed=1).take(3))
    firsts = set()
    for inputs, targets in batches:
        assert inputs.shape == (8, 20) and targets.shape == (8, 20)
        np.testing.assert_array_equal(inputs.numpy()[:, 1:], targets.numpy()[:, :-1])
        firsts.update(tuple(row) for row in inputs.numpy()[:, :5])
    assert len(firsts) > 20  # 24 windows, nearly all from different offsets


def test_validation_windows_cover_the_text_once():
    text = load_text(None, seq_length=100)
    _, val = split_text(text)
    vocabulary = build_vocabulary(text)
    ids = encode(val, vocabulary)
    targets = np.concatenate([y.numpy().ravel() for _, y in validation_dataset(ids, 100, 64)])
    assert len(targets) == (len(ids) - 1) // 100 * 100
    np.testing.assert_array_equal(targets, ids[1 : len(targets) + 1])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("shakespeare") / "run"
    metrics = train_shakespeare(ShakespeareConfig(run_dir=str(run_dir), quick=True, **QUICK))
    return run_dir, metrics


def test_quick_run_reports_bits_per_character(trained_run):
    run_dir, metrics = trained_run
    validation = metrics["validation"]
    assert validation["window"] == 256  # scored as nanoGPT scores: windows of 256 characters
    assert validation["bits_per_char"] == pytest.approx(validation["nats_per_char"] / np.log(2))
    assert validation["perplexity"] == pytest.approx(np.exp(validation["nats_per_char"]))
    assert metrics["unigram_baseline"]["bits_per_char"] == pytest.approx(4.83, abs=0.01)
    assert metrics["characters"] == {"total": 1_115_394, "train": 1_003_854, "validation": 111_540}
    header = (run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert {
        "val_loss",
        "val_bits_per_char",
        "val_perplexity",
        "bits_per_char",
        "val_unigram_bits_per_char",
    } <= set(header)
    assert metrics["sample"].startswith("ROMEO:")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(temperature=-1.0), "--temperature must be 0 .greedy. or more"),
        (dict(temperature=float("nan")), "--temperature must be 0 .greedy. or more"),
        (dict(top_k=0), "--top-k must be at least 1"),
        (dict(top_p=0.0), "--top-p must be greater than 0 and at most 1"),
        (dict(top_p=1.5), "--top-p must be greater than 0 and at most 1"),
        (dict(length=-1), "--length must be 0 or more"),
        (dict(prompt=""), "--prompt must contain at least one character"),
        (dict(prompt="ROMEO: 😀 ~ @"), r"never saw in training: '@', '~', '😀'"),
    ],
)
def test_generator_argument_errors(trained_run, kwargs, message):
    run_dir, _ = trained_run
    arguments = dict(prompt="ROMEO:", length=10, temperature=1.0, top_k=None)
    arguments.update(kwargs)
    with pytest.raises(GenerationError, match=message):
        generate(str(run_dir), **arguments)


def test_same_seed_same_text_and_length_zero(trained_run):
    run_dir, _ = trained_run
    model = load_model(run_dir / "model.keras")
    first = generate(model, "ROMEO:", length=80, temperature=1.0, seed=7)
    assert len(first) == 80
    assert generate(model, "ROMEO:", length=80, temperature=1.0, seed=7) == first
    assert generate(model, "ROMEO:", length=80, temperature=1.0, seed=8) != first
    assert generate(model, "ROMEO:", length=0) == ""
    assert len(generate(model, "ROMEO:", length=30, top_k=1)) == 30


def test_generator_never_emits_the_unknown_token(trained_run):
    run_dir, _ = trained_run
    model = load_model(run_dir / "model.keras")
    logits_layer = core_of(model).get_layer(LOGITS_LAYER)
    kernel, bias = logits_layer.get_weights()
    bias[0] = 50.0  # make the unknown token overwhelmingly likely
    logits_layer.set_weights([kernel, bias])
    text = generate(model, "ROMEO:", length=200, temperature=2.0, seed=0)
    assert "[UNK]" not in text and len(text) == 200


@pytest.mark.parametrize(
    ("cell", "layers"), [("gru", 2), ("lstm", 2), ("simplernn", 1), ("transformer", 2)]
)
def test_stateful_steps_give_the_same_logits_as_full_recomputation(cell, layers):
    text = "ROMEO:\nBut soft, what light through yonder window breaks?"
    vocabulary = build_vocabulary(text)
    keras.utils.set_random_seed(0)
    model = small_model(vocabulary, cell=cell, layers=layers)
    generator = Generator(model)
    ids = generator.encode(text)
    # One character at a time, carrying the states ...
    states = generator.zero_states
    stepped = []
    for position in range(ids.shape[1]):
        logits, states = generator.advance(ids[:, position : position + 1], states)
        stepped.append(logits)
    # ... equals running the whole prefix through the saved-model graph each time.
    full = keras.ops.convert_to_numpy(model(tf.constant([list(text)])))[0]
    np.testing.assert_allclose(np.array(stepped), full, rtol=1e-4, atol=1e-5)
    # And a prompt fed at once continues from the same state.
    half = len(text) // 2
    logits, states = generator.advance(ids[:, :half], generator.zero_states)
    np.testing.assert_allclose(logits, full[half - 1], rtol=1e-4, atol=1e-5)


def test_greedy_and_nucleus_sampling():
    rng = np.random.default_rng(0)
    # id 0 is the unknown token: never drawn, even when it has the largest logit.
    logits = np.log([0.9, 0.05, 0.5, 0.3, 0.15])
    assert Generator.sample(logits, 0.0, None, rng) == 2
    assert Generator.sample(logits, 0.0, 2, rng, top_p=0.1) == 2

    def frequencies(**settings):
        draws = [Generator.sample(logits, 1.0, rng=rng, **settings) for _ in range(4000)]
        return np.bincount(draws, minlength=5) / len(draws)

    # Without id 0 the probabilities are 0.5, 0.3, 0.15, 0.05 (ids 2, 3, 4, 1).
    # top-p 0.7: 0.5 alone is short of 0.7, 0.5 + 0.3 reaches it: ids 2 and 3, as 5:3.
    nucleus = frequencies(top_k=None, top_p=0.7)
    assert nucleus[[0, 1, 4]].sum() == 0
    assert nucleus[2] == pytest.approx(0.625, abs=0.03)
    # top-p 0.5 is reached by id 2 alone; top-p 1 keeps everything but id 0.
    assert set(np.flatnonzero(frequencies(top_k=None, top_p=0.5))) == {2}
    assert set(np.flatnonzero(frequencies(top_k=None, top_p=1.0))) == {1, 2, 3, 4}
    # top-k and top-p together: the smaller set wins.
    assert set(np.flatnonzero(frequencies(top_k=3, top_p=0.95))) == {2, 3, 4}


def test_greedy_generation_is_the_argmax_of_each_step(trained_run):
    run_dir, _ = trained_run
    model = load_model(run_dir / "model.keras")
    text = generate(model, "ROMEO:", length=12, temperature=0.0, seed=1)
    assert generate(model, "ROMEO:", length=12, temperature=0.0, seed=2) == text
    vocabulary = model.get_layer("char_to_id").get_vocabulary()
    context = "ROMEO:"
    for char in text:
        logits = keras.ops.convert_to_numpy(model(tf.constant([list(context)])))[0, -1]
        logits[0] = -np.inf
        assert vocabulary[int(np.argmax(logits))] == char
        context += char


def test_attention_is_causal():
    text = "ROMEO:\nBut soft, what light through yonder window breaks?"
    vocabulary = build_vocabulary(text)
    keras.utils.set_random_seed(1)
    model = small_model(vocabulary, "transformer", layers=2)
    changed = text[:30] + ("x" if text[30] != "x" else "y") + text[31:]
    before = keras.ops.convert_to_numpy(model(tf.constant([list(text)])))[0]
    after = keras.ops.convert_to_numpy(model(tf.constant([list(changed)])))[0]
    # Positions before the change see nothing of it; from the change on, the logits move.
    np.testing.assert_array_equal(before[:30], after[:30])
    assert np.abs(before[30:] - after[30:]).max(axis=-1).min() > 0


def test_attention_maps_are_causal_softmax_rows_and_refuse_bad_input():
    text = "ROMEO:\nBut soft"
    vocabulary = build_vocabulary(text + "xyz")
    keras.utils.set_random_seed(3)
    model = small_model(vocabulary, "transformer", layers=2, window=16)
    maps = attention_maps(model, text)
    assert [weights.shape for weights in maps] == [(2, len(text), len(text))] * 2
    for weights in maps:
        np.testing.assert_array_equal(np.triu(weights, k=1), 0.0)  # nothing from the future
        np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-5)
        assert weights[:, 1:, :].max(axis=-1).min() < 1.0  # spread over several characters
    with pytest.raises(GenerationError, match="1 to 16 characters"):
        attention_maps(model, "x" * 17)
    with pytest.raises(GenerationError, match="never saw in training: 'Q'"):
        attention_maps(model, "ROMEO Q")
    with pytest.raises(GenerationError, match="this run is recurrent"):
        attention_maps(small_model(vocabulary), text)


def test_generation_beyond_the_window_reads_the_last_half_afresh():
    text = "ROMEO:\nBut soft, what light through yonder window breaks?"
    vocabulary = build_vocabulary(text)
    keras.utils.set_random_seed(2)
    window = 16
    model = small_model(vocabulary, "transformer", layers=2, window=window)
    generator = Generator(model)
    produced = generator.generate("ROMEO:", 40, temperature=0.0)
    # The same text from recomputing every step on the context the documented rule keeps:
    # the last `window` characters, and once the window is full, its last half.
    forward = model.get_layer("core")
    context = [int(i) for i in generator.encode("ROMEO:")[0]]
    expected = []
    for _ in range(40):
        logits = keras.ops.convert_to_numpy(forward(np.array([context], dtype=np.int32)))
        logits = logits[0, -1]
        logits[0] = -np.inf
        next_id = int(np.argmax(logits))
        expected.append(generator.vocabulary[next_id])
        if len(context) == window:
            context = context[window // 2 :]
        context.append(next_id)
    assert produced == "".join(expected)
    with pytest.raises(tf.errors.InvalidArgumentError):
        model(tf.constant([list(text)]))  # longer than the window: no position embedding


@pytest.mark.parametrize("cell", ["gru", "transformer"])
def test_quick_train_then_generate_in_fresh_processes(tmp_path, capsys, cell):
    # Trained here (the training command line is tested by test_killed_run_resumes);
    # the saved run is then used by the inference commands in fresh processes.
    run_dir = tmp_path / "run"
    # Two of --quick's four transformer blocks: half the tracing, and still a cache per block.
    blocks = {"layers": 2} if cell == "transformer" else {}
    train_shakespeare(
        ShakespeareConfig.create(quick=True, cell=cell, run_dir=str(run_dir), **blocks)
    )
    log = (run_dir / "train.log").read_text()
    assert "bits/char" in log and "sample after epoch 1" in log
    config = json.loads((run_dir / "config.json").read_text())
    if cell == "transformer":  # --quick's sizes, the transformer preset's other settings
        assert (config["embedding_dim"], config["layers"], config["dropout"]) == (16, 2, 0.1)
    generate_args = [
        "--run-dir",
        str(run_dir),
        "--prompt",
        "JULIET:",
        "--length",
        "60",
        "--seed",
        "3",
    ]
    result = run_module("projects.shakespeare.generate", *generate_args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("JULIET:")
    assert len(result.stdout) == len("JULIET:") + 60 + 1  # the text and a final newline
    # The same command in this process (another process, its own graph) prints the same text.
    capsys.readouterr()
    assert generate_main(generate_args) == 0
    assert capsys.readouterr().out == result.stdout
    bad_prompt = ["--run-dir", str(run_dir), "--prompt", "ROMEO@", "--temperature", "0.5"]
    with pytest.raises(SystemExit) as stopped:
        generate_main(bad_prompt)
    bad = capsys.readouterr()
    assert stopped.value.code == 2 and "'@'" in bad.err and "Traceback" not in bad.err
    assert bad.out == ""
    attention_args = ["--run-dir", str(run_dir), "--text", "ROMEO:\\nBut"]
    if cell == "gru":  # refused: in this process (the command line runs for the transformer)
        with pytest.raises(SystemExit) as stopped:
            attention_main(attention_args)
        said = capsys.readouterr().err
        assert stopped.value.code == 2 and "Traceback" not in said
        assert "this run is recurrent" in said and "--cell transformer" in said
    else:
        attention = run_module("projects.shakespeare.attention", *attention_args)
        assert attention.returncode == 0, attention.stderr
        written = attention.stdout.split()
        assert [Path(path).name for path in written] == [
            f"attention-block{block}.png" for block in (1, 2)
        ]
        assert all(Path(path).stat().st_size > 10_000 for path in written)


# A killed Shakespeare run's resume: test_budget.py (a --minutes run, killed and resumed).


def test_the_default_text_is_the_real_tiny_shakespeare_file(tmp_path, monkeypatch):
    # Without --text the bundled corpus is used, from any working directory.
    monkeypatch.chdir(tmp_path)
    text = load_text(None, seq_length=100)
    assert text == BUNDLED_TEXT.read_text(encoding="utf-8")
    assert text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")
    assert text.count("ROMEO:") > 100


def test_precision_follows_the_family_measured_faster(trained_run, tmp_path):
    from shared.precision import cpu_supports_bfloat16

    # The GRU, the LSTM and the transformer were measured faster in bfloat16 on bfloat16
    # CPUs; the SimpleRNN was not, so it stays in float32 everywhere.
    expected = "mixed_bfloat16" if cpu_supports_bfloat16() else "float32"
    _, metrics = trained_run  # the default: the LSTM
    assert metrics["precision_policy"] == expected
    attention = train_shakespeare(
        ShakespeareConfig.create(
            cell="transformer", layers=1, run_dir=str(tmp_path / "attention"), quick=True
        )
    )
    assert attention["precision_policy"] == expected
    simple = train_shakespeare(
        ShakespeareConfig.create(cell="simplernn", run_dir=str(tmp_path / "simple"), quick=True)
    )
    assert simple["precision_policy"] == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run


def test_compare_trains_each_budget_once_and_writes_one_table(tmp_path, capsys):
    from projects.shakespeare.compare import main as compare_main

    out = tmp_path / "compare"
    args = ["--quick", "--minutes", "0.05", "--cells", "gru", "--out", str(out)]
    first = run_module("projects.shakespeare.compare", *args)
    assert first.returncode == 0, first.stderr
    table = (out / "compare.md").read_text()
    assert table == first.stdout
    row = table.splitlines()[2].split("|")
    from shared.precision import cpu_supports_bfloat16

    expected = "mixed_bfloat16" if cpu_supports_bfloat16() else "float32"
    assert row[1].strip() == "gru-0.05min" and row[3].strip() == expected
    metrics = json.loads((out / "gru-0.05min" / "metrics.json").read_text())
    assert float(row[8]) == pytest.approx(metrics["validation"]["nats_per_char"], abs=1e-4)
    # Run again, in this process (the command line ran above): the finished run is
    # reused, not trained again.
    capsys.readouterr()
    assert compare_main(args) == 0
    assert "finished before, reused" in capsys.readouterr().err
    assert json.loads((out / "gru-0.05min" / "metrics.json").read_text()) == metrics
    # A budget of 0 is refused before TensorFlow loads (test_cli.py).
