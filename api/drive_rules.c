/*
 * drive_rules.c: the driver's dispatch of a raft_update (drive_rules.h).
 * Kept free of libuv and of struct kvd_node so the simulation runs this very
 * code: a wrong order here (a message sent before the write it announces is
 * durable, a waiting write kept after leadership is lost) is then an
 * invariant failure in tests/sim rather than a rare field bug.
 */
#include "api/drive_rules.h"

#include <stddef.h>

#ifdef KVD_DRIVE_PLANTS
unsigned kvd_drive_plants;
#endif

/* Step 2: the messages. Returns true when one was dropped because a write
 * it depends on was never submitted. */
static bool send_messages(const struct kvd_drive_ops *ops, const struct raft_update *u)
{
	bool dropped = false;

	for (unsigned i = 0; i < u->n_messages; i++) {
		uint64_t seq = 0;
		if (u->messages[i].needs_sync && !ops->sync_seq(ops->ctx, &seq)) {
			dropped = true; /* its write was never submitted */
			continue;
		}
		if (seq <= ops->completed_seq(ops->ctx) ||
		    KVD_DRIVE_PLANTED(KVD_DRIVE_PLANT_NO_BARRIER))
			seq = 0; /* what it waits for is durable already */
		ops->send(ops->ctx, &u->messages[i], seq);
	}
	return dropped;
}

void kvd_drive_update(const struct kvd_drive_ops *ops, const struct raft_update *u)
{
	if (u->meta_changed)
		ops->submit_meta(ops->ctx, u->term, u->voted_for);
	if (u->truncate_from != 0 || u->n_entries > 0)
		ops->submit_append(ops->ctx, u);
	if (u->snapshot_write != NULL)
		ops->submit_chunk(ops->ctx, u->snapshot_write);
	if (ops->writes_submitted != NULL)
		ops->writes_submitted(ops->ctx, u);
	if (send_messages(ops, u))
		ops->drop_held(ops->ctx);
	if (u->n_apply > 0)
		ops->submit_apply(ops->ctx, u);
	if (u->n_reads > 0 || u->n_reads_failed > 0)
		ops->serve_reads(ops->ctx, u);
	for (unsigned i = 0; i < u->n_changes_done && ops->change_done != NULL; i++)
		ops->change_done(ops->ctx, u->changes_done[i].token, u->changes_done[i].error);
	for (unsigned i = 0; i < u->n_notes && ops->note != NULL; i++)
		ops->note(ops->ctx, &u->notes[i]);
	if (u->state_changed && u->role != RAFT_LEADER &&
	    !KVD_DRIVE_PLANTED(KVD_DRIVE_PLANT_KEEP_WRITES))
		ops->fail_writes(ops->ctx);
	if (u->state_changed && ops->state_changed != NULL)
		ops->state_changed(ops->ctx, u);
	if (u->deadline != 0)
		ops->set_deadline(ops->ctx, u->deadline);
}
