#!/usr/bin/env bash
# arcface_torch's published recipes, one command each, and the numbers arcface_torch publishes for
# them (its README's model zoo; IJB-C 1:1 TAR in %, as insightface's ijb_11.py computes it).
# Each needs the data set (insightface RecordIO with lfw.bin, cfp_fp.bin, agedb_30.bin beside it)
# and, as published, 8 GPUs; every value and its source: docs/recipes.md.
#
#   bash benchmarks/arcface_torch_recipes.sh ms1mv3_r50 /data/ms1m-retinaface-t1 /data/IJB_release/IJBC
#
# Trains runs/arcface_torch_<recipe>/, then evaluates IJB-C; compare the printed 1e-04 and 1e-05.
#
# recipe          command                                                     IJB-C 1e-4  IJB-C 1e-5
# ms1mv3_r50      python -m trainer experiment=arcface_torch_ms1mv3_r50       96.37       94.47
# glint360k_r100  python -m trainer experiment=arcface_torch_glint360k_r100   97.55       96.38
# webface42m_r50  python -m trainer experiment=arcface_torch_webface42m_r50   97.53       96.16
set -euo pipefail
cd "$(dirname "$0")/.."
recipe="${1:?recipe: ms1mv3_r50 | glint360k_r100 | webface42m_r50}"
data="${2:?the data set folder (train.rec, train.idx, property, *.bin)}"
ijb="${3:-}"
shift $(( $# < 3 ? $# : 3 ))

case "$recipe" in
  ms1mv3_r50)     python -m trainer experiment=arcface_torch_ms1mv3_r50 data.path="$data" run.name=arcface_torch_ms1mv3_r50 "$@" ;;
  glint360k_r100) python -m trainer experiment=arcface_torch_glint360k_r100 data.path="$data" run.name=arcface_torch_glint360k_r100 "$@" ;;
  webface42m_r50) python -m trainer experiment=arcface_torch_webface42m_r50 data.path="$data" run.name=arcface_torch_webface42m_r50 "$@" ;;
  *) echo "unknown recipe $recipe" >&2; exit 2 ;;
esac
if [ -n "$ijb" ]; then
  python -m trainer.evaluate model="runs/arcface_torch_$recipe/export/embedding.keras" ijb="$ijb" ijb.subset=IJBC
fi
