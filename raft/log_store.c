/*
 * log_store.c: the durable Raft log as a directory of segment files.
 *
 * Why segments: appends go to the end of one file, so a batch of entries is
 * one write() and one fdatasync (group commit); removing the head after a
 * snapshot is unlinking whole files, never rewriting; and recovery only needs
 * to read all of the last file. Byte layout and the rules below are in
 * docs/formats.md; raft/segment.c holds the layout code and raft/log_recovery.c
 * what open does to bring the files back after a crash.
 *
 * Files in the directory: LOCK (flock'ed while open), seg-<sequence> segment
 * files, and whatever else the caller keeps there (meta1, meta2), which the
 * store ignores.
 *
 * Invariants:
 *  - Segments, in sequence order, hold contiguous indexes: each one's first
 *    index is the previous one's last index + 1 and its previous term is the
 *    previous one's last term. Terms never decrease.
 *  - Only the last segment is ever written, and only at its end. Every segment
 *    but the last is sealed; the last may be sealed too (then the next append
 *    creates a new file).
 *  - The last segment's entry index (offset and term of every record) is
 *    always in memory; closed segments get theirs on first read, and at most
 *    RAFT_LOG_STORE_CACHED_INDEXES of them keep it.
 *  - store->fd >= 0 exactly when the last segment exists and is not sealed.
 *    Everything up to synced_size bytes of it (entries up to synced_index)
 *    is durable, and every other segment is fully durable: a rollover syncs
 *    the sealed segment before a new file is created.
 *  - Bytes already durable are never rewritten; only truncate() cuts them, as
 *    Raft asks (§5.3).
 */
#include "raft/log_store.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "raft/disk_codec.h"
#include "raft/log_store_internal.h"
#include "raft/segment.h"

struct raft_segment *raft_log_store_last_segment(struct raft_log_store *s)
{
	return s->n_segs == 0 ? NULL : &s->segs[s->n_segs - 1];
}

static int buf_reserve(struct raft_log_store *s, size_t len)
{
	uint8_t *p;
	if (len <= s->buf_cap) {
		return 0;
	}
	p = realloc(s->buf, len);
	if (p == NULL) {
		return KVD_ENOMEM;
	}
	s->buf = p;
	s->buf_cap = len;
	return 0;
}

int raft_log_store_segs_reserve(struct raft_log_store *s, size_t n)
{
	size_t cap = s->cap_segs == 0 ? 16 : s->cap_segs;
	struct raft_segment *p;
	if (n <= s->cap_segs) {
		return 0;
	}
	while (cap < n) {
		cap *= 2;
	}
	p = realloc(s->segs, cap * sizeof(*p));
	if (p == NULL) {
		return KVD_ENOMEM;
	}
	s->segs = p;
	s->cap_segs = cap;
	return 0;
}

int raft_log_store_dir_sync(struct raft_log_store *s, char *errmsg)
{
	if (s->io.fsync(s->io.ctx, s->dir_fd) != 0) {
		disk_errmsg(errmsg, "fsync directory %s: %s", s->dir, strerror(errno));
		return disk_errno_code(errno);
	}
	s->dir_dirty = false;
	return 0;
}

/* Unlinks segment i (its file and its slot) and fsyncs the directory. */
int raft_log_store_segment_remove(struct raft_log_store *s, size_t i, char *errmsg)
{
	if (s->io.unlinkat(s->io.ctx, s->dir_fd, s->segs[i].name) != 0 && errno != ENOENT) {
		disk_errmsg(errmsg, "unlink %s/%s: %s", s->dir, s->segs[i].name, strerror(errno));
		return KVD_EIO;
	}
	raft_segment_index_drop(&s->segs[i]);
	memmove(&s->segs[i], &s->segs[i + 1], (s->n_segs - i - 1) * sizeof(s->segs[0]));
	s->n_segs--;
	return raft_log_store_dir_sync(s, errmsg);
}

/* Recomputes first/last index and term from the segments. */
void raft_log_store_bounds_update(struct raft_log_store *s)
{
	struct raft_segment *last = raft_log_store_last_segment(s);
	if (last == NULL) {
		s->first_index = s->last_index + 1;
		return;
	}
	s->first_index = s->segs[0].first_index;
	s->last_index = last->last_index;
	s->last_term = last->last_term;
}

void raft_log_store_mark_synced(struct raft_log_store *s)
{
	struct raft_segment *last = raft_log_store_last_segment(s);
	s->synced_size = last != NULL ? last->size : 0;
	s->synced_index = s->last_index;
	s->synced_term = s->last_term;
	s->data_dirty = false;
	/* Records appended from now on belong to a new group-commit batch.
	 * The tag moves only when one was used, so the first record of a
	 * segment created after a rollover carries the seal's tag + 1. */
	if (s->batch_used || s->batch == 0) {
		s->batch = raft_segment_batch_next(s->batch);
		s->batch_used = false;
	}
}

/* Loads the entry index of segment i (verifying it fully) if it is not in
 * memory, and marks it used. */
static int index_load(struct raft_log_store *s, size_t i, char *errmsg)
{
	struct raft_segment *seg = &s->segs[i];
	seg->last_use = ++s->clock;
	if (seg->offsets != NULL) {
		return 0;
	}
	return raft_segment_scan(&s->io, s->dir, s->dir_fd, seg, 0, NULL, errmsg);
}

