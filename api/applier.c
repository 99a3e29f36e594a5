/*
 * applier.c: the node's applier (api/applier.h): committed entries go to
 * LevelDB on one thread, in commit order, one WriteBatch per job carrying the
 * applied index (ARCHITECTURE.md "The request path"); when a job is done the
 * core is told (RAFT_EVENT_APPLIED) and the client writes it carried get
 * their answer from the entry's outcome (engine_apply_results()): 200 (with
 * the new revision as ETag for a PUT, the JSON answer for a transaction) or
 * 412 when the write's condition did not hold at apply.
 *
 * Invariants (the waiting-writes table, api/wait_rules.c, shared with
 * tests/sim): a waiting write is answered 200 only once its entry, with the
 * term it was proposed in, is applied (it is handed over when the entry goes
 * to the applier with that term; a different term at its index means the
 * write lost its slot: 503). Writes handed over are never failed: they are
 * about to be applied and will be answered 200. A state machine write that
 * fails is retried (the entries are committed and must apply in order), then
 * ends the process: the log still holds the entries and a restart replays
 * them.
 */
#include "api/applier.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api/http/http_server.h"
#include "api/log.h"
#include "api/node_internal.h"
#include "api/wait_rules.h"
#include "api/watch.h"
#include "api/writer.h"
#include "engine/engine.h"
#include "kvd/errors.h"

struct kvd_applier {
	struct kvd_workq q;	      /* first: the thread and its jobs */
	struct kvd_node *node;	      /* borrowed */
	raft_index applied_index;     /* as last reported by the thread */
	struct kvd_wait_table writes; /* waiting (api/wait_rules.h) */
	struct kvd_watch_hub *watch;  /* fed with each job's changes */
	bool reset_once;	      /* the start's reset happened */
};

static struct engine_entry engine_entry_of(const struct raft_entry *r);

/* Committed entries to apply. */
struct apply_job {
	struct kvd_applier_task task; /* first */
	struct engine_entry *entries;
	struct engine_result *results; /* n, filled by the applier thread */
	unsigned n;
	char *data;
	raft_index last_index;
	char errmsg[KVD_ERRMSG_SIZE];
};

/* Applier thread. */
static void apply_run(struct kvd_workq *q, struct kvd_workq_job *batch)
{
	struct kvd_applier *a = (struct kvd_applier *)q;

	for (struct kvd_workq_job *it = batch; it != NULL; it = it->next) {
		struct kvd_applier_task *t = (struct kvd_applier_task *)it;
		t->base.status = t->run_cb(a->node, t);
	}
}

/* Applier thread: one WriteBatch. A state machine write that fails (disk
 * full) is retried: the entries are committed and must be applied in order. */
static int entries_run(struct kvd_node *n, struct kvd_applier_task *t)
{
	struct apply_job *j = (struct apply_job *)t;
	int rv;

	for (unsigned attempt = 0;; attempt++) {
		rv = engine_apply_results(n->engine, j->entries, j->n, j->results, j->errmsg);
		if (rv == 0 || attempt == 600)
			break;
		if (attempt == 0)
			KVD_ERROR("state machine write failed; retrying",
				  "error=\"%s\" detail=\"%s\"", kvd_strerror(rv), j->errmsg);
		uv_sleep(100);
	}
	return rv;
}

/* The JSON answer of a transaction (API.md §12); NULL when out of memory. */
static char *txn_answer(const struct engine_result *r)
{
	json_t *o = json_object();
	json_t *results = json_array();
	char *s = NULL;

	if (o == NULL || results == NULL)
		goto out;
	for (size_t i = 0; i < r->n_ops; i++) {
		const struct engine_txn_result *op = &r->ops[i];
		json_t *x = json_object();
		if (x == NULL)
			goto out;
		if (op->is_get && op->found) {
			json_object_set_new(x, "value", json_stringn(op->value, op->value_len));
			json_object_set_new(x, "revision", json_integer((json_int_t)op->revision));
		} else if (op->is_get) {
			json_object_set_new(x, "found", json_false());
		}
		json_array_append_new(results, x);
	}
	json_object_set_new(o, "succeeded", json_boolean(r->succeeded));
	json_object_set_new(o, "revision", json_integer((json_int_t)r->revision));
	json_object_set(o, "results", results);
	s = json_dumps(o, JSON_COMPACT);
out:
	json_decref(results);
	json_decref(o);
	return s;
}

/* Answers one applied write from its entry's result (NULL: not in this job,
 * which cannot happen as writes are answered by the job that applies them;
 * the outcome is then unknown to us). */
