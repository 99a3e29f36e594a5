/*
 * test_engine.c: the LevelDB state machine on real LevelDB directories:
 * apply/get/delete, the applied index stored in the same batch as the data,
 * atomicity of a batch (including a process killed mid-stream), ordering
 * checks, CLEAR by generation and the background deleter (inspected with a
 * raw LevelDB iterator), views, iterators, swap and disk-full mapping;
 * revisions (format 2, upgrade of a hand-written format-1 directory),
 * conditional commands and transactions decided at apply (also within one
 * batch and after a CLEAR), per-entry results and changes, mutated commands
 * under the sanitizers, and range listing over one view (also while applies
 * go on).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <leveldb/c.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"

static char tmpdir[64];
static char dbdir[128];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_tree(const char *path)
{
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/kvd-test-engine-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(dbdir, sizeof(dbdir), "%s/db", tmpdir);
}

static void teardown(void)
{
	rm_tree(tmpdir);
}

static struct engine *open_engine(const struct engine_options *opts)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct engine *e = NULL;
	int rv = engine_open(dbdir, opts, &e, errmsg);

	ck_assert_msg(rv == 0, "engine_open: %d %s", rv, errmsg);
	return e;
}

static int apply_cmd(struct engine *e, uint64_t index, uint64_t term, const char *text)
{
	struct engine_entry entry = {index, term, ENGINE_ENTRY_COMMAND, text, strlen(text)};
	return engine_apply(e, &entry, 1, NULL);
}

static void assert_value(struct engine *e, const char *key, const char *want)
{
	void *v = NULL;
	size_t n = 0;
	int rv = engine_get(e, key, strlen(key), &v, &n);

	if (want == NULL) {
		ck_assert_msg(rv == KVD_ENOTFOUND, "key %s: want not found, got %d", key, rv);
		return;
	}
	ck_assert_msg(rv == 0, "key %s: get returned %d", key, rv);
	ck_assert_uint_eq(n, strlen(want));
	ck_assert_mem_eq(v, want, n);
	free(v);
}

/* Counts raw LevelDB keys that start with 'd' + gen (gen 0: any 'd' key). */
static size_t raw_count_data(const char *dir, uint64_t gen)
{
	leveldb_options_t *o = leveldb_options_create();
	leveldb_readoptions_t *ro = leveldb_readoptions_create();
	leveldb_iterator_t *it;
	char *err = NULL;
	leveldb_t *db = leveldb_open(o, dir, &err);
	unsigned char prefix[9] = {'d'};
	size_t plen = gen == 0 ? 1 : 9;
	size_t count = 0;

	ck_assert_msg(err == NULL, "raw open: %s", err);
	for (int i = 0; i < 8; i++) {
		prefix[1 + i] = (unsigned char)(gen >> (56 - 8 * i));
	}
	it = leveldb_create_iterator(db, ro);
	for (leveldb_iter_seek(it, (const char *)prefix, plen); leveldb_iter_valid(it);
	     leveldb_iter_next(it)) {
		size_t klen;
		const char *k = leveldb_iter_key(it, &klen);
		if (klen < plen || memcmp(k, prefix, plen) != 0) {
			break;
		}
		count++;
	}
	leveldb_iter_destroy(it);
	leveldb_close(db);
	leveldb_readoptions_destroy(ro);
	leveldb_options_destroy(o);
	return count;
}

START_TEST(test_engine_open_fresh)
{
	struct engine *e = open_engine(NULL);
	uint64_t index = 99, term = 99;
	void *cfg;
	size_t n;

	engine_applied(e, &index, &term);
	ck_assert_uint_eq(index, 0);
	ck_assert_uint_eq(term, 0);
	assert_value(e, "nothing", NULL);
	ck_assert_int_eq(engine_config_get(e, &cfg, &n), KVD_ENOTFOUND);
	engine_close(e);
}
END_TEST

START_TEST(test_engine_apply_put_get_delete)
{
	struct engine *e = open_engine(NULL);
	uint64_t index, term;

	ck_assert_int_eq(apply_cmd(e, 1, 1, "PUT a hello world"), 0);
	ck_assert_int_eq(apply_cmd(e, 2, 1, "PUT b tab\there\nemoji \xF0\x9F\x98\x80"), 0);
	assert_value(e, "a", "hello world");
	assert_value(e, "b", "tab\there\nemoji \xF0\x9F\x98\x80");
	ck_assert_int_eq(apply_cmd(e, 3, 2, "PUT a replaced"), 0);
	assert_value(e, "a", "replaced");
	ck_assert_int_eq(apply_cmd(e, 4, 2, "DELETE a"), 0);
	assert_value(e, "a", NULL);
	ck_assert_int_eq(apply_cmd(e, 5, 2, "DELETE never-existed"), 0);
	engine_applied(e, &index, &term);
	ck_assert_uint_eq(index, 5);
	ck_assert_uint_eq(term, 2);
	ck_assert_int_eq(engine_get(e, "bad key", 7, &(void *){NULL}, &(size_t){0}), KVD_EINVAL);
	engine_close(e);
}
END_TEST

START_TEST(test_engine_apply_persists_index_across_reopen)
{
	struct engine *e = open_engine(NULL);
	struct engine_entry entries[3] = {
	    {10, 3, ENGINE_ENTRY_COMMAND, "PUT x 1", 7},
	    {11, 3, ENGINE_ENTRY_OTHER, NULL, 0},
	    {12, 4, ENGINE_ENTRY_COMMAND, "PUT y 2", 7},
	};
	uint64_t index, term;

	ck_assert_int_eq(engine_apply(e, entries, 3, NULL), 0);
	engine_close(e);
	e = open_engine(NULL);
	engine_applied(e, &index, &term);
	ck_assert_uint_eq(index, 12);
	ck_assert_uint_eq(term, 4);
	assert_value(e, "x", "1");
	assert_value(e, "y", "2");
	/* Replay continues after the stored index. */
	ck_assert_int_eq(apply_cmd(e, 12, 4, "PUT z 3"), KVD_EINVAL);
	ck_assert_int_eq(apply_cmd(e, 13, 4, "PUT z 3"), 0);
	engine_close(e);
}
END_TEST

START_TEST(test_engine_apply_rejects_non_increasing_index)
{
	struct engine *e = open_engine(NULL);
	struct engine_entry bad_order[3] = {
	    {2, 1, ENGINE_ENTRY_COMMAND, "PUT p 1", 7},
	    {4, 1, ENGINE_ENTRY_COMMAND, "PUT q 1", 7},
	    {4, 1, ENGINE_ENTRY_COMMAND, "PUT r 1", 7},
	};
	struct engine_entry bad_type = {9, 1, (enum engine_entry_type)42, NULL, 0};
	uint64_t index, term;
	char errmsg[KVD_ERRMSG_SIZE] = "";

	ck_assert_int_eq(apply_cmd(e, 1, 1, "PUT a 1"), 0);
	ck_assert_int_eq(apply_cmd(e, 1, 1, "PUT a 2"), KVD_EINVAL);
	ck_assert_int_eq(apply_cmd(e, 0, 1, "PUT a 2"), KVD_EINVAL);
	/* One bad entry rejects the whole batch: nothing of it is written. */
	ck_assert_int_eq(engine_apply(e, bad_order, 3, errmsg), KVD_EINVAL);
	ck_assert(strlen(errmsg) > 0);
	ck_assert_int_eq(engine_apply(e, &bad_type, 1, NULL), KVD_EINVAL);
	assert_value(e, "a", "1");
	assert_value(e, "p", NULL);
	assert_value(e, "q", NULL);
	engine_applied(e, &index, &term);
	ck_assert_uint_eq(index, 1);
	ck_assert_int_eq(engine_apply(e, bad_order, 2, NULL), 0);
	assert_value(e, "q", "1");
	engine_close(e);
}
END_TEST

