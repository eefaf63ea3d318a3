"""Generate text from a trained run, streaming each character as it is sampled.

    python -m projects.shakespeare.generate --run-dir runs/shakespeare/latest \\
        --prompt "ROMEO:" --length 500 --temperature 0.8 [--top-k 20 | --top-p 0.9] [--seed 1]

The prompt is read once; after that each new character is fed alone with the
model's states carried forward (`model.step_model`): the recurrent states of an
RNN, or the cached keys and values of the attention model, so every step costs
one position however long the text grows. The attention model reads at most
``--seq-length`` characters (its window): when the window is full, generation
continues from its last half, read afresh. The same ``--seed`` gives the same
text; ``--temperature 0`` always takes the likeliest character.

From Python: ``generate("runs/shakespeare/latest", "ROMEO:", length=200)``.
"""

from __future__ import annotations

import argparse
import math

from shared.cli import exit_on_user_error, parse_args_before_tensorflow, setup_logging
from shared.config import program_name
from shared.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    """The command line: run directory, prompt and sampling settings."""
    parser = argparse.ArgumentParser(
        prog=program_name(), description="Generate text with a trained character model."
    )
    parser.add_argument(
        "--run-dir", default="runs/shakespeare/latest", help="Run directory (default: %(default)s)."
    )
    parser.add_argument("--prompt", default="ROMEO:", help="Starting text (default: %(default)s).")
    parser.add_argument("--length", type=int, default=500, help="Characters to generate.")
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="Below 1: more conservative, above 1: more varied, 0: always the likeliest "
        "character (greedy) (default: 0.8).",
    )
    parser.add_argument("--top-k", type=int, default=None, help="Sample among the k likeliest.")
    parser.add_argument(
        "--top-p",
        type=float,
        default=None,
        help="Nucleus sampling: among the likeliest characters whose probabilities add up "
        "to at least p (0 < p <= 1).",
    )
    parser.add_argument("--seed", type=int, default=None, help="Seed for repeatable text.")
    return parser


class GenerationError(UserError):
    """Generation was asked for with invalid settings."""