static void answer_write(const struct kvd_wait_write *w, const struct engine_result *r)
{
	enum kvd_write_kind kind = (enum kvd_write_kind)w->tag;
	char hdr[64];
	char *body;

	if (r == NULL) {
		kvd_reply_text(w->req, 503, "write applied but its outcome is unknown\n");
	} else if (r->outcome == ENGINE_OUTCOME_FAILED) {
		kvd_reply_text(w->req, 412, "precondition failed\n");
	} else if (r->outcome != ENGINE_OUTCOME_APPLIED) {
		kvd_reply_text(w->req, 500, "write rejected by the state machine\n");
	} else if (kind == KVD_WRITE_PUT) {
		snprintf(hdr, sizeof(hdr), "ETag: \"%" PRIu64 "\"\r\n", r->revision);
		http_response_send(w->req, 200, "text/plain; charset=utf-8", hdr, NULL, 0);
	} else if (kind == KVD_WRITE_TXN) {
		body = txn_answer(r);
		if (body == NULL) {
			kvd_reply_text(w->req, 500, "out of memory: transaction applied\n");
		} else {
			http_response_send(w->req, 200, "application/json", NULL, body,
					   strlen(body));
			free(body);
		}
	} else {
		http_response_send(w->req, 200, "text/plain; charset=utf-8", NULL, NULL, 0);
	}
}

/* The entry's result of w in job j (NULL: not in it). */
static const struct engine_result *job_result(const struct apply_job *j,
					      const struct kvd_wait_write *w)
{
	const struct engine_result *r = NULL;

	/* A job's entries are consecutive: the result sits at the offset. */
	if (w->index >= j->entries[0].index && w->index - j->entries[0].index < j->n &&
	    j->results[w->index - j->entries[0].index].index == w->index)
		r = &j->results[w->index - j->entries[0].index];
	for (unsigned i = 0; i < j->n && r == NULL; i++)
		if (j->results[i].index == w->index)
			r = &j->results[i];
	return r;
}

/* Why kvd_applier_fail_writes() fails the writes it fails. */
struct fail_reason {
	int status;
	const char *why;
};

/* The table's answers (api/wait_rules.h): arg is the apply job for
 * KVD_WAIT_APPLIED, the struct fail_reason for KVD_WAIT_FAILED. */
static void write_answer(void *ctx, const struct kvd_wait_write *w, enum kvd_wait_end end,
			 void *arg)
{
	const struct fail_reason *f = arg;

	(void)ctx;
	switch (end) {
	case KVD_WAIT_APPLIED: answer_write(w, arg != NULL ? job_result(arg, w) : NULL); break;
	case KVD_WAIT_LOST:
		kvd_reply_text(w->req, 503, "write was not committed: leadership changed\n");
		break;
	case KVD_WAIT_FAILED: kvd_reply_text(w->req, f->status, f->why); break;
	case KVD_WAIT_TIMEOUT:
		kvd_reply_text(w->req, 503,
			       "commit not reached within 5 s: write outcome unknown\n");
		break;
	}
}

/* Loop thread: a WriteBatch is durable in LevelDB. */
static void entries_done(struct kvd_node *n, struct kvd_applier_task *t, int status)
{
	struct apply_job *j = (struct apply_job *)t;
	struct kvd_applier *a = n->applier;

	if (status != 0) {
		KVD_ERROR("state machine write failed; stopping", "error=\"%s\" detail=\"%s\"",
			  kvd_strerror(status), j->errmsg);
		/* The log still holds the entries: a restart replays them. */
		exit(1);
	}
	a->applied_index = j->last_index;
	if (kvd_node_rules(n) != KVD_NODE_IO_FAILED) {
		struct raft_event e = {.type = RAFT_EVENT_APPLIED};
		e.u.applied.index = j->last_index;
		kvd_node_step(n, &e);
	}
	kvd_wait_applied(&a->writes, a->applied_index, j);
	kvd_watch_hub_applied(a->watch, j->results, j->n, j->last_index);
	engine_results_clear(j->results, j->n);
	free(j->results);
	free(j->entries);
	free(j->data);
	free(j);
	kvd_node_after_apply(n);
}

static void apply_done(struct kvd_workq *q, struct kvd_workq_job *job)
{
	struct kvd_applier *a = (struct kvd_applier *)q;
	struct kvd_applier_task *t = (struct kvd_applier_task *)job;

	t->done_cb(a->node, t, t->base.status);
}