/* Drops the least recently used indexes of closed segments beyond the cap. */
static void index_evict(struct raft_log_store *s)
{
	for (;;) {
		size_t loaded = 0;
		size_t victim = 0;
		for (size_t i = 0; i + 1 < s->n_segs; i++) {
			if (s->segs[i].offsets == NULL) {
				continue;
			}
			if (loaded == 0 || s->segs[i].last_use < s->segs[victim].last_use) {
				victim = i;
			}
			loaded++;
		}
		if (loaded <= RAFT_LOG_STORE_CACHED_INDEXES) {
			return;
		}
		raft_segment_index_drop(&s->segs[victim]);
	}
}

/* Index of the segment holding index, which must be in [first, last]. */
static size_t seg_find(const struct raft_log_store *s, raft_index index)
{
	size_t lo = 0;
	size_t hi = s->n_segs - 1;
	while (lo < hi) {
		size_t mid = lo + (hi - lo + 1) / 2;
		if (s->segs[mid].first_index <= index) {
			lo = mid;
		} else {
			hi = mid - 1;
		}
	}
	return lo;
}

static int lock_dir(struct raft_log_store *s, char *errmsg)
{
	s->lock_fd = s->io.openat(s->io.ctx, s->dir_fd, "LOCK", O_RDWR | O_CREAT, 0600);
	if (s->lock_fd < 0) {
		disk_errmsg(errmsg, "open %s/LOCK: %s", s->dir, strerror(errno));
		return disk_errno_code(errno);
	}
	if (s->io.lock(s->io.ctx, s->lock_fd) != 0) {
		if (errno == EWOULDBLOCK) {
			disk_errmsg(errmsg,
				    "data directory %s is in use by another process (lock held "
				    "on %s/LOCK)",
				    s->dir, s->dir);
			return KVD_ELOCKED;
		}
		disk_errmsg(errmsg, "flock %s/LOCK: %s", s->dir, strerror(errno));
		return KVD_EIO;
	}
	return 0;
}

/* After recovery: zeros after the last record beyond what preallocation
 * keeps (a crash lost records written into preallocated space, or the
 * store was opened with less preallocation) are given back, so the last
 * segment's file never holds more than its records plus s->prealloc bytes
 * (docs/operations.md, "Disk use"). Best effort: zeros are the end of the
 * log whatever their length. */
static void prealloc_trim(struct raft_log_store *s)
{
	struct raft_segment *last = raft_log_store_last_segment(s);
	uint64_t size = 0;
	if (s->fd < 0 || last == NULL || s->io.fsize(s->io.ctx, s->fd, &size) != 0) {
		return;
	}
	s->alloc_end = size;
	if (size > last->size + s->prealloc &&
	    s->io.ftruncate(s->io.ctx, s->fd, (off_t)(last->size + s->prealloc)) == 0) {
		s->alloc_end = last->size + s->prealloc;
	}
}

int raft_log_store_open(const char *dir, const struct raft_log_store_options *opts,
			struct raft_log_store **store, char *errmsg)
{
	struct raft_log_store *s;
	int rv;

	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		return KVD_ENOMEM;
	}
	s->dir_fd = -1;
	s->lock_fd = -1;
	s->fd = -1;
	s->first_index = 1;
	s->segment_size = opts != NULL && opts->segment_size > 0 ? opts->segment_size
								 : RAFT_LOG_STORE_SEGMENT_SIZE;
	s->verify_all = opts != NULL && opts->verify_all;
	s->prealloc = opts != NULL && opts->prealloc_size > 0 ? opts->prealloc_size
							      : RAFT_LOG_STORE_PREALLOC_SIZE;
	if (opts != NULL && opts->no_prealloc) {
		s->prealloc = 0;
	}
	s->strict_recovery = opts != NULL && opts->strict_recovery;
	s->no_seal = opts != NULL && opts->no_seal;
	s->io = opts != NULL && opts->io != NULL ? *opts->io : raft_log_io_posix;
	s->dir = strdup(dir);
	if (s->dir == NULL) {
		rv = KVD_ENOMEM;
		goto err;
	}
	if (s->io.mkdir(s->io.ctx, dir, 0700) != 0 && errno != EEXIST) {
		disk_errmsg(errmsg, "mkdir %s: %s", dir, strerror(errno));
		rv = disk_errno_code(errno);
		goto err;
	}
	s->dir_fd = s->io.openat(s->io.ctx, AT_FDCWD, dir, O_RDONLY | O_DIRECTORY, 0);
	if (s->dir_fd < 0) {
		disk_errmsg(errmsg, "open directory %s: %s", dir, strerror(errno));
		rv = KVD_EIO;
		goto err;
	}
	rv = lock_dir(s, errmsg);
	if (rv == 0) {
		rv = raft_log_recovery_run(s, errmsg);
	}
	if (rv != 0) {
		goto err;
	}
	prealloc_trim(s);
	if (errmsg != NULL) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "%s", s->notes);
	}
	*store = s;
	return 0;
err:
	raft_log_store_close(s);
	return rv;
}

