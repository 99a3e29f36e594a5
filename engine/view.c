/*
 * view.c: consistent read views, iterators over one generation, and the
 * builder that creates a fresh database directory from records.
 *
 * A view is a LevelDB snapshot plus the meta keys read through that same
 * snapshot, so the applied index, term, generation and configuration it
 * reports are exactly those of the data it shows, whatever engine_apply()
 * does afterwards. Views are how snapshots (snapshot.c) and the offline dump
 * see the state machine.
 *
 * engine_list() is a bounded range read over one such view: it seeks to the
 * greater of the prefix and the "after" bound, so a page costs its own keys.
 *
 * The builder writes generation 1 and the meta keys of a fresh database. It
 * refuses an existing directory, so a restore can never write into a live
 * database; finish() syncs before closing, and abort() removes the directory.
 */
#include "engine/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct engine_view {
	struct engine *engine;
	const leveldb_snapshot_t *snap;
	leveldb_readoptions_t *ropts; /* reads at snap, no cache fill */
	uint64_t index;
	uint64_t term;
	uint64_t gen;
	char *config; /* leveldb-allocated; NULL when none */
	size_t config_len;
};

struct engine_iter {
	struct engine_view *owned_view; /* released with the iterator, or NULL */
	leveldb_iterator_t *it;
	unsigned char prefix[ENGINE_DATA_HDR];
	bool started;
	bool positioned; /* seeked by engine_list(): next() reads without moving */
};

#define BUILDER_BATCH_BYTES ((size_t)1 << 20)

struct engine_builder {
	char *dir;
	leveldb_t *db;
	leveldb_options_t *options;
	leveldb_writeoptions_t *wopts;
	leveldb_writebatch_t *batch;
	size_t batch_bytes;
};

/* Reads the meta keys through the view's snapshot. */
static int view_load_meta(struct engine_view *v)
{
	char *val = NULL;
	size_t n = 0;
	int rv;

	rv = engine_meta_read(v->engine->db, v->ropts, ENGINE_KEY_APPLIED, &val, &n, NULL);
	if (rv != 0) {
		return rv;
	}
	if (val != NULL) {
		if (n != 16) {
			leveldb_free(val);
			return KVD_ECORRUPT;
		}
		v->index = engine_get_u64((const unsigned char *)val);
		v->term = engine_get_u64((const unsigned char *)val + 8);
		leveldb_free(val);
	}
	rv = engine_meta_read(v->engine->db, v->ropts, ENGINE_KEY_GEN, &val, &n, NULL);
	if (rv != 0) {
		return rv;
	}
	if (val == NULL || n != 8) {
		leveldb_free(val);
		return KVD_ECORRUPT;
	}
	v->gen = engine_get_u64((const unsigned char *)val);
	leveldb_free(val);
	return engine_meta_read(v->engine->db, v->ropts, ENGINE_KEY_CONFIG, &v->config,
				&v->config_len, NULL);
}

int engine_snapshot_begin(struct engine *engine, struct engine_view **view)
{
	struct engine_view *v = calloc(1, sizeof(*v));
	int rv;

	if (v == NULL) {
		return KVD_ENOMEM;
	}
	v->engine = engine;
	v->ropts = leveldb_readoptions_create();
	if (v->ropts == NULL) {
		free(v);
		return KVD_ENOMEM;
	}
	pthread_rwlock_rdlock(&engine->db_lock);
	if (engine->db == NULL) {
		pthread_rwlock_unlock(&engine->db_lock);
		leveldb_readoptions_destroy(v->ropts);
		free(v);
		return KVD_EIO;
	}
	/* Counted before the lock is dropped, so a recovery (engine.c) that
	 * takes the write side afterwards sees it and leaves the handle. */
	atomic_fetch_add(&engine->views_open, 1);
	v->snap = leveldb_create_snapshot(engine->db);
	pthread_rwlock_unlock(&engine->db_lock);
	leveldb_readoptions_set_snapshot(v->ropts, v->snap);
	leveldb_readoptions_set_fill_cache(v->ropts, 0);
	rv = view_load_meta(v);
	if (rv != 0) {
		engine_view_release(v);
		return rv;
	}
	*view = v;
	return 0;
}

void engine_view_meta(const struct engine_view *view, uint64_t *index, uint64_t *term,
		      const void **config, size_t *config_len)
{
	*index = view->index;
	*term = view->term;
	*config = view->config;
	*config_len = view->config_len;
}

void engine_view_release(struct engine_view *view)
{
	if (view == NULL) {
		return;
	}
	leveldb_free(view->config);
	leveldb_readoptions_destroy(view->ropts);
	leveldb_release_snapshot(view->engine->db, view->snap);
	atomic_fetch_sub(&view->engine->views_open, 1);
	free(view);
}

