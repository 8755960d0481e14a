"""Stopping a run on request (a signal handler's), after the update in
flight is checkpointed; in a cluster, every worker at the same update. No
Keras import: the apps install the request before Keras loads."""

import threading


class StopRequest:
    """Asks a run to stop at the end of the update in flight (a signal
    handler calls `set`, with its signal number); `EpochRecorder` reads it
    after each update and marks `training` while updates run, so that a
    caller can tell a stop with an update to finish from one before training
    started. `stopped_by`: worker index -> signal number, once a cluster
    agreed to stop (see `AgreedStopRequest`)."""

    def __init__(self):
        self._event = threading.Event()
        self.training = False
        self.signal = None
        self.stopped_by = {}

    def set(self, signum=None):
        self.signal = signum
        self._event.set()

    def is_set(self):
        return self._event.is_set()


class AgreedStopRequest:
    """`local` (a `StopRequest`, or anything with `is_set()`) as every worker
    of a cluster sees it: each `is_set` is one collective in which worker
    `index` of `workers` gives its signal (-1 when set without one), so all
    workers answer alike at the same update and a signal to one stops them
    all; `local.stopped_by` then says which worker had which signal.
    `sum_over_workers`: a list of ints -> its element-wise sum over the
    workers."""

    def __init__(self, local, sum_over_workers, index, workers):
        self.local, self._sum, self._index, self._workers = local, sum_over_workers, index, workers
        self.stopped_by = {}

    @property
    def training(self):
        return getattr(self.local, "training", False)

    @training.setter
    def training(self, value):
        self.local.training = value

    def is_set(self):
        if not self.stopped_by:
            mine = [0] * self._workers
            if self.local.is_set():
                mine[self._index] = getattr(self.local, "signal", None) or -1
            total = self._sum(mine)
            self.stopped_by = {i: int(v) for i, v in enumerate(total) if v}
            if self.stopped_by:
                self.local.stopped_by = self.stopped_by
        return bool(self.stopped_by)


class StopRequested(Exception):
    """Raised out of `fit` once a requested stop has checkpointed its update
    (see `EpochRecorder`); `state` is that checkpoint's. `chief`: False on
    a cluster's other workers, whose checkpoint is the chief's."""

    def __init__(self, state):
        super().__init__(f"stopped after update {state['updates']}")
        self.state = state
        self.chief = True
