/*
 * sim_disk.c: the simulated disk behind struct raft_log_io (model in
 * sim_disk.h and docs/simulation.md).
 *
 * Why a model of durability rather than a RAM file system: the point is to
 * exercise what a crash can leave behind. Each inode keeps the bytes a crash
 * is guaranteed to keep (dur) and the bytes reads see (cur); each name keeps
 * the inode it durably points to, the one it points to now, and the unsynced
 * changes between them in the order they were made. A crash picks, per
 * unsynced page, the old or the new contents, and for the names one point in
 * the sequence of unsynced name changes: every change before it is kept,
 * none after it (as a journaling file system commits its metadata in order),
 * so a rename is all or nothing and a name created after a rename is never
 * kept without it.
 *
 * Invariants: cur == dur for an inode that is not dirty; an fd refers to a
 * live inode (inodes are never freed before the disk), or to a directory.
 */
#include "tests/sim/sim_disk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SD_FD_BASE   3
#define SD_META_PAGE 16 /* bytes: term/vote files tear at this granularity */

struct sd_inode {
	uint8_t *cur, *dur;
	size_t cur_len, dur_len; /* bytes */
	size_t cur_cap, dur_cap; /* bytes */
	bool dirty;		 /* cur differs from dur */
	bool meta;		 /* created under a "meta*" name: tears finely */
	bool locked;
};

/* An unsynced change of a name: the inode it then pointed to. */
struct sd_change {
	uint64_t seq; /* the disk's count of name changes; a rename's two share one */
	int ino;
};

struct sd_name {
	char *path;
	int cur, dur;		/* inode number, -1 for none */
	struct sd_change *pend; /* unsynced changes since dur, oldest first */
	size_t n_pend, cap_pend;
};

struct sd_fd {
	bool used;
	bool dir;
	bool writable;
	int ino;
	char *path; /* directories: the path, for openat */
};

struct sim_disk {
	struct raft_log_io io;
	uint64_t rng;
	enum sim_disk_crash_mode mode;
	unsigned page;
	struct sim_disk_faults faults;
	bool faults_on;
	bool fsync_ignored;
	unsigned power_in; /* mutating calls until the power fails; 0: not armed */
	bool dead;	   /* power failed: every call fails until sim_disk_crash */
	struct sd_inode *ino;
	size_t n_ino, cap_ino;
	struct sd_name *names;
	size_t n_names, cap_names;
	uint64_t name_seq; /* name changes made so far */
	char **dirs;
	size_t n_dirs;
	struct sd_fd *fds;
	size_t n_fds;
	struct sim_disk_stats stats;
};

static uint64_t sd_rand(struct sim_disk *d)
{
	uint64_t z = (d->rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static bool sd_fault(struct sim_disk *d, unsigned per_mille)
{
	if (!d->faults_on || per_mille == 0 || sd_rand(d) % 1000 >= per_mille) {
		return false;
	}
	d->stats.faults++;
	return true;
}

/* Counts a mutating call down to an armed power failure. True when the
 * call must fail (the power is gone). */
static bool sd_dying(struct sim_disk *d)
{
	if (!d->dead && d->power_in > 0 && --d->power_in == 0) {
		d->dead = true;
	}
	if (d->dead) {
		errno = EIO;
	}
	return d->dead;
}

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n == 0 ? 1 : n);
	if (q == NULL) {
		abort(); /* the simulation cannot go on without memory */
	}
	return q;
}

static char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = xrealloc(NULL, n);
	memcpy(p, s, n);
	return p;
}

static void buf_set(uint8_t **b, size_t *len, size_t *cap, const uint8_t *src, size_t n)
{
	if (n > *cap) {
		*b = xrealloc(*b, n);
		*cap = n;
	}
	if (n > 0) {
		memcpy(*b, src, n);
	}
	*len = n;
}

/* Resizes cur, zero-filling growth. */
static void cur_resize(struct sd_inode *in, size_t n)
{
	if (n > in->cur_cap) {
		size_t cap = in->cur_cap < 64 ? 64 : in->cur_cap;
		while (cap < n) {
			cap *= 2;
		}
		in->cur = xrealloc(in->cur, cap);
		in->cur_cap = cap;
	}
	if (n > in->cur_len) {
		memset(in->cur + in->cur_len, 0, n - in->cur_len);
	}
	in->cur_len = n;
}

