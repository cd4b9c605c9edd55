"""Evaluate a saved embedding model: ``.bin`` sets, an image folder, albums, a model update, IJB, retrieval.

    python -m trainer.evaluate model_path=runs/x/export/embedding.keras bin_files=[lfw.bin,agedb_30.bin]
    python -m trainer.evaluate model_path=... folder=/data/people pairs=3000 seed=0
    python -m trainer.evaluate model_path=... album=true                     # built-in held-out families
    python -m trainer.evaluate model_path=... album=true data=folder data.path=/p data.families_file=f.csv
    python -m trainer.evaluate model_path=new.keras old_model_path=old.keras album=true
    python -m trainer.evaluate model_path=... ijb=/data/IJB_release/IJBC ijb.subset=IJBC
    python -m trainer.evaluate model_path=... retrieval=true                 # built-in held-out identities
    python -m trainer.evaluate model_path=... retrieval=true folder=/q retrieval_gallery=/g

Writes ``report.json``, ``roc.png`` (``ijb_roc.png`` for IJB) and ``summary.html``
to ``output`` (default: ``evaluation/`` beside the model's folder).
``data=...``/``data.<key>=...`` pick the data set for albums and retrieval as
in training; its image size follows the model.
"""

from __future__ import annotations

import os
import sys

from trainer.evaluation.suite import DEFAULTS, evaluate, result_lines

USAGE = ("usage: python -m trainer.evaluate model_path=<model.keras> [bin_files=[a.bin,...]] "
         "[folder=<identity folders>] [pairs=3000] [seed=0] [album=true] [old_model_path=<model.keras>] "
         "[threshold=auto|0.5] [linkage=average] [ijb=<IJB root> ijb.subset=IJBC|IJBB] "
         "[retrieval=true] [retrieval_gallery=<identity folders>] [retrieval_k=[1,5,10]] "
         "[output=<dir>] [data=<source> data.<key>=...]")



def parse(argv) -> tuple[dict, list[str]]:
    from omegaconf import OmegaConf

    from trainer.registry import ConfigError, did_you_mean, to_plain

    ours, data = [], []
    for arg in argv:
        key, sep, _ = arg.partition("=")
        if not sep:
            raise ConfigError(f"unexpected argument {arg!r}; {USAGE}")
        if key == "data" or key.startswith("data."):
            data.append(arg)
        elif key == "ijb" or key.startswith("ijb."):
            # ijb=<root> and ijb.<key>=... together: the root is the node's `root` key.
            ours.append("ijb.root" + arg[len("ijb"):] if key == "ijb" else arg)
        elif key in DEFAULTS:
            ours.append(arg)
        else:
            raise ConfigError(f"unknown option '{key}': {did_you_mean(key, DEFAULTS)}")
    return to_plain(OmegaConf.from_dotlist(ours)), data


def main(argv=None) -> int:
    from trainer.commands.cli import start_command
    from trainer.registry import ConfigError

    argv = sys.argv[1:] if argv is None else argv
    if start_command(argv, f"{__doc__.strip()}\n\n{USAGE}"):
        return 0

    try:
        options, data = parse(argv)
        report = evaluate(options, data)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, m in report["verification"].items():
        tar = m["tar_at_far"].get("1e-03")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
