/*
 * sim_log.c: reference-counted log entries, the simulated logs (the log a
 * core asked for and the durable one), and the snapshot stream format of the
 * simulated state machine.
 *
 * Snapshot stream: magic, index, term, config length, raft_config_encode()
 * bytes, the key-value registers, filler (so streams span several chunks),
 * and an FNV-1a checksum of everything before it. A stream that fails to
 * parse after InstallSnapshot means the core mangled offsets or chunks.
 *
 * The state machine (sim_sm_apply) follows engine/engine.c's
 * apply_command() and apply_txn(): a register holds (value, revision), the
 * revision being the index of the entry that wrote it; PUT-IF and DELETE-IF
 * hold when the key exists at exactly their revision, PUT-ABSENT when it is
 * absent, all checked at apply time; a txn compares each key's revision (0:
 * absent) against the state after every earlier entry, then runs the
 * selected branch in order (a get sees the branch's earlier writes), every
 * put writing the entry's index. Each node applies the same log, so every
 * node computes the same outcome.
 *
 * Txn command layout after the 24-byte header: counts at 24 (comparisons),
 * 25 (success ops), 26 (failure ops); from 32, 16-byte records: a
 * comparison is key (byte 0) and revision (8 at 8); an operation is kind
 * (byte 0, enum linearize_kind: PUT, DELETE, GET), key (byte 1) and value
 * (8 at 8).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/sim/sim.h"

#define SNAP_MAGIC  0x4e53534d49534b56ull /* "VKSIMSSN" */
#define SNAP_FILLER 700			  /* bytes, to make several chunks */

/* ------------------------------------------------------------ entries, logs */

struct sim_entry *sim_entry_new(raft_index index, raft_term term, enum raft_entry_type type,
				const void *data, size_t len)
{
	struct sim_entry *e = malloc(sizeof(*e) + len);
	if (e == NULL)
		abort();
	e->refs = 1;
	e->index = index;
	e->term = term;
	e->type = type;
	e->len = len;
	if (len > 0)
		memcpy(e->data, data, len);
	e->hash = sim_bytes_hash(e->data, len) ^ (uint64_t)type;
	return e;
}

void sim_entry_unref(struct sim_entry *e)
{
	if (e != NULL && --e->refs == 0)
		free(e);
}

raft_index sim_log_last(const struct sim_log *l)
{
	return l->first + l->n - 1;
}

const struct sim_entry *sim_log_get(const struct sim_log *l, raft_index i)
{
	if (i < l->first || i > sim_log_last(l))
		return NULL;
	return l->e[i - l->first];
}

raft_term sim_log_term(const struct sim_log *l, raft_index i, bool *found)
{
	*found = true;
	if (i == l->first - 1)
		return l->prev_term;
	const struct sim_entry *e = sim_log_get(l, i);
	if (e == NULL) {
		*found = false;
		return 0;
	}
	return e->term;
}

void sim_log_push(struct sim_log *l, struct sim_entry *e)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->e = realloc(l->e, l->cap * sizeof(*l->e));
		if (l->e == NULL)
			abort();
	}
	e->refs++;
	l->e[l->n++] = e;
}

void sim_log_truncate(struct sim_log *l, raft_index from)
{
	while (l->n > 0 && sim_log_last(l) >= from)
		sim_entry_unref(l->e[--l->n]);
}

/* Empties l and restarts it after (index, term). */
void sim_log_reset(struct sim_log *l, raft_index index, raft_term term)
{
	sim_log_truncate(l, 0);
	l->first = index + 1;
	l->prev_term = term;
}

void sim_log_free(struct sim_log *l)
{
	sim_log_truncate(l, 0);
	free(l->e);
	l->e = NULL;
	l->cap = 0;
}

