/*
 * engine.c: opening, applying to and reading from the LevelDB state machine.
 *
 * Why it is shaped this way: the Raft log is the write-ahead log, so the
 * state machine only has to make "state" and "applied index" agree. Each
 * engine_apply() call therefore becomes exactly one LevelDB WriteBatch that
 * carries every mutation of the batch and the new "mapplied" meta key; LevelDB
 * applies a batch atomically, also across crashes, so after any restart the
 * stored index says precisely which entries are reflected and replay resumes
 * after it. No sync is needed: losing the tail of LevelDB's own log only
 * moves the applied index back, and the Raft log replays it.
 *
 * Revisions (API.md §10): each stored value starts with the 8-byte index of
 * the entry that wrote it, put in the same WriteBatch as the value and
 * "mapplied", so a key's revision and the data can never disagree. A format-1
 * directory (bare values) is upgraded once at open (upgrade_v1()).
 *
 * Conditional commands and transactions are decided here, at apply, so that
 * every node decides alike: the condition reads the state after every
 * earlier entry, which for entries of the same call is not in LevelDB yet,
 * so the call remembers its own writes (struct apply_ctx) and reads LevelDB
 * only for keys it has not written. Per-entry outcomes and changes go back
 * to the caller (engine_apply_results()) for 412s, ETags, transaction
 * answers and the watcher hub.
 *
 * User keys live under a generation: 'd' + gen (8 bytes, big-endian) + key.
 * CLEAR increments "mgen" and appends the old generation to "mpending" in the
 * same batch, so every key disappears at once; gc.c deletes the old ranges in
 * the background. Reads only ever look at the current generation.
 *
 * Invariants:
 *  - applied_index only grows, and the in-memory copy equals "mapplied" after
 *    each successful write (always-on check in engine_apply(), not assert).
 *  - gen >= 1; every generation in "mpending" is < gen.
 *  - A failed write changes neither the database nor the in-memory state.
 */
#include "engine/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)

void engine_errmsg(char *errmsg, const char *fmt, ...)
{
	va_list ap;

	if (errmsg == NULL) {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(errmsg, KVD_ERRMSG_SIZE, fmt, ap);
	va_end(ap);
}

void engine_log(struct engine *e, const char *fmt, ...)
{
	char line[KVD_ERRMSG_SIZE];
	va_list ap;

	if (e == NULL || e->opts.log_cb == NULL) {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	e->opts.log_cb(e->opts.log_data, line);
}

int engine_leveldb_error(char *err, const char *what, char *errmsg)
{
	int rv = KVD_EIO;

	if (err == NULL) {
		engine_errmsg(errmsg, "%s: unknown leveldb error", what);
		return KVD_EIO;
	}
	if (strstr(err, "No space left on device") != NULL) {
		rv = KVD_ENOSPC;
	} else if (strstr(err, "/LOCK") != NULL) {
		rv = KVD_ELOCKED;
	} else if (strstr(err, "Corruption") != NULL) {
		rv = KVD_ECORRUPT;
	}
	engine_errmsg(errmsg, "%s: %s", what, err);
	leveldb_free(err);
	return rv;
}

int engine_fsync_dir(const char *path, bool is_dir, char *errmsg)
{
	char *copy = strdup(path);
	const char *dir;
	int fd;
	int rv = 0;

	if (copy == NULL) {
		return KVD_ENOMEM;
	}
	dir = is_dir ? copy : dirname(copy);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		engine_errmsg(errmsg, "open directory %s: %s", dir, strerror(errno));
		rv = KVD_EIO;
		goto err_copy;
	}
	if (fsync(fd) != 0) {
		engine_errmsg(errmsg, "fsync directory %s: %s", dir, strerror(errno));
		rv = errno == ENOSPC ? KVD_ENOSPC : KVD_EIO;
	}
	close(fd);
err_copy:
	free(copy);
	return rv;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) == 0 ? 0 : -1;
}

int engine_remove_tree(const char *path, char *errmsg)
{
	struct stat st;

	if (lstat(path, &st) != 0 && errno == ENOENT) {
		return 0;
	}
	if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
		engine_errmsg(errmsg, "remove %s: %s", path, strerror(errno));
		return KVD_EIO;
	}
	return 0;
}

int engine_meta_read(leveldb_t *db, const leveldb_readoptions_t *ropts, const char *name,
		     char **val, size_t *len, char *errmsg)
{
	char *err = NULL;
	size_t n = 0;
	char *v = leveldb_get(db, ropts, name, strlen(name), &n, &err);

	if (err != NULL) {
		return engine_leveldb_error(err, name, errmsg);
	}
	*val = v;
	*len = v == NULL ? 0 : n;
	return 0;
}

/* Reads a fixed-size big-endian u64 meta key; absent gives dflt. */
static int meta_read_u64(struct engine *e, const char *name, uint64_t dflt, uint64_t *out,
			 char *errmsg)
{
	char *v = NULL;
	size_t n = 0;
	int rv = engine_meta_read(e->db, e->ropts, name, &v, &n, errmsg);

	if (rv != 0) {
		return rv;
	}
	if (v == NULL) {
		*out = dflt;
		return 0;
	}
	if (n != 8) {
		engine_errmsg(errmsg, "%s: meta key %s has %zu bytes, want 8", e->dir, name, n);
		rv = KVD_ECORRUPT;
	} else {
		*out = engine_get_u64((const unsigned char *)v);
	}
	leveldb_free(v);
	return rv;
}

/* Writes the format version and generation 1 into a database that has no
 * keys yet; refuses a non-empty database without a version key. */
static int db_init_fresh(struct engine *e, char *errmsg)
{
	leveldb_iterator_t *it = leveldb_create_iterator(e->db, e->ropts);
	leveldb_writeoptions_t *sync_opts;
	leveldb_writebatch_t *batch;
	unsigned char gen[8];
	unsigned char version[4] = {0, 0, 0, ENGINE_FORMAT_VERSION};
	char *err = NULL;
	bool empty;

	leveldb_iter_seek_to_first(it);
	empty = !leveldb_iter_valid(it);
	leveldb_iter_destroy(it);
	if (!empty) {
		engine_errmsg(errmsg, "%s: a LevelDB database without kvd meta keys", e->dir);
		return KVD_ECORRUPT;
	}
	engine_put_u64(gen, 1);
	batch = leveldb_writebatch_create();
	leveldb_writebatch_put(batch, ENGINE_KEY_VERSION, strlen(ENGINE_KEY_VERSION),
			       (const char *)version, sizeof(version));
	leveldb_writebatch_put(batch, ENGINE_KEY_GEN, strlen(ENGINE_KEY_GEN), (const char *)gen, 8);
	sync_opts = leveldb_writeoptions_create();
	leveldb_writeoptions_set_sync(sync_opts, 1);
	leveldb_write(e->db, sync_opts, batch, &err);
	leveldb_writeoptions_destroy(sync_opts);
	leveldb_writebatch_destroy(batch);
	if (err != NULL) {
		return engine_leveldb_error(err, e->dir, errmsg);
	}
	return 0;
}

