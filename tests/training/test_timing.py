"""The epoch clock: where a training run's wall time goes."""

from __future__ import annotations


def test_epoch_clock_accounts_for_every_second(monkeypatch):
    import flexunet.training.timing as cb

    ticks = iter([2.0, 3.0, 5.0, 6.0, 6.5, 8.0, 9.0, 10.0])
    monkeypatch.setattr(cb.time, "perf_counter", lambda: next(ticks))
    clock = cb.EpochClock(start=0.0)
    clock.on_epoch_begin(0)        # 2: set-up took 2 s
    clock.on_train_batch_end(0)    # 3
    clock.on_train_batch_end(1)    # 5: steps 2..5
    clock.on_epoch_end(0)          # 6: validation 5..6
    clock.on_epoch_begin(1)        # 6.5: other callbacks' epoch-end work 6..6.5
    clock.on_train_batch_end(0)    # 8: steps 6.5..8
    clock.on_epoch_end(1)          # 9: validation 8..9
    seconds = clock.finish()       # 10: after the last epoch 9..10
    assert seconds == {"before_first_epoch": 2.0, "train_steps": 4.5, "validation": 2.0, "epoch_end": 0.5,
                       "after_last_epoch": 1.0}
    assert "5.5 s of 10.0 s (55%) outside the training steps" in cb.timing_line(seconds)
