/*
 * meta.c: term and vote in two alternating checksummed files.
 *
 * Why two files: overwriting one file in place can tear, and a torn term or
 * vote would either stop the node or, worse, let it vote twice in a term.
 * Version n lives in "meta1" when n is odd and in "meta2" when n is even, so
 * storing version n+1 only ever overwrites version n-1; if that write tears,
 * version n is still intact in the other file. The store reads both files to
 * find n rather than trusting the caller to remember it.
 *
 * Invariants:
 *  - A file that exists was complete at least once: the first creation of
 *    each file writes "<name>.tmp", fdatasyncs it, renames it into place and
 *    fsyncs the directory.
 *  - The version stored in a file has the parity of that file; a mismatch is
 *    treated as damage.
 *  - Loading never falls back to "fresh" when a file exists: a node that
 *    forgot its vote could vote twice in one term.
 */
#include "raft/meta.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "raft/crc32c.h"
#include "raft/disk_codec.h"

#define META_MAGIC	0x4d44564bu /* "KVDM" read as little-endian */
#define META_VERSION	1u
#define META_CRC_OFFSET (RAFT_META_FILE_SIZE - 4)

enum meta_file_state { META_ABSENT, META_VALID, META_DAMAGED };

struct meta_file {
	enum meta_file_state state;
	struct raft_meta meta;
	char why[160]; /* reason when damaged */
};

static void meta_encode(const struct raft_meta *m, uint64_t sequence,
			uint8_t buf[RAFT_META_FILE_SIZE])
{
	size_t vlen = strlen(m->voted_for);
	memset(buf, 0, RAFT_META_FILE_SIZE);
	disk_put_u32(buf + 0, META_MAGIC);
	disk_put_u32(buf + 4, META_VERSION);
	disk_put_u64(buf + 8, sequence);
	disk_put_u64(buf + 16, m->term);
	disk_put_u32(buf + 24, (uint32_t)vlen);
	memcpy(buf + 28, m->voted_for, vlen);
	disk_put_u32(buf + META_CRC_OFFSET, raft_crc32c(0, buf, META_CRC_OFFSET));
}

/* Classifies one file; returns KVD_EIO only for a failed system call. */
static int meta_file_read(const struct raft_log_io *io, const char *dir, const char *name,
			  uint64_t parity, struct meta_file *f, char *errmsg)
{
	char path[4096];
	uint8_t buf[RAFT_META_FILE_SIZE + 1];
	ssize_t got = 0;
	int rv = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	memset(f, 0, sizeof(*f));
	fd = io->openat(io->ctx, AT_FDCWD, path, O_RDONLY, 0);
	if (fd < 0) {
		if (errno == ENOENT) {
			f->state = META_ABSENT;
			return 0;
		}
		disk_errmsg(errmsg, "open %s: %s", path, strerror(errno));
		return KVD_EIO;
	}
	while ((size_t)got < sizeof(buf)) {
		ssize_t r =
		    io->pread(io->ctx, fd, buf + got, sizeof(buf) - (size_t)got, (off_t)got);
		if (r < 0 && errno == EINTR) {
			continue;
		}
		if (r < 0) {
			disk_errmsg(errmsg, "read %s: %s", path, strerror(errno));
			rv = KVD_EIO;
			goto err_opened;
		}
		if (r == 0) {
			break;
		}
		got += r;
	}
	f->state = META_DAMAGED;
	if (got != RAFT_META_FILE_SIZE) {
		snprintf(f->why, sizeof(f->why), "size %zd bytes, expected %d", got,
			 RAFT_META_FILE_SIZE);
	} else if (disk_get_u32(buf) != META_MAGIC) {
		snprintf(f->why, sizeof(f->why), "bad magic");
	} else if (disk_get_u32(buf + META_CRC_OFFSET) != raft_crc32c(0, buf, META_CRC_OFFSET)) {
		snprintf(f->why, sizeof(f->why), "checksum mismatch");
	} else if (disk_get_u32(buf + 4) != META_VERSION) {
		snprintf(f->why, sizeof(f->why), "unsupported version %u", disk_get_u32(buf + 4));
	} else if (disk_get_u32(buf + 24) >= RAFT_ID_SIZE) {
		snprintf(f->why, sizeof(f->why), "vote length %u too long", disk_get_u32(buf + 24));
	} else if (disk_get_u64(buf + 8) == 0 || disk_get_u64(buf + 8) % 2 != parity) {
		snprintf(f->why, sizeof(f->why), "sequence %llu does not belong in this file",
			 (unsigned long long)disk_get_u64(buf + 8));
	} else {
		uint32_t vlen = disk_get_u32(buf + 24);
		f->state = META_VALID;
		f->meta.sequence = disk_get_u64(buf + 8);
		f->meta.term = disk_get_u64(buf + 16);
		memcpy(f->meta.voted_for, buf + 28, vlen);
		f->meta.voted_for[vlen] = '\0';
	}
err_opened:
	io->close(io->ctx, fd);
	return rv;
}