void raft_log_store_close(struct raft_log_store *store)
{
	if (store == NULL) {
		return;
	}
	if (store->fd >= 0) {
		store->io.close(store->io.ctx, store->fd);
	}
	if (store->lock_fd >= 0) {
		store->io.close(store->io.ctx, store->lock_fd); /* releases the flock */
	}
	if (store->dir_fd >= 0) {
		store->io.close(store->io.ctx, store->dir_fd);
	}
	for (size_t i = 0; i < store->n_segs; i++) {
		raft_segment_index_drop(&store->segs[i]);
	}
	free(store->segs);
	free(store->buf);
	free(store->dir);
	free(store);
}

raft_index raft_log_store_first_index(const struct raft_log_store *store)
{
	return store->first_index;
}

raft_index raft_log_store_last_index(const struct raft_log_store *store)
{
	return store->last_index;
}

raft_term raft_log_store_last_term(const struct raft_log_store *store)
{
	return store->last_term;
}

static int write_at(struct raft_log_store *s, int fd, const uint8_t *buf, size_t len,
		    uint64_t offset)
{
	size_t done = 0;
	while (done < len) {
		ssize_t w =
		    s->io.pwrite(s->io.ctx, fd, buf + done, len - done, (off_t)(offset + done));
		if (w < 0 && errno == EINTR) {
			continue;
		}
		if (w < 0) {
			return -1;
		}
		done += (size_t)w;
	}
	return 0;
}

/* Cuts the last segment back to what the last successful sync covered and
 * forgets the entries after it; on failure the store is failed. The caller
 * has written its own message (or none) into errmsg. */
static int cut_to_synced(struct raft_log_store *s, char *errmsg)
{
	struct raft_segment *last = raft_log_store_last_segment(s);

	if (s->fd < 0 || last == NULL) {
		return 0; /* sealed or empty: everything is synced */
	}
	/* A segment created since the last sync gets its header written
	 * again: the kernel may have dropped that page too. */
	if (s->synced_size < RAFT_SEGMENT_HEADER_SIZE) {
		uint8_t header[RAFT_SEGMENT_HEADER_SIZE];
		raft_segment_header_encode(last, header);
		s->synced_size = RAFT_SEGMENT_HEADER_SIZE;
		if (s->io.ftruncate(s->io.ctx, s->fd, 0) != 0 ||
		    write_at(s, s->fd, header, sizeof(header), 0) != 0) {
			s->synced_size = 0;
		}
	}
	if (s->synced_size == 0 || s->io.ftruncate(s->io.ctx, s->fd, (off_t)s->synced_size) != 0 ||
	    s->io.fdatasync(s->io.ctx, s->fd) != 0) {
		s->failed = true;
		disk_errmsg(errmsg,
			    "cutting %s/%s back to offset %" PRIu64
			    " (last sync) failed: %s; the log must be reopened",
			    s->dir, last->name, s->synced_size, strerror(errno));
		return KVD_EIO;
	}
	s->alloc_end = s->synced_size;
	last->size = s->synced_size;
	last->last_index = s->synced_index;
	last->last_term = s->synced_term;
	last->sealed = false;
	raft_log_store_bounds_update(s);
	s->data_dirty = false;
	return 0;
}

/* After a failed fdatasync: cut the last segment back to what is known
 * durable and forget the rest (see raft_log_store_sync in the header). */
static int sync_failed(struct raft_log_store *s, int err, char *errmsg)
{
	struct raft_segment *last = raft_log_store_last_segment(s);
	int rv = disk_errno_code(err);

	disk_errmsg(errmsg, "fdatasync %s/%s: %s; entries after index %" PRIu64 " were dropped",
		    s->dir, last->name, strerror(err), s->synced_index);
	if (cut_to_synced(s, NULL) != 0) {
		disk_errmsg(errmsg,
			    "fdatasync %s/%s: %s, and cutting back to offset %" PRIu64
			    " failed: %s; the log must be reopened",
			    s->dir, last->name, strerror(err), s->synced_size, strerror(errno));
		return KVD_EIO;
	}
	return rv;
}

int raft_log_store_discard_unsynced(struct raft_log_store *store, char *errmsg)
{
	if (store->failed) {
		disk_errmsg(errmsg, "log store %s failed earlier; reopen it", store->dir);
		return KVD_EIO;
	}
	return cut_to_synced(store, errmsg);
}

int raft_log_store_sync(struct raft_log_store *store, char *errmsg)
{
	int rv;
	if (store->failed) {
		disk_errmsg(errmsg, "log store %s failed earlier; reopen it", store->dir);
		return KVD_EIO;
	}
	if (store->data_dirty && store->fd >= 0 &&
	    store->io.fdatasync(store->io.ctx, store->fd) != 0) {
		return sync_failed(store, errno, errmsg);
	}
	if (store->dir_dirty) {
		rv = raft_log_store_dir_sync(store, errmsg);
		if (rv != 0) {
			store->failed = true;
			return rv;
		}
	}
	raft_log_store_mark_synced(store);
	return 0;
}

/* Seals the full last segment and syncs it; the next append creates a new
 * file. A failed seal write is harmless (retried on the next append). */
