"""The arcface_torch presets hold exactly the values docs/recipes.md cites from arcface_torch's configs."""

import os

import pytest

import trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRESETS = ("ms1mv3_r50", "glint360k_r100", "webface42m_r50")


def documented_values() -> dict:
    """{preset: {key: cell}} from the table whose header starts ``| key | ms1mv3_r50 |``."""
    with open(os.path.join(REPO, "docs", "recipes.md"), encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    start = next(i for i, line in enumerate(lines) if line.startswith("| key | ms1mv3_r50 |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    table = {preset: {} for preset in PRESETS}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[-1], f"row {cells[0]} cites no source"
        for preset in PRESETS:
            table[preset][cells[0].strip("`")] = cells[header.index(preset)]
    return table


def configured(cfg, key: str):
    """The preset's value for a table key, in the words the table uses."""
    if key == "eval.bin_files":
        return ", ".join(os.path.splitext(os.path.basename(str(p)))[0] for p in cfg.eval.bin_files)
    if key == "augment.ops":
        return ", ".join(op["name"] for op in cfg.augment.ops)
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def same(value, cell: str) -> bool:
    try:
        return float(value) == float(cell)
    except (TypeError, ValueError):
        return str(value) == cell


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_matches_the_documented_recipe(preset):
    cfg = trainer.compose([f"experiment=arcface_torch_{preset}"])
    table = documented_values()[preset]
    assert len(table) >= 25
    for key, cell in table.items():
        assert same(configured(cfg, key), cell), (preset, key, configured(cfg, key), cell)
    # The global batch is what arcface_torch's GPUs held together.
    assert cfg.trainer.batch_size == cfg.recipe.devices * cfg.recipe.batch_per_device
    assert cfg.loss.name in ("arcface", "cosface") and cfg.loop.name == "supervised"


def test_the_published_numbers_name_each_preset():
    with open(os.path.join(REPO, "docs", "recipes.md"), encoding="utf-8") as f:
        text = f.read()
    for preset in PRESETS:
        assert f"| `arcface_torch_{preset}` |" in text
    with open(os.path.join(REPO, "benchmarks", "arcface_torch_recipes.sh"), encoding="utf-8") as f:
        script = f.read()
    for preset in PRESETS:
        assert f"experiment=arcface_torch_{preset}" in script


@pytest.mark.e2e
def test_the_documented_smoke_command_trains(run_cli, tmp_path):
    """docs/recipes.md's laptop check: the whole ms1mv3_r50 recipe (iresnet50, E neck, Partial FC,
    poly schedule, .bin verification callback) for a few steps at tiny shapes."""
    result = run_cli("experiment=arcface_torch_ms1mv3_r50", "data=memory", "runtime=cpu", "debug=smoke",
                     f"run.dir={tmp_path / 'run'}", timeout=1500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "final verification (heldout)" in result.stdout
    assert (tmp_path / "run" / "export" / "embedding.keras").exists()