/* Reads "mpending" into a malloc'd array (NULL when empty). */
static int load_pending(struct engine *e, uint64_t gen, uint64_t **out, size_t *n_out, char *errmsg)
{
	uint64_t *pending = NULL;
	char *v = NULL;
	size_t n = 0;
	int rv;

	rv = engine_meta_read(e->db, e->ropts, ENGINE_KEY_PENDING, &v, &n, errmsg);
	if (rv != 0 || v == NULL) {
		*out = NULL;
		*n_out = 0;
		return rv;
	}
	if (n % 8 != 0) {
		engine_errmsg(errmsg, "%s: meta key mpending has %zu bytes", e->dir, n);
		rv = KVD_ECORRUPT;
		goto out;
	}
	pending = malloc(n > 0 ? n : 1);
	if (pending == NULL) {
		rv = KVD_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n / 8; i++) {
		pending[i] = engine_get_u64((const unsigned char *)v + 8 * i);
		if (pending[i] >= gen) {
			engine_errmsg(errmsg, "%s: pending generation %llu >= current", e->dir,
				      (unsigned long long)pending[i]);
			rv = KVD_ECORRUPT;
			goto out;
		}
	}
	*out = pending;
	*n_out = n / 8;
	pending = NULL;
out:
	free(pending);
	leveldb_free(v);
	return rv;
}

/* Adds key/value to batch and writes it once it holds about 1 MiB. */
static int upgrade_put(struct engine *e, leveldb_writebatch_t *batch, size_t *bytes,
		       const char *key, size_t klen, const char *val, size_t vlen, bool del,
		       char *errmsg)
{
	char *err = NULL;

	if (del) {
		leveldb_writebatch_delete(batch, key, klen);
	} else {
		leveldb_writebatch_put(batch, key, klen, val, vlen);
	}
	*bytes += klen + vlen;
	if (*bytes < MIB) {
		return 0;
	}
	leveldb_write(e->db, e->wopts, batch, &err);
	leveldb_writebatch_clear(batch);
	*bytes = 0;
	return err == NULL ? 0 : engine_leveldb_error(err, e->dir, errmsg);
}

/*
 * Upgrades a format-1 database (bare values) to format 2 (revision header):
 * copies generation gen into gen + 1 with revision max(index, 1), then one
 * synced batch makes gen + 1 current, queues gen for the deleter and sets
 * mversion 2. A crash before that batch leaves a format-1 database whose
 * generation gen + 1 is garbage: the next open deletes it and starts again.
 * On success *gen and *pending (realloc'd) describe the new state.
 */
static int upgrade_v1(struct engine *e, uint64_t index, uint64_t *gen, uint64_t **pending,
		      size_t *n_pending, char *errmsg)
{
	unsigned char prefix[ENGINE_DATA_HDR];
	unsigned char version[4] = {0, 0, 0, ENGINE_FORMAT_VERSION};
	unsigned char genbuf[8];
	uint64_t rev = index > 0 ? index : 1;
	leveldb_writebatch_t *batch = leveldb_writebatch_create();
	leveldb_writeoptions_t *sync_opts = leveldb_writeoptions_create();
	leveldb_iterator_t *it = leveldb_create_iterator(e->db, e->ropts);
	unsigned char *list = NULL;
	uint64_t *np = NULL;
	char *val = NULL;
	size_t val_cap = 0, bytes = 0, n_copied = 0;
	char *err = NULL;
	int rv = 0;

	if (batch == NULL || sync_opts == NULL || it == NULL) {
		rv = KVD_ENOMEM;
		goto out;
	}
	/* Pass 0 deletes leftovers of an interrupted upgrade in gen + 1;
	 * pass 1 copies gen into gen + 1. */
	for (int pass = 0; pass < 2 && rv == 0; pass++) {
		uint64_t src = pass == 0 ? *gen + 1 : *gen;
		engine_data_prefix(prefix, src);
		for (leveldb_iter_seek(it, (const char *)prefix, sizeof(prefix));
		     rv == 0 && leveldb_iter_valid(it); leveldb_iter_next(it)) {
			char dkey[ENGINE_DATA_HDR + ENGINE_KEY_MAX];
			size_t klen, vlen;
			const char *k = leveldb_iter_key(it, &klen);
			const char *v;
			if (klen <= ENGINE_DATA_HDR || klen > sizeof(dkey) ||
			    memcmp(k, prefix, ENGINE_DATA_HDR) != 0) {
				break;
			}
			if (pass == 0) {
				rv = upgrade_put(e, batch, &bytes, k, klen, NULL, 0, true, errmsg);
				continue;
			}
			v = leveldb_iter_value(it, &vlen);
			if (val_cap < ENGINE_VALUE_HDR + vlen) {
				char *p = realloc(val, ENGINE_VALUE_HDR + vlen);
				if (p == NULL) {
					rv = KVD_ENOMEM;
					break;
				}
				val = p;
				val_cap = ENGINE_VALUE_HDR + vlen;
			}
			engine_put_u64((unsigned char *)val, rev);
			memcpy(val + ENGINE_VALUE_HDR, v, vlen);
			engine_data_prefix((unsigned char *)dkey, *gen + 1);
			memcpy(dkey + ENGINE_DATA_HDR, k + ENGINE_DATA_HDR, klen - ENGINE_DATA_HDR);
			rv = upgrade_put(e, batch, &bytes, dkey, klen, val, ENGINE_VALUE_HDR + vlen,
					 false, errmsg);
			n_copied++;
		}
		leveldb_iter_get_error(it, &err);
		if (err != NULL && rv == 0) {
			rv = engine_leveldb_error(err, e->dir, errmsg);
		}
	}
	if (rv != 0) {
		goto out;
	}
	np = realloc(*pending, sizeof(*np) * (*n_pending + 1));
	list = malloc(8 * (*n_pending + 1));
	if (np == NULL || list == NULL) {
		rv = KVD_ENOMEM;
		goto out;
	}
	*pending = np;
	np[(*n_pending)++] = *gen;
	for (size_t i = 0; i < *n_pending; i++) {
		engine_put_u64(list + 8 * i, np[i]);
	}
	*gen += 1;
	engine_put_u64(genbuf, *gen);
	leveldb_writebatch_put(batch, ENGINE_KEY_GEN, strlen(ENGINE_KEY_GEN), (const char *)genbuf,
			       8);
	leveldb_writebatch_put(batch, ENGINE_KEY_PENDING, strlen(ENGINE_KEY_PENDING),
			       (const char *)list, 8 * *n_pending);
	leveldb_writebatch_put(batch, ENGINE_KEY_VERSION, strlen(ENGINE_KEY_VERSION),
			       (const char *)version, sizeof(version));
	leveldb_writeoptions_set_sync(sync_opts, 1);
	leveldb_write(e->db, sync_opts, batch, &err);
	if (err != NULL) {
		rv = engine_leveldb_error(err, e->dir, errmsg);
		goto out;
	}
	engine_log(e,
		   "level=info msg=\"engine format upgraded from 1 to 2\" dir=%s keys=%zu "
		   "revision=%llu",
		   e->dir, n_copied, (unsigned long long)rev);
out:
	free(list);
	free(val);
	if (it != NULL) {
		leveldb_iter_destroy(it);
	}
	if (sync_opts != NULL) {
		leveldb_writeoptions_destroy(sync_opts);
	}
	if (batch != NULL) {
		leveldb_writebatch_destroy(batch);
	}
	return rv;
}

/* Loads (or, for an empty database, creates) the meta keys and publishes them
 * in the in-memory state under the locks that guard it. */
