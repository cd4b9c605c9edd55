"""Devices, distribution and numeric precision of a job (the ``runtime`` config group).

One function, ``setup_runtime(node)``, turns ``cfg.runtime`` into a ``Runtime``:
the precision policy is applied, and the strategy named by ``node.name`` is
created. TensorFlow is imported only by the strategies that need it, so the
``cpu`` and ``jax`` runtimes work on hosts without TensorFlow.

    cpu          the default device of the process (TensorFlow or JAX backend)
    gpu          one GPU (tf.distribute.OneDeviceStrategy under TensorFlow)
    mirrored     all local GPUs, synchronous data parallelism (MirroredStrategy)
    multiworker  several hosts from TF_CONFIG (MultiWorkerMirroredStrategy)
    tpu          a Cloud TPU: TPUClusterResolver → initialize_tpu_system → TPUStrategy
    jax          the JAX backend, keras.distribution.DataParallel over every device

``runtime.logical_devices=N`` (cpu, mirrored, jax) splits the CPU host into N
devices for tests and simulation of sharded jobs (``head=partial_fc``): N logical
CPUs mirrored by a MirroredStrategy under TensorFlow, N host-platform devices
under JAX (``jax_num_cpu_devices``, i.e. ``--xla_force_host_platform_device_count``,
which only takes effect if set before JAX first lists its devices: ``setup_runtime``
runs first in the job builder, so it is set there).

The batch size in the config is the global batch; each strategy splits it
across its replicas. Schedules run on the optimizer's step, a global step.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from dataclasses import dataclass

import keras

from trainer.errors import first_line
from trainer.registry import ConfigError

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclass
class Runtime:
    name: str
    strategy: object | None          # a tf.distribute strategy, or None for the default
    jit_compile: bool
    steps_per_execution: int
    precision: str = "float32"
    distribution: object | None = None   # a keras.distribution (JAX), or None
    worker_index: int = 0                # this process's index in a multi-worker job
    compile_cache: dict | None = None    # trainer.compile_cache.enable's record (folder, active, why)

    @property
    def num_replicas(self) -> int:
        if self.strategy is not None:
            return int(getattr(self.strategy, "num_replicas_in_sync", 1))
        if self.distribution is not None:
            return len(self.distribution.device_mesh.devices.flatten())
        return 1

    @property
    def is_chief(self) -> bool:
        """The process that writes checkpoints, metrics and the export (worker 0)."""
        return self.worker_index == 0

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def prepare_fit(self, model, batches):
        """Strategy-specific set-up before ``fit``; returns ``batches`` (possibly re-wrapped).

        Under any strategy of several replicas, Keras 3's pre-fit build takes one batch
        from the training iterator to build with, and that batch is never trained on
        (measured on 2 replicas: 2 of 3 steps per epoch ran, so the data position was
        wrong and epoch-end checkpoints were never due). Multi-worker, that build also
        reduces a per-replica batch across workers and fails (keras-team/keras#20585).
        So the model is built here from the batches' structure (a peeked generator is
        put back together, a ``tf.data`` pipeline gives its element spec) and Keras's
        build is switched off.
        """
        if self.strategy is None or (self.num_replicas <= 1 and self.name != "multiworker"):
            return batches
        from trainer.callbacks.checkpoint import build_before_restore
        from trainer.keras_private import skip_fit_build

        with self.scope():
            batches = build_before_restore(model, batches)
        skip_fit_build(model)
        if self.name == "multiworker":
            _patch_multiworker_log_reduction()
        return batches

    def worker_dir(self, run_dir: str) -> str:
        """Where this process writes its own records: the run dir, or a sub-folder for non-chiefs."""
        return _worker_dir(run_dir, self.worker_index)


def worker_index(node) -> int:
    """This process's worker index: from TF_CONFIG (``runtime=multiworker``), or its JAX process
    index once it joined a multi-process ``runtime=jax`` job (``trainer.processes``); else 0."""
    if node is not None and node.get("name") == "jax":
        from trainer import processes

        return processes.index()
    if node is None or node.get("name") != "multiworker":
        return 0
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
        return int(task.get("index", 0)) if task.get("type", "worker") == "worker" else 0
    except (ValueError, TypeError, AttributeError):
        return 0


def worker_dir(run_dir: str, node) -> str:
    """The chief writes into the run directory; worker i into ``workers/worker-i`` below it."""
    return _worker_dir(run_dir, worker_index(node))


def _worker_dir(run_dir: str, index: int) -> str:
    from trainer import io

    return run_dir if index == 0 else io.join(run_dir, "workers", f"worker-{index}")


def setup_runtime(node) -> Runtime:
    """Apply the precision policy and create the strategy named by ``node.name``.

    Call it before any TensorFlow op runs: collective strategies
    (multi-worker, TPU) must be created at program start.
    """
    name = str(node.get("name", "cpu"))
    if name not in STRATEGIES:
        raise ConfigError(f"unknown runtime '{name}': choose one of {', '.join(sorted(STRATEGIES))}")
    precision = str(node.get("precision", "float32"))
    if precision not in PRECISIONS:
        raise ConfigError(f"runtime.precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    steps_per_execution = int(node.get("steps_per_execution", 1))
    if steps_per_execution < 1:
        raise ConfigError(f"runtime.steps_per_execution must be >= 1, got {steps_per_execution}")
    # A multi-process JAX job is joined before anything lists a device (JAX fixes them then).
    from trainer import processes

    processes.join(node)
    runtime = Runtime(name=name, strategy=None, jit_compile=bool(node.get("jit_compile", True)),
                      steps_per_execution=steps_per_execution, precision=precision,
                      worker_index=processes.index())
    # Before anything compiles: a second run of the same config then loads its programs.
    from trainer.compile_cache import enable

    runtime.compile_cache = enable(node.get("compile_cache", "auto"), _backend())
    STRATEGIES[name](node, runtime)
    keras.mixed_precision.set_global_policy(precision)
    return runtime


def _backend() -> str:
    return keras.backend.backend()


def _needs_tensorflow_backend(name: str) -> None:
    if _backend() != "tensorflow":
        raise ConfigError(f"runtime={name} is a tf.distribute strategy and needs the TensorFlow backend "
                          f"(this process runs KERAS_BACKEND={_backend()}); use runtime=jax for JAX, or "
                          "unset KERAS_BACKEND")


def _tf():
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ConfigError(f"this runtime needs TensorFlow, which does not import here ({error}); "
                          "pip install tensorflow, or use runtime=cpu/jax with data=memory") from None
    return tf


# -- strategies ----------------------------------------------------------------

def _cpu(node, runtime: Runtime) -> None:
    """The process's default device; no strategy object, unless ``logical_devices`` > 1:
    then the host is split into that many devices and the job spreads over them."""
    count = logical_devices(node)
    if count <= 1:
        return
    if _backend() == "jax":
        runtime.distribution = keras.distribution.DataParallel(devices=_jax_host_devices(count))
        keras.distribution.set_distribution(runtime.distribution)
        return
    if _backend() != "tensorflow":
        raise ConfigError(f"runtime.logical_devices={count} needs the TensorFlow or JAX backend")
    tf = _tf()
    split_cpu(count)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) != count:
        raise ConfigError(f"runtime.logical_devices={count}: TensorFlow had already started with "
                          f"{len(devices)} CPU device(s); set it before anything runs TensorFlow")
    _no_xla_collectives_on_cpu(runtime, f"cpu runtime.logical_devices={count}")
    runtime.strategy = tf.distribute.MirroredStrategy(devices=devices)


def logical_devices(node) -> int:
    count = int(node.get("logical_devices", 1) or 1)
    if count < 1:
        raise ConfigError(f"runtime.logical_devices must be >= 1, got {count}")
    return count


def _jax_host_devices(count: int) -> list:
    """``count`` JAX CPU devices; the count is fixed when JAX's CPU backend starts."""
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", count)
    except (AttributeError, RuntimeError, ValueError):  # older JAX, or the backend is already up
        flag = f"--xla_force_host_platform_device_count={count}"
        if flag not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    devices = jax.devices("cpu")
    if len(devices) != count:
        raise ConfigError(f"runtime.logical_devices={count}: JAX had already started with {len(devices)} "
                          f"CPU device(s); start the process with XLA_FLAGS=--xla_force_host_platform_"
                          f"device_count={count}")
    return devices


