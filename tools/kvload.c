/*
 * kvload: builds a fresh data directory from a dump (API.md §8), so that a
 * node started on it as a single-node cluster serves exactly that data.
 *
 * Input (-i FILE, or stdin) is either JSON Lines (one {"key": .., "value": ..,
 * "revision": ..} object per line, "revision" optional (an integer >= 1;
 * absent, as in dumps of earlier releases: 1); blank lines are skipped; a key
 * given twice keeps its last value) or the LZ4 snapshot stream of kvdump --format snapshot, told
 * apart by the first four bytes (the LZ4 frame magic 04 22 4D 18).
 *
 * What is written, as if the node had installed a snapshot (Raft §7):
 *  - D/kv: a LevelDB state machine built by engine_builder, applied at index
 *    I, term T, with the configuration {ID: voter};
 *  - D/snapshots/snapshot-I-T.lz4: the same state as a snapshot file, so that
 *    a node that later grows the cluster can send it to new members (the
 *    loaded records are in no log entry);
 *  - D/raft: an empty log starting after I (raft_log_store_reset(I, T)) and
 *    the term/vote metadata at term T, no vote.
 * I, T are (the greatest revision, at least 1), 1 for JSON Lines; a snapshot stream keeps its own
 * index and term when its index is not 0, so dump -> load -> dump gives identical bytes.
 *
 * The node's id: it is not known offline and a configuration names its
 * members, so kvload takes --id ID (alias --addr). Without it: the single
 * voter of a snapshot stream's configuration, else ":8080" (kvd's id with no
 * flags). The node must be started with that id (`--port P` for ":P",
 * `--addr` otherwise); the success line says how.
 *
 * Locking and --force: a non-empty directory is refused without --force; in
 * every case a directory whose D/raft/LOCK is held by a running node is
 * refused. With --force the old contents are removed while that lock is
 * held; the log store then takes the lock again for the rest of the build.
 *
 * Exit status: 0 on success, 1 on any error (one line on stderr), 2 for bad
 * flags. After a failure the directory may be partly written; run again with
 * --force.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "api/common/datadir.h"
#include "api/common/fileutil.h"
#include "api/common/id.h"
#include "api/common/snapfile.h"
#include "engine/engine.h"
#include "engine/snapshot.h"
#include "kvd/errors.h"
#include "raft/log_store.h"
#include "raft/meta.h"
#include "raft/raft.h"

#define DEFAULT_ID ":8080"

static const char USAGE[] = "usage: kvload --data-dir D [-i FILE] [--force] [--id ID]\n";
static const unsigned char LZ4_MAGIC[4] = {0x04, 0x22, 0x4d, 0x18};

struct load_args {
	const char *data_dir;
	const char *in_path; /* NULL: stdin */
	const char *id;	     /* NULL: from the stream, else DEFAULT_ID */
	bool force;
};

/* Feeds prefix bytes then the rest of src into a pipe, for an input that
 * cannot be rewound after its first bytes were peeked. */
struct feeder {
	pthread_t thread;
	int src;
	int dst; /* write end; closed by the thread */
	unsigned char prefix[4];
	size_t prefix_len;
	int error; /* errno of a failed read, 0 otherwise */
};