static int db_load_meta(struct engine *e, char *errmsg)
{
	uint64_t index = 0, term = 0, gen = 0;
	uint64_t *pending = NULL;
	size_t n_pending = 0;
	char *v = NULL;
	size_t n = 0;
	bool v1 = false;
	int rv;

	rv = engine_meta_read(e->db, e->ropts, ENGINE_KEY_VERSION, &v, &n, errmsg);
	if (rv != 0) {
		return rv;
	}
	if (v == NULL) {
		rv = db_init_fresh(e, errmsg);
		if (rv != 0) {
			return rv;
		}
	} else {
		bool ok = n == 4 && memcmp(v, "\0\0\0", 3) == 0 &&
			  (v[3] == 1 || v[3] == ENGINE_FORMAT_VERSION);
		v1 = ok && v[3] == 1;
		leveldb_free(v);
		if (!ok) {
			engine_errmsg(errmsg, "%s: unsupported engine format version", e->dir);
			return KVD_ECORRUPT;
		}
	}

	rv = engine_meta_read(e->db, e->ropts, ENGINE_KEY_APPLIED, &v, &n, errmsg);
	if (rv != 0) {
		return rv;
	}
	if (v != NULL) {
		bool ok = n == 16;
		if (ok) {
			index = engine_get_u64((const unsigned char *)v);
			term = engine_get_u64((const unsigned char *)v + 8);
		}
		leveldb_free(v);
		if (!ok) {
			engine_errmsg(errmsg, "%s: meta key mapplied has %zu bytes", e->dir, n);
			return KVD_ECORRUPT;
		}
	}

	rv = meta_read_u64(e, ENGINE_KEY_GEN, 0, &gen, errmsg);
	if (rv != 0) {
		return rv;
	}
	if (gen == 0) {
		engine_errmsg(errmsg, "%s: meta key mgen missing or zero", e->dir);
		return KVD_ECORRUPT;
	}
	rv = load_pending(e, gen, &pending, &n_pending, errmsg);
	if (rv != 0) {
		return rv;
	}
	if (v1) {
		rv = upgrade_v1(e, index, &gen, &pending, &n_pending, errmsg);
		if (rv != 0) {
			free(pending);
			return rv;
		}
	}

	pthread_mutex_lock(&e->state_lock);
	e->applied_index = index;
	e->applied_term = term;
	e->gen = gen;
	pthread_mutex_unlock(&e->state_lock);
	pthread_mutex_lock(&e->gc_lock);
	free(e->pending);
	e->pending = pending;
	e->n_pending = n_pending;
	pthread_mutex_unlock(&e->gc_lock);
	return 0;
}

static void db_close(struct engine *e)
{
	if (e->db != NULL) {
		leveldb_close(e->db);
		e->db = NULL;
	}
}

static int db_open(struct engine *e, char *errmsg)
{
	char *err = NULL;
	int rv;

	e->db = leveldb_open(e->options, e->dir, &err);
	if (err != NULL) {
		e->db = NULL;
		return engine_leveldb_error(err, e->dir, errmsg);
	}
	rv = db_load_meta(e, errmsg);
	if (rv != 0) {
		db_close(e);
	}
	return rv;
}

/* Finishes or rolls back an engine_swap() interrupted by a crash. */
static int swap_recover(const char *dir, char *errmsg)
{
	struct stat st;
	char old[4096];
	bool have_dir, have_old;

	if ((size_t)snprintf(old, sizeof(old), "%s.old", dir) >= sizeof(old)) {
		engine_errmsg(errmsg, "%s: path too long", dir);
		return KVD_EINVAL;
	}
	have_dir = stat(dir, &st) == 0;
	have_old = stat(old, &st) == 0;
	if (have_old && !have_dir) {
		if (rename(old, dir) != 0) {
			engine_errmsg(errmsg, "rename %s to %s: %s", old, dir, strerror(errno));
			return KVD_EIO;
		}
		return engine_fsync_dir(dir, false, errmsg);
	}
	if (have_old) {
		return engine_remove_tree(old, errmsg);
	}
	return 0;
}

static int options_create(struct engine *e)
{
	struct engine_options *o = &e->opts;

	if (o->cache_bytes == 0) {
		o->cache_bytes = 32 * MIB;
	}
	if (o->write_buffer_bytes == 0) {
		o->write_buffer_bytes = 8 * MIB;
	}
	if (o->bloom_bits_per_key == 0) {
		o->bloom_bits_per_key = 10;
	}
	if (o->max_open_files == 0) {
		o->max_open_files = 74; /* LevelDB's minimum: 64 cached tables */
	}
	if (o->table_file_bytes == 0) {
		o->table_file_bytes = 2 * MIB;
	}
	if (o->deleter_batch_keys == 0) {
		o->deleter_batch_keys = 1000;
	}
	e->options = leveldb_options_create();
	e->cache = leveldb_cache_create_lru(o->cache_bytes);
	e->filter = leveldb_filterpolicy_create_bloom(o->bloom_bits_per_key);
	e->ropts = leveldb_readoptions_create();
	e->wopts = leveldb_writeoptions_create();
	if (e->options == NULL || e->cache == NULL || e->filter == NULL || e->ropts == NULL ||
	    e->wopts == NULL) {
		return KVD_ENOMEM;
	}
	leveldb_options_set_create_if_missing(e->options, 1);
	leveldb_options_set_cache(e->options, e->cache);
	leveldb_options_set_filter_policy(e->options, e->filter);
	leveldb_options_set_write_buffer_size(e->options, o->write_buffer_bytes);
	leveldb_options_set_max_open_files(e->options, o->max_open_files);
	leveldb_options_set_max_file_size(e->options, o->table_file_bytes);
	leveldb_writeoptions_set_sync(e->wopts, 0);
	return 0;
}

static void engine_free(struct engine *e)
{
	if (e->options != NULL) {
		leveldb_options_destroy(e->options);
	}
	if (e->filter != NULL) {
		leveldb_filterpolicy_destroy(e->filter);
	}
	if (e->cache != NULL) {
		leveldb_cache_destroy(e->cache);
	}
	if (e->ropts != NULL) {
		leveldb_readoptions_destroy(e->ropts);
	}
	if (e->wopts != NULL) {
		leveldb_writeoptions_destroy(e->wopts);
	}
	pthread_cond_destroy(&e->gc_idle_cond);
	pthread_cond_destroy(&e->gc_cond);
	pthread_mutex_destroy(&e->gc_lock);
	pthread_mutex_destroy(&e->state_lock);
	pthread_rwlock_destroy(&e->db_lock);
	free(e->pending);
	free(e->scratch);
	free(e->dir);
	free(e);
}

int engine_open(const char *dir, const struct engine_options *opts, struct engine **engine,
		char *errmsg)
{
	struct engine *e;
	int rv;

	e = calloc(1, sizeof(*e));
	if (e == NULL) {
		return KVD_ENOMEM;
	}
	pthread_rwlock_init(&e->db_lock, NULL);
	pthread_mutex_init(&e->state_lock, NULL);
	pthread_mutex_init(&e->gc_lock, NULL);
	pthread_cond_init(&e->gc_cond, NULL);
	pthread_cond_init(&e->gc_idle_cond, NULL);
	atomic_init(&e->malformed, 0);
	atomic_init(&e->views_open, 0);
	atomic_init(&e->gc_stop, false);
	if (opts != NULL) {
		e->opts = *opts;
	}
	e->dir = strdup(dir);
	if (e->dir == NULL) {
		rv = KVD_ENOMEM;
		goto err_alloc;
	}
	rv = options_create(e);
	if (rv != 0) {
		goto err_alloc;
	}
	rv = swap_recover(dir, errmsg);
	if (rv != 0) {
		goto err_alloc;
	}
	rv = db_open(e, errmsg);
	if (rv != 0) {
		goto err_alloc;
	}
	rv = engine_gc_start(e, errmsg);
	if (rv != 0) {
		goto err_db;
	}
	*engine = e;
	return 0;

err_db:
	db_close(e);
err_alloc:
	engine_free(e);
	return rv;
}