static void ino_sync(struct sd_inode *in)
{
	buf_set(&in->dur, &in->dur_len, &in->dur_cap, in->cur, in->cur_len);
	in->dirty = false;
}

static void ino_drop_unsynced(struct sd_inode *in)
{
	buf_set(&in->cur, &in->cur_len, &in->cur_cap, in->dur, in->dur_len);
	in->dirty = false;
}

static int ino_new(struct sim_disk *d, bool meta)
{
	if (d->n_ino == d->cap_ino) {
		d->cap_ino = d->cap_ino == 0 ? 16 : 2 * d->cap_ino;
		d->ino = xrealloc(d->ino, d->cap_ino * sizeof(*d->ino));
	}
	memset(&d->ino[d->n_ino], 0, sizeof(d->ino[0]));
	d->ino[d->n_ino].meta = meta;
	return (int)d->n_ino++;
}

static struct sd_name *name_find(struct sim_disk *d, const char *path, bool create)
{
	for (size_t i = 0; i < d->n_names; i++) {
		if (strcmp(d->names[i].path, path) == 0) {
			return &d->names[i];
		}
	}
	if (!create) {
		return NULL;
	}
	if (d->n_names == d->cap_names) {
		d->cap_names = d->cap_names == 0 ? 16 : 2 * d->cap_names;
		d->names = xrealloc(d->names, d->cap_names * sizeof(*d->names));
	}
	d->names[d->n_names] = (struct sd_name){.path = xstrdup(path), .cur = -1, .dur = -1};
	return &d->names[d->n_names++];
}

/* Points name n at inode ino (-1: no file), as change seq. */
static void name_set(struct sd_name *n, int ino, uint64_t seq)
{
	if (n->n_pend == n->cap_pend) {
		n->cap_pend = n->cap_pend == 0 ? 4 : 2 * n->cap_pend;
		n->pend = xrealloc(n->pend, n->cap_pend * sizeof(*n->pend));
	}
	n->pend[n->n_pend++] = (struct sd_change){seq, ino};
	n->cur = ino;
}

static void name_durable(struct sd_name *n)
{
	n->dur = n->cur;
	n->n_pend = 0;
}

static bool dir_exists(const struct sim_disk *d, const char *path)
{
	for (size_t i = 0; i < d->n_dirs; i++) {
		if (strcmp(d->dirs[i], path) == 0) {
			return true;
		}
	}
	return false;
}

static struct sd_fd *fd_get(struct sim_disk *d, int fd)
{
	if (fd < SD_FD_BASE || (size_t)(fd - SD_FD_BASE) >= d->n_fds ||
	    !d->fds[fd - SD_FD_BASE].used) {
		return NULL;
	}
	return &d->fds[fd - SD_FD_BASE];
}

static struct sd_inode *fd_ino(struct sim_disk *d, int fd)
{
	struct sd_fd *f = fd_get(d, fd);
	return f == NULL || f->dir ? NULL : &d->ino[f->ino];
}

/* Full path of name relative to dir_fd into out; false (errno) if dir_fd is bad. */
static bool path_join(struct sim_disk *d, int dir_fd, const char *name, char *out, size_t cap)
{
	struct sd_fd *f;
	if (dir_fd == AT_FDCWD) {
		snprintf(out, cap, "%s", name);
		return true;
	}
	f = fd_get(d, dir_fd);
	if (f == NULL || !f->dir) {
		errno = EBADF;
		return false;
	}
	snprintf(out, cap, "%s/%s", f->path, name);
	return true;
}

/* The directory part of path ("" when none). */
static void path_parent(const char *path, char *out, size_t cap)
{
	const char *slash = strrchr(path, '/');
	size_t n = slash == NULL ? 0 : (size_t)(slash - path);
	if (n >= cap) {
		n = cap - 1;
	}
	memcpy(out, path, n);
	out[n] = '\0';
}