void kvd_applier_submit_entries(struct kvd_applier *a, const struct raft_update *u)
{
	struct apply_job *j = calloc(1, sizeof(*j));
	struct raft_entry *copy;

	if (j == NULL || kvd_entries_copy(u->apply, u->n_apply, &copy, &j->data) != 0) {
		KVD_ERROR("out of memory applying entries", NULL);
		exit(1);
	}
	j->entries = calloc(u->n_apply, sizeof(*j->entries));
	j->results = calloc(u->n_apply, sizeof(*j->results));
	if (j->entries == NULL || j->results == NULL) {
		KVD_ERROR("out of memory applying entries", NULL);
		exit(1);
	}
	for (unsigned i = 0; i < u->n_apply; i++) {
		j->entries[i] = engine_entry_of(&copy[i]);
		kvd_wait_handover(&a->writes, u->apply[i].index, u->apply[i].term);
	}
	free(copy);
	j->n = u->n_apply;
	j->last_index = u->apply[u->n_apply - 1].index;
	j->task.run_cb = entries_run;
	j->task.done_cb = entries_done;
	kvd_workq_submit(&a->q, &j->task.base);
}

void kvd_applier_submit_task(struct kvd_applier *a, struct kvd_applier_task *t)
{
	kvd_workq_submit(&a->q, &t->base);
}

int kvd_applier_wait_write(struct kvd_applier *a, struct http_request *req, raft_index index,
			   raft_term term, uint64_t deadline, enum kvd_write_kind kind)
{
	return kvd_wait_add(&a->writes, req, (uint64_t)kind, index, term, deadline);
}

void kvd_applier_fail_writes(struct kvd_applier *a, int status, const char *why)
{
	struct fail_reason f = {status, why};

	kvd_wait_fail(&a->writes, &f);
}

void kvd_applier_sweep(struct kvd_applier *a, uint64_t now)
{
	kvd_wait_sweep(&a->writes, now);
	kvd_watch_hub_tick(a->watch, now);
}

raft_index kvd_applier_applied(const struct kvd_applier *a)
{
	return a->applied_index;
}

/* Where a clean stop leaves the watch ring (kvd_applier_destroy()). */
static void watch_ring_path(const struct kvd_applier *a, char *path, size_t size)
{
	snprintf(path, size, "%.4000s/watch-ring", a->node->cfg.data_dir);
}

void kvd_applier_reset(struct kvd_applier *a, raft_index index)
{
	kvd_applier_start(a, index, index, NULL, 0);
}

/* The engine's view of a Raft entry (data borrowed). */
static struct engine_entry engine_entry_of(const struct raft_entry *r)
{
	struct engine_entry ee = {r->index, r->term, ENGINE_ENTRY_OTHER, r->data, r->len};

	switch (r->type) {
	case RAFT_ENTRY_COMMAND: ee.type = ENGINE_ENTRY_COMMAND; break;
	case RAFT_ENTRY_CONFIG: ee.type = ENGINE_ENTRY_CONFIG; break;
	default: break;
	}
	return ee;
}

/* Refills the watch ring with the changes of the applied entries in
 * (prev_index, applied], fed as the applier feeds them live. Returns 0, or
 * the first entry's error (the caller then starts the ring empty). */
static int watch_rebuild(struct kvd_applier *a, raft_index applied, raft_index prev_index,
			 const struct raft_entry *entries, size_t n)
{
	raft_index next = prev_index + 1;
	int rv = 0;

	kvd_watch_hub_reset(a->watch, prev_index);
	for (size_t i = 0; i < n && rv == 0 && next <= applied; i++) {
		struct engine_entry ee = engine_entry_of(&entries[i]);
		struct engine_result r;
		if (entries[i].index != next) {
			rv = KVD_ECORRUPT; /* not the log after prev_index */
			break;
		}
		rv = engine_entry_changes(a->node->engine, &ee, &r);
		if (rv == KVD_ENOTFOUND) {
			/* Its outcome was pruned (a conditional write behind an
			 * older snapshot): the ring starts after it. */
			kvd_watch_hub_reset(a->watch, next);
			rv = 0;
			next++;
		} else if (rv == 0) {
			kvd_watch_hub_applied(a->watch, &r, 1, next);
			engine_results_clear(&r, 1);
			next++;
		}
	}
	if (rv == 0 && next != applied + 1)
		rv = KVD_ENOTFOUND; /* the log ends before applied */
	if (rv != 0) {
		KVD_WARN("watch ring not rebuilt from the log; it starts empty",
			 "index=%" PRIu64 " applied_index=%" PRIu64 " error=\"%s\"", next, applied,
			 kvd_strerror(rv));
	} else if (applied > prev_index) {
		KVD_INFO("watch ring rebuilt from the log",
			 "first_index=%" PRIu64 " applied_index=%" PRIu64, prev_index + 1, applied);
	}
	return rv;
}

