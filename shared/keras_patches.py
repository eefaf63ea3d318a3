"""Two small fixes that make Keras 3's ``model.fit`` work under MultiWorkerMirroredStrategy.

keras-team/keras#20585: with TensorFlow 2.21 / Keras 3.15, ``fit``, ``evaluate``
and ``predict`` fail under ``tf.distribute.MultiWorkerMirroredStrategy``:

1. ``TensorFlowTrainer._maybe_symbolic_build`` builds the model from the first
   distributed batch by averaging it across replicas
   (``strategy.reduce("MEAN", batch)``). Under the multi-worker strategy that
   batch is a ``PerReplica`` value the reduction cannot convert ("Attempt to
   convert a value (PerReplica...)"); averaging is wrong for integer and string
   inputs anyway, and drawing that batch starts the dataset once more, so a
   dataset that reshuffles every epoch trains in a different order than without
   a strategy. Building only needs shapes and dtypes: the fix takes them from
   the dataset's element spec.
2. ``reduce_per_replica(..., reduction="mean")`` reduces multi-worker values with
   ``strategy.reduce("MEAN", v, axis=0)``; the step's logs are scalars, which
   have no dimension 0 ("Invalid reduction dimension 0"). The fix averages
   over replicas only (``axis=None``), which is what "mean" means for them.

`install` applies both, once per process, and only replaces the two functions.
``tests/test_multiworker.py`` runs the unpatched ``fit`` on two workers and
fails when it starts to work: then upstream has fixed the bug and this module
can go.
"""

from __future__ import annotations

import logging

from keras.src import tree
from keras.src.backend.tensorflow import trainer as tensorflow_trainer

log = logging.getLogger(__name__)

_ORIGINAL_REDUCE = tensorflow_trainer.reduce_per_replica
_installed = False


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    """Keras's method, building from the dataset's element spec instead of a batch."""
    if self._distribute_strategy is None:
        return
    if iterator is not None:
        # Building needs only shapes and dtypes. Drawing a real batch (as Keras does)
        # would also start, and so reshuffle, a dataset that reshuffles every epoch:
        # the first epoch would then see the order of the second.
        data_batch = iterator.data_adapter.get_tf_dataset().element_spec
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def _reduce_per_replica(values, strategy, reduction):
    """Keras's function, averaging multi-worker values over replicas, not over axis 0."""
    if reduction in ("auto", "mean") and tensorflow_trainer._collective_all_reduce_multi_worker(
        strategy
    ):
        return tree.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
    return _ORIGINAL_REDUCE(values, strategy, reduction)


def install() -> None:
    """Apply both fixes (idempotent). Call before ``fit`` under the multi-worker strategy."""
    global _installed
    if _installed:
        return
    tensorflow_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tensorflow_trainer.reduce_per_replica = _reduce_per_replica
    _installed = True
    log.info("Patched Keras for MultiWorkerMirroredStrategy (keras-team/keras#20585)")