static int log_calls;
static void count_log(void *data, const char *msg)
{
	(void)data;
	ck_assert_ptr_nonnull(strstr(msg, "malformed"));
	log_calls++;
}

START_TEST(test_engine_apply_skips_malformed_command)
{
	struct engine_options opts = {.log_cb = count_log};
	struct engine *e;
	struct engine_entry entries[3] = {
	    {1, 1, ENGINE_ENTRY_COMMAND, "PUT ok 1", 8},
	    {2, 1, ENGINE_ENTRY_COMMAND, "FROB \xff\xfe", 7},
	    {3, 1, ENGINE_ENTRY_COMMAND, "PUT bad/key v", 13},
	};
	uint64_t index, term;

	log_calls = 0;
	e = open_engine(&opts);
	ck_assert_int_eq(engine_apply(e, entries, 3, NULL), 0);
	ck_assert_uint_eq(engine_malformed_count(e), 2);
	ck_assert_int_eq(log_calls, 2);
	engine_applied(e, &index, &term);
	ck_assert_uint_eq(index, 3);
	assert_value(e, "ok", "1");
	engine_close(e);
}
END_TEST

START_TEST(test_engine_apply_stores_config)
{
	struct engine *e = open_engine(NULL);
	struct engine_entry entries[2] = {
	    {1, 1, ENGINE_ENTRY_CONFIG, "cfg-one", 7},
	    {2, 1, ENGINE_ENTRY_CONFIG, "cfg\0two", 7},
	};
	void *cfg = NULL;
	size_t n = 0;

	ck_assert_int_eq(engine_apply(e, entries, 1, NULL), 0);
	ck_assert_int_eq(engine_config_get(e, &cfg, &n), 0);
	ck_assert_uint_eq(n, 7);
	ck_assert_mem_eq(cfg, "cfg-one", 7);
	free(cfg);
	ck_assert_int_eq(engine_apply(e, entries + 1, 1, NULL), 0);
	engine_close(e);
	e = open_engine(NULL);
	ck_assert_int_eq(engine_config_get(e, &cfg, &n), 0);
	ck_assert_uint_eq(n, 7);
	ck_assert_mem_eq(cfg, "cfg\0two", 7);
	free(cfg);
	engine_close(e);
}
END_TEST

/* A child applies batches of 100 PUTs ("k<index>") forever; the parent kills
 * it with SIGKILL at a random point. After reopening, every key up to the
 * stored applied index must exist and none after it: index and data were
 * written in one batch. */
START_TEST(test_engine_apply_batch_atomic_when_killed)
{
	struct engine *e;
	uint64_t index, term;
	pid_t pid;
	char key[32];

	int ready[2];
	char byte;

	ck_assert_int_eq(pipe(ready), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct engine *ce = NULL;
		char texts[100][48];
		struct engine_entry entries[100];
		if (engine_open(dbdir, NULL, &ce, NULL) != 0) {
			_exit(2);
		}
		for (uint64_t base = 1;; base += 100) {
			for (int i = 0; i < 100; i++) {
				snprintf(texts[i], sizeof(texts[i]), "PUT k%llu value-%d",
					 (unsigned long long)(base + (uint64_t)i), i);
				entries[i] = (struct engine_entry){base + (uint64_t)i, 1,
								   ENGINE_ENTRY_COMMAND, texts[i],
								   strlen(texts[i])};
			}
			if (engine_apply(ce, entries, 100, NULL) != 0) {
				_exit(3);
			}
			if (base == 1 && write(ready[1], "r", 1) != 1) {
				_exit(4);
			}
		}
	}
	/* Kill it some time after its first batch, mid-stream. */
	ck_assert_int_eq(read(ready[0], &byte, 1), 1);
	usleep(100 * 1000 + (useconds_t)(time(NULL) % 7) * 20 * 1000);
	kill(pid, SIGKILL);
	close(ready[0]);
	close(ready[1]);
	waitpid(pid, NULL, 0);

	e = open_engine(NULL);
	engine_applied(e, &index, &term);
	ck_assert_msg(index >= 100, "child's first batch lost");
	ck_assert_uint_eq(index % 100, 0);
	for (uint64_t i = 1; i <= index; i += 37) {
		snprintf(key, sizeof(key), "k%llu", (unsigned long long)i);
		void *v;
		size_t n;
		ck_assert_int_eq(engine_get(e, key, strlen(key), &v, &n), 0);
		free(v);
	}
	snprintf(key, sizeof(key), "k%llu", (unsigned long long)index);
	assert_value(e, key, "value-99");
	snprintf(key, sizeof(key), "k%llu", (unsigned long long)index + 1);
	assert_value(e, key, NULL);
	engine_close(e);
}
END_TEST

START_TEST(test_engine_clear_hides_all_keys)
{
	struct engine *e = open_engine(NULL);
	struct engine_entry entries[3] = {
	    {4, 1, ENGINE_ENTRY_COMMAND, "PUT c 3", 7},
	    {5, 1, ENGINE_ENTRY_COMMAND, "CLEAR", 5},
	    {6, 1, ENGINE_ENTRY_COMMAND, "PUT after 1", 11},
	};

	ck_assert_int_eq(apply_cmd(e, 1, 1, "PUT a 1"), 0);
	ck_assert_int_eq(apply_cmd(e, 2, 1, "PUT b 2"), 0);
	ck_assert_int_eq(apply_cmd(e, 3, 1, "CLEAR"), 0);
	assert_value(e, "a", NULL);
	assert_value(e, "b", NULL);
	ck_assert_int_eq(engine_apply(e, entries, 3, NULL), 0);
	assert_value(e, "c", NULL);
	assert_value(e, "after", "1");
	engine_close(e);
	e = open_engine(NULL);
	assert_value(e, "a", NULL);
	assert_value(e, "after", "1");
	engine_close(e);
}
END_TEST

static void put_many(struct engine *e, uint64_t *index, int n)
{
	char texts[100][48];
	struct engine_entry entries[100];

	for (int done = 0; done < n;) {
		int k = n - done < 100 ? n - done : 100;
		for (int i = 0; i < k; i++) {
			snprintf(texts[i], sizeof(texts[i]), "PUT key%06d some-value-%d", done + i,
				 done + i);
			*index += 1;
			entries[i] = (struct engine_entry){*index, 1, ENGINE_ENTRY_COMMAND,
							   texts[i], strlen(texts[i])};
		}
		ck_assert_int_eq(engine_apply(e, entries, (size_t)k, NULL), 0);
		done += k;
	}
}

START_TEST(test_engine_clear_deleter_removes_old_generation)
{
	struct engine_options opts = {.deleter_batch_keys = 256};
	struct engine *e = open_engine(&opts);
	uint64_t index = 0;

	put_many(e, &index, 5000);
	ck_assert_int_eq(apply_cmd(e, ++index, 1, "CLEAR"), 0);
	ck_assert_int_eq(apply_cmd(e, ++index, 1, "PUT survivor yes"), 0);
	assert_value(e, "key000000", NULL);
	ck_assert_int_eq(engine_deleter_wait(e, 30000), 0);
	ck_assert_uint_eq(engine_deleter_pending(e), 0);
	engine_close(e);
	ck_assert_uint_eq(raw_count_data(dbdir, 1), 0);
	ck_assert_uint_eq(raw_count_data(dbdir, 2), 1);
	ck_assert_uint_eq(raw_count_data(dbdir, 0), 1);
}
END_TEST

