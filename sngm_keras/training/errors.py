"""`ConfigError`, apart from `TrainConfig`: the modules that validate
(config, cluster) raise it without importing each other."""

import contextlib

from sngm_keras.checks import InvalidValue


class ConfigError(ValueError):
    """A bad value of one field; `field` is the flag's name."""

    def __init__(self, field, message):
        super().__init__(f"--{field}: {message}")
        self.field = field


@contextlib.contextmanager
def as_config_errors():
    """Turns a failed check of `sngm_keras.checks` into the ConfigError of
    the flag it names (the checks are named after the flags); usable as a
    decorator too."""
    try:
        yield
    except InvalidValue as error:
        raise ConfigError(error.name, error.requirement) from None