def _gpu(node, runtime: Runtime) -> None:
    if _backend() == "jax":
        import jax

        if not [d for d in jax.devices() if d.platform == "gpu"]:
            raise ConfigError("runtime=gpu: JAX sees no GPU here (jax.devices() lists "
                              f"{jax.devices()[0].platform} only); install jax[cuda12] or use runtime=cpu")
        return
    _needs_tensorflow_backend("gpu")
    tf = _tf()
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise ConfigError("runtime=gpu: TensorFlow sees no GPU on this machine; use runtime=cpu, "
                          "or check the CUDA install (tf.config.list_physical_devices('GPU') is empty)")
    index = int(node.get("device", 0))
    if index >= len(gpus):
        raise ConfigError(f"runtime.device={index}, but only {len(gpus)} GPU(s) are visible")
    _memory_growth(tf, gpus)
    runtime.strategy = tf.distribute.OneDeviceStrategy(f"/gpu:{index}")


def _mirrored(node, runtime: Runtime) -> None:
    _needs_tensorflow_backend("mirrored")
    tf = _tf()
    gpus = tf.config.list_physical_devices("GPU")
    _memory_growth(tf, gpus)
    devices = list(node.get("devices") or []) or None
    if devices is None and not gpus:
        split_cpu(max(int(node.get("cpu_replicas", 1)), logical_devices(node)))
        # No GPU: mirror over the CPU's logical devices (what tests use, with cpu_replicas).
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        if len(devices) > 1:
            _no_xla_collectives_on_cpu(runtime, "mirrored")
    runtime.strategy = tf.distribute.MirroredStrategy(devices=devices)


