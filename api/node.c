/*
 * node.c: the loop driver: steps the pure Raft core and routes each update,
 * in the order api/drive_rules.c decides (shared with tests/sim), to the
 * parts that carry it out (writer.c: log and meta I/O; applier.c:
 * LevelDB and the writes waiting on it; snapshots.c: take, receive,
 * install; transport.c: messages; membership.c: configuration changes),
 * owns the node state (node_state.h: disk full, disk failure, stopping),
 * batches proposals and linearizable reads, and starts and stops the node.
 *
 * The write path (ARCHITECTURE.md "The request path"): routes.c queues each
 * client write; at the end of the loop iteration (uv_check) every queued
 * write is proposed in one RAFT_EVENT_PROPOSE; the update's entries go to the
 * writer thread, which appends everything queued and fdatasyncs once (group
 * commit); RAFT_EVENT_PERSISTED lets the core commit; committed entries go to
 * the applier thread (one LevelDB WriteBatch per batch, carrying the applied
 * index); when the applier reports back the client gets its 200.
 *
 * Rules kept for the core (raft.h): persistence runs in update order on one
 * writer; messages flagged needs_sync wait until the writer has finished
 * every job submitted before them; completion events carry the entry term so
 * the core recognizes stale ones.
 *
 * Recovery: the log store cuts a torn tail; LevelDB's applied index says
 * where replay starts; the core is given the log tail and commits what a sole
 * voter holds once its no-op is durable. The port opens only after that.
 */
#include "api/node.h"

#include "api/metrics.h"
#include "api/node_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/applier.h"
#include "api/watch.h"
#include "api/cluster_id.h"
#include "api/common/datadir.h"
#include "api/common/fileutil.h"
#include "api/drive_rules.h"
#include "api/log.h"
#include "api/membership.h"
#include "api/recovery.h"
#include "api/snapshots.h"
#include "api/transport.h"
#include "api/writer.h"
#include "raft/meta.h"
#include "kvd/errors.h"

/* A linearizable read waiting for its read index. */
struct kvd_pending_read {
	struct kvd_pending_read *next;
	uint64_t token;
	uint64_t deadline; /* loop time, ms */
	struct http_request *req;
	bool list; /* a range listing (GET /kv?..): no key */
	size_t key_len;
	char key[]; /* decoded key */
};

/* A write collected during one loop iteration, proposed with the others. */
struct kvd_batch_item {
	struct http_request *req;
	void *command; /* malloc'ed command text */
	size_t len;
	int kind; /* enum kvd_write_kind */
};

/* ---- node state ---------------------------------------------------------- */

void kvd_node_set_state(struct kvd_node *n, enum kvd_node_state to)
{
	(void)kvd_node_mode_set(&n->mode, to);
}

void kvd_node_io_failed(struct kvd_node *n, int rv, const char *what, const char *errmsg)
{
	struct raft_event e = {.type = RAFT_EVENT_IO_FAILED};

	KVD_ERROR("disk write failed; refusing writes", "op=%s error=\"%s\" detail=\"%s\"", what,
		  kvd_strerror(rv), errmsg);
	if (kvd_node_rules(n) == KVD_NODE_IO_FAILED)
		return;
	kvd_node_set_state(n, KVD_NODE_IO_FAILED);
	n->io_error = rv;
	kvd_node_step(n, &e);
}

static bool parts_idle(struct kvd_node *n);
static int restart_from_disk(struct kvd_node *n, int (*discard)(struct kvd_node *, char *),
			     char *errmsg);
static void fail_pending_reads(struct kvd_node *n);

/*
 * Disk full (API.md §6). The log store has cut back to its last durable
 * record, so entries the core holds past it were never persisted. Writes
 * waiting for them get 507, new writes get 507 at once, reads keep being
 * served, and every second, once the workers are idle, the core is started
 * again from what is durable, exactly as a restart would (always safe in
 * Raft). When the restarted core's first append is durable, space is back.
 */
static void disk_timer_cb(uv_timer_t *t)
{
	struct kvd_node *n = t->data;
	char errmsg[KVD_ERRMSG_SIZE] = "";

	if (kvd_node_rules(n) == KVD_NODE_IO_FAILED) {
		uv_timer_stop(t); /* final: no restart brings writes back */
		return;
	}
	if (!parts_idle(n) || kvd_cluster_reinit_pending(n))
		return;
	kvd_node_set_state(n, KVD_NODE_DISK_RECOVERING);
	if (restart_from_disk(n, NULL, errmsg) != 0) {
		KVD_ERROR("cannot restart the raft core after a full disk; exiting",
			  "detail=\"%s\"", errmsg);
		exit(1);
	}
}

