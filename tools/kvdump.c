/*
 * kvdump: writes a stopped node's key-value state to a file or stdout
 * (API.md §8), as JSON Lines (`{"key": .., "value": .., "revision": ..}` per
 * line, keys in stored bytewise order) or as the compressed snapshot stream of
 * engine/snapshot.h (the format kvload and snapshot installs read).
 *
 * Locking: the Raft log store is opened first, which takes the exclusive
 * flock on D/raft/LOCK that a running node holds, then LevelDB (its own
 * lock). A running node's directory is therefore refused, and no node can
 * start on the directory while the dump runs. The background deleter of the
 * engine is not started, so the dump changes nothing a node would not redo.
 *
 * What is dumped: what the node would serve after a restart. That is the
 * state machine (LevelDB at its applied index) plus the log entries after
 * the applied index, replayed in memory (an overlay of PUT/DELETE/CLEAR, and
 * of conditional commands and transactions decided as the applier does,
 * merged with LevelDB's records in key order), when they are known to be
 * committed: the configuration is a single voter, whose every durable entry
 * is committed. Replay stops before a CONFIG entry that makes the cluster
 * larger. In a multi-member cluster the tail's commit status is unknown
 * offline, so it is left out, and one note on stderr says how many entries.
 * If the newest snapshot file is ahead of LevelDB (a node stopped in the
 * middle of installing a snapshot), the snapshot file is dumped instead,
 * since that is what the node would restore on start. With replay and
 * --format snapshot, the merged records are first written to a temporary
 * LevelDB (engine_builder, under $TMPDIR) at the last replayed index, whose
 * view gives the stream.
 *
 * Output to -o FILE goes to FILE.tmp, is fsynced, renamed to FILE and the
 * directory fsynced, so FILE is either complete or absent.
 *
 * Exit status: 0 on success, 1 on any error (one line on stderr), 2 for bad
 * flags.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "api/common/fileutil.h"
#include "api/common/snapfile.h"
#include "engine/command.h"
#include "engine/engine.h"
#include "engine/snapshot.h"
#include "kvd/errors.h"
#include "raft/log_store.h"
#include "raft/raft.h"

#define OUT_BUF_SIZE	 ((size_t)1 << 16)  /* bytes */
#define READ_CHUNK_BYTES ((size_t)64 << 20) /* bytes of log entries per read */

static const char USAGE[] = "usage: kvdump --data-dir D [--format jsonl|snapshot] [-o FILE]\n";

struct dump_args {
	const char *data_dir;
	bool snapshot_format;
	const char *out_path; /* NULL: stdout */
};

/* Buffered writer on an fd. */
struct out {
	int fd;
	char buf[OUT_BUF_SIZE];
	size_t used; /* bytes */
	const char *name;
};

