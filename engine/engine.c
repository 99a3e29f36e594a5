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

/* Loads (or, for an empty database, creates) the meta keys and publishes them
 * in the in-memory state under the locks that guard it. */
static int db_load_meta(struct engine *e, char *errmsg)
{
	uint64_t index = 0, term = 0, gen = 0;
	uint64_t *pending = NULL;
	size_t n_pending = 0;
	char *v = NULL;
	size_t n = 0;
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
		bool ok = n == 4 && memcmp(v, "\0\0\0\1", 4) == 0;
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

/* Adds one COMMAND entry's mutation to batch; CLEAR bumps *gen and records the
 * old generation in cleared[]. */
static void batch_add_command(struct engine *e, leveldb_writebatch_t *batch,
			      const struct engine_entry *entry, uint64_t *gen, uint64_t *cleared,
			      size_t *n_cleared)
{
	char key[ENGINE_DATA_HDR + ENGINE_KEY_MAX];
	struct engine_command cmd;
	size_t klen;

	if (engine_command_parse(entry->data, entry->len, &cmd) != 0) {
		atomic_fetch_add(&e->malformed, 1);
		engine_log(e, "level=warn msg=\"skipping malformed command\" index=%llu bytes=%zu",
			   (unsigned long long)entry->index, entry->len);
		return;
	}
	switch (cmd.type) {
	case ENGINE_COMMAND_PUT:
		klen = data_key(key, *gen, cmd.key, cmd.key_len);
		leveldb_writebatch_put(batch, key, klen, cmd.value, cmd.value_len);
		break;
	case ENGINE_COMMAND_DELETE:
		klen = data_key(key, *gen, cmd.key, cmd.key_len);
		leveldb_writebatch_delete(batch, key, klen);
		break;
	case ENGINE_COMMAND_CLEAR:
		cleared[(*n_cleared)++] = *gen;
		*gen += 1;
		break;
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
	struct engine *e = engine;
	leveldb_writebatch_t *batch;
	unsigned char applied[16];
	uint64_t *cleared = NULL;
	size_t n_cleared = 0;
	uint64_t gen;
	int rv;

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
	cleared = malloc(sizeof(*cleared) * n);
	batch = leveldb_writebatch_create();
	if (cleared == NULL || batch == NULL) {
		rv = KVD_ENOMEM;
		goto out;
	}
	pthread_mutex_lock(&e->state_lock);
	gen = e->gen;
	pthread_mutex_unlock(&e->state_lock);
	for (size_t i = 0; i < n; i++) {
		switch (entries[i].type) {
		case ENGINE_ENTRY_COMMAND:
			batch_add_command(e, batch, &entries[i], &gen, cleared, &n_cleared);
			break;
		case ENGINE_ENTRY_CONFIG:
			leveldb_writebatch_put(batch, ENGINE_KEY_CONFIG, strlen(ENGINE_KEY_CONFIG),
					       entries[i].data, entries[i].len);
			break;
		case ENGINE_ENTRY_OTHER: break;
		}
	}
	engine_put_u64(applied, entries[n - 1].index);
	engine_put_u64(applied + 8, entries[n - 1].term);
	leveldb_writebatch_put(batch, ENGINE_KEY_APPLIED, strlen(ENGINE_KEY_APPLIED),
			       (const char *)applied, sizeof(applied));
	rv = batch_write(e, batch, gen, cleared, n_cleared, errmsg);
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
	e->gen = gen;
	pthread_mutex_unlock(&e->state_lock);
out:
	if (batch != NULL) {
		leveldb_writebatch_destroy(batch);
	}
	free(cleared);
	return rv;
}

int engine_get(struct engine *engine, const char *key, size_t key_len, void **value, size_t *len)
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
	/* Copied so the caller frees with plain free(), as the header says. */
	copy = malloc(n > 0 ? n : 1);
	if (copy == NULL) {
		leveldb_free(v);
		return KVD_ENOMEM;
	}
	memcpy(copy, v, n);
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