START_TEST(test_engine_clear_deleter_survives_reopen)
{
	struct engine_options off = {.deleter_disabled = true};
	struct engine_options small = {.deleter_batch_keys = 10};
	struct engine *e = open_engine(&off);
	uint64_t index = 0;

	put_many(e, &index, 3000);
	ck_assert_int_eq(apply_cmd(e, ++index, 1, "CLEAR"), 0);
	put_many(e, &index, 10);
	ck_assert_int_eq(apply_cmd(e, ++index, 1, "CLEAR"), 0);
	ck_assert_uint_eq(engine_deleter_pending(e), 2);
	engine_close(e);
	/* Nothing was deleted, and the pending list survived the close. */
	ck_assert_uint_eq(raw_count_data(dbdir, 1), 3000);
	ck_assert_uint_eq(raw_count_data(dbdir, 2), 10);

	/* Start the deleter with tiny batches and stop it almost at once. */
	e = open_engine(&small);
	usleep(2000);
	engine_close(e);
	e = open_engine(&off);
	ck_assert_uint_ge(engine_deleter_pending(e), 1);
	assert_value(e, "key000001", NULL);
	engine_close(e);

	e = open_engine(&small);
	ck_assert_int_eq(engine_deleter_wait(e, 60000), 0);
	engine_close(e);
	ck_assert_uint_eq(raw_count_data(dbdir, 0), 0);
}
END_TEST

START_TEST(test_engine_iter_current_generation_sorted)
{
	struct engine *e = open_engine(NULL);
	struct engine_iter *it;
	struct engine_record rec;
	const char *want[] = {"A", "a", "b", "b.1"};
	bool end = false;
	size_t n = 0;

	ck_assert_int_eq(apply_cmd(e, 1, 1, "PUT old 1"), 0);
	ck_assert_int_eq(apply_cmd(e, 2, 1, "CLEAR"), 0);
	ck_assert_int_eq(apply_cmd(e, 3, 1, "PUT b.1 4"), 0);
	ck_assert_int_eq(apply_cmd(e, 4, 1, "PUT a 2"), 0);
	ck_assert_int_eq(apply_cmd(e, 5, 1, "PUT b 3"), 0);
	ck_assert_int_eq(apply_cmd(e, 6, 1, "PUT A 1"), 0);
	ck_assert_int_eq(engine_iter_open(e, &it), 0);
	/* Applies after open are not seen by the iterator. */
	ck_assert_int_eq(apply_cmd(e, 7, 1, "PUT later x"), 0);
	for (;;) {
		ck_assert_int_eq(engine_iter_next(it, &rec, &end), 0);
		if (end) {
			break;
		}
		ck_assert_uint_lt(n, 4);
		ck_assert_uint_eq(rec.key_len, strlen(want[n]));
		ck_assert_mem_eq(rec.key, want[n], rec.key_len);
		n++;
	}
	ck_assert_uint_eq(n, 4);
	ck_assert_int_eq(engine_iter_next(it, &rec, &end), 0);
	ck_assert(end);
	engine_iter_close(it);
	engine_close(e);
}
END_TEST

START_TEST(test_engine_snapshot_begin_view_meta)
{
	struct engine *e = open_engine(NULL);
	struct engine_entry cfg = {2, 7, ENGINE_ENTRY_CONFIG, "conf-A", 6};
	struct engine_view *view;
	const void *config;
	size_t config_len;
	uint64_t index, term;

	ck_assert_int_eq(apply_cmd(e, 1, 7, "PUT a 1"), 0);
	ck_assert_int_eq(engine_apply(e, &cfg, 1, NULL), 0);
	ck_assert_int_eq(engine_snapshot_begin(e, &view), 0);
	cfg = (struct engine_entry){3, 8, ENGINE_ENTRY_CONFIG, "conf-B", 6};
	ck_assert_int_eq(engine_apply(e, &cfg, 1, NULL), 0);
	engine_view_meta(view, &index, &term, &config, &config_len);
	ck_assert_uint_eq(index, 2);
	ck_assert_uint_eq(term, 7);
	ck_assert_uint_eq(config_len, 6);
	ck_assert_mem_eq(config, "conf-A", 6);
	engine_view_release(view);
	engine_close(e);
}
END_TEST

START_TEST(test_engine_open_locked_by_other_handle)
{
	struct engine *e = open_engine(NULL);
	struct engine *e2 = NULL;
	char errmsg[KVD_ERRMSG_SIZE] = "";

	ck_assert_int_eq(engine_open(dbdir, NULL, &e2, errmsg), KVD_ELOCKED);
	ck_assert_ptr_null(e2);
	ck_assert(strlen(errmsg) > 0);
	engine_close(e);
}
END_TEST

START_TEST(test_engine_open_rejects_foreign_leveldb)
{
	leveldb_options_t *o = leveldb_options_create();
	leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
	char *err = NULL;
	leveldb_t *db;
	struct engine *e = NULL;

	leveldb_options_set_create_if_missing(o, 1);
	db = leveldb_open(o, dbdir, &err);
	ck_assert_ptr_null(err);
	leveldb_put(db, wo, "zzz", 3, "1", 1, &err);
	ck_assert_ptr_null(err);
	leveldb_close(db);
	leveldb_writeoptions_destroy(wo);
	leveldb_options_destroy(o);
	ck_assert_int_eq(engine_open(dbdir, NULL, &e, NULL), KVD_ECORRUPT);
}
END_TEST

START_TEST(test_engine_swap_replaces_database)
{
	struct engine *e = open_engine(NULL);
	struct engine_builder *b;
	char newdir[160], olddir[160];
	char errmsg[KVD_ERRMSG_SIZE] = "";
	uint64_t index, term;
	struct stat st;

	ck_assert_int_eq(apply_cmd(e, 1, 1, "PUT live 1"), 0);
	snprintf(newdir, sizeof(newdir), "%s/db.new", tmpdir);
	ck_assert_int_eq(engine_builder_create(newdir, &b, NULL), 0);
	ck_assert_int_eq(engine_builder_put(b, "bad key", 7, "v", 1, 1, NULL), KVD_EINVAL);
	ck_assert_int_eq(engine_builder_put(b, "fresh", 5, "from snapshot", 13, 1, NULL), 0);
	ck_assert_int_eq(engine_builder_finish(b, 500, 9, "cfg", 3, NULL), 0);
	ck_assert_int_eq(engine_builder_create(newdir, &b, NULL), KVD_EEXIST);

	ck_assert_int_eq(engine_swap(e, newdir, errmsg), 0);
	engine_applied(e, &index, &term);
	ck_assert_uint_eq(index, 500);
	ck_assert_uint_eq(term, 9);
	assert_value(e, "live", NULL);
	assert_value(e, "fresh", "from snapshot");
	ck_assert_int_eq(apply_cmd(e, 501, 9, "PUT next 1"), 0);
	snprintf(olddir, sizeof(olddir), "%s.old", dbdir);
	ck_assert_int_ne(stat(olddir, &st), 0);
	ck_assert_int_ne(stat(newdir, &st), 0);
	engine_close(e);
	e = open_engine(NULL);
	assert_value(e, "next", "1");
	engine_close(e);
}
END_TEST

START_TEST(test_engine_open_rolls_back_interrupted_swap)
{
	struct engine *e = open_engine(NULL);
	char olddir[160];

	ck_assert_int_eq(apply_cmd(e, 1, 1, "PUT kept 1"), 0);
	engine_close(e);
	/* The crash happened after "rename dir -> dir.old". */
	snprintf(olddir, sizeof(olddir), "%s.old", dbdir);
	ck_assert_int_eq(rename(dbdir, olddir), 0);
	e = open_engine(NULL);
	assert_value(e, "kept", "1");
	engine_close(e);
}
END_TEST