/* Loop thread, parts idle: discards the lone cluster's state (cluster_id.h,
 * kvd_cluster_reinit): an empty state machine, no snapshot, an empty log, no
 * vote, the new cluster id. */
static int discard_state(struct kvd_node *n, char *errmsg)
{
	char fresh[PATH_MAX];
	struct engine_builder *b;
	struct raft_meta meta;
	int rv;

	snprintf(fresh, sizeof(fresh), "%.4000s.fresh", n->kv_dir);
	kvd_remove_tree(fresh);
	rv = engine_builder_create(fresh, &b, errmsg);
	if (rv == 0)
		rv = engine_builder_finish(b, 0, 0, NULL, 0, errmsg);
	if (rv == 0)
		rv = engine_swap(n->engine, fresh, errmsg);
	if (rv != 0)
		return rv;
	kvd_snapshot_forget(n);
	rv = raft_log_store_reset(n->store, 0, 0, errmsg);
	if (rv != 0)
		return rv;
	rv = raft_meta_load(n->raft_dir, &meta, errmsg);
	if (rv != 0)
		return rv;
	meta.voted_for[0] = '\0';
	rv = raft_meta_store(n->raft_dir, &meta, errmsg);
	if (rv != 0)
		return rv;
	rv = kvd_cluster_id_store(n, kvd_cluster_reinit_id(n), errmsg);
	if (rv != 0)
		return rv;
	kvd_applier_reset(n->applier, 0);
	return 0;
}

static void reinit_cb(uv_timer_t *t)
{
	struct kvd_node *n = t->data;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	int rv;

	if (!parts_idle(n))
		return;
	uv_timer_stop(t);
	rv = restart_from_disk(n, discard_state, errmsg);
	if (rv != 0) {
		KVD_ERROR("cannot discard the bootstrap state; exiting",
			  "error=\"%s\" detail=\"%s\"", kvd_strerror(rv), errmsg);
		exit(1);
	}
	kvd_cluster_reinit_done(n);
}

void kvd_node_discard_state(struct kvd_node *n)
{
	uv_timer_start(&n->reinit_timer, reinit_cb, 0, 10);
}

bool kvd_node_has_data(struct kvd_node *n)
{
	struct engine_iter *it;
	struct engine_record rec;
	bool end = true;

	if (kvd_snapshot_installing(n) || engine_iter_open(n->engine, &it) != 0)
		return true; /* cannot tell: refuse rather than lose data */
	if (engine_iter_next(it, &rec, &end) != 0)
		end = false;
	engine_iter_close(it);
	return !end;
}

/* Fails what waits on the core (writes 503, reads served or 503), drops held
 * messages and destroys the core. Parts idle. */
static void drop_core(struct kvd_node *n)
{
	kvd_applier_fail_writes(n->applier, 503, "raft core restarted: write outcome unknown\n");
	fail_pending_reads(n);
	kvd_transport_drop_held(n->transport);
	kvd_transport_refuse_parked(n->transport);
	raft_destroy(n->raft);
	n->raft = NULL;
}

/* True when no part has work in flight: the core can be dropped and
 * restarted from disk. The disk-full recovery and the lone-node reinit both
 * wait for this, then call restart_from_disk(). */
static bool parts_idle(struct kvd_node *n)
{
	return kvd_writer_idle(n->writer) && kvd_applier_idle(n->applier) && kvd_snapshot_idle(n);
}

/* Parts idle: drops the core, runs discard (NULL: none), then starts a new
 * core from what is durable, exactly as a process restart would (always
 * safe in Raft). Returns 0 or the failing step's code with errmsg. */
static int restart_from_disk(struct kvd_node *n, int (*discard)(struct kvd_node *, char *),
			     char *errmsg)
{
	int rv = 0;

	drop_core(n);
	if (discard != NULL)
		rv = discard(n, errmsg);
	if (rv == 0) {
		kvd_writer_clear(n->writer); /* the workers are idle */
		rv = kvd_recovery_start_core(n, &n->ready_index, errmsg);
	}
	return rv;
}

