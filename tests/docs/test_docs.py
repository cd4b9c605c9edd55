"""The manual runs: every command and worked example in README.md and docs/*.md, as written.

* Commands: every ``python -m trainer ...`` line composes and passes the same checks the command
  line runs before any work (documented error lines are run and compared word for word); every
  ``python -m <module> ...`` names a module that exists, answers ``--help``, and whose help
  names each option the command passes. A few are run in full here, the README's quick start in
  ``tests/trainer/test_install.py``.
* Worked examples (a paragraph naming a new file, then its code): each document's examples are
  written into a copy of the repository and trained together with ``debug=smoke``; the README's
  loss also goes through the contract harness, and its plugin through a real distribution.
* The README's Python API block runs as written; every Python block compiles.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCUMENTS = ["README.md", *sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))]
FILE_PATH = re.compile(r"`((?:[\w.-]+/)*[\w.-]+\.(?:py|yaml))`")
HELP_FLAGS = {"--multirun", "-m", "--cfg", "job", "--help", "--hydra-help"}


# -- reading the documents ---------------------------------------------------------------------

def code_blocks(text: str):
    """(paragraph before the block, language, code) for fenced and 4-space indented blocks."""
    lines, blocks, i, paragraph, blank_before = text.splitlines(), [], 0, [], False
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            language, body, i = line[3:].strip(), [], i + 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append((" ".join(paragraph), language, "\n".join(body)))
            paragraph, i = [], i + 1
            continue
        if line.startswith("    ") and (i == 0 or not lines[i - 1].strip()) and not paragraph_is_list(paragraph):
            body = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                body.append(lines[i][4:])
                i += 1
            blocks.append((" ".join(paragraph), "", "\n".join(body).strip("\n")))
            paragraph = []
            continue
        if line.strip():  # a blank line ends the paragraph; the next text line starts another
            paragraph = [line.strip()] if blank_before else paragraph + [line.strip()]
        blank_before = not line.strip()
        i += 1
    return blocks


def paragraph_is_list(paragraph) -> bool:
    return bool(paragraph) and paragraph[0].startswith(("- ", "* ", "1. "))


def example_path(paragraph: str, code: str) -> str | None:
    """The new file a block is the content of (never an existing file of the repository)."""
    first = code.splitlines()[0].strip() if code.strip() else ""
    named = re.fullmatch(r"#\s*((?:[\w.-]+/)+[\w.-]+\.(?:py|yaml))", first)
    paths = [named.group(1)] if named else FILE_PATH.findall(paragraph)[-1:]
    if not paths or "/" not in paths[0] or os.path.exists(os.path.join(REPO, paths[0])):
        return None
    return paths[0]


def documented_commands():
    """(document, command line) for every ``python -m`` command in code blocks and code spans."""
    found = []
    for document in DOCUMENTS:
        text = open(os.path.join(REPO, document), encoding="utf-8").read()
        for _, language, code in code_blocks(text):
            if language not in ("", "bash", "sh", "shell", "console"):
                continue
            for line in re.sub(r"\\\n\s*", " ", code).splitlines():
                line = line.strip().removeprefix("$ ")
                if "python -m " in line and not line.startswith(("#", "error:")):
                    found.append((document, line))
        for span in re.findall(r"`(python -m [^`]+)`", text):
            found.append((document, span))
    return found


def command_arguments(line: str):
    """(module, arguments) of a command line, without environment variables and comments."""
    line = line.split("  #")[0].strip()
    line = line[line.index("python -m "):]  # without environment variables set before it
    words = shlex.split(line.replace("...", "DOCS_PLACEHOLDER"))
    if words[:2] != ["python", "-m"] or len(words) < 3:
        return None, []
    return words[2], words[3:]


def examples_of(document: str) -> dict:
    text = open(os.path.join(REPO, document), encoding="utf-8").read()
    files = {}
    for paragraph, _, code in code_blocks(text):
        path = example_path(paragraph, code)
        if path:
            files[path] = code + "\n"
    return files


# -- commands ----------------------------------------------------------------------------------

COMMANDS = documented_commands()
EXAMPLE_NAMES = {"my_margin", "my_preset", "my_net", "center_pull", "my_neck", "posterize_face",
                 "csv_list", "my_pkg.losses.MyLoss", "my_plugin"}


def test_the_documents_have_commands_and_examples():
    assert len(COMMANDS) > 40 and len(TRAINER_COMMANDS) > 25 and len(MODULE_COMMANDS) > 25
    assert {"losses/my_margin.py", "conf/loss/my_margin.yaml", "augment/posterize_face.py",
            "conf/augment/my_preset.yaml", "models/backbones/my_net.py", "loops/center_pull.py",
            "conf/loop/center_pull.yaml"} <= set(examples_of("README.md"))


def trainer_overrides(arguments):
    """The overrides of a ``python -m trainer`` command, first choice of each sweep list."""
    overrides = []
    for argument in arguments:
        if argument in HELP_FLAGS or argument.startswith("-"):
            continue
        key, sep, value = argument.partition("=")
        if not sep:
            overrides.append(argument)
            continue
        if "," in value and not value.startswith("["):
            value = value.split(",")[0]
        overrides.append(f"{key}={value}")
    return overrides


def is_command_shape(line: str) -> bool:
    """``python -m trainer ...``, ``loss=<name>``, ``trainer.<tool>``: how a command looks, not one."""
    module, arguments = command_arguments(line)
    if module != "trainer":
        return "<" in module  # the options of a real module are checked even with <placeholders>
    return any("<" in a or ("DOCS_PLACEHOLDER" in a and "=" not in a) for a in arguments)


def names_an_example(line: str) -> bool:
    """Uses a worked example's component: checked by test_worked_examples_train_together."""
    return any(name in argument for argument in command_arguments(line)[1] for name in EXAMPLE_NAMES)