static int fd_new(struct sim_disk *d, bool dir, int ino, const char *path, bool writable)
{
	size_t i = 0;
	while (i < d->n_fds && d->fds[i].used) {
		i++;
	}
	if (i == d->n_fds) {
		d->fds = xrealloc(d->fds, (d->n_fds + 1) * sizeof(*d->fds));
		d->n_fds++;
	}
	d->fds[i] = (struct sd_fd){
	    .used = true, .dir = dir, .ino = ino, .writable = writable, .path = NULL};
	if (dir) {
		d->fds[i].path = xstrdup(path);
	}
	return (int)i + SD_FD_BASE;
}

static int sd_openat(void *ctx, int dir_fd, const char *name, int flags, mode_t mode)
{
	struct sim_disk *d = ctx;
	char path[512];
	struct sd_name *n;
	const char *base;
	(void)mode;
	if ((flags & (O_CREAT | O_TRUNC)) ? sd_dying(d) : d->dead) {
		errno = EIO;
		return -1;
	}
	if (!path_join(d, dir_fd, name, path, sizeof(path))) {
		return -1;
	}
	if (flags & O_DIRECTORY) {
		if (!dir_exists(d, path)) {
			errno = ENOENT;
			return -1;
		}
		return fd_new(d, true, -1, path, false);
	}
	n = name_find(d, path, (flags & O_CREAT) != 0);
	if (n == NULL || (n->cur < 0 && !(flags & O_CREAT))) {
		errno = ENOENT;
		return -1;
	}
	if (n->cur >= 0 && (flags & O_CREAT) && (flags & O_EXCL)) {
		errno = EEXIST;
		return -1;
	}
	if (n->cur < 0) {
		base = strrchr(path, '/');
		base = base == NULL ? path : base + 1;
		name_set(n, ino_new(d, strncmp(base, "meta", 4) == 0), ++d->name_seq);
	}
	if (flags & O_TRUNC) {
		struct sd_inode *in = &d->ino[n->cur];
		cur_resize(in, 0);
		in->dirty = true;
	}
	return fd_new(d, false, n->cur, path, (flags & O_ACCMODE) != O_RDONLY);
}

static int sd_close(void *ctx, int fd)
{
	struct sim_disk *d = ctx;
	struct sd_fd *f = fd_get(d, fd);
	if (f == NULL) {
		errno = EBADF;
		return -1;
	}
	if (!f->dir && d->ino[f->ino].locked) {
		d->ino[f->ino].locked = false; /* only the locking fd is ever closed with it */
	}
	free(f->path);
	f->used = false;
	return 0;
}

static ssize_t sd_pread(void *ctx, int fd, void *buf, size_t len, off_t offset)
{
	struct sim_disk *d = ctx;
	struct sd_inode *in = fd_ino(d, fd);
	size_t n;
	if (in == NULL) {
		errno = EBADF;
		return -1;
	}
	d->stats.reads++;
	if (d->dead || sd_fault(d, d->faults.read_eio)) {
		errno = EIO;
		return -1;
	}
	if ((size_t)offset >= in->cur_len) {
		return 0;
	}
	n = in->cur_len - (size_t)offset;
	n = n < len ? n : len;
	memcpy(buf, in->cur + offset, n);
	return (ssize_t)n;
}

static ssize_t sd_pwrite(void *ctx, int fd, const void *buf, size_t len, off_t offset)
{
	struct sim_disk *d = ctx;
	struct sd_fd *f = fd_get(d, fd);
	struct sd_inode *in = fd_ino(d, fd);
	if (in == NULL || !f->writable) {
		errno = EBADF;
		return -1;
	}
	d->stats.pwrites++;
	if (sd_dying(d) || sd_fault(d, d->faults.pwrite_eio)) {
		errno = EIO;
		return -1;
	}
	if (sd_fault(d, d->faults.pwrite_enospc)) {
		errno = ENOSPC;
		return -1;
	}
	if ((size_t)offset + len > in->cur_len) {
		cur_resize(in, (size_t)offset + len);
	}
	if (len > 0) {
		memcpy(in->cur + offset, buf, len);
	}
	in->dirty = true;
	return (ssize_t)len;
}

