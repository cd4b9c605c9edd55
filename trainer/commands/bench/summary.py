"""The console summary of a benchmark report."""

from __future__ import annotations

from models.heads.base import head_memory_line


def _rate(part: dict | None) -> str:
    if not part or not part.get("images_per_second"):
        return "not measured"
    text = f"{part['images_per_second']:,.1f} images/s (median of {part['windows']} windows, spread {part['spread']:.1%})"
    if part.get("tflops") is not None:
        text += f", {part['tflops']:.3f} TFLOP/s"
    if part.get("utilisation") is not None:
        text += f" = {part['utilisation']:.1%} of peak"
    return text


def _ratio(name: str, ratio: dict | None, target: dict | None) -> str:
    if not ratio:
        return f"{name}: not measured"
    verdict = ""
    if target:
        verdict = f"  target >= {target['target']}: {'met' if target['met'] else 'NOT met'}"
    return (f"{name}: {ratio['median']:.3f} (per-window range {ratio['min']:.3f} .. {ratio['max']:.3f})"
            f"{verdict}")


def summary_lines(report: dict) -> list[str]:
    job, flops = report["job"], report["flops"]
    lines = [
        f"job: {job['backbone']} + {job['neck']} + {job['loss']} ({job['loop']} loop), "
        f"{job['image_size']}px, batch {job['batch_size']}, {job['num_classes']} classes, "
        f"{job['precision']}, {job['backend']} backend, jit_compile={job['jit_compile']}, "
        f"steps_per_execution={job['steps_per_execution']}",
        f"framework step: {_rate(report['framework'])}",
        f"minimal step:   {_rate(report.get('minimal'))}",
        f"input pipeline: {_rate(report.get('pipeline'))}",
        _ratio("framework / minimal", report["ratios"].get("framework_over_minimal"),
               report["targets"].get("framework_over_minimal")),
        _ratio("  same, on CPU time", report["ratios"].get("framework_over_minimal_cpu_time"), None),
        _ratio("pipeline / framework", report["ratios"].get("pipeline_over_framework"),
               report["targets"].get("pipeline_over_framework")),
        f"FLOPs per image: {flops['forward_flops_per_image'] / 1e9:.4f} G forward, "
        f"{flops['train_flops_per_image'] / 1e9:.4f} G training"
        + (f" (XLA's count of the step: {flops['xla_train_flops_per_image'] / 1e9:.4f} G)"
           if flops.get("xla_train_flops_per_image") else ""),
    ]
    overheads, memory = report["overheads"], report["memory"]
    if overheads.get("epoch_end_seconds") is not None:
        share = overheads.get("epoch_end_share")
        lines.append(f"epoch end (checkpoint, metrics.json, loggers): {overheads['epoch_end_seconds']:.3f} s"
                     + (f" = {share:.2%} of a {job['steps_per_epoch']}-step epoch" if share is not None else ""))
    lines.append(f"peak host memory: {memory['peak_host_gib']} GiB (this process)"
                 + (f"; device: {memory['peak_device_gib']} GiB" if memory.get("peak_device_gib") else ""))
    head = memory.get("head_per_device")
    if head:
        lines.append(head_memory_line(head))
    run = report.get("job_run")
    if run:
        lines.append(f"the job alone (python -m trainer): peak host memory {run['peak_host_gib']} GiB, "
                     f"{run.get('images_per_second')} images/s, {run['wall_seconds']} s, exit {run['exit_code']}")
    if report.get("breakdown"):
        from trainer.commands.bench.breakdown import breakdown_lines

        lines.extend(breakdown_lines(report["breakdown"]))
    lines.append(f"machine: {report['machine'].get('cpu')} x{report['machine'].get('cpus')}, "
                 f"device {report['machine'].get('device')}, load average {report['machine'].get('load_average')}")
    return lines