TRAINER_COMMANDS = [c for c in COMMANDS if command_arguments(c[1])[0] == "trainer"
                    and not is_command_shape(c[1]) and not names_an_example(c[1])]
MODULE_COMMANDS = [c for c in COMMANDS if command_arguments(c[1])[0] not in (None, "trainer", "pip", "pytest")
                   and not is_command_shape(c[1])]


@pytest.mark.parametrize("document, line", TRAINER_COMMANDS,
                         ids=lambda value: value if "/" not in value and len(value) < 60 else None)
def test_trainer_command_composes(document, line):
    from trainer.config import compose
    from trainer.registry import ConfigError

    overrides = trainer_overrides(command_arguments(line)[1])
    documented_error = re.search(r"loss=arcfce|loss\.margn=", line)
    if documented_error:
        with pytest.raises(ConfigError):
            compose(overrides)
        return
    compose(overrides)


@functools.lru_cache(maxsize=None)
def help_text(module: str) -> str:
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, f"python -m {module} --help: {result.stderr[-1500:]}"
    return result.stdout


@pytest.mark.parametrize("document, line", MODULE_COMMANDS,
                         ids=lambda value: value if "/" not in value and len(value) < 60 else None)
def test_module_command_exists_and_knows_its_options(document, line):
    import importlib.util

    module, arguments = command_arguments(line)
    assert importlib.util.find_spec(module) is not None, f"{document}: no module {module}"
    from trainer.config import config_groups

    text = help_text(module)
    groups = set(config_groups())  # group=option overrides, passed through to the config
    for argument in arguments:
        key = argument.partition("=")[0]
        if "=" in argument and "." not in key and key not in groups:
            assert f"{key}=" in text or f"{key}" in text, f"{document}: '{key}=' is not in python -m {module} --help"


def run_python(args, cwd, pythonpath, timeout=600):
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                          env=environment, timeout=timeout)


@pytest.mark.e2e
def test_documented_error_lines_are_what_the_command_prints(tmp_path):
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    pairs = re.findall(r"^\s*\$ (python -m trainer [^\n]+)\n\s*(error: [^\n]+)$", text, re.M)
    assert len(pairs) >= 2
    for command, expected in pairs:
        _, arguments = command_arguments(command)
        result = run_python(["-m", "trainer", *arguments], tmp_path, [REPO])
        assert result.returncode == 2 and result.stderr.strip() == expected, (command, result.stderr)


