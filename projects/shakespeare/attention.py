"""Draw where a trained attention model looks: one heat map per block, for a text you give.

    python -m projects.shakespeare.attention --run-dir runs/shakespeare/latest \\
        --text "ROMEO:\\nBut soft, what light" [--head 0] [--out DIR]
    # or: make shakespeare-attention TEXT="ROMEO: But soft"

For every block it writes ``attention-block<N>.png``: row t is the softmax
weights with which the character at t (predicting the character after it)
reads the characters 0..t, for one head (``--head``) and averaged over the
heads: the seq2seq lecture's attention figure, with the text attending to
itself. Everything above the diagonal is zero: the causal mask. It prints
where each PNG went. Needs a ``--cell transformer`` run.
"""

from __future__ import annotations

import argparse

from shared.cli import parse_args_before_tensorflow
from shared.config import program_name


def build_parser() -> argparse.ArgumentParser:
    """The command line: run directory, text, head and output folder."""
    parser = argparse.ArgumentParser(
        prog=program_name(),
        description="Heat maps of a trained attention model's weights over a text.",
    )
    parser.add_argument(
        "--run-dir", default="runs/shakespeare/latest", help="Run directory (default: %(default)s)."
    )
    parser.add_argument(
        "--text",
        default="ROMEO:\nBut soft, what light through yonder window breaks?",
        help="The text to read; '\\n' in it is a newline (default: a line of Romeo's).",
    )
    parser.add_argument("--head", type=int, default=0, help="The head drawn beside the average.")
    parser.add_argument(
        "--out", default="", help="Folder of the PNGs (default: RUN_DIR/plots/attention)."
    )
    return parser


if __name__ == "__main__":
    # Answer --help and usage errors at once, before TensorFlow loads (seconds).
    parse_args_before_tensorflow(build_parser())

import sys
from collections.abc import Sequence
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np

from projects.shakespeare.generate import GenerationError, Generator
from projects.shakespeare.model import (
    EMBEDDING_LAYER,
    POSITION_LAYER,
    attention_blocks,
    context_window,
    core_of,
    is_transformer,
)
from shared.cli import exit_on_user_error, setup_logging
from shared.plots import save_figure
from shared.runs import load_run


def attention_maps(model: keras.Model, text: str) -> list[np.ndarray]:
    """Per block, the attention weights over ``text``: (heads, characters, characters).

    Raises `GenerationError` for a recurrent model, a text longer than the
    model's window, or characters the model does not know.
    """
    if not is_transformer(model):
        raise GenerationError(
            "attention maps need an attention model; this run is recurrent. Train one with: "
            "python -m projects.shakespeare.train --cell transformer"
        )
    window = context_window(model)
    if not 0 < len(text) <= window:
        raise GenerationError(
            f"--text must have 1 to {window} characters (the model's window), got {len(text)}."
        )
    ids = Generator(model).encode(text)
    core = core_of(model)
    x = core.get_layer(POSITION_LAYER)(core.get_layer(EMBEDDING_LAYER)(ids))
    maps = []
    for block in attention_blocks(model):
        x, weights = block(x, return_weights=True, training=False)
        maps.append(keras.ops.convert_to_numpy(weights)[0].astype(np.float32))
    return maps


def character_labels(text: str) -> list[str]:
    """Tick labels: newlines and spaces made visible."""
    return [{"\n": "⏎", " ": "␣", "\t": "⇥"}.get(char, char) for char in text]


def plot_block(weights: np.ndarray, text: str, block: int, head: int, path: Path) -> Path:
    """One block's PNG: head ``head`` beside the mean over heads."""
    labels = character_labels(text)
    size = max(6.0, 0.16 * len(text) + 2)
    figure, axes = plt.subplots(1, 2, figsize=(2 * size, size))
    panels = ((weights[head], f"head {head}"), (weights.mean(axis=0), "mean of all heads"))
    for axis, (matrix, name) in zip(axes, panels, strict=True):
        image = axis.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0)
        axis.set_title(f"block {block}, {name}")
        axis.set_xticks(range(len(text)), labels, fontsize=7)
        axis.set_yticks(range(len(text)), labels, fontsize=7)
        axis.set_xlabel("attended character (key)")
        axis.set_ylabel("reading character (query)")
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="attention weight")
    return save_figure(figure, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def run() -> None:
        loaded = load_run(args.run_dir, inference="projects.shakespeare.attention")
        text = args.text.replace("\\n", "\n")  # a typed \n is a newline
        maps = attention_maps(loaded.model, text)
        heads = maps[0].shape[0]
        if not 0 <= args.head < heads:
            raise GenerationError(f"--head must be 0 to {heads - 1}, got {args.head}.")
        out = Path(args.out) if args.out else Path(args.run_dir) / "plots" / "attention"
        out.mkdir(parents=True, exist_ok=True)
        for block, weights in enumerate(maps, start=1):
            path = out / f"attention-block{block}.png"
            print(plot_block(weights, text, block, args.head, path))

    exit_on_user_error(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