void engine_close(struct engine *engine)
{
	if (engine == NULL) {
		return;
	}
	engine_gc_stop(engine);
	db_close(engine);
	engine_free(engine);
}

void engine_applied(struct engine *engine, uint64_t *index, uint64_t *term)
{
	pthread_mutex_lock(&engine->state_lock);
	*index = engine->applied_index;
	*term = engine->applied_term;
	pthread_mutex_unlock(&engine->state_lock);
}

int engine_config_get(struct engine *engine, void **config, size_t *len)
{
	char *v = NULL;
	size_t n;
	void *copy;
	int rv = KVD_EIO;

	pthread_rwlock_rdlock(&engine->db_lock);
	if (engine->db != NULL) {
		rv = engine_meta_read(engine->db, engine->ropts, ENGINE_KEY_CONFIG, &v, &n, NULL);
	}
	pthread_rwlock_unlock(&engine->db_lock);
	if (rv != 0) {
		return rv;
	}
	if (v == NULL) {
		return KVD_ENOTFOUND;
	}
	copy = malloc(n > 0 ? n : 1);
	if (copy == NULL) {
		leveldb_free(v);
		return KVD_ENOMEM;
	}
	memcpy(copy, v, n);
	leveldb_free(v);
	*config = copy;
	*len = n;
	return 0;
}

uint64_t engine_malformed_count(struct engine *engine)
{
	return atomic_load(&engine->malformed);
}

/* Builds 'd' + gen + key into buf (ENGINE_DATA_HDR + ENGINE_KEY_MAX bytes). */
static size_t data_key(char *buf, uint64_t gen, const char *key, size_t key_len)
{
	engine_data_prefix((unsigned char *)buf, gen);
	memcpy(buf + ENGINE_DATA_HDR, key, key_len);
	return ENGINE_DATA_HDR + key_len;
}

/* Builds "moutcome" + index (ENGINE_OUTCOME_KEY_LEN bytes) into buf. */
static void outcome_key(char *buf, uint64_t index)
{
	memcpy(buf, ENGINE_KEY_OUTCOME, 8);
	engine_put_u64((unsigned char *)buf + 8, index);
}

static int check_entries(struct engine *e, const struct engine_entry *entries, size_t n,
			 char *errmsg)
{
	uint64_t prev;

	pthread_mutex_lock(&e->state_lock);
	prev = e->applied_index;
	pthread_mutex_unlock(&e->state_lock);
	for (size_t i = 0; i < n; i++) {
		if (entries[i].index <= prev) {
			engine_errmsg(errmsg, "entry index %llu not above %llu",
				      (unsigned long long)entries[i].index,
				      (unsigned long long)prev);
			return KVD_EINVAL;
		}
		if (entries[i].type != ENGINE_ENTRY_COMMAND &&
		    entries[i].type != ENGINE_ENTRY_OTHER &&
		    entries[i].type != ENGINE_ENTRY_CONFIG) {
			engine_errmsg(errmsg, "entry %llu: unknown type %d",
				      (unsigned long long)entries[i].index, (int)entries[i].type);
			return KVD_EINVAL;
		}
		if (entries[i].data == NULL && entries[i].len > 0) {
			return KVD_EINVAL;
		}
		prev = entries[i].index;
	}
	return 0;
}

/* A write earlier in the current call, so that a condition sees it. key
 * borrows from the entry's data. */
struct apply_write {
	uint64_t gen;
	const char *key;
	size_t key_len;
	const char *value; /* borrowed from the entry or a live transaction */
	size_t value_len;
	uint64_t revision; /* 0: deleted */
};

/* State of one engine_apply_results() call while it builds the batch. */
struct apply_ctx {
	struct engine *e;
	leveldb_writebatch_t *batch;
	uint64_t db_gen; /* generation stored in the database before the call */
	uint64_t gen;	 /* current generation, bumped by each CLEAR */
	uint64_t *cleared;
	size_t n_cleared;
	size_t n_entries; /* of the call */
	struct apply_write *writes;
	size_t n_writes, cap_writes;
	/* Parsed transactions, kept until the batch is written since writes[]
	 * borrows their strings. */
	struct engine_txn *txns;
	size_t n_txns;
};

/* Reads the revision of key as of every earlier entry (0: absent); when
 * value is not NULL, also a malloc'd copy of the value (NULL when absent). */
static int apply_lookup(struct apply_ctx *c, const char *key, size_t key_len, uint64_t *rev,
			char **value, size_t *value_len)
{
	char dkey[ENGINE_DATA_HDR + ENGINE_KEY_MAX];
	const char *src = NULL;
	char *err = NULL;
	char *v = NULL;
	size_t n = 0;
	int rv = 0;

	*rev = 0;
	for (size_t i = c->n_writes; i > 0; i--) {
		const struct apply_write *w = &c->writes[i - 1];
		if (w->gen == c->gen && w->key_len == key_len &&
		    memcmp(w->key, key, key_len) == 0) {
			*rev = w->revision;
			src = w->value;
			n = w->value_len;
			goto found;
		}
	}
	if (c->gen == c->db_gen) {
		/* (after a CLEAR earlier in this call the new generation is empty) */
		v = leveldb_get(c->e->db, c->e->ropts, dkey, data_key(dkey, c->gen, key, key_len),
				&n, &err);
		if (err != NULL) {
			return engine_leveldb_error(err, c->e->dir, NULL);
		}
		if (v != NULL && n < ENGINE_VALUE_HDR) {
			leveldb_free(v);
			return KVD_ECORRUPT;
		}
		if (v != NULL) {
			*rev = engine_get_u64((const unsigned char *)v);
			src = v + ENGINE_VALUE_HDR;
			n -= ENGINE_VALUE_HDR;
		}
	}
found:
	if (value != NULL) {
		*value = NULL;
		*value_len = 0;
		if (*rev != 0) {
			*value = malloc(n > 0 ? n : 1);
			if (*value == NULL) {
				rv = KVD_ENOMEM;
			} else {
				if (n > 0) {
					memcpy(*value, src, n);
				}
				*value_len = n;
			}
		}
	}
	if (v != NULL) {
		leveldb_free(v);
	}
	return rv;
}