static int rollover(struct raft_log_store *s, char *errmsg)
{
	struct raft_segment *last = raft_log_store_last_segment(s);
	uint8_t seal[RAFT_SEGMENT_SEAL_SIZE];
	size_t count = (size_t)(last->last_index - last->first_index + 1);
	uint8_t off[8];
	int rv;

	disk_put_u64(off, last->offsets[count - 1]);
	raft_segment_record_encode(seal, last->last_index, last->last_term, RAFT_SEGMENT_TYPE_SEAL,
				   s->batch, off, sizeof(off));
	if (write_at(s, s->fd, seal, sizeof(seal), last->size) != 0) {
		if (s->io.ftruncate(s->io.ctx, s->fd, (off_t)last->size) != 0) {
			s->failed = true;
			disk_errmsg(errmsg, "truncate %s/%s: %s", s->dir, last->name,
				    strerror(errno));
			return KVD_EIO;
		}
		s->alloc_end = last->size;
		return 0;
	}
	/* A closed segment ends at its seal (open reads the seal there): the
	 * preallocated zeros after it go, in the same sync. */
	if (s->alloc_end != last->size + sizeof(seal) &&
	    s->io.ftruncate(s->io.ctx, s->fd, (off_t)(last->size + sizeof(seal))) != 0) {
		s->failed = true;
		disk_errmsg(errmsg, "truncate %s/%s: %s", s->dir, last->name, strerror(errno));
		return KVD_EIO;
	}
	s->alloc_end = last->size + sizeof(seal);
	s->batch_used = true; /* only once a seal carries the tag */
	last->size += sizeof(seal);
	last->sealed = true;
	last->last_batch = s->batch;
	s->data_dirty = true;
	rv = raft_log_store_sync(s, errmsg);
	if (rv != 0) {
		return rv;
	}
	s->io.close(s->io.ctx, s->fd);
	s->fd = -1;
	s->alloc_end = 0;
	return 0;
}

/* Creates a new last segment continuing the log. */
static int seg_start(struct raft_log_store *s, uint32_t flags, char *errmsg)
{
	struct raft_segment *seg;
	int rv = raft_log_store_segs_reserve(s, s->n_segs + 1);
	if (rv != 0) {
		return rv;
	}
	seg = &s->segs[s->n_segs];
	memset(seg, 0, sizeof(*seg));
	seg->sequence = s->next_sequence;
	seg->flags = flags;
	seg->first_index = s->last_index + 1;
	seg->prev_term = s->last_term;
	rv = raft_segment_index_reserve(seg, 0);
	if (rv != 0) {
		raft_segment_index_drop(seg);
		return rv;
	}
	rv = raft_segment_create(&s->io, s->dir, s->dir_fd, seg, &s->fd, errmsg);
	if (rv != 0) {
		raft_segment_index_drop(seg);
		return rv;
	}
	/* The header is made durable before any record shares its page: the
	 * pages of the first batch may reach the disk in any order, and a
	 * lost header in front of kept records could not be told from damage.
	 * Until the directory is synced the whole file may still vanish,
	 * which recovery handles (only unsynced records were in it). */
	if (s->io.fdatasync(s->io.ctx, s->fd) != 0) {
		rv = disk_errno_code(errno);
		disk_errmsg(errmsg, "fdatasync %s/%s: %s", s->dir, seg->name, strerror(errno));
		s->io.close(s->io.ctx, s->fd);
		s->fd = -1;
		(void)s->io.unlinkat(s->io.ctx, s->dir_fd, seg->name);
		raft_segment_index_drop(seg);
		return rv;
	}
	s->next_sequence++;
	s->n_segs++;
	s->alloc_end = RAFT_SEGMENT_HEADER_SIZE;
	s->dir_dirty = true;
	s->data_dirty = true;
	s->synced_size = 0; /* not even the header is durable yet */
	return 0;
}

#define PREALLOC_MIN ((uint64_t)64 << 10) /* bytes: smallest chunk of zeros */

/* Zeros written ahead of the records (kept in .bss, never written to), one
 * page at a time: a larger write makes the page cache use a large folio
 * there, and every later small append into it would then dirty, and the
 * next fdatasync write, the whole folio (measured: 4 times the disk bytes
 * per PUT with 64 KiB writes of zeros, docs/benchmarks.md). */
static const uint8_t prealloc_zeros[4096];

/*
 * Preallocation (docs/formats.md): before records that would end at need
 * bytes are written past the end of the file, writes zeros from need up to
 * need + chunk (at most the rollover size plus a seal), so that the file
 * grows once per chunk of records instead of at every append. The chunk is
 * need itself, at least PREALLOC_MIN and at most s->prealloc: a young
 * segment (every snapshot's head removal seals one) gets small chunks,
 * doubling, so the zeros written never exceed the records by much, and the
 * fdatasync of the appends in between has only data to write, no size
 * change (inode, journal). Zeros written by writing, not fallocate: an
 * unwritten extent needs a metadata update at its first write too. Never touches bytes below need
 * (durable records are never rewritten). A failure (ENOSPC) is not an error: the space written so
 * far is given back and the records are written as without preallocation, so a full disk fails the
 * append exactly as before.
 */
