# Every target that runs Python first builds .venv from requirements.txt (once;
# again only when requirements.txt changes). Pass extra flags with ARGS="...".

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
ARGS ?=
IMAGES ?=
PROJECT ?= xor_mlp
WORKERS ?= 2
PROJECTS := $(sort $(patsubst projects/%/train.py,%,$(wildcard projects/*/train.py)))

.DEFAULT_GOAL := help
.PHONY: help install install-gpu test lint xor-mlp stock-lstm stock-lstm-forecast stock-gradients shakespeare shakespeare-generate shakespeare-attention shakespeare-compare bench-shakespeare cifar-cnn cifar-cnn-predict cifar-inspect cifar-evaluate cifar-tour bench-cifar export bench-export demo multiworker bench-scaling tensorboard clean

help: ## List the targets
	@grep -E '^[a-z][a-z0-9-]*:.*## ' $(MAKEFILE_LIST) | \
		awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

$(INSTALLED): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

install: $(INSTALLED) ## Create .venv and install requirements.txt (CPU)

install-gpu: $(INSTALLED) ## Also install TensorFlow's CUDA libraries (NVIDIA GPUs, Linux)
	$(BIN)/pip install --quiet "tensorflow[and-cuda]==2.21.*"

test: lint ## Run the linter and the test suite (its files spread over both cores)
	$(BIN)/python -m pytest $(ARGS)

lint: $(INSTALLED) ## Check style and common bugs with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

xor-mlp: $(INSTALLED) ## Train the XOR MLP (about 10 s on CPU); ARGS="--gate and" etc.
	$(BIN)/python -m projects.xor_mlp.train $(ARGS)

stock-lstm: $(INSTALLED) ## Train the stock forecaster on bundled AAPL (about 20 s); ARGS="--ticker NVDA" etc.
	$(BIN)/python -m projects.stock_lstm.train $(ARGS)

stock-lstm-forecast: $(INSTALLED) ## Forecast the next days with the latest stock run; ARGS="--days 10"
	$(BIN)/python -m projects.stock_lstm.forecast --run-dir runs/stock_lstm/latest $(ARGS)

stock-gradients: $(INSTALLED) ## SimpleRNN vs LSTM: gradient size against distance, from NumPy BPTT (~1 min)
	$(BIN)/python -m projects.stock_lstm.gradients $(ARGS)

shakespeare: $(INSTALLED) ## Train the Shakespeare character model (LSTM; as many epochs as fit in 20 min)
	$(BIN)/python -m projects.shakespeare.train $(ARGS)

shakespeare-generate: $(INSTALLED) ## Generate text with the latest Shakespeare run; ARGS="--length 1000"
	$(BIN)/python -m projects.shakespeare.generate --run-dir runs/shakespeare/latest $(ARGS)

shakespeare-attention: $(INSTALLED) ## Attention heat maps of the latest (transformer) Shakespeare run; TEXT="ROMEO: But soft"
	$(BIN)/python -m projects.shakespeare.attention --run-dir runs/shakespeare/latest $(if $(TEXT),--text "$(TEXT)") $(ARGS)

shakespeare-compare: $(INSTALLED) ## Train SimpleRNN, LSTM, GRU and transformer for 10 and 20 minutes each (~2 h); one table
	$(BIN)/python -m projects.shakespeare.compare $(ARGS)

bench-shakespeare: $(INSTALLED) ## Print training and generation speed of the Shakespeare models
	$(BIN)/python -m projects.shakespeare.bench

cifar-cnn: $(INSTALLED) ## Train the CIFAR-10 CNN (airbench; download, else bundled sample); ARGS="--data-dir DIR"
	$(BIN)/python -m projects.cifar_cnn.train $(ARGS)

cifar-cnn-predict: $(INSTALLED) ## Top-3 classes of images with the latest CIFAR run: IMAGES="a.jpg b.png"
	@test -n "$(IMAGES)" || { echo 'usage: make cifar-cnn-predict IMAGES="photo.jpg other.png"' >&2; exit 2; }
	$(BIN)/python -m projects.cifar_cnn.predict --run-dir runs/cifar_cnn/latest $(ARGS) $(IMAGES)

cifar-inspect: $(INSTALLED) ## Kernels, feature maps and Grad-CAM of the latest CIFAR run on IMAGE=photo.jpg
	@test -n "$(IMAGE)" || { echo 'usage: make cifar-inspect IMAGE=photo.jpg [ARGS="--class dog"]' >&2; exit 2; }
	$(BIN)/python -m projects.cifar_cnn.inspect --run-dir runs/cifar_cnn/latest $(ARGS) "$(IMAGE)"

cifar-evaluate: $(INSTALLED) ## Score the latest CIFAR run on its held-out images, or on DATA=FOLDER/<class>/*
	$(BIN)/python -m projects.cifar_cnn.evaluate --run-dir runs/cifar_cnn/latest $(if $(DATA),--data-dir "$(DATA)") $(ARGS)

cifar-tour: $(INSTALLED) ## Train every CNN architecture for the same minutes; one table and plot (~15 min)
	$(BIN)/python -m projects.cifar_cnn.tour $(ARGS)

bench-cifar: $(INSTALLED) ## Print CNN training throughput and GFLOP/s against a matmul
	$(BIN)/python -m projects.cifar_cnn.bench $(ARGS)

export: $(INSTALLED) ## Export a run for serving: RUN=runs/cifar_cnn/latest FORMAT=saved_model|tflite|onnx
	@test -n "$(RUN)" -a -n "$(FORMAT)" || { echo 'usage: make export RUN=runs/cifar_cnn/latest FORMAT=saved_model|tflite|onnx [ARGS="--quantize int8"]' >&2; exit 2; }
	$(BIN)/python -m shared.export --run-dir $(RUN) --format $(FORMAT) $(ARGS)

bench-export: $(INSTALLED) ## Size, ms per call and score of every export format of each latest run
	$(BIN)/python -m shared.bench_export $(ARGS)

demo: $(INSTALLED) ## Serve a page to try every project's latest run on http://127.0.0.1:7860; RUN=dir picks one
	$(BIN)/python -m shared.demo $(if $(RUN),--run $(RUN)) $(ARGS)

multiworker: $(INSTALLED) ## Train PROJECT=<name> as WORKERS=N local workers (MultiWorkerMirroredStrategy)
	@test -f "projects/$(PROJECT)/train.py" || { echo 'make multiworker: PROJECT=$(PROJECT) is not a project; choose one of: $(PROJECTS)' >&2; exit 2; }
	$(BIN)/python -m shared.launch --workers $(WORKERS) -- $(BIN)/python -m projects.$(PROJECT).train $(ARGS)

bench-scaling: $(INSTALLED) ## Print stock/Shakespeare throughput: 1 device, 2 replicas, 2 local workers
	$(BIN)/python -m shared.bench_scaling $(ARGS)

tensorboard: $(INSTALLED) ## Serve TensorBoard for everything under runs/
	$(BIN)/tensorboard --logdir runs $(ARGS)

clean: ## Delete runs/ and caches (keeps .venv; rm -rf .venv to remove it)
	rm -rf runs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +
