"""The run's JSON log against its declaration (runlog.RunLog): a well-formed log reads back to what was
written, and a log that is not what the declaration says is refused naming the field. Real runs' logs
are checked against it in tests/test_same_rows.py (image, text, reducer and streaming runs)."""
import copy

import pytest

import runlog

LOG = {"workload": {"dataset": "cifar10"}, "provenance": {"git_commit": "abc"}, "world_size": 1, "workers": 2,
       "examples": 67, "device": "cpu", "layout": "channels_last", "data": "a", "test_data": "b", "csv": "W2.csv",
       "shard_size": 33, "args": {"seed": 1}, "storage": None,
       "epochs": [{"epoch": 1, "phase": "warmup", "train_loss": 2.3, "train_s": 0.5, "tracking_s": 0.01, "epoch_s": 0.6,
                   "test_accuracy": 10.0, "images_per_s": 100.0,
                   "exchange": {"density": 0.01}}],
       "intervals": [{"start_epoch": 3, "epochs": 1, "heuristic_s": 0.001, "partition_sizes": [34, 33],
                      "movement": {"left": [1, 2], "joined": [2, 1], "moved": 3}}],
       "resumed_at_epoch": [], "resume_provenance": [], "total_training_s": 3.0, "tracking_s_per_epoch": 0.01,
       "best_accuracy": 10.0, "best_epoch": 1}


def test_a_log_reads_back_to_what_was_written():
    log = runlog.RunLog.from_json(copy.deepcopy(LOG))
    assert log.epochs[0].figures == {"test_accuracy": 10.0, "images_per_s": 100.0}
    assert log.intervals[0].movement.moved == 3 and log.best == {"best_accuracy": 10.0, "best_epoch": 1}
    assert log.to_json() == LOG


@pytest.mark.parametrize("change,field", [
    (lambda d: d.pop("layout"), "missing ['layout']"),
    (lambda d: d.update(workers="2"), "RunLog.workers: '2' is not int"),
    (lambda d: d["epochs"][0].update(train_loss=None), "Epoch.train_loss: None is not"),
    (lambda d: d["intervals"][0]["movement"].update(moved=1.5), "intervals[0].movement.moved: 1.5 is not int"),
    (lambda d: d.update(color="red"), "unknown fields ['color']"),
    (lambda d: d["epochs"][0].update(test_accuracy="high"), "figures.test_accuracy: 'high' is not float"),
])
def test_a_log_that_is_not_the_declared_shape_is_refused(change, field):
    bad = copy.deepcopy(LOG)
    change(bad)
    with pytest.raises(runlog.LogError, match=field.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        runlog.RunLog.from_json(bad)
