/*
 * kvdump: writes a stopped node's key-value state to a file or stdout
 * (API.md §8), as JSON Lines (`{"key": .., "value": ..}` per line, keys in
 * stored bytewise order) or as the compressed snapshot stream of
 * engine/snapshot.h (the format kvload and snapshot installs read).
 *
 * Locking: the Raft log store is opened first, which takes the exclusive
 * flock on D/raft/LOCK that a running node holds, then LevelDB (its own
 * lock). A running node's directory is therefore refused, and no node can
 * start on the directory while the dump runs. The background deleter of the
 * engine is not started, so the dump changes nothing a node would not redo.
 *
 * What is dumped: the state machine as applied (LevelDB at its applied
 * index). If the newest snapshot file is ahead of LevelDB (a node stopped
 * in the middle of installing a snapshot), the snapshot file is dumped
 * instead, since that is what the node would restore on start. Log entries
 * after the applied index are not replayed (offline, their commit status is
 * unknown); when there are any, one note on stderr says how many.
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
#include <inttypes.h>
#include <libgen.h>
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

#include "engine/engine.h"
#include "engine/snapshot.h"
#include "kvd/errors.h"
#include "raft/log_store.h"

#define OUT_BUF_SIZE ((size_t)1 << 16) /* bytes */

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

/* Returns 0, or 2 after printing the error line. */
static int parse_args(int argc, char **argv, struct dump_args *a)
{
	const char *format = "jsonl";

	memset(a, 0, sizeof(*a));
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *val = NULL;
		const char *eq = strchr(arg, '=');
		size_t name_len =
		    eq != NULL && strncmp(arg, "--", 2) == 0 ? (size_t)(eq - arg) : strlen(arg);
		char name[64];

		if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
			fputs(USAGE, stdout);
			exit(0);
		}
		if (name_len >= sizeof(name)) {
			fail_line("unknown flag '%.100s' (see --help)", arg);
			return 2;
		}
		memcpy(name, arg, name_len);
		name[name_len] = '\0';
		if (strcmp(name, "--data-dir") != 0 && strcmp(name, "--format") != 0 &&
		    strcmp(name, "-o") != 0 && strcmp(name, "--output") != 0) {
			fail_line("unknown flag '%.100s' (see --help)", arg);
			return 2;
		}
		if (eq != NULL && name_len != strlen(arg))
			val = eq + 1;
		else if (i + 1 < argc)
			val = argv[++i];
		else {
			fail_line("flag %s needs a value", name);
			return 2;
		}
		if (strcmp(name, "--data-dir") == 0)
			a->data_dir = val;
		else if (strcmp(name, "--format") == 0)
			format = val;
		else
			a->out_path = val;
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
		unsigned long long i, t;
		int used = 0;
		if (sscanf(de->d_name, "snapshot-%llu-%llu.lz4%n", &i, &t, &used) != 2 ||
		    de->d_name[used] != '\0')
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

static int fsync_parent(const char *path)
{
	char copy[PATH_MAX];
	int fd, rv = 0;

	snprintf(copy, sizeof(copy), "%s", path);
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return KVD_EIO;
	if (fsync(fd) != 0)
		rv = KVD_EIO;
	close(fd);
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
	uint64_t applied, applied_term, snap_index = 0;
	bool from_snapshot = false;
	int rv;

	if ((rv = require_dir(a->data_dir, "")) != 0 ||
	    (rv = require_dir(a->data_dir, "raft")) != 0 ||
	    (rv = require_dir(a->data_dir, "kv")) != 0)
		return rv;
	snprintf(raft_dir, sizeof(raft_dir), "%.4000s/raft", a->data_dir);
	snprintf(kv_dir, sizeof(kv_dir), "%.4000s/kv", a->data_dir);
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
	if (raft_log_store_last_index(store) > (from_snapshot ? snap_index : applied))
		fprintf(stderr,
			"kvdump: note: %" PRIu64 " log entries after the applied index %" PRIu64
			" are not included (start and stop the node to apply them)\n",
			raft_log_store_last_index(store) - (from_snapshot ? snap_index : applied),
			from_snapshot ? snap_index : applied);

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
	else
		rv = dump_engine(o, engine, a->snapshot_format);
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
	if (rv == 0 && fsync_parent(a->out_path) != 0) {
		fail_line("cannot fsync the directory of %s", a->out_path);
		rv = KVD_EIO;
	}
	if (rv != 0)
		unlink(tmp_path);
out_free:
	free(o);
out_engine:
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
