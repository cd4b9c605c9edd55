"""Several processes, one JAX job (``runtime=jax`` across hosts).

JAX's multi-controller runtime: every process runs the same program, holds its
own devices, and together they form one global device mesh (``jax.devices()``
lists every process's devices, process by process). ``keras.distribution``'s
``DataParallel`` over that mesh makes each step one SPMD program over the global
batch, so the class-sharded head (``head=partial_fc``) spreads its rows over
every device of every process and its reductions cross hosts.

The job is joined (``join``) before anything lists a device: JAX fixes the
device list when its backend starts. Where the processes are comes from

* ``runtime.coordinator=HOST:PORT runtime.num_processes=N runtime.process_id=I``, or
* the environment, when it names a cluster the way ``jax.distributed.initialize()``
  reads it with no arguments (Cloud TPU pod slices, SLURM, GKE/JobSet); only then.

The rest of the framework asks this module, never JAX directly: how many
processes (``count``), which one this is (``index``), a value every process agrees
on (``any_process``, ``from_chief``), a host copy of a sharded array (``host_value``).
Process 0 is the chief: it alone writes checkpoints, metrics, loggers and the export.
"""

from __future__ import annotations

import contextlib
import hashlib

from trainer.registry import ConfigError

_JOINED: dict = {}  # what join() did: {"count": N, "index": I}; empty before, or single-process


def count() -> int:
    """Processes in this job (1 unless it joined a multi-process one)."""
    return int(_JOINED.get("count", 1))


def index() -> int:
    """This process's index in the job (0 alone, and for the chief)."""
    return int(_JOINED.get("index", 0))


def multi_process() -> bool:
    return count() > 1


def wanted(node) -> bool:
    """Whether ``node`` (``cfg.runtime``) asks for several processes, explicitly or by the environment."""
    if node is None or str(node.get("name")) != "jax":
        return False
    if node.get("num_processes") is not None or node.get("coordinator"):
        return True
    return cluster_from_environment() is not None


def cluster_from_environment() -> str | None:
    """The name of the cluster environment JAX would detect (TPU pod, SLURM, GKE), or None."""
    try:
        from jax._src import clusters
    except ImportError:
        return None
    for cluster in getattr(clusters.ClusterEnv, "_cluster_types", []):
        if getattr(cluster, "opt_in_only_method", False):  # mpi4py: only when asked for by name
            continue
        try:
            if cluster.is_env_present():
                return cluster.__name__
        except Exception:  # a probe that needs a network (GCE metadata) and has none
            continue
    return None


def join(node) -> None:
    """Join the multi-process job ``node`` describes; nothing when it describes one process.

    Before any device is listed: it sets the per-process CPU device count
    (``runtime.logical_devices``) and, on CPUs, gloo collectives, then starts
    ``jax.distributed``. Idempotent. Mistakes are one line each.
    """
    if _JOINED or not wanted(node):
        return
    import jax

    coordinator = node.get("coordinator")
    number = node.get("num_processes")
    process_id = node.get("process_id")
    explicit = coordinator or number is not None
    if explicit:
        if not coordinator or number is None or process_id is None:
            raise ConfigError("a multi-process runtime=jax needs all three of runtime.coordinator=HOST:PORT, "
                              "runtime.num_processes=N and runtime.process_id=I (or none of them on a "
                              "cluster JAX detects: Cloud TPU, SLURM, GKE)")
        number, process_id = int(number), int(process_id)
        if number < 1:
            raise ConfigError(f"runtime.num_processes must be >= 1, got {number}")
        if not 0 <= process_id < number:
            raise ConfigError(f"runtime.process_id={process_id} is out of range: with "
                              f"runtime.num_processes={number} it is one of 0 … {number - 1}")
        if ":" not in str(coordinator):
            raise ConfigError(f"runtime.coordinator='{coordinator}' needs a port: HOST:PORT, e.g. 10.0.0.2:8476")
        if number == 1:
            return
    logical = int(node.get("logical_devices", 1) or 1)
    if logical > 1:
        jax.config.update("jax_num_cpu_devices", logical)
    if str(node.get("device_type") or "cpu") == "cpu" or logical > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # JAX's preemption service takes SIGTERM over in C++ (Python's handler never runs again);
    # the job shares signals itself, at every step boundary (trainer.run.StopAtSignal).
    jax.config.update("jax_enable_preemption_service", False)
    timeout = int(node.get("connect_timeout_s", 120) or 120)
    if explicit:  # JAX aborts the whole process on these (no exception), so they are checked first
        _check_coordinator(str(coordinator), process_id, timeout)
    try:
        if explicit:
            jax.distributed.initialize(coordinator_address=str(coordinator), num_processes=number,
                                       process_id=process_id, initialization_timeout=timeout)
        else:
            jax.distributed.initialize(initialization_timeout=timeout)
    except Exception as error:  # the coordinator unreachable, its port taken, a bad cluster environment
        raise ConfigError(_join_problem(error, coordinator, process_id, timeout)) from None
    _JOINED.update(count=jax.process_count(), index=jax.process_index())


