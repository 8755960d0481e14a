"""One pass over the configuration: the apps' flags derived from TrainConfig's
fields, and a config validated once on its way from the flags to `fit`."""

import dataclasses
import json
import subprocess
import sys

import pytest

from sngm_keras.training.config import TrainConfig, help_of
from tests.helpers import ROOT

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


def _flags_of(module):
    """{name: (default, help)} of the flags `module` lists as its own, from a fresh process."""
    code = (
        "import importlib, json, sys; from absl import flags; "
        f"m = importlib.import_module({module!r}); "
        "own = flags.FLAGS.get_key_flags_for_module(m.__name__); "
        "print(json.dumps({f.name: [f.default, f.help] for f in own}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def test_every_field_has_its_flags_help():
    for name in FIELDS:
        assert help_of(name).endswith(".") and len(help_of(name)) > 10, name


def test_train_declares_a_flag_per_field_with_the_fields_default_and_help():
    own = _flags_of("apps.train")
    assert set(own) == set(FIELDS) | {"model_defaults"}
    for name in ("batch_size", "learning_rate", "noise_scale", "checkpoint_every", "decay_epochs"):
        default = TrainConfig.__dataclass_fields__[name].default
        expected = [str(e) for e in default] if isinstance(default, tuple) else default
        assert own[name] == [expected, help_of(name)], name
    assert own["model_dir"][0] is None  # the settings' folder, not the field's runs/demo
    assert own["model"][1].startswith(help_of("model") + " Without --preset")


@pytest.mark.parametrize(
    "module, shared",
    [
        ("apps.tune", ("dataset", "data_dir", "download", "model", "optimizer", "micro_batch_size", "augment")),
        ("apps.reproduce", ("data_dir", "download", "dataset", "max_updates", "strategy", "jit_compile")),
    ],
)
def test_the_other_apps_share_the_fields_help(module, shared):
    own = _flags_of(module)
    for name in shared:
        assert own[name][1].startswith(help_of(name)), (module, name)
    if module == "apps.reproduce":  # passed to the runs only when given
        assert all(own[name][0] is None for name in shared)


def test_a_config_is_frozen_and_a_changed_copy_is_validated_again(tmp_path):
    config = TrainConfig(model_dir=str(tmp_path / "run")).validate()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 7
    changed = dataclasses.replace(config, batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        changed.validate()


COUNTING_RUN = """
import sys
from apps import train
from sngm_keras.training import cluster, config
counts = {"checks": 0, "describe": 0}
check, describe = config.TrainConfig._check, cluster.describe
def counted_check(self):
    counts["checks"] += 1
    return check(self)
def counted_describe(*args, **kwargs):
    counts["describe"] += 1
    return describe(*args, **kwargs)
config.TrainConfig._check = counted_check
cluster.describe = counted_describe
from apps import _cli
argv = _cli.parse_flags(["apps.train", *sys.argv[1:]])
_cli.call_main(train.main, argv)
print("COUNTS", counts["checks"], counts["describe"])
"""


def test_a_config_from_the_flags_to_fit_is_validated_and_its_cluster_described_once(tmp_path):
    args = ["--dataset=sample", "--model=twoconv", "--batch_size=100", "--epochs=1", "--max_updates=2"]
    done = subprocess.run(
        [sys.executable, "-c", COUNTING_RUN, *args, f"--model_dir={tmp_path / 'run'}", "--verbose=0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "summary.json").exists()
    assert done.stdout.splitlines()[-1] == "COUNTS 1 1"