/* Mounts a 1 MiB tmpfs on tmpdir inside a private mount namespace (the
 * test runs in a Check fork). Returns false when the system forbids it. */
static bool mount_small_tmpfs(void)
{
	struct stat st;

	/* A mount namespace is per thread: with LevelDB's background thread
	 * already running (CK_FORK=no), it would not see the mount. */
	if (stat("/proc/self/task", &st) != 0 || st.st_nlink > 3) {
		errno = EBUSY;
		return false;
	}
	if (unshare(CLONE_NEWNS) != 0) {
		return false;
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
		return false;
	}
	return mount("tmpfs", tmpdir, "tmpfs", 0, "size=1m") == 0;
}

START_TEST(test_engine_apply_disk_full_is_enospc)
{
	struct engine_options opts = {.write_buffer_bytes = 64 * 1024};
	struct engine *e = NULL;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	char filler[128];
	char *text;
	uint64_t index = 0;
	int rv = 0;
	int fd;

	if (!mount_small_tmpfs()) {
		fprintf(stderr,
			"test_engine_apply_disk_full_is_enospc: cannot mount tmpfs "
			"(%s); not run\n",
			strerror(errno));
		return;
	}
	ck_assert_int_eq(engine_open(dbdir, &opts, &e, errmsg), 0);
	snprintf(filler, sizeof(filler), "%s/filler", tmpdir);
	fd = open(filler, O_WRONLY | O_CREAT, 0644);
	ck_assert_int_ge(fd, 0);
	text = calloc(1, 64 * 1024 + 16);
	for (int i = 0; i < 5; i++) {
		ck_assert_int_eq(write(fd, text, 64 * 1024), 64 * 1024);
	}
	close(fd);
	memcpy(text, "PUT big00 ", 10);
	for (size_t i = 10; i < 10 + 64 * 1024; i++) {
		text[i] = (char)('a' + (i * 2654435761u >> 7) % 26); /* poorly compressible */
	}
	while (rv == 0 && index < 1000) {
		struct engine_entry entry = {++index, 1, ENGINE_ENTRY_COMMAND, text,
					     10 + 64 * 1024};
		text[7] = (char)('a' + index % 26);
		text[8] = (char)('a' + index / 26 % 26);
		rv = engine_apply(e, &entry, 1, errmsg);
	}
	ck_assert_msg(rv == KVD_ENOSPC, "want ENOSPC, got %d: %s", rv, errmsg);
	ck_assert_ptr_nonnull(strstr(errmsg, "No space left on device"));
	/* Reads keep working. */
	{
		void *v;
		size_t n;
		ck_assert_int_eq(engine_get(e, "bigba", 5, &v, &n), 0);
		free(v);
	}
	/* Still full: the same entry fails again, and reads still work. (The
	 * reopen after a failed write may let LevelDB drop a failed
	 * compaction's output and so find room for it: then it applies, and
	 * the next entry takes the following index.) */
	{
		struct engine_entry entry = {index, 1, ENGINE_ENTRY_COMMAND, text, 10 + 64 * 1024};
		rv = engine_apply(e, &entry, 1, NULL);
		ck_assert_msg(rv == KVD_ENOSPC || rv == 0, "retry on a full disk: %d", rv);
		if (rv == 0)
			index++;
		assert_value(e, "small", NULL);
	}
	/* Space comes back: the entry that failed applies now, and nothing
	 * applied before the failure was lost. */
	ck_assert_int_eq(unlink(filler), 0);
	{
		struct engine_entry entry = {index, 1, ENGINE_ENTRY_COMMAND, "PUT small 1", 11};
		uint64_t applied, term;
		rv = engine_apply(e, &entry, 1, errmsg);
		ck_assert_msg(rv == 0, "apply after space returned: %d %s", rv, errmsg);
		engine_applied(e, &applied, &term);
		ck_assert_uint_eq(applied, index);
	}
	assert_value(e, "small", "1");
	{
		void *v;
		size_t n;
		ck_assert_int_eq(engine_get(e, "bigba", 5, &v, &n), 0);
		ck_assert_uint_eq(n, 64 * 1024);
		free(v);
	}
	free(text);
	engine_close(e);
	umount(tmpdir);
}
END_TEST

/* Writes a format-1 directory by hand (bare values, mversion 1), as an
 * engine of the previous release left it. */
static void write_v1_dir(const char *dir, uint64_t index)
{
	leveldb_options_t *o = leveldb_options_create();
	leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
	leveldb_writebatch_t *b = leveldb_writebatch_create();
	unsigned char version[4] = {0, 0, 0, 1};
	unsigned char gen[8] = {0, 0, 0, 0, 0, 0, 0, 1};
	unsigned char applied[16] = {0};
	char key[32];
	char *err = NULL;
	leveldb_t *db;

	leveldb_options_set_create_if_missing(o, 1);
	db = leveldb_open(o, dir, &err);
	ck_assert_msg(err == NULL, "raw open: %s", err);
	for (int i = 0; i < 8; i++) {
		applied[i] = (unsigned char)(index >> (56 - 8 * i));
		applied[8 + i] = i == 7 ? 1 : 0;
	}
	leveldb_writebatch_put(b, "mversion", 8, (const char *)version, 4);
	leveldb_writebatch_put(b, "mgen", 4, (const char *)gen, 8);
	leveldb_writebatch_put(b, "mapplied", 8, (const char *)applied, 16);
	memcpy(key, "d\0\0\0\0\0\0\0\1alpha", 14);
	leveldb_writebatch_put(b, key, 14, "one", 3);
	memcpy(key, "d\0\0\0\0\0\0\0\1beta", 13);
	leveldb_writebatch_put(b, key, 13, "two words", 9);
	leveldb_write(db, wo, b, &err);
	ck_assert_msg(err == NULL, "raw write: %s", err);
	leveldb_writebatch_destroy(b);
	leveldb_writeoptions_destroy(wo);
	leveldb_close(db);
	leveldb_options_destroy(o);
}

static void assert_rev(struct engine *e, const char *key, const char *want, uint64_t want_rev)
{
	void *v = NULL;
	size_t n = 0;
	uint64_t rev = 12345;
	int rv = engine_get_rev(e, key, strlen(key), &v, &n, &rev);

	ck_assert_msg(rv == 0, "key %s: get returned %d", key, rv);
	ck_assert_uint_eq(n, strlen(want));
	ck_assert_mem_eq(v, want, n);
	ck_assert_uint_eq(rev, want_rev);
	free(v);
}

START_TEST(test_engine_revision_is_index_of_last_write)
{
	struct engine *e = open_engine(NULL);

	ck_assert_int_eq(apply_cmd(e, 3, 1, "PUT a 1"), 0);
	ck_assert_int_eq(apply_cmd(e, 4, 1, "PUT b 2"), 0);
	ck_assert_int_eq(apply_cmd(e, 5, 1, "PUT a 3"), 0);
	assert_rev(e, "a", "3", 5);
	assert_rev(e, "b", "2", 4);
	assert_value(e, "a", "3"); /* the old call still returns the bare value */
	engine_close(e);
	e = open_engine(NULL);
	assert_rev(e, "a", "3", 5);
	engine_close(e);
}
END_TEST