void kvd_applier_start(struct kvd_applier *a, raft_index applied, raft_index prev_index,
		       const struct raft_entry *entries, size_t n)
{
	char path[4096 + 16];
	bool loaded = false;

	a->applied_index = applied;
	kvd_watch_hub_reset(a->watch, applied);
	if (!a->reset_once) { /* the start: the ring a clean stop saved */
		a->reset_once = true;
		watch_ring_path(a, path, sizeof(path));
		loaded = kvd_watch_hub_load(a->watch, path, applied);
	}
	if (!loaded && prev_index < applied &&
	    watch_rebuild(a, applied, prev_index, entries, n) != 0)
		kvd_watch_hub_reset(a->watch, applied);
}

/* Deletes recorded outcomes on the applier thread. */
struct prune_task {
	struct kvd_applier_task task; /* first */
	raft_index below;
	char errmsg[KVD_ERRMSG_SIZE];
};

static int prune_run(struct kvd_node *n, struct kvd_applier_task *t)
{
	struct prune_task *p = (struct prune_task *)t;

	return engine_outcomes_prune(n->engine, p->below, p->errmsg);
}

static void prune_done(struct kvd_node *n, struct kvd_applier_task *t, int status)
{
	struct prune_task *p = (struct prune_task *)t;

	(void)n;
	if (status != 0)
		KVD_WARN("cannot prune recorded outcomes; the next snapshot retries",
			 "below=%" PRIu64 " error=\"%s\" detail=\"%s\"", p->below,
			 kvd_strerror(status), p->errmsg);
	free(p);
}

void kvd_applier_prune_outcomes(struct kvd_applier *a, raft_index below)
{
	struct prune_task *p = calloc(1, sizeof(*p));

	if (p == NULL) {
		KVD_WARN("cannot prune recorded outcomes: out of memory", "below=%" PRIu64, below);
		return;
	}
	p->below = below;
	p->task.run_cb = prune_run;
	p->task.done_cb = prune_done;
	kvd_workq_submit(&a->q, &p->task.base);
}

struct kvd_watch_hub *kvd_applier_watch(struct kvd_applier *a)
{
	return a->watch;
}

int kvd_applier_create(struct kvd_node *n, struct uv_loop_s *loop, struct kvd_applier **out)
{
	struct kvd_applier *a = calloc(1, sizeof(*a));
	int rv = KVD_ENOMEM;

	/* Hidden knobs for tests (docs/api.md "Watch"). */
	const char *ka = getenv("KVD_WATCH_KEEPALIVE_MS");
	const char *re = getenv("KVD_WATCH_RING_EVENTS");
	uint64_t keepalive_ms = ka != NULL ? strtoull(ka, NULL, 10) : 0;
	size_t ring_events = re != NULL ? (size_t)strtoull(re, NULL, 10) : 0;

	if (a != NULL && kvd_watch_hub_create(keepalive_ms, ring_events, &a->watch) == 0) {
		a->node = n;
		kvd_wait_init(&a->writes, write_answer, a);
		rv = kvd_workq_start(&a->q, loop, apply_run, apply_done, n);
	}
	if (rv == 0) {
		*out = a;
	} else if (a != NULL) {
		kvd_watch_hub_destroy(a->watch);
		free(a);
	}
	return rv;
}

void kvd_applier_stop(struct kvd_applier *a)
{
	kvd_workq_stop(&a->q);
}

void kvd_applier_destroy(struct kvd_applier *a)
{
	char path[4096 + 16];
	int rv;

	if (a == NULL)
		return;
	if (a->reset_once && kvd_workq_idle(&a->q)) {
		/* Everything submitted is applied and in the ring: a restart
		 * loads it (when the store still ends where it does). */
		watch_ring_path(a, path, sizeof(path));
		rv = kvd_watch_hub_save(a->watch, path);
		if (rv != 0)
			KVD_WARN("cannot save the watch ring", "error=\"%s\"", kvd_strerror(rv));
	}
	kvd_watch_hub_destroy(a->watch);
	kvd_wait_clear(&a->writes);
	free(a);
}

void kvd_applier_poll(struct kvd_applier *a)
{
	kvd_workq_poll(&a->q);
}

bool kvd_applier_idle(const struct kvd_applier *a)
{
	return kvd_workq_idle(&a->q);
}
