/*
 * wait_rules.h: the client writes waiting for their entry, apart from the
 * applier thread, LevelDB and HTTP, so that the daemon (api/applier.c) and
 * the simulation's clients (tests/sim) complete writes by the same rules
 * (issue 7):
 *  - a write waits on the (index, term) its proposal got;
 *  - when the entry at its index is handed to the applier, the write is
 *    marked handed over if the entry has its term; another term there means
 *    its slot was lost (answered KVD_WAIT_LOST: not committed, 503);
 *  - it is answered KVD_WAIT_APPLIED (200 with the entry's outcome) only
 *    once the apply job that carried its entry is done, in index order;
 *  - a handed-over write is never failed: leadership loss (kvd_wait_fail)
 *    and the deadline (kvd_wait_sweep) answer only the others (503, outcome
 *    unknown).
 *
 * The table does not know what a request is: it keeps the caller's opaque
 * pointer and tag and hands them back to one answer callback.
 *
 * Depends on nothing of api/ but this file's own .c.
 *
 * Thread: one (the daemon's loop thread); not thread-safe.
 */
#ifndef KVD_API_WAIT_RULES_H
#define KVD_API_WAIT_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/raft.h"

/* How a waiting write ends. */
enum kvd_wait_end {
	KVD_WAIT_APPLIED = 0, /* its entry is applied: answer from its outcome */
	KVD_WAIT_LOST,	      /* another term's entry took its index: not committed */
	KVD_WAIT_FAILED,      /* kvd_wait_fail(): leadership lost, outcome unknown */
	KVD_WAIT_TIMEOUT,     /* its deadline passed before it was handed over */
};

/* A client write waiting for its entry. */
struct kvd_wait_write {
	struct kvd_wait_write *next;
	raft_index index;
	raft_term term;
	uint64_t deadline; /* the caller's clock, ms */
	void *req;	   /* the caller's, borrowed until answered */
	uint64_t tag;	   /* the caller's (the daemon: enum kvd_write_kind) */
	bool handed_over;  /* its entry went to the applier with its term */
};

/* Answers w (ended as end; arg: what the call that ended it was given).
 * w is freed when the callback returns; the callback must not call into
 * the table. */
typedef void (*kvd_wait_answer_fn)(void *ctx, const struct kvd_wait_write *w, enum kvd_wait_end end,
				   void *arg);

/* The waiting writes, by index (proposal order). */
struct kvd_wait_table {
	struct kvd_wait_write *head, *tail; /* owned */
	size_t n;
	kvd_wait_answer_fn answer;
	void *ctx; /* the callback's */
};

/* An empty table answering through answer(ctx, ...); ctx is borrowed for
 * the table's life. */
void kvd_wait_init(struct kvd_wait_table *t, kvd_wait_answer_fn answer, void *ctx);

/* Records a write proposed at (index, term), due at deadline; req and tag
 * come back to the callback. Returns 0 or KVD_ENOMEM (nothing recorded). */
int kvd_wait_add(struct kvd_wait_table *t, void *req, uint64_t tag, raft_index index,
		 raft_term term, uint64_t deadline);

/* The committed entry (index, term) is handed to the applier: the write
 * waiting at index is handed over (same term) or answered KVD_WAIT_LOST. */
void kvd_wait_handover(struct kvd_wait_table *t, raft_index index, raft_term term);

/* An apply job ending at applied is done: the handed-over writes up to it
 * are answered KVD_WAIT_APPLIED with arg (the daemon: the job, where each
 * write finds its entry's outcome), in index order. */
void kvd_wait_applied(struct kvd_wait_table *t, raft_index applied, void *arg);

/* Answers KVD_WAIT_FAILED, with arg, every write not handed over. */
void kvd_wait_fail(struct kvd_wait_table *t, void *arg);

/* Answers KVD_WAIT_TIMEOUT every write not handed over whose deadline is
 * at or before now. */
void kvd_wait_sweep(struct kvd_wait_table *t, uint64_t now);

/* How many writes wait. */
size_t kvd_wait_count(const struct kvd_wait_table *t);

/* Frees every waiting write without answering (the process stops). */
void kvd_wait_clear(struct kvd_wait_table *t);

/*
 * Planted bugs (tests/sim only; docs/simulation.md): compiled in only where
 * KVD_WAIT_PLANTS is defined (the simulator's copy of this file), where
 * kvd_wait_plants selects them; a constant false everywhere else.
 */
#define KVD_WAIT_PLANT_ACK_OTHER_TERM	1u /* another term at its index: handed over */
#define KVD_WAIT_PLANT_ACK_BEFORE_APPLY 2u /* answered at hand-over, not after the job */
#define KVD_WAIT_PLANT_FAIL_HANDED_OVER 4u /* kvd_wait_fail() fails handed-over writes too */
#ifdef KVD_WAIT_PLANTS
extern unsigned kvd_wait_plants;
#define KVD_WAIT_PLANTED(bit) ((kvd_wait_plants & (bit)) != 0)
#else
#define KVD_WAIT_PLANTED(bit) false
#endif

#endif
