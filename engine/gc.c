/*
 * gc.c: the background deleter of cleared generations.
 *
 * CLEAR (engine.c) only bumps the generation and appends the old one to the
 * "mpending" meta key. This thread takes the oldest pending generation,
 * iterates its key range ['d'+gen, 'd'+gen+1) and deletes the keys in batches
 * of opts.deleter_batch_keys, then compacts the range so the disk space comes
 * back, and only then removes the generation from "mpending". A crash or a
 * close at any point leaves the generation in "mpending", so the next open
 * simply starts over on it: the work is idempotent. The deletes need no sync
 * for the same reason.
 *
 * Invariants: a generation leaves "mpending" only after all of its keys were
 * deleted; the thread never touches the current generation (every pending one
 * is smaller). Writes of "mpending" happen under gc_lock, from here and from
 * engine_apply(), so the key's value always matches e->pending.
 */
#include "engine/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Deletes every key of generation gen. Returns 0, KVD_ESHUTDOWN if asked to
 * stop part-way, or a LevelDB error code. */
static int delete_generation(struct engine *e, uint64_t gen, char *errmsg)
{
	unsigned char lo[ENGINE_DATA_HDR], hi[ENGINE_DATA_HDR];
	leveldb_readoptions_t *ropts = leveldb_readoptions_create();
	leveldb_writebatch_t *batch = leveldb_writebatch_create();
	leveldb_iterator_t *it;
	size_t in_batch = 0;
	uint64_t deleted = 0;
	char *err = NULL;
	int rv = 0;

	engine_data_prefix(lo, gen);
	engine_data_prefix(hi, gen + 1);
	leveldb_readoptions_set_fill_cache(ropts, 0);
	it = leveldb_create_iterator(e->db, ropts);
	for (leveldb_iter_seek(it, (const char *)lo, sizeof(lo)); leveldb_iter_valid(it);
	     leveldb_iter_next(it)) {
		size_t klen;
		const char *key = leveldb_iter_key(it, &klen);

		if (klen < ENGINE_DATA_HDR || memcmp(key, lo, ENGINE_DATA_HDR) != 0) {
			break;
		}
		leveldb_writebatch_delete(batch, key, klen);
		if (++in_batch < e->opts.deleter_batch_keys) {
			continue;
		}
		leveldb_write(e->db, e->wopts, batch, &err);
		if (err != NULL) {
			rv = engine_leveldb_error(err, "background delete", errmsg);
			goto out;
		}
		deleted += in_batch;
		in_batch = 0;
		leveldb_writebatch_clear(batch);
		if (atomic_load(&e->gc_stop)) {
			rv = KVD_ESHUTDOWN;
			goto out;
		}
	}
	leveldb_iter_get_error(it, &err);
	if (err != NULL) {
		rv = engine_leveldb_error(err, "background delete scan", errmsg);
		goto out;
	}
	if (in_batch > 0) {
		leveldb_write(e->db, e->wopts, batch, &err);
		if (err != NULL) {
			rv = engine_leveldb_error(err, "background delete", errmsg);
			goto out;
		}
		deleted += in_batch;
	}
	leveldb_compact_range(e->db, (const char *)lo, sizeof(lo), (const char *)hi, sizeof(hi));
	engine_log(e, "level=info msg=\"generation deleted\" generation=%llu keys=%llu",
		   (unsigned long long)gen, (unsigned long long)deleted);
out:
	leveldb_iter_destroy(it);
	leveldb_writebatch_destroy(batch);
	leveldb_readoptions_destroy(ropts);
	return rv;
}