static void node_disk_full(struct kvd_node *n, const char *errmsg)
{
	if (!kvd_node_disk_full(n))
		KVD_ERROR("disk full; refusing writes until space returns", "detail=\"%s\"",
			  errmsg);
	kvd_node_set_state(n, KVD_NODE_DISK_FULL);
	kvd_applier_fail_writes(n->applier, 507, "insufficient storage\n");
	if (!uv_is_active((uv_handle_t *)&n->disk_timer))
		uv_timer_start(&n->disk_timer, disk_timer_cb, 1000, 1000);
}

void kvd_node_disk_error(struct kvd_node *n, int rv, const char *what, const char *errmsg)
{
	kvd_transport_drop_held(n->transport);
	if (rv == KVD_ENOSPC && kvd_node_rules(n) != KVD_NODE_IO_FAILED)
		node_disk_full(n, errmsg);
	else if (!kvd_node_disk_full(n))
		kvd_node_io_failed(n, rv, what, errmsg);
}

void kvd_node_space_back(struct kvd_node *n)
{
	kvd_node_set_state(n, KVD_NODE_RUNNING);
	uv_timer_stop(&n->disk_timer);
	KVD_INFO("disk has space again; accepting writes", NULL);
}

void kvd_node_after_apply(struct kvd_node *n)
{
	kvd_snapshot_maybe_take(n);
}

/* ---- carrying out an update -------------------------------------------- */

static void tick_cb(uv_timer_t *t);

/* Pending linearizable reads: the core that would confirm them is gone;
 * a sole voter serves them from its state, which holds every acknowledged
 * write; otherwise they get 503. */
static void serve_read(struct kvd_node *n, struct kvd_pending_read *r)
{
	if (r->list)
		kvd_routes_serve_list(n, r->req);
	else
		kvd_node_serve_get(n, r->req, r->key, r->key_len);
}

static void fail_pending_reads(struct kvd_node *n)
{
	while (n->reads != NULL) {
		struct kvd_pending_read *r = n->reads;
		n->reads = r->next;
		if (kvd_node_sole_voter(n))
			serve_read(n, r);
		else
			kvd_reply_text(r->req, 503,
				       "read not confirmed: node restarting its raft core\n");
		free(r);
	}
}

bool kvd_node_sole_voter(struct kvd_node *n)
{
	const struct raft_config *c = raft_configuration(n->raft);
	unsigned voters = 0;
	for (unsigned i = 0; i < c->n; i++)
		voters += c->servers[i].role == RAFT_VOTER;
	return voters == 1 && raft_config_is_voter(c, n->cfg.id);
}

static void serve_reads(struct kvd_node *n, const struct raft_update *u)
{
	for (unsigned i = 0; i < u->n_reads + u->n_reads_failed; i++) {
		bool ok = i < u->n_reads;
		uint64_t token = ok ? u->reads[i].token : u->reads_failed[i - u->n_reads].token;
		struct kvd_pending_read **pp = &n->reads;

		while (*pp != NULL && (*pp)->token != token)
			pp = &(*pp)->next;
		if (*pp == NULL)
			continue;
		struct kvd_pending_read *r = *pp;
		*pp = r->next;
		if (ok)
			serve_read(n, r);
		else
			kvd_reply_not_leader(n, r->req);
		free(r);
	}
}

static const char *role_name(enum raft_role role)
{
	switch (role) {
	case RAFT_LEADER: return "leader";
	case RAFT_CANDIDATE: return "candidate";
	default: return "follower";
	}
}

