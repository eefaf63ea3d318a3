"""Train a character-level GRU/LSTM/SimpleRNN or attention language model on Shakespeare.

    python -m projects.shakespeare.train                 # or: make shakespeare
    python -m projects.shakespeare.train --text my.txt   # any UTF-8 text file
    python -m projects.shakespeare.train --cell gru --epochs 10   # fixed epochs, no budget
    python -m projects.shakespeare.train --cell transformer   # 4 attention blocks, width 128
    python -m projects.shakespeare.train --quick         # seconds, for smoke tests

Each epoch trains on windows of ``--seq-length`` characters starting at random
offsets of the first 90% of the text, then scores the last 10% (validation)
in nats and bits per character, next to the score of character frequencies
alone, and prints a short sample so you can watch the text improve.

Expected with the defaults (1-layer LSTM of 512 units, dropout 0.5, bfloat16 on
CPUs that compute it natively, cosine learning-rate decay over as many epochs as
fit in 20 minutes): 1.451 nats/char on the validation split after 18.3 minutes of
training on 2 CPU cores (AMD EPYC, seed 0); README.md has the runs and their commands.
"""

from __future__ import annotations

from projects.shakespeare.config import ShakespeareConfig
from shared.cli import parse_before_tensorflow

if __name__ == "__main__":
    # Answer --help and flag errors at once, before TensorFlow loads (seconds).
    parse_before_tensorflow(ShakespeareConfig)

import logging
import math

import keras

from projects.shakespeare.data import (
    build_vocabulary,
    encode,
    load_text,
    split_text,
    training_dataset,
    unigram_bits_per_character,
    validation_dataset,
)
from projects.shakespeare.generate import Generator
from projects.shakespeare.model import compile_char_model, core_of, model_for
from shared.budget import budgeted_epochs, time_one_epoch
from shared.callbacks import StopOnInterrupt, standard_callbacks
from shared.cli import fit_verbosity, run_training_cli
from shared.distribute import select_strategy
from shared.precision import training_precision
from shared.runs import Run, start_run

log = logging.getLogger("shakespeare")


class BitsPerCharacter(keras.callbacks.Callback):
    """Add bits per character and perplexity to each epoch's logs, and log them."""

    def __init__(self, unigram_bits: float):
        super().__init__()
        self.unigram_bits = unigram_bits

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not logs or "val_loss" not in logs:
            return
        nats = float(logs["val_loss"])
        logs["bits_per_char"] = float(logs["loss"]) / math.log(2)
        logs["val_bits_per_char"] = nats / math.log(2)
        logs["val_perplexity"] = math.exp(nats)
        # The unigram model's validation cross-entropy, for comparison in history.csv.
        logs["val_unigram_bits_per_char"] = self.unigram_bits
        log.info(
            "epoch %d: validation %.4f nats/char = %.4f bits/char, perplexity %.2f "
            "(character frequencies alone: %.4f bits/char)",
            epoch + 1,
            nats,
            logs["val_bits_per_char"],
            logs["val_perplexity"],
            self.unigram_bits,
        )


def sample_prompt(prompt: str, vocabulary) -> str:
    """``prompt`` without characters the model does not know (e.g. with --text); if none
    is left, a newline, or for a text without newlines its first known character."""
    known = "".join(char for char in prompt if char in vocabulary)
    if known:
        return known
    # Entries of other lengths are special tokens ("[UNK]"), not characters.
    return "\n" if "\n" in vocabulary else next(c for c in vocabulary if len(c) == 1)


class PrintSample(keras.callbacks.Callback):
    """Log a short sample from the character model at the end of each epoch."""

    def __init__(
        self, char_model: keras.Model, prompt: str, length: int, temperature: float, seed: int
    ):
        super().__init__()
        self.char_model = char_model  # shares its weights with the core being trained
        self.prompt, self.length, self.temperature, self.seed = prompt, length, temperature, seed

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.length:
            return
        generator = Generator(self.char_model)
        prompt = sample_prompt(self.prompt, generator.index)
        text = generator.generate(prompt, self.length, self.temperature, seed=self.seed)
        log.info("sample after epoch %d:\n%s%s\n", epoch + 1, prompt, text)