int engine_view_iter_open(const struct engine_view *view, struct engine_iter **iter)
{
	struct engine_iter *it = calloc(1, sizeof(*it));

	if (it == NULL) {
		return KVD_ENOMEM;
	}
	it->it = leveldb_create_iterator(view->engine->db, view->ropts);
	if (it->it == NULL) {
		free(it);
		return KVD_ENOMEM;
	}
	engine_data_prefix(it->prefix, view->gen);
	*iter = it;
	return 0;
}

int engine_iter_open(struct engine *engine, struct engine_iter **iter)
{
	struct engine_view *view;
	struct engine_iter *it;
	int rv;

	rv = engine_snapshot_begin(engine, &view);
	if (rv != 0) {
		return rv;
	}
	rv = engine_view_iter_open(view, &it);
	if (rv != 0) {
		engine_view_release(view);
		return rv;
	}
	it->owned_view = view;
	*iter = it;
	return 0;
}

int engine_iter_next(struct engine_iter *iter, struct engine_record *rec, bool *end)
{
	const char *key;
	size_t klen;
	char *err = NULL;

	if (!iter->started) {
		leveldb_iter_seek(iter->it, (const char *)iter->prefix, sizeof(iter->prefix));
		iter->started = true;
	} else if (iter->positioned) {
		iter->positioned = false;
	} else if (leveldb_iter_valid(iter->it)) {
		leveldb_iter_next(iter->it);
	}
	if (!leveldb_iter_valid(iter->it)) {
		leveldb_iter_get_error(iter->it, &err);
		if (err != NULL) {
			return engine_leveldb_error(err, "iterate", NULL);
		}
		*end = true;
		return 0;
	}
	key = leveldb_iter_key(iter->it, &klen);
	if (klen <= ENGINE_DATA_HDR || memcmp(key, iter->prefix, ENGINE_DATA_HDR) != 0) {
		*end = true;
		return 0;
	}
	rec->key = key + ENGINE_DATA_HDR;
	rec->key_len = klen - ENGINE_DATA_HDR;
	rec->value = leveldb_iter_value(iter->it, &rec->value_len);
	if (rec->value_len < ENGINE_VALUE_HDR) {
		return KVD_ECORRUPT;
	}
	rec->revision = engine_get_u64((const unsigned char *)rec->value);
	rec->value += ENGINE_VALUE_HDR;
	rec->value_len -= ENGINE_VALUE_HDR;
	*end = false;
	return 0;
}

void engine_iter_close(struct engine_iter *iter)
{
	if (iter == NULL) {
		return;
	}
	leveldb_iter_destroy(iter->it);
	engine_view_release(iter->owned_view);
	free(iter);
}

static void builder_free(struct engine_builder *b)
{
	if (b->db != NULL) {
		leveldb_close(b->db);
	}
	if (b->batch != NULL) {
		leveldb_writebatch_destroy(b->batch);
	}
	if (b->wopts != NULL) {
		leveldb_writeoptions_destroy(b->wopts);
	}
	if (b->options != NULL) {
		leveldb_options_destroy(b->options);
	}
	free(b->dir);
	free(b);
}

int engine_builder_create(const char *dir, struct engine_builder **builder, char *errmsg)
{
	struct engine_builder *b;
	struct stat st;
	char *err = NULL;
	int rv;

	if (stat(dir, &st) == 0 || errno != ENOENT) {
		engine_errmsg(errmsg, "%s: already exists", dir);
		return KVD_EEXIST;
	}
	b = calloc(1, sizeof(*b));
	if (b == NULL) {
		return KVD_ENOMEM;
	}
	b->dir = strdup(dir);
	b->options = leveldb_options_create();
	b->wopts = leveldb_writeoptions_create();
	b->batch = leveldb_writebatch_create();
	if (b->dir == NULL || b->options == NULL || b->wopts == NULL || b->batch == NULL) {
		rv = KVD_ENOMEM;
		goto err_alloc;
	}
	leveldb_options_set_create_if_missing(b->options, 1);
	leveldb_options_set_error_if_exists(b->options, 1);
	/* Same memory bounds as a live engine (engine.c options_create()). */
	leveldb_options_set_write_buffer_size(b->options, (size_t)8 << 20);
	leveldb_options_set_max_open_files(b->options, 74);
	leveldb_options_set_max_file_size(b->options, (size_t)2 << 20);
	b->db = leveldb_open(b->options, dir, &err);
	if (err != NULL) {
		b->db = NULL;
		rv = engine_leveldb_error(err, dir, errmsg);
		goto err_dir;
	}
	*builder = b;
	return 0;

err_dir:
	engine_remove_tree(dir, NULL);
err_alloc:
	builder_free(b);
	return rv;
}