/* One operator log line per core note (API.md §9). */
static void log_note(const struct raft_note *note)
{
	const char *reason = note->reason != NULL ? note->reason : "";

	switch (note->kind) {
	case RAFT_NOTE_VOTE_GRANTED:
	case RAFT_NOTE_PRE_VOTE_GRANTED:
		KVD_INFO(note->kind == RAFT_NOTE_VOTE_GRANTED ? "vote granted" : "pre-vote granted",
			 "candidate=%s term=%" PRIu64, note->peer, note->term);
		break;
	case RAFT_NOTE_VOTE_REFUSED:
	case RAFT_NOTE_PRE_VOTE_REFUSED:
		KVD_INFO(note->kind == RAFT_NOTE_VOTE_REFUSED ? "vote refused" : "pre-vote refused",
			 "candidate=%s term=%" PRIu64 " reason=\"%s\"", note->peer, note->term,
			 reason);
		break;
	case RAFT_NOTE_ELECTION_STARTED:
		KVD_INFO("election started", "term=%" PRIu64 " kind=%s", note->term, reason);
		break;
	case RAFT_NOTE_ELECTION_WON: KVD_INFO("election won", "term=%" PRIu64, note->term); break;
	case RAFT_NOTE_STEPPED_DOWN:
		KVD_INFO("stepped down", "term=%" PRIu64 " reason=\"%s\"", note->term, reason);
		break;
	case RAFT_NOTE_PEER_SNAPSHOT_SENT:
		KVD_INFO("sending snapshot to peer", "peer=%s index=%" PRIu64, note->peer,
			 note->index);
		break;
	case RAFT_NOTE_SNAPSHOT_RECEIVED:
		KVD_INFO("snapshot received from leader", "leader=%s index=%" PRIu64, note->peer,
			 note->index);
		break;
	case RAFT_NOTE_TRANSFER_STARTED:
		KVD_INFO("leadership transfer started", "target=%s", note->peer);
		break;
	case RAFT_NOTE_TRANSFER_ABORTED:
		KVD_WARN("leadership transfer aborted", "target=%s reason=\"%s\"", note->peer,
			 reason);
		break;
	case RAFT_NOTE_CONFIG_APPENDED:
		KVD_INFO("configuration entry appended", "index=%" PRIu64 " kind=%s", note->index,
			 reason);
		break;
	default: break;
	}
}

/* ---- the daemon's side of the dispatch (api/drive_rules.h) --------------- */

static void op_submit_meta(void *ctx, raft_term term, const char *voted_for)
{
	struct kvd_node *n = ctx;
	kvd_writer_submit_meta(n->writer, term, voted_for);
}

static void op_submit_append(void *ctx, const struct raft_update *u)
{
	struct kvd_node *n = ctx;
	kvd_writer_submit_append(n->writer, u);
}

static void op_submit_chunk(void *ctx, const struct raft_snapshot *chunk)
{
	struct kvd_node *n = ctx;
	char path[PATH_MAX];

	kvd_snapshot_incoming_path(n, path);
	kvd_writer_submit_chunk(n->writer, chunk, path, kvd_snapshot_chunk_done);
}

static bool op_sync_seq(void *ctx, uint64_t *seq)
{
	struct kvd_node *n = ctx;
	return kvd_writer_sync_seq(n->writer, seq);
}

static uint64_t op_completed_seq(void *ctx)
{
	struct kvd_node *n = ctx;
	return kvd_writer_completed(n->writer);
}

static void op_send(void *ctx, const struct raft_message *m, uint64_t barrier)
{
	struct kvd_node *n = ctx;
	kvd_transport_send(n->transport, m, barrier);
}

static void op_drop_held(void *ctx)
{
	struct kvd_node *n = ctx;
	kvd_transport_drop_held(n->transport);
	kvd_transport_answer_orphans(n->transport);
}

static void op_submit_apply(void *ctx, const struct raft_update *u)
{
	struct kvd_node *n = ctx;
	kvd_applier_submit_entries(n->applier, u);
}

static void op_serve_reads(void *ctx, const struct raft_update *u)
{
	serve_reads(ctx, u);
}

static void op_change_done(void *ctx, uint64_t token, int error)
{
	kvd_members_done(ctx, token, error);
}

static void op_note(void *ctx, const struct raft_note *note)
{
	(void)ctx;
	log_note(note);
}

static void op_fail_writes(void *ctx)
{
	struct kvd_node *n = ctx;
	kvd_applier_fail_writes(n->applier, 503,
				"leadership lost before commit: write outcome unknown\n");
}

static void op_state_changed(void *ctx, const struct raft_update *u)
{
	struct kvd_node *n = ctx;

	if (u->role != n->last_role) {
		if (u->role == RAFT_CANDIDATE)
			kvd_metrics_election(0);
		else if (u->role == RAFT_LEADER && n->last_role != RAFT_CANDIDATE)
			kvd_metrics_election(0); /* a sole voter leads without a candidacy */
		if (u->role == RAFT_LEADER)
			kvd_metrics_election(1);
		n->last_role = u->role;
	}
	KVD_INFO("raft state", "role=%s term=%" PRIu64 " leader=%s commit=%" PRIu64,
		 role_name(u->role), u->current_term, u->leader[0] ? u->leader : "none",
		 u->commit_index);
	kvd_membership_tick(n);
}