static void prealloc_ahead(struct raft_log_store *s, uint64_t need)
{
	uint64_t cap = s->segment_size + RAFT_SEGMENT_SEAL_SIZE;
	uint64_t chunk = need < PREALLOC_MIN ? PREALLOC_MIN : need;
	uint64_t end;
	uint64_t old;
	uint64_t off;

	if (s->prealloc == 0) {
		return;
	}
	if (s->alloc_end == 0 && s->io.fsize(s->io.ctx, s->fd, &s->alloc_end) != 0) {
		s->alloc_end = 0;
		return;
	}
	if (need <= s->alloc_end) {
		return;
	}
	end = need + (chunk < s->prealloc ? chunk : s->prealloc);
	if (end > cap) {
		end = cap > need ? cap : need;
	}
	old = s->alloc_end;
	off = need;
	while (off < end) {
		/* Up to the next page boundary. */
		size_t n = sizeof(prealloc_zeros) - (size_t)(off % sizeof(prealloc_zeros));
		if (n > end - off) {
			n = (size_t)(end - off);
		}
		ssize_t w = s->io.pwrite(s->io.ctx, s->fd, prealloc_zeros, n, (off_t)off);
		if (w < 0 && errno == EINTR) {
			continue;
		}
		if (w <= 0) {
			break;
		}
		off += (uint64_t)w;
	}
	if (off < end) {
		/* Give the space back; if even that fails, the zeros left are
		 * the end of the log like any others. */
		s->alloc_end = s->io.ftruncate(s->io.ctx, s->fd, (off_t)old) == 0 ? old : 0;
		return;
	}
	s->alloc_end = end;
}

/*
 * True (errno ENOSPC) when records of bytes bytes are about to go into
 * preallocated space while the file system could not have held them: the
 * node's disk-full handling (API.md §6, 507) starts at a failed log append,
 * and the state machine, applying the entry next, needs room of its own
 * (LevelDB's log). Without this check the preallocated space would let the
 * log accept up to 1 MiB of entries on a full disk that the state machine
 * then cannot apply. One fstatvfs per append.
 */
static bool no_space(struct raft_log_store *s, size_t bytes)
{
	uint64_t avail = 0;
	if (s->prealloc == 0 || s->io.fspace == NULL ||
	    s->io.fspace(s->io.ctx, s->fd, &avail) != 0 || avail >= bytes) {
		return false;
	}
	errno = ENOSPC;
	return true;
}

static int append_check(const struct raft_log_store *s, const struct raft_entry *entries, size_t n,
			size_t *bytes, char *errmsg)
{
	raft_term term = s->last_term;
	*bytes = 0;
	for (size_t i = 0; i < n; i++) {
		const struct raft_entry *e = &entries[i];
		if (e->index != s->last_index + 1 + i) {
			disk_errmsg(errmsg,
				    "append of index %" PRIu64 " where %" PRIu64 " expected",
				    e->index, s->last_index + 1 + i);
			return KVD_EINVAL;
		}
		if (e->term < term || e->term == 0) {
			disk_errmsg(errmsg,
				    "append of index %" PRIu64 " with term %" PRIu64
				    " lower than %" PRIu64 " or zero",
				    e->index, e->term, term);
			return KVD_EINVAL;
		}
		if (e->type < RAFT_ENTRY_COMMAND || e->type > RAFT_ENTRY_CONFIG ||
		    (e->len > 0 && e->data == NULL)) {
			disk_errmsg(errmsg, "append of index %" PRIu64 ": bad type or data",
				    e->index);
			return KVD_EINVAL;
		}
		if (e->len > RAFT_LOG_STORE_MAX_ENTRY_SIZE) {
			disk_errmsg(errmsg, "append of index %" PRIu64 ": %zu bytes is too large",
				    e->index, e->len);
			return KVD_ETOOBIG;
		}
		term = e->term;
		*bytes += RAFT_SEGMENT_RECORD_HEADER_SIZE + e->len;
	}
	return 0;
}

int raft_log_store_append(struct raft_log_store *store, const struct raft_entry *entries, size_t n,
			  char *errmsg)
{
	struct raft_segment *seg;
	uint64_t off;
	size_t bytes;
	size_t count;
	int rv;

	if (store->failed) {
		disk_errmsg(errmsg, "log store %s failed earlier; reopen it", store->dir);
		return KVD_EIO;
	}
	rv = append_check(store, entries, n, &bytes, errmsg);
	if (rv != 0 || n == 0) {
		return rv;
	}
	rv = buf_reserve(store, bytes);
	if (rv != 0) {
		return rv;
	}
	if (store->fd < 0) {
		rv = seg_start(store, 0, errmsg);
		if (rv != 0) {
			return rv;
		}
	}
	seg = raft_log_store_last_segment(store);
	rv = raft_segment_index_reserve(seg, n);
	if (rv != 0) {
		return rv;
	}
	count = (size_t)(seg->last_index + 1 - seg->first_index);
	off = 0;
	for (size_t i = 0; i < n; i++) {
		seg->offsets[count + i] = seg->size + off;
		seg->terms[count + i] = entries[i].term;
		off += raft_segment_record_encode(
		    store->buf + off, entries[i].index, entries[i].term, (uint32_t)entries[i].type,
		    store->batch, entries[i].data, (uint32_t)entries[i].len);
	}
	store->batch_used = true;
	prealloc_ahead(store, seg->size + bytes);
	if (no_space(store, bytes) ||
	    write_at(store, store->fd, store->buf, bytes, seg->size) != 0) {
		rv = disk_errno_code(errno);
		disk_errmsg(errmsg, "write %s/%s at offset %" PRIu64 ": %s", store->dir, seg->name,
			    seg->size, strerror(errno));
		/* Cut the partial batch, and every entry appended since the last
		 * sync: none of it is durable, and the caller must not go on as
		 * if it were (it re-reads last_index). */
		if (cut_to_synced(store, NULL) != 0) {
			rv = KVD_EIO;
		}
		return rv;
	}
	seg->size += bytes;
	if (store->alloc_end != 0 && store->alloc_end < seg->size) {
		store->alloc_end = seg->size;
	}
	seg->last_index += n;
	seg->last_term = entries[n - 1].term;
	raft_log_store_bounds_update(store);
	store->data_dirty = true;
	if (seg->size >= store->segment_size) {
		rv = rollover(store, errmsg);
	}
	return rv;
}

