"""The release gate: a model against itself is released, an unrelated one is held; each check
compares the right numbers; mistakes in the command are one line with exit status 2."""

import json

import pytest

import trainer
from trainer.commands import gate

SMOKE = ["debug=smoke", "logger=none", "callbacks=none", "neck.embedding_dim=32"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(trained a few steps, untrained) exported embedding models of the same architecture."""
    from trainer.builders import build_embedding_model
    from trainer.export.model_files import export_embedding_model, exportable
    from trainer.run import train

    root = tmp_path_factory.mktemp("gate_models")
    cfg = trainer.compose([*SMOKE, f"run.dir={root / 'trained'}", "trainer.steps_per_epoch=10"])
    train(cfg)
    untrained = export_embedding_model(exportable(build_embedding_model(cfg, 32)), str(root / "untrained"))
    return str(root / "trained" / "export" / "embedding.keras"), untrained


@pytest.mark.e2e
def test_gate_holds_an_update_that_breaks_albums_and_releases_a_model_against_itself(models, tmp_path, capsys):
    trained, untrained = models
    assert gate.main([f"new_model={trained}", f"old_model={untrained}", f"output={tmp_path / 'hold'}"]) == 1
    report = json.loads((tmp_path / "hold" / "gate.json").read_text())
    assert report["decision"] == "hold" and not report["release"]
    broken = report["model_update"]["breakage_old_to_new"]
    # Two unrelated models sort the same photos into different albums.
    assert max(broken["mixed_rate"], broken["split_rate"], broken["disappeared_rate"]) > 0.1
    assert any(name.startswith("breakage") for name in report["failed"])
    page = (tmp_path / "hold" / "gate.html").read_text()
    assert "HOLD" in page and f"{report['model_update']['verification_old_old']:.4f}" in page
    assert "gate: HOLD" in capsys.readouterr().out

    assert gate.main([f"new_model={trained}", f"old_model={trained}", f"output={tmp_path / 'same'}"]) == 0
    report = json.loads((tmp_path / "same" / "gate.json").read_text())
    assert report["decision"] == "release" and report["failed"] == []
    update = report["model_update"]
    assert update["verification_old_new"] == update["verification_old_old"] == update["verification_new_new"]
    assert (update["breakage_old_to_new"]["mixed"], update["breakage_old_to_new"]["split"],
            update["breakage_old_to_new"]["disappeared"]) == (0, 0, 0)
    assert report["albums"]["old"] == report["albums"]["new"]


def measured(old_accuracy=0.9, new_accuracy=0.9, cross=0.9, f1=(0.8, 0.8), rates=(0.0, 0.0, 0.0)):
    period = {"old": {"pairwise_f1": f1[0], "bcubed_f": f1[0]}, "new": {"pairwise_f1": f1[1], "bcubed_f": f1[1]}}
    return {"albums": {role: {"period2_incremental": period[role]} for role in ("old", "new")},
            "model_update": {"verification_old_old": old_accuracy, "verification_new_new": new_accuracy,
                             "verification_old_new": cross,
                             "breakage_old_to_new": dict(zip(gate.RATES, rates))}}


def limits_config(*overrides):
    """The gate's limits as the command composes them (conf/gate.yaml, gate.<key>=value)."""
    from trainer.commands import command_config

    return gate.gate_config(command_config.parse("gate", [f"gate.{o}" for o in overrides]).gate)


def failed(measurement, **limits):
    return [c["check"] for c in gate.checks(measurement, limits_config(
        *(f"{k}={'null' if v is None else v}" for k, v in limits.items()))) if not c["passed"]]


def test_each_check_against_its_limit():
    assert failed(measured()) == []
    # Verification: new >= old - tolerance, the boundary included.
    assert failed(measured(new_accuracy=0.895), verification_tolerance=0.005) == []
    assert failed(measured(new_accuracy=0.89), verification_tolerance=0.005) == ["verification"]
    assert failed(measured(f1=(0.8, 0.78)), album_tolerance=0.01) == [
        "album pairwise_f1 (period2_incremental)", "album bcubed_f (period2_incremental)"]
    assert failed(measured(rates=(0.0, 0.3, 0.0)), max_split_rate=0.2) == [
        "breakage split_rate (old albums, new model)"]
    assert failed(measured(rates=(0.3, 0.0, 0.0)), max_mixed_rate=0.3) == []
    assert failed(measured(cross=0.6)) == ["cross-model verification (old vs new)"]
    # Embeddings of different sizes cannot be compared: incompatible, unless the check is off.
    assert failed(measured(cross=None)) == ["cross-model verification (old vs new)"]
    assert failed(measured(cross=None), cross_model_tolerance=None) == []
    checks = gate.checks(measured(), limits_config("max_mixed_rate=null"))
    assert [c["skipped"] for c in checks if "mixed" in c["check"]] == [True]


def test_mistakes_are_one_line_with_exit_status_2(tmp_path, capsys):
    model = tmp_path / "m.keras"
    model.write_text("not a model")
    cases = {
        (f"new_model={model}",): "old_model= is required",
        (f"new_model={model}", "old_model=missing.keras"): "old_model=missing.keras does not exist",
        (f"new_model={model}", f"old_model={model}", "gate.max_splt=0.1"): "did you mean 'max_split_rate'",
        (f"new_model={model}", f"old_model={model}", "gate=strict"): "unknown gate 'strict'",
        (f"new_model={model}", f"old_model={model}", "gate.album_period=period3"): "is not one of period1",
        (f"new_model={model}", f"old_model={model}", "treshold=0.5"): "'treshold' is not a key of this command",
        (f"new_model={model}", f"old_model={model}", "verbose"): "'verbose' is not key=value",
    }
    for argv, message in cases.items():
        assert gate.main(list(argv)) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert gate.main(["--help"]) == 0
    assert "python -m trainer.gate new_model=" in capsys.readouterr().out
