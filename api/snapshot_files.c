/*
 * snapshot_files.c: the file steps of the snapshot procedure
 * (snapshot_files.h), every file operation through struct raft_log_io.
 *
 * Why apart from snapshots.c: the order of these steps (chunk written and
 * reported, file checked, renamed, directory fsynced, and only then the log
 * reset) and what recovery picks decide whether a node restarts after a
 * crash between them; over raft_log_io the simulation runs exactly these
 * steps on a disk that fails and loses unsynced writes and names.
 */
#include "api/snapshot_files.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/common/snapfile.h"
#include "kvd/errors.h"

static int io_error(int err)
{
	return err == ENOSPC ? KVD_ENOSPC : KVD_EIO;
}

void kvd_snapfiles_incoming_path(const char *dir, char *path)
{
	snprintf(path, PATH_MAX, "%.4000s/" KVD_SNAPFILES_INCOMING, dir);
}

int kvd_snapfiles_write_chunk(const struct raft_log_io *io, const char *dir, uint64_t offset,
			      const void *data, size_t len, bool done, char *errmsg)
{
	char path[PATH_MAX];
	int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (offset == 0 ? O_TRUNC : 0);
	int fd, rv = 0;

	kvd_snapfiles_incoming_path(dir, path);
	fd = io->openat(io->ctx, AT_FDCWD, path, flags, 0644);
	if (fd < 0) {
		rv = io_error(errno);
		snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot open %.3000s: %s", path, strerror(errno));
	} else {
		if (len > 0 && io->pwrite(io->ctx, fd, data, len, (off_t)offset) != (ssize_t)len)
			rv = io_error(errno);
		else if (done && io->fsync(io->ctx, fd) != 0)
			rv = io_error(errno);
		if (rv != 0)
			snprintf(errmsg, KVD_ERRMSG_SIZE,
				 "cannot write %.3000s at offset %" PRIu64 ": %s", path, offset,
				 strerror(errno));
		io->close(io->ctx, fd);
	}
	return rv;
}

/* fsync of the directory itself: its names become durable. */
static int sync_dir(const struct raft_log_io *io, const char *dir)
{
	int fd = io->openat(io->ctx, AT_FDCWD, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
	int rv = 0;

	if (fd < 0)
		return -1;
	if (io->fsync(io->ctx, fd) != 0)
		rv = -1;
	io->close(io->ctx, fd);
	return rv;
}

int kvd_snapfiles_place(const struct raft_log_io *io, const char *dir, uint64_t index,
			uint64_t term, char *errmsg)
{
	char incoming[PATH_MAX], path[PATH_MAX];
	int rv = 0;

	kvd_snapfiles_incoming_path(dir, incoming);
	kvd_snapfile_path(dir, index, term, path);
	if (io->renameat(io->ctx, AT_FDCWD, incoming, path) != 0) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot rename %.2000s: %s", incoming,
			 strerror(errno));
		rv = KVD_EIO;
	} else if (sync_dir(io, dir) != 0) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot fsync %.3000s: %s", dir, strerror(errno));
		rv = KVD_EIO;
	}
	return rv;
}

/* A listed directory: names copied (the callback may not change the
 * directory under the listing). */
struct name_list {
	char (*names)[256];
	size_t n, cap;
	int err;
};

static int collect(void *arg, const char *name)
{
	struct name_list *l = arg;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		char(*p)[256] = realloc(l->names, cap * sizeof(*p));
		if (p == NULL) {
			l->err = KVD_ENOMEM;
			return 1;
		}
		l->names = p;
		l->cap = cap;
	}
	snprintf(l->names[l->n++], 256, "%s", name);
	return 0;
}

