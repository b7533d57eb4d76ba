#!/usr/bin/env bash
# Experiment I (SimSiam) + II (base, k-means, experts, distillation, +D ablation) on one subset of
# real CIFAR-10 images, through the same `imbssl` commands the Snakemake rules run, without
# Snakemake (for a machine that has a GPU but no Snakemake). Prints the result JSONs at the end.
#
#   benchmarks/cifar_experiment2.sh ROOT_OF_IMAGE_FOLDER OUT_DIR [SUBSET] [SCALE]
#
# SCALE divides every epoch budget (1 = the paper's 300 / 40+180+80 epochs).
set -euo pipefail
root=$1 out=$2 subset=${3:-imbalanced-p100} scale=${4:-1}
k=${K:-5} width=${WIDTH:-64} batch=${BATCH:-512}
# PRETRAIN_ARGS: extra flags for pretraining (model, heads); TRAIN_ARGS: for every training job.
pretrain_args=${PRETRAIN_ARGS:-} train_args=${TRAIN_ARGS:-}
ep() { echo $(( $1 / scale > 1 ? $1 / scale : 1 )); }
eval_subset=${subset/imbalanced-/balanced-}
mkdir -p "$out"
imbssl prepare-data --name folder --root "$root" --out-train "$out/train.npz" --out-test "$out/test.npz" \
  --classes airplane automobile bird cat deer dog frog horse ship truck
imbssl subsets --train-data "$out/train.npz" --imbalance-factors 10 100 --seed 0 --out-dir "$out/subsets"
common=(--train-data "$out/train.npz" --test-data "$out/test.npz" --batch-size "$batch" $train_args)
pre=("${common[@]}" --width "$width" $pretrain_args)
t0=$(date +%s)
imbssl pretrain --method simsiam "${pre[@]}" --subset "$out/subsets/$subset.csv" --epochs "$(ep 300)" \
  --out-dir "$out/simsiam"
t1=$(date +%s)
imbssl pretrain --method simsiam "${pre[@]}" --subset "$out/subsets/$subset.csv" --epochs "$(ep 40)" \
  --out-dir "$out/base"
imbssl features --model "$out/base/model.pt" --train-data "$out/train.npz" --subset "$out/subsets/$subset.csv" \
  --out "$out/features.pt"
imbssl cluster --features "$out/features.pt" --subset "$out/subsets/$subset.csv" --train-data "$out/train.npz" \
  --subset-name "$subset" --k "$k" --out-dir "$out/kmeans"
imbssl partition-random --clusters-dir "$out/kmeans" --subset "$out/subsets/$subset.csv" \
  --train-data "$out/train.npz" --subset-name "$subset" --out-dir "$out/random"
for kind in kmeans random; do
  experts=()
  for j in $(seq 0 $((k - 1))); do
    imbssl pretrain --method simsiam "${pre[@]}" --subset "$out/$kind/cluster$j.csv" --epochs "$(ep 180)" \
      --init "$out/base/model.pt" --out-dir "$out/experts-$kind/cluster$j"
    experts+=("$out/experts-$kind/cluster$j/model.pt")
  done
  imbssl distill --base "$out/base/model.pt" --experts "${experts[@]}" --clusters "$out/$kind/assignments.csv" \
    "${common[@]}" --subset "$out/subsets/$subset.csv" --epochs "$(ep 80)" --out-dir "$out/student-$kind"
done
t2=$(date +%s)
for run in simsiam:simsiam:SimSiam student-kmeans:student-kmeans:SimSiam+C+D student-random:student-random:SimSiam+D; do
  IFS=: read -r dir name label <<<"$run"
  imbssl evaluate --model "$out/$dir/model.pt" --train-data "$out/train.npz" --test-data "$out/test.npz" \
    --eval-subset "$out/subsets/$eval_subset.csv" --pretrain-subset "$out/subsets/$subset.csv" \
    --subset-name "$subset" --method-name "$label" --out "$out/eval-$name.json"
done
echo "seconds: baseline $((t1 - t0)), experiment II $((t2 - t1))"
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for p in sorted(out.glob("eval-*.json")):
    r = json.loads(p.read_text())
    print(f"{r['method']:12s} {r['subset']} n={r['n']} top1={r['top1']:.2f} knn={r['knn_top1']:.2f}")
for kind in ("kmeans", "random"):
    s = json.loads((out / kind / "summary.json").read_text())
    print(kind, "sizes", s["sizes"], "nmi", round(s["nmi"], 4), "ari", round(s["ari"], 4))
PY