def _check_coordinator(coordinator: str, process_id: int, timeout: int) -> None:
    """Process 0: the port must be free to listen on; the others: it must answer within ``timeout``."""
    import socket
    import time

    host, _, port = coordinator.rpartition(":")
    host = host.strip("[]")
    if process_id == 0:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind(("", int(port)))
            except OSError as error:
                raise ConfigError(f"runtime.coordinator={coordinator}: process 0 cannot listen on port {port} "
                                  f"({error.strerror}); choose a free port") from None
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise ConfigError(f"runtime.coordinator={coordinator} was not reachable within {timeout} s; "
                                  "check the address and port, and that process 0 runs there") from None
            time.sleep(0.5)


def _join_problem(error: Exception, coordinator, process_id, timeout: int) -> str:
    from trainer.errors import first_line

    text = str(error)
    where = f"runtime.coordinator={coordinator}" if coordinator else "the cluster's coordinator"
    if process_id == 0 and any(s in text.lower() for s in ("address already in use", "failed to add port",
                                                           "bind", "could not start")):
        return (f"{where}: process 0 could not listen there, the port is taken or the host is not this "
                "machine; choose a free port")
    if any(s in text for s in ("DEADLINE_EXCEEDED", "UNAVAILABLE", "timed out", "Timeout", "deadline")):
        return (f"{where} was not reachable within {timeout} s (or not every process joined); check "
                "the address and port, that process 0 runs there, and runtime.num_processes")
    return f"could not join the multi-process job at {where}: {first_line(error)}"


# -- agreeing ----------------------------------------------------------------------------------

# Keys allowed to differ between the processes of one job.
PER_PROCESS_KEYS = ("runtime.process_id",)


def agree_on_config(cfg) -> None:
    """Every process refuses to train unless all were started with the same resolved config.

    Each process publishes its config's hash in JAX's key-value store and reads every
    other's; a difference names the keys' hash only, so the message says which process.
    """
    if not multi_process():
        return
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in PER_PROCESS_KEYS:
        parent, _, leaf = key.rpartition(".")
        plain.get(parent, {}).pop(leaf, None)
    digest = hashlib.sha256(repr(_sorted(plain)).encode()).hexdigest()[:16]
    theirs = exchange("config-hash", digest)
    differing = [i for i, value in enumerate(theirs) if value != theirs[0]]
    if differing:
        raise ConfigError(f"the {count()} processes were started with different configs (process "
                          f"{differing[0]}'s differs from process 0's: hashes {theirs[differing[0]]} and "
                          f"{theirs[0]}); start every process with the same overrides")


def _sorted(value):
    if isinstance(value, dict):
        return tuple((k, _sorted(v)) for k, v in sorted(value.items()))
    if isinstance(value, list):
        return tuple(_sorted(v) for v in value)
    return value


def exchange(name: str, value: str, timeout_s: int = 300) -> list[str]:
    """Every process's ``value`` under ``name``, in process order (JAX's key-value store)."""
    from jax._src.distributed import global_state

    client = global_state.client
    client.key_value_set(f"facetrain/{name}/{index()}", value)
    return [value if i == index() else client.blocking_key_value_get(f"facetrain/{name}/{i}", timeout_s * 1000)
            for i in range(count())]


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is true on any."""
    return largest(int(bool(flag))) > 0


def from_chief(value):
    """Process 0's ``value`` (a number or a NumPy array) on every process."""
    if not multi_process():
        return value
    import numpy as np
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(value)))


