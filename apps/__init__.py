"""The command-line programs. Importing the package (which `python -m apps.X`
does first) keeps TensorFlow's native start-up log quiet: see `_native_log`."""

from apps._native_log import quiet_tensorflow_start

quiet_tensorflow_start()