/* Drops entries before index keep_after + 1 (whose term is known). */
void sim_log_compact(struct sim_log *l, raft_index keep_after)
{
	if (keep_after < l->first || keep_after > sim_log_last(l))
		return;
	size_t drop = keep_after - l->first + 1;
	l->prev_term = l->e[drop - 1]->term;
	for (size_t i = 0; i < drop; i++)
		sim_entry_unref(l->e[i]);
	memmove(l->e, l->e + drop, (l->n - drop) * sizeof(*l->e));
	l->n -= drop;
	l->first = keep_after + 1;
}

void sim_cfg_rebuild(struct sim_node *n)
{
	n->n_cfg = 0;
	for (size_t i = 0; i < n->mlog.n; i++) {
		if (n->mlog.e[i]->type != RAFT_ENTRY_CONFIG)
			continue;
		if (n->n_cfg == n->cap_cfg) {
			n->cap_cfg = n->cap_cfg ? n->cap_cfg * 2 : 16;
			n->cfg_idx = realloc(n->cfg_idx, n->cap_cfg * sizeof(*n->cfg_idx));
			if (n->cfg_idx == NULL)
				abort();
		}
		n->cfg_idx[n->n_cfg++] = n->mlog.e[i]->index;
	}
}

/* ------------------------------------------------------------- snapshots */

static void put_u64(unsigned char **p, uint64_t v)
{
	memcpy(*p, &v, 8);
	*p += 8;
}

static uint64_t get_u64(const unsigned char **p)
{
	uint64_t v;
	memcpy(&v, *p, 8);
	*p += 8;
	return v;
}

/* Serializes the node's state machine at its applied index. */
void sim_snap_build(struct sim_node *n, raft_term term, struct sim_snap *out)
{
	void *cfg = NULL;
	size_t cfg_len = 0;
	if (raft_config_encode(&n->applied_config, &cfg, &cfg_len) != 0)
		abort();
	size_t len = 8 * 4 + cfg_len + 8 * SIM_KEYS + SNAP_FILLER + 8;
	unsigned char *buf = malloc(len), *p = buf;
	if (buf == NULL)
		abort();
	put_u64(&p, SNAP_MAGIC);
	put_u64(&p, n->applied);
	put_u64(&p, term);
	put_u64(&p, cfg_len);
	memcpy(p, cfg, cfg_len);
	p += cfg_len;
	for (int k = 0; k < SIM_KEYS; k++)
		put_u64(&p, n->kv[k]);
	for (int i = 0; i < SNAP_FILLER; i++)
		*p++ = (unsigned char)(n->applied * 31 + (uint64_t)i * 7);
	put_u64(&p, sim_bytes_hash(buf, len - 8));
	free(cfg);
	out->buf = buf;
	out->len = len;
	out->meta.index = n->applied;
	out->meta.term = term;
	out->meta.config = n->applied_config;
	out->meta.size = len;
}

/* Parses a snapshot stream; returns false if malformed. */
bool sim_snap_parse(const unsigned char *buf, size_t len, struct raft_snapshot_meta *meta,
		    uint64_t *kv)
{
	const unsigned char *p = buf;
	if (buf == NULL || len < 8 * 4 + 8 * SIM_KEYS + SNAP_FILLER + 8)
		return false;
	uint64_t sum;
	memcpy(&sum, buf + len - 8, 8);
	if (sum != sim_bytes_hash(buf, len - 8))
		return false;
	if (get_u64(&p) != SNAP_MAGIC)
		return false;
	meta->index = get_u64(&p);
	meta->term = get_u64(&p);
	uint64_t cfg_len = get_u64(&p);
	if (cfg_len != len - (8 * 4 + 8 * SIM_KEYS + SNAP_FILLER + 8))
		return false;
	if (raft_config_decode(p, cfg_len, &meta->config) != 0)
		return false;
	p += cfg_len;
	for (int k = 0; k < SIM_KEYS; k++)
		kv[k] = get_u64(&p);
	meta->size = len;
	return true;
}

/* ------------------------------------------------------------ state machine */

