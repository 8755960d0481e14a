"""Stopping a run on request (a signal handler's), after the update in
flight is checkpointed. No Keras import: the apps install the request
before Keras loads."""

import threading


class StopRequest:
    """Asks a run to stop at the end of the update in flight (a signal
    handler calls `set`); `EpochRecorder` reads it after each update and
    marks `training` while updates run, so that a caller can tell a stop
    with an update to finish from one before training started."""

    def __init__(self):
        self._event = threading.Event()
        self.training = False

    def set(self):
        self._event.set()

    def is_set(self):
        return self._event.is_set()


class StopRequested(Exception):
    """Raised out of `fit` once a requested stop has checkpointed its update
    (see `EpochRecorder`); `state` is that checkpoint's."""

    def __init__(self, state):
        super().__init__(f"stopped after update {state['updates']}")
        self.state = state
