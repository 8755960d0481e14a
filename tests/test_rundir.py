"""The run folder's claim: the same settings resume, other settings are refused."""

import json

import pytest

from sngm_keras.training import ConfigError, TrainConfig
from sngm_keras.training.rundir import RunDir


def test_a_setting_added_after_a_run_started_counts_at_its_default(tmp_path):
    config = TrainConfig(model_dir=str(tmp_path / "run"))
    run_dir = RunDir(config.model_dir)
    run_dir.claim(config)
    recorded = json.load(open(run_dir.config))
    del recorded["pytorch_lars"], recorded["validation_size"]  # as written before these settings existed
    json.dump(recorded, open(run_dir.config, "w"))
    run_dir.write_history([])  # an epoch was trained: the folder holds a run
    run_dir.claim(config)  # resumes
    with pytest.raises(ConfigError, match="validation_size"):
        run_dir.claim(TrainConfig(model_dir=config.model_dir, validation_size=100))
    with pytest.raises(ConfigError, match="learning_rate"):
        run_dir.claim(TrainConfig(model_dir=config.model_dir, learning_rate=1.0))