/* One contiguous run of records inside one segment, found by a read's first
 * pass. */
struct read_chunk {
	size_t seg;
	uint64_t start; /* bytes: offset of the first record */
	uint64_t end;	/* bytes: offset after the last record */
	raft_index first;
	size_t count;
};

/* First pass: which records, and how many payload bytes. */
static int read_plan(struct raft_log_store *s, raft_index from, raft_index to, size_t max_bytes,
		     struct read_chunk **chunks, size_t *n_chunks, size_t *n, size_t *bytes,
		     char *errmsg)
{
	struct read_chunk *c = NULL;
	size_t nc = 0;
	raft_index index = from;
	int rv = 0;

	*n = 0;
	*bytes = 0;
	index_evict(s);
	for (size_t i = seg_find(s, from); index <= to && i < s->n_segs; i++) {
		struct raft_segment *seg = &s->segs[i];
		size_t count = (size_t)(seg->last_index + 1 - seg->first_index);
		uint64_t records_end = seg->sealed ? seg->size - RAFT_SEGMENT_SEAL_SIZE : seg->size;
		struct read_chunk *grown;
		rv = index_load(s, i, errmsg);
		if (rv != 0) {
			break;
		}
		grown = realloc(c, (nc + 1) * sizeof(*c));
		if (grown == NULL) {
			rv = KVD_ENOMEM;
			break;
		}
		c = grown;
		c[nc] = (struct read_chunk){.seg = i, .first = index};
		c[nc].start = seg->offsets[index - seg->first_index];
		while (index <= to && index <= seg->last_index) {
			size_t k = (size_t)(index - seg->first_index);
			uint64_t end = k + 1 < count ? seg->offsets[k + 1] : records_end;
			size_t len =
			    (size_t)(end - seg->offsets[k]) - RAFT_SEGMENT_RECORD_HEADER_SIZE;
			if (max_bytes > 0 && *n > 0 && *bytes + len > max_bytes) {
				to = index - 1; /* stop here */
				break;
			}
			*bytes += len;
			(*n)++;
			c[nc].count++;
			c[nc].end = end;
			index++;
		}
		if (c[nc].count > 0) {
			nc++;
		}
	}
	if (rv != 0) {
		free(c);
		return rv;
	}
	*chunks = c;
	*n_chunks = nc;
	return 0;
}

/* Second pass: read one chunk, verify its records, copy the payloads. */
static int read_chunk(struct raft_log_store *s, const struct read_chunk *c, struct raft_entry *out,
		      uint8_t **data, char *errmsg)
{
	struct raft_segment *seg = &s->segs[c->seg];
	size_t len = (size_t)(c->end - c->start);
	uint64_t pos = 0;
	int rv;
	int fd;

	rv = buf_reserve(s, len);
	if (rv != 0) {
		return rv;
	}
	fd = s->io.openat(s->io.ctx, s->dir_fd, seg->name, O_RDONLY, 0);
	if (fd < 0) {
		disk_errmsg(errmsg, "open %s/%s: %s", s->dir, seg->name, strerror(errno));
		return KVD_EIO;
	}
	for (size_t done = 0; done < len;) {
		ssize_t r =
		    s->io.pread(s->io.ctx, fd, s->buf + done, len - done, (off_t)(c->start + done));
		if (r <= 0 && !(r < 0 && errno == EINTR)) {
			disk_errmsg(errmsg, "read %s/%s at offset %" PRIu64 ": %s", s->dir,
				    seg->name, c->start + done,
				    r == 0 ? "short file" : strerror(errno));
			s->io.close(s->io.ctx, fd);
			return KVD_EIO;
		}
		done += r > 0 ? (size_t)r : 0;
	}
	s->io.close(s->io.ctx, fd);
	for (size_t i = 0; i < c->count; i++) {
		struct raft_segment_record r;
		const char *why = "index or term differ from the index";
		raft_index index = c->first + i;
		if (raft_segment_record_decode(s->buf + pos, len - pos, &r, &why) != 0 ||
		    r.index != index || r.term != seg->terms[index - seg->first_index] ||
		    r.type == RAFT_SEGMENT_TYPE_SEAL) {
			disk_errmsg(errmsg,
				    "segment file %s/%s: bad record at offset %" PRIu64 " (%s)",
				    s->dir, seg->name, c->start + pos, why);
			return KVD_ECORRUPT;
		}
		out[i].index = r.index;
		out[i].term = r.term;
		out[i].type = (enum raft_entry_type)r.type;
		out[i].len = r.len;
		out[i].data = NULL;
		if (r.len > 0) {
			memcpy(*data, r.payload, r.len);
			out[i].data = *data;
			*data += r.len;
		}
		pos += r.size;
	}
	return 0;
}