static int sd_sync(struct sim_disk *d, int fd)
{
	struct sd_fd *f = fd_get(d, fd);
	char parent[512];
	if (f == NULL) {
		errno = EBADF;
		return -1;
	}
	if (sd_dying(d)) {
		return -1;
	}
	if (f->dir) {
		/* Directory: the name changes under it become durable. */
		d->stats.dir_syncs++;
		for (size_t i = 0; i < d->n_names; i++) {
			path_parent(d->names[i].path, parent, sizeof(parent));
			if (strcmp(parent, f->path) == 0) {
				name_durable(&d->names[i]);
			}
		}
		return 0;
	}
	d->stats.syncs++;
	if (sd_fault(d, d->faults.fsync_eio)) {
		/* Writeback failed: the dirty pages are dropped. */
		ino_drop_unsynced(&d->ino[f->ino]);
		if (d->fsync_ignored) {
			return 0;
		}
		errno = EIO;
		return -1;
	}
	ino_sync(&d->ino[f->ino]);
	return 0;
}

static int sd_fdatasync(void *ctx, int fd)
{
	return sd_sync(ctx, fd);
}

static int sd_fsync(void *ctx, int fd)
{
	return sd_sync(ctx, fd);
}

static int sd_ftruncate(void *ctx, int fd, off_t len)
{
	struct sim_disk *d = ctx;
	struct sd_fd *f = fd_get(d, fd);
	struct sd_inode *in = fd_ino(d, fd);
	if (in == NULL || !f->writable || len < 0) {
		errno = in == NULL ? EBADF : EINVAL;
		return -1;
	}
	if (sd_dying(d)) {
		return -1;
	}
	cur_resize(in, (size_t)len);
	in->dirty = true;
	return 0;
}

static int sd_fsize(void *ctx, int fd, uint64_t *size)
{
	struct sim_disk *d = ctx;
	struct sd_inode *in = fd_ino(d, fd);
	if (in == NULL) {
		errno = EBADF;
		return -1;
	}
	*size = in->cur_len;
	return 0;
}

static int sd_renameat(void *ctx, int dir_fd, const char *from, const char *to)
{
	struct sim_disk *d = ctx;
	char pf[512], pt[512];
	struct sd_name *nf, *nt;
	if (sd_dying(d) || !path_join(d, dir_fd, from, pf, sizeof(pf)) ||
	    !path_join(d, dir_fd, to, pt, sizeof(pt))) {
		return -1;
	}
	nf = name_find(d, pf, false);
	if (nf == NULL || nf->cur < 0) {
		errno = ENOENT;
		return -1;
	}
	nt = name_find(d, pt, true);
	nf = name_find(d, pf, false); /* the table may have moved */
	d->name_seq++;
	name_set(nt, nf->cur, d->name_seq);
	name_set(nf, -1, d->name_seq);
	return 0;
}

static int sd_unlinkat(void *ctx, int dir_fd, const char *name)
{
	struct sim_disk *d = ctx;
	char path[512];
	struct sd_name *n;
	if (sd_dying(d) || !path_join(d, dir_fd, name, path, sizeof(path))) {
		return -1;
	}
	n = name_find(d, path, false);
	if (n == NULL || n->cur < 0) {
		errno = ENOENT;
		return -1;
	}
	name_set(n, -1, ++d->name_seq);
	return 0;
}

static int sd_mkdir(void *ctx, const char *path, mode_t mode)
{
	struct sim_disk *d = ctx;
	(void)mode;
	if (dir_exists(d, path)) {
		errno = EEXIST;
		return -1;
	}
	d->dirs = xrealloc(d->dirs, (d->n_dirs + 1) * sizeof(*d->dirs));
	d->dirs[d->n_dirs++] = xstrdup(path);
	return 0;
}

static int sd_list(void *ctx, int dir_fd, int (*name_cb)(void *arg, const char *name), void *arg)
{
	struct sim_disk *d = ctx;
	struct sd_fd *f = fd_get(d, dir_fd);
	char parent[512];
	int rv = 0;
	if (f == NULL || !f->dir) {
		errno = EBADF;
		return -1;
	}
	for (size_t i = 0; i < d->n_names && rv == 0; i++) {
		path_parent(d->names[i].path, parent, sizeof(parent));
		if (d->names[i].cur >= 0 && strcmp(parent, f->path) == 0) {
			rv = name_cb(arg, d->names[i].path + strlen(parent) + 1);
		}
	}
	return rv;
}