def _multiworker(node, runtime: Runtime) -> None:
    _needs_tensorflow_backend("multiworker")
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError("runtime=multiworker needs TF_CONFIG in the environment, e.g. "
                          "TF_CONFIG='{\"cluster\": {\"worker\": [\"host1:12345\", \"host2:12345\"]}, "
                          "\"task\": {\"type\": \"worker\", \"index\": 0}}'")
    try:
        tf_config = json.loads(raw)
        workers = tf_config["cluster"]["worker"]
        task = tf_config["task"]
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"TF_CONFIG is not valid ({error}); it needs cluster.worker and task") from None
    tf = _tf()
    _memory_growth(tf, tf.config.list_physical_devices("GPU"))
    implementation = {"auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
                      "ring": tf.distribute.experimental.CommunicationImplementation.RING,
                      "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL}
    communication = str(node.get("communication", "auto"))
    if communication not in implementation:
        raise ConfigError(f"runtime.communication '{communication}' is not one of auto, ring, nccl")
    runtime.strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=implementation[communication]))
    runtime.worker_index = worker_index(node)
    if not tf.config.list_physical_devices("GPU"):
        _no_xla_collectives_on_cpu(runtime, "multiworker")


def _no_xla_collectives_on_cpu(runtime: Runtime, name: str) -> None:
    if runtime.jit_compile:
        raise ConfigError(f"runtime={name} on CPUs: XLA has no cross-replica collectives for CPU devices; "
                          "add runtime.jit_compile=false (GPU and TPU runs keep XLA)")


def local_tpu_present() -> bool:
    """A TPU VM exposes its chips as /dev/accel* (v2-v4) or /dev/vfio/* (v5e and later)."""
    return bool(glob.glob("/dev/accel*") or [p for p in glob.glob("/dev/vfio/*") if not p.endswith("vfio")])