START_TEST(test_engine_open_upgrades_v1_directory)
{
	struct engine *e;
	struct engine_iter *it;
	struct engine_record rec;
	bool end = false;

	write_v1_dir(dbdir, 40);
	e = open_engine(NULL);
	assert_rev(e, "alpha", "one", 40);
	assert_rev(e, "beta", "two words", 40);
	ck_assert_int_eq(engine_iter_open(e, &it), 0);
	ck_assert_int_eq(engine_iter_next(it, &rec, &end), 0);
	ck_assert(!end);
	ck_assert_uint_eq(rec.value_len, 3);
	ck_assert_mem_eq(rec.value, "one", 3);
	ck_assert_uint_eq(rec.revision, 40);
	engine_iter_close(it);
	ck_assert_int_eq(apply_cmd(e, 41, 1, "PUT alpha new"), 0);
	engine_close(e);
	e = open_engine(NULL); /* now format 2: opened as is */
	assert_rev(e, "alpha", "new", 41);
	assert_rev(e, "beta", "two words", 40);
	engine_close(e);
}
END_TEST

/* Applies one command text and returns its result (caller clears it). */
static int apply_res(struct engine *e, uint64_t index, const char *text, struct engine_result *res)
{
	struct engine_entry entry = {index, 1, ENGINE_ENTRY_COMMAND, text, strlen(text)};
	return engine_apply_results(e, &entry, 1, res, NULL);
}

START_TEST(test_engine_conditional_writes)
{
	struct engine *e = open_engine(NULL);
	struct engine_result r;

	ck_assert_int_eq(apply_res(e, 2, "PUT-ABSENT k v1", &r), 0);
	ck_assert_int_eq(r.outcome, ENGINE_OUTCOME_APPLIED);
	ck_assert_uint_eq(r.revision, 2);
	ck_assert_uint_eq(r.n_changes, 1);
	ck_assert_int_eq(r.changes[0].type, ENGINE_CHANGE_PUT);
	ck_assert_mem_eq(r.changes[0].key, "k", 1);
	ck_assert_mem_eq(r.changes[0].value, "v1", 2);
	ck_assert_uint_eq(r.changes[0].revision, 2);
	engine_results_clear(&r, 1);

	ck_assert_int_eq(apply_res(e, 3, "PUT-ABSENT k v2", &r), 0);
	ck_assert_int_eq(r.outcome, ENGINE_OUTCOME_FAILED);
	ck_assert_uint_eq(r.n_changes, 0);
	engine_results_clear(&r, 1);
	assert_rev(e, "k", "v1", 2);

	ck_assert_int_eq(apply_res(e, 4, "PUT-IF 3 k v3", &r), 0);
	ck_assert_int_eq(r.outcome, ENGINE_OUTCOME_FAILED);
	engine_results_clear(&r, 1);
	ck_assert_int_eq(apply_res(e, 5, "PUT-IF 2 k v with spaces", &r), 0);
	ck_assert_int_eq(r.outcome, ENGINE_OUTCOME_APPLIED);
	ck_assert_uint_eq(r.revision, 5);
	engine_results_clear(&r, 1);
	assert_rev(e, "k", "v with spaces", 5);

	ck_assert_int_eq(apply_res(e, 6, "DELETE-IF 2 k", &r), 0);
	ck_assert_int_eq(r.outcome, ENGINE_OUTCOME_FAILED);
	engine_results_clear(&r, 1);
	ck_assert_int_eq(apply_res(e, 7, "PUT-IF 1 absent x", &r), 0);
	ck_assert_int_eq(r.outcome, ENGINE_OUTCOME_FAILED);
	engine_results_clear(&r, 1);
	ck_assert_int_eq(apply_res(e, 8, "DELETE-IF 5 k", &r), 0);
	ck_assert_int_eq(r.outcome, ENGINE_OUTCOME_APPLIED);
	ck_assert_uint_eq(r.n_changes, 1);
	ck_assert_int_eq(r.changes[0].type, ENGINE_CHANGE_DELETE);
	engine_results_clear(&r, 1);
	assert_value(e, "k", NULL);

	ck_assert_int_eq(apply_res(e, 9, "PUT-IF x k v", &r), 0);
	ck_assert_int_eq(r.outcome, ENGINE_OUTCOME_MALFORMED);
	engine_results_clear(&r, 1);
	ck_assert_uint_eq(engine_malformed_count(e), 1);
	engine_close(e);
}
END_TEST

/* Conditions see the earlier entries of the same batch, and a CLEAR in it. */
START_TEST(test_engine_conditions_see_same_batch)
{
	struct engine *e = open_engine(NULL);
	struct engine_entry en[6] = {
	    {1, 1, ENGINE_ENTRY_COMMAND, "PUT a 1", 7},
	    {2, 1, ENGINE_ENTRY_COMMAND, "PUT-IF 1 a 2", 12},
	    {3, 1, ENGINE_ENTRY_COMMAND, "PUT-ABSENT a 3", 14},
	    {4, 1, ENGINE_ENTRY_COMMAND, "CLEAR", 5},
	    {5, 1, ENGINE_ENTRY_COMMAND, "PUT-ABSENT a 4", 14},
	    {6, 1, ENGINE_ENTRY_OTHER, NULL, 0},
	};
	struct engine_result r[6];

	ck_assert_int_eq(engine_apply_results(e, en, 6, r, NULL), 0);
	ck_assert_int_eq(r[0].outcome, ENGINE_OUTCOME_APPLIED);
	ck_assert_int_eq(r[1].outcome, ENGINE_OUTCOME_APPLIED);
	ck_assert_int_eq(r[2].outcome, ENGINE_OUTCOME_FAILED);
	ck_assert_int_eq(r[3].outcome, ENGINE_OUTCOME_APPLIED);
	ck_assert_uint_eq(r[3].n_changes, 1);
	ck_assert_int_eq(r[3].changes[0].type, ENGINE_CHANGE_CLEAR);
	ck_assert_uint_eq(r[3].changes[0].revision, 4);
	ck_assert_int_eq(r[4].outcome, ENGINE_OUTCOME_APPLIED);
	ck_assert_int_eq(r[5].outcome, ENGINE_OUTCOME_NONE);
	ck_assert_uint_eq(r[5].n_changes, 0);
	engine_results_clear(r, 6);
	assert_rev(e, "a", "4", 5);
	engine_close(e);
}
END_TEST

