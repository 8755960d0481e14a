"""`ConfigError`, apart from `TrainConfig`: the modules that validate
(config, cluster) raise it without importing each other."""


class ConfigError(ValueError):
    """A bad value of one field; `field` is the flag's name."""

    def __init__(self, field, message):
        super().__init__(f"--{field}: {message}")
        self.field = field