static void op_set_deadline(void *ctx, raft_time deadline)
{
	struct kvd_node *n = ctx;
	uint64_t now = kvd_node_now(n);
	uint64_t delay = deadline > now ? deadline - now : 0;

	uv_timer_start(&n->tick_timer, tick_cb, delay, 0);
}

/* Carries out u (api/drive_rules.c decides the order). */
static void handle_update(struct kvd_node *n, const struct raft_update *u)
{
	const struct kvd_drive_ops ops = {
	    .ctx = n,
	    .submit_meta = op_submit_meta,
	    .submit_append = op_submit_append,
	    .submit_chunk = op_submit_chunk,
	    .sync_seq = op_sync_seq,
	    .completed_seq = op_completed_seq,
	    .send = op_send,
	    .drop_held = op_drop_held,
	    .submit_apply = op_submit_apply,
	    .serve_reads = op_serve_reads,
	    .change_done = op_change_done,
	    .note = op_note,
	    .fail_writes = op_fail_writes,
	    .state_changed = op_state_changed,
	    .set_deadline = op_set_deadline,
	};

	kvd_drive_update(&ops, u);
}

int kvd_node_step(struct kvd_node *n, struct raft_event *e)
{
	struct raft_update u;
	int rv;

	e->now = kvd_node_now(n);
	rv = raft_step(n->raft, e, &u);
	handle_update(n, &u);
	return rv;
}

uint64_t kvd_node_token(struct kvd_node *n)
{
	return ++n->next_token;
}

uint64_t kvd_node_now(struct kvd_node *n)
{
	uv_update_time(n->loop);
	return uv_now(n->loop);
}

static void tick_cb(uv_timer_t *t)
{
	struct kvd_node *n = t->data;
	struct raft_event e = {.type = RAFT_EVENT_TICK};
	kvd_node_step(n, &e);
}

/* ---- proposals and reads ----------------------------------------------- */

void kvd_node_propose(struct kvd_node *n, struct http_request *req, void *command, size_t len,
		      int kind)
{
	if (n->batch_n == n->batch_cap) {
		unsigned cap = n->batch_cap ? n->batch_cap * 2 : 64;
		struct kvd_batch_item *b = realloc(n->batch, cap * sizeof(*b));
		if (b == NULL) {
			free(command);
			kvd_reply_text(req, 503, "out of memory\n");
			return;
		}
		n->batch = b;
		n->batch_cap = cap;
	}
	n->batch[n->batch_n++] = (struct kvd_batch_item){req, command, len, kind};
}

static void batch_check_cb(uv_check_t *c)
{
	struct kvd_node *n = c->data;
	struct raft_entry *es;
	struct raft_event e = {.type = RAFT_EVENT_PROPOSE};
	struct raft_update u;
	unsigned count = n->batch_n;
	int rv;

	if (count == 0)
		return;
	n->batch_n = 0;
	es = calloc(count, sizeof(*es));
	if (es == NULL || kvd_node_rules(n) != KVD_NODE_RUNNING) {
		for (unsigned i = 0; i < count; i++) {
			if (kvd_node_disk_full(n) ||
			    (kvd_node_rules(n) == KVD_NODE_IO_FAILED && n->io_error == KVD_ENOSPC))
				kvd_reply_text(n->batch[i].req, 507, "insufficient storage\n");
			else
				kvd_reply_text(n->batch[i].req, 503,
					       es == NULL
						   ? "out of memory\n"
						   : "disk write failed; node is read-only\n");
			free(n->batch[i].command);
		}
		free(es);
		return;
	}
	for (unsigned i = 0; i < count; i++) {
		es[i].type = RAFT_ENTRY_COMMAND;
		es[i].data = n->batch[i].command;
		es[i].len = n->batch[i].len;
	}
	e.u.propose.entries = es;
	e.u.propose.n = count;
	e.now = kvd_node_now(n);
	rv = raft_step(n->raft, &e, &u);
	for (unsigned i = 0; i < count; i++) {
		struct http_request *req = n->batch[i].req;
		free(n->batch[i].command);
		if (rv != 0) {
			if (rv == KVD_ENOTLEADER)
				kvd_reply_not_leader(n, req);
			else
				kvd_reply_text(req, 503,
					       "write not accepted: leadership transfer "
					       "in progress\n");
			continue;
		}
		if (kvd_applier_wait_write(n->applier, req, u.proposed_index + i, u.proposed_term,
					   e.now + KVD_WRITE_TIMEOUT_MS,
					   (enum kvd_write_kind)n->batch[i].kind) != 0)
			kvd_reply_text(req, 503, "out of memory: write outcome unknown\n");
	}
	free(es);
	handle_update(n, &u);
}