def check_settings(
    prompt: str,
    length: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None = None,
) -> None:
    """Raise `GenerationError` for a setting no generator can honour."""
    if not prompt:
        raise GenerationError("--prompt must contain at least one character.")
    if length < 0:
        raise GenerationError(f"--length must be 0 or more, got {length}.")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise GenerationError(
            f"--temperature must be 0 (greedy) or more, and finite, got {temperature}."
        )
    if top_k is not None and top_k < 1:
        raise GenerationError(f"--top-k must be at least 1, got {top_k}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise GenerationError(f"--top-p must be greater than 0 and at most 1, got {top_p}.")


if __name__ == "__main__":
    # Answer --help, usage errors and impossible settings at once, before TensorFlow
    # loads (seconds).
    parse_args_before_tensorflow(
        build_parser(),
        check=lambda args: check_settings(
            args.prompt, args.length, args.temperature, args.top_k, args.top_p
        ),
    )

import json
import sys
from collections.abc import Callable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from projects.shakespeare.data import load_text, split_text
from projects.shakespeare.model import (
    context_window,
    initial_states,
    step_model,
    vocabulary_of,
)
from shared.export import HeldOut, Serving, float32_twin, keras_call, runner_of
from shared.runs import LoadedRun, load_run


class Generator:
    """Stateful next-character sampler around a trained character model."""

    def __init__(self, model: keras.Model):
        self.vocabulary = vocabulary_of(model)  # index 0: the unknown token
        self.index = {char: i for i, char in enumerate(self.vocabulary) if i > 0}
        self.step = step_model(model)
        self.zero_states = initial_states(model)
        # One trace for every prompt length and the one-character steps after it (the
        # states keep their shapes and types): traced per length, a generation paid two
        # traces. A bfloat16 RNN returns bfloat16 states; float32 holds them exactly.
        signature = [tf.TensorSpec((1, None), tf.int32)]
        signature += [tf.TensorSpec(state.shape, state.dtype) for state in self.zero_states]

        def call(inputs):
            logits, *states = self.step(inputs, training=False)
            zeros = self.zero_states
            return [logits, *(tf.cast(s, z.dtype) for s, z in zip(states, zeros, strict=True))]

        self._call = tf.function(call, input_signature=[signature])
        # The attention model's window; None: an RNN, which reads any length.
        self.window = context_window(model)

    def encode(self, text: str) -> np.ndarray:
        """Ids of ``text``; characters outside the vocabulary raise `GenerationError`."""
        unknown = sorted({char for char in text if char not in self.index})
        if unknown:
            raise GenerationError(
                "the prompt has characters the model never saw in training: "
                + ", ".join(repr(char) for char in unknown)
            )
        return np.array([[self.index[char] for char in text]], dtype=np.int32)

    def advance(self, ids: np.ndarray, states: list) -> tuple[np.ndarray, list]:
        """Feed ``ids`` (1, n) from ``states``; return the last position's logits and new states."""
        logits, *states = self._call([tf.constant(ids), *states])
        return logits.numpy()[0, -1].astype(np.float64), states

    @staticmethod
    def sample(
        logits: np.ndarray,
        temperature: float,
        top_k: int | None,
        rng: np.random.Generator,
        top_p: float | None = None,
    ) -> int:
        """Draw one id from softmax(logits / temperature), never the unknown token.

        ``temperature`` 0 takes the likeliest id. ``top_k`` keeps the k likeliest
        ids; ``top_p`` keeps the fewest likeliest ids whose probabilities add up
        to at least p (nucleus sampling); both may be given.
        """
        logits = np.array(logits, dtype=np.float64)
        logits[0] = -np.inf
        if temperature == 0:
            return int(np.argmax(logits))
        scaled = logits / temperature
        if top_k is not None and top_k < len(scaled) - 1:
            cutoff = np.partition(scaled, -top_k)[-top_k]
            scaled[scaled < cutoff] = -np.inf
        probabilities = np.exp(scaled - scaled.max())
        probabilities /= probabilities.sum()
        if top_p is not None and top_p < 1:
            order = np.argsort(-probabilities, kind="stable")
            # Keep each id whose likelier ids do not yet reach top_p on their own.
            before = np.cumsum(probabilities[order]) - probabilities[order]
            probabilities[order[before >= top_p]] = 0.0
            probabilities /= probabilities.sum()
        return int(rng.choice(len(probabilities), p=probabilities))

    def start(self, ids: list[int]) -> tuple[np.ndarray, list, list[int]]:
        """Read a prompt: its last position's logits, the states after it, and the context.

        The attention model reads only the prompt's last `window` characters.
        """
        context = list(ids[-self.window :] if self.window else ids)
        logits, states = self.advance(np.array([context], dtype=np.int32), self.zero_states)
        return logits, states, context

    def feed(self, next_id: int, states: list, context: list[int]) -> tuple[np.ndarray, list]:
        """Read one more character; ``context`` (the ids the states hold) is updated in place."""
        if self.window and len(context) == self.window:
            # The window is full: keep its last half and read that afresh with the new id.
            del context[: len(context) - self.window // 2]
            context.append(next_id)
            logits, states, _ = self.start(context)
            return logits, states
        context.append(next_id)
        return self.advance(np.array([[next_id]], dtype=np.int32), states)

    def stream(
        self,
        prompt: str,
        length: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
        top_p: float | None = None,
    ) -> Iterator[str]:
        """Yield ``length`` new characters after ``prompt``, each as soon as it is sampled."""
        check_settings(prompt, length, temperature, top_k, top_p)
        rng = np.random.default_rng(seed)
        logits, states, context = self.start(list(self.encode(prompt)[0]))
        for index in range(length):
            next_id = self.sample(logits, temperature, top_k, rng, top_p)
            yield self.vocabulary[next_id]
            if index + 1 < length:
                logits, states = self.feed(next_id, states, context)

    def generate(
        self,
        prompt: str,
        length: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
        on_character: Callable[[str], None] | None = None,
        top_p: float | None = None,
    ) -> str:
        """``length`` new characters after ``prompt`` (the prompt is not repeated)."""
        produced = []
        for char in self.stream(prompt, length, temperature, top_k, seed, top_p):
            produced.append(char)
            if on_character is not None:
                on_character(char)
        return "".join(produced)


# Characters of the validation text scored when an export is checked, one call each.
EXPORT_HELD_OUT_CHARACTERS = 200


def serving(run: LoadedRun) -> Serving:
    """What ``python -m shared.export`` exports: one generation step on character ids.

    ``(ids, *states) -> (logits, *next states)``, as `step_model`: a client feeds
    the prompt's ids, then each sampled id, carrying the states forward, exactly
    as `Generator` does. String lookup stays outside (``vocabulary.json``), so
    every format can express the step.
    """
    model = float32_twin(run.model)
    step = step_model(model)
    transformer = context_window(model) is not None
    zero_states = [np.asarray(state) for state in initial_states(model)]
    if transformer:
        state_names = ["position"] + [f"cache_{i + 1}" for i in range(len(zero_states) - 1)]
    else:
        state_names = [f"state_{i + 1}" for i in range(len(zero_states))]
    inputs = [tf.TensorSpec((1, None), tf.int32, "ids")] + [
        tf.TensorSpec(state.shape, tf.as_dtype(state.dtype), name)
        for state, name in zip(zero_states, state_names, strict=True)
    ]
    vocabulary = vocabulary_of(model)
    index = {char: i for i, char in enumerate(vocabulary) if i > 0}
    config = run.config
    text = load_text(config.get("text") or None, config["seq_length"])
    train_text, validation_text = split_text(text)

    def step_inputs(runner, characters: str) -> list[list[np.ndarray]]:
        """The inputs of each step while ``runner`` reads ``characters`` one at a time."""
        states, fed = zero_states, []
        for char in characters:
            ids = np.array([[index.get(char, 0)]], dtype=np.int32)
            fed.append([ids, *states])
            _, *states = runner([ids, *states])
        return fed

    # The attention model's caches hold one window: score and calibrate within it.
    longest = min(EXPORT_HELD_OUT_CHARACTERS, context_window(model) or EXPORT_HELD_OUT_CHARACTERS)
    held_out = validation_text[:longest]

    def nats_per_character(runner) -> float:
        losses = []
        for inputs, char in zip(step_inputs(runner, held_out[:-1]), held_out[1:], strict=True):
            logits = runner(inputs)[0][0, -1].astype(np.float64)
            log_probabilities = logits - logits.max()
            log_probabilities -= np.log(np.exp(log_probabilities).sum())
            losses.append(-log_probabilities[index.get(char, 0)])
        return float(np.mean(losses))

    call = keras_call(step) if isinstance(step, keras.Model) else step
    keras_runner = runner_of(call)
    how = (
        "position: how many characters the caches hold (start at 0); cache_k: block k's "
        "keys and values (start at zeros). The window holds at most "
        f"{context_window(model)} characters: when it is full, start again from zeros "
        "with the last half of the text."
        if transformer
        else "state_k: the recurrent states (start at zeros)."
    )
    return Serving(
        call=call,
        trackable=model,
        inputs=inputs,
        outputs=["logits"] + [f"next_{name}" for name in state_names],
        samples=step_inputs(keras_runner, validation_text[:8]),
        representative=step_inputs(keras_runner, train_text[:longest]),
        held_out=HeldOut(
            f"nats/char on the first {len(held_out)} validation characters", nats_per_character
        ),
        description="One generation step. ids: character ids (vocabulary.json: id -> "
        "character; id 0 is 'unknown', never sample it); feed the prompt's ids, then each "
        f"sampled id. {how} logits: next-character scores after each id; sample from "
        "softmax(logits[0, -1] / temperature). Pass each next_* output back as the state "
        "of the same name.",
        files={"vocabulary.json": json.dumps(vocabulary, ensure_ascii=False) + "\n"},
        unsupported={
            "onnx": "its key/value cache update (keras.ops.slice_update, TensorFlow's "
            "XlaDynamicUpdateSlice) has no ONNX operator in tf2onnx"
        }
        if transformer
        else {},
        calibrate_int8=False,
    )


def generate(
    run_dir_or_model: str | keras.Model,
    prompt: str,
    length: int = 500,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
    on_character: Callable[[str], None] | None = None,
    top_p: float | None = None,
) -> str:
    """Sample ``length`` characters after ``prompt`` from a run directory or a model.

    Args:
        run_dir_or_model: A run directory (its ``model.keras``) or a loaded model.
        prompt: Starting text; every character must be in the model's vocabulary.
        length: Characters to produce (0 or more).
        temperature: Below 1 is more conservative, above 1 more varied; 0 takes the
            likeliest character every time (greedy).
        top_k: Sample only among the ``top_k`` likeliest characters (None: all).
        top_p: Sample only among the likeliest characters whose probabilities add
            up to ``top_p`` (nucleus sampling; None: all).
        seed: Same seed, same text.
        on_character: Called with each character as it is produced (streaming).

    Returns:
        The generated text, without the prompt.
    """
    check_settings(prompt, length, temperature, top_k, top_p)
    model = run_dir_or_model
    if not isinstance(model, keras.Model):
        model = load_run(model, inference="projects.shakespeare.generate").model
    return Generator(model).generate(prompt, length, temperature, top_k, seed, on_character, top_p)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def stream(char: str) -> None:
        sys.stdout.write(char)
        sys.stdout.flush()

    def run() -> None:
        check_settings(args.prompt, args.length, args.temperature, args.top_k, args.top_p)
        run = load_run(args.run_dir, inference="projects.shakespeare.generate")
        generator = Generator(run.model)
        generator.encode(args.prompt)  # fail on unknown characters before printing anything
        stream(args.prompt)
        generator.generate(
            args.prompt,
            args.length,
            args.temperature,
            args.top_k,
            args.seed,
            on_character=stream,
            top_p=args.top_p,
        )
        stream("\n")

    exit_on_user_error(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
