/*
 * snapshots.c: the node's local snapshots and log compaction (Raft §7).
 *
 * A snapshot is a consistent LevelDB view at an applied index, serialized by
 * engine_view_write() on a libuv worker thread into
 * <data>/snapshots/snapshot-<index>-<term>.lz4 (temporary file, fsync,
 * rename). Once it is durable the core is told (RAFT_EVENT_SNAPSHOT_TAKEN),
 * whole log segments below index - trailing are removed through the writer,
 * and older snapshot files are deleted. At most one snapshot runs at a time.
 *
 * Recovery: the newest snapshot file that reads back whole (every checksum,
 * engine_snapshot_check) names the snapshot the core starts from; a damaged
 * newer one is renamed *.corrupt, never trusted, and the older good ones are
 * kept until a valid one is chosen. If LevelDB is behind it (a lost or fresh state machine) the
 * snapshot is restored into a new LevelDB directory and swapped in before
 * anything else runs.
 */
#include <dirent.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/log.h"
#include "api/node_internal.h"
#include "api/snapshots.h"
#include "engine/snapshot.h"
#include "kvd/errors.h"

#define SNAPSHOT_PREFIX "snapshot-"
#define SNAPSHOT_SUFFIX ".lz4"

struct snapshot_task {
	struct kvd_node *node;
	struct engine_view *view;
	uint64_t index, term;
	uint64_t size; /* bytes */
	int status;
	char path[PATH_MAX];
	char errmsg[KVD_ERRMSG_SIZE];
};

static bool parse_name(const char *name, uint64_t *index, uint64_t *term)
{
	unsigned long long i, t;
	int used = 0;

	if (sscanf(name, SNAPSHOT_PREFIX "%llu-%llu" SNAPSHOT_SUFFIX "%n", &i, &t, &used) != 2 ||
	    name[used] != '\0' || used == 0)
		return false;
	*index = i;
	*term = t;
	return true;
}

void kvd_snapshot_path(const struct kvd_node *n, uint64_t index, uint64_t term, char *path)
{
	snprintf(path, PATH_MAX,
		 "%.3900s/" SNAPSHOT_PREFIX "%020" PRIu64 "-%020" PRIu64 SNAPSHOT_SUFFIX,
		 n->snap_dir, index, term);
}

/* Removes snapshot files other than the one at keep_index, and stale
 * temporary files. */
void kvd_snapshot_prune(struct kvd_node *n, uint64_t keep_index)
{
	DIR *d = opendir(n->snap_dir);
	struct dirent *de;

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		uint64_t index, term;
		char path[PATH_MAX];
		/* Temporary files of a running local snapshot or of a snapshot
		 * being received are in use. */
		bool tmp = strstr(de->d_name, ".tmp") != NULL && !kvd_node_snapshot_taking(n) &&
			   strcmp(de->d_name, "incoming.tmp") != 0;

		if (!tmp && (!parse_name(de->d_name, &index, &term) || index == keep_index))
			continue;
		snprintf(path, sizeof(path), "%.3900s/%.255s", n->snap_dir, de->d_name);
		unlink(path);
	}
	closedir(d);
}

struct snapshot_name {
	uint64_t index, term;
};

static int cmp_newest_first(const void *a, const void *b)
{
	const struct snapshot_name *x = a, *y = b;

	return x->index < y->index ? 1 : (x->index > y->index ? -1 : 0);
}

/* The snapshot files in dir, newest first, in a malloc'ed array. */
static int list_snapshots(const char *dir, struct snapshot_name **out, size_t *n_out)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	struct snapshot_name *names = NULL;
	size_t n = 0, cap = 0;
	int rv = 0;

	if (d == NULL)
		return KVD_ENOTFOUND;
	while ((de = readdir(d)) != NULL) {
		struct snapshot_name sn;
		if (!parse_name(de->d_name, &sn.index, &sn.term))
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			struct snapshot_name *p = realloc(names, ncap * sizeof(*p));
			if (p == NULL) {
				rv = KVD_ENOMEM;
				break;
			}
			names = p;
			cap = ncap;
		}
		names[n++] = sn;
	}
	closedir(d);
	if (rv != 0) {
		free(names);
		return rv;
	}
	if (n > 0)
		qsort(names, n, sizeof(*names), cmp_newest_first);
	*out = names;
	*n_out = n;
	return 0;
}

