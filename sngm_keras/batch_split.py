"""How batches split over replicas and micro-batches, for `MicroBatchModel`
and its train steps: the replicas that share each batch, and the check,
before `fit` starts, that every batch it will be given splits evenly (the
rule itself is `sngm_keras.checks.check_batch_split`)."""

import sys

import keras

from sngm_keras.checks import check_batch_split


def num_replicas(model):
    """Replicas that share each batch: tf.distribute's, or JAX's data-parallel devices."""
    if keras.backend.backend() == "tensorflow":
        return model.distribute_strategy.num_replicas_in_sync
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    # The size of the mesh axis the batch is sharded on (DataParallel: all
    # its devices; ModelParallel: the data-parallel axis).
    mesh = distribution.device_mesh
    return int(mesh.shape[list(mesh.axis_names).index(distribution.batch_dim_name)])


def check_fit_batches(x, batch_size, micro_batch_size, replicas):
    """Fails before training when fit's batches cannot be split evenly."""
    # A tf.data.Dataset means TensorFlow is imported already; never import it
    # here (JAX without TensorFlow, or JAX keeping TensorFlow off its GPUs).
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "data") and isinstance(x, tf.data.Dataset):
        spec = keras.tree.flatten(x.element_spec)[0]
        batch = spec.shape[0] if spec.shape.rank else None
        # A size unknown until the step runs (no drop_remainder; an epoch that
        # ends with a smaller batch of whole micro-batches) is checked by the
        # train step's guard, batch by batch.
        if batch is not None:
            check_batch_split(int(batch), micro_batch_size, replicas)
    elif hasattr(x, "shape") or isinstance(x, (list, tuple, dict)):
        first = keras.tree.flatten(x)[0]
        batch = 32 if batch_size is None else batch_size
        check_batch_split(batch, micro_batch_size, replicas)
        if len(first) % batch:
            raise ValueError(
                f"{len(first)} examples do not split into batches of {batch}: "
                "MicroBatchModel needs full batches; drop the remainder"
            )