static int sd_lock(void *ctx, int fd)
{
	struct sim_disk *d = ctx;
	struct sd_inode *in = fd_ino(d, fd);
	if (in == NULL) {
		errno = EBADF;
		return -1;
	}
	if (in->locked) {
		errno = EWOULDBLOCK;
		return -1;
	}
	in->locked = true;
	return 0;
}

static int sd_map(void *ctx, int fd, size_t len, const void **p)
{
	struct sim_disk *d = ctx;
	struct sd_inode *in = fd_ino(d, fd);
	uint8_t *copy;
	if (in == NULL) {
		errno = EBADF;
		return -1;
	}
	d->stats.reads++;
	if (d->dead || sd_fault(d, d->faults.read_eio)) {
		errno = EIO;
		return -1;
	}
	copy = xrealloc(NULL, len);
	memset(copy, 0, len);
	if (in->cur_len > 0 && len > 0) {
		memcpy(copy, in->cur, len < in->cur_len ? len : in->cur_len);
	}
	*p = copy;
	return 0;
}

static void sd_unmap(void *ctx, const void *p, size_t len)
{
	(void)ctx;
	(void)len;
	free((void *)p);
}

struct sim_disk *sim_disk_create(uint64_t seed, enum sim_disk_crash_mode mode, unsigned page,
				 const struct sim_disk_faults *faults)
{
	struct sim_disk *d = calloc(1, sizeof(*d));
	if (d == NULL) {
		return NULL;
	}
	d->rng = seed;
	d->mode = mode;
	d->page = page;
	d->faults = *faults;
	d->io = (struct raft_log_io){
	    .openat = sd_openat,
	    .close = sd_close,
	    .pread = sd_pread,
	    .pwrite = sd_pwrite,
	    .fdatasync = sd_fdatasync,
	    .fsync = sd_fsync,
	    .ftruncate = sd_ftruncate,
	    .fsize = sd_fsize,
	    .renameat = sd_renameat,
	    .unlinkat = sd_unlinkat,
	    .mkdir = sd_mkdir,
	    .list = sd_list,
	    .lock = sd_lock,
	    .map = sd_map,
	    .unmap = sd_unmap,
	    .ctx = d,
	};
	return d;
}

void sim_disk_destroy(struct sim_disk *d)
{
	if (d == NULL) {
		return;
	}
	for (size_t i = 0; i < d->n_ino; i++) {
		free(d->ino[i].cur);
		free(d->ino[i].dur);
	}
	for (size_t i = 0; i < d->n_names; i++) {
		free(d->names[i].path);
		free(d->names[i].pend);
	}
	for (size_t i = 0; i < d->n_dirs; i++) {
		free(d->dirs[i]);
	}
	for (size_t i = 0; i < d->n_fds; i++) {
		if (d->fds[i].used) {
			free(d->fds[i].path);
		}
	}
	free(d->ino);
	free(d->names);
	free(d->dirs);
	free(d->fds);
	free(d);
}

const struct raft_log_io *sim_disk_io(struct sim_disk *d)
{
	return &d->io;
}

void sim_disk_faults_enable(struct sim_disk *d, bool on)
{
	d->faults_on = on;
}

void sim_disk_plant_fsync_ignored(struct sim_disk *d, bool on)
{
	d->fsync_ignored = on;
}

