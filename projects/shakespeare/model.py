"""The character-level language model, and its one-step-at-a-time twin for generation.

    characters (strings) -> StringLookup -> core: Embedding -> layers x GRU/LSTM/SimpleRNN
    -> Dense: logits over [unknown, *vocabulary] for the next character

The lookup layer holds the vocabulary, so the saved model works on plain
character strings. `step_model` reuses the trained layers with explicit
recurrent states, so generation feeds each new character once and carries the
states forward instead of re-reading the whole text every step.
"""

from __future__ import annotations

import keras

RECURRENT_LAYERS = {
    "simplernn": keras.layers.SimpleRNN,
    "lstm": keras.layers.LSTM,
    "gru": keras.layers.GRU,
}
LOOKUP_LAYER = "char_to_id"
EMBEDDING_LAYER = "embedding"
LOGITS_LAYER = "logits"
CORE_MODEL = "core"


def recurrent_name(index: int) -> str:
    """Name of the ``index``-th (0-based) recurrent layer."""
    return f"recurrent_{index + 1}"


def build_char_model(
    vocabulary: list[str],
    embedding_dim: int,
    cell: str,
    units: int,
    layers: int,
    dropout: float,
) -> keras.Model:
    """The saved model: (batch, time) character strings -> (batch, time, vocab + 1) logits.

    It wraps the trainable ``core`` (ids -> logits, see `core_of`). Training runs
    on the core with integer ids, because MirroredStrategy cannot average a batch
    of strings when Keras builds the model (keras-team/keras#20585).
    """
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(len(vocabulary) + 1, embedding_dim, name=EMBEDDING_LAYER)(ids)
    recurrent = RECURRENT_LAYERS[cell]
    for index in range(layers):
        # return_state=True lets step_model reuse these layers with explicit states.
        x, *_ = recurrent(
            units, return_sequences=True, return_state=True, name=recurrent_name(index)
        )(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{index + 1}")(x)
    logits = keras.layers.Dense(len(vocabulary) + 1, name=LOGITS_LAYER)(x)
    core = keras.Model(ids, logits, name=CORE_MODEL)

    characters = keras.Input(shape=(None,), dtype="string", name="characters")
    lookup = keras.layers.StringLookup(
        vocabulary=vocabulary, mask_token=None, num_oov_indices=1, name=LOOKUP_LAYER
    )
    return keras.Model(characters, core(lookup(characters)), name=f"char_{cell}")


def core_of(model: keras.Model) -> keras.Model:
    """The trainable ids -> logits model inside the saved character model."""
    return model.get_layer(CORE_MODEL)


def compile_char_model(
    model: keras.Model, learning_rate: float, decay_steps: int | None = None
) -> keras.Model:
    """Cross-entropy in nats per character, Adam with gradient clipping; returns the model.

    With ``decay_steps``, the learning rate follows a cosine from ``learning_rate``
    down to 5% of it over that many steps (the whole run).
    """
    if decay_steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps, alpha=0.05
        )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, clipnorm=5.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def vocabulary_of(model: keras.Model) -> list[str]:
    """The model's characters, index = id (index 0 is the unknown token)."""
    return list(model.get_layer(LOOKUP_LAYER).get_vocabulary())


def recurrent_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's recurrent layers, bottom first."""
    core = core_of(model)
    found = []
    while True:
        try:
            found.append(core.get_layer(recurrent_name(len(found))))
        except ValueError:
            return found


def state_sizes(layer: keras.layers.Layer) -> list[int]:
    """Sizes of a recurrent layer's states: [h, c] for LSTM, [h] otherwise."""
    size = layer.cell.state_size
    return list(size) if isinstance(size, (list, tuple)) else [size]


def step_model(model: keras.Model) -> keras.Model:
    """(ids, *states) -> (logits, *new states), sharing ``model``'s weights."""
    core = core_of(model)
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = core.get_layer(EMBEDDING_LAYER)(ids)
    state_inputs, state_outputs = [], []
    for layer in recurrent_layers(model):
        inputs = [
            keras.Input(shape=(size,), name=f"{layer.name}_state_{i}")
            for i, size in enumerate(state_sizes(layer))
        ]
        x, *states = layer(x, initial_state=inputs)
        state_inputs += inputs
        state_outputs += states
    logits = core.get_layer(LOGITS_LAYER)(x)
    return keras.Model([ids, *state_inputs], [logits, *state_outputs], name="step")
