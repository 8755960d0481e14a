"""Import a dataset copy you have, with no network, for apps.train.

    # CIFAR-10/100 as the CIFAR site ships them (python or binary version),
    # the archive or its extracted folder (as Keras and PyTorch cache it):
    python -m apps.import_data --source=cifar-10-python.tar.gz --data_dir=~/tfds
    python -m apps.train --dataset=cifar10 --data_dir=~/tfds ...

    python -m apps.import_data --source=~/.keras/datasets/cifar-10-batches-py --output_dir=cifar10_png
    python -m apps.train --dataset=cifar10_png ...

    # A folder of images per class (SRC/<class>/<image>), split into train and test:
    python -m apps.import_data --source=my_images --output_dir=my_dataset --test_fraction=0.2
    python -m apps.train --dataset=my_dataset ...

--data_dir prepares TFDS's cifar10 / cifar100 there, as `--download` would;
--output_dir writes the folder layout --dataset=DIR reads
(DIR/{train,test}/<class>/<image>; CIFAR images as PNG, lossless).
"""

import os
import sys

from absl import flags, logging

from apps._cli import fail, run

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "source", None, "The copy you have: a CIFAR-10/100 archive or folder, or a folder of class folders."
)
flags.DEFINE_string("data_dir", None, "Prepare TFDS's cifar10/cifar100 here (for apps.train --data_dir).")
flags.DEFINE_string("output_dir", None, "Write DIR/{train,test}/<class>/<image> here (for apps.train --dataset=DIR).")
flags.DEFINE_float("test_fraction", 0.1, "A folder of class folders: the part of each class's images kept for test.")
flags.DEFINE_integer("seed", 0, "A folder of class folders: seed of the train/test split.")


def _output_dir_is_new():
    path = os.path.expanduser(FLAGS.output_dir)
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        fail(f"--output_dir: {FLAGS.output_dir} already exists and is not empty; pick a new folder")


def _quiet_tfds():
    """TFDS's log lines (such as a warning that the folder it is about to
    fill has no dataset yet) and progress bars say nothing a user needs here;
    `-v 0` (absl's --verbosity) brings the lines back."""
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)
    if not sys.stderr.isatty():
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()


def main():
    from sngm_keras.data import DataError, cifar_files, importing

    _quiet_tfds()
    if not FLAGS.source:
        fail("--source: required; a CIFAR-10/100 archive or folder, or a folder of class folders")
    if (FLAGS.data_dir is None) == (FLAGS.output_dir is None):
        fail("--data_dir or --output_dir: give exactly one (TFDS's prepared data, or a --dataset folder)")
    source = os.path.expanduser(FLAGS.source)
    if not os.path.exists(source):
        fail(f"--source: {FLAGS.source} not found")
    if FLAGS.output_dir is not None:
        _output_dir_is_new()
    class_folders = os.path.isdir(source) and not cifar_files.is_cifar_copy(source)
    if class_folders:
        if FLAGS.data_dir is not None:
            fail(
                f"--data_dir: {FLAGS.source} is not a CIFAR copy; a folder of class folders becomes a "
                "--dataset folder: pass --output_dir instead"
            )
        if not 0 < FLAGS.test_fraction < 1:
            fail(f"--test_fraction: must be in (0, 1), got {FLAGS.test_fraction}")
        try:
            counts = importing.split_class_folders(source, FLAGS.output_dir, FLAGS.test_fraction, FLAGS.seed)
        except DataError as error:
            fail(f"--source: {error}")
        except OSError as error:
            fail(f"--output_dir: cannot write {FLAGS.output_dir} ({error.strerror or error})")
        print(
            f"{counts['train']} train and {counts['test']} test images in {FLAGS.output_dir}; "
            f"train with: python -m apps.train --dataset={FLAGS.output_dir}"
        )
        return
    try:
        copy = cifar_files.read_cifar(source)
    except DataError as error:
        fail(f"--source: {error}")
    if FLAGS.data_dir is not None:
        try:
            where = importing.prepare_tfds(copy, FLAGS.data_dir)
        except DataError as error:
            fail(f"--data_dir: {error}")
        except OSError as error:
            fail(f"--data_dir: cannot write {FLAGS.data_dir} ({error.strerror or error})")
        hint = f"--dataset={copy.name} --data_dir={FLAGS.data_dir}"
    else:
        try:
            where = importing.write_image_folders(copy.arrays, FLAGS.output_dir)
        except OSError as error:
            fail(f"--output_dir: cannot write {FLAGS.output_dir} ({error.strerror or error})")
        hint = f"--dataset={FLAGS.output_dir}"
    a = copy.arrays
    print(
        f"{copy.name}: {a.num_train} train and {a.num_test} test images in {where}; "
        f"train with: python -m apps.train {hint}"
    )


if __name__ == "__main__":
    run(main)
