"""The character-level language model, and its one-step-at-a-time twin for generation.

    characters (strings) -> StringLookup -> core: Embedding -> layers x GRU/LSTM/SimpleRNN
    -> Dense: logits over [unknown, *vocabulary] for the next character

    or, with --cell transformer (see transformer.py):
    ... -> core: Embedding + position embedding -> layers x TransformerBlock
    -> LayerNormalization -> Dense: logits

The lookup layer holds the vocabulary, so the saved model works on plain
character strings. `step_model` reuses the trained layers with explicit
states (the recurrent states, or the attention blocks' cached keys and values
and the next position), so generation feeds each new character once and
carries the states forward instead of re-reading the whole text every step.
"""

from __future__ import annotations

import keras
from keras import ops

from projects.shakespeare.transformer import (
    INIT_STDDEV,
    PositionEmbedding,
    TransformerBlock,
    residual_stddev,
)

RECURRENT_LAYERS = {
    "simplernn": keras.layers.SimpleRNN,
    "lstm": keras.layers.LSTM,
    "gru": keras.layers.GRU,
}
LOOKUP_LAYER = "char_to_id"
EMBEDDING_LAYER = "embedding"
LOGITS_LAYER = "logits"
CORE_MODEL = "core"
POSITION_LAYER = "position_embedding"
FINAL_NORM_LAYER = "final_norm"


def block_name(index: int) -> str:
    """Name of the ``index``-th (0-based) attention block."""
    return f"block_{index + 1}"


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
    heads: int = 4,
    seq_length: int = 100,
) -> keras.Model:
    """The saved model: (batch, time) character strings -> (batch, time, vocab + 1) logits.

    It wraps the trainable ``core`` (ids -> logits, see `core_of`). Training runs
    on the core with integer ids, because MirroredStrategy cannot average a batch
    of strings when Keras builds the model (keras-team/keras#20585).

    For ``cell="transformer"``: ``embedding_dim`` is the width of every block,
    ``units`` the hidden width of each block's MLP, ``layers`` the number of
    blocks, ``heads`` the attention heads per block and ``seq_length`` the
    longest text the model reads at once (one learned position per character).
    """
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    transformer = cell == "transformer"
    x = keras.layers.Embedding(
        len(vocabulary) + 1,
        embedding_dim,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=INIT_STDDEV)
        if transformer
        else "uniform",
        name=EMBEDDING_LAYER,
    )(ids)
    if transformer:
        x = PositionEmbedding(seq_length, name=POSITION_LAYER)(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
        for index in range(layers):
            x = TransformerBlock(
                heads, units, dropout, residual_stddev(layers), name=block_name(index)
            )(x)
        x = keras.layers.LayerNormalization(epsilon=1e-5, name=FINAL_NORM_LAYER)(x)
    else:
        recurrent = RECURRENT_LAYERS[cell]
        for index in range(layers):
            # return_state=True lets step_model reuse these layers with explicit states.
            x, *_ = recurrent(
                units, return_sequences=True, return_state=True, name=recurrent_name(index)
            )(x)
            if dropout:
                x = keras.layers.Dropout(dropout, name=f"dropout_{index + 1}")(x)
    # The logits stay float32 under mixed precision: the softmax and loss need its range.
    logits = keras.layers.Dense(
        len(vocabulary) + 1,
        kernel_initializer=keras.initializers.RandomNormal(stddev=INIT_STDDEV)
        if transformer
        else "glorot_uniform",
        name=LOGITS_LAYER,
        dtype="float32",
    )(x)
    core = keras.Model(ids, logits, name=CORE_MODEL)

    characters = keras.Input(shape=(None,), dtype="string", name="characters")
    lookup = keras.layers.StringLookup(
        vocabulary=vocabulary, mask_token=None, num_oov_indices=1, name=LOOKUP_LAYER
    )
    return keras.Model(characters, core(lookup(characters)), name=f"char_{cell}")


def model_for(config, vocabulary: list[str]) -> keras.Model:
    """`build_char_model` with the sizes of a `ShakespeareConfig`."""
    return build_char_model(
        vocabulary,
        config.embedding_dim,
        config.cell,
        config.units,
        config.layers,
        config.dropout,
        config.heads,
        config.seq_length,
    )


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


def is_transformer(model: keras.Model) -> bool:
    """Whether the character model is the attention model (else recurrent)."""
    return any(layer.name == POSITION_LAYER for layer in core_of(model).layers)


def context_window(model: keras.Model) -> int | None:
    """The most characters the attention model reads at once; None (no limit) for RNNs."""
    if not is_transformer(model):
        return None
    return core_of(model).get_layer(POSITION_LAYER).window


def attention_blocks(model: keras.Model) -> list[TransformerBlock]:
    """The attention model's blocks, bottom first."""
    return [layer for layer in core_of(model).layers if isinstance(layer, TransformerBlock)]


def initial_states(model: keras.Model) -> list:
    """The states `step_model` starts from, for a batch of one text.

    RNNs: zero recurrent states. Transformer: the next position (0) and, per
    block, an empty key/value cache of the whole window.
    """
    if is_transformer(model):
        window = context_window(model)
        caches = []
        for block in attention_blocks(model):
            attention = block.attention
            shape = (1, 2, attention.heads, window, attention.head_size)
            caches.append(ops.zeros(shape, dtype=block.compute_dtype))
        return [ops.zeros((1,), dtype="int32"), *caches]
    return [
        ops.zeros((1, size), dtype="float32")
        for layer in recurrent_layers(model)
        for size in state_sizes(layer)
    ]


def step_model(model: keras.Model):
    """(ids, *states) -> (logits, *new states), sharing ``model``'s weights.

    ``states`` as `initial_states` returns them. For the transformer the step
    reads ``ids`` at the positions after the cached ones; the caller must not
    exceed `context_window` positions in total.
    """
    if is_transformer(model):
        return _transformer_step(model)
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


def _transformer_step(model: keras.Model):
    core = core_of(model)
    embedding = core.get_layer(EMBEDDING_LAYER)
    positions = core.get_layer(POSITION_LAYER)
    blocks = attention_blocks(model)
    final_norm = core.get_layer(FINAL_NORM_LAYER)
    logits_layer = core.get_layer(LOGITS_LAYER)

    def step(inputs, training=False):
        ids, position, *caches = inputs
        start = position[0]
        x = positions(embedding(ids), start=start)
        new_caches = []
        for block, cache in zip(blocks, caches, strict=True):
            x, cache = block(x, cache=cache, start=start, training=False)
            new_caches.append(cache)
        logits = logits_layer(final_norm(x))
        return [logits, position + ops.shape(ids)[1], *new_caches]

    return step
