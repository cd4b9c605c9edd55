"""``python -m trainer [group=option ...] [group.key=value ...]``: run one training job.

Mistakes in the command line are reported in one line before Hydra starts;
everything else is Hydra's usual behaviour (``--multirun``, ``--cfg job``, ...).
"""

import sys


def _overrides(argv):
    """The ``key=value`` arguments, without Hydra's own flags."""
    return [a for a in argv if "=" in a and not a.startswith("-")]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not any(a in ("-h", "--help", "--hydra-help") for a in argv):  # Hydra answers those
        from trainer.console import quiet_startup

        quiet_startup()
    from trainer.config import compose, register_resolvers, searchpath_override
    from trainer.registry import ConfigError

    register_resolvers()
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if not multirun and not any(a.startswith("--") and a not in ("--multirun",) for a in argv):
        try:
            compose(_overrides(argv))  # names, keys and values checked before Hydra starts the job
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    import hydra

    @hydra.main(config_path="pkg://conf", config_name="config", version_base="1.3")
    def run(cfg):
        from trainer.run import main_job

        return main_job(cfg)

    sys.argv = [sys.argv[0], *argv, *searchpath_override()]
    run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
