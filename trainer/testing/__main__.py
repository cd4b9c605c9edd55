"""``python -m trainer.testing loss=<name> [loss.<key>=<value> ...] [replicas=false] [--json]``

``loss`` may be a registered name, ``all``, a comma list, or a dotted path to a
loss class (``my_pkg.losses.MyLoss``). Prints one verdict per check; exits 1 if
any check FAILs. Under ``KERAS_BACKEND=jax`` the TF-only checks are skipped.
"""

import json
import sys

import yaml


def parse(argv):
    names, params, replicas, as_json = [], {}, True, False
    for arg in argv:
        if arg == "--json":
            as_json = True
        elif arg.startswith("loss="):
            names = [n for n in arg[5:].split(",") if n]
        elif arg.startswith("loss."):
            key, _, value = arg[5:].partition("=")
            params[key] = yaml.safe_load(value)
        elif arg.startswith("replicas="):
            replicas = bool(yaml.safe_load(arg[9:]))
        else:
            raise SystemExit(f"unknown argument {arg!r}; usage: {__doc__.strip().splitlines()[0]}")
    if not names:
        raise SystemExit(f"name a loss: {__doc__.strip().splitlines()[0]}")
    return names, params, replicas, as_json


def main(argv=None):
    from trainer.commands.cli import start_command

    argv = sys.argv[1:] if argv is None else argv
    if start_command(argv, __doc__):
        return 0
    names, params, replicas, as_json = parse(argv)
    from trainer.registry import LOSSES, ConfigError
    from trainer.testing import check_loss

    if names == ["all"]:
        names = LOSSES.names()
    ok = True
    for name in names:
        try:
            report = check_loss({"name": name, **params}, replicas=replicas)
        except ConfigError as error:
            raise SystemExit(f"error: {error}") from None
        ok &= report.ok
        print(json.dumps(report.to_json()) if as_json else f"{report}\n", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