int raft_log_store_read(struct raft_log_store *store, raft_index from, raft_index to,
			size_t max_bytes, struct raft_entry **entries, size_t *n, char *errmsg)
{
	struct read_chunk *chunks = NULL;
	struct raft_entry *out;
	size_t n_chunks = 0;
	size_t count = 0;
	size_t bytes = 0;
	size_t done = 0;
	uint8_t *data;
	int rv;

	if (from > to) {
		return KVD_EINVAL;
	}
	if (from < store->first_index) {
		disk_errmsg(errmsg, "index %" PRIu64 " is before the first index %" PRIu64, from,
			    store->first_index);
		return KVD_ECOMPACTED;
	}
	if (to > store->last_index) {
		disk_errmsg(errmsg, "index %" PRIu64 " is after the last index %" PRIu64, to,
			    store->last_index);
		return KVD_ENOTFOUND;
	}
	rv = read_plan(store, from, to, max_bytes, &chunks, &n_chunks, &count, &bytes, errmsg);
	if (rv != 0) {
		return rv;
	}
	out = malloc(count * sizeof(*out) + bytes + 1);
	if (out == NULL) {
		rv = KVD_ENOMEM;
		goto err_chunks;
	}
	data = (uint8_t *)(out + count);
	for (size_t i = 0; i < n_chunks; i++) {
		rv = read_chunk(store, &chunks[i], out + done, &data, errmsg);
		if (rv != 0) {
			free(out);
			goto err_chunks;
		}
		done += chunks[i].count;
	}
	*entries = out;
	*n = count;
err_chunks:
	free(chunks);
	return rv;
}

int raft_log_store_term_at(struct raft_log_store *store, raft_index index, raft_term *term,
			   char *errmsg)
{
	struct raft_segment *seg;
	size_t i;
	int rv;

	if (index > store->last_index) {
		disk_errmsg(errmsg, "index %" PRIu64 " is after the last index %" PRIu64, index,
			    store->last_index);
		return KVD_ENOTFOUND;
	}
	if (index + 1 < store->first_index) {
		disk_errmsg(errmsg, "index %" PRIu64 " is before the first index %" PRIu64, index,
			    store->first_index);
		return KVD_ECOMPACTED;
	}
	if (store->n_segs == 0) {
		*term = store->last_term; /* index == last_index */
		return 0;
	}
	if (index + 1 == store->first_index) {
		*term = store->segs[0].prev_term;
		return 0;
	}
	i = seg_find(store, index);
	seg = &store->segs[i];
	if (index == seg->last_index) {
		*term = seg->last_term;
		return 0;
	}
	index_evict(store);
	rv = index_load(store, i, errmsg);
	if (rv == 0) {
		*term = seg->terms[index - seg->first_index];
	}
	return rv;
}

/*
 * Before a truncation leaves record k - 1 of segment i last: makes the batch
 * tag of the next appends the one after that record's (or, for k == 0, the
 * one the segment's first record follows), so that the records after the
 * cut carry the tag recovery expects next to it (docs/formats.md, Batch
 * tag). Reads one record header. Returns 0 or KVD_EIO.
 */
static int batch_before(struct raft_log_store *s, size_t i, size_t k, char *errmsg)
{
	struct raft_segment *seg = &s->segs[i];
	uint8_t hdr[RAFT_SEGMENT_RECORD_HEADER_SIZE];
	uint32_t tag = 0;
	if (k > 0) {
		ssize_t r =
		    s->io.pread(s->io.ctx, s->fd, hdr, sizeof(hdr), (off_t)seg->offsets[k - 1]);
		if (r != (ssize_t)sizeof(hdr)) {
			disk_errmsg(errmsg, "read %s/%s at offset %" PRIu64 ": %s", s->dir,
				    seg->name, seg->offsets[k - 1],
				    r < 0 ? strerror(errno) : "short file");
			return KVD_EIO;
		}
		tag = disk_get_u32(hdr + 28);
	} else if (i > 0) {
		tag = s->segs[i - 1].last_batch;
	}
	if (tag != 0) {
		s->batch = tag; /* mark_synced moves on to the next */
	}
	return 0;
}