static void fail_line(const char *fmt, ...)
{
	va_list ap;
	fputs("kvdump: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static const struct option DUMP_OPTIONS[] = {
    {"data-dir", required_argument, NULL, 'd'},
    {"format", required_argument, NULL, 'f'},
    {"output", required_argument, NULL, 'o'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Returns 0, or 2 after printing the error line. Flags are read with
 * getopt_long, as in every kvd program; it stops at the first argument that
 * is not a flag, which is refused. */
static int parse_args(int argc, char **argv, struct dump_args *a)
{
	const char *format = "jsonl";
	int c;

	memset(a, 0, sizeof(*a));
	opterr = 0; /* one line of ours, not getopt's */
	while ((c = getopt_long(argc, argv, "+:ho:", DUMP_OPTIONS, NULL)) != -1) {
		switch (c) {
		case 'h': fputs(USAGE, stdout); exit(0);
		case 'd': a->data_dir = optarg; break;
		case 'f': format = optarg; break;
		case 'o': a->out_path = optarg; break;
		case ':': fail_line("flag %s needs a value", argv[optind - 1]); return 2;
		default:
			fail_line("unknown flag '%.100s' (see --help)", argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fail_line("unknown flag '%.100s' (see --help)", argv[optind]);
		return 2;
	}
	if (a->data_dir == NULL || a->data_dir[0] == '\0') {
		fail_line("--data-dir is required");
		return 2;
	}
	if (a->out_path != NULL && a->out_path[0] == '\0') {
		fail_line("-o needs a file name");
		return 2;
	}
	if (strcmp(format, "jsonl") == 0) {
		a->snapshot_format = false;
	} else if (strcmp(format, "snapshot") == 0) {
		a->snapshot_format = true;
	} else {
		fail_line("bad --format '%.100s' (jsonl or snapshot)", format);
		return 2;
	}
	return 0;
}

static int out_flush(struct out *o)
{
	size_t done = 0;
	while (done < o->used) {
		ssize_t n = write(o->fd, o->buf + done, o->used - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			fail_line("cannot write %s: %s", o->name, strerror(e));
			return e == ENOSPC ? KVD_ENOSPC : KVD_EIO;
		}
		done += (size_t)n;
	}
	o->used = 0;
	return 0;
}

static int out_write(struct out *o, const char *data, size_t len)
{
	int rv;
	while (len > 0) {
		size_t room = sizeof(o->buf) - o->used;
		size_t n = len < room ? len : room;
		memcpy(o->buf + o->used, data, n);
		o->used += n;
		data += n;
		len -= n;
		if (o->used == sizeof(o->buf) && (rv = out_flush(o)) != 0)
			return rv;
	}
	return 0;
}

/* One record as a JSON line. Values (and keys) must be valid UTF-8. */
static int write_record_json(struct out *o, const struct engine_record *rec)
{
	json_t *obj = json_object();
	json_t *k = json_stringn(rec->key, rec->key_len);
	json_t *v = json_stringn(rec->value, rec->value_len);
	char *line = NULL;
	int rv = KVD_ENOMEM;

	if (obj == NULL || k == NULL || v == NULL) {
		if (obj != NULL && k != NULL && v == NULL)
			fail_line(
			    "the value of key '%.*s' is not UTF-8 text; use --format snapshot",
			    (int)(rec->key_len > 200 ? 200 : rec->key_len), rec->key);
		else
			fail_line("out of memory");
		json_decref(k);
		json_decref(v);
		goto out;
	}
	json_object_set_new(obj, "key", k);
	json_object_set_new(obj, "value", v);
	json_object_set_new(obj, "revision", json_integer((json_int_t)rec->revision));
	line = json_dumps(obj, 0);
	if (line == NULL) {
		fail_line("out of memory");
		goto out;
	}
	rv = out_write(o, line, strlen(line));
	if (rv == 0)
		rv = out_write(o, "\n", 1);
out:
	free(line);
	json_decref(obj);
	return rv;
}

/* ---- replay of the log tail ------------------------------------------------- */

/* One mutation of the tail; key and value are malloc'd copies. */
struct overlay_rec {
	char *key;
	size_t key_len;	  /* bytes */
	char *value;	  /* NULL: deleted */
	size_t value_len; /* bytes */
	uint64_t seq;	  /* position in the log, for a stable sort */
};

/* The replayed tail: after sorting, one record per key (the last write). */
struct overlay {
	struct overlay_rec *recs;
	size_t n, cap;
	bool cleared;	      /* a CLEAR: LevelDB's records are all gone */
	uint64_t entries;     /* entries replayed */
	uint64_t index, term; /* last replayed entry */
	void *config;	      /* configuration in force (malloc'd) */
	size_t config_len;    /* bytes */
};

static void overlay_clear_recs(struct overlay *ov)
{
	for (size_t i = 0; i < ov->n; i++) {
		free(ov->recs[i].key);
		free(ov->recs[i].value);
	}
	ov->n = 0;
}

static void overlay_free(struct overlay *ov)
{
	overlay_clear_recs(ov);
	free(ov->recs);
	free(ov->config);
	memset(ov, 0, sizeof(*ov));
}

static int overlay_add(struct overlay *ov, const struct engine_command *cmd, uint64_t seq)
{
	struct overlay_rec *r;

	if (ov->n == ov->cap) {
		size_t cap = ov->cap ? ov->cap * 2 : 1024;
		struct overlay_rec *recs = realloc(ov->recs, cap * sizeof(*recs));
		if (recs == NULL)
			return KVD_ENOMEM;
		ov->recs = recs;
		ov->cap = cap;
	}
	r = &ov->recs[ov->n];
	memset(r, 0, sizeof(*r));
	r->key = malloc(cmd->key_len);
	if (r->key == NULL)
		return KVD_ENOMEM;
	memcpy(r->key, cmd->key, cmd->key_len);
	r->key_len = cmd->key_len;
	if (cmd->type == ENGINE_COMMAND_PUT || cmd->type == ENGINE_COMMAND_PUT_IF ||
	    cmd->type == ENGINE_COMMAND_PUT_ABSENT) {
		r->value = malloc(cmd->value_len > 0 ? cmd->value_len : 1);
		if (r->value == NULL) {
			free(r->key);
			return KVD_ENOMEM;
		}
		memcpy(r->value, cmd->value, cmd->value_len);
		r->value_len = cmd->value_len;
	}
	r->seq = seq;
	ov->n++;
	return 0;
}

/* The revision of key (0: absent) after the replayed entries so far (the
 * overlay, in log order, over the state machine unless a CLEAR was
 * replayed), as engine_apply_results() sees it. */
static int overlay_rev(struct engine *engine, const struct overlay *ov, const char *key,
		       size_t key_len, uint64_t *rev)
{
	int rv = 0;

	*rev = 0;
	for (size_t i = ov->n; i > 0; i--) {
		const struct overlay_rec *r = &ov->recs[i - 1];
		if (r->key_len == key_len && memcmp(r->key, key, key_len) == 0) {
			*rev = r->value != NULL ? r->seq : 0;
			return 0;
		}
	}
	if (!ov->cleared) {
		void *v = NULL;
		size_t n = 0;
		rv = engine_get_rev(engine, key, key_len, &v, &n, rev);
		free(v);
		if (rv == KVD_ENOTFOUND) {
			*rev = 0;
			rv = 0;
		}
	}
	return rv;
}

/* Replays one conditional command or transaction into the overlay. */
static int overlay_conditional(struct engine *engine, struct overlay *ov,
			       const struct engine_command *cmd, uint64_t index)
{
	struct engine_txn txn;
	uint64_t rev = 0;
	bool held = true;
	int rv;

	if (cmd->type != ENGINE_COMMAND_TXN) {
		rv = overlay_rev(engine, ov, cmd->key, cmd->key_len, &rev);
		held = cmd->type == ENGINE_COMMAND_PUT_ABSENT ? rev == 0
							      : rev != 0 && rev == cmd->revision;
		return rv == 0 && held ? overlay_add(ov, cmd, index) : rv;
	}
	if (engine_txn_parse(cmd->value, cmd->value_len, 0, &txn, NULL) != 0)
		return 0; /* malformed: skipped, as the node does */
	rv = 0;
	for (size_t i = 0; i < txn.n_cmp && held && rv == 0; i++) {
		rv = overlay_rev(engine, ov, txn.cmp[i].key, txn.cmp[i].key_len, &rev);
		held = rev == txn.cmp[i].revision;
	}
	for (size_t i = 0; rv == 0 && i < txn.n_ops[held ? 0 : 1]; i++) {
		const struct engine_txn_op *op = &txn.ops[held ? 0 : 1][i];
		struct engine_command w = {
		    .type = op->op == ENGINE_TXN_PUT ? ENGINE_COMMAND_PUT : ENGINE_COMMAND_DELETE,
		    .key = op->key,
		    .key_len = op->key_len,
		    .value = op->value,
		    .value_len = op->value_len,
		};
		if (op->op != ENGINE_TXN_GET)
			rv = overlay_add(ov, &w, index);
	}
	engine_txn_free(&txn);
	return rv;
}

static int key_cmp(const char *a, size_t a_len, const char *b, size_t b_len)
{
	int c = memcmp(a, b, a_len < b_len ? a_len : b_len);
	if (c != 0)
		return c;
	return a_len < b_len ? -1 : a_len > b_len;
}

static int overlay_rec_cmp(const void *x, const void *y)
{
	const struct overlay_rec *a = x, *b = y;
	int c = key_cmp(a->key, a->key_len, b->key, b->key_len);
	if (c != 0)
		return c;
	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Sorts by key and keeps the last write of each key. */
static void overlay_finish(struct overlay *ov)
{
	size_t out = 0;

	qsort(ov->recs, ov->n, sizeof(*ov->recs), overlay_rec_cmp);
	for (size_t i = 0; i < ov->n; i++) {
		bool superseded =
		    i + 1 < ov->n && key_cmp(ov->recs[i].key, ov->recs[i].key_len,
					     ov->recs[i + 1].key, ov->recs[i + 1].key_len) == 0;
		if (superseded) {
			free(ov->recs[i].key);
			free(ov->recs[i].value);
			continue;
		}
		ov->recs[out++] = ov->recs[i];
	}
	ov->n = out;
}

static bool config_is_lone_voter(const void *buf, size_t len)
{
	struct raft_config c;
	return buf != NULL && raft_config_decode(buf, len, &c) == 0 && c.n == 1 && c.n_old == 0 &&
	       c.servers[0].role == RAFT_VOTER;
}

/*
 * Replays the entries after applied into *ov while the configuration in force
 * is a single voter. *ov starts zeroed; ov->entries says how many were
 * replayed, *left how many entries of the tail were left out.
 */
static int overlay_replay(struct raft_log_store *store, struct engine *engine, uint64_t applied,
			  uint64_t applied_term, struct overlay *ov, uint64_t *left)
{
	raft_index last = raft_log_store_last_index(store);
	raft_index next = applied + 1;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	bool lone;
	int rv = 0;

	*left = last > applied ? last - applied : 0;
	ov->index = applied;
	ov->term = applied_term;
	if (last <= applied)
		return 0;
	rv = engine_config_get(engine, &ov->config, &ov->config_len);
	if (rv == KVD_ENOTFOUND && applied == 0) {
		/* Nothing applied yet: the log must start with the lone
		 * bootstrap configuration (checked at index 1 below). */
		lone = true;
		rv = 0;
	} else if (rv == KVD_ENOTFOUND) {
		return 0; /* no configuration known: commit status unknown */
	} else if (rv != 0) {
		fail_line("cannot read the configuration: %s", kvd_strerror(rv));
		return rv;
	} else {
		lone = config_is_lone_voter(ov->config, ov->config_len);
	}
	while (lone && next <= last) {
		struct raft_entry *entries = NULL;
		size_t n = 0;
		rv = raft_log_store_read(store, next, last, READ_CHUNK_BYTES, &entries, &n, errmsg);
		if (rv == KVD_ECOMPACTED)
			return 0; /* the log no longer holds the tail: leave it out */
		if (rv != 0) {
			fail_line("cannot read the log: %s", errmsg);
			return rv;
		}
		for (size_t i = 0; i < n && lone && rv == 0; i++) {
			const struct raft_entry *e = &entries[i];
			struct engine_command cmd;
			if (ov->config == NULL && e->type != RAFT_ENTRY_CONFIG) {
				lone = false; /* no configuration in force: unknown */
				break;
			}
			if (e->type == RAFT_ENTRY_CONFIG) {
				lone = config_is_lone_voter(e->data, e->len);
				if (!lone)
					break; /* later entries need a majority of several */
				void *copy = malloc(e->len);
				if (copy == NULL) {
					rv = KVD_ENOMEM;
					break;
				}
				memcpy(copy, e->data, e->len);
				free(ov->config);
				ov->config = copy;
				ov->config_len = e->len;
			} else if (e->type == RAFT_ENTRY_COMMAND &&
				   engine_command_parse(e->data, e->len, &cmd) == 0) {
				/* a malformed command is skipped, as the node does */
				if (cmd.type == ENGINE_COMMAND_PUT_IF ||
				    cmd.type == ENGINE_COMMAND_PUT_ABSENT ||
				    cmd.type == ENGINE_COMMAND_DELETE_IF ||
				    cmd.type == ENGINE_COMMAND_TXN) {
					rv = overlay_conditional(engine, ov, &cmd, e->index);
					if (rv != 0 && rv != KVD_ENOMEM)
						fail_line("cannot read the state machine: %s",
							  kvd_strerror(rv));
				} else if (cmd.type == ENGINE_COMMAND_CLEAR) {
					overlay_clear_recs(ov);
					ov->cleared = true;
				} else {
					rv = overlay_add(ov, &cmd, e->index);
				}
			}
			if (rv == 0) {
				ov->index = e->index;
				ov->term = e->term;
				ov->entries++;
				next = e->index + 1;
			}
		}
		free(entries);
		if (rv == KVD_ENOMEM)
			fail_line("out of memory replaying the log");
		if (rv != 0)
			return rv;
	}
	overlay_finish(ov);
	*left = last - ov->index;
	return 0;
}

/* Receives the merged records in key order. */
typedef int (*emit_cb)(void *data, const struct engine_record *rec);

static int emit_json_cb(void *data, const struct engine_record *rec)
{
	return write_record_json(data, rec);
}

static int emit_builder_cb(void *data, const struct engine_record *rec)
{
	char errmsg[KVD_ERRMSG_SIZE] = "";
	int rv = engine_builder_put(data, rec->key, rec->key_len, rec->value, rec->value_len,
				    rec->revision, errmsg);
	if (rv != 0)
		fail_line("cannot write the temporary database: %s", errmsg);
	return rv;
}

/* LevelDB's records (unless a CLEAR was replayed) merged with the overlay,
 * the overlay winning on equal keys; deleted keys are left out. */
static int merge_emit(struct engine *engine, const struct overlay *ov, emit_cb emit, void *data)
{
	struct engine_iter *it = NULL;
	struct engine_record base, rec;
	bool base_end = true;
	size_t i = 0;
	int rv = 0;

	if (!ov->cleared) {
		rv = engine_iter_open(engine, &it);
		if (rv == 0)
			rv = engine_iter_next(it, &base, &base_end);
		if (rv != 0) {
			fail_line("cannot read the state machine: %s", kvd_strerror(rv));
			goto out;
		}
	}
	while (!base_end || i < ov->n) {
		const struct overlay_rec *r = i < ov->n ? &ov->recs[i] : NULL;
		int c = base_end    ? 1
			: r == NULL ? -1
				    : key_cmp(base.key, base.key_len, r->key, r->key_len);
		if (c < 0) {
			rv = emit(data, &base);
		} else if (r->value != NULL) {
			rec.key = r->key;
			rec.key_len = r->key_len;
			rec.value = r->value;
			rec.value_len = r->value_len;
			rec.revision = r->seq;
			rv = emit(data, &rec);
		}
		if (rv != 0)
			goto out;
		if (c >= 0)
			i++;
		if (c <= 0 && (rv = engine_iter_next(it, &base, &base_end)) != 0) {
			fail_line("cannot read the state machine: %s", kvd_strerror(rv));
			goto out;
		}
	}
out:
	engine_iter_close(it);
	return rv;
}

/* The merged state as a snapshot stream: built into a temporary LevelDB at
 * the last replayed index, then written from its view. */
static int dump_merged_snapshot(struct out *o, struct engine *engine, const struct overlay *ov)
{
	const char *tmp = getenv("TMPDIR");
	char dir[PATH_MAX], db[PATH_MAX];
	char errmsg[KVD_ERRMSG_SIZE] = "";
	struct engine_builder *b = NULL;
	struct engine *copy = NULL;
	struct engine_options eopts = {.deleter_disabled = true};
	struct engine_view *view = NULL;
	int rv;

	snprintf(dir, sizeof(dir), "%.3000s/kvdump-XXXXXX", tmp != NULL && tmp[0] ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL) {
		fail_line("cannot create a temporary directory %s: %s", dir, strerror(errno));
		return KVD_EIO;
	}
	snprintf(db, sizeof(db), "%.3000s/db", dir);
	rv = engine_builder_create(db, &b, errmsg);
	if (rv != 0) {
		fail_line("cannot create the temporary database: %s", errmsg);
		goto out;
	}
	rv = merge_emit(engine, ov, emit_builder_cb, b);
	if (rv != 0) {
		engine_builder_abort(b);
		goto out;
	}
	rv = engine_builder_finish(b, ov->index, ov->term, ov->config, ov->config_len, errmsg);
	if (rv == 0)
		rv = engine_open(db, &eopts, &copy, errmsg);
	if (rv != 0) {
		fail_line("cannot write the temporary database: %s", errmsg);
		goto out;
	}
	rv = engine_snapshot_begin(copy, &view);
	if (rv == 0) {
		rv = engine_view_write_fd(view, o->fd, NULL, errmsg);
		if (rv != 0)
			fail_line("cannot write %s: %s", o->name, errmsg);
		engine_view_release(view);
	} else {
		fail_line("cannot read the temporary database: %s", kvd_strerror(rv));
	}
	engine_close(copy);
out:
	kvd_remove_tree(dir);
	return rv;
}

/* Newest snapshot file in dir (by index) into path, or KVD_ENOTFOUND. */
static int newest_snapshot(const char *dir, char *path, uint64_t *index_out)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	uint64_t best = 0;
	bool found = false;

	if (d == NULL)
		return KVD_ENOTFOUND;
	while ((de = readdir(d)) != NULL) {
		uint64_t i, t;
		if (!kvd_snapfile_parse(de->d_name, &i, &t))
			continue;
		if (!found || i > best) {
			best = i;
			found = true;
			snprintf(path, PATH_MAX, "%.3900s/%.255s", dir, de->d_name);
		}
	}
	closedir(d);
	if (!found)
		return KVD_ENOTFOUND;
	*index_out = best;
	return 0;
}

/* Copies the file at path to o (a snapshot dumped as it is). */
static int copy_file(struct out *o, const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int rv = 0;

	if (fd < 0) {
		fail_line("cannot open %s: %s", path, strerror(errno));
		return KVD_EIO;
	}
	for (;;) {
		char buf[OUT_BUF_SIZE];
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fail_line("cannot read %s: %s", path, strerror(errno));
			rv = KVD_EIO;
			break;
		}
		if (n == 0)
			break;
		if ((rv = out_write(o, buf, (size_t)n)) != 0)
			break;
	}
	close(fd);
	return rv;
}

/* JSON Lines from a snapshot file. */
static int dump_snapshot_json(struct out *o, const char *path)
{
	struct engine_snapshot_reader *r = NULL;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	int rv = engine_snapshot_reader_open(path, &r, errmsg);

	if (rv != 0) {
		fail_line("cannot read snapshot: %s", errmsg);
		return rv;
	}
	for (;;) {
		struct engine_record rec;
		bool end = false;
		rv = engine_snapshot_reader_next(r, &rec, &end, errmsg);
		if (rv != 0) {
			fail_line("cannot read snapshot: %s", errmsg);
			break;
		}
		if (end)
			break;
		if ((rv = write_record_json(o, &rec)) != 0)
			break;
	}
	engine_snapshot_reader_close(r);
	return rv;
}

/* JSON Lines or snapshot stream from the live database's view. */
static int dump_engine(struct out *o, struct engine *engine, bool snapshot_format)
{
	struct engine_view *view = NULL;
	struct engine_iter *it = NULL;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	int rv = engine_snapshot_begin(engine, &view);

	if (rv != 0) {
		fail_line("cannot read the state machine: %s", kvd_strerror(rv));
		return rv;
	}
	if (snapshot_format) {
		rv = engine_view_write_fd(view, o->fd, NULL, errmsg);
		if (rv != 0)
			fail_line("cannot write %s: %s", o->name, errmsg);
		goto out_view;
	}
	rv = engine_view_iter_open(view, &it);
	if (rv != 0) {
		fail_line("cannot iterate the state machine: %s", kvd_strerror(rv));
		goto out_view;
	}
	for (;;) {
		struct engine_record rec;
		bool end = false;
		rv = engine_iter_next(it, &rec, &end);
		if (rv != 0) {
			fail_line("cannot read the state machine: %s", kvd_strerror(rv));
			break;
		}
		if (end)
			break;
		if ((rv = write_record_json(o, &rec)) != 0)
			break;
	}
	engine_iter_close(it);
out_view:
	engine_view_release(view);
	return rv;
}

/* Checks that dir/sub is a directory; prints the error. */
static int require_dir(const char *dir, const char *sub)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%.4000s%s%s", dir, sub[0] ? "/" : "", sub);
	if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
		fail_line("%s is not a kvd data directory (no %s)", dir, path);
		return KVD_ENOTFOUND;
	}
	return 0;
}

static int run(const struct dump_args *a)
{
	struct raft_log_store *store = NULL;
	struct engine *engine = NULL;
	struct engine_options eopts = {.deleter_disabled = true};
	struct out *o = NULL;
	char raft_dir[PATH_MAX], kv_dir[PATH_MAX], snap_dir[PATH_MAX], snap_path[PATH_MAX];
	char tmp_path[PATH_MAX];
	char errmsg[KVD_ERRMSG_SIZE] = "";
	uint64_t applied, applied_term, snap_index = 0, left = 0;
	struct overlay ov;
	bool from_snapshot = false;
	int rv;

	memset(&ov, 0, sizeof(ov));
	snprintf(raft_dir, sizeof(raft_dir), "%.4000s/raft", a->data_dir);
	snprintf(kv_dir, sizeof(kv_dir), "%.4000s/kv", a->data_dir);
	snprintf(tmp_path, sizeof(tmp_path), "%.4000s.old", kv_dir);
	/* D/kv may be missing only after a crash inside engine_swap(), which
	 * left D/kv.old for engine_open() to rename back. */
	if ((rv = require_dir(a->data_dir, "")) != 0 ||
	    (rv = require_dir(a->data_dir, "raft")) != 0 ||
	    (access(tmp_path, F_OK) != 0 && (rv = require_dir(a->data_dir, "kv")) != 0))
		return rv;
	snprintf(snap_dir, sizeof(snap_dir), "%.4000s/snapshots", a->data_dir);

	rv = raft_log_store_open(raft_dir, NULL, &store, errmsg);
	if (rv == KVD_ELOCKED) {
		fail_line("%s is held by a running node (lock on %s/LOCK); stop it first",
			  a->data_dir, raft_dir);
		return rv;
	}
	if (rv != 0) {
		fail_line("cannot open the log: %s", errmsg);
		return rv;
	}
	rv = engine_open(kv_dir, &eopts, &engine, errmsg);
	if (rv != 0) {
		if (rv == KVD_ELOCKED)
			fail_line("%s is held by another process (LevelDB lock)", kv_dir);
		else
			fail_line("cannot open the state machine: %s", errmsg);
		goto out_store;
	}
	engine_applied(engine, &applied, &applied_term);
	if (newest_snapshot(snap_dir, snap_path, &snap_index) == 0 && snap_index > applied)
		from_snapshot = true;
	if (from_snapshot) {
		left = raft_log_store_last_index(store) > snap_index
			   ? raft_log_store_last_index(store) - snap_index
			   : 0;
	} else {
		rv = overlay_replay(store, engine, applied, applied_term, &ov, &left);
		if (rv != 0)
			goto out_engine;
	}
	if (left > 0)
		fprintf(stderr,
			"kvdump: note: %" PRIu64 " log entries after index %" PRIu64
			" are not included (their commit is not known offline; start and stop "
			"the node to apply them)\n",
			left, from_snapshot ? snap_index : ov.index);

	o = calloc(1, sizeof(*o));
	if (o == NULL) {
		fail_line("out of memory");
		rv = KVD_ENOMEM;
		goto out_engine;
	}
	o->fd = STDOUT_FILENO;
	o->name = "stdout";
	if (a->out_path != NULL) {
		snprintf(tmp_path, sizeof(tmp_path), "%.4000s.tmp", a->out_path);
		o->fd = open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		o->name = tmp_path;
		if (o->fd < 0) {
			fail_line("cannot create %s: %s", tmp_path, strerror(errno));
			rv = KVD_EIO;
			goto out_free;
		}
	}
	if (from_snapshot && a->snapshot_format)
		rv = copy_file(o, snap_path);
	else if (from_snapshot)
		rv = dump_snapshot_json(o, snap_path);
	else if (ov.entries == 0)
		rv = dump_engine(o, engine, a->snapshot_format);
	else if (a->snapshot_format)
		rv = dump_merged_snapshot(o, engine, &ov);
	else
		rv = merge_emit(engine, &ov, emit_json_cb, o);
	if (rv == 0)
		rv = out_flush(o);
	if (a->out_path == NULL)
		goto out_free;
	if (rv == 0 && fsync(o->fd) != 0) {
		fail_line("cannot fsync %s: %s", tmp_path, strerror(errno));
		rv = errno == ENOSPC ? KVD_ENOSPC : KVD_EIO;
	}
	if (close(o->fd) != 0 && rv == 0) {
		fail_line("cannot close %s: %s", tmp_path, strerror(errno));
		rv = KVD_EIO;
	}
	if (rv == 0 && rename(tmp_path, a->out_path) != 0) {
		fail_line("cannot rename %s to %s: %s", tmp_path, a->out_path, strerror(errno));
		rv = KVD_EIO;
	}
	if (rv == 0 && kvd_fsync_parent(a->out_path) != 0) {
		fail_line("cannot fsync the directory of %s", a->out_path);
		rv = KVD_EIO;
	}
	if (rv != 0)
		unlink(tmp_path);
out_free:
	free(o);
out_engine:
	overlay_free(&ov);
	engine_close(engine);
out_store:
	raft_log_store_close(store);
	return rv;
}

int main(int argc, char **argv)
{
	struct dump_args a;
	int rv = parse_args(argc, argv, &a);

	if (rv != 0)
		return rv;
	signal(SIGPIPE, SIG_IGN);
	return run(&a) == 0 ? 0 : 1;
}
