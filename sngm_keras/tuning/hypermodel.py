"""The hypermodel: one trial trains the training app's model on held-out-scored data.

`LargeBatchHyperModel` trains the training app's model (`build_model`) in
`MicroBatchModel` with the training app's optimizer and poly schedule
(`make_optimizer`) on the training app's input pipeline, and scores each trial
on a validation split held out of the TRAINING images (a seeded random
`validation_fraction` of them); the test split is never read, so the search
cannot select on it. Only in-memory datasets (the sample, CIFAR, image
folders) are supported: ImageNet is streamed and has no such split here.
"""

import dataclasses

import keras_tuner
import numpy as np

from sngm_keras import checks
from sngm_keras.data.info import batches, examples_per_epoch
from sngm_keras.training.errors import ConfigError, as_config_errors
from sngm_keras.tuning.space import HYPERPARAMETERS


class LargeBatchHyperModel(keras_tuner.HyperModel):
    """Trains `config`'s model with its optimizer, the hyperparameters from `space`.

    Args:
        config: the base `TrainConfig` (dataset, model, optimizer,
            micro_batch_size, trust_coefficient, seed, augment, ...); its
            `epochs` is the epochs of each trial, its `lr_schedule` must be
            "poly" (the power is searched). `config.validate()` is called
            (it writes nothing).
        space: the `SearchSpace`.
        validation_fraction: the part of the training images held out to
            score the trials (seeded by `config.seed`, the same for all
            trials); the rest is trained on.

    `build(hp)` returns the compiled `MicroBatchModel` (micro-batches of
    `config.micro_batch_size`, or one per batch when it is None); `fit(hp,
    model, ...)` trains it on the kept training images and validates on the
    held-out ones, and returns the `History` (val_accuracy, val_loss).
    Raises ConfigError / DataError (from the data) when the configuration
    cannot be searched, before any trial runs.
    """

    def __init__(self, config, space, validation_fraction=0.1, name=None):
        super().__init__(name=name, tunable=True)
        if config.lr_schedule != "poly":
            raise ConfigError("lr_schedule", f"the search tunes the poly schedule's power, not {config.lr_schedule}")
        if config.dataset == "imagenet2012":
            raise ConfigError(
                "dataset",
                "tuning holds a validation split out of training images held in memory; "
                "imagenet2012 is streamed, so use the sample, cifar10, cifar100 or an image folder",
            )
        space.validate().check_micro_batch(config.micro_batch_size)
        config.validate()
        with as_config_errors():
            self.validation_fraction = checks.check_fraction("validation_fraction", validation_fraction)
        self.config = config
        self.space = space
        self._load_data()
        largest = max(space.batch_sizes)
        if largest > self.num_train:
            raise ConfigError(
                "batch_sizes",
                f"{largest} is larger than the {self.num_train} training images left after holding "
                f"out {self.num_validation} for validation (--validation_fraction={validation_fraction:g})",
            )

    # -- data -------------------------------------------------------------

    def _load_data(self):
        from sngm_keras.data import ArraySplits, load_arrays, preprocessing, sources

        config = self.config
        source = sources.resolve(config.dataset)
        arrays = load_arrays(config.dataset, data_dir=config.data_dir, download=config.download)
        n = arrays.num_train
        n_val = int(round(self.validation_fraction * n))
        if not 1 <= n_val < n:
            raise ConfigError(
                "validation_fraction",
                f"{self.validation_fraction:g} of {n} training images leaves no validation or no training images",
            )
        # A seeded random subset, the same for every trial (folders are read
        # class by class, so "the last N%" would be a few classes).
        order = np.random.default_rng([config.seed, 0x484F4C44]).permutation(n)
        held, kept = np.sort(order[:n_val]), np.sort(order[n_val:])
        self.splits = ArraySplits(
            x_train=arrays.x_train[kept],
            y_train=arrays.y_train[kept],
            x_test=arrays.x_train[held],
            y_test=arrays.y_train[held],
            num_classes=arrays.num_classes,
            class_names=arrays.class_names,
            image_shape=arrays.image_shape,
        )
        # Statistics of the images trained on, as make_datasets computes them.
        mean, std, self._pad = preprocessing(source, self.splits)
        self._normalization = (mean, std)

    @property
    def num_train(self):
        """Training images the trials train on (the held-out ones excluded)."""
        return self.splits.num_train

    @property
    def num_validation(self):
        return self.splits.num_test

    def steps_per_epoch(self, batch_size, micro_batch_size=None):
        """Batches per epoch; with micro-batches the epoch keeps a last batch of
        whole micro-batches, as the training app does (`examples_per_epoch`)."""
        return batches(examples_per_epoch(self.num_train, batch_size, micro_batch_size), batch_size)

    def datasets(self, batch_size, start_epoch=0, num_epochs=None, micro_batch_size=None):
        """(train_ds, validation_ds): the training app's in-memory pipeline on the split."""
        from sngm_keras.data.pipeline import in_memory_datasets

        mean, std = self._normalization
        return in_memory_datasets(
            self.splits,
            mean=mean,
            std=std,
            pad=self._pad,
            batch_size=batch_size,
            eval_batch_size=min(self.config.eval_batch_size, self.num_validation),
            augment=self.config.augment,
            seed=self.config.seed,
            start_epoch=start_epoch,
            num_epochs=num_epochs or self.config.epochs,
            epoch_multiple=micro_batch_size,
        )

    # -- the hypermodel -----------------------------------------------------

    def trial_config(self, hp):
        """The `TrainConfig` of a trial: the base config with `hp`'s values."""
        values = self.space.fill(hp)
        epochs = int(hp.values.get("tuner/epochs", self.config.epochs))  # Hyperband's budget
        return dataclasses.replace(self.config, epochs=epochs, **values)

    def build(self, hp):
        import keras

        from sngm_keras.accumulation import MicroBatchModel
        from sngm_keras.models import build_model
        from sngm_keras.training.factory import compile_for_training

        config = self.trial_config(hp)
        keras.mixed_precision.set_dtype_policy(config.dtype_policy)
        keras.utils.set_random_seed(config.seed)
        net = build_model(config.model, self.splits.num_classes, tuple(self.splits.image_shape), seed=config.seed)
        # One micro-batch a step (no --micro_batch_size) has no noise scale to measure.
        model = MicroBatchModel(
            net,
            config.micro_batch_size or config.batch_size,
            noise_scale=config.noise_scale and config.micro_batch_size is not None,
        )
        # The optimizer is built too, so Hyperband's continued trials restore it.
        return compile_for_training(model, config, self.steps_per_epoch(config.batch_size, config.micro_batch_size))

    def fit(self, hp, model, *args, epochs=None, initial_epoch=0, callbacks=None, verbose=1, **kwargs):
        if args or kwargs.keys() - {"shuffle"}:
            raise TypeError("LargeBatchHyperModel reads its own data: call search() without data or fit arguments")
        config = self.trial_config(hp)
        epochs = int(epochs or config.epochs)
        train_ds, validation_ds = self.datasets(
            config.batch_size, start_epoch=initial_epoch, num_epochs=epochs, micro_batch_size=config.micro_batch_size
        )
        return model.fit(
            train_ds,
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=self.steps_per_epoch(config.batch_size, config.micro_batch_size),
            validation_data=validation_ds,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,
        )

    def settings(self):
        """What decides the search's results, keyed by apps.tune flag names (for resume checks)."""
        fields = self.config.result_fields()
        for name in HYPERPARAMETERS + ("preset",):
            fields.pop(name, None)
        fields["epochs_per_trial"] = fields.pop("epochs")
        fields.update(self.space.to_dict(), validation_fraction=self.validation_fraction)
        return fields
