/*
 * log_io.h: the file operations of the durable storage (log segments, their
 * directory, the lock file, the term/vote files).
 *
 * raft/log_store.c, raft/segment.c, raft/log_recovery.c and raft/meta.c make
 * every file system call through one of these, so that a test or the
 * simulation (tests/sim/sim_disk.c) can supply a disk that fails, loses
 * unsynced writes or tears files. The daemon uses raft_log_io_posix, the
 * real system calls.
 *
 * Each function behaves like the POSIX call it is named after: it returns
 * what that call returns and sets errno on failure. dir_fd may be AT_FDCWD
 * (name is then a path). ctx is passed back to every call.
 *
 * Thread: the operations are called from the storage's one thread; an
 * implementation need not be thread-safe unless its caller shares it.
 */
#ifndef KVD_RAFT_LOG_IO_H
#define KVD_RAFT_LOG_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct raft_log_io {
	int (*openat)(void *ctx, int dir_fd, const char *name, int flags, mode_t mode);
	int (*close)(void *ctx, int fd);
	ssize_t (*pread)(void *ctx, int fd, void *buf, size_t len, off_t offset);
	ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t len, off_t offset);
	int (*fdatasync)(void *ctx, int fd);
	int (*fsync)(void *ctx, int fd); /* on a directory: makes its entries durable */
	int (*ftruncate)(void *ctx, int fd, off_t len);
	/* fstat's st_size into *size. */
	int (*fsize)(void *ctx, int fd, uint64_t *size);
	int (*renameat)(void *ctx, int dir_fd, const char *from, const char *to);
	int (*unlinkat)(void *ctx, int dir_fd, const char *name);
	int (*mkdir)(void *ctx, const char *path, mode_t mode);
	/* Calls name_cb(arg, name) for every entry of the directory but "." and
	 * "..", in no particular order; stops at the first non-zero return of
	 * name_cb and returns it. Returns 0, that value, or -1 with errno. */
	int (*list)(void *ctx, int dir_fd, int (*name_cb)(void *arg, const char *name), void *arg);
	/* flock(fd, LOCK_EX | LOCK_NB): -1 with EWOULDBLOCK when held elsewhere. */
	int (*lock)(void *ctx, int fd);
	/* Makes the first len bytes of the file readable at *p (mmap, read-only)
	 * until unmap(ctx, *p, len). */
	int (*map)(void *ctx, int fd, size_t len, const void **p);
	void (*unmap)(void *ctx, const void *p, size_t len);
	/* Bytes an unprivileged writer may still allocate on fd's file system
	 * (fstatvfs: f_bavail * f_frsize) into *bytes. May be NULL (unknown):
	 * the log store then skips its free-space check of appends into
	 * preallocated space (log_store.c). */
	int (*fspace)(void *ctx, int fd, uint64_t *bytes);
	void *ctx;
};

/* The real system calls; ctx is unused. */
extern const struct raft_log_io raft_log_io_posix;

#endif