void kvd_node_read(struct kvd_node *n, struct http_request *req, const char *key, size_t len)
{
	struct kvd_pending_read *r = malloc(sizeof(*r) + len);
	struct raft_event e = {.type = RAFT_EVENT_READ};
	int rv;

	if (r == NULL) {
		kvd_reply_text(req, 503, "out of memory\n");
		return;
	}
	r->token = kvd_node_token(n);
	r->req = req;
	r->list = key == NULL;
	r->key_len = len;
	if (len > 0)
		memcpy(r->key, key, len);
	r->deadline = kvd_node_now(n) + KVD_WRITE_TIMEOUT_MS;
	r->next = n->reads;
	n->reads = r;
	e.u.read.token = r->token;
	rv = kvd_node_step(n, &e);
	if (rv != 0) {
		struct kvd_pending_read **pp = &n->reads;
		while (*pp != NULL && *pp != r)
			pp = &(*pp)->next;
		if (*pp == r) {
			*pp = r->next;
			kvd_reply_not_leader(n, req);
			free(r);
		}
	}
}

void kvd_node_serve_get(struct kvd_node *n, struct http_request *req, const char *key, size_t len)
{
	void *value;
	size_t vlen;
	uint64_t rev = 0;
	char etag[64];
	int rv;

	if (kvd_snapshot_installing(n)) {
		kvd_reply_text(req, 503, "installing a snapshot from the leader; retry\n");
		return;
	}
	rv = engine_get_rev(n->engine, key, len, &value, &vlen, &rev);
	if (rv == KVD_ENOTFOUND) {
		kvd_reply_text(req, 404, "key not found\n");
	} else if (rv != 0) {
		kvd_reply_text(req, 500, "state machine read failed\n");
	} else {
		snprintf(etag, sizeof(etag), "ETag: \"%" PRIu64 "\"\r\n", rev);
		http_response_send(req, 200, "text/plain; charset=utf-8", etag, value, vlen);
		free(value);
	}
}

/* Answers writes and reads that outlived KVD_WRITE_TIMEOUT_MS with 503. */
static void sweep_cb(uv_timer_t *t)
{
	struct kvd_node *n = t->data;
	uint64_t now = kvd_node_now(n);
	struct kvd_pending_read **rp = &n->reads;

	kvd_membership_tick(n);
	kvd_applier_sweep(n->applier, now);
	while (*rp != NULL) {
		struct kvd_pending_read *r = *rp;
		if (r->deadline <= now) {
			*rp = r->next;
			kvd_reply_text(r->req, 503, "read not confirmed within 5 s\n");
			free(r);
			continue;
		}
		rp = &r->next;
	}
}

/* ---- start and stop -------------------------------------------------------- */

/* mkdir -p: creates path and any missing parent. */
static int make_dir(const char *path, char *errmsg)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf)) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "bad data directory path '%.400s'", path);
		return KVD_EINVAL;
	}
	memcpy(buf, path, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
			snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot create %.400s: %s", buf,
				 strerror(errno));
			return errno == ENOSPC ? KVD_ENOSPC : KVD_EIO;
		}
		buf[i] = path[i];
	}
	return 0;
}

/* A sole voter leads at once and replays its log before its port opens.
 * Runs the loop until then. Returns 0, or KVD_EIO with errmsg when a disk
 * write failed meanwhile. */
static int replay_sole_voter(struct kvd_node *n, char *errmsg)
{
	const struct raft_config *conf = raft_configuration(n->raft);
	int rv = 0;

	if (conf->n != 1 || !raft_config_is_voter(conf, n->cfg.id))
		return 0;
	while (kvd_node_rules(n) != KVD_NODE_IO_FAILED &&
	       (raft_role(n->raft) != RAFT_LEADER ||
		kvd_applier_applied(n->applier) < n->ready_index ||
		kvd_applier_applied(n->applier) < raft_commit_index(n->raft)))
		uv_run(n->loop, UV_RUN_ONCE);
	if (kvd_node_rules(n) == KVD_NODE_IO_FAILED) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "disk write failed during recovery: %s",
			 kvd_strerror(n->io_error));
		rv = KVD_EIO;
	}
	return rv;
}

