/*
 * plant.h: planted bugs, for the simulation's self-test only.
 *
 * Each planted bug re-introduces, behind one `if (RAFT_PLANTED(name))`, a
 * defect that the core once had or that the simulation is meant to catch
 * (docs/simulation.md, "Planted bugs, automated"). KVD_PLANT is 0 in every
 * normal build, so each RAFT_PLANTED() is the constant false and the planted
 * branch is compiled out of the daemon and the unit tests. tests/sim's CMake
 * compiles the files that include this header once more per plant with
 * -DKVD_PLANT=RAFT_PLANT_<name> (kvd_raft_plant_<name>, linked into
 * sim_plant_<name>), and ctest sim_plants checks that the CI seeds catch
 * every one. The numbers only tell the plants apart (none is 0).
 */
#ifndef KVD_RAFT_PLANT_H
#define KVD_RAFT_PLANT_H

#ifndef KVD_PLANT
#define KVD_PLANT 0
#endif

/* election.c: a granted vote is set in memory, no meta write requested. */
#define RAFT_PLANT_vote_not_persisted 1
/* replication.c: an entry of an earlier term commits by counting replicas. */
#define RAFT_PLANT_earlier_term_commit 2
/* replication.c: a follower keeps a conflicting suffix (no truncation). */
#define RAFT_PLANT_keep_conflicting_suffix 3
/* read.c: a read index is confirmed without a heartbeat round. */
#define RAFT_PLANT_read_without_heartbeat 4
/* replication.c: a joint configuration commits with the new majority only. */
#define RAFT_PLANT_joint_new_majority_only 5
/* membership.c: promoting a server that already is a learner skips the
 * catch-up wait. */
#define RAFT_PLANT_learner_promotion 6
/* replication.c: a "busy" refusal (follower receiving or installing a
 * snapshot) is taken as a log conflict and walks next back. */
#define RAFT_PLANT_busy_walkback 7
/* snapshot.c: a lost chunk is resent only after snapshot_timeout, not when
 * the follower is next heard from. */
#define RAFT_PLANT_lost_chunk_wait 8
/* snapshot.c: a follower already holding the snapshot answers UINT64_MAX,
 * which the JSON wire cannot carry (the offset RAFT_SNAPSHOT_COVERED fixed). */
#define RAFT_PLANT_covered_offset 9
/* raft.c: any lost request to a peer (a heartbeat's 503) restarts the
 * snapshot stream running to it from offset 0. */
#define RAFT_PLANT_unreachable_restart 10

/* True in the build that plants bug `name`; a constant in every build. */
#define RAFT_PLANTED(name) (KVD_PLANT == RAFT_PLANT_##name)

#endif
