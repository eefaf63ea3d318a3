"""A local web page to try every project's trained model: ``make demo``.

    python -m shared.demo                                   # http://127.0.0.1:7860
    python -m shared.demo --port 8000 --run runs/shakespeare/2026-11-29_101500

One tab per project, each using ``runs/<project>/latest`` unless ``--run DIR``
names another run of that project (its ``config.json`` says which):

- XOR: two toggles -> the gate's output and its probability, and the run's
  decision-boundary picture;
- CIFAR-10: upload an image or pick a bundled one -> the top 3 classes and a
  Grad-CAM map of the top class (`projects.cifar_cnn.inspect`);
- Shakespeare: prompt, temperature, top-k, length -> text streaming in as it is
  sampled (`projects.shakespeare.generate`);
- stock: a ticker or an uploaded CSV, and days -> the forecast table and plot
  with its interval (`projects.stock_lstm.forecast`).

Every tab also shows the run it uses, and takes another one. Bad input (an
unknown run, a file that is not an image, characters the model never saw, a
malformed ticker or CSV) shows the same one-line message as the command line,
in the page; the server keeps serving. A tab whose project has no run yet says
which ``make`` target creates one.
"""

from __future__ import annotations

import argparse

from shared.cli import parse_args_before_tensorflow, positive_int
from shared.config import program_name

PROJECTS = ("xor_mlp", "cifar_cnn", "shakespeare", "stock_lstm")
MAKE_TARGETS = {
    "xor_mlp": "make xor-mlp",
    "cifar_cnn": "make cifar-cnn",
    "shakespeare": "make shakespeare",
    "stock_lstm": "make stock-lstm",
}


def port_number(text: str) -> int:
    """An ``argparse`` type: a TCP port, 1 to 65535."""
    port = positive_int(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: use 1 to 65535")
    return port


def build_parser() -> argparse.ArgumentParser:
    """The command line: address, port and runs."""
    parser = argparse.ArgumentParser(
        prog=program_name(), description="Serve a page to try every project's trained model."
    )
    parser.add_argument("--host", default="127.0.0.1", help="Address (default: %(default)s).")
    parser.add_argument(
        "--port", type=port_number, default=7860, help="Port, 1-65535 (default: %(default)s)."
    )
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="DIR",
        help="Use this run for its project's tab (repeatable; default: runs/<project>/latest).",
    )
    parser.add_argument("--runs-root", default="runs", help="Where the latest runs are.")
    return parser


if __name__ == "__main__":
    # Answer --help and usage errors at once, before TensorFlow and Gradio load (seconds).
    parse_args_before_tensorflow(build_parser())

import dataclasses
import functools
import inspect
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local demo

import gradio as gr
import numpy as np
import pandas as pd

from shared.cli import exit_on_user_error, setup_logging
from shared.errors import UserError
from shared.runs import LoadedRun, RunError, load_run
from shared.saving import read_json_or_none

log = logging.getLogger(__name__)

SAMPLE_IMAGES_PER_CLASS = 1


class DemoError(UserError):
    """The demo cannot start as asked."""


def default_runs(runs_root: str, chosen: Sequence[str]) -> dict[str, str]:
    """The run directory of each project: ``runs_root/<project>/latest``, or a chosen run."""
    runs = {project: str(Path(runs_root) / project / "latest") for project in PROJECTS}
    for run_dir in chosen:
        config = read_json_or_none(Path(run_dir) / "config.json")
        project = config.get("project") if isinstance(config, dict) else None
        if project not in runs:
            raise DemoError(f"--run {run_dir} is not a finished run of this repository.")
        runs[project] = run_dir
    return runs