START_TEST(test_engine_list_prefix_after_limit)
{
	struct engine *e = open_engine(NULL);
	struct engine_list_result l;

	ck_assert_int_eq(apply_cmd(e, 1, 1, "PUT user:1 a"), 0);
	ck_assert_int_eq(apply_cmd(e, 2, 1, "PUT user:2 b"), 0);
	ck_assert_int_eq(apply_cmd(e, 3, 1, "PUT user:3 c"), 0);
	ck_assert_int_eq(apply_cmd(e, 4, 1, "PUT zz d"), 0);
	ck_assert_int_eq(apply_cmd(e, 5, 1, "PUT user 0"), 0);
	ck_assert_int_eq(apply_cmd(e, 6, 1, "PUT user:1 a2"), 0);

	ck_assert_int_eq(engine_list(e, "user:", 5, NULL, 0, 2, false, &l), 0);
	ck_assert_uint_eq(l.revision, 6);
	ck_assert_uint_eq(l.n_items, 2);
	ck_assert(l.more);
	ck_assert_mem_eq(l.items[0].key, "user:1", 6);
	ck_assert_uint_eq(l.items[0].value_len, 2);
	ck_assert_mem_eq(l.items[0].value, "a2", 2);
	ck_assert_uint_eq(l.items[0].revision, 6);
	ck_assert_mem_eq(l.items[1].key, "user:2", 6);
	ck_assert_uint_eq(l.items[1].revision, 2);
	engine_list_result_clear(&l);

	ck_assert_int_eq(engine_list(e, "user:", 5, "user:2", 6, 2, true, &l), 0);
	ck_assert_uint_eq(l.n_items, 1);
	ck_assert(!l.more);
	ck_assert_mem_eq(l.items[0].key, "user:3", 6);
	ck_assert_ptr_null(l.items[0].value);
	engine_list_result_clear(&l);

	ck_assert_int_eq(engine_list(e, NULL, 0, NULL, 0, 10, false, &l), 0);
	ck_assert_uint_eq(l.n_items, 5);
	ck_assert(!l.more);
	ck_assert_mem_eq(l.items[0].key, "user", 4);
	ck_assert_mem_eq(l.items[4].key, "zz", 2);
	engine_list_result_clear(&l);

	ck_assert_int_eq(engine_list(e, NULL, 0, "zz", 2, 10, false, &l), 0);
	ck_assert_uint_eq(l.n_items, 0);
	ck_assert(!l.more);
	engine_list_result_clear(&l);
	/* after sorting before the prefix ("user" < "user:"), and after past it */
	ck_assert_int_eq(engine_list(e, "user:", 5, "user", 4, 10, true, &l), 0);
	ck_assert_uint_eq(l.n_items, 3);
	ck_assert_mem_eq(l.items[0].key, "user:1", 6);
	engine_list_result_clear(&l);
	ck_assert_int_eq(engine_list(e, "user:", 5, "v", 1, 10, true, &l), 0);
	ck_assert_uint_eq(l.n_items, 0);
	ck_assert(!l.more);
	engine_list_result_clear(&l);
	/* limit exactly the number of matches: no more */
	ck_assert_int_eq(engine_list(e, "user:", 5, NULL, 0, 3, true, &l), 0);
	ck_assert_uint_eq(l.n_items, 3);
	ck_assert(!l.more);
	engine_list_result_clear(&l);
	ck_assert_int_eq(engine_list(e, "bad key", 7, NULL, 0, 10, false, &l), KVD_EINVAL);
	ck_assert_int_eq(engine_list(e, NULL, 0, NULL, 0, 0, false, &l), KVD_EINVAL);
	engine_close(e);
}
END_TEST

/* Proposes a transaction body as the HTTP layer would (encoded TXN text). */
static int apply_txn_body(struct engine *e, uint64_t index, const char *body,
			  struct engine_result *res)
{
	struct engine_entry entry = {index, 1, ENGINE_ENTRY_COMMAND, NULL, 0};
	void *buf = NULL;
	size_t len = 0;
	int rv = engine_command_encode_txn_alloc(body, strlen(body), 0, &buf, &len, NULL);

	ck_assert_int_eq(rv, 0);
	entry.data = buf;
	entry.len = len;
	rv = engine_apply_results(e, &entry, 1, res, NULL);
	free(buf);
	return rv;
}

START_TEST(test_engine_txn_success_and_failure)
{
	struct engine *e = open_engine(NULL);
	struct engine_result r;

	ck_assert_int_eq(apply_cmd(e, 7, 1, "PUT a 1"), 0);
	ck_assert_int_eq(apply_cmd(e, 8, 1, "PUT b x"), 0);
	ck_assert_int_eq(apply_cmd(e, 9, 1, "PUT c 3"), 0);
	/* a at 7, d absent: success runs; the get of a sees the txn's own put */
	ck_assert_int_eq(
	    apply_txn_body(
		e, 10,
		"{\"compare\": [{\"key\": \"a\", \"revision\": 7}, {\"key\": \"d\", "
		"\"revision\": 0}], \"success\": [{\"op\": \"put\", \"key\": \"a\", "
		"\"value\": \"2\"}, {\"op\": \"delete\", \"key\": \"b\"}, {\"op\": \"get\", "
		"\"key\": \"c\"}, {\"op\": \"get\", \"key\": \"b\"}, {\"op\": \"get\", "
		"\"key\": \"a\"}], \"failure\": [{\"op\": \"get\", \"key\": \"a\"}]}",
		&r),
	    0);
	ck_assert_int_eq(r.outcome, ENGINE_OUTCOME_APPLIED);
	ck_assert(r.succeeded);
	ck_assert_uint_eq(r.revision, 10);
	ck_assert_uint_eq(r.n_ops, 5);
	ck_assert(!r.ops[0].is_get);
	ck_assert(!r.ops[1].is_get);
	ck_assert(r.ops[2].is_get && r.ops[2].found);
	ck_assert_uint_eq(r.ops[2].value_len, 1);
	ck_assert_mem_eq(r.ops[2].value, "3", 1);
	ck_assert_uint_eq(r.ops[2].revision, 9);
	ck_assert(r.ops[3].is_get && !r.ops[3].found);
	ck_assert_ptr_null(r.ops[3].value);
	ck_assert(r.ops[4].found);
	ck_assert_mem_eq(r.ops[4].value, "2", 1);
	ck_assert_uint_eq(r.ops[4].revision, 10);
	ck_assert_uint_eq(r.n_changes, 2);
	ck_assert_int_eq(r.changes[0].type, ENGINE_CHANGE_PUT);
	ck_assert_mem_eq(r.changes[0].key, "a", 1);
	ck_assert_mem_eq(r.changes[0].value, "2", 1);
	ck_assert_uint_eq(r.changes[0].revision, 10);
	ck_assert_int_eq(r.changes[1].type, ENGINE_CHANGE_DELETE);
	ck_assert_mem_eq(r.changes[1].key, "b", 1);
	ck_assert_uint_eq(r.changes[1].revision, 10);
	engine_results_clear(&r, 1);
	assert_rev(e, "a", "2", 10);
	assert_value(e, "b", NULL);

	/* stale compare: failure runs, nothing changes */
	ck_assert_int_eq(
	    apply_txn_body(
		e, 11,
		"{\"compare\": [{\"key\": \"a\", \"revision\": 7}], \"success\": [{\"op\": "
		"\"delete\", \"key\": \"a\"}], \"failure\": [{\"op\": \"get\", \"key\": "
		"\"a\"}]}",
		&r),
	    0);
	ck_assert_int_eq(r.outcome, ENGINE_OUTCOME_APPLIED);
	ck_assert(!r.succeeded);
	ck_assert_uint_eq(r.n_changes, 0);
	ck_assert_uint_eq(r.n_ops, 1);
	ck_assert_mem_eq(r.ops[0].value, "2", 1);
	ck_assert_uint_eq(r.ops[0].revision, 10);
	engine_results_clear(&r, 1);
	assert_rev(e, "a", "2", 10);

	/* a malformed TXN entry (not from the encoder) is skipped and counted */
	ck_assert_int_eq(apply_res(e, 12, "TXN {\"success\": [{\"op\": \"nope\"}]}", &r), 0);
	ck_assert_int_eq(r.outcome, ENGINE_OUTCOME_MALFORMED);
	engine_results_clear(&r, 1);
	ck_assert_int_eq(apply_res(e, 13, "TXN {not json", &r), 0);
	ck_assert_int_eq(r.outcome, ENGINE_OUTCOME_MALFORMED);
	engine_results_clear(&r, 1);
	ck_assert_uint_eq(engine_malformed_count(e), 2);
	engine_close(e);
	e = open_engine(NULL);
	assert_rev(e, "a", "2", 10);
	assert_rev(e, "c", "3", 9);
	engine_close(e);
}
END_TEST

