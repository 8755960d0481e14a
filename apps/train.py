"""Train a ResNet (or the paper's two-conv network) with SNGM, MSGD or LARS.

    python -m apps.train                                    # the offline demo
    python -m apps.train --preset=table2_resnet20_sngm_b4096 --data_dir=DIR
    python -m apps.train --flagfile=best.flags

Flags override the preset; rerunning the same command resumes from the last
checkpoint in --model_dir. See `sngm_keras.training` for what is written.
"""

import dataclasses
import os

from absl import flags

from apps._cli import fail, run

from sngm_keras.training.config import DATASETS, TrainConfig
from sngm_keras.training.presets import PRESETS

FLAGS = flags.FLAGS
_D = TrainConfig()

flags.DEFINE_string("preset", None, f"A named configuration: {', '.join(PRESETS)}.")
flags.DEFINE_string("dataset", _D.dataset, f"{', '.join(DATASETS)}, or a folder with train/ and test/ of class folders.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (prepared or download target).")
flags.DEFINE_bool("download", _D.download, "Let TFDS download the dataset.")
flags.DEFINE_string("model", _D.model, "resnet20/32/44/56/110, resnet18/34/50, or twoconv.")
flags.DEFINE_string("optimizer", _D.optimizer, "sngm, msgd or lars.")
flags.DEFINE_integer("batch_size", _D.batch_size, "Effective batch size B (examples per parameter update).")
flags.DEFINE_integer("micro_batch_size", None, "Examples per forward/backward pass and replica (default: B / replicas).")
flags.DEFINE_float("learning_rate", _D.learning_rate, "Initial learning rate.")
flags.DEFINE_float("momentum", _D.momentum, "Momentum beta in [0, 1).")
flags.DEFINE_float("weight_decay", _D.weight_decay, "L2 weight decay added to the gradient.")
flags.DEFINE_float("trust_coefficient", _D.trust_coefficient, "LARS trust coefficient eta.")
flags.DEFINE_bool("pytorch_lars", _D.pytorch_lars, "LARS as the pytorch-lars code: every variable adapted and "
                  "decayed, zero-norm variables frozen (default: biases and BatchNorm excluded).")
flags.DEFINE_string("lr_schedule", _D.lr_schedule, "poly, step or constant.")
flags.DEFINE_float("power", _D.power, "Power of the poly schedule.")
flags.DEFINE_list("decay_epochs", list(map(str, _D.decay_epochs)), "Epochs where --lr_schedule=step divides the rate.")
flags.DEFINE_float("decay_factor", _D.decay_factor, "What --lr_schedule=step divides the rate by.")
flags.DEFINE_integer("warmup_epochs", _D.warmup_epochs, "Linear warm-up epochs (poly schedule).")
flags.DEFINE_float("warmup_learning_rate", _D.warmup_learning_rate, "Learning rate the warm-up starts from.")
flags.DEFINE_integer("epochs", _D.epochs, "Epochs to train.")
flags.DEFINE_integer("max_updates", None, "Stop after this many parameter updates.")
flags.DEFINE_string("strategy", _D.strategy, "auto, one_device, mirrored or multi_worker.")
flags.DEFINE_integer("num_cpu_devices", _D.num_cpu_devices, "Split the CPU into N logical devices (for mirrored).")
flags.DEFINE_string("model_dir", None, "Where checkpoints and results go (default runs/<preset or demo>).")
flags.DEFINE_integer("seed", _D.seed, "Seed of initialization, data order and augmentation.")
flags.DEFINE_bool("augment", _D.augment, "Training augmentation.")
flags.DEFINE_bool("deterministic", _D.deterministic, "Deterministic TensorFlow ops (bit-identical resumes).")
flags.DEFINE_bool("jit_compile", _D.jit_compile, "XLA: the whole step on one device, the micro-batch loop under a strategy.")
flags.DEFINE_string("dtype_policy", _D.dtype_policy, "float32, mixed_float16 or mixed_bfloat16.")
flags.DEFINE_integer("eval_every", _D.eval_every, "Evaluate on the test split every N epochs.")
flags.DEFINE_integer("eval_batch_size", _D.eval_batch_size, "Batch size of evaluation.")
flags.DEFINE_integer("validation_size", _D.validation_size,
                     "Hold this many training images out (a fixed random subset) as a validation split.")
flags.DEFINE_integer("validations_per_epoch", _D.validations_per_epoch,
                     "Evaluate the validation split this many times per epoch (validation.csv).")
flags.DEFINE_integer("image_size", None, "ImageNet image size (default 224).")
flags.DEFINE_integer("verbose", None, "Keras progress: 0 silent, 1 a progress bar, 2 a line per epoch "
                     "(default: 1 on a terminal, 2 when the output goes to a file or pipe).", lower_bound=0, upper_bound=2)

FIELDS = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "preset"]



def config_from_flags():
    overrides = {name: FLAGS[name].value for name in FIELDS if FLAGS[name].present}
    if "decay_epochs" in overrides:
        try:
            overrides["decay_epochs"] = tuple(int(e) for e in overrides["decay_epochs"])
        except ValueError:
            fail(f"--decay_epochs: not a list of integers: {','.join(FLAGS.decay_epochs)}")
    if "model_dir" not in overrides:
        overrides["model_dir"] = os.path.join("runs", FLAGS.preset or "demo")
    return TrainConfig.from_preset(FLAGS.preset, **overrides)


def main():
    from sngm_keras.data import DataError
    from sngm_keras.training import ConfigError, train

    try:
        config = config_from_flags().validate()
        summary = train(config)
    except (ConfigError, DataError) as error:
        fail(str(error))
    state = "was already complete" if summary.get("already_complete") else "finished"
    print(
        f"run {state}: test accuracy {summary['test_accuracy']:.4f} (best {summary['best_test_accuracy']:.4f}), "
        f"{summary['updates']} updates, {summary['examples_per_second'] or 0:.0f} examples/s; "
        f"results in {config.model_dir}"
    )


if __name__ == "__main__":
    run(main)
