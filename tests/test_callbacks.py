"""EpochRecorder's training time: evaluations of the validation split are not training."""

import types

import pytest

from sngm_keras.training import callbacks as cb


class _RunDir:
    def save_checkpoint(self, model, state, keep=0):
        self.state = state

    def write_history(self, rows):
        self.rows = rows


def _epoch(clock, monkeypatch, tested, within=2.0, end=3.0):
    """One epoch on a fake clock: 10 s of training (with `within` s of
    validation inside it), a test evaluation (4 s) when `tested`, then the
    validation monitor's epoch-end evaluation (`end` s)."""
    validation = types.SimpleNamespace(epoch_seconds=within, end_seconds=end)
    recorder = cb.EpochRecorder(_RunDir(), [], lambda u: 128 * u, 1280, 0.0, 0.0, validation=validation)
    optimizer = types.SimpleNamespace(iterations=10, learning_rate=0.1)
    recorder.set_model(types.SimpleNamespace(optimizer=optimizer))
    recorder.set_params({"steps": 10})
    monkeypatch.setattr(cb.time, "perf_counter", lambda: clock[0])
    recorder.on_train_begin()
    recorder.on_epoch_begin(0)
    for batch in range(10):
        recorder.on_train_batch_end(batch)
    clock[0] += 10.0
    if tested:
        recorder.on_test_begin()
        clock[0] += 4.0
    clock[0] += end
    recorder.on_epoch_end(0, {"loss": 1.0})
    return recorder


@pytest.mark.parametrize("tested", [True, False])
def test_training_time_leaves_out_every_validation_and_test_evaluation(monkeypatch, tested):
    recorder = _epoch([100.0], monkeypatch, tested)
    assert recorder.train_seconds == pytest.approx(10.0 - 2.0)
    assert recorder.wall_seconds == pytest.approx(10.0 + (4.0 if tested else 0.0) + 3.0)
    assert recorder.rows[0]["grad_per_n"] == pytest.approx(1.0)  # 10 updates x 128 of 1280 examples
    assert recorder.run_dir.state["train_seconds"] == pytest.approx(8.0)


def test_a_second_checkpoint_in_a_resumed_epoch_counts_its_time_once(monkeypatch):
    """Resumed at batch 4 of 10 with 5 s of the epoch's training (and 6 s of
    its wall time) already in the run's totals; 3 s later another checkpoint
    within the epoch: the totals grow by 3 s, the epoch's own time is 8 s."""
    clock = [50.0]
    monkeypatch.setattr(cb.time, "perf_counter", lambda: clock[0])
    resume = {"epoch": 0, "batch": 4, "epoch_train_seconds": 5.0, "epoch_wall_seconds": 6.0}
    run_dir = _RunDir()
    recorder = cb.EpochRecorder(
        run_dir, [], lambda u: 128 * u, 1280, 106.0, 105.0, steps_per_epoch=10, checkpoint_every=6, resume=resume
    )
    optimizer = types.SimpleNamespace(iterations=4, learning_rate=0.1)
    recorder.set_model(types.SimpleNamespace(optimizer=optimizer, metrics=[]))
    recorder.set_params({"steps": 6})
    recorder.on_train_begin()
    recorder.on_epoch_begin(0)
    clock[0] += 3.0
    for update in (5, 6):  # update 6: checkpointed
        optimizer.iterations = update  # as the optimizer counts its updates
        recorder.on_train_batch_end(update - 5)
    state = run_dir.state
    assert (state["epoch"], state["batch"], state["updates"]) == (0, 6, 6)
    assert state["train_seconds"] == pytest.approx(108.0) and state["wall_seconds"] == pytest.approx(109.0)
    assert state["epoch_train_seconds"] == pytest.approx(8.0) and state["epoch_wall_seconds"] == pytest.approx(9.0)
