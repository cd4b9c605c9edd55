"""The component index: what built-in components declare, known without importing Keras."""

from trainer import component_index
from trainer.registry import REGISTRIES, accepted_parameters, typed_parameters


def test_the_index_says_what_the_imported_components_say():
    for kind, registry in REGISTRIES.items():
        declared = registry.declared()
        assert declared, kind
        for name, entry in declared.items():
            target = registry.get(name)
            accepted, required, is_open = accepted_parameters(target)
            assert (set(entry["parameters"]), set(entry["required"]), entry["open"]) == \
                (accepted, required, is_open), (kind, name)
            assert {k: tuple(v) for k, v in entry["typed"].items()} == typed_parameters(target), (kind, name)


def test_a_minimum_input_rule_runs_from_its_source_as_it_does_imported():
    backbones = REGISTRIES["backbone"]
    for params in ({}, {"widths": [8, 8]}, {"widths": [8, 8, 8, 8, 8]}):
        rule = backbones.get("tiny").minimum_input_size
        assert backbones.minimum_input_size("tiny", params) == rule(**params)
    assert backbones.minimum_input_size("vit_s", {"patch_size": 16}) == 16


def test_editing_a_component_file_makes_a_new_index(tmp_path, monkeypatch):
    package = tmp_path / "my_components"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "margin.py").write_text("SCALE = 64\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = component_index.fingerprint(["my_components"])
    assert component_index.fingerprint(["my_components"]) == before
    (package / "margin.py").write_text("SCALE = 32.0\n")
    assert component_index.fingerprint(["my_components"]) != before