/* Without a results array the same decisions are taken (followers). */
START_TEST(test_engine_txn_without_results_same_state)
{
	struct engine *e = open_engine(NULL);
	const char *t1 = "TXN {\"compare\":[{\"key\":\"k\",\"revision\":0}],\"success\":[{\"op\":"
			 "\"put\",\"key\":\"k\",\"value\":\"first\"}]}";
	const char *t2 =
	    "TXN {\"compare\":[{\"key\":\"k\",\"revision\":0}],\"success\":[{\"op\":"
	    "\"put\",\"key\":\"k\",\"value\":\"second\"}],\"failure\":[{\"op\":"
	    "\"put\",\"key\":\"lost\",\"value\":\"yes\"},{\"op\":\"get\",\"key\":\"k\"}]}";
	struct engine_entry en[2] = {
	    {1, 1, ENGINE_ENTRY_COMMAND, t1, strlen(t1)},
	    {2, 1, ENGINE_ENTRY_COMMAND, t2, strlen(t2)},
	};

	ck_assert_int_eq(engine_apply(e, en, 2, NULL), 0);
	assert_rev(e, "k", "first", 1);
	assert_rev(e, "lost", "yes", 2);
	engine_close(e);
}
END_TEST

/* Mutated TXN and conditional texts applied in batches: never an error,
 * every entry gets an outcome, and malformed ones are counted. */
START_TEST(test_engine_apply_mutated_commands_fuzz)
{
	static const char *seeds[] = {
	    "TXN "
	    "{\"compare\":[{\"key\":\"a\",\"revision\":0}],\"success\":[{\"op\":\"put\",\"key\":"
	    "\"a\",\"value\":\"1\"},{\"op\":\"get\",\"key\":\"a\"}],\"failure\":[{\"op\":"
	    "\"delete\",\"key\":\"a\"}]}",
	    "PUT-IF 3 a v",
	    "DELETE-IF 12 a",
	    "PUT-ABSENT b w",
	};
	struct engine *e = open_engine(NULL);
	struct engine_entry en[8];
	struct engine_result res[8];
	char bufs[8][256];
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	uint64_t index = 0;
	uint64_t malformed = 0;

	for (int round = 0; round < 300; round++) {
		for (int i = 0; i < 8; i++) {
			const char *src = seeds[(round + i) % 4];
			size_t len = strlen(src);
			memcpy(bufs[i], src, len);
			for (int m = 0; m < i % 3; m++) {
				seed ^= seed << 13;
				seed ^= seed >> 7;
				seed ^= seed << 17;
				bufs[i][(seed >> 8) % len] = "{}\":,0 1a"[(seed >> 20) % 9];
			}
			en[i] =
			    (struct engine_entry){++index, 1, ENGINE_ENTRY_COMMAND, bufs[i], len};
		}
		ck_assert_int_eq(engine_apply_results(e, en, 8, res, NULL), 0);
		for (int i = 0; i < 8; i++) {
			ck_assert_uint_eq(res[i].index, en[i].index);
			ck_assert(res[i].outcome != ENGINE_OUTCOME_NONE);
			malformed += res[i].outcome == ENGINE_OUTCOME_MALFORMED;
		}
		engine_results_clear(res, 8);
	}
	ck_assert_uint_eq(engine_malformed_count(e), malformed);
	engine_close(e);
}
END_TEST

struct list_writer {
	struct engine *e;
	atomic_bool stop;
};

/* Applies batches writing keys p:a and p:b with the same value. */
static void *list_writer_main(void *arg)
{
	struct list_writer *w = arg;
	char ta[64], tb[64];

	for (uint64_t i = 1; !atomic_load(&w->stop) && i < 100000; i++) {
		struct engine_entry en[2];
		snprintf(ta, sizeof(ta), "PUT p:a %llu", (unsigned long long)i);
		snprintf(tb, sizeof(tb), "PUT p:b %llu", (unsigned long long)i);
		en[0] = (struct engine_entry){2 * i, 1, ENGINE_ENTRY_COMMAND, ta, strlen(ta)};
		en[1] = (struct engine_entry){2 * i + 1, 1, ENGINE_ENTRY_COMMAND, tb, strlen(tb)};
		if (engine_apply(w->e, en, 2, NULL) != 0) {
			break;
		}
	}
	return NULL;
}

/* A listing is one consistent view while applies go on: both keys of a
 * batch, and a store revision that covers every item's. */
START_TEST(test_engine_list_consistent_while_applying)
{
	struct list_writer w = {.e = open_engine(NULL)};
	pthread_t th;

	atomic_init(&w.stop, false);
	ck_assert_int_eq(apply_cmd(w.e, 1, 1, "PUT p:0 first"), 0);
	ck_assert_int_eq(pthread_create(&th, NULL, list_writer_main, &w), 0);
	for (int i = 0; i < 2000; i++) {
		struct engine_list_result l;
		ck_assert_int_eq(engine_list(w.e, "p:", 2, "p:0", 3, 10, false, &l), 0);
		ck_assert(!l.more);
		if (l.n_items > 0) {
			ck_assert_uint_eq(l.n_items, 2);
			ck_assert_uint_eq(l.items[0].value_len, l.items[1].value_len);
			ck_assert_mem_eq(l.items[0].value, l.items[1].value, l.items[0].value_len);
			ck_assert_uint_eq(l.items[1].revision, l.items[0].revision + 1);
			ck_assert_uint_eq(l.revision, l.items[1].revision);
		}
		engine_list_result_clear(&l);
	}
	atomic_store(&w.stop, true);
	pthread_join(th, NULL);
	engine_close(w.e);
}
END_TEST

/* Pages of more than the initial item array, walked with after=<last key>. */
START_TEST(test_engine_list_pages_through_many_keys)
{
	struct engine *e = open_engine(NULL);
	struct engine_entry en[300];
	char texts[300][32];
	char after[32] = "";
	size_t after_len = 0, seen = 0;
	bool more = true;

	for (int i = 0; i < 300; i++) {
		snprintf(texts[i], sizeof(texts[i]), "PUT k%03d v%d", i, i);
		en[i] = (struct engine_entry){(uint64_t)i + 1, 1, ENGINE_ENTRY_COMMAND, texts[i],
					      strlen(texts[i])};
	}
	ck_assert_int_eq(engine_apply(e, en, 300, NULL), 0);
	while (more) {
		struct engine_list_result l;
		ck_assert_int_eq(engine_list(e, "k", 1, after, after_len, 130, false, &l), 0);
		for (size_t i = 0; i < l.n_items; i++) {
			char want[8];
			snprintf(want, sizeof(want), "k%03zu", seen + i);
			ck_assert_uint_eq(l.items[i].key_len, 4);
			ck_assert_mem_eq(l.items[i].key, want, 4);
			ck_assert_uint_eq(l.items[i].revision, seen + i + 1);
		}
		seen += l.n_items;
		more = l.more;
		ck_assert(l.n_items > 0);
		memcpy(after, l.items[l.n_items - 1].key, l.items[l.n_items - 1].key_len);
		after_len = l.items[l.n_items - 1].key_len;
		engine_list_result_clear(&l);
	}
	ck_assert_uint_eq(seen, 300);
	engine_close(e);
}
END_TEST

/* Field-by-field equality of a rebuilt result with the live one (a TXN's
 * ops are not rebuilt). */
