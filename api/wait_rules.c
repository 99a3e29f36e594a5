/*
 * wait_rules.c: the waiting-writes table (wait_rules.h). A singly linked
 * list in proposal order, which is index order: proposals get increasing
 * indexes, and a new leader's proposals come after every write of the
 * old term was failed. The table is small (the writes of the last few
 * loop iterations), so each operation walks it.
 */
#include "api/wait_rules.h"

#include <stdlib.h>

#include "kvd/errors.h"

#ifdef KVD_WAIT_PLANTS
unsigned kvd_wait_plants;
#endif

void kvd_wait_init(struct kvd_wait_table *t, kvd_wait_answer_fn answer, void *ctx)
{
	*t = (struct kvd_wait_table){.answer = answer, .ctx = ctx};
}

int kvd_wait_add(struct kvd_wait_table *t, void *req, uint64_t tag, raft_index index,
		 raft_term term, uint64_t deadline)
{
	struct kvd_wait_write *w = calloc(1, sizeof(*w));
	int rv = KVD_ENOMEM;

	if (w != NULL) {
		*w = (struct kvd_wait_write){
		    .index = index, .term = term, .deadline = deadline, .req = req, .tag = tag};
		if (t->tail != NULL)
			t->tail->next = w;
		else
			t->head = w;
		t->tail = w;
		t->n++;
		rv = 0;
	}
	return rv;
}

/* Unlinks *pp (prev: the write before it, NULL at the head), answers it and
 * frees it. */
static void answer(struct kvd_wait_table *t, struct kvd_wait_write **pp,
		   struct kvd_wait_write *prev, enum kvd_wait_end end, void *arg)
{
	struct kvd_wait_write *w = *pp;

	*pp = w->next;
	if (t->tail == w)
		t->tail = prev;
	t->n--;
	t->answer(t->ctx, w, end, arg);
	free(w);
}

void kvd_wait_handover(struct kvd_wait_table *t, raft_index index, raft_term term)
{
	struct kvd_wait_write **pp = &t->head;
	struct kvd_wait_write *prev = NULL;

	while (*pp != NULL && (*pp)->index <= index) {
		struct kvd_wait_write *w = *pp;
		if (w->index == index && !w->handed_over) {
			if (w->term == term || KVD_WAIT_PLANTED(KVD_WAIT_PLANT_ACK_OTHER_TERM)) {
				w->handed_over = true;
			} else {
				answer(t, pp, prev, KVD_WAIT_LOST, NULL);
				continue;
			}
			if (KVD_WAIT_PLANTED(KVD_WAIT_PLANT_ACK_BEFORE_APPLY)) {
				answer(t, pp, prev, KVD_WAIT_APPLIED, NULL);
				continue;
			}
		}
		prev = w;
		pp = &w->next;
	}
}

void kvd_wait_applied(struct kvd_wait_table *t, raft_index applied, void *arg)
{
	while (t->head != NULL && t->head->index <= applied && t->head->handed_over)
		answer(t, &t->head, NULL, KVD_WAIT_APPLIED, arg);
}

void kvd_wait_fail(struct kvd_wait_table *t, void *arg)
{
	struct kvd_wait_write **pp = &t->head;
	struct kvd_wait_write *prev = NULL;

	while (*pp != NULL) {
		struct kvd_wait_write *w = *pp;
		if (!w->handed_over || KVD_WAIT_PLANTED(KVD_WAIT_PLANT_FAIL_HANDED_OVER)) {
			answer(t, pp, prev, KVD_WAIT_FAILED, arg);
			continue;
		}
		prev = w; /* applied soon: keep */
		pp = &w->next;
	}
}

void kvd_wait_sweep(struct kvd_wait_table *t, uint64_t now)
{
	struct kvd_wait_write **pp = &t->head;
	struct kvd_wait_write *prev = NULL;

	while (*pp != NULL) {
		struct kvd_wait_write *w = *pp;
		if (w->deadline <= now && !w->handed_over) {
			answer(t, pp, prev, KVD_WAIT_TIMEOUT, NULL);
			continue;
		}
		prev = w;
		pp = &w->next;
	}
}

size_t kvd_wait_count(const struct kvd_wait_table *t)
{
	return t->n;
}

void kvd_wait_clear(struct kvd_wait_table *t)
{
	while (t->head != NULL) {
		struct kvd_wait_write *w = t->head;
		t->head = w->next;
		free(w);
	}
	t->tail = NULL;
	t->n = 0;
}