int raft_meta_load_io(const struct raft_log_io *io, const char *dir, struct raft_meta *meta,
		      char *errmsg)
{
	struct meta_file f1;
	struct meta_file f2;
	int rv;

	rv = meta_file_read(io, dir, "meta1", 1, &f1, errmsg);
	if (rv != 0) {
		return rv;
	}
	rv = meta_file_read(io, dir, "meta2", 0, &f2, errmsg);
	if (rv != 0) {
		return rv;
	}
	if (f1.state == META_VALID && f2.state == META_VALID) {
		*meta = f1.meta.sequence > f2.meta.sequence ? f1.meta : f2.meta;
	} else if (f1.state == META_VALID) {
		*meta = f1.meta;
	} else if (f2.state == META_VALID) {
		*meta = f2.meta;
	} else if (f1.state == META_ABSENT && f2.state == META_ABSENT) {
		memset(meta, 0, sizeof(*meta));
	} else {
		if (errmsg != NULL) {
			snprintf(errmsg, KVD_ERRMSG_SIZE,
				 "no valid term/vote file in %s: meta1: %s; meta2: %s", dir,
				 f1.state == META_ABSENT ? "absent" : f1.why,
				 f2.state == META_ABSENT ? "absent" : f2.why);
		}
		return KVD_ECORRUPT;
	}
	return 0;
}

static int meta_write_all(const struct raft_log_io *io, int fd, const uint8_t *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t w = io->pwrite(io->ctx, fd, buf + done, len - done, (off_t)done);
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

/* First creation: temporary file, fdatasync, rename, fsync the directory. */
static int meta_create(const struct raft_log_io *io, const char *dir, const char *path,
		       const uint8_t *buf, char *errmsg)
{
	char tmp[4200];
	int rv = 0;
	int fd;
	int dfd;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = io->openat(io->ctx, AT_FDCWD, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		rv = disk_errno_code(errno);
		disk_errmsg(errmsg, "create %s: %s", tmp, strerror(errno));
		goto err;
	}
	if (meta_write_all(io, fd, buf, RAFT_META_FILE_SIZE) != 0 ||
	    io->fdatasync(io->ctx, fd) != 0) {
		rv = disk_errno_code(errno);
		disk_errmsg(errmsg, "write %s: %s", tmp, strerror(errno));
		io->close(io->ctx, fd);
		io->unlinkat(io->ctx, AT_FDCWD, tmp);
		goto err;
	}
	io->close(io->ctx, fd);
	if (io->renameat(io->ctx, AT_FDCWD, tmp, path) != 0) {
		rv = disk_errno_code(errno);
		disk_errmsg(errmsg, "rename %s: %s", tmp, strerror(errno));
		io->unlinkat(io->ctx, AT_FDCWD, tmp);
		goto err;
	}
	dfd = io->openat(io->ctx, AT_FDCWD, dir, O_RDONLY | O_DIRECTORY, 0);
	if (dfd < 0 || io->fsync(io->ctx, dfd) != 0) {
		rv = disk_errno_code(errno);
		disk_errmsg(errmsg, "fsync directory %s: %s", dir, strerror(errno));
	}
	if (dfd >= 0) {
		io->close(io->ctx, dfd);
	}
err:
	return rv;
}

int raft_meta_store_io(const struct raft_log_io *io, const char *dir, struct raft_meta *meta,
		       char *errmsg)
{
	uint8_t buf[RAFT_META_FILE_SIZE];
	uint64_t sequence = 0;
	struct meta_file f;
	char path[4096];
	int rv = 0;
	int fd;

	if (memchr(meta->voted_for, '\0', RAFT_ID_SIZE) == NULL) {
		disk_errmsg(errmsg, "vote id is not NUL-terminated");
		return KVD_EINVAL;
	}
	/* The files, not the caller, say which version is newest: whatever
	 * meta->sequence holds, the newest copy is never the one overwritten
	 * and the new version always wins over it. */
	for (uint64_t parity = 0; parity < 2; parity++) {
		rv = meta_file_read(io, dir, parity == 1 ? "meta1" : "meta2", parity, &f, errmsg);
		if (rv != 0) {
			return rv;
		}
		if (f.state == META_VALID && f.meta.sequence > sequence) {
			sequence = f.meta.sequence;
		}
	}
	sequence++;
	meta_encode(meta, sequence, buf);
	snprintf(path, sizeof(path), "%s/%s", dir, sequence % 2 == 1 ? "meta1" : "meta2");
	fd = io->openat(io->ctx, AT_FDCWD, path, O_WRONLY, 0);
	if (fd < 0 && errno == ENOENT) {
		rv = meta_create(io, dir, path, buf, errmsg);
		goto done;
	}
	if (fd < 0) {
		rv = disk_errno_code(errno);
		disk_errmsg(errmsg, "open %s: %s", path, strerror(errno));
		goto done;
	}
	if (meta_write_all(io, fd, buf, sizeof(buf)) != 0 || io->fdatasync(io->ctx, fd) != 0) {
		rv = disk_errno_code(errno);
		disk_errmsg(errmsg, "write %s: %s", path, strerror(errno));
	}
	io->close(io->ctx, fd);
done:
	if (rv == 0) {
		meta->sequence = sequence;
	}
	return rv;
}

int raft_meta_load(const char *dir, struct raft_meta *meta, char *errmsg)
{
	return raft_meta_load_io(&raft_log_io_posix, dir, meta, errmsg);
}

int raft_meta_store(const char *dir, struct raft_meta *meta, char *errmsg)
{
	return raft_meta_store_io(&raft_log_io_posix, dir, meta, errmsg);
}