@pytest.mark.e2e
def test_listing_and_printing_commands_run_as_written(tmp_path):
    listed = run_python(["-m", "trainer.list", "loss", "*face*"], tmp_path, [REPO])
    assert listed.returncode == 0 and "arcface" in listed.stdout and "Traceback" not in listed.stderr
    printed = run_python(["-m", "trainer", "--cfg", "job"], tmp_path, [REPO])
    assert printed.returncode == 0 and "name: arcface" in printed.stdout, printed.stderr[-2000:]


# -- worked examples ---------------------------------------------------------------------------

def repository_copy(tmp_path):
    copy = tmp_path / "facetrain"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(
        ".git", "runs", ".pytest_data", "__pycache__", ".venv", "build", "*.egg-info"))
    return copy


def with_examples(tmp_path, document):
    copy = repository_copy(tmp_path)
    files = examples_of(document)
    for path, code in files.items():
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        (copy / path).write_text(code)
    selections = []
    for path in files:
        parts = path.split("/")
        if parts[0] == "conf" and len(parts) == 3 and parts[1] != "data":
            selections.append(f"{parts[1]}={parts[2][:-5]}")
    return copy, files, selections


@pytest.mark.e2e
@pytest.mark.parametrize("document", [d for d in DOCUMENTS if examples_of(d)])
def test_worked_examples_train_together(document, tmp_path):
    copy, files, selections = with_examples(tmp_path, document)
    for path in files:
        if path.endswith(".py"):
            module = path[:-3].replace("/", ".")
            imported = run_python(["-c", f"import {module}"], tmp_path, [str(copy)])
            assert imported.returncode == 0, f"{document}: {path}: {imported.stderr[-2000:]}"
    if not selections:
        return
    job = run_python(["-m", "trainer", *selections, "debug=smoke", "run.name=examples"], tmp_path,
                     [str(copy)])
    assert job.returncode == 0, f"{document}: {selections}: {(job.stdout + job.stderr)[-3000:]}"
    assert "final verification (heldout)" in job.stdout


@pytest.mark.e2e
def test_readme_loss_passes_the_contract_harness(tmp_path):
    copy, _, _ = with_examples(tmp_path, "README.md")
    result = run_python(["-m", "trainer.testing", "loss=my_margin"], tmp_path, [str(copy)])
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "FAIL" not in result.stdout


@pytest.mark.e2e
def test_readme_plugin_is_a_real_distribution(tmp_path):
    """The README's plugin, built and pip-installed: one registration, listed, trained."""
    readme = examples_of("README.md")
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    (setup_code,) = [code for paragraph, _, code in code_blocks(text) if "`setup.py` of the plugin" in paragraph]
    source = tmp_path / "my-plugin"
    for package in ("my_plugin", "my_plugin/conf", "my_plugin/conf/loss"):
        (source / package).mkdir(parents=True)
        (source / package / "__init__.py").write_text("")
    (source / "setup.py").write_text(setup_code)
    (source / "my_plugin" / "losses.py").write_text(readme["losses/my_margin.py"])
    (source / "my_plugin" / "conf" / "loss" / "my_margin.yaml").write_text(readme["conf/loss/my_margin.yaml"])
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                              "--no-build-isolation", "--target", str(site), str(source)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    listed = run_python(["-m", "trainer.list", "loss"], tmp_path, [str(site), REPO])
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr[-2000:]
    assert re.search(r"^\s+my_margin\b", listed.stdout, re.M), listed.stdout
    job = run_python(["-m", "trainer", "loss=my_margin", "debug=smoke"], tmp_path, [str(site), REPO])
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]


# -- Python blocks -----------------------------------------------------------------------------

@pytest.mark.e2e
def test_readme_python_api_runs_as_written(tmp_path):
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    (api,) = [code for paragraph, _, code in code_blocks(text) if code.startswith("import trainer\n")]
    result = run_python(["-c", api + "\nprint('accuracy', metrics['final']['verification']['accuracy'])"],
                        tmp_path, [REPO])
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert re.search(r"^accuracy 0\.\d+$", result.stdout, re.M)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_python_block_compiles(document):
    text = open(os.path.join(REPO, document), encoding="utf-8").read()
    for paragraph, language, code in code_blocks(text):
        if language == "python" or (language == "" and re.match(r"(import|from) \w", code)):
            compile(code, f"{document}: block after {paragraph[:60]!r}", "exec")
