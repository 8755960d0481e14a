"""Training runs as the apps drive them: configuration, presets, one `train`."""

from sngm_keras.training.config import ConfigError, TrainConfig
from sngm_keras.training.presets import PRESETS
from sngm_keras.training.run import train

__all__ = ["ConfigError", "PRESETS", "TrainConfig", "train"]
