"""How batches split over replicas and micro-batches, for `MicroBatchModel`
and its train steps: the replicas that share each batch, and the checks
that every batch splits evenly."""

import sys

import keras


def check_batch_split(batch_size, micro_batch_size, num_replicas=1):
    """Raises ValueError unless batch_size = k * micro_batch_size * num_replicas."""
    for name, value in (("batch_size", batch_size), ("micro_batch_size", micro_batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if batch_size % (micro_batch_size * num_replicas):
        raise ValueError(
            f"batch_size {batch_size} is not a multiple of micro_batch_size {micro_batch_size}"
            f" x {num_replicas} replica(s) = {micro_batch_size * num_replicas}"
        )
    return batch_size // (micro_batch_size * num_replicas)


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
        if batch is None:
            raise ValueError(
                "MicroBatchModel needs batches of a fixed size: batch the dataset with drop_remainder=True"
            )
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
