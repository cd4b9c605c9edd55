"""``python -m trainer [group=option ...] [group.key=value ...]``: run one training job.

Mistakes in the command line are reported in one line before Hydra starts;
everything else is Hydra's usual behaviour (``--multirun``, ``--cfg job``, ...).
"""

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


def _split_value(overrides):
    """A one-line error for a value with spaces that the shell split into two arguments."""
    for previous, argument in zip([None, *overrides], overrides):
        if "=" in argument or argument.startswith("~"):
            continue
        if previous is not None and "=" in previous:
            return (f"'{argument}' is not key=value: it looks like the rest of "
                    f"{previous.partition('=')[0]}; quote a value with spaces as one argument: "
                    f"'{previous} {argument}'")
        return f"'{argument}' is not key=value (group=option, group.key=value or ~group.key)"
    return None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from trainer import signals

    try:
        with signals.handling():  # from the first moment: a job stopped at start-up says so
            return _main(argv)
    except signals.Interrupted as interruption:
        print(f"interrupted ({interruption.name}) during start-up; nothing was written", file=sys.stderr)
        return interruption.exit_code


def _main(argv) -> int:
    if not any(a in ("-h", "--help", "--hydra-help") for a in argv):  # Hydra answers those
        from trainer.console import quiet_startup

        quiet_startup()
    from trainer.config import compose, register_resolvers, with_searchpath
    from trainer.registry import ConfigError

    register_resolvers()
    overrides, flags, config_dirs, other_flags = _arguments(argv)
    # Only --config-dir changes what a plain job composes; other flags (--multirun sweeps,
    # --cfg, --info, other config names) are Hydra's to handle.
    if not other_flags:
        try:
            problem = _split_value(overrides)
            if problem:
                raise ConfigError(problem)
            # names, keys, numbers and component classes checked before Hydra starts the job
            compose(overrides, config_dirs=config_dirs)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    import hydra

    @hydra.main(config_path="pkg://conf", config_name="config", version_base="1.3")
    def run(cfg):
        from trainer.run import main_job

        return main_job(cfg)

    sys.argv = [sys.argv[0], *flags, *with_searchpath(overrides)]
    run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
