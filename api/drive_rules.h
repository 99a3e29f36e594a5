/*
 * drive_rules.h: how the node driver turns one raft_update into work, apart
 * from libuv and struct kvd_node, so that the daemon (api/node.c) and the
 * simulation (tests/sim/sim_node.c) run the same dispatch (issue 7).
 *
 * The order is raft.h's contract for a driver:
 *  1. the writes, in update order on the one writer: term/vote (meta), then
 *     the log truncation and append, then the received snapshot chunk;
 *  2. the messages: one flagged needs_sync leaves only once the writer has
 *     completed every job submitted before it (its barrier: the writer's
 *     last submitted sequence, or 0 when that is durable already); when a
 *     write it depends on was never submitted (out of memory), it is
 *     dropped, and then every held message is dropped and the requests left
 *     without an answer are answered (refused);
 *  3. the committed entries to the applier; the reads the core confirmed or
 *     failed; the membership changes done; the core's notes;
 *  4. on a state change away from leader, every write waiting for its
 *     commit fails (503, outcome unknown), then the state change itself;
 *  5. the next deadline of the core.
 *
 * Depends on nothing of api/ but this file's own .c.
 *
 * Thread: the caller's (the daemon's loop thread); no state of its own but
 * the planted-bug switch below.
 */
#ifndef KVD_API_DRIVE_RULES_H
#define KVD_API_DRIVE_RULES_H

#include <stdbool.h>
#include <stdint.h>

#include "raft/raft.h"

/* What the dispatch asks of the driver. ctx is passed to every callback;
 * pointers into the update are borrowed for the call. Callbacks marked
 * optional may be NULL (nothing to do). */
struct kvd_drive_ops {
	void *ctx;
	/* The writer's jobs, in this order. */
	void (*submit_meta)(void *ctx, raft_term term, const char *voted_for);
	void (*submit_append)(void *ctx, const struct raft_update *u); /* truncate + entries */
	void (*submit_chunk)(void *ctx, const struct raft_snapshot *chunk);
	/* Optional: the update's writes are submitted, its messages not yet
	 * sent (the simulation's checks run here). */
	void (*writes_submitted)(void *ctx, const struct raft_update *u);
	/* The writer: true with *seq = the last submitted job's sequence, or
	 * false when a job the core counts on was never submitted. */
	bool (*sync_seq)(void *ctx, uint64_t *seq);
	/* The writer: every job up to this sequence has completed. */
	uint64_t (*completed_seq)(void *ctx);
	/* The transport: sends m, held until the writer completes barrier
	 * (0: at once). */
	void (*send)(void *ctx, const struct raft_message *m, uint64_t barrier);
	/* The transport: drops every held message and answers the requests
	 * left without an answer. */
	void (*drop_held)(void *ctx);
	void (*submit_apply)(void *ctx, const struct raft_update *u); /* n_apply > 0 */
	void (*serve_reads)(void *ctx, const struct raft_update *u);  /* ready or failed */
	void (*change_done)(void *ctx, uint64_t token, int error);    /* optional */
	void (*note)(void *ctx, const struct raft_note *note);	      /* optional */
	/* Leadership lost: every waiting write not yet handed to the applier
	 * fails (503, outcome unknown). */
	void (*fail_writes)(void *ctx);
	/* Optional: u->state_changed (role, term, leader or commit moved). */
	void (*state_changed)(void *ctx, const struct raft_update *u);
	/* The core wants a TICK at its local time deadline (u->deadline != 0). */
	void (*set_deadline)(void *ctx, raft_time deadline);
};

/* Carries out the update u through ops, in the order above. */
void kvd_drive_update(const struct kvd_drive_ops *ops, const struct raft_update *u);

/*
 * Planted bugs (tests/sim only; docs/simulation.md): compiled in only where
 * KVD_DRIVE_PLANTS is defined (the simulator's copy of this file), where
 * kvd_drive_plants selects them; a constant false everywhere else.
 */
#define KVD_DRIVE_PLANT_NO_BARRIER  1u /* a needs_sync message is sent with barrier 0 */
#define KVD_DRIVE_PLANT_KEEP_WRITES 2u /* leadership loss does not fail waiting writes */
#ifdef KVD_DRIVE_PLANTS
extern unsigned kvd_drive_plants;
#define KVD_DRIVE_PLANTED(bit) ((kvd_drive_plants & (bit)) != 0)
#else
#define KVD_DRIVE_PLANTED(bit) false
#endif

#endif
