"""Start-up timings and the eval.untrained=auto decision (no timed assertions)."""

from types import SimpleNamespace

import keras
import numpy as np
from omegaconf import OmegaConf

from trainer.timings import StartupTimer, should_evaluate_untrained


def job(epochs=12, steps_per_epoch=46, evaluator=object()):
    return SimpleNamespace(epochs=epochs, steps_per_epoch=steps_per_epoch, evaluator=evaluator)


def config(**eval_keys):
    return OmegaConf.create({"trainer": {}, "eval": {"name": "verification", "pairs": 3000,
                                                      "bin_files": [], **eval_keys}})


def test_auto_evaluates_short_jobs_on_small_heldout_sets():
    assert should_evaluate_untrained(config(), job())                        # the default job
    assert not should_evaluate_untrained(config(), job(epochs=20, steps_per_epoch=5000))
    assert not should_evaluate_untrained(config(bin_files=["lfw.bin"]), job())
    assert not should_evaluate_untrained(config(pairs=50_000), job())
    assert not should_evaluate_untrained(config(), job(evaluator=None))


def test_explicit_settings_win():
    long_job = job(epochs=20, steps_per_epoch=5000)
    assert should_evaluate_untrained(config(untrained=True), long_job)
    assert not should_evaluate_untrained(config(untrained=False), job())
    assert not should_evaluate_untrained(config(untrained="false"), job())
    unsaid = OmegaConf.create({"eval": {"name": "verification"}})  # a node without the key: auto
    assert should_evaluate_untrained(unsaid, job()) and not should_evaluate_untrained(unsaid, long_job)


def test_timer_records_every_phase():
    timer = StartupTimer()
    with timer.phase("data"):
        pass
    with timer.phase("untrained_eval"):
        pass
    seen = []
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.ones((8, 2), "float32"), np.ones((8, 1), "float32"), batch_size=2, epochs=1, verbose=0,
              callbacks=[timer.callback(on_first_step=seen.append)])
    found = timer.seconds()
    assert set(found) == {"import_seconds", "data_seconds", "untrained_eval_seconds", "compile_seconds",
                          "first_step_seconds", "to_first_step_seconds"}
    assert all(value >= 0 for value in found.values())
    assert found["to_first_step_seconds"] >= found["import_seconds"]
    assert seen == [timer] and timer.line().startswith("start-up: import ")
