#!/usr/bin/env bash
# The experiment backlog of issues 9 (benchmark truth) and 10 (synthesis), in the order the
# results are needed: run it, stop it at any point (Ctrl-C, kill, end of a sitting), run it
# again to continue. Nothing finished is recomputed:
#   - every grid resumes its own runs/<grid> (a killed run resumes from its last finished round);
#   - finished runs are linked from the committed JSON archives results/<grid> of this grid and of
#     the grids it shares runs with (same run id = same config and seed; e.g. the `full` and
#     `mc-dropout-fast` runs of lgg_dai serve lgg_mc_fast_vs_full and lgg_synthesis);
#   - each grid's finished runs are archived to results/<grid> when the grid completes (commit
#     them), so a fresh checkout continues where this machine stopped; before that, every
#     synthetic batch is re-measured against its seed's full-data model (synthesis.requality:
#     the archive keeps JSON only, so this cannot be done later).
# Cost on 2 CPU cores (docs/benchmarks.md, docs/results.md): 12-30 min per run per worker at
# 64 px, up to about 1 h for a synthesis arm; the whole backlog is a few dozen hours, so it
# runs across many sittings.
#
#   bash experiments/rerun_all.sh               # all grids, 2 workers
#   WORKERS=1 bash experiments/rerun_all.sh lgg_synthesis pneumonia   # some grids only
#   DRY=1 bash experiments/rerun_all.sh        # list each grid's runs and what it reuses
#   SEEDS=0,1 bash experiments/rerun_all.sh lgg_dai_ablation   # only these seeds this sitting
#
# Machine-matched seeds (bench --match-machine, on unless MATCH_MACHINE=0/false/no/off):
# training is not bit-reproducible across machines and a seed's arms share round 0, so in every
# seed with an arm to run here, archived runs made on another machine are run again here
# instead of linked (the `full` references excepted), and the archive step replaces their
# archived copies (archive --supersede-elsewhere; the old copies move to
# results/<grid>/superseded/); seeds already complete are linked as they are. A sitting lasts a
# few hours and the next may be another machine: with SEEDS (every grid here has seeds 0-4),
# start only the seeds it can finish; on a fresh checkout a seed left half done is rerun whole
# where it continues (where runs/ outlives a change of machine, its finished runs are kept and
# named, and an unfinished one resumes).
#
# Needs the real data (ACTIVESYNTH_DATA, else ../shared/data) and an installed activesynth.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${WORKERS:-2}
PY=${PYTHON:-python}
flags=()
archive_flags=()
case "${MATCH_MACHINE:-1}" in
  0 | false | no | off) ;;
  *) flags+=(--match-machine) && archive_flags+=(--supersede-elsewhere) ;;
esac
if [ -n "${SEEDS:-}" ]; then flags+=(--seeds "$SEEDS"); fi

# grid, then the grids whose archives hold runs it shares. Order = value for the issues per CPU
# hour; new runs left at the end of 2026-12-02 in brackets (DRY=1 prints the current figures):
ORDER=(
  "lgg_dai"                              # issue 9's rerun, the product's main claim [done]
  # fast vs. full and LGG synthesis pair new arms with lgg_dai's mc-dropout-fast runs, whose
  # seeds 0-3 were made on another machine (round 0 differs by up to 0.03 Dice: the report's
  # round-0 check). So mc-dropout-fast s0-3 were rerun on the machine of the new arms and archived
  # in results/lgg_mc_fast_vs_full, which therefore comes before results/lgg_dai below (the
  # first archive holding a run id wins).
  "lgg_mc_fast_vs_full lgg_dai"          # issue 9: fast vs. full MC dropout [done 12-01]
  # its own full runs (min_steps 3000, docs/benchmarks.md: patience alone stopped a full-pool
  # run early on this machine); lgg_dai keeps its first-machine full runs, matched to its arms
  "lgg_synthesis lgg_mc_fast_vs_full lgg_dai"   # issue 10: synthesis on top of selection, LGG
  "jsrt_lung_synthesis jsrt_lung"        # issue 10: the paper's Table 1, lung fields [done 12-01]
  "jsrt_nodule_synthesis"                # issue 10: the paper's Table 1, nodules [done 12-01]
  "pneumonia"                            # issue 9: 28 px [done 12-02]
  "jsrt_lung jsrt_lung_synthesis"        # issue 9: strategies on lung fields [done 12-02, machine-matched]
  "jsrt_nodule"                          # issue 9: strategies on nodules [done 12-02]
  # (its shared runs, e.g. gradient-guided s0-3, come from lgg_dai's first machine: if the
  # report's round-0 check shows a split, rerun them where the ablation arms ran, as above)
  "lgg_dai_ablation lgg_dai lgg_synthesis"   # issue 9: Dai et al.'s ablations [35 with --match-machine: 7 per seed; 5 full runs linked; seeds 1-4 done 12-02 on one machine, seed 0 on another (its random arms were made there), done 12-02]
)

run_grid() {
  local grid=$1
  shift
  local reuse=()
  for r in "$grid" "$@"; do
    if [ -d "results/$r/runs" ]; then reuse+=(--reuse "results/$r"); fi
  done
  echo "== $(date -u +%H:%M:%S) $grid (${reuse[*]:-no archive to reuse})"
  if [ -n "${DRY:-}" ]; then
    "$PY" -m activesynth.cli bench "experiments/$grid.json" --out "/tmp/rerun_all_dry/$grid" \
      --dry-run ${reuse[@]+"${reuse[@]}"} ${flags[@]+"${flags[@]}"} | tail -1
    return
  fi
  "$PY" -m activesynth.cli bench "experiments/$grid.json" --out "runs/$grid" \
    --workers "$WORKERS" ${reuse[@]+"${reuse[@]}"} ${flags[@]+"${flags[@]}"}
  # synthetic batches against each seed's full-data model, while pool.npz is still there (a
  # `full` run linked from an archive has no checkpoint: its recipe is retrained in
  # runs/<grid>/references; exit 3: some runs could not be measured, the warning names them,
  # and archiving goes on so the grid's progress is kept)
  "$PY" -m activesynth.synthesis.requality "runs/$grid" || [ $? -eq 3 ]
  "$PY" -m activesynth.bench.archive "runs/$grid" "results/$grid" \
    ${archive_flags[@]+"${archive_flags[@]}"}
}

for entry in "${ORDER[@]}"; do
  read -r -a parts <<<"$entry"
  if [ $# -gt 0 ]; then
    wanted=0
    for g in "$@"; do [ "$g" = "${parts[0]}" ] && wanted=1; done
    [ $wanted = 1 ] || continue
  fi
  run_grid "${parts[@]}"
done
