#!/bin/sh
# sim_plants.sh: ctest sim_plants. Runs each planted-bug simulator
# (sim_plant_<name>, raft/plant.h) over seeds 1..SEEDS of 5,000 steps and
# fails unless every plant is caught: an invariant must fire (exit 1 with a
# FAIL line). A plant that passes all seeds, or a simulator that crashes or
# cannot run, is a failure of this test. vote_not_persisted runs twice: the
# second time (plant 1b) with the persist-before-send check off
# (SIM_PLANT_NO_PERSIST_CHECK=1), so the second line of defence is tested.
#
# usage: sim_plants.sh BINARY_DIR SEEDS PLANT[:SEEDS]...
# (PLANT:N runs that plant over seeds 1..N instead; docs/simulation.md says
# which plant needs more than the CI seeds and why.)
dir=$1
seeds=$2
shift 2
status=0
run() { # name binary [env assignment]
	name=$1
	bin=$2
	out=$(env $3 "$bin" --seeds "$n" --steps 5000 2>&1)
	rc=$?
	fail=$(printf '%s\n' "$out" | grep '^FAIL seed' | head -n 1)
	took=$(printf '%s\n' "$out" | grep 'seeds run' | head -n 1)
	if [ "$rc" -eq 1 ] && [ -n "$fail" ]; then
		echo "caught $name: $fail $took"
	else
		echo "NOT CAUGHT $name (exit $rc): $(printf '%s\n' "$out" | tail -n 3)"
		status=1
	fi
}
for arg in "$@"; do
	plant=${arg%%:*}
	n=$seeds
	case $arg in *:*) n=${arg#*:} ;; esac
	run "$plant" "$dir/sim_plant_$plant" ""
	if [ "$plant" = vote_not_persisted ]; then
		run "$plant (1b, persist-before-send check off)" "$dir/sim_plant_$plant" \
			SIM_PLANT_NO_PERSIST_CHECK=1
	fi
done
exit $status
