"""Settings of the CIFAR-10 CNN project (every field is a command-line flag)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import KEEP_CHOICES, ConfigError, TrainConfig, option

MODELS = ("airbench", "simple", "vgg", "resnet", "lenet5", "alexnet", "inception", "densenet")
# --image-size's floor, and the larger minimum of the architectures whose unpadded
# convolutions and poolings would leave no pixel below it (every larger size works:
# tests/test_cifar_cnn.py builds each at its minimum and one pixel below). Checked with
# the other flags, before TensorFlow loads.
SMALLEST_IMAGE_SIZE = 8
MINIMUM_IMAGE_SIZE = {"airbench": 9, "simple": 18, "lenet5": 16, "alexnet": 15}
# Epochs when --epochs is 0: each architecture's own recipe.
DEFAULT_EPOCHS = {"airbench": 10, **{model: 18 for model in MODELS if model != "airbench"}}
# --width when it is 0 (automatic), unless --minutes chooses a narrower airbench.
DEFAULT_WIDTH = 32


@dataclass(frozen=True)
class CifarConfig(TrainConfig):
    """Train a convolutional network to classify CIFAR-10 (or any image-folder) images."""

    QUICK = {"epochs": 1, "width": 8, "max_train_images": 512, "batch_size": 64}

    epochs: int = option(
        0,
        "Passes over the training images; 0: the model's recipe (airbench 8, with --optimizer "
        "sgd 10; others 18).",
        minimum=0,
    )
    keep: str = option(
        "last",
        "Which epoch model.keras holds (and metrics.json scores): last (the best is kept as "
        "best.keras) or best. Default last: the held-out images that pick the best epoch may "
        "be the test split, and choosing on them would make their accuracy optimistic.",
        choices=KEEP_CHOICES,
    )
    batch_size: int = option(
        0,
        "Global batch size; 0: 2000 for airbench (1024 with --optimizer sgd), 256 for the "
        "others, or for small "
        "datasets the largest power of two that still gives an epoch 50 steps.",
        minimum=0,
    )
    data_dir: str = option(
        "",
        "Image folder DIR/train/<class>/* [+ DIR/test/<class>/*]; default: CIFAR-10 "
        "(download, else the bundled 4,000-image sample).",
    )
    image_size: int = option(
        32,
        f"Images are resized to this many pixels square; at least {SMALLEST_IMAGE_SIZE} ("
        + ", ".join(f"{model} {size}" for model, size in MINIMUM_IMAGE_SIZE.items())
        + ").",
        minimum=SMALLEST_IMAGE_SIZE,
    )
    validation_fraction: float = option(
        0.1,
        "Share of each class held out for validation when the data has no test split.",
        minimum=0.0,
        maximum=0.5,
        exclusive_minimum=True,
    )
    max_train_images: int = option(
        0, "Train on at most this many images, class-balanced (0: all).", minimum=0
    )
    model: str = option(
        "airbench",
        "Architecture: airbench (the airbench94 recipe: whitened input, its own optimizer "
        "settings), simple (conv-pool stack), vgg (3x3 blocks), resnet (residual), or the "
        "lecture's history: lenet5, alexnet, inception (GoogLeNet modules), densenet "
        "(DenseNet-BC).",
        choices=MODELS,
    )
    minutes: float = option(
        0.0,
        "Time budget: > 0 sets --epochs so that training takes about this many minutes on "
        "this machine, from a timed run of a few steps before training (0: off).",
        minimum=0.0,
    )
    init_from: str = option(
        "",
        "Start from the weights of this finished run (same --model and --width): "
        "fine-tuning. The classifier head starts afresh when the classes differ.",
    )
    whiten: bool = option(
        True, "airbench: frozen patch-whitening first layer (else a learned 2x2 conv)."
    )
    whiten_eps: float = option(
        5e-4,
        "airbench: added to each patch-covariance eigenvalue before the whitening filter is "
        "scaled by 1/sqrt(eigenvalue + eps); larger values amplify the weakest patterns less "
        "(in JPEG images, fine colour detail is mostly compression residue).",
        minimum=0.0,
        exclusive_minimum=True,
    )
    dirac_init: bool = option(True, "airbench: 3x3 convolutions start as identities.")
    bn_bias_lr_scale: float = option(
        64.0,
        "airbench --optimizer sgd: learning-rate multiplier of batch norm's shift.",
        minimum=1.0,
    )
    optimizer: str = option(
        "muon",
        "airbench: muon (airbench94_muon: Muon on the 3x3 kernels, SGD on the rest, linear "
        "decay, no lookahead, 8 epochs, batch 2000) or sgd (airbench94: Nesterov SGD, "
        "triangular schedule, lookahead, 10 epochs, batch 1024).",
        choices=("sgd", "muon"),
    )
    lookahead: bool = option(
        True, "airbench --optimizer sgd: average the weights every 5 steps (lookahead)."
    )
    alternating_flip: bool = option(
        True, "airbench: flip each image every other epoch (else at random)."
    )
    tta: int = option(
        2,
        "airbench: test-time views in the saved model: 0 none, 1 + mirror, 2 + 1-pixel shifts.",
        minimum=0,
        maximum=2,
    )
    width: int = option(
        0,
        "Filters of the first conv layer of vgg/resnet (later stages double); airbench: "
        "its groups get 2x, 8x and 8x this (32: the recipe's 64, 256, 256). 0: automatic, "
        "32; with --minutes, airbench trains 16 when fewer than 3 epochs of 32 fit and more "
        "of 16 do (on a slow CPU, 4 epochs of 16 beat 1 of 32 by 13 points).",
        minimum=0,
    )
    learning_rate: float = option(
        0.2,
        "simple/vgg/resnet: peak SGD (Nesterov) learning rate for a batch of 256; scaled "
        "in proportion to the batch size (the linear scaling rule).",
        minimum=0.0,
        exclusive_minimum=True,
    )
    lr_schedule: str = option(
        "cosine",
        "simple/vgg/resnet: cosine: linear warm-up to --learning-rate then cosine decay "
        "to 0; constant: fixed.",
        choices=("cosine", "constant"),
    )
    warmup_epochs: float = option(
        3.0, "simple/vgg/resnet: epochs of linear warm-up (cosine schedule).", minimum=0.0
    )
    momentum: float = option(0.9, "simple/vgg/resnet: SGD momentum.", minimum=0.0, maximum=0.999)
    weight_decay: float = option(
        5e-3,
        "simple/vgg/resnet: decoupled weight decay of SGD (w -= lr * decay * w each step).",
        minimum=0.0,
    )
    label_smoothing: float = option(
        0.1,
        "simple/vgg/resnet: label smoothing of the cross-entropy loss.",
        minimum=0.0,
        maximum=0.5,
    )
    translate: float = option(
        0.125,
        "simple/vgg/resnet augmentation: random shift, as a fraction of the side.",
        minimum=0.0,
    )
    flip: bool = option(True, "Augmentation: horizontal flips.")
    mixed_precision: str = option(
        "auto",
        "auto: float16 compute on GPUs that support it (compute capability 7.0+), bfloat16 "
        "on CPUs that compute it natively (AVX512-BF16 or AMX; measured faster for these "
        "conv nets), else float32; on: float16 on GPU, bfloat16 on CPU; off: float32.",
        choices=("auto", "on", "off"),
    )
    jit_compile: str = option(
        "auto",
        "XLA: compile each training step into fused code. auto: Keras's choice (on a GPU, "
        "not on a CPU: with AVX-512 TensorFlow's own kernels were faster; without, XLA "
        "steps were faster but its compiling cost more than they saved in --minutes 20); "
        "on; off.",
        choices=("auto", "on", "off"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        smallest = MINIMUM_IMAGE_SIZE.get(self.model, SMALLEST_IMAGE_SIZE)
        if self.image_size < smallest:
            raise ConfigError(
                f"--image-size {self.image_size} is too small for --model {self.model}: its "
                f"convolutions and poolings need at least {smallest} pixels; use --image-size "
                f"{smallest} or more."
            )