/* The names of dir; 0, KVD_ENOTFOUND (no directory), KVD_EIO, KVD_ENOMEM. */
static int list_dir(const struct raft_log_io *io, const char *dir, struct name_list *l)
{
	int fd = io->openat(io->ctx, AT_FDCWD, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
	int rv = 0;

	memset(l, 0, sizeof(*l));
	if (fd < 0)
		return errno == ENOENT ? KVD_ENOTFOUND : KVD_EIO;
	if (io->list(io->ctx, fd, collect, l) != 0)
		rv = l->err != 0 ? l->err : KVD_EIO;
	io->close(io->ctx, fd);
	if (rv != 0) {
		free(l->names);
		l->names = NULL;
	}
	return rv;
}

void kvd_snapfiles_prune(const struct raft_log_io *io, const char *dir, uint64_t keep_index,
			 bool keep_tmp)
{
	struct name_list l;

	if (list_dir(io, dir, &l) != 0)
		return;
	for (size_t i = 0; i < l.n; i++) {
		const char *name = l.names[i];
		uint64_t index, term;
		char path[PATH_MAX];
		bool tmp = strstr(name, ".tmp") != NULL && !keep_tmp &&
			   strcmp(name, KVD_SNAPFILES_INCOMING) != 0;

		if (!tmp && (!kvd_snapfile_parse(name, &index, &term) || index == keep_index))
			continue;
		snprintf(path, sizeof(path), "%.3900s/%.255s", dir, name);
		(void)io->unlinkat(io->ctx, AT_FDCWD, path);
	}
	free(l.names);
}

struct snapshot_name {
	uint64_t index, term;
};

static int cmp_newest_first(const void *a, const void *b)
{
	const struct snapshot_name *x = a, *y = b;

	return x->index < y->index ? 1 : (x->index > y->index ? -1 : 0);
}

int kvd_snapfiles_choose(const struct raft_log_io *io, const char *dir,
			 kvd_snapfiles_check_cb check, void *ctx, uint64_t *index, uint64_t *term,
			 char *path)
{
	struct name_list l;
	struct snapshot_name *snaps = NULL;
	size_t n = 0;
	int rv = list_dir(io, dir, &l);

	if (rv == 0 && l.n > 0) {
		snaps = malloc(l.n * sizeof(*snaps));
		if (snaps == NULL)
			rv = KVD_ENOMEM;
	}
	for (size_t i = 0; rv == 0 && i < l.n; i++) {
		if (kvd_snapfile_parse(l.names[i], &snaps[n].index, &snaps[n].term))
			n++;
	}
	if (n > 0)
		qsort(snaps, n, sizeof(*snaps), cmp_newest_first);
	if (rv == 0)
		rv = KVD_ENOTFOUND;
	for (size_t i = 0; rv == KVD_ENOTFOUND && i < n; i++) {
		char aside[PATH_MAX + 16];

		kvd_snapfile_path(dir, snaps[i].index, snaps[i].term, path);
		rv = check(ctx, path);
		if (rv == 0) {
			*index = snaps[i].index;
			*term = snaps[i].term;
			/* The name may be a rename a crash kept without its
			 * directory fsync: durable before the node relies on it. */
			if (sync_dir(io, dir) != 0)
				rv = KVD_EIO;
		} else if (rv == KVD_ECORRUPT) {
			/* Kept for inspection under a name no scan picks up. */
			snprintf(aside, sizeof(aside), "%s.corrupt", path);
			rv = io->renameat(io->ctx, AT_FDCWD, path, aside) == 0 ? KVD_ENOTFOUND
									       : KVD_EIO;
		}
	}
	free(snaps);
	free(l.names);
	return rv;
}

#ifdef KVD_SNAPFILES_PLANTS
bool kvd_snapfiles_plant_install_busy_fails;
#endif

enum kvd_snapfiles_install kvd_snapfiles_install_rule(bool local_running)
{
	enum kvd_snapfiles_install a = KVD_SNAPFILES_INSTALL_START;
	if (local_running) {
		a = KVD_SNAPFILES_INSTALL_WAIT;
#ifdef KVD_SNAPFILES_PLANTS
		if (kvd_snapfiles_plant_install_busy_fails)
			a = KVD_SNAPFILES_INSTALL_FAIL;
#endif
	}
	return a;
}
