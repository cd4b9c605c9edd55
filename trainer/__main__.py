"""``python -m trainer [group=option ...] [group.key=value ...]``: run one training job.

Mistakes in the command line are reported in one line before Hydra starts (and before
TensorFlow is imported); everything else is Hydra's usual behaviour (``--multirun``,
``--cfg job``, ...). The run's console, warnings and any traceback go to ``<run>/train.log``;
every failure ends under the contract of ``trainer/commands/edge.py``.
"""

import os
import sys

# Hydra's flags that take the next argument as their value.
VALUE_FLAGS = {"--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--cfg", "-c",
               "--package", "-p", "--experimental-rerun"}
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def _arguments(argv):
    """(overrides, flags, config dirs, other): Hydra's flags and their values kept apart.

    ``other`` is True when a flag other than ``--config-dir`` is present.
    """
    overrides, flags, config_dirs, other = [], [], [], False
    pending = None
    for argument in argv:
        if pending is not None:
            flags.append(argument)
            if pending in CONFIG_DIR_FLAGS:
                config_dirs.append(argument)
            pending = None
        elif argument.startswith("-"):
            flags.append(argument)
            name, sep, value = argument.partition("=")
            if name in CONFIG_DIR_FLAGS and sep:
                config_dirs.append(value)
            elif argument in VALUE_FLAGS:
                pending = argument
            other = other or name not in CONFIG_DIR_FLAGS
        else:
            overrides.append(argument)
    return overrides, flags, config_dirs, other


def main(argv=None) -> int:
    from trainer.commands import command_config, edge

    process = argv is None
    argv = sys.argv[1:] if argv is None else argv
    if any(a in command_config.VERSION_FLAGS for a in argv):  # facetrain's, not Hydra's
        print(command_config.version_text())
        return 0

    def body() -> int:
        from trainer import signals

        try:
            with signals.handling():  # from the first moment: a job stopped at start-up says so
                return _main(argv)
        except signals.Interrupted as interruption:
            print(f"interrupted ({interruption.name}) during start-up; nothing was written", file=sys.stderr)
            return interruption.exit_code

    return edge.run("train", body, process)


def _main(argv) -> int:
    from trainer.commands.command_config import split_value_problem
    from trainer.config import compose, register_resolvers, with_searchpath
    from trainer.registry import ConfigError

    register_resolvers()
    overrides, flags, config_dirs, other_flags = _arguments(argv)
    # Only --config-dir changes what a plain job composes; other flags (--multirun sweeps,
    # --cfg, --info, other config names) are Hydra's to handle.
    if not other_flags:
        problem = split_value_problem(overrides)
        if problem:
            raise ConfigError(problem)
        # names, keys, numbers and component parameters checked before Hydra starts the job
        cfg = compose(overrides, config_dirs=config_dirs)
        _point_tensorflow_at_the_compile_cache(cfg)

    import hydra

    @hydra.main(config_path="pkg://conf", config_name="config", version_base="1.3")
    def run(cfg):
        return run_job(cfg)

    sys.argv = [sys.argv[0], *flags, *with_searchpath(overrides)]
    # Hydra's own failures (an unwritable run folder) reach the edge whole, not as Hydra's report.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    run()
    return 0


def _point_tensorflow_at_the_compile_cache(cfg) -> None:
    """TensorFlow reads its XLA flags once, at start-up: the cache folder (``runtime.compile_cache``)
    goes into ``TF_XLA_FLAGS`` now, before the job imports it, so a second run compiles nothing."""
    from trainer import compile_cache

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    folder = compile_cache.cache_dir(cfg.runtime.get("compile_cache", "auto"), "tensorflow") \
        if cfg.get("runtime") is not None else None
    if backend == "tensorflow" and folder is not None and "tensorflow" not in sys.modules:
        try:
            compile_cache.tensorflow_environment(folder)
        except OSError:  # an unwritable cache folder: the job runs uncached (runtime.compile_cache says why)
            pass


def run_job(cfg):
    """One Hydra job: its log is ``<run>/train.log``; a job refused before it started leaves no folder."""
    from hydra.core.hydra_config import HydraConfig

    from trainer.commands import edge

    run_dir = HydraConfig.get().runtime.output_dir
    fresh = set(os.listdir(run_dir)) <= {".hydra"}  # nothing of an earlier attempt
    # Process i > 0 of a multi-process job logs beside its own records (trainer.runtime.worker_dir).
    process_id = int(cfg.runtime.get("process_id") or 0) if cfg.get("runtime") is not None else 0
    log_dir = os.path.join(run_dir, "workers", f"worker-{process_id}") if process_id else run_dir
    os.makedirs(log_dir, exist_ok=True)
    edge.log_to(os.path.join(log_dir, "train.log"))
    try:
        from trainer.run import main_job

        return main_job(cfg)
    except SystemExit as exit:  # the runner's own status (a refused run is 2)
        if exit.code == edge.EXIT_MISTAKE and fresh:
            _remove_unstarted(run_dir)
        raise
    except BaseException as error:  # noqa: BLE001 - classified once, at the edge
        from trainer.callbacks.optuna_pruning import is_pruned

        if is_pruned(error):  # a sweep trial its pruner stopped: the sweeper counts it, not a failure
            raise
        status = edge.finish("train", error)
        if status == edge.EXIT_MISTAKE and fresh:
            _remove_unstarted(run_dir)
        sys.exit(status)


def _remove_unstarted(run_dir: str) -> None:
    """A fresh folder of a job that stopped before its work started: no checkpoint, no export."""
    import shutil

    from trainer.console import command_log

    if {"checkpoints", "export"} & set(os.listdir(run_dir)):
        return
    log = command_log()
    if log is not None:
        log.detach()
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        os.rmdir(os.path.dirname(os.path.abspath(run_dir)))  # runs/ too, when Hydra made it for this job
    except OSError:
        pass  # not empty: other runs live there


if __name__ == "__main__":
    sys.exit(main())