class Runs:
    """Loaded runs, each loaded once and shared by every request (thread-safe)."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str], LoadedRun] = {}
        self._lock = threading.Lock()

    def get(self, run_dir: str, project: str, inference: str) -> LoadedRun:
        """The run at ``run_dir``, which must be a ``project`` run."""
        run_dir = (run_dir or "").strip()
        if not run_dir:
            raise RunError(f"Give a run directory; {MAKE_TARGETS[project]} creates one.")
        key = (str(Path(run_dir).resolve()), inference)
        with self._lock:
            if key not in self._loaded:
                if not Path(run_dir).exists():
                    raise RunError(
                        f"No run directory at {run_dir}. {MAKE_TARGETS[project]} creates one."
                    )
                self._loaded[key] = load_run(run_dir, inference=inference)
            return self._loaded[key]


def shown_in_page(function: Callable) -> Callable:
    """Turn a failing request into a message in the page instead of a stack trace."""

    def message(error: Exception) -> gr.Error:
        if isinstance(error, UserError):
            return gr.Error(str(error), print_exception=False)
        log.exception("The demo failed on a request")
        return gr.Error(
            f"Unexpected error ({type(error).__name__}: {error}); the server log has details.",
            print_exception=False,
        )

    if inspect.isgeneratorfunction(function):  # streaming callbacks stay generators

        @functools.wraps(function)
        def streaming(*args: Any) -> Iterator[Any]:
            try:
                yield from function(*args)
            except Exception as error:  # every failure becomes a message
                raise message(error) from None

        return streaming

    @functools.wraps(function)
    def plain(*args: Any) -> Any:
        try:
            return function(*args)
        except Exception as error:  # every failure becomes a message
            raise message(error) from None

    return plain


def run_note(run_dir: str, project: str) -> str:
    """The line above each tab: which run it uses, or how to make one."""
    if Path(run_dir, "metrics.json").exists():
        return f"Using the run in `{run_dir}`."
    return (
        f"**No {project} run yet** (nothing finished at `{run_dir}`): "
        f"`{MAKE_TARGETS[project]}` creates one; then reload this page."
    )


# --- XOR -------------------------------------------------------------------------------


def xor_tab(runs: Runs, run_dir: str) -> None:
    from projects.xor_mlp.predict import answer as gate_answer

    gr.Markdown(run_note(run_dir, "xor_mlp"))
    with gr.Row():
        with gr.Column():
            first = gr.Checkbox(label="input 1", value=True)
            second = gr.Checkbox(label="input 2", value=False)
            run_box = gr.Textbox(label="run directory", value=run_dir, elem_id="xor-run")
            button = gr.Button("Ask the network", variant="primary")
            answer = gr.Markdown(elem_id="xor-answer")
        picture = Path(run_dir, "plots", "decision_boundary.png")
        gr.Image(
            str(picture) if picture.exists() else None,
            label="decision boundary (the run's plot)",
            interactive=False,
        )

    @shown_in_page
    def ask(bit_1: bool, bit_2: bool, directory: str) -> str:
        bits = [str(int(bit_1)), str(int(bit_2))]
        run = runs.get(directory, "xor_mlp", "projects.xor_mlp.predict")
        output, probability, gate = gate_answer(run, bits)
        return f"**{gate}({bits[0]}, {bits[1]}) = {output}** (P(1) = {probability:.4f})"

    for trigger in (button.click, first.change, second.change):
        trigger(ask, [first, second, run_box], answer)


# --- CIFAR-10 ----------------------------------------------------------------------------


def sample_images(folder: Path) -> list[str]:
    """One bundled CIFAR-10 image per class, written as PNGs into ``folder``."""
    from PIL import Image

    from shared.images import CIFAR10_CLASSES, load_bundled_sample

    images, labels = load_bundled_sample(32)
    paths = []
    for index, name in enumerate(CIFAR10_CLASSES):
        first = int(np.flatnonzero(labels == index)[0])
        path = folder / f"{name}.png"
        Image.fromarray(images[first]).save(path)
        paths.append(str(path))
    return paths


def cifar_tab(runs: Runs, run_dir: str, scratch: Path) -> None:
    from projects.cifar_cnn.inspect import grad_cam, logits_network, plot_grad_cam, spatial_layers
    from shared.images import read_image_file

    gr.Markdown(run_note(run_dir, "cifar_cnn"))
    with gr.Row():
        with gr.Column():
            upload = gr.File(label="image (PNG, JPEG, ...)", type="filepath", elem_id="cifar-file")
            gr.Examples(sample_images(scratch), inputs=upload, label="bundled CIFAR-10 images")
            run_box = gr.Textbox(label="run directory", value=run_dir, elem_id="cifar-run")
            button = gr.Button("Classify", variant="primary")
        with gr.Column():
            top3 = gr.Label(num_top_classes=3, label="top 3 classes", elem_id="cifar-top3")
            heat_map = gr.Image(
                label="Grad-CAM of the top class", interactive=False, elem_id="cifar-gradcam"
            )

    @shown_in_page
    def classify(path: str | None, directory: str):
        if not path:
            raise UserError("Upload an image or pick a bundled one first.")
        run = runs.get(directory, "cifar_cnn", "projects.cifar_cnn.predict")
        image = read_image_file(path, int(run.model.input_shape[1]))
        probabilities = np.asarray(run.model.predict(image[None], verbose=0))[0]
        names = list(run.metrics["class_names"])
        top = int(probabilities.argmax())
        network = logits_network(run.model)
        layer = spatial_layers(network)[-1]
        heat = grad_cam(network, layer, image, top)
        picture = plot_grad_cam(
            image,
            heat,
            f"{names[top]} ({probabilities[top]:.2f}) at layer {layer.name}",
            Path(tempfile.mkdtemp(dir=scratch)) / "gradcam.png",
        )
        return {name: float(p) for name, p in zip(names, probabilities, strict=True)}, str(picture)

    def classify_new_image(path: str | None, directory: str):
        # Picking a bundled image is a request of its own: a Classify clicked before its
        # answer arrives would carry no image. The new value's own event has it.
        if not path:  # cleared: clear the answers too
            return None, None
        return classify(path, directory)

    upload.change(classify_new_image, [upload, run_box], [top3, heat_map])
    button.click(classify, [upload, run_box], [top3, heat_map])


# --- Shakespeare -------------------------------------------------------------------------


def shakespeare_tab(runs: Runs, run_dir: str) -> None:
    from projects.shakespeare.generate import Generator

    generators: dict[int, Generator] = {}
    gr.Markdown(run_note(run_dir, "shakespeare"))
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox(label="prompt", value="ROMEO:", elem_id="shakespeare-prompt")
            temperature = gr.Slider(0, 2, value=0.8, step=0.05, label="temperature (0: greedy)")
            top_k = gr.Number(value=0, precision=0, label="top-k (0: all characters)")
            length = gr.Slider(1, 2000, value=300, step=1, label="characters to generate")
            run_box = gr.Textbox(label="run directory", value=run_dir, elem_id="shakespeare-run")
            button = gr.Button("Generate", variant="primary")
        text = gr.Textbox(label="generated text", lines=18, elem_id="shakespeare-text")

    @shown_in_page
    def generate(
        start: str, heat: float, k: float | None, count: float, directory: str
    ) -> Iterator[str]:
        run = runs.get(directory, "shakespeare", "projects.shakespeare.generate")
        generator = generators.setdefault(id(run.model), Generator(run.model))
        produced = ""
        top = int(k) if k else None
        for index, char in enumerate(generator.stream(start, int(count), float(heat), top)):
            produced += char
            if index % 5 == 4:  # a page update per character would be mostly overhead
                yield start + produced
        yield start + produced

    button.click(generate, [prompt, temperature, top_k, length, run_box], text)


# --- Stock -------------------------------------------------------------------------------


def stock_tab(runs: Runs, run_dir: str, scratch: Path) -> None:
    from projects.stock_lstm.forecast import forecast, forecast_volatility, plot_forecast

    config = read_json_or_none(Path(run_dir) / "config.json") or {}
    metrics = read_json_or_none(Path(run_dir) / "metrics.json") or {}
    # A global run forecasts one of its own series; start with the first.
    first_series = (metrics.get("series") or [None])[0] if isinstance(metrics, dict) else None
    gr.Markdown(run_note(run_dir, "stock_lstm"))
    with gr.Row():
        with gr.Column():
            ticker = gr.Textbox(
                label="ticker (offline: AAPL, MSFT, NVDA, GOOGL are bundled)",
                value=first_series or config.get("ticker", "AAPL"),
                elem_id="stock-ticker",
            )
            upload = gr.File(
                label="or a CSV of prices (Date, Close, ...)",
                type="filepath",
                elem_id="stock-file",
            )
            days = gr.Number(value=5, precision=0, label="trading days to forecast")
            run_box = gr.Textbox(label="run directory", value=run_dir, elem_id="stock-run")
            button = gr.Button("Forecast", variant="primary")
        with gr.Column():
            summary = gr.Markdown(elem_id="stock-summary")
            table = gr.Dataframe(label="forecast", interactive=False, elem_id="stock-table")
            plot = gr.Image(label="forecast plot", interactive=False, elem_id="stock-plot")

    @shown_in_page
    def predict(symbol: str, csv: str | None, count: float | None, directory: str):
        symbol = (symbol or "").strip() or None
        # As forecast's command line: the settings choose the forecast, which loads the run.
        settings = read_json_or_none(Path(directory or ".", "config.json")) or {}
        # An uploaded file is named by its name, not by the server's temporary path to it.
        shown_as = {"name": Path(csv).name} if csv else {}
        if settings.get("target") == "volatility":
            result = forecast_volatility(directory, symbol, csv)
            return dataclasses.replace(result, **shown_as).describe(), pd.DataFrame(), None
        result = dataclasses.replace(forecast(directory, int(count or 0), symbol, csv), **shown_as)
        shown = result.table.round(2).reset_index()
        shown["Date"] = shown["Date"].dt.strftime("%Y-%m-%d")
        picture = Path(tempfile.mkdtemp(dir=scratch)) / "forecast.png"
        plot_forecast(result, picture)
        note = (
            f"**{result.name}**: {len(shown)} trading days after "
            f"{result.history.index[-1]:%Y-%m-%d}, with a {result.coverage:.0%} interval."
        )
        return note, shown, str(picture)

    button.click(predict, [ticker, upload, days, run_box], [summary, table, plot])


# --- The page --------------------------------------------------------------------------


def build_demo(runs_by_project: dict[str, str], scratch: Path) -> gr.Blocks:
    """The page: one tab per project."""
    runs = Runs()
    with gr.Blocks(title="Keras applied projects") as demo:
        gr.Markdown("# Keras applied projects: try the trained models")
        with gr.Tab("XOR MLP"):
            xor_tab(runs, runs_by_project["xor_mlp"])
        with gr.Tab("CIFAR-10 CNN"):
            cifar_tab(runs, runs_by_project["cifar_cnn"], scratch)
        with gr.Tab("Shakespeare"):
            shakespeare_tab(runs, runs_by_project["shakespeare"])
        with gr.Tab("Stock forecast"):
            stock_tab(runs, runs_by_project["stock_lstm"], scratch)
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    runs_by_project = exit_on_user_error(lambda: default_runs(args.runs_root, args.run))
    # Grad-CAM pictures and forecast plots; removed when the server stops.
    with tempfile.TemporaryDirectory(prefix="keras-projects-demo-") as scratch:
        demo = build_demo(runs_by_project, Path(scratch))
        return serve(demo, args.host, args.port, [scratch, *runs_by_project.values()])


def stop_like_ctrl_c(signum: int, frame: Any) -> None:
    """SIGTERM (``kill``, a service manager) stops the server as Ctrl-C does."""
    raise KeyboardInterrupt


def serve(demo: gr.Blocks, host: str, port: int, allowed_paths: list[str]) -> int:
    """Serve ``demo`` (which may send files under ``allowed_paths``) until Ctrl-C or
    SIGTERM; 1, after a one-line error, if it cannot."""
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up checks
    # System fonts: the default theme would fetch Google fonts, which may be unreachable.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "monospace"],
    )
    log.info("Demo: http://%s:%d (Ctrl-C stops it)", host, port)
    try:
        demo.queue().launch(
            server_name=host,
            server_port=port,
            allowed_paths=allowed_paths,
            show_error=True,
            quiet=True,
            theme=theme,
        )
    except KeyboardInterrupt:
        pass
    except OSError as error:
        log.error("error: cannot serve on %s:%d (%s); try --port.", host, port, error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