/*
 * After each read of a client's or a peer's request: the writer's and the
 * applier's finished jobs are carried on at once (kvd_workq_poll()), not
 * after every other event of a busy loop iteration. Measured on 1 node under
 * load, a finished apply waited 160-230 us for the loop before this.
 */
static void take_completions(void *user)
{
	struct kvd_node *n = user;

	kvd_writer_poll(n->writer);
	kvd_applier_poll(n->applier);
}

int kvd_node_start(uv_loop_t *loop, const struct kvd_config *cfg, struct kvd_node **out,
		   char *errmsg)
{
	struct kvd_node *n = calloc(1, sizeof(*n));
	struct engine_options eopts = {0};
	struct http_server_opts hopts = {0};
	int rv;

	if (n == NULL) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "out of memory");
		return KVD_ENOMEM;
	}
	n->loop = loop;
	n->cfg = *cfg;
	snprintf(n->raft_dir, sizeof(n->raft_dir), "%.4000s/raft", cfg->data_dir);
	snprintf(n->kv_dir, sizeof(n->kv_dir), "%.4000s/kv", cfg->data_dir);
	snprintf(n->snap_dir, sizeof(n->snap_dir), "%.4000s/snapshots", cfg->data_dir);
	if ((rv = make_dir(cfg->data_dir, errmsg)) != 0 ||
	    (rv = make_dir(n->raft_dir, errmsg)) != 0 || (rv = make_dir(n->snap_dir, errmsg)) != 0)
		goto err;

	errmsg[0] = '\0';
	rv = raft_log_store_open(n->raft_dir, NULL, &n->store, errmsg);
	if (rv != 0)
		goto err;
	if (errmsg[0] != '\0') /* recovery notes, e.g. a torn tail cut off */
		KVD_WARN("log recovery", "detail=\"%s\"", errmsg);
	/* LevelDB's own write-ahead log grows to the memtable size before a
	 * flush: keep it small next to the Raft log's bound (docs/operations.md
	 * "Disk use"). */
	eopts.write_buffer_bytes = KVD_ENGINE_WRITE_BUFFER;
	rv = engine_open(n->kv_dir, &eopts, &n->engine, errmsg);
	if (rv != 0)
		goto err_store;

	uv_timer_init(loop, &n->tick_timer);
	n->tick_timer.data = n;
	uv_timer_init(loop, &n->sweep_timer);
	n->sweep_timer.data = n;
	uv_timer_init(loop, &n->finish_timer);
	n->finish_timer.data = n;
	uv_timer_init(loop, &n->disk_timer);
	n->disk_timer.data = n;
	uv_timer_init(loop, &n->reinit_timer);
	n->reinit_timer.data = n;
	uv_check_init(loop, &n->batch_check);
	n->batch_check.data = n;
	uv_check_start(&n->batch_check, batch_check_cb);
	uv_timer_start(&n->sweep_timer, sweep_cb, 250, 250);

	rv = kvd_snapshots_create(n);
	if (rv == 0)
		rv = kvd_writer_create(n, loop, &n->writer);
	if (rv == 0)
		rv = kvd_applier_create(n, loop, &n->applier);
	if (rv != 0) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot start worker threads");
		goto err_engine;
	}
	rv = kvd_cluster_create(n);
	if (rv == 0)
		rv = kvd_transport_create(n, &n->transport, errmsg);
	if (rv == 0)
		rv = kvd_cluster_id_load(n, errmsg);
	if (rv != 0)
		goto err_engine;
	rv = kvd_recovery_start_core(n, &n->ready_index, errmsg);
	if (rv != 0)
		goto err_engine;

	rv = replay_sole_voter(n, errmsg);
	if (rv != 0)
		goto err_engine;

	hopts.body_limit_cb = kvd_routes_body_limit;
	hopts.ordered_cb = kvd_routes_ordered;
	hopts.admit_cb = kvd_routes_admit;
	hopts.observe_cb = kvd_metrics_observe;
	hopts.after_read_cb = take_completions;
	hopts.max_connections = (unsigned)cfg->max_connections;
	hopts.idle_timeout_ms = 60000;
	rv = http_server_start(loop, cfg->listen_host, cfg->port, &hopts, kvd_routes_handle, n,
			       &n->http, errmsg);
	if (rv != 0)
		goto err_engine;
	if (n->cfg.join[0] != '\0' && kvd_join_start(n) != 0) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "out of memory");
		rv = KVD_ENOMEM;
		goto err_engine;
	}
	kvd_snapshot_take_wanted(n);
	KVD_INFO("ready", "id=%s listen=%s:%u data_dir=%s", cfg->id, cfg->listen_host,
		 (unsigned)cfg->port, cfg->data_dir);
	*out = n;
	return 0;

