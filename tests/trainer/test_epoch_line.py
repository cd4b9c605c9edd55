"""The console's epoch line counts in the run's terms, also for a resumed run's partial ``fit``."""

from trainer.console import make_epoch_line


def test_a_resumed_segment_counts_against_the_runs_epochs(capsys):
    line = make_epoch_line(12)
    line.set_params({"epochs": 7, "steps": 3})  # the segment fit(initial_epoch=6, epochs=7)
    line.on_epoch_begin(6)
    line.on_epoch_end(6, {"loss": 1.5})
    assert capsys.readouterr().out.startswith("epoch 7/12  loss 1.5")


def test_without_a_total_it_reads_keras_params(capsys):
    line = make_epoch_line()
    line.set_params({"epochs": 3})
    line.on_epoch_end(0, {})
    assert capsys.readouterr().out.startswith("epoch 1/3")
