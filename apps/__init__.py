"""The command-line programs. Importing the package (which `python -m apps.X`
does first) defers the library's Keras and TensorFlow imports until the
app's flags are checked, and keeps TensorFlow's native start-up log quiet:
see `_startup`."""

from apps._startup import defer_library_imports

defer_library_imports()