/* Adds a put (revision > 0) or delete of key to the batch and remembers it. */
static int apply_write(struct apply_ctx *c, const char *key, size_t key_len, const char *value,
		       size_t value_len, uint64_t revision)
{
	char dkey[ENGINE_DATA_HDR + ENGINE_KEY_MAX];
	struct engine *e = c->e;
	size_t klen = data_key(dkey, c->gen, key, key_len);

	if (c->n_writes == c->cap_writes) {
		size_t cap = c->cap_writes == 0 ? 16 : 2 * c->cap_writes;
		struct apply_write *w = realloc(c->writes, cap * sizeof(*w));
		if (w == NULL) {
			return KVD_ENOMEM;
		}
		c->writes = w;
		c->cap_writes = cap;
	}
	if (revision == 0) {
		leveldb_writebatch_delete(c->batch, dkey, klen);
	} else {
		if (e->scratch_cap < ENGINE_VALUE_HDR + value_len) {
			char *p = realloc(e->scratch, ENGINE_VALUE_HDR + value_len);
			if (p == NULL) {
				return KVD_ENOMEM;
			}
			e->scratch = p;
			e->scratch_cap = ENGINE_VALUE_HDR + value_len;
		}
		engine_put_u64((unsigned char *)e->scratch, revision);
		if (value_len > 0) {
			memcpy(e->scratch + ENGINE_VALUE_HDR, value, value_len);
		}
		leveldb_writebatch_put(c->batch, dkey, klen, e->scratch,
				       ENGINE_VALUE_HDR + value_len);
	}
	c->writes[c->n_writes++] =
	    (struct apply_write){c->gen, key, key_len, value, value_len, revision};
	return 0;
}

/* Records in the batch whether the condition of the conditional or TXN
 * entry at index held, so that its changes can be rebuilt later
 * (engine_entry_changes()). */
static void put_outcome(struct apply_ctx *c, uint64_t index, bool held)
{
	char key[ENGINE_OUTCOME_KEY_LEN];
	char v = held ? 1 : 0;

	outcome_key(key, index);
	leveldb_writebatch_put(c->batch, key, sizeof(key), &v, 1);
}

/* Records one change in res (may be NULL). */
static int result_change(struct engine_result *res, enum engine_change_type type,
			 const struct engine_command *cmd, uint64_t revision)
{
	struct engine_change *ch;

	if (res == NULL) {
		return 0;
	}
	ch = malloc(sizeof(*ch));
	if (ch == NULL) {
		return KVD_ENOMEM;
	}
	*ch = (struct engine_change){type, NULL, 0, NULL, 0, revision};
	if (type != ENGINE_CHANGE_CLEAR) {
		ch->key = cmd->key;
		ch->key_len = cmd->key_len;
	}
	if (type == ENGINE_CHANGE_PUT) {
		ch->value = cmd->value;
		ch->value_len = cmd->value_len;
	}
	res->changes = ch;
	res->n_changes = 1;
	res->revision = revision;
	return 0;
}

/* Copies n bytes into a fresh malloc'd buffer (NULL on failure). */
static char *dup_bytes(const char *p, size_t n)
{
	char *d = malloc(n > 0 ? n : 1);

	if (d != NULL && n > 0) {
		memcpy(d, p, n);
	}
	return d;
}

/* Runs the operations of one branch of a TXN, filling res (may be NULL). */
static int apply_txn_ops(struct apply_ctx *c, const struct engine_entry *entry,
			 const struct engine_txn_op *ops, size_t n_ops, struct engine_result *res)
{
	size_t n_changes = 0;
	int rv = 0;

	if (res != NULL) {
		res->ops = calloc(n_ops + 1, sizeof(*res->ops));
		res->changes = calloc(n_ops + 1, sizeof(*res->changes));
		if (res->ops == NULL || res->changes == NULL) {
			return KVD_ENOMEM;
		}
		res->n_ops = n_ops;
	}
	for (size_t i = 0; i < n_ops && rv == 0; i++) {
		const struct engine_txn_op *op = &ops[i];
		struct engine_change *ch = res != NULL ? &res->changes[n_changes] : NULL;
		if (op->op == ENGINE_TXN_GET) {
			struct engine_txn_result *r = res != NULL ? &res->ops[i] : NULL;
			uint64_t rev;
			if (r == NULL) {
				continue; /* nobody asked: a get changes nothing */
			}
			r->is_get = true;
			rv = apply_lookup(c, op->key, op->key_len, &rev, &r->value, &r->value_len);
			r->found = rv == 0 && rev != 0;
			r->revision = rev;
			continue;
		}
		rv = apply_write(c, op->key, op->key_len, op->value, op->value_len,
				 op->op == ENGINE_TXN_PUT ? entry->index : 0);
		if (rv != 0 || ch == NULL) {
			continue;
		}
		ch->type = op->op == ENGINE_TXN_PUT ? ENGINE_CHANGE_PUT : ENGINE_CHANGE_DELETE;
		ch->revision = entry->index;
		ch->key = dup_bytes(op->key, op->key_len);
		ch->key_len = op->key_len;
		if (op->op == ENGINE_TXN_PUT) {
			ch->value = dup_bytes(op->value, op->value_len);
			ch->value_len = op->value_len;
		}
		n_changes++;
		if (ch->key == NULL || (op->op == ENGINE_TXN_PUT && ch->value == NULL)) {
			rv = KVD_ENOMEM;
		}
	}
	if (res != NULL) {
		res->n_changes = n_changes;
	}
	return rv;
}

/* Applies a TXN: comparisons against the state after every earlier entry,
 * then the branch they select. A malformed transaction is skipped and
 * counted like any malformed command. */
static int apply_txn(struct apply_ctx *c, const struct engine_entry *entry,
		     const struct engine_command *cmd, struct engine_result *res)
{
	char msg[KVD_ERRMSG_SIZE] = "";
	struct engine_txn *txn;
	bool held = true;
	int rv;

	if (c->txns == NULL) {
		/* at most one per entry of the call; allocated on first use */
		c->txns = calloc(c->n_entries, sizeof(*c->txns));
		if (c->txns == NULL) {
			return KVD_ENOMEM;
		}
	}
	txn = &c->txns[c->n_txns];
	rv = engine_txn_parse(cmd->value, cmd->value_len, 0, txn, msg);
	if (rv == KVD_ENOMEM) {
		return rv;
	}
	if (rv != 0) {
		atomic_fetch_add(&c->e->malformed, 1);
		engine_log(c->e,
			   "level=warn msg=\"skipping malformed transaction\" index=%llu "
			   "error=\"%s\"",
			   (unsigned long long)entry->index, msg);
		if (res != NULL) {
			res->outcome = ENGINE_OUTCOME_MALFORMED;
		}
		return 0;
	}
	c->n_txns++;
	for (size_t i = 0; i < txn->n_cmp && held; i++) {
		uint64_t rev;
		rv = apply_lookup(c, txn->cmp[i].key, txn->cmp[i].key_len, &rev, NULL, NULL);
		if (rv != 0) {
			return rv;
		}
		held = rev == txn->cmp[i].revision;
	}
	put_outcome(c, entry->index, held);
	if (res != NULL) {
		res->outcome = ENGINE_OUTCOME_APPLIED;
		res->owns_data = true;
		res->succeeded = held;
		res->revision = entry->index;
	}
	return apply_txn_ops(c, entry, txn->ops[held ? 0 : 1], txn->n_ops[held ? 0 : 1], res);
}

/* Adds one COMMAND entry's mutation to the batch after checking its
 * condition against every earlier entry; fills res (may be NULL). */
static int apply_command(struct apply_ctx *c, const struct engine_entry *entry,
			 struct engine_result *res)
{
	struct engine_command cmd;
	uint64_t rev = 0;
	bool held = true;
	int rv = 0;