int kvd_snapshot_choose(const char *dir, struct engine_snapshot_meta *meta, char *path)
{
	struct snapshot_name *names = NULL;
	size_t n = 0;
	int rv;

	rv = list_snapshots(dir, &names, &n);
	if (rv != 0)
		return rv;
	rv = KVD_ENOTFOUND;
	for (size_t i = 0; i < n; i++) {
		char errmsg[KVD_ERRMSG_SIZE] = "";
		char aside[PATH_MAX + 16];

		snprintf(path, PATH_MAX,
			 "%.3900s/" SNAPSHOT_PREFIX "%020" PRIu64 "-%020" PRIu64 SNAPSHOT_SUFFIX,
			 dir, names[i].index, names[i].term);
		rv = engine_snapshot_check(path, meta, errmsg);
		if (rv != KVD_ECORRUPT)
			break;
		/* Kept for inspection under a name no scan picks up again. */
		snprintf(aside, sizeof(aside), "%s.corrupt", path);
		KVD_WARN("snapshot file is damaged; using an older one",
			 "file=%s detail=\"%s\" moved_to=%s", path, errmsg, aside);
		if (rename(path, aside) != 0) {
			rv = KVD_EIO;
			break;
		}
		rv = KVD_ENOTFOUND;
	}
	free(names);
	return rv;
}

static void take_work(uv_work_t *w)
{
	struct snapshot_task *t = w->data;
	t->status = engine_view_write(t->view, t->path, &t->size, t->errmsg);
}

static void take_done(uv_work_t *w, int status)
{
	struct snapshot_task *t = w->data;
	struct kvd_node *n = t->node;
	const void *config;
	size_t config_len;

	(void)status;
	if (t->status == 0 && t->index <= n->snapshot_index) {
		/* A snapshot installed from the leader meanwhile is newer. */
		unlink(t->path);
		KVD_INFO("local snapshot superseded by an installed one", "index=%" PRIu64,
			 t->index);
	} else if (t->status != 0) {
		KVD_ERROR("snapshot failed", "index=%" PRIu64 " error=\"%s\" detail=\"%s\"",
			  t->index, kvd_strerror(t->status), t->errmsg);
	} else {
		struct raft_event e = {.type = RAFT_EVENT_SNAPSHOT_TAKEN};
		engine_view_meta(t->view, &t->index, &t->term, &config, &config_len);
		e.u.snapshot.index = t->index;
		e.u.snapshot.term = t->term;
		e.u.snapshot.size = t->size;
		if (config_len == 0 ||
		    raft_config_decode(config, config_len, &e.u.snapshot.config) != 0) {
			KVD_ERROR("snapshot has no readable configuration; not used",
				  "index=%" PRIu64, t->index);
		} else {
			n->snapshot_index = t->index;
			n->snapshot_term = t->term;
			n->snapshot_size = t->size;
			kvd_node_step(n, &e);
			kvd_snapshot_prune(n, t->index);
			if (t->index > n->snapshot_trailing)
				kvd_node_remove_log_head(n, t->index - n->snapshot_trailing);
			KVD_INFO("snapshot taken",
				 "index=%" PRIu64 " term=%" PRIu64 " bytes=%" PRIu64, t->index,
				 t->term, t->size);
		}
	}
	engine_view_release(t->view);
	kvd_snapshot_waiters_done(n, t->status);
	free(t);
	/* IDLE, or the install from the leader that waited for this view. */
	kvd_node_snapshot_taken(n);
}