static uint64_t cmd_u64(const struct sim_entry *e, size_t at)
{
	uint64_t v;
	memcpy(&v, e->data + at, 8);
	return v;
}

/* Runs a txn entry against n->kv. */
static void sm_txn(struct sim *s, struct sim_node *n, const struct sim_entry *e,
		   struct sim_sm_result *res)
{
	unsigned n_cmp = e->data[24], n_ops[2] = {e->data[25], e->data[26]};
	bool held = true;

	if (n_cmp > LINEARIZE_TXN_MAX || n_ops[0] > LINEARIZE_TXN_MAX ||
	    n_ops[1] > LINEARIZE_TXN_MAX || e->len != 32 + 16 * (n_cmp + n_ops[0] + n_ops[1])) {
		sim_fail(s, "HARNESS BUG: txn entry %llu malformed", (unsigned long long)e->index);
		return;
	}
	for (unsigned i = 0; i < n_cmp; i++) {
		const unsigned char *c = e->data + 32 + 16 * i;
		held = held && SIM_KV_REV(n->kv[c[0] % SIM_KEYS]) == cmd_u64(e, 32 + 16 * i + 8);
	}
	res->succeeded = held;
	int b = held ? 0 : 1;
	size_t at = 32 + 16 * (n_cmp + (b == 1 ? n_ops[0] : 0));
	/* Planted bug txn-torn: only the first half (rounded up) runs. */
	unsigned run = s->p.plants.txn_torn ? (n_ops[b] + 1) / 2 : n_ops[b];
	for (unsigned i = 0; i < run; i++) {
		const unsigned char *o = e->data + at + 16 * i;
		uint64_t *kv = &n->kv[o[1] % SIM_KEYS];
		if (o[0] == LINEARIZE_PUT)
			*kv = cmd_u64(e, at + 16 * i + 8) << 32 | e->index;
		else if (o[0] == LINEARIZE_DELETE)
			*kv = 0;
		else
			res->get[i] = *kv;
	}
}

void sim_sm_apply(struct sim *s, struct sim_node *n, const struct sim_entry *e,
		  struct sim_sm_result *res)
{
	if (e->len < SIM_CMD_SIZE)
		return;
	uint64_t *kv = &n->kv[e->data[1] % SIM_KEYS];
	uint64_t value = cmd_u64(e, 8), if_rev = 0;
	if (value >> 32 != 0 || e->index >> 32 != 0) {
		sim_fail(s, "HARNESS BUG: value %llu or index %llu past 32 bits",
			 (unsigned long long)value, (unsigned long long)e->index);
		return;
	}
	if (e->data[0] == SIM_CMD_PUT_IF || e->data[0] == SIM_CMD_DELETE_IF) {
		if (e->len != SIM_CMD_SIZE + 8) {
			sim_fail(s, "HARNESS BUG: conditional entry %llu malformed (%zu bytes)",
				 (unsigned long long)e->index, e->len);
			return;
		}
		if_rev = cmd_u64(e, SIM_CMD_SIZE);
	}
	switch (e->data[0]) {
	case SIM_CMD_PUT: *kv = value << 32 | e->index; break;
	case SIM_CMD_DELETE: *kv = 0; break;
	case SIM_CMD_PUT_IF:
		res->applied = *kv != 0 && SIM_KV_REV(*kv) == if_rev;
		if (res->applied)
			*kv = value << 32 | e->index;
		break;
	case SIM_CMD_PUT_ABSENT:
		res->applied = *kv == 0;
		if (res->applied)
			*kv = value << 32 | e->index;
		break;
	case SIM_CMD_DELETE_IF:
		res->applied = *kv != 0 && SIM_KV_REV(*kv) == if_rev;
		if (res->applied)
			*kv = 0;
		break;
	case SIM_CMD_TXN:
		if (e->len >= 32)
			sm_txn(s, n, e, res);
		break;
	default: break; /* probe */
	}
}
