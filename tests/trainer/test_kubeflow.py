"""The Kubeflow pipeline: its command line, the compiled graph, each step's records, the Vertex AI
TPU job spec, the images, and one end-to-end local run at smoke size (release, then hold)."""

import fnmatch
import json
import os
import types

import pytest

from trainer.commands.kubeflow import steps

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = ["debug=smoke", "logger=none", "callbacks=none"]


def main(argv):
    from trainer.commands.kubeflow.__main__ import main as pipeline_main

    return pipeline_main(argv)


class FakeArtifact:
    """What the steps use of a kfp artifact: path, metadata, log_metric."""

    def __init__(self, path):
        self.path, self.metadata = str(path), {}

    def log_metric(self, key, value):
        self.metadata[key] = value


# -- command line ----------------------------------------------------------------------

def test_help_prints_usage_and_exits_0(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "python -m trainer.kubeflow compile" in out and "run --local" in out and "production_model" in out


@pytest.mark.parametrize("argv, words", [
    ([], "a command is required"),
    (["compil"], "did you mean 'compile'"),
    (["compile", "loss=arcfce"], "did you mean 'arcface'"),
    (["compile", "run.dir=/elsewhere"], "run.dir: the pipeline keeps each run in its own artifact"),
    (["compile", "run.export=false"], "run.export=false"),
    (["compile", "gate.max_splt_rate=0.2"], "did you mean 'max_split_rate'"),
    (["compile", "evaluate.albm=true"], "did you mean 'album'"),
    (["compile", "--multirun"], "unexpected argument '--multirun'"),
    (["run", "debug=smoke"], "only run --local runs here"),
    (["run", "--local", "production_model=/nowhere/prod"], "does not exist"),
    (["run", "--local", "cache=maybe"], "cache=maybe"),
    (["vertex-job", "image=x", "run_dir=/local/folder"], "must be a gs:// folder"),
    (["prepare"], "output= is required"),
])
def test_a_mistake_is_one_error_line_and_exit_status_2(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and words in err, err


# -- the compiled pipeline ---------------------------------------------------------------

def test_compiled_pipeline_runs_the_package_commands_in_the_image_and_exports_only_on_release(tmp_path, capsys):
    pytest.importorskip("kfp")
    yaml = pytest.importorskip("yaml")
    output = tmp_path / "pipeline.yaml"
    assert main(["compile", f"output={output}", "image=registry.example/facetrain:1.2", "loss=cosface",
                 "trainer.epochs=3", "gate.max_split_rate=0.2", "production_model=/models/prod"]) == 0
    assert str(output) in capsys.readouterr().out
    spec = yaml.safe_load(output.read_text())
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 5
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == "registry.example/facetrain:1.2"
        code = " ".join(container["command"] + container.get("args", []))
        assert "pip install" not in code  # the image has the package and kfp
        assert "from trainer.commands.kubeflow import steps" in code
    root = spec["root"]
    inputs = root["inputDefinitions"]["parameters"]
    # The command line's choices are the defaults of parameters a run may change.
    assert inputs["overrides"]["defaultValue"] == ["loss=cosface", "trainer.epochs=3"]
    assert inputs["gate_overrides"]["defaultValue"] == ["gate.max_split_rate=0.2"]
    assert inputs["evaluate_options"]["defaultValue"] == ["album=true"]
    assert inputs["production_model"]["defaultValue"] == "/models/prod"
    tasks = root["dag"]["tasks"]
    assert {"prepare-data", "train", "evaluate", "gate"} <= set(tasks)
    assert set(tasks["train"]["dependentTasks"]) == {"prepare-data"}
    assert set(tasks["gate"]["dependentTasks"]) == {"prepare-data", "train"}
    assert tasks["gate"]["cachingOptions"].get("enableCache", False) is False
    condition = next(t for t in tasks.values() if "triggerPolicy" in t)
    assert condition["triggerPolicy"]["condition"].endswith("['pipelinechannel--gate-Output'] == 'release'")
    inner = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == ["export"]
    assert inner["export"]["cachingOptions"].get("enableCache", False) is False
    # The decision and the gate's records are outputs of the pipeline itself.
    outputs = root["outputDefinitions"]
    assert "decision" in outputs["parameters"]
    assert outputs["artifacts"]["gate_metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    assert outputs["artifacts"]["model"]["artifactType"]["schemaTitle"] == "system.Model"


# -- the steps, without kfp --------------------------------------------------------------

def test_overrides_for_the_later_steps():
    assert steps.quote("/a/b-c_1.d") == "/a/b-c_1.d"
    assert steps.quote("gs://bucket/x") == "gs://bucket/x"
    assert steps.quote("/a b/it's") == "'/a b/it\\'s'"
    assert steps.data_overrides(["data=folder", "data.path=/p", "+data.extra=1", "loss=cosface",
                                 "database.x=1"]) == ["data=folder", "data.path=/p"]
    assert steps.model_file("/r/model") == "/r/model/embedding.keras"
    assert steps.model_file("/r/prod.keras") == "/r/prod.keras"
    assert steps.numbers({"a": {"b": 1, "c": None, "d": True, "e": float("nan")}, "f": 0.5}) == {"a.b": 1.0, "f": 0.5}


def test_without_a_production_model_the_gate_records_why_it_released(tmp_path):
    dataset = FakeArtifact(tmp_path / "dataset")
    os.makedirs(dataset.path)
    (tmp_path / "dataset" / "data.json").write_text(json.dumps({"data_overrides": []}))
    report, metrics, summary = (FakeArtifact(tmp_path / n) for n in ("report", "metrics", "summary.html"))
    decision = steps.gate_step("", [], dataset, FakeArtifact(tmp_path / "model"), report, metrics, summary)
    assert decision == "release"
    recorded = json.loads((tmp_path / "report" / "gate.json").read_text())
    assert recorded["decision"] == "release" and recorded["gate_ran"] is False and recorded["checks"] == []
    assert recorded["reason"].startswith("no production model")
    assert metrics.metadata["release"] == 1.0 and metrics.metadata["decision"] == "release"
    assert json.loads((tmp_path / "metrics").read_text())["release"] == 1.0  # the file as well
    assert report.metadata["production_model"] == "none"
    assert "no production model" in (tmp_path / "summary.html").read_text()


def test_publish_copies_a_release_and_refuses_a_hold(tmp_path):
    model = tmp_path / "embedding.keras"
    model.write_bytes(b"weights")
    gate_json = tmp_path / "gate.json"
    gate_json.write_text(json.dumps({"decision": "hold", "release": False}))
    with pytest.raises(steps.StepFailed, match="only a released model is exported"):
        steps.publish(str(model), str(gate_json), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    gate_json.write_text(json.dumps({"decision": "release", "release": True, "reason": "all checks passed",
                                     "old_model": "/prod/embedding.keras"}))
    record = steps.publish(str(model), str(gate_json), str(tmp_path / "out"))
    assert (tmp_path / "out" / "embedding.keras").read_bytes() == b"weights"
    assert json.loads((tmp_path / "out" / "release.json").read_text()) == record
    assert record["production_model"] == "/prod/embedding.keras"


# -- Vertex AI ---------------------------------------------------------------------------

def test_vertex_job_spec_for_a_preemptible_tpu_training_step(tmp_path, capsys):
    output = tmp_path / "job.json"
    assert main(["vertex-job", f"output={output}", "image=us-docker.pkg.dev/p/r/facetrain-tpu:0.1.0",
                 "run_dir=gs://bucket/runs/r50", "machine_type=ct5lp-hightpu-8t", "timeout_hours=12",
                 "backbone=iresnet50", "neck=e", "data.image_size=112"]) == 0
    spec = json.loads(output.read_text())
    assert set(spec) == {"workerPoolSpecs", "scheduling"}
    (pool,) = spec["workerPoolSpecs"]
    assert pool["machineSpec"] == {"machineType": "ct5lp-hightpu-8t", "tpuTopology": "2x4"}
    assert pool["replicaCount"] == 1
    container = pool["containerSpec"]
    assert container["imageUri"] == "us-docker.pkg.dev/p/r/facetrain-tpu:0.1.0"
    assert container["command"] == ["python", "-m", "trainer"]
    assert container["args"] == ["runtime=tpu", "backbone=iresnet50", "neck=e", "data.image_size=112",
                                 "run.dir=gs://bucket/runs/r50", "trainer.resume=auto"]
    # Preemptible: Spot capacity, and a reclaimed VM restarts the job, which resumes from run.dir.
    assert spec["scheduling"] == {"strategy": "SPOT", "restartJobOnWorkerRestart": True, "timeout": "43200s"}

    from trainer.commands.kubeflow import vertex
    from trainer.registry import ConfigError

    job = vertex.custom_job("r50", vertex.job_spec("img", "gs://b/r", ["loss=cosface"]))
    assert job["displayName"] == "r50" and job["jobSpec"]["workerPoolSpecs"][0]["machineSpec"]["tpuTopology"] == "2x2"
    assert vertex.job_spec("img", "gs://b/r", ["trainer.resume=never"])["workerPoolSpecs"][0][
        "containerSpec"]["args"][-1] == "run.dir=gs://b/r"  # the user's resume choice is kept, not doubled
    for bad, words in ((dict(machine_type="n1-standard-8"), "unknown machine_type"),
                       (dict(strategy="CHEAP"), "strategy=CHEAP"), (dict(overrides=["runtime=gpu"]), "runtime=tpu"),
                       (dict(image=""), "image= is required")):
        arguments = {"image": "img", "run_dir": "gs://b/r", **bad}
        with pytest.raises(ConfigError, match=words):
            vertex.job_spec(**arguments)
    other = vertex.job_spec("img", "gs://b/r", machine_type="ct5p-hightpu-4t", tpu_topology="2x2x1")
    assert other["workerPoolSpecs"][0]["machineSpec"] == {"machineType": "ct5p-hightpu-4t", "tpuTopology": "2x2x1"}


# -- the images --------------------------------------------------------------------------

def test_images_install_the_package_with_its_pipeline_extra():
    dockerfile = open(os.path.join(REPO, "Dockerfile")).read()
    assert 'pip install "/tmp/facetrain-src[pipeline]"' in dockerfile and " -e " not in dockerfile
    assert "docker build -t facetrain:0.1.0 ." in dockerfile  # the tag the components name by default
    tpu = open(os.path.join(REPO, "Dockerfile.tpu")).read()
    assert "tensorflow-tpu==" in tpu and "libtpu" in tpu and "FROM ${BASE}" in tpu
    # Nothing pip needs to build the package is left out of the build context.
    patterns = [line.strip() for line in open(os.path.join(REPO, ".dockerignore"))
                if line.strip() and not line.startswith("#")]
    for needed in ("setup.py", "README.md", "trainer/commands/kubeflow/steps.py", "conf/config.yaml",
                   "conf/gate/default.yaml", "hydra_plugins/facetrain_sweeper/__init__.py"):
        parts = needed.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        assert not any(fnmatch.fnmatch(p, pattern) for p in prefixes for pattern in patterns), needed


# -- end to end --------------------------------------------------------------------------

@pytest.fixture
def untrained_model(tmp_path):
    """An exported, untrained embedding model of the smoke job's architecture: a 'production'
    model whose albums the trained one cannot keep."""
    import trainer
    from trainer.builders import build_embedding_model
    from trainer.export.model_files import export_embedding_model, exportable

    cfg = trainer.compose([*SMOKE, f"run.dir={tmp_path / 'untrained'}"])
    return export_embedding_model(exportable(build_embedding_model(cfg, 32)), str(tmp_path / "untrained"))


@pytest.mark.e2e
def test_local_run_releases_a_first_model_and_holds_an_update_that_breaks_albums(tmp_path, untrained_model, capsys):
    pytest.importorskip("kfp")
    root, release = tmp_path / "kfp", tmp_path / "release"
    common = ["run", "--local", f"pipeline_root={root}", "cache=true", *SMOKE]

    # No production model: the gate records why it released, and the export publishes the model.
    assert main([*common, f"release_dir={release}"]) == 0
    out = capsys.readouterr().out
    assert "gate: RELEASE (no production model" in out
    (first,) = [d for d in root.iterdir() if d.name.startswith("facetrain-")]
    decided = json.loads((first / "gate" / "report" / "gate.json").read_text())
    assert decided["decision"] == "release" and decided["gate_ran"] is False
    assert json.loads((first / "gate" / "metrics").read_text())["release"] == 1.0
    assert (first / "export" / "released" / "embedding.keras").is_file()
    released = json.loads((release / "release.json").read_text())
    assert released["decision"] == "release" and (release / "embedding.keras").is_file()
    trained = json.loads((first / "train" / "metrics").read_text())
    assert 0.0 <= trained["final.verification.accuracy"] <= 1.0
    evaluated = json.loads((first / "evaluate" / "metrics").read_text())
    assert {"album.period1.pairwise_f1", "album.period2_incremental.bcubed_f"} <= set(evaluated)

    # Against an untrained production model: the gate runs and holds; nothing is exported,
    # and the release folder keeps the first release.
    before = (release / "release.json").read_text()
    assert main([*common, f"production_model={untrained_model}", f"release_dir={release}"]) == 1
    out = capsys.readouterr().out
    assert "gate: HOLD (failed: " in out and "released model: none" in out
    (second,) = [d for d in root.iterdir() if d.name.startswith("facetrain-") and d != first]
    decided = json.loads((second / "gate" / "report" / "gate.json").read_text())
    assert decided["decision"] == "hold" and decided["gate_ran"] is True and decided["failed"]
    assert decided["old_model"] == untrained_model
    assert json.loads((second / "gate" / "metrics").read_text())["release"] == 0.0
    assert "HOLD" in (second / "gate" / "summary").read_text()
    assert not (second / "export").exists()
    assert (release / "release.json").read_text() == before


def test_vertex_job_with_several_replicas_runs_one_jax_job_over_the_tpu_hosts():
    from trainer.commands.kubeflow import vertex

    pool = vertex.job_spec("img", "gs://b/r", ["head=partial_fc"], replicas=4)["workerPoolSpecs"][0]
    assert pool["replicaCount"] == 4
    assert pool["containerSpec"]["args"][0] == "runtime=jax"
    assert {"name": "KERAS_BACKEND", "value": "jax"} in pool["containerSpec"]["env"]