int kvd_snapshot_take(struct kvd_node *n)
{
	struct snapshot_task *t;
	const void *config;
	size_t config_len;
	int rv;

	if (n->snapshot_state != KVD_SNAP_IDLE)
		return KVD_EBUSY;
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return KVD_ENOMEM;
	rv = engine_snapshot_begin(n->engine, &t->view);
	if (rv != 0) {
		free(t);
		return rv;
	}
	engine_view_meta(t->view, &t->index, &t->term, &config, &config_len);
	if (t->index == 0 || t->index <= n->snapshot_index) {
		engine_view_release(t->view);
		free(t);
		return KVD_EEXIST; /* nothing new to cover */
	}
	t->node = n;
	kvd_snapshot_path(n, t->index, t->term, t->path);
	n->snapshot_work.data = t;
	n->snapshot_state = KVD_SNAP_TAKING;
	KVD_INFO("snapshot started", "index=%" PRIu64 " term=%" PRIu64, t->index, t->term);
	rv = uv_queue_work(n->loop, &n->snapshot_work, take_work, take_done);
	if (rv != 0) {
		n->snapshot_state = KVD_SNAP_IDLE;
		engine_view_release(t->view);
		free(t);
		return KVD_EIO;
	}
	return 0;
}

void kvd_snapshot_after_install(struct kvd_node *n)
{
	int rv;

	if (n->snapshot_waiters == NULL)
		return;
	rv = kvd_snapshot_take(n);
	if (rv == KVD_EEXIST)
		rv = 0; /* the installed snapshot covers the applied state */
	if (rv != 0 || n->snapshot_state == KVD_SNAP_IDLE)
		kvd_snapshot_waiters_done(n, rv);
}

void kvd_snapshot_maybe_take(struct kvd_node *n)
{
	if (n->snapshot_state == KVD_SNAP_IDLE && !kvd_node_stopping(n) &&
	    n->applied_index >= n->snapshot_index + n->cfg.snapshot_threshold)
		kvd_snapshot_take(n);
}

int kvd_snapshot_recover(struct kvd_node *n, struct raft_snapshot_meta *out, char *errmsg)
{
	struct engine_snapshot_meta meta = {0};
	char path[PATH_MAX];
	uint64_t applied, applied_term;
	int rv;

	memset(out, 0, sizeof(*out));
	rv = kvd_snapshot_choose(n->snap_dir, &meta, path);
	if (rv == KVD_ENOTFOUND)
		return 0;
	if (rv != 0) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot read snapshot %.3000s: %s", path,
			 kvd_strerror(rv));
		return rv;
	}
	out->index = meta.index;
	out->term = meta.term;
	out->size = meta.size;
	if (raft_config_decode(meta.config, meta.config_len, &out->config) != 0) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "snapshot %.3000s holds no valid configuration",
			 path);
		engine_snapshot_meta_clear(&meta);
		return KVD_ECORRUPT;
	}
	engine_snapshot_meta_clear(&meta);
	n->snapshot_index = out->index;
	n->snapshot_term = out->term;
	n->snapshot_size = out->size;
	kvd_snapshot_prune(n, out->index);

	engine_applied(n->engine, &applied, &applied_term);
	if (applied < out->index) {
		char fresh[PATH_MAX];
		snprintf(fresh, sizeof(fresh), "%.3900s.restore", n->kv_dir);
		kvd_remove_tree(fresh);
		KVD_INFO("restoring state machine from snapshot",
			 "index=%" PRIu64 " applied=%" PRIu64 " file=%s", out->index, applied,
			 path);
		rv = engine_snapshot_restore(path, fresh, NULL, errmsg);
		if (rv == 0)
			rv = engine_swap(n->engine, fresh, errmsg);
		if (rv != 0)
			return rv;
	}
	return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void kvd_remove_tree(const char *path)
{
	nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}
