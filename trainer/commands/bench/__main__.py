"""``python -m trainer.bench [group=option ...] [bench.key=value ...]``

Prints the summary (images/s, the two ratios against their targets, FLOPs,
memory) and writes the JSON report to ``bench.output``. A mistake in the
command line is one line on stderr and exit status 2, as for the trainer.
"""

from __future__ import annotations

import os
import sys


def main(argv=None) -> int:
    from trainer.commands.cli import start_command

    argv = sys.argv[1:] if argv is None else argv
    if start_command(argv, __doc__):
        return 0
    from trainer.config import compose
    from trainer.registry import ConfigError

    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        cfg = compose(overrides, config_name="bench")
        from trainer.commands.bench.measure import run_bench

        report = run_bench(cfg)
        if cfg.bench.get("job"):
            from trainer.commands.bench.job import measure_job

            report["job_run"] = measure_job([o for o in overrides if not o.lstrip("+").startswith("bench.")])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report["command"] = "python -m trainer.bench " + " ".join(argv)
    from trainer.io import write_json
    from trainer.commands.bench.summary import summary_lines

    output = str(cfg.bench.output)
    if os.path.dirname(output):
        os.makedirs(os.path.dirname(output), exist_ok=True)
    write_json(output, report)
    print("\n".join(summary_lines(report)))
    print(f"report: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
