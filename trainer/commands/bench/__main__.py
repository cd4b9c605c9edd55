"""``python -m trainer.bench [group=option ...] [bench.key=value ...]``

Prints the summary (images/s, the two ratios against their targets, FLOPs,
memory) and writes the JSON report to ``bench.output``. A mistake in the
command line is one line on stderr and exit status 2, as for the trainer.
"""

from __future__ import annotations

import os
import sys


def main(argv=None) -> int:
    from trainer.commands import command_config, edge

    process = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if command_config.answered(argv, "bench", __doc__):
        return 0

    def body() -> int:
        cfg = command_config.parse("bench", argv)
        output = str(cfg.bench.output)
        if os.path.dirname(output):  # beside a report given its own folder (not the working directory)
            edge.log_to(os.path.join(os.path.dirname(output), "bench.log"))
        from trainer.commands.bench.measure import run_bench

        report = run_bench(cfg)
        if cfg.bench.get("job"):
            from trainer.commands.bench.job import measure_job

            report["job_run"] = measure_job([o for o in argv if not o.lstrip("+").startswith("bench.")])
        report["command"] = "python -m trainer.bench " + " ".join(argv)
        from trainer.io import write_json
        from trainer.commands.bench.summary import summary_lines

        if os.path.dirname(output):
            os.makedirs(os.path.dirname(output), exist_ok=True)
        write_json(output, report)
        print("\n".join(summary_lines(report)))
        print(f"report: {output}")
        return 0

    return edge.run("bench", body, process)


if __name__ == "__main__":
    sys.exit(main())