static int builder_flush(struct engine_builder *b, char *errmsg)
{
	char *err = NULL;

	leveldb_write(b->db, b->wopts, b->batch, &err);
	if (err != NULL) {
		return engine_leveldb_error(err, b->dir, errmsg);
	}
	leveldb_writebatch_clear(b->batch);
	b->batch_bytes = 0;
	return 0;
}

int engine_builder_put(struct engine_builder *builder, const char *key, size_t key_len,
		       const void *value, size_t value_len, uint64_t revision, char *errmsg)
{
	char dkey[ENGINE_DATA_HDR + ENGINE_KEY_MAX];
	char *v;

	if (!engine_key_valid(key, key_len)) {
		engine_errmsg(errmsg, "invalid key of %zu bytes", key_len);
		return KVD_EINVAL;
	}
	if (revision == 0) {
		engine_errmsg(errmsg, "revision 0 for a present key");
		return KVD_EINVAL;
	}
	v = malloc(ENGINE_VALUE_HDR + value_len);
	if (v == NULL) {
		return KVD_ENOMEM;
	}
	engine_put_u64((unsigned char *)v, revision);
	if (value_len > 0) {
		memcpy(v + ENGINE_VALUE_HDR, value, value_len);
	}
	engine_data_prefix((unsigned char *)dkey, 1);
	memcpy(dkey + ENGINE_DATA_HDR, key, key_len);
	leveldb_writebatch_put(builder->batch, dkey, ENGINE_DATA_HDR + key_len, v,
			       ENGINE_VALUE_HDR + value_len);
	free(v);
	builder->batch_bytes += ENGINE_DATA_HDR + key_len + value_len;
	if (builder->batch_bytes >= BUILDER_BATCH_BYTES) {
		return builder_flush(builder, errmsg);
	}
	return 0;
}

int engine_builder_finish(struct engine_builder *builder, uint64_t index, uint64_t term,
			  const void *config, size_t config_len, char *errmsg)
{
	struct engine_builder *b = builder;
	unsigned char version[4] = {0, 0, 0, ENGINE_FORMAT_VERSION};
	unsigned char applied[16], gen[8];
	int rv;

	engine_put_u64(applied, index);
	engine_put_u64(applied + 8, term);
	engine_put_u64(gen, 1);
	leveldb_writebatch_put(b->batch, ENGINE_KEY_VERSION, strlen(ENGINE_KEY_VERSION),
			       (const char *)version, sizeof(version));
	leveldb_writebatch_put(b->batch, ENGINE_KEY_APPLIED, strlen(ENGINE_KEY_APPLIED),
			       (const char *)applied, sizeof(applied));
	leveldb_writebatch_put(b->batch, ENGINE_KEY_GEN, strlen(ENGINE_KEY_GEN), (const char *)gen,
			       sizeof(gen));
	if (config != NULL) {
		leveldb_writebatch_put(b->batch, ENGINE_KEY_CONFIG, strlen(ENGINE_KEY_CONFIG),
				       config, config_len);
	}
	/* The last write syncs LevelDB's log; tables flushed earlier were
	 * synced by LevelDB when written. */
	leveldb_writeoptions_set_sync(b->wopts, 1);
	rv = builder_flush(b, errmsg);
	if (rv != 0) {
		engine_builder_abort(b);
		return rv;
	}
	leveldb_close(b->db);
	b->db = NULL;
	rv = engine_fsync_dir(b->dir, true, errmsg);
	if (rv == 0) {
		rv = engine_fsync_dir(b->dir, false, errmsg);
	}
	if (rv != 0) {
		engine_builder_abort(b);
		return rv;
	}
	builder_free(b);
	return 0;
}

void engine_builder_abort(struct engine_builder *builder)
{
	if (builder == NULL) {
		return;
	}
	if (builder->db != NULL) {
		leveldb_close(builder->db);
		builder->db = NULL;
	}
	engine_remove_tree(builder->dir, NULL);
	builder_free(builder);
}

/* Bytewise comparison, shorter first on a common prefix. */
static int key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0 || alen == blen) {
		return c;
	}
	return alen < blen ? -1 : 1;
}

/* True when s[0..len) is empty or made of key characters, at most
 * ENGINE_KEY_MAX bytes (a prefix or an "after" bound). */
static bool bound_valid(const char *s, size_t len)
{
	return len == 0 || engine_key_valid(s, len);
}

