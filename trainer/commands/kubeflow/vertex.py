"""The Vertex AI CustomJob spec for a preemptible (Spot) TPU training step, as plain JSON.

    python -m trainer.kubeflow vertex-job output=job.json image=<registry>/facetrain-tpu:0.1.0 \\
        run_dir=gs://bucket/runs/r50 machine_type=ct5lp-hightpu-4t backbone=iresnet50 ...
    gcloud ai custom-jobs create --region=us-central1 --display-name=r50 --config=job.json

The file is the ``jobSpec`` of a CustomJob (what ``gcloud ... --config`` takes);
``custom_job`` wraps it with a display name for the REST API. No Google Cloud SDK is
needed to write it. Preemption: a Spot VM that is reclaimed restarts the job
(``restartJobOnWorkerRestart``) with the same command, and the trainer resumes from
the last checkpoint in ``run.dir`` (``trainer.resume=auto``), so ``run_dir`` must be on GCS.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainer.registry import ConfigError, did_you_mean

# Single-host Cloud TPU machine types on Vertex AI and their chip topology: the trainer's
# runtime=tpu drives the chips of one host (TPUStrategy, tpu=local).
TPU_MACHINES = {
    "ct5lp-hightpu-1t": "1x1",  # TPU v5e, 1 chip
    "ct5lp-hightpu-4t": "2x2",  # TPU v5e, 4 chips
    "ct5lp-hightpu-8t": "2x4",  # TPU v5e, 8 chips
    "ct6e-standard-1t": "1x1",  # TPU v6e (Trillium), 1 chip
    "ct6e-standard-4t": "2x2",
    "ct6e-standard-8t": "2x4",
    "ct4p-hightpu-4t": "2x2x1",  # TPU v4, 4 chips
}
DEFAULT_MACHINE = "ct5lp-hightpu-4t"
STRATEGIES = ("SPOT", "STANDARD", "FLEX_START")


def job_spec(image: str, run_dir: str, overrides: Sequence[str] = (), machine_type: str = DEFAULT_MACHINE,
             tpu_topology: str | None = None, strategy: str = "SPOT", timeout_hours: float = 72,
             boot_disk_gb: int = 100, env: dict | None = None, replicas: int = 1) -> dict:
    """The CustomJob ``jobSpec``: one TPU worker running ``python -m trainer runtime=tpu ...``.

    ``replicas`` > 1: that many TPU hosts (a multi-host slice) run one JAX job
    (``KERAS_BACKEND=jax runtime=jax``; each process finds the others from the TPU
    environment, ``trainer.processes``).
    """
    from trainer.commands.kubeflow.steps import check_training_overrides, override_key, quote

    if not image:
        raise ConfigError("image= is required: the TPU image pushed to a registry Vertex AI can read, "
                          "e.g. us-docker.pkg.dev/PROJECT/REPO/facetrain-tpu:0.1.0 (Dockerfile.tpu)")
    if not str(run_dir).startswith("gs://"):
        raise ConfigError(f"run_dir={run_dir or ''} must be a gs:// folder: a preempted job resumes from "
                          "the checkpoints there, and a restarted VM starts with an empty disk")
    if machine_type not in TPU_MACHINES and not tpu_topology:
        raise ConfigError(f"unknown machine_type '{machine_type}': {did_you_mean(machine_type, TPU_MACHINES)} "
                          "(or give tpu_topology= for another single-host TPU machine type)")
    topology = tpu_topology or TPU_MACHINES[machine_type]
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy={strategy} is not one of {', '.join(STRATEGIES)}")
    if not float(timeout_hours) > 0:
        raise ConfigError(f"timeout_hours={timeout_hours} must be positive")
    overrides = check_training_overrides(overrides)
    if any(override_key(o) == "runtime" for o in overrides):
        raise ConfigError("runtime=...: the TPU job sets runtime=tpu (runtime=jax with replicas > 1) itself; "
                          "drop this override")
    if int(replicas) < 1:
        raise ConfigError(f"replicas={replicas} must be >= 1")
    multi_host = int(replicas) > 1
    args = ["runtime=jax" if multi_host else "runtime=tpu", *overrides, f"run.dir={quote(run_dir)}"]
    if multi_host:
        env = {"KERAS_BACKEND": "jax", **(env or {})}
    if not any(override_key(o) == "trainer.resume" for o in overrides):
        args.append("trainer.resume=auto")  # a restarted job continues, it never starts over
    container = {"imageUri": image, "command": ["python", "-m", "trainer"], "args": args}
    if env:
        container["env"] = [{"name": str(k), "value": str(v)} for k, v in env.items()]
    return {
        "workerPoolSpecs": [{
            "machineSpec": {"machineType": machine_type, "tpuTopology": topology},
            "replicaCount": int(replicas),
            "diskSpec": {"bootDiskType": "pd-ssd", "bootDiskSizeGb": int(boot_disk_gb)},
            "containerSpec": container,
        }],
        "scheduling": {
            "strategy": strategy,
            # A reclaimed Spot VM restarts the job, which resumes from run_dir's checkpoint.
            "restartJobOnWorkerRestart": True,
            "timeout": f"{int(float(timeout_hours) * 3600)}s",
        },
    }


def custom_job(display_name: str, spec: dict) -> dict:
    """The CustomJob resource for ``projects.locations.customJobs.create``."""
    if not display_name:
        raise ConfigError("display_name= is required for a CustomJob")
    return {"displayName": display_name, "jobSpec": spec}
