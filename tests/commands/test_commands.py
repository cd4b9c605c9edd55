"""Every command, discovered from trainer/commands/: one style, one failure contract, no framework for answers.

Each command is run as users run it (``python -m trainer.<command>``) in a subprocess.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import one_error_line

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FRAMEWORKS = ("tensorflow", "keras", "jax")


def discover_commands() -> list[str]:
    """``trainer`` and every ``trainer.<command>`` with a ``main`` under trainer/commands/."""
    root = os.path.join(REPO, "trainer", "commands")
    found = ["trainer"]
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                text = f.read()
            if "def main(" not in text or 'if __name__ == "__main__"' not in text:
                continue
            parts = os.path.relpath(os.path.join(folder, name), root)[:-3].split(os.sep)
            found.append(".".join(["trainer", *(parts[:-1] if parts[-1] == "__main__" else parts)]))
    return found


COMMANDS = discover_commands()
# A misspelt key for each command: its own style is key=value; kubeflow takes its action first.
MISSPELT = {"trainer.kubeflow": ["compile", "zzz_mispelt_key=1"], "trainer.launch": ["processes=2", "zzz_mispelt_key=1"]}


def run(*args, env=None, timeout=300, cwd=None):
    environment = {**os.environ, "PYTHONPATH": REPO, **(env or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env=environment, cwd=cwd or REPO)


def test_the_commands_are_all_found():
    assert {"trainer", "trainer.evaluate", "trainer.export", "trainer.gate", "trainer.list",
            "trainer.bench", "trainer.kubeflow", "trainer.data.convert", "trainer.tools.make_bin",
            "trainer.tools.cross_model", "trainer.tools.show_augment"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_0_and_lists_the_keys(command):
    result = run("-m", command, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    keys = [line for line in result.stdout.splitlines() if "=" in line]
    assert len(keys) >= 3, result.stdout
    assert result.stderr.strip() == ""


@pytest.mark.e2e
@pytest.mark.parametrize("command", COMMANDS)
def test_a_misspelt_key_is_one_error_line_and_exit_2(command, tmp_path):
    result = run("-m", command, *MISSPELT.get(command, ["zzz_mispelt_key=1"]), cwd=tmp_path)
    line = one_error_line(result)
    assert line.startswith("error: ") and "zzz_mispelt_key" in line
    assert os.listdir(tmp_path) == []  # refused before its work started: no folder left behind


@pytest.mark.parametrize("old,new", [("model_path=x.keras", "model="), ("old_model_path=x.keras", "old_model=")])
def test_an_old_spelling_names_the_new_key(old, new):
    line = one_error_line(run("-m", "trainer.evaluate", old))
    assert new in line


# Print the framework modules a command left imported, at exit: a command that failed ends its
# process at once (edge._end_now), running only the exit functions.
PROBE = """
import atexit, json, runpy, sys


def probe():
    loaded = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'jax'})
    sys.__stdout__.write('PROBE ' + json.dumps(loaded) + '\\n')
    sys.__stdout__.flush()


atexit.register(probe)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("arguments", [["trainer", "--help"], ["trainer", "--version"], ["trainer.list"],
                                       ["trainer.list", "data"], ["trainer", "loss=arcfce"],
                                       ["trainer", "loss.margn=0.3"], ["trainer.evaluate", "--help"]])
@pytest.mark.e2e
def test_answers_import_no_framework(arguments):
    run("-m", "trainer.list", "loss")  # the component index made once (it changes with the code)
    started = time.perf_counter()
    result = run("-c", PROBE, *arguments)
    seconds = time.perf_counter() - started
    probe = [line for line in result.stdout.splitlines() if line.startswith("PROBE ")]
    assert probe and json.loads(probe[-1][len("PROBE "):]) == [], result.stdout + result.stderr
    print(f"{' '.join(arguments)}: {seconds:.2f} s")  # README's measured times (not asserted)


def test_version_names_facetrain_and_the_backends():
    result = run("-m", "trainer", "--version")
    assert result.returncode == 0 and result.stdout.startswith("facetrain ")
    assert "tensorflow" in result.stdout and "Hydra" not in result.stdout


def test_list_understands_group_words_and_shows_the_defaults():
    data = run("-m", "trainer.list", "data")
    assert data.returncode == 0, data.stderr
    assert "* synthetic_faces" in data.stdout and "dataset components" in data.stdout
    everything = run("-m", "trainer.list")
    assert "*arcface_small" in everything.stdout and "*synthetic_faces" in everything.stdout
    named = run("-m", "trainer.list", "kind=loss", "pattern=*face*")
    assert "cosface" in named.stdout and "triplet" not in named.stdout


def test_a_bug_is_one_line_naming_the_log_that_holds_the_traceback(tmp_path):
    code = ("import sys\n"
            "import trainer.commands.list as command\n"
            "def broken(kind, pattern):\n"
            "    raise ZeroDivisionError('deep inside')\n"
            "command.listing = broken\n"
            "sys.argv = ['list']\n"
            "sys.exit(command.main())\n")
    result = run("-c", code, env={"FACETRAIN_CACHE": str(tmp_path)})
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "bug" in lines[0] and "Traceback" not in result.stderr, result.stderr
    log = lines[0].rsplit(" ", 1)[-1]
    with open(log, encoding="utf-8") as f:
        text = f.read()
    assert "Traceback" in text and "ZeroDivisionError: deep inside" in text


def test_the_edge_classifies_every_exception():
    from trainer import signals
    from trainer.commands import edge
    from trainer.data.errors import DataError
    from trainer.registry import ConfigError

    def raising(error):
        def body():
            raise error
        return body

    assert edge.run("x", raising(ConfigError("bad key")), process=False) == 2
    assert edge.run("x", raising(DataError("bad file")), process=False) == 2
    assert edge.run("x", raising(KeyboardInterrupt()), process=False) == 130
    assert edge.run("x", raising(signals.Interrupted(15)), process=False) == 143
    assert edge.run("x", raising(RuntimeError("oops")), process=False) == 1
    assert edge.run("x", raising(OSError(30, "Read-only file system", "/ro/run")), process=False) == 2
    assert edge.run("x", raising(OSError(2, "No such file", "/x")), process=False) == 1
    assert edge.run("x", lambda: 0, process=False) == 0


def test_run_folders_have_readable_names():
    from trainer.config import run_dir_name

    assert run_dir_name(None, "") == "default"
    assert run_dir_name("mine", "loss=cosface") == "mine"
    name = run_dir_name(None, "data.path=/tmp/my faces,data=folder")
    assert name.startswith("folder-") and len(name) == len("folder-") + 6
    assert run_dir_name(None, "experiment=simclr,trainer.epochs=3").startswith("simclr-")
    assert run_dir_name(None, "loss=cosface,trainer.epochs=3") != run_dir_name(None, "loss=cosface")


def test_evaluate_with_nothing_to_evaluate_says_what_to_pass(tmp_path, capsys):
    from trainer.commands import evaluate

    model = tmp_path / "elsewhere" / "embedding.keras"  # no run config.yaml beside export/
    model.parent.mkdir()
    model.write_bytes(b"")
    assert evaluate.main([f"model={model}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: nothing to evaluate") and "bin_files=" in err[0]
    assert not (tmp_path / "evaluation").exists()
