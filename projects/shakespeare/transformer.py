"""A decoder-only transformer: self-attention over the previous characters.

The RNN lecture ends with attention: a decoder state s_t scores every encoder
state h_i (score = s_t . h_i), a softmax turns the scores into weights, and
the weighted sum of the states is the context. Self-attention is the same
computation with the sequence attending to itself:

* every position emits a query q, a key k and a value v (three linear maps);
* position t scores position i <= t with q_t . k_i / sqrt(head size); later
  positions are masked out (causal), so the model cannot peek at the
  character it is asked to predict;
* softmax over i gives the weights, and sum_i weight_i * v_i is the output.

Several heads do this side by side on slices of the width. A block is
``x + attention(norm(x))`` then ``x + mlp(norm(x))`` (pre-layer-norm, as in
GPT-2 and nanoGPT). Positions are learned embeddings, one per place in the
``--seq-length`` window.

Generation caches each block's keys and values, so a new character costs one
position (its query against the stored keys) instead of the whole window.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

# GPT-2's initialisation: every weight matrix drawn with standard deviation 0.02, and
# the two projections that write into the residual stream with 0.02 / sqrt(2 * blocks),
# so that at the start each block adds little and the stack passes the characters'
# embeddings through. With Keras's default (Glorot) matrices each block adds noise many
# times larger than the embeddings, and training sat at the unigram loss for a whole
# epoch (measured on a 4-block, width-128 model, 122 steps at learning rate 2e-3:
# validation 3.34 nats/char, the unigram's 3.35, against 2.51 with this).
INIT_STDDEV = 0.02


def residual_stddev(blocks: int) -> float:
    """Standard deviation of the projections into the residual stream of ``blocks`` blocks."""
    return INIT_STDDEV / math.sqrt(2 * blocks)


def _normal(stddev: float) -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(stddev=stddev)


@keras.saving.register_keras_serializable(package="shakespeare")
class CausalSelfAttention(layers.Layer):
    """Multi-head self-attention in which position t sees positions 0..t only.

    ``call(x)`` attends over ``x`` itself. With ``cache`` (keys and values of
    earlier positions, shape (batch, 2, heads, window, head size)) and
    ``start`` (the position of ``x``'s first row), ``x``'s keys and values are
    written into the cache at ``start`` and its queries attend over everything
    cached so far; the updated cache is returned too.
    """

    def __init__(
        self, heads: int, dropout: float = 0.0, projection_stddev: float = INIT_STDDEV, **kwargs
    ):
        super().__init__(**kwargs)
        self.heads, self.dropout = heads, dropout
        self.projection_stddev = projection_stddev

    def build(self, input_shape):
        width = int(input_shape[-1])
        if width % self.heads:
            raise ValueError(f"width {width} is not divisible by {self.heads} heads")
        self.head_size = width // self.heads
        # One matrix computes queries, keys and values together: one large product is
        # faster than three small ones.
        # Sublayers built here take this layer's precision: the global policy may differ
        # when a saved model is loaded.
        policy = self.dtype_policy
        self.query_key_value = layers.Dense(
            3 * width, kernel_initializer=_normal(INIT_STDDEV), name="query_key_value", dtype=policy
        )
        self.query_key_value.build(input_shape)
        self.output_projection = layers.Dense(
            width,
            kernel_initializer=_normal(self.projection_stddev),
            name="output_projection",
            dtype=policy,
        )
        self.output_projection.build(input_shape)
        self.weights_dropout = layers.Dropout(self.dropout, dtype=policy)

    def _split_heads(self, x):
        """(batch, time, 3 * width) -> three (batch, heads, time, head size) tensors."""
        batch, time = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (batch, time, 3, self.heads, self.head_size))
        x = ops.transpose(x, (2, 0, 3, 1, 4))
        return x[0], x[1], x[2]

    def attention_weights(self, queries, keys, start=0):
        """softmax(q . k / sqrt(head size)) with later positions masked: (batch, heads, tq, tk).

        Query row r sits at position ``start + r``; key column c at position c.
        """
        scores = ops.einsum("bhqd,bhkd->bhqk", queries, keys)
        scores = ops.cast(scores, "float32") / math.sqrt(self.head_size)
        query_positions = ops.arange(ops.shape(queries)[2]) + start
        key_positions = ops.arange(ops.shape(keys)[2])
        visible = key_positions[None, :] <= query_positions[:, None]
        scores = ops.where(visible[None, None], scores, -1e9)
        return ops.softmax(scores, axis=-1)

    def call(self, x, cache=None, start=None, training=None, return_weights=False):
        queries, keys, values = self._split_heads(self.query_key_value(x))
        if cache is not None:
            index = [0, 0, start, 0]
            keys = ops.slice_update(cache[:, 0], index, ops.cast(keys, cache.dtype))
            values = ops.slice_update(cache[:, 1], index, ops.cast(values, cache.dtype))
            cache = ops.stack([keys, values], axis=1)
        weights = self.attention_weights(queries, keys, 0 if start is None else start)
        dropped = self.weights_dropout(weights, training=training)
        mixed = ops.einsum("bhqk,bhkd->bhqd", ops.cast(dropped, values.dtype), values)
        batch, time = ops.shape(x)[0], ops.shape(x)[1]
        mixed = ops.reshape(ops.transpose(mixed, (0, 2, 1, 3)), (batch, time, -1))
        outputs = self.output_projection(ops.cast(mixed, x.dtype))
        extras = ([cache] if cache is not None else []) + ([weights] if return_weights else [])
        return (outputs, *extras) if extras else outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "heads": self.heads,
            "dropout": self.dropout,
            "projection_stddev": self.projection_stddev,
        }


@keras.saving.register_keras_serializable(package="shakespeare")
class TransformerBlock(layers.Layer):
    """``x + attention(norm(x))``, then ``x + mlp(norm(x))``, dropout on both branches."""

    def __init__(
        self,
        heads: int,
        hidden_units: int,
        dropout: float = 0.0,
        projection_stddev: float = INIT_STDDEV,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.heads, self.hidden_units, self.dropout = heads, hidden_units, dropout
        self.projection_stddev = projection_stddev

    def build(self, input_shape):
        width = int(input_shape[-1])
        policy = self.dtype_policy  # see CausalSelfAttention.build
        self.attention_norm = layers.LayerNormalization(
            epsilon=1e-5, name="attention_norm", dtype=policy
        )
        self.attention_norm.build(input_shape)
        self.attention = CausalSelfAttention(
            self.heads, self.dropout, self.projection_stddev, name="attention", dtype=policy
        )
        self.attention.build(input_shape)
        self.mlp_norm = layers.LayerNormalization(epsilon=1e-5, name="mlp_norm", dtype=policy)
        self.mlp_norm.build(input_shape)
        self.mlp_hidden = layers.Dense(
            self.hidden_units,
            activation="gelu",
            kernel_initializer=_normal(INIT_STDDEV),
            name="mlp_hidden",
            dtype=policy,
        )
        self.mlp_hidden.build(input_shape)
        self.mlp_output = layers.Dense(
            width,
            kernel_initializer=_normal(self.projection_stddev),
            name="mlp_output",
            dtype=policy,
        )
        self.mlp_output.build((*input_shape[:-1], self.hidden_units))
        self.branch_dropout = layers.Dropout(self.dropout, dtype=policy)

    def call(self, x, cache=None, start=None, training=None, return_weights=False):
        attended = self.attention(
            self.attention_norm(x),
            cache=cache,
            start=start,
            training=training,
            return_weights=return_weights,
        )
        extras = []
        if isinstance(attended, (tuple, list)):
            attended, *extras = attended
        x = x + self.branch_dropout(attended, training=training)
        mlp = self.mlp_output(self.mlp_hidden(self.mlp_norm(x)))
        x = x + self.branch_dropout(mlp, training=training)
        return (x, *extras) if extras else x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "heads": self.heads,
            "hidden_units": self.hidden_units,
            "dropout": self.dropout,
            "projection_stddev": self.projection_stddev,
        }


@keras.saving.register_keras_serializable(package="shakespeare")
class PositionEmbedding(layers.Layer):
    """Adds a learned vector per position (0 .. window - 1) to each row of its input.

    ``start`` shifts the positions, for cached generation that feeds one
    character at position ``start``.
    """

    def __init__(self, window: int, **kwargs):
        super().__init__(**kwargs)
        self.window = window

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.window, int(input_shape[-1])),
            initializer=_normal(INIT_STDDEV),
        )

    def call(self, x, start=0):
        positions = ops.arange(ops.shape(x)[1]) + start
        return x + ops.cast(ops.take(self.embeddings, positions, axis=0), x.dtype)[None]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "window": self.window}