/* What a power failure leaves of one dirty inode under the PAGES mode. */
static void crash_pages(struct sim_disk *d, struct sd_inode *in)
{
	size_t page = in->meta ? SD_META_PAGE : d->page;
	size_t len = sd_rand(d) % 2 == 0 ? in->dur_len : in->cur_len;
	uint8_t *out = xrealloc(NULL, len);
	memset(out, 0, len);
	if (in->dur_len > 0 && len > 0) {
		memcpy(out, in->dur, len < in->dur_len ? len : in->dur_len);
	}
	for (size_t off = 0; off < len; off += page) {
		size_t end = off + page < len ? off + page : len;
		size_t cend = end < in->cur_len ? end : in->cur_len;
		bool differs = false;
		if (off >= cend) {
			continue; /* beyond the current size: zeros */
		}
		for (size_t i = off; i < cend && !differs; i++) {
			differs = i >= in->dur_len || in->cur[i] != in->dur[i];
		}
		if (!differs) {
			continue;
		}
		if (sd_rand(d) % 2 == 0) {
			memcpy(out + off, in->cur + off, cend - off);
			d->stats.pages_kept++;
		} else {
			d->stats.pages_lost++;
		}
	}
	buf_set(&in->dur, &in->dur_len, &in->dur_cap, out, len);
	free(out);
	ino_drop_unsynced(in);
}

void sim_disk_fail_after(struct sim_disk *d, unsigned n)
{
	d->power_in = n;
}

bool sim_disk_dead(const struct sim_disk *d)
{
	return d->dead;
}

static int cmp_seq(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : (x > y ? 1 : 0);
}

/* The names after a power failure: in pages mode the unsynced changes up to
 * a random point of their sequence are kept, in order; otherwise none. One
 * draw per name whose current target differs from its durable one, as
 * before the changes were ordered, so a seed's other choices stay put. */
static void crash_names(struct sim_disk *d)
{
	uint64_t *seqs = NULL, cut = 0, r = 0;
	size_t n_seqs = 0, draws = 0, distinct = 0;

	for (size_t i = 0; i < d->n_names; i++) {
		n_seqs += d->names[i].n_pend;
	}
	seqs = xrealloc(NULL, n_seqs * sizeof(*seqs));
	n_seqs = 0;
	for (size_t i = 0; i < d->n_names; i++) {
		struct sd_name *n = &d->names[i];
		for (size_t k = 0; k < n->n_pend; k++) {
			seqs[n_seqs++] = n->pend[k].seq;
		}
		if (n->cur != n->dur && d->mode == SIM_DISK_CRASH_PAGES) {
			uint64_t x = sd_rand(d);
			if (draws++ == 0) {
				r = x;
			}
		}
	}
	qsort(seqs, n_seqs, sizeof(*seqs), cmp_seq);
	for (size_t i = 0; i < n_seqs; i++) {
		if (i == 0 || seqs[i] != seqs[i - 1]) {
			seqs[distinct++] = seqs[i];
		}
	}
	/* Keep the first k distinct changes, k in 0..distinct. */
	if (draws > 0 && distinct > 0) {
		size_t k = (size_t)(r % (distinct + 1));
		cut = k == 0 ? 0 : seqs[k - 1];
	}
	for (size_t i = 0; i < d->n_names; i++) {
		struct sd_name *n = &d->names[i];
		int ino = n->dur;
		for (size_t k = 0; k < n->n_pend && n->pend[k].seq <= cut; k++) {
			ino = n->pend[k].ino;
		}
		n->cur = ino;
		name_durable(n);
	}
	free(seqs);
}

void sim_disk_crash(struct sim_disk *d)
{
	d->stats.crashes++;
	d->dead = false;
	d->power_in = 0;
	for (size_t i = 0; i < d->n_fds; i++) {
		if (d->fds[i].used) {
			sd_close(d, (int)i + SD_FD_BASE);
		}
	}
	crash_names(d);
	for (size_t i = 0; i < d->n_ino; i++) {
		struct sd_inode *in = &d->ino[i];
		in->locked = false;
		if (!in->dirty) {
			continue;
		}
		if (d->mode == SIM_DISK_CRASH_PAGES) {
			crash_pages(d, in);
		} else {
			ino_drop_unsynced(in);
		}
	}
}

unsigned sim_disk_open_fds(const struct sim_disk *d)
{
	unsigned n = 0;
	for (size_t i = 0; i < d->n_fds; i++) {
		n += d->fds[i].used;
	}
	return n;
}

const struct sim_disk_stats *sim_disk_stats(const struct sim_disk *d)
{
	return &d->stats;
}
