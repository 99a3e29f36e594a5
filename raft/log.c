/*
 * log.c: the Raft core's in-memory log.
 *
 * A growable array of entries, each owning a malloc'ed copy of its data.
 * Invariants: entries[i].index == offset + 1 + i; terms never decrease along
 * the log (§5.3). Compaction (§7) and truncation (a follower's conflicting
 * suffix, §5.3) free the data of the entries they drop.
 */
#include "raft/log.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void raft_log_init(struct raft_log *l)
{
	memset(l, 0, sizeof(*l));
}

static void entry_free(struct raft_entry *e)
{
	free((void *)e->data);
	e->data = NULL;
}

void raft_log_close(struct raft_log *l)
{
	for (unsigned i = 0; i < l->n; i++)
		entry_free(&l->entries[i]);
	free(l->entries);
	raft_log_init(l);
}

void raft_log_reset(struct raft_log *l, raft_index index, raft_term term)
{
	raft_log_close(l);
	l->offset = index;
	l->offset_term = term;
}

int raft_log_append(struct raft_log *l, const struct raft_entry *e)
{
	void *data = NULL;

	assert(e->index == l->offset + l->n + 1);
	if (l->n == l->cap) {
		unsigned cap = l->cap ? l->cap * 2 : 64;
		struct raft_entry *a = realloc(l->entries, cap * sizeof(*a));
		if (a == NULL)
			return KVD_ENOMEM;
		l->entries = a;
		l->cap = cap;
	}
	if (e->len > 0) {
		data = malloc(e->len);
		if (data == NULL)
			return KVD_ENOMEM;
		memcpy(data, e->data, e->len);
	}
	l->entries[l->n] = *e;
	l->entries[l->n].data = data;
	l->n++;
	l->bytes += e->len;
	return 0;
}

void raft_log_truncate(struct raft_log *l, raft_index index)
{
	assert(index > l->offset);
	while (l->n > 0 && l->entries[l->n - 1].index >= index) {
		l->n--;
		l->bytes -= l->entries[l->n].len;
		entry_free(&l->entries[l->n]);
	}
}

void raft_log_compact(struct raft_log *l, raft_index index)
{
	unsigned k;

	if (index <= l->offset)
		return;
	assert(index <= raft_log_last_index(l));
	k = (unsigned)(index - l->offset);
	l->offset_term = l->entries[k - 1].term;
	for (unsigned i = 0; i < k; i++) {
		l->bytes -= l->entries[i].len;
		entry_free(&l->entries[i]);
	}
	memmove(l->entries, l->entries + k, (l->n - k) * sizeof(*l->entries));
	l->n -= k;
	l->offset = index;
}

raft_index raft_log_last_index(const struct raft_log *l)
{
	return l->offset + l->n;
}

raft_term raft_log_last_term(const struct raft_log *l)
{
	return l->n > 0 ? l->entries[l->n - 1].term : l->offset_term;
}

raft_term raft_log_term_at(const struct raft_log *l, raft_index index)
{
	if (index == l->offset)
		return l->offset_term;
	if (index < l->offset || index > l->offset + l->n)
		return 0;
	return l->entries[index - l->offset - 1].term;
}

const struct raft_entry *raft_log_get(const struct raft_log *l, raft_index index)
{
	if (index <= l->offset || index > l->offset + l->n)
		return NULL;
	return &l->entries[index - l->offset - 1];
}