/* Removes pending[0] (== gen) and persists the list. Called under gc_lock. */
static int pending_pop(struct engine *e, uint64_t gen, char *errmsg)
{
	unsigned char *list = NULL;
	size_t n = e->n_pending - 1;
	char *err = NULL;

	if (e->n_pending == 0 || e->pending[0] != gen) {
		return 0; /* not ours to remove: cannot happen, be safe */
	}
	list = malloc(8 * n + 1);
	if (list == NULL) {
		return KVD_ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		engine_put_u64(list + 8 * i, e->pending[i + 1]);
	}
	leveldb_put(e->db, e->wopts, ENGINE_KEY_PENDING, strlen(ENGINE_KEY_PENDING),
		    (const char *)list, 8 * n, &err);
	free(list);
	if (err != NULL) {
		return engine_leveldb_error(err, "update mpending", errmsg);
	}
	memmove(e->pending, e->pending + 1, sizeof(*e->pending) * n);
	e->n_pending = n;
	return 0;
}

static void *gc_main(void *arg)
{
	struct engine *e = arg;
	char errmsg[KVD_ERRMSG_SIZE];

	pthread_mutex_lock(&e->gc_lock);
	while (!atomic_load(&e->gc_stop)) {
		uint64_t gen;
		int rv;

		if (e->n_pending == 0) {
			pthread_cond_broadcast(&e->gc_idle_cond);
			pthread_cond_wait(&e->gc_cond, &e->gc_lock);
			continue;
		}
		gen = e->pending[0];
		pthread_mutex_unlock(&e->gc_lock);
		rv = delete_generation(e, gen, errmsg);
		pthread_mutex_lock(&e->gc_lock);
		if (rv == 0) {
			rv = pending_pop(e, gen, errmsg);
		}
		if (rv != 0 && rv != KVD_ESHUTDOWN) {
			struct timespec until;

			/* Disk full or I/O error: the generation stays pending;
			 * retry after a pause rather than spin. */
			engine_log(e, "level=error msg=\"background delete failed\" error=\"%s\"",
				   errmsg);
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += 1;
			if (!atomic_load(&e->gc_stop)) {
				pthread_cond_timedwait(&e->gc_cond, &e->gc_lock, &until);
			}
		}
	}
	pthread_mutex_unlock(&e->gc_lock);
	return NULL;
}

int engine_gc_start(struct engine *e, char *errmsg)
{
	int rv;

	atomic_store(&e->gc_stop, false);
	if (e->opts.deleter_disabled) {
		return 0;
	}
	rv = pthread_create(&e->gc_thread, NULL, gc_main, e);
	if (rv != 0) {
		engine_errmsg(errmsg, "start deleter thread: %s", strerror(rv));
		return KVD_ENOMEM;
	}
	e->gc_running = true;
	return 0;
}

void engine_gc_stop(struct engine *e)
{
	if (!e->gc_running) {
		return;
	}
	pthread_mutex_lock(&e->gc_lock);
	atomic_store(&e->gc_stop, true);
	pthread_cond_broadcast(&e->gc_cond);
	pthread_mutex_unlock(&e->gc_lock);
	pthread_join(e->gc_thread, NULL);
	e->gc_running = false;
	pthread_mutex_lock(&e->gc_lock);
	pthread_cond_broadcast(&e->gc_idle_cond); /* waiters give up */
	pthread_mutex_unlock(&e->gc_lock);
}

size_t engine_deleter_pending(struct engine *engine)
{
	size_t n;

	pthread_mutex_lock(&engine->gc_lock);
	n = engine->n_pending;
	pthread_mutex_unlock(&engine->gc_lock);
	return n;
}

int engine_deleter_wait(struct engine *engine, unsigned timeout_ms)
{
	struct timespec until;
	int rv = 0;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec += 1;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&engine->gc_lock);
	while (engine->n_pending > 0 && rv == 0) {
		if (!engine->gc_running) {
			rv = KVD_ETIMEDOUT; /* nobody will make progress */
			break;
		}
		if (pthread_cond_timedwait(&engine->gc_idle_cond, &engine->gc_lock, &until) ==
		    ETIMEDOUT) {
			rv = engine->n_pending > 0 ? KVD_ETIMEDOUT : 0;
		}
	}
	pthread_mutex_unlock(&engine->gc_lock);
	return rv;
}