def main(config: ShakespeareConfig) -> dict:
    """Train, score and save the character model; returns metrics.json's content."""
    run = start_run("shakespeare", config)
    window = max(config.seq_length, config.validation_window)
    flag = "--seq-length" if window == config.seq_length else "--eval-length"
    text = load_text(config.text or None, window, flag)
    train_text, val_text = split_text(text)
    vocabulary = build_vocabulary(train_text)
    log.info(
        "%d characters: %d train, %d validation; %d distinct in training",
        len(text),
        len(train_text),
        len(val_text),
        len(vocabulary),
    )
    # Mixed precision, when chosen, applies to this run's models only. On a bfloat16 CPU,
    # bfloat16 trained the transformer, the GRU and the LSTM faster, and 20-minute runs
    # reached lower validation losses in bfloat16 than in float32 (GRU 1.488 against 1.510,
    # LSTM 1.466 against 1.521). The SimpleRNN is not measured, so it stays in float32.
    bfloat16_faster = config.cell in ("transformer", "gru", "lstm")
    with training_precision(config.mixed_precision, bfloat16_faster) as policy:
        return _train_and_score(config, run, train_text, val_text, vocabulary, policy)


def _train_and_score(
    config: ShakespeareConfig,
    run: Run,
    train_text: str,
    val_text: str,
    vocabulary: list[str],
    policy: str,
) -> dict:
    unigram_bits = unigram_bits_per_character(train_text, val_text)
    train_ids, val_ids = encode(train_text, vocabulary), encode(val_text, vocabulary)
    steps = config.steps_per_epoch or len(train_ids) // (config.batch_size * config.seq_length)
    steps = max(steps, 1)
    strategy = select_strategy(config.strategy)
    with strategy.scope():
        model = model_for(config, vocabulary)
        core = compile_char_model(core_of(model), config.learning_rate)
    model.summary(print_fn=log.info)
    train_data = training_dataset(train_ids, config.seq_length, config.batch_size, config.seed)
    val_data = validation_dataset(val_ids, config.validation_window, config.batch_size)
    epochs, minutes = config.epochs, config.budget_minutes
    if minutes:
        if config.epochs:
            log.info("--minutes %g sets the epochs: --epochs %d is not used", minutes, epochs)
        epochs, seconds = budgeted_epochs(
            run.path,
            minutes,
            lambda: time_one_epoch(
                core, train_data, steps, timed_steps=min(40, steps), validation_data=val_data
            ),
            strategy=strategy,
        )
        log.info(
            "--minutes %g: an epoch (%d steps and a validation pass) takes about %.0f s on "
            "this machine (timed over a few steps), so training runs %d epochs",
            minutes,
            steps,
            seconds,
            epochs,
        )
    with strategy.scope():  # a fresh optimizer, its schedule spanning the whole run
        decay_steps = steps * epochs if config.lr_schedule == "cosine" else None
        core = compile_char_model(core, config.learning_rate, decay_steps)
    extras = [
        BitsPerCharacter(unigram_bits),
        PrintSample(
            model,
            config.sample_prompt,
            config.sample_length,
            config.sample_temperature,
            config.seed,
        ),
    ]
    core.fit(
        train_data,
        steps_per_epoch=steps,
        shuffle=False,  # windows start at random offsets already
        validation_data=val_data,
        epochs=epochs,
        callbacks=standard_callbacks(
            run.path,
            steps * config.batch_size * config.seq_length,
            log_extras=extras,
            saved_model=model,  # best.keras: the whole character model, lookup included
        ),
        verbose=fit_verbosity(),
    )

    # --keep: the best validation epoch (default) or the last. Setting the wrapper's
    # weights sets the core's: they are the same variables.
    best_state = run.keep_chosen_epoch(model)
    nats = float(core.evaluate(val_data, verbose=0, callbacks=[StopOnInterrupt()]))
    prompt = sample_prompt(config.sample_prompt, vocabulary)
    sample = Generator(model).generate(
        prompt, config.sample_length, config.sample_temperature, seed=config.seed
    )
    metrics = {
        "characters": {
            "total": len(train_text) + len(val_text),
            "train": len(train_text),
            "validation": len(val_text),
        },
        "precision_policy": policy,
        "vocabulary_size": len(vocabulary),
        "best_epoch": best_state["epoch"] + 1 if best_state else None,
        "kept_epoch": config.keep,
        "validation": {
            "window": config.validation_window,
            "nats_per_char": nats,
            "bits_per_char": nats / math.log(2),
            "perplexity": math.exp(nats),
        },
        "unigram_baseline": {
            "bits_per_char": unigram_bits,
            "nats_per_char": unigram_bits * math.log(2),
        },
        "sample": prompt + sample,
        "sample_prompt": prompt,
    }
    log.info(
        "Validation of model.keras (%s epoch; windows of %d characters): %.4f nats/char = "
        "%.4f bits/char (perplexity %.2f); character frequencies alone: %.4f bits/char.",
        config.keep,
        config.validation_window,
        nats,
        nats / math.log(2),
        math.exp(nats),
        unigram_bits,
    )
    run.finish(model, metrics)
    return metrics


if __name__ == "__main__":
    run_training_cli(main, ShakespeareConfig)
