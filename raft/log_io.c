/*
 * log_io.c: the posix implementation of struct raft_log_io, which the daemon
 * and the tools use: each operation is the system call of the same name.
 */
#include "raft/log_io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static int posix_openat(void *ctx, int dir_fd, const char *name, int flags, mode_t mode)
{
	(void)ctx;
	return openat(dir_fd, name, flags | O_CLOEXEC, mode);
}

static int posix_close(void *ctx, int fd)
{
	(void)ctx;
	return close(fd);
}

static ssize_t posix_pread(void *ctx, int fd, void *buf, size_t len, off_t offset)
{
	(void)ctx;
	return pread(fd, buf, len, offset);
}

static ssize_t posix_pwrite(void *ctx, int fd, const void *buf, size_t len, off_t offset)
{
	(void)ctx;
	return pwrite(fd, buf, len, offset);
}

static int posix_fdatasync(void *ctx, int fd)
{
	(void)ctx;
	return fdatasync(fd);
}

static int posix_fsync(void *ctx, int fd)
{
	(void)ctx;
	return fsync(fd);
}

static int posix_ftruncate(void *ctx, int fd, off_t len)
{
	(void)ctx;
	return ftruncate(fd, len);
}

static int posix_fsize(void *ctx, int fd, uint64_t *size)
{
	struct stat st;
	(void)ctx;
	if (fstat(fd, &st) != 0) {
		return -1;
	}
	*size = (uint64_t)st.st_size;
	return 0;
}

static int posix_renameat(void *ctx, int dir_fd, const char *from, const char *to)
{
	(void)ctx;
	return renameat(dir_fd, from, dir_fd, to);
}

static int posix_unlinkat(void *ctx, int dir_fd, const char *name)
{
	(void)ctx;
	return unlinkat(dir_fd, name, 0);
}

static int posix_mkdir(void *ctx, const char *path, mode_t mode)
{
	(void)ctx;
	return mkdir(path, mode);
}

static int posix_list(void *ctx, int dir_fd, int (*name_cb)(void *arg, const char *name), void *arg)
{
	struct dirent *de;
	DIR *d;
	int dfd = dup(dir_fd);
	int rv = 0;
	(void)ctx;
	if (dfd < 0) {
		return -1;
	}
	d = fdopendir(dfd);
	if (d == NULL) {
		int saved = errno;
		close(dfd);
		errno = saved;
		return -1;
	}
	rewinddir(d);
	while (rv == 0 && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
			rv = name_cb(arg, de->d_name);
		}
	}
	closedir(d);
	return rv;
}

static int posix_lock(void *ctx, int fd)
{
	(void)ctx;
	return flock(fd, LOCK_EX | LOCK_NB);
}

static int posix_map(void *ctx, int fd, size_t len, const void **p)
{
	void *m;
	(void)ctx;
	m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		return -1;
	}
	*p = m;
	return 0;
}

static void posix_unmap(void *ctx, const void *p, size_t len)
{
	(void)ctx;
	munmap((void *)p, len);
}

static int posix_fspace(void *ctx, int fd, uint64_t *bytes)
{
	struct statvfs fs;
	(void)ctx;
	if (fstatvfs(fd, &fs) != 0) {
		return -1;
	}
	*bytes = (uint64_t)fs.f_bavail * fs.f_frsize;
	return 0;
}

const struct raft_log_io raft_log_io_posix = {
    .openat = posix_openat,
    .close = posix_close,
    .pread = posix_pread,
    .pwrite = posix_pwrite,
    .fdatasync = posix_fdatasync,
    .fsync = posix_fsync,
    .ftruncate = posix_ftruncate,
    .fsize = posix_fsize,
    .renameat = posix_renameat,
    .unlinkat = posix_unlinkat,
    .mkdir = posix_mkdir,
    .list = posix_list,
    .lock = posix_lock,
    .map = posix_map,
    .unmap = posix_unmap,
    .fspace = posix_fspace,
    .ctx = NULL,
};