	if (engine_command_parse(entry->data, entry->len, &cmd) != 0) {
		atomic_fetch_add(&c->e->malformed, 1);
		engine_log(c->e,
			   "level=warn msg=\"skipping malformed command\" index=%llu bytes=%zu",
			   (unsigned long long)entry->index, entry->len);
		if (res != NULL) {
			res->outcome = ENGINE_OUTCOME_MALFORMED;
		}
		return 0;
	}
	if (cmd.type == ENGINE_COMMAND_TXN) {
		return apply_txn(c, entry, &cmd, res);
	}
	if (cmd.type == ENGINE_COMMAND_PUT_IF || cmd.type == ENGINE_COMMAND_PUT_ABSENT ||
	    cmd.type == ENGINE_COMMAND_DELETE_IF) {
		rv = apply_lookup(c, cmd.key, cmd.key_len, &rev, NULL, NULL);
		if (rv != 0) {
			return rv;
		}
		held = cmd.type == ENGINE_COMMAND_PUT_ABSENT ? rev == 0
							     : rev != 0 && rev == cmd.revision;
		put_outcome(c, entry->index, held);
	}
	if (res != NULL) {
		res->outcome = held ? ENGINE_OUTCOME_APPLIED : ENGINE_OUTCOME_FAILED;
	}
	if (!held) {
		return 0;
	}
	switch (cmd.type) {
	case ENGINE_COMMAND_PUT:
	case ENGINE_COMMAND_PUT_IF:
	case ENGINE_COMMAND_PUT_ABSENT:
		rv = apply_write(c, cmd.key, cmd.key_len, cmd.value, cmd.value_len, entry->index);
		if (rv == 0) {
			rv = result_change(res, ENGINE_CHANGE_PUT, &cmd, entry->index);
		}
		break;
	case ENGINE_COMMAND_DELETE:
	case ENGINE_COMMAND_DELETE_IF:
		rv = apply_write(c, cmd.key, cmd.key_len, NULL, 0, 0);
		if (rv == 0) {
			rv = result_change(res, ENGINE_CHANGE_DELETE, &cmd, entry->index);
		}
		break;
	case ENGINE_COMMAND_CLEAR:
		c->cleared[c->n_cleared++] = c->gen;
		c->gen += 1;
		rv = result_change(res, ENGINE_CHANGE_CLEAR, &cmd, entry->index);
		break;
	case ENGINE_COMMAND_TXN: break; /* handled above */
	}
	return rv;
}

void engine_results_clear(struct engine_result *results, size_t n)
{
	if (results == NULL) {
		return;
	}
	for (size_t i = 0; i < n; i++) {
		struct engine_result *r = &results[i];
		for (size_t j = 0; r->owns_data && r->changes != NULL && j < r->n_changes; j++) {
			free((char *)r->changes[j].key);
			free((char *)r->changes[j].value);
		}
		for (size_t j = 0; r->ops != NULL && j < r->n_ops; j++) {
			free(r->ops[j].value);
		}
		free(r->ops);
		free(r->changes);
		*r = (struct engine_result){0};
	}
}

/* Writes batch; when n_cleared > 0 also records the new pending list, under
 * gc_lock so it is ordered with the deleter's own updates of the key. */
static int batch_write(struct engine *e, leveldb_writebatch_t *batch, uint64_t gen,
		       const uint64_t *cleared, size_t n_cleared, char *errmsg)
{
	unsigned char genbuf[8];
	unsigned char *list = NULL;
	uint64_t *pending = NULL;
	size_t n_total;
	char *err = NULL;
	int rv = 0;

	if (n_cleared == 0) {
		leveldb_write(e->db, e->wopts, batch, &err);
		return err == NULL ? 0 : engine_leveldb_error(err, e->dir, errmsg);
	}
	engine_put_u64(genbuf, gen);
	leveldb_writebatch_put(batch, ENGINE_KEY_GEN, strlen(ENGINE_KEY_GEN), (const char *)genbuf,
			       8);
	pthread_mutex_lock(&e->gc_lock);
	n_total = e->n_pending + n_cleared;
	list = malloc(8 * n_total);
	pending = malloc(sizeof(*pending) * n_total);
	if (list == NULL || pending == NULL) {
		rv = KVD_ENOMEM;
		goto out_unlock;
	}
	if (e->n_pending > 0) {
		memcpy(pending, e->pending, sizeof(*pending) * e->n_pending);
	}
	memcpy(pending + e->n_pending, cleared, sizeof(*pending) * n_cleared);
	for (size_t i = 0; i < n_total; i++) {
		engine_put_u64(list + 8 * i, pending[i]);
	}
	leveldb_writebatch_put(batch, ENGINE_KEY_PENDING, strlen(ENGINE_KEY_PENDING),
			       (const char *)list, 8 * n_total);
	leveldb_write(e->db, e->wopts, batch, &err);
	if (err != NULL) {
		rv = engine_leveldb_error(err, e->dir, errmsg);
		goto out_unlock;
	}
	free(e->pending);
	e->pending = pending;
	e->n_pending = n_total;
	pending = NULL;
	pthread_cond_signal(&e->gc_cond);
out_unlock:
	pthread_mutex_unlock(&e->gc_lock);
	free(pending);
	free(list);
	return rv;
}

/*
 * After a failed write, LevelDB may keep a sticky background error (a
 * compaction that hit a full disk fails every later write until the database
 * is reopened). So the apply thread reopens it before the next attempt: stop
 * the deleter, close and reopen under the write side of db_lock, restart the
 * deleter. The reopen recovers every earlier write from LevelDB's own log
 * (the failed batch was never applied). It is skipped, with the old error,
 * while a view is open, since views hold snapshots of the old handle; the
 * caller retries later anyway.
 */
static int db_recover(struct engine *e, char *errmsg)
{
	struct statvfs fs;
	int rv;

	if (atomic_load(&e->views_open) > 0) {
		engine_errmsg(errmsg,
			      "%s: earlier write failed; reopen deferred while a view is open",
			      e->dir);
		return e->write_error;
	}
	/* Reopening needs room for a memtable flush; while the disk is still
	 * full, keep the old handle so reads go on working. */
	if (e->db != NULL && e->write_error == KVD_ENOSPC && statvfs(e->dir, &fs) == 0 &&
	    (uint64_t)fs.f_bavail * fs.f_frsize < 2 * (uint64_t)e->opts.write_buffer_bytes) {
		engine_errmsg(errmsg, "%s: No space left on device (%llu bytes free)", e->dir,
			      (unsigned long long)fs.f_bavail * fs.f_frsize);
		return KVD_ENOSPC;
	}
	engine_gc_stop(e);
	pthread_rwlock_wrlock(&e->db_lock);
	if (atomic_load(&e->views_open) > 0) {
		rv = e->write_error;
		engine_errmsg(errmsg, "%s: reopen deferred while a view is open", e->dir);
	} else {
		db_close(e);
		rv = db_open(e, errmsg);
	}
	pthread_rwlock_unlock(&e->db_lock);
	if (e->db != NULL) {
		int rv2 = engine_gc_start(e, rv == 0 ? errmsg : NULL);
		rv = rv != 0 ? rv : rv2;
	}
	if (rv == 0) {
		engine_log(e, "level=info msg=\"database reopened after a write failure\" dir=%s",
			   e->dir);
		e->write_error = 0;
	}
	return rv;
}

int engine_apply(struct engine *engine, const struct engine_entry *entries, size_t n, char *errmsg)
{
	return engine_apply_results(engine, entries, n, NULL, errmsg);
}

