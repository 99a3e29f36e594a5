/*
 * internal.h: what engine.c, gc.c, view.c and snapshot.c share. Not for use
 * outside engine/ (other modules include engine.h and snapshot.h only).
 *
 * LevelDB key layout (docs/formats-engine.md):
 *   'd' gen(8, big-endian) userkey   a user key in generation gen; its value
 *                is u64 BE revision + user value (format 2; format 1 had the
 *                bare user value and is upgraded by engine_open())
 *   "mversion"   u32 BE format version (ENGINE_FORMAT_VERSION)
 *   "mapplied"   u64 BE index, u64 BE term
 *   "mgen"       u64 BE current generation (>= 1)
 *   "mpending"   n * u64 BE generations awaiting background deletion
 *   "mconfig"    opaque configuration blob of the last CONFIG entry
 *   "moutcome" index(8, big-endian)   one byte: 1 when the conditional
 *                command at index held (a TXN: its success branch ran), 0
 *                when not; written only for PUT-IF, PUT-ABSENT, DELETE-IF
 *                and TXN entries, pruned below the latest snapshot
 */
#ifndef KVD_ENGINE_INTERNAL_H
#define KVD_ENGINE_INTERNAL_H

#include <leveldb/c.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

#define ENGINE_FORMAT_VERSION  2
#define ENGINE_VALUE_HDR       8 /* bytes: u64 BE revision before the user value */
#define ENGINE_DATA_PREFIX     'd'
#define ENGINE_DATA_HDR	       9 /* bytes: prefix + generation */
#define ENGINE_KEY_VERSION     "mversion"
#define ENGINE_KEY_APPLIED     "mapplied"
#define ENGINE_KEY_GEN	       "mgen"
#define ENGINE_KEY_PENDING     "mpending"
#define ENGINE_KEY_CONFIG      "mconfig"
#define ENGINE_KEY_OUTCOME     "moutcome"
#define ENGINE_OUTCOME_KEY_LEN 16 /* bytes: "moutcome" + u64 BE index */

struct engine {
	char *dir;
	struct engine_options opts;
	/* db is replaced only by engine_apply()'s recovery (and engine_swap(),
	 * which needs exclusive use): that takes db_lock for writing, and only
	 * when no view is open; engine_get() and friends read under it. db is
	 * NULL when a recovery failed to reopen (reads then give KVD_EIO). */
	pthread_rwlock_t db_lock;
	leveldb_t *db;
	atomic_uint views_open;
	int write_error; /* apply thread only: last write failure, or 0 */
	leveldb_options_t *options;
	leveldb_cache_t *cache;
	leveldb_filterpolicy_t *filter;
	leveldb_readoptions_t *ropts;
	leveldb_writeoptions_t *wopts; /* sync = false */

	/* Guarded by state_lock; written by the apply thread after each batch. */
	pthread_mutex_t state_lock;
	uint64_t applied_index;
	uint64_t applied_term;
	uint64_t gen;
	atomic_uint_fast64_t malformed;

	/* Apply thread only: scratch buffer for a stored value (revision header
	 * + user value), grown as needed. */
	char *scratch;
	size_t scratch_cap;

	/* Guarded by gc_lock. engine_apply() holds it across the write of a
	 * batch that changes "mpending", so the two writers of that key are
	 * ordered. */
	pthread_mutex_t gc_lock;
	pthread_cond_t gc_cond;	     /* work arrived, or stop */
	pthread_cond_t gc_idle_cond; /* pending became empty */
	uint64_t *pending;
	size_t n_pending;
	bool gc_running;
	atomic_bool gc_stop;
	pthread_t gc_thread;
};

static inline void engine_put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
}

static inline uint64_t engine_get_u64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++) {
		v = (v << 8) | p[i];
	}
	return v;
}

/* Writes 'd' + gen into hdr (ENGINE_DATA_HDR bytes). */
static inline void engine_data_prefix(unsigned char *hdr, uint64_t gen)
{
	hdr[0] = ENGINE_DATA_PREFIX;
	engine_put_u64(hdr + 1, gen);
}

/* Converts a LevelDB errptr (freed here) into a code and message. */
int engine_leveldb_error(char *err, const char *what, char *errmsg);

/* Formats errmsg (may be NULL). */
void engine_errmsg(char *errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Calls the log hook, if any, with a formatted line. */
void engine_log(struct engine *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* fsync the directory that contains path (or path itself if is_dir). */
int engine_fsync_dir(const char *path, bool is_dir, char *errmsg);

/* Remove a directory tree (no error if missing). */
int engine_remove_tree(const char *path, char *errmsg);

/* Reads a meta key through ropts. On success *val is malloc'd (free()) or
 * NULL when absent. */
int engine_meta_read(leveldb_t *db, const leveldb_readoptions_t *ropts, const char *name,
		     char **val, size_t *len, char *errmsg);

/* Background deleter (gc.c). start() loads nothing: e->pending must already
 * be loaded. stop() joins the thread. */
int engine_gc_start(struct engine *e, char *errmsg);
void engine_gc_stop(struct engine *e);

#endif