def host_value(array):
    """The whole of a (possibly sharded, multi-process) JAX array as a NumPy array, on every process.

    A collective when the array is split across processes: every process must call it.
    """
    import numpy as np

    # Replicated arrays are gathered too: reading one that spans processes may itself be a
    # collective in JAX, and every process must run the same collectives in the same order.
    if not multi_process() or getattr(array, "is_fully_addressable", True):
        return np.asarray(array)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def process_share(batch_size: int) -> slice:
    """The rows of every global batch this process feeds (process-major, as the mesh orders devices)."""
    processes = count()
    if batch_size % processes:
        raise ConfigError(f"trainer.batch_size={batch_size} does not split over {processes} processes; "
                          f"use a multiple of {processes}")
    share = batch_size // processes
    return slice(index() * share, (index() + 1) * share)


def barrier() -> None:
    """Wait until every process reaches this point."""
    any_process(False)


def to_numpy(value):
    """A Keras variable or tensor as a NumPy array; a collective in a multi-process job (every process calls it)."""
    import keras

    if not multi_process():
        return keras.ops.convert_to_numpy(value)
    return host_value(getattr(value, "value", value))


def _all_variables(model) -> list:
    """Every variable a checkpoint holds: the model's, its optimizer's and its metrics', once each."""
    optimizer = getattr(model, "optimizer", None)
    found = {}
    for variable in (list(model.variables) + list(getattr(model, "metrics_variables", []))
                     + (list(optimizer.variables) if optimizer is not None else [])):
        found.setdefault(id(variable), variable)
    return list(found.values())


def _spanning_variables(model) -> list:
    """The variables whose values span processes (all of them, in a multi-process job), in one order."""
    from trainer.keras_private import raw_value

    return [v for v in _all_variables(model) if not getattr(raw_value(v), "is_fully_addressable", True)]


@contextlib.contextmanager
def whole_values(model):
    """Inside the block, every variable spanning processes holds its whole value on this host.

    For writing a checkpoint (``save_weights`` reads each variable as NumPy, which a value
    split across processes cannot give). A collective: every process enters it. Keras has
    no public way to swap a variable's value without re-sharding it (``keras_private``).
    """
    if not multi_process():
        yield
        return
    import jax.numpy as jnp
    import keras

    from trainer.keras_private import raw_value, replace_value

    split = _spanning_variables(model)
    kept = [raw_value(v) for v in split]
    # Keras's saving makes throw-away variables (an optimizer, to know which attributes to
    # skip); under the job's distribution each would be a collective the others never join.
    distribution = keras.distribution.distribution()
    try:
        for variable in split:
            replace_value(variable, jnp.asarray(host_value(raw_value(variable))))
        keras.distribution.set_distribution(None)
        yield
    finally:
        keras.distribution.set_distribution(distribution)
        for variable, value in zip(split, kept):
            replace_value(variable, value)


def localise(model) -> None:
    """After training: every variable becomes a whole copy on this process's first device.

    A multi-process job's arrays span every process, so any computation on them is a
    collective all processes must run in step. The stages after ``fit`` (the final
    model's checks, evaluation, export) run on the chief alone; with local copies it
    needs no other process. A collective: every process calls it, once.
    """
    if not multi_process():
        return
    import jax
    import keras

    from trainer.keras_private import raw_value, replace_value

    device = jax.local_devices()[0]
    variables = _spanning_variables(model)
    values = [host_value(raw_value(v)) for v in variables]  # every collective first, in the same order
    keras.distribution.set_distribution(None)
    for variable, value in zip(variables, values):
        replace_value(variable, jax.device_put(value, device), keep_layout=False)


def largest(value: int) -> int:
    """The largest of every process's ``value`` (a tiny all-gather), on every process."""
    if not multi_process():
        return int(value)
    import numpy as np
    from jax.experimental import multihost_utils

    return int(np.asarray(multihost_utils.process_allgather(np.array([int(value)]))).max())