int engine_apply_results(struct engine *engine, const struct engine_entry *entries, size_t n,
			 struct engine_result *results, char *errmsg)
{
	struct engine *e = engine;
	struct apply_ctx c = {.e = engine, .n_entries = n};
	unsigned char applied[16];
	int rv;

	if (results != NULL) {
		for (size_t i = 0; i < n; i++) {
			results[i] = (struct engine_result){.index = entries[i].index};
		}
	}
	if (n == 0) {
		return 0;
	}
	rv = check_entries(e, entries, n, errmsg);
	if (rv != 0) {
		return rv;
	}
	if (e->write_error != 0) {
		rv = db_recover(e, errmsg);
		if (rv != 0) {
			return rv;
		}
	}
	c.cleared = malloc(sizeof(*c.cleared) * n);
	c.batch = leveldb_writebatch_create();
	if (c.cleared == NULL || c.batch == NULL) {
		rv = KVD_ENOMEM;
		goto out;
	}
	pthread_mutex_lock(&e->state_lock);
	c.gen = e->gen;
	pthread_mutex_unlock(&e->state_lock);
	c.db_gen = c.gen;
	for (size_t i = 0; i < n && rv == 0; i++) {
		switch (entries[i].type) {
		case ENGINE_ENTRY_COMMAND:
			rv = apply_command(&c, &entries[i], results == NULL ? NULL : &results[i]);
			break;
		case ENGINE_ENTRY_CONFIG:
			leveldb_writebatch_put(c.batch, ENGINE_KEY_CONFIG,
					       strlen(ENGINE_KEY_CONFIG), entries[i].data,
					       entries[i].len);
			break;
		case ENGINE_ENTRY_OTHER: break;
		}
	}
	if (rv != 0) {
		engine_errmsg(errmsg, "%s: apply: %s", e->dir, kvd_strerror(rv));
		goto out;
	}
	engine_put_u64(applied, entries[n - 1].index);
	engine_put_u64(applied + 8, entries[n - 1].term);
	leveldb_writebatch_put(c.batch, ENGINE_KEY_APPLIED, strlen(ENGINE_KEY_APPLIED),
			       (const char *)applied, sizeof(applied));
	rv = batch_write(e, c.batch, c.gen, c.cleared, c.n_cleared, errmsg);
	if (rv != 0) {
		if (rv != KVD_ENOMEM) {
			e->write_error = rv; /* reopen before the next attempt */
		}
		goto out;
	}
	pthread_mutex_lock(&e->state_lock);
	if (entries[n - 1].index <= e->applied_index) {
		/* Safety property, checked always: the applied index never goes
		 * back. check_entries() makes this unreachable unless two threads
		 * apply at once, which the contract forbids. */
		fprintf(stderr, "engine: applied index went backwards\n");
		abort();
	}
	e->applied_index = entries[n - 1].index;
	e->applied_term = entries[n - 1].term;
	e->gen = c.gen;
	pthread_mutex_unlock(&e->state_lock);
out:
	if (rv != 0) {
		engine_results_clear(results, n);
	}
	if (c.batch != NULL) {
		leveldb_writebatch_destroy(c.batch);
	}
	for (size_t i = 0; i < c.n_txns; i++) {
		engine_txn_free(&c.txns[i]);
	}
	free(c.txns);
	free(c.writes);
	free(c.cleared);
	return rv;
}

int engine_get(struct engine *engine, const char *key, size_t key_len, void **value, size_t *len)
{
	return engine_get_rev(engine, key, key_len, value, len, NULL);
}

int engine_get_rev(struct engine *engine, const char *key, size_t key_len, void **value,
		   size_t *len, uint64_t *revision)
{
	char dkey[ENGINE_DATA_HDR + ENGINE_KEY_MAX];
	char *err = NULL;
	char *v;
	void *copy;
	size_t n = 0;
	uint64_t gen;

	if (!engine_key_valid(key, key_len)) {
		return KVD_EINVAL;
	}
	pthread_mutex_lock(&engine->state_lock);
	gen = engine->gen;
	pthread_mutex_unlock(&engine->state_lock);
	pthread_rwlock_rdlock(&engine->db_lock);
	if (engine->db == NULL) {
		pthread_rwlock_unlock(&engine->db_lock);
		return KVD_EIO;
	}
	v = leveldb_get(engine->db, engine->ropts, dkey, data_key(dkey, gen, key, key_len), &n,
			&err);
	pthread_rwlock_unlock(&engine->db_lock);
	if (err != NULL) {
		return engine_leveldb_error(err, engine->dir, NULL);
	}
	if (v == NULL) {
		return KVD_ENOTFOUND;
	}
	if (n < ENGINE_VALUE_HDR) {
		leveldb_free(v);
		return KVD_ECORRUPT;
	}
	/* Copied so the caller frees with plain free(), as the header says. */
	n -= ENGINE_VALUE_HDR;
	copy = malloc(n > 0 ? n : 1);
	if (copy == NULL) {
		leveldb_free(v);
		return KVD_ENOMEM;
	}
	memcpy(copy, v + ENGINE_VALUE_HDR, n);
	if (revision != NULL) {
		*revision = engine_get_u64((const unsigned char *)v);
	}
	leveldb_free(v);
	*value = copy;
	*len = n;
	return 0;
}

/* Moves dbdir_new into e->dir, keeping the old directory aside until the new
 * one is in place. Called with the database closed. */
static int swap_dirs(struct engine *e, const char *dbdir_new, const char *old, char *errmsg)
{
	int rv = engine_remove_tree(old, errmsg);

	if (rv != 0) {
		return rv;
	}
	if (rename(e->dir, old) != 0) {
		engine_errmsg(errmsg, "rename %s to %s: %s", e->dir, old, strerror(errno));
		return KVD_EIO;
	}
	if (rename(dbdir_new, e->dir) != 0) {
		engine_errmsg(errmsg, "rename %s to %s: %s", dbdir_new, e->dir, strerror(errno));
		/* Put the old one back; if even that fails, engine_open()
		 * rolls back on the next start. */
		(void)rename(old, e->dir);
		return KVD_EIO;
	}
	rv = engine_fsync_dir(e->dir, false, errmsg);
	if (rv != 0) {
		return rv;
	}
	if (engine_remove_tree(old, NULL) != 0) {
		engine_log(e, "level=warn msg=\"could not remove old database\" dir=%s", old);
	}
	return 0;
}

int engine_swap(struct engine *engine, const char *dbdir_new, char *errmsg)
{
	struct engine *e = engine;
	char reopen_msg[KVD_ERRMSG_SIZE];
	char old[4096];
	int rv, rv2;

	if ((size_t)snprintf(old, sizeof(old), "%s.old", e->dir) >= sizeof(old)) {
		return KVD_EINVAL;
	}
	if (atomic_load(&e->views_open) > 0) {
		engine_errmsg(errmsg, "%s: cannot swap while a view is open", e->dir);
		return KVD_EBUSY;
	}
	engine_gc_stop(e);
	pthread_rwlock_wrlock(&e->db_lock);
	db_close(e);
	rv = swap_dirs(e, dbdir_new, old, errmsg);
	/* Reopen whatever is in place now: the new database, or the old one. */
	rv2 = db_open(e, reopen_msg);
	pthread_rwlock_unlock(&e->db_lock);
	if (rv2 == 0) {
		rv2 = engine_gc_start(e, reopen_msg);
	}
	if (rv2 != 0 && rv == 0) {
		rv = rv2;
		engine_errmsg(errmsg, "%s", reopen_msg);
	}
	if (rv == 0) {
		e->write_error = 0;
	}
	return rv;
}

