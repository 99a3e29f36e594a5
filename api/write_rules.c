/*
 * write_rules.c: the writer's batch and completion rules (write_rules.h).
 * The ring of append jobs in flight grows by doubling; it holds one record
 * per submitted append job (and log reset) not yet completed.
 */
#include "api/write_rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvd/errors.h"

int kvd_writer_batch_end(struct raft_log_store *store, bool appended, int failed, char *errmsg)
{
	int rv = failed;

	if (failed != 0) {
		/* The batch's fdatasync does not run: whatever it appended is
		 * not durable, and the store must not say otherwise. A failed
		 * discard fails the store; the batch keeps its own error. */
		(void)raft_log_store_discard_unsynced(store, errmsg);
	} else if (appended) {
		rv = raft_log_store_sync(store, errmsg);
	}
	return rv;
}

/* Doubles the ring, keeping the jobs in order from index 0. */
static int track_grow(struct kvd_writer_track *t)
{
	size_t cap = t->cap == 0 ? 16 : t->cap * 2;
	struct kvd_writer_inflight *items = malloc(cap * sizeof(*items));
	int rv = KVD_ENOMEM;

	if (items != NULL) {
		for (size_t i = 0; i < t->n; i++) {
			items[i] = t->items[(t->head + i) % t->cap];
		}
		free(t->items);
		t->items = items;
		t->cap = cap;
		t->head = 0;
		rv = 0;
	}
	return rv;
}

int kvd_writer_track_append(struct kvd_writer_track *t, uint64_t seq, raft_index truncate_from)
{
	int rv = t->n == t->cap ? track_grow(t) : 0;

	if (rv == 0) {
		t->items[(t->head + t->n) % t->cap] =
		    (struct kvd_writer_inflight){.seq = seq, .truncate_from = truncate_from};
		t->n++;
	} else {
		t->lost = true;
	}
	return rv;
}

void kvd_writer_track_lost(struct kvd_writer_track *t)
{
	t->lost = true;
}

bool kvd_writer_track_sync_seq(const struct kvd_writer_track *t, uint64_t submitted, uint64_t *seq)
{
	if (!t->lost) {
		*seq = submitted;
	}
	return !t->lost;
}

bool kvd_writer_track_done(struct kvd_writer_track *t, uint64_t seq,
			   const struct raft_entry *entries, size_t n, raft_index *index,
			   raft_term *term)
{
	raft_index limit = 0; /* lowest later truncation; 0: none */
	raft_index last;
	bool report;

	while (t->n > 0 && t->items[t->head].seq <= seq) {
		t->head = (t->head + 1) % t->cap;
		t->n--;
	}
	for (size_t i = 0; i < t->n; i++) {
		raft_index from = t->items[(t->head + i) % t->cap].truncate_from;
		if (from != 0 && (limit == 0 || from < limit)) {
			limit = from;
		}
	}
	/* Nothing written, or all of it about to be replaced: no report. */
	report = n > 0 && (limit == 0 || limit > entries[0].index);
	if (report) {
		last = entries[n - 1].index;
		if (limit != 0 && limit <= last) {
			last = limit - 1;
		}
		*index = last;
		*term = entries[last - entries[0].index].term;
	}
	return report;
}

void kvd_writer_track_clear(struct kvd_writer_track *t)
{
	t->head = 0;
	t->n = 0;
	t->lost = false;
}

void kvd_writer_track_free(struct kvd_writer_track *t)
{
	free(t->items);
	*t = (struct kvd_writer_track){0};
}