int raft_log_store_truncate(struct raft_log_store *store, raft_index from, char *errmsg)
{
	struct raft_segment *seg;
	size_t i;
	size_t k;
	int rv;

	if (store->failed) {
		disk_errmsg(errmsg, "log store %s failed earlier; reopen it", store->dir);
		return KVD_EIO;
	}
	if (from > store->last_index + 1) {
		disk_errmsg(errmsg, "truncate from %" PRIu64 " after the last index %" PRIu64, from,
			    store->last_index);
		return KVD_EINVAL;
	}
	if (from == store->last_index + 1) {
		return 0;
	}
	if (from < store->first_index) {
		disk_errmsg(errmsg, "truncate from %" PRIu64 " before the first index %" PRIu64,
			    from, store->first_index);
		return KVD_ECOMPACTED;
	}
	i = seg_find(store, from);
	rv = index_load(store, i, errmsg);
	if (rv != 0) {
		return rv;
	}
	/* Newest first, so a crash in between leaves a contiguous prefix. */
	while (store->n_segs > i + 1) {
		if (store->fd >= 0) {
			store->io.close(store->io.ctx, store->fd);
			store->fd = -1;
		}
		rv = raft_log_store_segment_remove(store, store->n_segs - 1, errmsg);
		if (rv != 0) {
			store->failed = true;
			return rv;
		}
	}
	seg = &store->segs[i];
	if (store->fd < 0) {
		store->fd = store->io.openat(store->io.ctx, store->dir_fd, seg->name, O_RDWR, 0);
		if (store->fd < 0) {
			disk_errmsg(errmsg, "open %s/%s: %s", store->dir, seg->name,
				    strerror(errno));
			store->failed = true;
			return KVD_EIO;
		}
	}
	k = (size_t)(from - seg->first_index);
	rv = batch_before(store, i, k, errmsg);
	if (rv != 0) {
		store->failed = true;
		return rv;
	}
	if (store->io.ftruncate(store->io.ctx, store->fd, (off_t)seg->offsets[k]) != 0 ||
	    store->io.fdatasync(store->io.ctx, store->fd) != 0) {
		disk_errmsg(errmsg, "truncate %s/%s at offset %" PRIu64 ": %s", store->dir,
			    seg->name, seg->offsets[k], strerror(errno));
		store->failed = true;
		return disk_errno_code(errno);
	}
	/* A segment created since the last sync is durable only once the
	 * directory is: "everything left is durable" includes its name. */
	if (store->dir_dirty) {
		rv = raft_log_store_dir_sync(store, errmsg);
		if (rv != 0) {
			store->failed = true;
			return rv;
		}
	}
	store->alloc_end = seg->offsets[k];
	seg->size = seg->offsets[k];
	seg->last_index = from - 1;
	seg->last_term = k > 0 ? seg->terms[k - 1] : seg->prev_term;
	seg->sealed = false;
	raft_log_store_bounds_update(store);
	store->batch_used = true; /* appends after the cut are a new batch */
	raft_log_store_mark_synced(store);
	return 0;
}

int raft_log_store_remove_head(struct raft_log_store *store, raft_index up_to, char *errmsg)
{
	struct raft_segment *last;
	int rv = 0;
	if (store->failed) {
		disk_errmsg(errmsg, "log store %s failed earlier; reopen it", store->dir);
		return KVD_EIO;
	}
	/* A last segment created since the last sync may vanish in a crash
	 * (its header or its name not yet durable): it must not become the
	 * only segment left, or the log would come back empty. */
	if (store->n_segs > 1 && store->segs[0].last_index <= up_to && store->fd >= 0 &&
	    (store->dir_dirty || store->synced_size < RAFT_SEGMENT_HEADER_SIZE)) {
		rv = raft_log_store_sync(store, errmsg);
		if (rv != 0) {
			return rv;
		}
	}
	while (store->n_segs > 1 && store->segs[0].last_index <= up_to) {
		rv = raft_log_store_segment_remove(store, 0, errmsg);
		if (rv != 0) {
			break;
		}
	}
	raft_log_store_bounds_update(store);
	last = raft_log_store_last_segment(store);
	/* The last segment holds entries the caller no longer needs: seal it,
	 * so that a later removal past its end can unlink it instead of
	 * waiting for it to fill up to the rollover size. */
	if (rv == 0 && !store->no_seal && store->fd >= 0 && last != NULL &&
	    last->last_index >= last->first_index && last->first_index <= up_to) {
		rv = rollover(store, errmsg);
	}
	return rv;
}

int raft_log_store_reset(struct raft_log_store *store, raft_index index, raft_term term,
			 char *errmsg)
{
	size_t old = store->n_segs;
	raft_index old_last = store->last_index;
	raft_term old_term = store->last_term;
	int old_fd;
	int rv;

	if (store->failed) {
		disk_errmsg(errmsg, "log store %s failed earlier; reopen it", store->dir);
		return KVD_EIO;
	}
	old_fd = store->fd;
	store->fd = -1;
	store->last_index = index;
	store->last_term = term;
	rv = seg_start(store, RAFT_SEGMENT_FLAG_BASE, errmsg);
	if (rv != 0) {
		/* No new file: the old log stands, unchanged and usable. */
		store->fd = old_fd;
		store->last_index = old_last;
		store->last_term = old_term;
		return rv;
	}
	if (old_fd >= 0) {
		store->io.close(store->io.ctx, old_fd);
	}
	if (store->io.fdatasync(store->io.ctx, store->fd) != 0) {
		disk_errmsg(errmsg, "fdatasync %s/%s: %s", store->dir,
			    raft_log_store_last_segment(store)->name, strerror(errno));
		rv = disk_errno_code(errno);
	}
	if (rv == 0) {
		rv = raft_log_store_dir_sync(store, errmsg);
	}
	if (rv != 0) {
		/* The old files are all still there and win at the next open
		 * only if the base segment never became durable. */
		store->failed = true;
		return rv;
	}
	/* The base segment is durable: the old files are now obsolete, and
	 * open removes any that a crash leaves behind. */
	for (size_t i = 0; i < old; i++) {
		rv = raft_log_store_segment_remove(store, 0, errmsg);
		if (rv != 0) {
			store->failed = true;
			return rv;
		}
	}
	raft_log_store_bounds_update(store);
	store->batch_used = true;
	raft_log_store_mark_synced(store);
	return 0;
}