static void fail_line(const char *fmt, ...)
{
	va_list ap;
	fputs("kvload: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static const struct option LOAD_OPTIONS[] = {
    {"data-dir", required_argument, NULL, 'd'},
    {"input", required_argument, NULL, 'i'},
    {"id", required_argument, NULL, 'n'},
    {"addr", required_argument, NULL, 'n'},
    {"force", no_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Returns 0, or 2 after printing the error line. Flags are read with
 * getopt_long, as in every kvd program; it stops at the first argument that
 * is not a flag, which is refused. */
static int parse_args(int argc, char **argv, struct load_args *a)
{
	int c;

	memset(a, 0, sizeof(*a));
	opterr = 0; /* one line of ours, not getopt's */
	while ((c = getopt_long(argc, argv, "+:hi:", LOAD_OPTIONS, NULL)) != -1) {
		switch (c) {
		case 'h': fputs(USAGE, stdout); exit(0);
		case 'd': a->data_dir = optarg; break;
		case 'i': a->in_path = optarg; break;
		case 'n': a->id = optarg; break;
		case 'f': a->force = true; break;
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
	if (a->in_path != NULL && a->in_path[0] == '\0') {
		fail_line("-i needs a file name");
		return 2;
	}
	if (a->id != NULL) {
		char host[256];
		uint16_t port;
		if (strlen(a->id) >= RAFT_ID_SIZE ||
		    kvd_id_split(a->id, host, sizeof(host), &port) != 0) {
			fail_line("bad --id '%.200s' (host:port or :port)", a->id);
			return 2;
		}
	}
	return 0;
}

/* ---- input ----------------------------------------------------------------- */

static void *feeder_run(void *arg)
{
	struct feeder *f = arg;
	char buf[1 << 16];
	size_t off = 0;

	while (off < f->prefix_len) {
		ssize_t n = write(f->dst, f->prefix + off, f->prefix_len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto out;
		off += (size_t)n;
	}
	for (;;) {
		ssize_t n = read(f->src, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			f->error = errno;
			break;
		}
		if (n == 0)
			break;
		for (ssize_t done = 0; done < n;) {
			ssize_t w = write(f->dst, buf + done, (size_t)(n - done));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				goto out; /* the reader stopped (EPIPE) */
			done += w;
		}
	}
out:
	close(f->dst);
	return NULL;
}

/*
 * Peeks the first bytes of fd to tell the format, then makes *out an fd that
 * reads the input from its first byte: fd itself rewound when seekable, else
 * the read end of a pipe fed by *feeder (started here; *feeder_started).
 */
static int input_open(int fd, const char *name, bool *snapshot, int *out, struct feeder *feeder,
		      bool *feeder_started)
{
	unsigned char head[4];
	size_t got = 0;
	int pipefd[2];

	while (got < sizeof(head)) {
		ssize_t n = read(fd, head + got, sizeof(head) - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fail_line("cannot read %s: %s", name, strerror(errno));
			return KVD_EIO;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	*snapshot = got == sizeof(head) && memcmp(head, LZ4_MAGIC, sizeof(head)) == 0;
	if (lseek(fd, 0, SEEK_SET) == 0) {
		*out = fd;
		return 0;
	}
	if (pipe2(pipefd, O_CLOEXEC) != 0) {
		fail_line("cannot create a pipe: %s", strerror(errno));
		return KVD_EIO;
	}
	feeder->src = fd;
	feeder->dst = pipefd[1];
	memcpy(feeder->prefix, head, got);
	feeder->prefix_len = got;
	if (pthread_create(&feeder->thread, NULL, feeder_run, feeder) != 0) {
		close(pipefd[0]);
		close(pipefd[1]);
		fail_line("cannot start a thread");
		return KVD_ENOMEM;
	}
	*feeder_started = true;
	*out = pipefd[0];
	return 0;
}

/* ---- the data directory ------------------------------------------------------ */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	if (ftw->level == 0)
		return 0;
	return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

/* Removes everything inside dir but dir itself (and keep, a name inside
 * dir, when not NULL). */
static int empty_dir(const char *dir, const char *keep)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int rv = 0;

	if (d == NULL)
		return errno == ENOENT ? 0 : KVD_EIO;
	while ((de = readdir(d)) != NULL) {
		char path[PATH_MAX];
		struct stat st;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
		    (keep != NULL && strcmp(de->d_name, keep) == 0))
			continue;
		snprintf(path, sizeof(path), "%.3800s/%.255s", dir, de->d_name);
		if (lstat(path, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode) &&
		    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
			fail_line("cannot remove %s: %s", path, strerror(errno));
			rv = KVD_EIO;
			break;
		}
		if (remove(path) != 0 && errno != ENOENT) {
			fail_line("cannot remove %s: %s", path, strerror(errno));
			rv = KVD_EIO;
			break;
		}
	}
	closedir(d);
	return rv;
}

/* mkdir -p. */
static int make_dirs(const char *path)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return KVD_EINVAL;
	memcpy(buf, path, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
			fail_line("cannot create %s: %s", buf, strerror(errno));
			return KVD_EIO;
		}
		buf[i] = path[i];
	}
	return 0;
}

/*
 * Refuses a directory a node holds, and a non-empty one without --force;
 * with --force empties it, under the node's lock. Creates it when missing.
 */
static int prepare_dir(const struct load_args *a)
{
	char raft_dir[PATH_MAX], lock_path[PATH_MAX];
	struct stat st;
	DIR *d;
	struct dirent *de;
	bool empty = true;
	int lock_fd = -1, rv = 0;

	if (stat(a->data_dir, &st) != 0) {
		if (errno != ENOENT) {
			fail_line("cannot stat %s: %s", a->data_dir, strerror(errno));
			return KVD_EIO;
		}
		return make_dirs(a->data_dir);
	}
	if (!S_ISDIR(st.st_mode)) {
		fail_line("%s is not a directory", a->data_dir);
		return KVD_EINVAL;
	}
	snprintf(raft_dir, sizeof(raft_dir), "%.4000s/raft", a->data_dir);
	snprintf(lock_path, sizeof(lock_path), "%.4000s/LOCK", raft_dir);
	lock_fd = open(lock_path, O_RDWR | O_CLOEXEC);
	if (lock_fd >= 0 && flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno == EWOULDBLOCK)
			fail_line("%s is held by a running node (lock on %s); stop it first",
				  a->data_dir, lock_path);
		else
			fail_line("cannot lock %s: %s", lock_path, strerror(errno));
		rv = errno == EWOULDBLOCK ? KVD_ELOCKED : KVD_EIO;
		goto out;
	}
	d = opendir(a->data_dir);
	if (d == NULL) {
		fail_line("cannot open %s: %s", a->data_dir, strerror(errno));
		rv = KVD_EIO;
		goto out;
	}
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			empty = false;
	closedir(d);
	if (empty)
		goto out;
	if (!a->force) {
		fail_line("%s is not empty; use --force to replace its contents", a->data_dir);
		rv = KVD_EEXIST;
		goto out;
	}
	/* Under the lock (when there is one): the log store reopens it after. */
	if ((rv = empty_dir(a->data_dir, lock_fd >= 0 ? "raft" : NULL)) == 0 && lock_fd >= 0)
		rv = empty_dir(raft_dir, "LOCK");
out:
	if (lock_fd >= 0)
		close(lock_fd);
	return rv;
}

/* ---- building ---------------------------------------------------------------- */

struct load_state {
	struct engine_builder *builder;
	uint64_t index, term;
	char id[RAFT_ID_SIZE];
	uint64_t records;
};

static int load_snapshot(struct load_state *s, int fd, const char *name, const char *id_flag)
{
	struct engine_snapshot_reader *r = NULL;
	const struct engine_snapshot_meta *meta;
	struct raft_config conf;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	int rv = engine_snapshot_reader_open_fd(fd, name, &r, errmsg);

	if (rv != 0) {
		fail_line("cannot read the snapshot stream: %s", errmsg);
		return rv;
	}
	meta = engine_snapshot_reader_meta(r);
	if (meta->index > 0) {
		s->index = meta->index;
		s->term = meta->term > 0 ? meta->term : 1;
	}
	if (id_flag == NULL && meta->config != NULL &&
	    raft_config_decode(meta->config, meta->config_len, &conf) == 0 && conf.n == 1 &&
	    conf.n_old == 0)
		snprintf(s->id, sizeof(s->id), "%s", conf.servers[0].id);
	for (;;) {
		struct engine_record rec;
		bool end = false;
		rv = engine_snapshot_reader_next(r, &rec, &end, errmsg);
		if (rv != 0) {
			fail_line("cannot read the snapshot stream: %s", errmsg);
			break;
		}
		if (end)
			break;
		rv = engine_builder_put(s->builder, rec.key, rec.key_len, rec.value, rec.value_len,
					rec.revision, errmsg);
		if (rv != 0) {
			fail_line("cannot write the state machine: %s", errmsg);
			break;
		}
		s->records++;
	}
	engine_snapshot_reader_close(r);
	return rv;
}

/* One JSON line into the builder. line_no for messages. */
static int load_json_line(struct load_state *s, const char *line, size_t len, uint64_t line_no,
			  const char *name)
{
	json_error_t jerr;
	json_t *obj, *k, *v, *r;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	json_int_t revision = 1;
	int rv = KVD_EINVAL;

	obj = json_loadb(line, len, JSON_ALLOW_NUL, &jerr);
	if (obj == NULL) {
		fail_line("%s line %" PRIu64 ": bad JSON: %s", name, line_no, jerr.text);
		return KVD_EINVAL;
	}
	k = json_object_get(obj, "key");
	v = json_object_get(obj, "value");
	r = json_object_get(obj, "revision");
	if (!json_is_object(obj) || !json_is_string(k) || !json_is_string(v) ||
	    json_object_size(obj) != (r != NULL ? 3u : 2u)) {
		fail_line(
		    "%s line %" PRIu64
		    ": expected {\"key\": string, \"value\": string[, \"revision\": integer]}",
		    name, line_no);
		goto out;
	}
	if (r != NULL) {
		revision = json_is_integer(r) ? json_integer_value(r) : 0;
		if (revision < 1) {
			fail_line("%s line %" PRIu64 ": revision must be an integer >= 1", name,
				  line_no);
			goto out;
		}
	}
	if (json_string_length(v) == 0) {
		fail_line("%s line %" PRIu64 ": value cannot be empty", name, line_no);
		goto out;
	}
	rv = engine_builder_put(s->builder, json_string_value(k), json_string_length(k),
				json_string_value(v), json_string_length(v), (uint64_t)revision,
				errmsg);
	if (rv == 0 && (uint64_t)revision > s->index)
		s->index = (uint64_t)revision; /* the store's revision covers every key's */
	if (rv == KVD_EINVAL)
		fail_line("%s line %" PRIu64 ": invalid key", name, line_no);
	else if (rv != 0)
		fail_line("cannot write the state machine: %s", errmsg);
	else
		s->records++;
out:
	json_decref(obj);
	return rv;
}

static int load_json(struct load_state *s, int fd, const char *name)
{
	FILE *f;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	uint64_t line_no = 0;
	int fd2 = dup(fd);
	int rv = 0;

	if (fd2 < 0 || (f = fdopen(fd2, "r")) == NULL) {
		if (fd2 >= 0)
			close(fd2);
		fail_line("cannot read %s: %s", name, strerror(errno));
		return KVD_EIO;
	}
	while ((n = getline(&line, &cap, f)) >= 0) {
		size_t len = (size_t)n;
		bool blank = true;
		line_no++;
		for (size_t i = 0; i < len && blank; i++)
			blank =
			    line[i] == ' ' || line[i] == '\t' || line[i] == '\n' || line[i] == '\r';
		if (blank)
			continue;
		if ((rv = load_json_line(s, line, len, line_no, name)) != 0)
			break;
	}
	if (rv == 0 && ferror(f)) {
		fail_line("cannot read %s: %s", name, strerror(errno));
		rv = KVD_EIO;
	}
	free(line);
	fclose(f);
	return rv;
}

/* Writes D/snapshots/snapshot-I-T.lz4 from the freshly built D/kv. */
static int write_snapshot(const char *kv_dir, const char *snap_dir, uint64_t index, uint64_t term)
{
	struct engine *engine = NULL;
	struct engine_options eopts = {.deleter_disabled = true};
	struct engine_view *view = NULL;
	char path[PATH_MAX];
	char errmsg[KVD_ERRMSG_SIZE] = "";
	int rv;

	rv = engine_open(kv_dir, &eopts, &engine, errmsg);
	if (rv != 0) {
		fail_line("cannot reopen the state machine: %s", errmsg);
		return rv;
	}
	rv = engine_snapshot_begin(engine, &view);
	if (rv != 0) {
		fail_line("cannot read the state machine: %s", kvd_strerror(rv));
		goto out_engine;
	}
	kvd_snapfile_path(snap_dir, index, term, path);
	rv = engine_view_write(view, path, NULL, errmsg);
	if (rv != 0)
		fail_line("cannot write the snapshot: %s", errmsg);
	engine_view_release(view);
out_engine:
	engine_close(engine);
	return rv;
}

/* Log store reset and term metadata: the log continues after (index, term). */
static int write_raft(struct raft_log_store *store, const char *raft_dir, uint64_t index,
		      uint64_t term)
{
	struct raft_meta meta;
	char errmsg[KVD_ERRMSG_SIZE] = "";
	int rv = raft_log_store_reset(store, index, term, errmsg);

	if (rv != 0) {
		fail_line("cannot write the log: %s", errmsg);
		return rv;
	}
	memset(&meta, 0, sizeof(meta));
	meta.term = term;
	rv = raft_meta_store(raft_dir, &meta, errmsg);
	if (rv != 0)
		fail_line("cannot write the term metadata: %s", errmsg);
	return rv;
}

static int run(const struct load_args *a)
{
	struct load_state s = {.index = 1, .term = 1};
	struct raft_log_store *store = NULL;
	struct raft_config conf;
	static struct feeder feeder; /* outlives run() if detached */
	bool snapshot = false, feeder_started = false;
	char raft_dir[PATH_MAX], kv_dir[PATH_MAX], snap_dir[PATH_MAX];
	char errmsg[KVD_ERRMSG_SIZE] = "";
	const char *name = a->in_path != NULL ? a->in_path : "stdin";
	void *conf_buf = NULL;
	size_t conf_len = 0;
	int in_fd = STDIN_FILENO, fd = -1, rv;

	memset(&feeder, 0, sizeof(feeder));
	snprintf(s.id, sizeof(s.id), "%s", a->id != NULL ? a->id : DEFAULT_ID);
	snprintf(raft_dir, sizeof(raft_dir), "%.4000s/raft", a->data_dir);
	snprintf(kv_dir, sizeof(kv_dir), "%.4000s/kv", a->data_dir);
	snprintf(snap_dir, sizeof(snap_dir), "%.4000s/snapshots", a->data_dir);

	/* The input first: a missing file must not cost the old contents. */
	if (a->in_path != NULL) {
		in_fd = open(a->in_path, O_RDONLY | O_CLOEXEC);
		if (in_fd < 0) {
			fail_line("cannot open %s: %s", a->in_path, strerror(errno));
			return KVD_EIO;
		}
	}
	rv = input_open(in_fd, name, &snapshot, &fd, &feeder, &feeder_started);
	if (rv != 0)
		goto out_input;
	if ((rv = prepare_dir(a)) != 0)
		goto out_input;
	if ((rv = make_dirs(raft_dir)) != 0 || (rv = make_dirs(snap_dir)) != 0)
		goto out_input;
	rv = raft_log_store_open(raft_dir, NULL, &store, errmsg);
	if (rv == KVD_ELOCKED) {
		fail_line("%s is held by a running node (lock on %s/LOCK); stop it first",
			  a->data_dir, raft_dir);
		goto out_input;
	}
	if (rv != 0) {
		fail_line("cannot create the log: %s", errmsg);
		goto out_input;
	}
	rv = engine_builder_create(kv_dir, &s.builder, errmsg);
	if (rv != 0) {
		fail_line("cannot create the state machine: %s", errmsg);
		goto out_store;
	}
	rv = snapshot ? load_snapshot(&s, fd, name, a->id) : load_json(&s, fd, name);
	if (rv == 0 && feeder_started) {
		pthread_join(feeder.thread, NULL);
		feeder_started = false;
		if (feeder.error != 0) {
			fail_line("cannot read %s: %s", name, strerror(feeder.error));
			rv = KVD_EIO;
		}
	}
	if (rv != 0) {
		engine_builder_abort(s.builder);
		goto out_store;
	}
	memset(&conf, 0, sizeof(conf));
	if (raft_config_add(&conf, s.id, RAFT_VOTER) != 0 ||
	    raft_config_encode(&conf, &conf_buf, &conf_len) != 0) {
		fail_line("cannot encode the configuration for id '%s'", s.id);
		engine_builder_abort(s.builder);
		rv = KVD_EINVAL;
		goto out_store;
	}
	rv = engine_builder_finish(s.builder, s.index, s.term, conf_buf, conf_len, errmsg);
	if (rv != 0) {
		fail_line("cannot write the state machine: %s", errmsg);
		goto out_store;
	}
	if ((rv = write_snapshot(kv_dir, snap_dir, s.index, s.term)) != 0 ||
	    (rv = write_raft(store, raft_dir, s.index, s.term)) != 0)
		goto out_store;
	if (a->id == NULL) {
		/* No id given: the first node started here on its own takes the
		 * data as its own, whatever its id (api/recovery.c, KVD_ADOPT_FILE). */
		char marker[PATH_MAX];
		snprintf(marker, sizeof(marker), "%.4000s/" KVD_ADOPT_FILE, a->data_dir);
		if (kvd_write_file_durably(marker, "loaded by kvload\n", errmsg) != 0) {
			fail_line("%s", errmsg);
			rv = KVD_EIO;
			goto out_store;
		}
	}
	if (kvd_fsync_dir(a->data_dir) != 0) {
		fail_line("cannot fsync %s", a->data_dir);
		rv = KVD_EIO;
		goto out_store;
	}
	if (a->id == NULL) {
		fprintf(stderr,
			"kvload: loaded %" PRIu64 " keys into %s (index %" PRIu64 ", term %" PRIu64
			"); start it with: kvd --working-dir %s [--port P]\n",
			s.records, a->data_dir, s.index, s.term, a->data_dir);
	} else {
		char host[256];
		uint16_t port = 0;
		kvd_id_split(s.id, host, sizeof(host), &port);
		fprintf(stderr,
			"kvload: loaded %" PRIu64 " keys into %s (index %" PRIu64 ", term %" PRIu64
			", member %s); start it with: kvd --working-dir %s %s%s%s%u\n",
			s.records, a->data_dir, s.index, s.term, s.id, a->data_dir,
			s.id[0] == ':' ? "" : "--addr ", s.id[0] == ':' ? "" : s.id,
			s.id[0] == ':' ? "--port " : " --port ", (unsigned)port);
	}
out_store:
	raft_log_store_close(store);
out_input:
	if (feeder_started) {
		/* The feeder may be blocked reading the input; the process exits
		 * right after this failure, which ends it. */
		pthread_detach(feeder.thread);
		close(fd);
		fd = -1;
	}
	if (fd >= 0 && fd != in_fd)
		close(fd);
	if (in_fd != STDIN_FILENO)
		close(in_fd);
	free(conf_buf);
	return rv;
}

int main(int argc, char **argv)
{
	struct load_args a;
	int rv = parse_args(argc, argv, &a);

	if (rv != 0)
		return rv;
	signal(SIGPIPE, SIG_IGN);
	return run(&a) == 0 ? 0 : 1;
}