void engine_list_result_clear(struct engine_list_result *out)
{
	if (out == NULL) {
		return;
	}
	for (size_t i = 0; i < out->n_items; i++) {
		free(out->items[i].key);
		free(out->items[i].value);
	}
	free(out->items);
	*out = (struct engine_list_result){0};
}

/* Appends the iterator's record to out (copies). */
static int list_add(struct engine_list_result *out, size_t limit, const struct engine_record *rec,
		    bool keys_only)
{
	struct engine_list_item *item;

	if (out->items == NULL) {
		out->items = calloc(limit < 64 ? limit : 64, sizeof(*out->items));
		if (out->items == NULL) {
			return KVD_ENOMEM;
		}
	} else if (out->n_items >= 64 && (out->n_items & (out->n_items - 1)) == 0) {
		/* grow at each power of two from 64 on */
		struct engine_list_item *p =
		    realloc(out->items, 2 * out->n_items * sizeof(*out->items));
		if (p == NULL) {
			return KVD_ENOMEM;
		}
		out->items = p;
	}
	item = &out->items[out->n_items];
	*item = (struct engine_list_item){0};
	item->key = malloc(rec->key_len);
	if (item->key == NULL) {
		return KVD_ENOMEM;
	}
	memcpy(item->key, rec->key, rec->key_len);
	item->key_len = rec->key_len;
	item->revision = rec->revision;
	out->n_items++;
	if (!keys_only) {
		item->value = malloc(rec->value_len > 0 ? rec->value_len : 1);
		if (item->value == NULL) {
			return KVD_ENOMEM;
		}
		if (rec->value_len > 0) {
			memcpy(item->value, rec->value, rec->value_len);
		}
		item->value_len = rec->value_len;
	}
	return 0;
}

int engine_list(struct engine *engine, const char *prefix, size_t prefix_len, const char *after,
		size_t after_len, size_t limit, bool keys_only, struct engine_list_result *out)
{
	return engine_list_bounded(engine, prefix, prefix_len, after, after_len, limit, 0,
				   keys_only, out);
}

int engine_list_bounded(struct engine *engine, const char *prefix, size_t prefix_len,
			const char *after, size_t after_len, size_t limit, size_t max_bytes,
			bool keys_only, struct engine_list_result *out)
{
	size_t bytes = 0;
	char seek[ENGINE_DATA_HDR + ENGINE_KEY_MAX];
	struct engine_list_result res = {0};
	struct engine_iter *it = NULL;
	struct engine_record rec;
	bool end = false;
	int rv;

	if (limit == 0 || !bound_valid(prefix, prefix_len) || !bound_valid(after, after_len)) {
		return KVD_EINVAL;
	}
	rv = engine_iter_open(engine, &it);
	if (rv != 0) {
		return rv;
	}
	res.revision = it->owned_view->index;
	/* Start at the greater of prefix and after (the first key > after
	 * is found by skipping after itself below). */
	memcpy(seek, it->prefix, ENGINE_DATA_HDR);
	if (after_len > 0 &&
	    (prefix_len == 0 || key_cmp(after, after_len, prefix, prefix_len) >= 0)) {
		memcpy(seek + ENGINE_DATA_HDR, after, after_len);
		leveldb_iter_seek(it->it, seek, ENGINE_DATA_HDR + after_len);
	} else {
		if (prefix_len > 0) {
			memcpy(seek + ENGINE_DATA_HDR, prefix, prefix_len);
		}
		leveldb_iter_seek(it->it, seek, ENGINE_DATA_HDR + prefix_len);
	}
	it->started = true;
	it->positioned = true;
	while (rv == 0) {
		rv = engine_iter_next(it, &rec, &end);
		if (rv != 0 || end) {
			break;
		}
		if (after_len > 0 && rec.key_len == after_len &&
		    memcmp(rec.key, after, after_len) == 0) {
			continue; /* strictly after */
		}
		if (prefix_len > 0 &&
		    (rec.key_len < prefix_len || memcmp(rec.key, prefix, prefix_len) != 0)) {
			break; /* past the prefix range */
		}
		if (res.n_items == limit ||
		    (max_bytes > 0 && res.n_items > 0 &&
		     bytes + rec.key_len + (keys_only ? 0 : rec.value_len) > max_bytes)) {
			res.more = true;
			break;
		}
		bytes += rec.key_len + (keys_only ? 0 : rec.value_len);
		rv = list_add(&res, limit, &rec, keys_only);
	}
	engine_iter_close(it);
	if (rv != 0) {
		engine_list_result_clear(&res);
		return rv;
	}
	*out = res;
	return 0;
}
