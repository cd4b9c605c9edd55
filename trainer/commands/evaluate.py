"""Evaluate a saved embedding model: ``.bin`` sets, an image folder, albums, a model update, IJB, retrieval.

    python -m trainer.evaluate model=runs/x/export/embedding.keras          # the run's own held-out set
    python -m trainer.evaluate model=runs/x/export/embedding.keras bin_files=[lfw.bin,agedb_30.bin]
    python -m trainer.evaluate model=... folder=/data/people pairs=3000 seed=0
    python -m trainer.evaluate model=... album=true                     # built-in held-out families
    python -m trainer.evaluate model=... album=true data=folder data.path=/p data.families_file=f.csv
    python -m trainer.evaluate model=new.keras old_model=old.keras album=true
    python -m trainer.evaluate model=... ijb=/data/IJB_release/IJBC ijb.subset=IJBC
    python -m trainer.evaluate model=... retrieval=true                 # built-in held-out identities
    python -m trainer.evaluate model=... retrieval=true folder=/q retrieval_gallery=/g

Writes ``report.json``, ``roc.png`` (``ijb_roc.png`` for IJB), ``summary.html`` and
``evaluate.log`` to ``output`` (default: ``evaluation/`` beside the model's folder).
``data=...``/``data.<key>=...`` pick the data set for albums and retrieval as
in training; its image size follows the model. With nothing else asked, the held-out
identities of the run that wrote the model (``config.yaml`` beside ``export/``) are measured
as the run measured them.
"""

from __future__ import annotations

import os
import sys

from trainer.commands import command_config, edge

COMMAND = "evaluate"
# What a command line can ask for; with none of them, the run's own held-out set.
ASKED = ("bin_files", "folder", "album", "old_model", "retrieval")


def options(cfg) -> dict:
    """The composed config as the evaluation suite's options (``model`` is its ``model_path``)."""
    from trainer.evaluation.suite import library_options
    from trainer.registry import to_plain

    values = to_plain(cfg)
    for key in ("data", "name", "heldout"):
        values.pop(key, None)
    return library_options(values)


def nothing_asked(cfg) -> bool:
    return not any(cfg.get(key) not in (None, False, "false", []) for key in ASKED) and not cfg.ijb.root


def run_config_of(model: str):
    """The config of the run that wrote ``model`` (``<run>/config.yaml`` beside ``export/``), or None."""
    from omegaconf import OmegaConf

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(model))), "config.yaml")
    return OmegaConf.load(path) if os.path.exists(path) else None


def output_folder(cfg) -> str:
    return str(cfg.output or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(str(cfg.model)))),
                                          "evaluation"))


def evaluate_run_heldout(cfg) -> dict:
    """The run's own held-out verification, as its evaluator measured it at the end of training."""
    from omegaconf import OmegaConf

    from trainer.io import write_json
    from trainer.export.model_files import load_embedding_model
    from trainer.registry import DATASETS, EVALUATORS, ConfigError, to_plain

    run = run_config_of(str(cfg.model))
    if run is None or run.get("data") is None or run.get("eval") is None:
        raise ConfigError(f"nothing to evaluate: {cfg.model} has no run config.yaml beside export/ to take "
                          "its held-out set from; pass bin_files=[...], folder=<identity folders>, "
                          "album=true, retrieval=true or ijb=<root>")
    model = load_embedding_model(str(cfg.model), "model")
    node = to_plain(run.data)
    node["image_size"] = int(model.input_shape[1])
    source = DATASETS.build(OmegaConf.create(node))
    if source.heldout() is None:
        raise ConfigError(f"nothing to evaluate: the run's data={node.get('name')} has no held-out identities "
                          f"({source.heldout_unavailable or 'none configured'}); pass bin_files=[...] or "
                          "folder=<identity folders>")
    results = EVALUATORS.build(run.eval).evaluate(model, source)
    output = output_folder(cfg)
    report = {"model_path": str(cfg.model), "image_size": node["image_size"], "verification": results,
              "source": f"the run's held-out identities (data={node.get('name')})", "output": output}
    write_json(os.path.join(output, "report.json"), report)
    return report


def body(cfg, data_overrides) -> int:
    from trainer.evaluation.suite import evaluate, result_lines
    from trainer.registry import ConfigError

    if not cfg.model:
        raise ConfigError("model= is required (an exported embedding.keras, e.g. "
                          "runs/<name>/export/embedding.keras)")
    edge.log_to(os.path.join(output_folder(cfg), f"{COMMAND}.log"))
    if nothing_asked(cfg):
        report = evaluate_run_heldout(cfg) if str(cfg.heldout) != "false" else None
        if report is None:
            raise ConfigError("nothing to evaluate: pass bin_files=[...], folder=..., album=true, "
                              "retrieval=true or ijb=<root> (heldout=false turned off the run's held-out set)")
    else:
        report = evaluate(options(cfg), data_overrides)
    print_report(report, result_lines)
    return 0


def print_report(report: dict, result_lines) -> None:
    for name, m in report["verification"].items():
        tar = m.get("tar_at_far", {}).get("1e-03")
        print(f"{name}: accuracy {m['accuracy']:.4f} ± {m['accuracy_std']:.4f}, AUC {m['roc_auc']:.4f}, "
              f"TAR@FAR=1e-3 {'-' if tar is None else f'{tar:.4f}'}, XNorm {m['xnorm']:.2f} ({m['pairs']} pairs)")
    if "album" in report:
        for period in ("period1", "period2_incremental", "period2_full"):
            p = report["album"][period]
            b = p.get("breakage")
            extra = (f", mixed {b['mixed_rate']:.3f} disappeared {b['disappeared_rate']:.3f} "
                     f"split {b['split_rate']:.3f}") if b else ""
            print(f"album {period}: pairwise F1 {p['pairwise_f1']:.4f}, BCubed F {p['bcubed_f']:.4f}, "
                  f"{p['clusters']} clusters for {p['identities']} identities{extra}")
    if "model_update" in report:
        u = report["model_update"]
        print(f"model update: verification old/old {u['verification_old_old']}, new/new {u['verification_new_new']}, "
              f"old/new {u['verification_old_new']}; breakage {u['breakage_old_to_new']}")
    for line in result_lines(report):
        print(line)
    print(f"report: {os.path.join(report['output'], 'report.json')}")


def shorthand(argv) -> list[str]:
    """``ijb=<root>`` is ``ijb.root=<root>`` (the IJB settings are the ``ijb`` node's other keys)."""
    return [f"ijb.root={a[len('ijb='):]}" if a.startswith("ijb=") else a for a in argv]


def run(cfg, argv) -> int:
    return body(cfg, command_config.data_overrides(argv))


def main(argv=None) -> int:
    return edge.main(COMMAND, __doc__, run, argv, arguments=shorthand)


if __name__ == "__main__":
    sys.exit(main())