/* Reads the outcome recorded for the conditional or TXN entry at index:
 * *held. Returns 0, KVD_ENOTFOUND (none recorded: pruned, or applied by an
 * engine that did not record it), KVD_ECORRUPT, KVD_EIO. */
static int outcome_read(struct engine *e, uint64_t index, bool *held)
{
	char key[ENGINE_OUTCOME_KEY_LEN];
	char *err = NULL;
	char *v;
	size_t n = 0;
	int rv = 0;

	outcome_key(key, index);
	pthread_rwlock_rdlock(&e->db_lock);
	v = e->db == NULL ? NULL : leveldb_get(e->db, e->ropts, key, sizeof(key), &n, &err);
	if (e->db == NULL) {
		rv = KVD_EIO; /* a failed reopen: reads fail until the next one */
	}
	pthread_rwlock_unlock(&e->db_lock);
	if (rv != 0) {
		/* nothing read */
	} else if (err != NULL) {
		rv = engine_leveldb_error(err, e->dir, NULL);
	} else if (v == NULL) {
		rv = KVD_ENOTFOUND;
	} else if (n != 1 || (v[0] != 0 && v[0] != 1)) {
		rv = KVD_ECORRUPT;
	} else {
		*held = v[0] == 1;
	}
	if (v != NULL) {
		leveldb_free(v);
	}
	return rv;
}

/* The changes of the branch a TXN ran, as apply_txn_ops() reports them
 * (copies owned by out). */
static int rebuild_txn(struct engine *e, const struct engine_entry *entry,
		       const struct engine_command *cmd, struct engine_result *out)
{
	struct engine_txn txn;
	const struct engine_txn_op *ops = NULL;
	size_t n_ops = 0;
	bool held = false;
	int rv = engine_txn_parse(cmd->value, cmd->value_len, 0, &txn, NULL);

	if (rv == KVD_ENOMEM) {
		return rv;
	}
	if (rv != 0) {
		out->outcome = ENGINE_OUTCOME_MALFORMED;
		return 0;
	}
	rv = outcome_read(e, entry->index, &held);
	if (rv == 0) {
		out->outcome = ENGINE_OUTCOME_APPLIED;
		out->owns_data = true;
		out->succeeded = held;
		out->revision = entry->index;
		ops = txn.ops[held ? 0 : 1];
		n_ops = txn.n_ops[held ? 0 : 1];
		out->changes = calloc(n_ops + 1, sizeof(*out->changes));
		if (out->changes == NULL) {
			rv = KVD_ENOMEM;
		}
	}
	for (size_t i = 0; rv == 0 && i < n_ops; i++) {
		struct engine_change *ch = &out->changes[out->n_changes];
		if (ops[i].op == ENGINE_TXN_GET) {
			continue;
		}
		ch->type = ops[i].op == ENGINE_TXN_PUT ? ENGINE_CHANGE_PUT : ENGINE_CHANGE_DELETE;
		ch->revision = entry->index;
		ch->key = dup_bytes(ops[i].key, ops[i].key_len);
		ch->key_len = ops[i].key_len;
		if (ops[i].op == ENGINE_TXN_PUT) {
			ch->value = dup_bytes(ops[i].value, ops[i].value_len);
			ch->value_len = ops[i].value_len;
		}
		out->n_changes++;
		if (ch->key == NULL || (ops[i].op == ENGINE_TXN_PUT && ch->value == NULL)) {
			rv = KVD_ENOMEM;
		}
	}
	engine_txn_free(&txn);
	return rv;
}

int engine_entry_changes(struct engine *engine, const struct engine_entry *entry,
			 struct engine_result *out)
{
	struct engine_command cmd;
	bool held = true;
	int rv = 0;

	*out = (struct engine_result){.index = entry->index};
	if (entry->type != ENGINE_ENTRY_COMMAND) {
		return 0;
	}
	if (engine_command_parse(entry->data, entry->len, &cmd) != 0) {
		out->outcome = ENGINE_OUTCOME_MALFORMED;
		return 0;
	}
	if (cmd.type == ENGINE_COMMAND_TXN) {
		rv = rebuild_txn(engine, entry, &cmd, out);
		goto out;
	}
	if (cmd.type == ENGINE_COMMAND_PUT_IF || cmd.type == ENGINE_COMMAND_PUT_ABSENT ||
	    cmd.type == ENGINE_COMMAND_DELETE_IF) {
		rv = outcome_read(engine, entry->index, &held);
		if (rv != 0) {
			goto out;
		}
	}
	out->outcome = held ? ENGINE_OUTCOME_APPLIED : ENGINE_OUTCOME_FAILED;
	if (!held) {
		goto out;
	}
	switch (cmd.type) {
	case ENGINE_COMMAND_PUT:
	case ENGINE_COMMAND_PUT_IF:
	case ENGINE_COMMAND_PUT_ABSENT:
		rv = result_change(out, ENGINE_CHANGE_PUT, &cmd, entry->index);
		break;
	case ENGINE_COMMAND_DELETE:
	case ENGINE_COMMAND_DELETE_IF:
		rv = result_change(out, ENGINE_CHANGE_DELETE, &cmd, entry->index);
		break;
	case ENGINE_COMMAND_CLEAR:
		rv = result_change(out, ENGINE_CHANGE_CLEAR, &cmd, entry->index);
		break;
	case ENGINE_COMMAND_TXN: break; /* handled above */
	}
out:
	if (rv != 0) {
		engine_results_clear(out, 1);
	}
	return rv;
}

int engine_outcomes_prune(struct engine *engine, uint64_t below, char *errmsg)
{
	struct engine *e = engine;
	char lo[ENGINE_OUTCOME_KEY_LEN];
	leveldb_writebatch_t *batch = leveldb_writebatch_create();
	leveldb_iterator_t *it;
	size_t n = 0;
	char *err = NULL;
	int rv = 0;

	if (batch == NULL) {
		return KVD_ENOMEM;
	}
	outcome_key(lo, 0);
	pthread_rwlock_rdlock(&e->db_lock);
	if (e->db == NULL) {
		rv = KVD_EIO;
		goto out;
	}
	it = leveldb_create_iterator(e->db, e->ropts);
	for (leveldb_iter_seek(it, lo, sizeof(lo)); leveldb_iter_valid(it); leveldb_iter_next(it)) {
		size_t klen;
		const char *k = leveldb_iter_key(it, &klen);
		if (klen != sizeof(lo) || memcmp(k, ENGINE_KEY_OUTCOME, 8) != 0 ||
		    engine_get_u64((const unsigned char *)k + 8) >= below) {
			break;
		}
		leveldb_writebatch_delete(batch, k, klen);
		n++;
	}
	leveldb_iter_get_error(it, &err);
	leveldb_iter_destroy(it);
	if (err != NULL) {
		rv = engine_leveldb_error(err, e->dir, errmsg);
		goto out;
	}
	if (n > 0) {
		leveldb_write(e->db, e->wopts, batch, &err);
		if (err != NULL) {
			rv = engine_leveldb_error(err, e->dir, errmsg);
		}
	}
out:
	pthread_rwlock_unlock(&e->db_lock);
	leveldb_writebatch_destroy(batch);
	return rv;
}
