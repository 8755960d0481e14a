"""Image folders streamed from their files (sngm_keras.data.folder_stream):
images of any sizes and modes, ImageNet's crops, the same batches across a
resume and across replicas, and the messy files of real folders."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sngm_keras import data
from sngm_keras.data import DataError, constants, crops, folder_listing, make_datasets, progress
from sngm_keras.data.folder_listing import list_folder
from sngm_keras.training import ConfigError, TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLOR = (200, 100, 50)
GRAY = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)  # Pillow's (ITU-R 601-2) luma of COLOR


def _save(image, path):
    image.save(path, quality=95) if path.suffix == ".jpg" else image.save(path)


def make_folder(root, per_class=6, test_per_class=2, classes=("cat", "dog"), seed=0):
    """Noise images of sizes from 20 to 80 pixels a side, as JPEG (RGB,
    grayscale, CMYK) and PNG (RGB, RGBA, palette, grayscale with alpha)."""
    rng = np.random.default_rng(seed)
    kinds = [("RGB", ".jpg"), ("L", ".jpg"), ("CMYK", ".jpg"), ("RGBA", ".png"), ("P", ".png"), ("LA", ".png")]
    for split, count in (("train", per_class), ("test", test_per_class)):
        for cls in classes:
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                height, width = rng.integers(20, 81, 2)
                mode, suffix = kinds[i % len(kinds)]
                noise = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
                _save(noise.convert(mode), folder / f"{i:03d}{suffix}")
    return root


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def _denormalize(images):
    mean, std = (np.array(v) for v in constants.NORMALIZATION[constants.IMAGENET])
    return (images * std + mean) * 255


def test_mixed_sizes_and_modes_stream_as_rgb_squares(tmp_path):
    root = make_folder(tmp_path / "images")
    (root / "train" / "cat" / "README.txt").write_text("not an image")
    (root / "train" / "dog" / ".DS_Store").write_bytes(b"\0\1")
    lines = []
    with progress.reported_to(lambda what, total: lines.append(what) or (lambda n: None)):
        train, test, info = make_datasets(str(root), batch_size=4, num_epochs=1, image_size=24, seed=3)
    assert any("2 file(s) that are not images" in line for line in lines), lines
    assert info.streamed and info.image_shape == (24, 24, 3)
    assert (info.num_train, info.num_test, info.class_names) == (12, 4, ("cat", "dog"))
    batches = _batches(train)
    assert len(batches) == 3
    for images, labels in batches:
        assert images.shape == (4, 24, 24, 3) and images.dtype == np.float32
        pixels = _denormalize(images)
        # Noise images, normalized with ImageNet's statistics: back to the full 0-255 range.
        assert -0.01 < pixels.min() < 40 and 215 < pixels.max() < 255.01, (pixels.min(), pixels.max())
        assert set(labels) <= {0, 1}
    assert sorted(np.concatenate([y for _, y in batches])) == [0] * 6 + [1] * 6  # each image once an epoch
    ((images, labels),) = _batches(test.unbatch().batch(4))
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])  # the test split in order


@pytest.mark.parametrize(
    "mode, suffix, expected",
    [("RGB", ".jpg", COLOR), ("L", ".jpg", (GRAY,) * 3), ("CMYK", ".jpg", COLOR), ("RGBA", ".png", COLOR),
     ("P", ".png", COLOR), ("LA", ".png", (GRAY,) * 3), ("RGB", ".gif", COLOR)],
)  # fmt: skip
def test_every_mode_becomes_the_rgb_that_pillow_sees(tmp_path, mode, suffix, expected):
    for split in ("train", "test"):
        for cls, size in (("a", (40, 30)), ("b", (50, 70))):
            (tmp_path / split / cls).mkdir(parents=True)
            image = Image.new("RGB", size, COLOR)
            image = image.convert(mode, palette=Image.Palette.ADAPTIVE) if mode == "P" else image.convert(mode)
            if mode == "RGBA":
                image.putalpha(40)  # the alpha channel is dropped, not blended
            _save(image, tmp_path / split / cls / f"x{suffix}")
    train, test, _ = make_datasets(str(tmp_path), batch_size=2, num_epochs=1, image_size=16, augment=True)
    for images, _ in [*_batches(train), *_batches(test)]:
        pixels = _denormalize(images).reshape(-1, 3)
        tolerance = 3 if suffix == ".jpg" else 1.5 if suffix == ".gif" else 0.01  # JPEG, GIF's palette
        np.testing.assert_allclose(pixels, np.broadcast_to(expected, pixels.shape), atol=tolerance)
    pil = np.asarray(Image.open(next((tmp_path / "test" / "a").iterdir())).convert("RGB"))
    np.testing.assert_allclose(pil.reshape(-1, 3).mean(0), expected, atol=tolerance)


def test_random_resized_crops_cover_the_reference_ranges():
    shape = tf.constant([300, 400, 3])
    keys = tf.random.experimental.stateless_split(tf.constant([7, 11], tf.int64), 3000)
    windows = np.stack([crops.crop_window(tf, shape, key).numpy() for key in keys])
    top, left, height, width = windows.T
    assert (top >= 0).all() and (left >= 0).all() and (top + height <= 300).all() and (left + width <= 400).all()
    area, ratio = height * width / (300 * 400), width / height
    fallback = area == 1.0  # no window fitted in 10 attempts: the whole image
    assert fallback.mean() < 0.05
    assert area.min() >= 0.08 - 0.005 and area[~fallback].max() <= 1.0
    assert ratio[~fallback].min() >= 0.75 - 0.02 and ratio[~fallback].max() <= 4 / 3 + 0.02
    # Spread over the ranges. TensorFlow's sampler (TF Model Garden's crop) draws the crop's side uniformly, not
    # its area (torchvision), and large windows of a ratio far from the image's do not fit: a mean area of 0.37.
    assert area.min() < 0.1 and area.max() > 0.95 and 0.3 < area.mean() < 0.45, (area.min(), area.max(), area.mean())
    assert ratio[~fallback].min() < 0.78 and ratio[~fallback].max() > 1.3
    quarters = np.histogram(area, bins=4, range=(0.08, 1.0))[0]
    assert quarters.min() > 60 and (np.diff(quarters) < 0).all(), quarters  # every quarter drawn, smaller ones more
    again = crops.crop_window(tf, shape, keys[5]).numpy()
    np.testing.assert_array_equal(again, windows[5])  # a function of the key


def _stream(root, **kw):
    args = dict(batch_size=6, num_epochs=3, image_size=16, seed=5, epoch_multiple=2)
    args.update(kw)
    return make_datasets(str(root), **args)


def test_a_resume_sees_the_same_batches_at_an_epoch_and_within_one(tmp_path):
    root = make_folder(tmp_path / "images", per_class=8)  # 16 images: batches of 6, 6, 4 per epoch
    full = _batches(_stream(root)[0])
    assert [len(y) for _, y in full] == [6, 6, 4] * 3
    assert not np.array_equal(full[0][0], full[3][0])  # epochs differ
    for start_epoch, start_batch in ((1, 0), (1, 2), (2, 1)):
        num_epochs = start_epoch + 1 if start_batch else 3
        resumed = _batches(_stream(root, start_epoch=start_epoch, start_batch=start_batch, num_epochs=num_epochs)[0])
        expected = full[start_epoch * 3 + start_batch : num_epochs * 3]
        assert len(resumed) == len(expected)
        for (x, y), (x0, y0) in zip(resumed, expected):
            np.testing.assert_array_equal(x, x0)
            np.testing.assert_array_equal(y, y0)
    other_seed = _batches(_stream(root, seed=6, num_epochs=1)[0])
    assert not np.array_equal(other_seed[0][0], full[0][0])


def test_shares_and_replica_batches_are_the_rows_of_one_batch(tmp_path):
    root = make_folder(tmp_path / "images", per_class=8)
    whole = _batches(_stream(root, batch_size=8, epoch_multiple=4, num_epochs=2)[0])  # 8, 8 per epoch
    whole += _batches(_stream(root, batch_size=12, epoch_multiple=4, num_epochs=1)[0])  # 12, 4: a smaller last
    shared = [
        _batches(_stream(root, batch_size=8, epoch_multiple=4, num_epochs=2, share=(p, 2), feed=feed)[0])
        for p, feed in ((0, "tf.data"), (1, "pydataset"))
    ]
    replicas = _batches(_stream(root, batch_size=12, epoch_multiple=4, num_epochs=1, replica_batches=2)[0])
    assert [len(y) for _, y in replicas] == [6, 6, 2, 2]
    for i, (x, y) in enumerate(whole[:4]):
        np.testing.assert_array_equal(np.concatenate([shared[0][i][0], shared[1][i][0]]), x)
        np.testing.assert_array_equal(np.concatenate([shared[0][i][1], shared[1][i][1]]), y)
    for i, (x, y) in enumerate(whole[4:]):
        np.testing.assert_array_equal(np.concatenate([replicas[2 * i][0], replicas[2 * i + 1][0]]), x)
        np.testing.assert_array_equal(np.concatenate([replicas[2 * i][1], replicas[2 * i + 1][1]]), y)
    shared_last = [
        _batches(_stream(root, batch_size=12, epoch_multiple=4, num_epochs=1, share=(p, 2))[0]) for p in (0, 1)
    ]
    assert [len(y) for _, y in shared_last[1]] == [6, 2]
    for i, (x, y) in enumerate(whole[4:]):
        np.testing.assert_array_equal(np.concatenate([shared_last[0][i][0], shared_last[1][i][0]]), x)
        np.testing.assert_array_equal(np.concatenate([shared_last[0][i][1], shared_last[1][i][1]]), y)
    with pytest.raises(DataError, match="do not split into 3 equal parts"):
        _stream(root, batch_size=8, epoch_multiple=4, share=(0, 3))


def test_one_size_stays_in_memory_unless_streaming_is_asked(tmp_path):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (12, 12), (i * 60, 0, 0)).save(tmp_path / split / cls / f"{i}.png")
    kept = make_datasets(str(tmp_path), batch_size=4, num_epochs=1)
    assert not kept[2].streamed and kept[2].image_shape == (12, 12, 3)
    assert not make_datasets(str(tmp_path), batch_size=4, num_epochs=1, image_size=12)[2].streamed
    streamed = make_datasets(str(tmp_path), batch_size=4, num_epochs=1, stream=True)
    assert streamed[2].streamed and streamed[2].image_shape == (12, 12, 3)
    resized = make_datasets(str(tmp_path), batch_size=4, num_epochs=1, image_size=20)
    assert resized[2].streamed and next(iter(resized[0]))[0].shape == (4, 20, 20, 3)


def test_bad_files_are_named_or_left_out_when_asked(tmp_path):
    root = make_folder(tmp_path / "images")
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    (root / "test" / "cat" / "empty.png").write_bytes(b"")
    with pytest.raises(DataError) as error:
        make_datasets(str(root), batch_size=4, num_epochs=1, image_size=16)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"2 file(s) in {root} do not decode as images")
    assert "broken.jpg" in message and "empty.png" in message and "--skip_bad_images" in message
    lines = []
    with progress.reported_to(lambda what, total: lines.append(what) or (lambda n: None)):
        info = make_datasets(str(root), batch_size=4, num_epochs=1, image_size=16, skip_bad_images=True)[2]
    assert (info.num_train, info.num_test) == (12, 4)
    assert any("2 file(s) that do not decode left out" in line and "broken.jpg" in line for line in lines), lines
    tiff = make_folder(tmp_path / "tiff")
    Image.new("RGB", (30, 40)).save(tiff / "train" / "cat" / "scan.tif")
    with pytest.raises(DataError, match=r"1 image\(s\) in .* TensorFlow's decoders do not read, e\.g\. .*scan\.tif"):
        make_datasets(str(tiff), batch_size=4, num_epochs=1, image_size=16)


def test_files_cut_short_are_named_before_training_as_tensorflow_would_fail_on_them(tmp_path, monkeypatch):
    """A JPEG without its end marker, or a PNG without its IEND chunk (which
    Pillow still decodes), fails in TensorFlow's decoders mid-epoch; the
    listing names them first. Data after the marker is a valid file."""
    root = make_folder(tmp_path / "images")
    folder = root / "train" / "dog"
    whole = {p.suffix: p.read_bytes() for p in sorted(folder.iterdir(), reverse=True)}  # 000.jpg: RGB
    thumbnail = b"Exif\0\0\xff\xd8 a thumbnail \xff\xd9"  # an APP1 segment holding an end marker of its own
    app1 = b"\xff\xe1" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail
    with_thumbnail = whole[".jpg"][:2] + app1 + whole[".jpg"][2:]
    cut = {
        "no_eoi.jpg": whole[".jpg"][:-2],
        "thumbnail_no_eoi.jpg": with_thumbnail[:-2],
        "half.jpg": whole[".jpg"][: len(whole[".jpg"]) // 2],
        "no_iend.png": whole[".png"][:-12],
    }
    kept = {
        "thumbnail.jpg": with_thumbnail,
        "trailer.jpg": whole[".jpg"] + b"camera trailer" * 40,
        "padded.png": whole[".png"] + b"\0" * 100,
        "trailer.png": whole[".png"] + b"a trailer" * 10,
    }
    for name, content in {**cut, **kept}.items():
        (folder / name).write_bytes(content)
    for content in cut.values():
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf.io.decode_image(content, channels=3)
    for content in kept.values():
        assert tf.io.decode_image(content, channels=3).shape[-1] == 3
    with pytest.raises(DataError) as error:
        make_datasets(str(root), batch_size=4, num_epochs=1, image_size=16)
    message = str(error.value)
    assert message.startswith(f"4 file(s) in {root} do not decode as images") and "\n" not in message
    for name, fmt in (("half.jpg", "JPEG"), ("no_eoi.jpg", "JPEG"), ("no_iend.png", "PNG")):  # the first three
        assert f"{folder / name}: cut short, the {fmt} data ends before its end marker" in message
    assert message.count("cut short") == 3 and " and 1 more;" in message
    # Files read whole with their header; their ends read apart; JPEG headers
    # past the bytes read, so that Pillow reads them (100 bytes hold no SOF).
    assert folder_listing._header_size(cut["no_eoi.jpg"][:100]) is None
    for head in (folder_listing._HEAD, 1024, 100):
        monkeypatch.setattr(folder_listing, "_HEAD", head)
        list_folder.cache_clear()
        skipped = list_folder(root, "images", skip_bad_images=True).skipped
        assert [os.path.basename(line.split(":")[0]) for line in skipped] == sorted(cut)
        assert all(": cut short, the " in line for line in skipped), skipped
    list_folder.cache_clear()
    info = make_datasets(str(root), batch_size=4, num_epochs=1, image_size=16, skip_bad_images=True)[2]
    assert (info.num_train, info.num_test) == (16, 4)


def test_folder_layout_mistakes_are_one_line_each(tmp_path):
    def error_of(root, **kw):
        list_folder.cache_clear()
        with pytest.raises(DataError) as error:
            make_datasets(str(root), **{"batch_size": 2, "num_epochs": 1, "image_size": 16, **kw})
        assert "\n" not in str(error.value)
        return str(error.value)

    root = make_folder(tmp_path / "a", classes=("cat", "dog", "fox"))
    for image in (root / "test" / "fox").iterdir():
        image.unlink()
    (root / "test" / "fox").rmdir()
    assert error_of(root).startswith(f"class folder fox of {root}/train is missing from {root}/test")
    (root / "test" / "fox").mkdir()
    (root / "test" / "fox" / "notes.txt").write_text("")
    assert error_of(root).startswith(f"class folder {root}/test/fox holds no images")
    # ImageNet's validation folder as distributed: flat, labels elsewhere.
    imagenet = make_folder(tmp_path / "b")
    imagenet.joinpath("test").rename(imagenet / "val")
    for i, image in enumerate(sorted((imagenet / "val").rglob("*.*"))):
        image.rename(imagenet / "val" / f"ILSVRC2012_val_{i:08d}{image.suffix}")
    for cls in ("cat", "dog"):
        (imagenet / "val" / cls).rmdir()
    message = error_of(imagenet)
    assert message.startswith(f"{imagenet}/val holds 4 images directly, not in class folders")
    assert "ImageNet's validation folder as distributed" in message and "val/<class>/" in message
    # val/ arranged in class folders is the test split.
    for image in sorted((imagenet / "val").iterdir()):
        cls = "cat" if int(image.stem[-1]) < 2 else "dog"
        (imagenet / "val" / cls).mkdir(exist_ok=True)
        image.rename(imagenet / "val" / cls / image.name)
    list_folder.cache_clear()
    assert make_datasets(str(imagenet), batch_size=2, num_epochs=1, image_size=16)[2].num_test == 4
    # Images of different sizes with no size to stream them at.
    assert error_of(imagenet, image_size=None).startswith(f"images in {imagenet}/train have different sizes (")
    assert "validation_size" in error_of(imagenet, validation_size=2)


def test_the_config_takes_image_size_and_stream_for_folders(tmp_path):
    root = make_folder(tmp_path / "images")
    config = TrainConfig(dataset=str(root), image_size=64, stream=True, model_dir=str(tmp_path / "run")).validate()
    assert "image_size" not in config.ignored_fields() and "stream" not in config.ignored_fields()
    with pytest.raises(ConfigError, match="--image_size: applies to --dataset=imagenet2012 and image folders only"):
        TrainConfig(dataset="sample", image_size=64, model_dir=str(tmp_path / "run")).validate()
    with pytest.raises(ConfigError, match="--stream: applies to image folders"):
        TrainConfig(dataset="cifar10", stream=True, model_dir=str(tmp_path / "run")).validate()
    assert (
        TrainConfig(dataset="sample").settings_digest() != TrainConfig(dataset="sample", stream=True).settings_digest()
    )


def test_the_resized_folder_tool_keeps_splits_and_classes_at_random_sizes(tmp_path):
    from tools.make_resized_folder import write_resized

    images = np.random.default_rng(1).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    images[0] = (10, 200, 90)
    arrays = data.ArraySplits(
        x_train=images[:8],
        y_train=np.array([0, 1] * 4, np.int32),
        x_test=images[8:],
        y_test=np.array([1, 0], np.int32),
        num_classes=2,
        class_names=("ant", "bee"),
        image_shape=(32, 32, 3),
    )
    sizes = write_resized(arrays, tmp_path / "mixed", 32, 96, seed=2)
    listing = list_folder(tmp_path / "mixed", "mixed")
    assert listing.class_names == ("ant", "bee") and (len(listing.train), len(listing.test)) == (8, 2)
    assert sorted(listing.train.labels) == [0] * 4 + [1] * 4 and set(listing.train.formats) == {"JPEG"}
    sides = np.concatenate([listing.train.sizes, listing.test.sizes])
    assert sides.min() >= 32 and sides.max() <= 96 and len({tuple(s) for s in sides}) > 5
    assert sorted((w, h) for h, w in listing.train.sizes) == sorted(sizes["train"])
    first = Image.open(tmp_path / "mixed" / "train" / "ant" / "00000.jpg")
    assert first.size == sizes["train"][0]
    # Resized, not replaced: the first image's colour survives the resize (and JPEG).
    np.testing.assert_allclose(np.asarray(first.convert("RGB")).mean((0, 1)), (10, 200, 90), atol=4)


def _app(*args):
    command = [sys.executable, "-m", "apps.train", *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _small_run(root, model_dir, *extra):
    return _app(
        f"--dataset={root}",
        "--model=twoconv",
        "--batch_size=8",
        "--micro_batch_size=4",
        "--eval_batch_size=4",
        "--epochs=1",
        "--verbose=0",
        f"--model_dir={model_dir}",
        *extra,
    )


def test_the_app_trains_on_a_folder_of_mixed_sizes(tmp_path):
    root = make_folder(tmp_path / "images", per_class=8)
    refused = _small_run(root, tmp_path / "refused")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert (
        refused.stderr.strip().splitlines()[-1].startswith(f"error: images in {root}/train have different sizes (")
    ), refused.stderr[-2000:]
    assert not (tmp_path / "refused").exists()
    result = _small_run(root, tmp_path / "run", "--image_size=16")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"listing {root}: 20 images in 2 classes" in result.stdout
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["updates"] == 2 and summary["num_train"] == 16 and summary["num_test"] == 4
    net = keras.models.load_model(tmp_path / "run" / "final.keras")
    assert net.input_shape == (None, 16, 16, 3)


@pytest.mark.slow
def test_two_replicas_train_as_one_device_on_a_streamed_folder(tmp_path):
    root = make_folder(tmp_path / "images", per_class=8)
    runs = {
        "one": _small_run(root, tmp_path / "one", "--image_size=16", "--strategy=one_device"),
        "two": _small_run(root, tmp_path / "two", "--image_size=16", "--strategy=mirrored", "--num_cpu_devices=2"),
    }
    for name, result in runs.items():
        assert result.returncode == 0, (name, result.stderr[-3000:])
    summaries = {name: json.load(open(tmp_path / name / "summary.json")) for name in runs}
    assert summaries["two"]["replicas"] == 2 and summaries["one"]["replicas"] == 1
    weights = {name: keras.models.load_model(tmp_path / name / "final.keras").get_weights() for name in runs}
    for one, two in zip(weights["one"], weights["two"]):
        np.testing.assert_allclose(one, two, rtol=1e-4, atol=1e-5)  # the same batches, split over two replicas
    assert summaries["one"]["test_accuracy"] == pytest.approx(summaries["two"]["test_accuracy"])


@pytest.mark.slow
def test_jax_trains_from_the_same_streamed_pipeline(tmp_path):
    root = make_folder(tmp_path / "images", per_class=8)
    command = [sys.executable, "-m", "apps.train", f"--dataset={root}", "--model=twoconv", "--image_size=16"]
    command += ["--batch_size=8", "--micro_batch_size=4", "--eval_batch_size=4", "--epochs=1", "--verbose=0"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, KERAS_BACKEND="jax")
    result = subprocess.run(
        [*command, f"--model_dir={tmp_path / 'run'}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["updates"] == 2 and summary["num_train"] == 16 and "jax" in json.dumps(summary).lower()