def _tpu(node, runtime: Runtime) -> None:
    name = node.get("tpu")
    name = None if name in (None, "", "local") else str(name)
    if _backend() == "jax":
        raise ConfigError("runtime=tpu is the TensorFlow TPUStrategy; under KERAS_BACKEND=jax use "
                          "runtime=jax (it spreads the batch over every TPU core JAX sees)")
    if name is None and not local_tpu_present():
        # TPUClusterResolver would query the GCE metadata server and retry for minutes.
        raise ConfigError("runtime=tpu: no TPU on this machine (no /dev/accel* or /dev/vfio devices); "
                          "run on a Cloud TPU VM, or name a TPU with runtime.tpu=NAME runtime.zone=ZONE "
                          "runtime.project=PROJECT")
    tf = _tf()
    timeout = float(node.get("connect_timeout_s", 120))
    resolver = _with_timeout(
        lambda: _connect_tpu(tf, name or "local", node.get("zone"), node.get("project")), timeout,
        f"runtime=tpu: could not reach TPU '{name or 'local'}' within {timeout:.0f} s; check "
        "runtime.tpu/zone/project and that this VM may use it (gcloud compute tpus list)")
    runtime.strategy = tf.distribute.TPUStrategy(resolver)


def _connect_tpu(tf, name, zone, project):
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=name, zone=zone or None, project=project or None)
        if name != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise ConfigError(f"runtime=tpu: TPU '{name}' could not be initialised: "
                          f"{first_line(error)}") from None
    return resolver


def _with_timeout(function, seconds: float, message: str):
    """Run ``function`` in a thread; a ConfigError(message) if it does not return in time."""
    import threading

    result: dict = {}

    def target():
        try:
            result["value"] = function()
        except BaseException as error:  # handed back to the caller's thread
            result["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise ConfigError(message)
    if "error" in result:
        raise result["error"]
    return result["value"]


def _jax(node, runtime: Runtime) -> None:
    if _backend() != "jax":
        raise ConfigError(f"runtime=jax needs the JAX backend, but this process runs {_backend()}: "
                          "start it as KERAS_BACKEND=jax python -m trainer runtime=jax ...")
    from trainer import processes

    count = logical_devices(node)
    if processes.multi_process():  # one global mesh over every process's devices, process by process
        devices = _jax_global_devices(count, node.get("device_type") or None)
    else:
        devices = (_jax_host_devices(count) if count > 1
                   else keras.distribution.list_devices(node.get("device_type") or None))
    # Each process feeds its own share of the global batch (trainer.data.batches), so Keras
    # must not shard the data again (it would only accept tf.data, and re-cut it).
    runtime.distribution = keras.distribution.DataParallel(
        devices=devices, auto_shard_dataset=not processes.multi_process())
    keras.distribution.set_distribution(runtime.distribution)


def _jax_global_devices(count: int, device_type: str | None) -> list:
    """Every device of every process (``count`` CPU devices each, when > 1), in process order."""
    import jax

    local = jax.local_devices(backend="cpu" if count > 1 else device_type)
    if count > 1 and len(local) != count:
        raise ConfigError(f"runtime.logical_devices={count}: this process has {len(local)} CPU device(s); "
                          "JAX had started before the job was joined")
    return jax.devices("cpu" if count > 1 else device_type)


def _patch_multiworker_log_reduction() -> None:
    """Average the step's logs over workers with ``axis=None``.

    Keras 3 reduces each log across workers with ``strategy.reduce("MEAN", v,
    axis=0)``, which fails for scalar logs such as the loss ("Invalid reduction
    dimension 0 for input with 0 dimensions"). Only the logs pass through here;
    gradients are all-reduced by the strategy itself.
    """
    import tensorflow as tf
    from trainer.keras_private import tensorflow_trainer

    tf_trainer, tree = tensorflow_trainer()

    original = tf_trainer.reduce_per_replica
    if getattr(original, "facetrain_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and reduction in ("auto", "mean"):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica.facetrain_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def _memory_growth(tf, gpus) -> None:
    for gpu in gpus:  # share the card with the evaluation's eager calls instead of grabbing it all
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised
            pass


def split_cpu(count: int) -> None:
    """Expose the CPU as ``count`` logical devices (TensorFlow), so mirrored runs on a laptop/CI."""
    if count and count > 1 and _backend() == "tensorflow":
        tf = _tf()
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(int(count))])
        except RuntimeError:  # the context already started: keep what exists
            pass


STRATEGIES = {"cpu": _cpu, "gpu": _gpu, "mirrored": _mirrored, "multiworker": _multiworker,
              "tpu": _tpu, "jax": _jax}