err_engine:
	/* Startup failures end the process; the loop and threads go with it. */
	return rv;
err_store:
	raft_log_store_close(n->store);
err:
	free(n);
	return rv;
}

/* ---- shutdown ------------------------------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
	struct kvd_node *n = h->data;
	if (--n->closing_handles == 0 && n->shutdown_cb != NULL)
		n->shutdown_cb(n);
}

/* Whether another voter could take over leadership. */
static bool has_other_voter(struct kvd_node *n)
{
	const struct raft_config *c = raft_configuration(n->raft);
	for (unsigned i = 0; i < c->n; i++)
		if (c->servers[i].role == RAFT_VOTER && strcmp(c->servers[i].id, n->cfg.id) != 0)
			return true;
	return false;
}

/* Shutdown, after every HTTP request is answered: hand leadership over when
 * another voter can take it (at most KVD_TRANSFER_WAIT_MS), let the workers
 * drain, then close. Polled from a timer: the loop is never re-entered. */
static void finish_cb(uv_timer_t *t)
{
	struct kvd_node *n = t->data;
	uint64_t now = kvd_node_now(n);

	if (n->finish_deadline == 0) {
		n->finish_deadline = now + KVD_TRANSFER_WAIT_MS;
		if (raft_role(n->raft) == RAFT_LEADER && has_other_voter(n) &&
		    kvd_node_rules(n) != KVD_NODE_IO_FAILED) {
			struct raft_event e = {.type = RAFT_EVENT_TRANSFER};
			e.u.transfer.to = NULL;
			if (kvd_node_step(n, &e) == 0)
				KVD_INFO("handing leadership over before exit", NULL);
		}
	}
	if (raft_role(n->raft) == RAFT_LEADER && has_other_voter(n) &&
	    kvd_node_rules(n) != KVD_NODE_IO_FAILED && now < n->finish_deadline)
		return;
	if (!kvd_writer_idle(n->writer) || !kvd_applier_idle(n->applier))
		return;
	uv_timer_stop(t);
	kvd_writer_stop(n->writer);
	kvd_applier_stop(n->applier);
	kvd_transport_destroy(n->transport);
	n->transport = NULL;
	n->closing_handles = 6;
	uv_close((uv_handle_t *)&n->reinit_timer, handle_closed);
	uv_close((uv_handle_t *)&n->disk_timer, handle_closed);
	uv_close((uv_handle_t *)&n->tick_timer, handle_closed);
	uv_close((uv_handle_t *)&n->sweep_timer, handle_closed);
	uv_close((uv_handle_t *)&n->batch_check, handle_closed);
	uv_close((uv_handle_t *)&n->finish_timer, handle_closed);
}

static void http_closed(struct http_server *server, void *user)
{
	struct kvd_node *n = user;
	(void)server;

	uv_timer_start(&n->finish_timer, finish_cb, 0, 10);
}

void kvd_node_shutdown(struct kvd_node *n, void (*done_cb)(struct kvd_node *node))
{
	if (kvd_node_stopping(n))
		return;
	kvd_node_set_state(n, KVD_NODE_STOPPING);
	n->shutdown_cb = done_cb;
	KVD_INFO("shutting down", "id=%s", n->cfg.id);
	kvd_watch_hub_end_all(kvd_applier_watch(n->applier)); /* streams end cleanly */
	http_server_close(n->http, KVD_SHUTDOWN_GRACE_MS, http_closed, n);
}

void kvd_node_destroy(struct kvd_node *n)
{
	if (n == NULL)
		return;
	raft_destroy(n->raft);
	engine_close(n->engine);
	raft_log_store_close(n->store);
	kvd_writer_destroy(n->writer);
	kvd_applier_destroy(n->applier);
	kvd_snapshots_destroy(n);
	kvd_cluster_destroy(n);
	free(n->batch);
	free(n);
}