static void assert_same_result(const struct engine_result *live, const struct engine_result *re)
{
	ck_assert_uint_eq(re->index, live->index);
	ck_assert_int_eq(re->outcome, live->outcome);
	ck_assert_uint_eq(re->revision, live->revision);
	ck_assert_int_eq(re->succeeded, live->succeeded);
	ck_assert_int_eq(re->owns_data, live->owns_data);
	ck_assert_uint_eq(re->n_changes, live->n_changes);
	for (size_t j = 0; j < live->n_changes; j++) {
		const struct engine_change *a = &live->changes[j], *b = &re->changes[j];
		ck_assert_int_eq(b->type, a->type);
		ck_assert_uint_eq(b->revision, a->revision);
		ck_assert_uint_eq(b->key_len, a->key_len);
		ck_assert_uint_eq(b->value_len, a->value_len);
		ck_assert_int_eq(b->key == NULL, a->key == NULL);
		ck_assert_int_eq(b->value == NULL, a->value == NULL);
		if (a->key_len > 0)
			ck_assert_mem_eq(b->key, a->key, a->key_len);
		if (a->value_len > 0)
			ck_assert_mem_eq(b->value, a->value, a->value_len);
	}
}

/* The changes of applied entries are rebuilt, after a reopen, exactly as
 * engine_apply_results() gave them live, conditional outcomes and TXN
 * branches included; the recorded outcomes never show in listings and are
 * pruned below a snapshot's index. */
START_TEST(test_engine_entry_changes_rebuilds_live_results)
{
	static const char *texts[] = {
	    "PUT a 1",
	    "PUT b two words",
	    "PUT-IF 1 a 3",   /* held: a at 1 */
	    "PUT-IF 1 a 4",   /* failed: a at 3 */
	    "PUT-ABSENT b x", /* failed */
	    "PUT-ABSENT c y", /* held */
	    "TXN {\"compare\":[{\"key\":\"a\",\"revision\":3}],\"success\":[{\"op\":\"put\","
	    "\"key\":\"t1\",\"value\":\"s\"},{\"op\":\"get\",\"key\":\"a\"},{\"op\":\"delete\","
	    "\"key\":\"b\"}],\"failure\":[{\"op\":\"put\",\"key\":\"f\",\"value\":\"n\"}]}",
	    "TXN {\"compare\":[{\"key\":\"a\",\"revision\":1}],\"success\":[{\"op\":\"put\","
	    "\"key\":\"t1\",\"value\":\"s\"}],\"failure\":[{\"op\":\"get\",\"key\":\"a\"},{\"op\":"
	    "\"put\",\"key\":\"f\",\"value\":\"n\"},{\"op\":\"delete\",\"key\":\"zz\"}]}",
	    "DELETE-IF 9 a", /* failed */
	    "DELETE-IF 3 a", /* held */
	    "DELETE nothere",
	    "CLEAR",
	    "PUT-ABSENT a again", /* held: after the CLEAR */
	    "TXN {not json",
	    "BOGUS",
	};
	enum { N = sizeof(texts) / sizeof(texts[0]) + 1 };
	struct engine_entry en[N];
	struct engine_result live[N], re;
	struct engine_list_result lst;
	struct engine *e = open_engine(NULL);

	for (size_t i = 0; i + 1 < N; i++)
		en[i] = (struct engine_entry){i + 1, 1, ENGINE_ENTRY_COMMAND, texts[i],
					      strlen(texts[i])};
	en[N - 1] = (struct engine_entry){N, 1, ENGINE_ENTRY_OTHER, NULL, 0};
	/* two batches: the conditions see earlier batches and their own */
	ck_assert_int_eq(engine_apply_results(e, en, 5, live, NULL), 0);
	ck_assert_int_eq(engine_apply_results(e, en + 5, N - 5, live + 5, NULL), 0);
	ck_assert_int_eq(live[2].outcome, ENGINE_OUTCOME_APPLIED);
	ck_assert_int_eq(live[3].outcome, ENGINE_OUTCOME_FAILED);
	ck_assert(live[6].succeeded);
	ck_assert(!live[7].succeeded);
	ck_assert_uint_eq(live[7].n_changes, 2);
	ck_assert_int_eq(live[8].outcome, ENGINE_OUTCOME_FAILED);
	ck_assert_int_eq(live[9].outcome, ENGINE_OUTCOME_APPLIED);
	ck_assert_int_eq(live[13].outcome, ENGINE_OUTCOME_MALFORMED);
	engine_close(e);

	e = open_engine(NULL);
	for (size_t i = 0; i < N; i++) {
		ck_assert_int_eq(engine_entry_changes(e, &en[i], &re), 0);
		assert_same_result(&live[i], &re);
		engine_results_clear(&re, 1);
	}
	/* the store is unchanged, and no outcome key is listed */
	ck_assert_int_eq(engine_list(e, NULL, 0, NULL, 0, 100, false, &lst), 0);
	ck_assert_uint_eq(lst.n_items, 1);
	ck_assert_mem_eq(lst.items[0].key, "a", 1);
	ck_assert_uint_eq(lst.items[0].revision, 13);
	engine_list_result_clear(&lst);

	/* pruned below 8: the conditional entries before are gone, plain
	 * ones still rebuild, later ones are kept */
	ck_assert_int_eq(engine_outcomes_prune(e, 8, NULL), 0);
	ck_assert_int_eq(engine_entry_changes(e, &en[2], &re), KVD_ENOTFOUND);
	ck_assert_int_eq(engine_entry_changes(e, &en[6], &re), KVD_ENOTFOUND);
	ck_assert_int_eq(engine_entry_changes(e, &en[0], &re), 0);
	assert_same_result(&live[0], &re);
	engine_results_clear(&re, 1);
	for (size_t i = 7; i < N; i++) {
		ck_assert_int_eq(engine_entry_changes(e, &en[i], &re), 0);
		assert_same_result(&live[i], &re);
		engine_results_clear(&re, 1);
	}
	engine_results_clear(live, N);
	engine_close(e);
}
END_TEST

static Suite *engine_suite(void)
{
	Suite *s = suite_create("engine");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_engine_open_fresh);
	tcase_add_test(tc, test_engine_apply_put_get_delete);
	tcase_add_test(tc, test_engine_apply_persists_index_across_reopen);
	tcase_add_test(tc, test_engine_apply_rejects_non_increasing_index);
	tcase_add_test(tc, test_engine_apply_skips_malformed_command);
	tcase_add_test(tc, test_engine_apply_stores_config);
	tcase_add_test(tc, test_engine_apply_batch_atomic_when_killed);
	tcase_add_test(tc, test_engine_clear_hides_all_keys);
	tcase_add_test(tc, test_engine_clear_deleter_removes_old_generation);
	tcase_add_test(tc, test_engine_clear_deleter_survives_reopen);
	tcase_add_test(tc, test_engine_iter_current_generation_sorted);
	tcase_add_test(tc, test_engine_snapshot_begin_view_meta);
	tcase_add_test(tc, test_engine_open_locked_by_other_handle);
	tcase_add_test(tc, test_engine_open_rejects_foreign_leveldb);
	tcase_add_test(tc, test_engine_swap_replaces_database);
	tcase_add_test(tc, test_engine_open_rolls_back_interrupted_swap);
	tcase_add_test(tc, test_engine_apply_disk_full_is_enospc);
	tcase_add_test(tc, test_engine_revision_is_index_of_last_write);
	tcase_add_test(tc, test_engine_open_upgrades_v1_directory);
	tcase_add_test(tc, test_engine_conditional_writes);
	tcase_add_test(tc, test_engine_conditions_see_same_batch);
	tcase_add_test(tc, test_engine_list_prefix_after_limit);
	tcase_add_test(tc, test_engine_txn_success_and_failure);
	tcase_add_test(tc, test_engine_txn_without_results_same_state);
	tcase_add_test(tc, test_engine_apply_mutated_commands_fuzz);
	tcase_add_test(tc, test_engine_list_consistent_while_applying);
	tcase_add_test(tc, test_engine_list_pages_through_many_keys);
	tcase_add_test(tc, test_engine_entry_changes_rebuilds_live_results);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(engine_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
