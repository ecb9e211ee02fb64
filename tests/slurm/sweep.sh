#!/usr/bin/env bash
# jobs/robustness-sweep.sbatch on a tiny grid: 2 attacks x 1 rule (median, f = 1, rank 3
# attacking, 4 ranks, 24 steps) as `sbatch --array=1-2`. Both tasks complete, results.csv gets
# its header and exactly one row per task with the task's attack, the rule, f, exit code 0, an
# accuracy, and a checksum equal to what the task's own log reports; per-task row files too.
# Usage: sweep.sh DAA_SWARM INPUT   (exit 77: no Slurm or no data)
set -euo pipefail
daa_swarm=$1 input=$2
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

start_cluster
export DAA_BIN=$daa_swarm DAA_INPUT=$input DAA_RESULTS=$work/results
export DAA_ATTACKS="sign-flip,gaussian" DAA_RULES=median DAA_F=1
export DAA_SET="train.max_steps=24 train.eval_each_epoch=false log.every_steps=8 checkpoint.every_steps=0"
t0=$SECONDS
job=$(submit --array=1-2 --ntasks-per-node=4 "$root/jobs/robustness-sweep.sbatch")
wait_job "$job" 240
echo "sweep $job done after $((SECONDS - t0)) s:"
job_states "$job"
[ "$(job_states "$job" | grep -c 'JobState=COMPLETED Restarts=0 ExitCode=0:0')" == 2 ] \
  || { cat "$work"/daa-swarm-sweep-"$job"_*.out; fail "not both tasks completed"; }
csv=$work/results/results.csv
[ -f "$csv" ] || fail "no $csv"
cat "$csv"
[ "$(head -1 "$csv")" == "attack,rule,f,faulty,exit,test_accuracy,suspects,checksum,seconds,array_job,array_task" ] \
  || fail "wrong header"
[ "$(grep -c '' "$csv")" == 3 ] || fail "expected a header and 2 rows"
for task in 1 2; do
  attack=$([ $task == 1 ] && echo sign-flip || echo gaussian)
  row=$(grep -E "^$attack,median,1,\"3\",0,[0-9.]+,\"[0-9 ]*\",[0-9a-f]{16},[0-9]+,$job,$task$" "$csv") \
    || fail "no complete row for task $task ($attack)"
  log=$work/daa-swarm-sweep-${job}_$task.out
  [ "$(checksum "$log" | cut -d' ' -f2)" == "$(cut -d, -f8 <<<"$row")" ] || fail "task $task: checksum differs from its log"
  grep -q "^robustness-sweep.sbatch: task $task of 1-2: attack $attack, rule median, f 1, faulty ranks \[3\] on 4 ranks" "$log" \
    || { cat "$log"; fail "task $task: no grid line"; }
  [ "$(cat "$work/results/$attack-median-f1.row.csv")" == "$row" ] || fail "task $task: row file differs"
done
echo "sweep: 2 tasks, 2 rows in results.csv"
