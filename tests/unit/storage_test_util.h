/*
 * storage_test_util.h: helpers shared by the log store and meta file tests:
 * temporary directories and blunt edits of files (cut, extend, flip a bit),
 * the way a crash or a bad disk would leave them.
 */
#ifndef KVD_TESTS_STORAGE_TEST_UTIL_H
#define KVD_TESTS_STORAGE_TEST_UTIL_H

#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Creates a fresh directory under TMPDIR (or /tmp); returns a malloc'ed path. */
static inline char *tu_mkdtemp(void)
{
	const char *base = getenv("TMPDIR");
	char *path = malloc(4096);
	ck_assert_ptr_nonnull(path);
	snprintf(path, 4096, "%s/kvd-test-XXXXXX", base != NULL ? base : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(path));
	return path;
}

static inline int tu_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Removes dir and everything in it, and frees the path. */
static inline void tu_rmtree(char *dir)
{
	nftw(dir, tu_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(dir);
}

static inline void tu_path(char *out, size_t size, const char *dir, const char *name)
{
	snprintf(out, size, "%s/%s", dir, name);
}

static inline long long tu_file_size(const char *dir, const char *name)
{
	char path[4200];
	struct stat st;
	tu_path(path, sizeof(path), dir, name);
	if (stat(path, &st) != 0) {
		return -1;
	}
	return (long long)st.st_size;
}

/* Writes len bytes at offset of an existing or new file. */
static inline void tu_write_at(const char *dir, const char *name, long long offset, const void *buf,
			       size_t len)
{
	char path[4200];
	int fd;
	tu_path(path, sizeof(path), dir, name);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, buf, len, (off_t)offset), (ssize_t)len);
	close(fd);
}

static inline void tu_read_at(const char *dir, const char *name, long long offset, void *buf,
			      size_t len)
{
	char path[4200];
	int fd;
	tu_path(path, sizeof(path), dir, name);
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, buf, len, (off_t)offset), (ssize_t)len);
	close(fd);
}

/* Appends len bytes to the end of a file. */
static inline void tu_append(const char *dir, const char *name, const void *buf, size_t len)
{
	tu_write_at(dir, name, tu_file_size(dir, name), buf, len);
}

/* Flips one bit of the byte at offset. */
static inline void tu_flip(const char *dir, const char *name, long long offset, int bit)
{
	unsigned char b;
	tu_read_at(dir, name, offset, &b, 1);
	b ^= (unsigned char)(1u << bit);
	tu_write_at(dir, name, offset, &b, 1);
}

static inline void tu_truncate(const char *dir, const char *name, long long size)
{
	char path[4200];
	tu_path(path, sizeof(path), dir, name);
	ck_assert_int_eq(truncate(path, (off_t)size), 0);
}

static inline void tu_copy(const char *dir, const char *from, const char *to)
{
	long long size = tu_file_size(dir, from);
	char *buf = malloc((size_t)size + 1);
	ck_assert_ptr_nonnull(buf);
	tu_read_at(dir, from, 0, buf, (size_t)size);
	tu_write_at(dir, to, 0, buf, (size_t)size);
	free(buf);
}

static inline int tu_exists(const char *dir, const char *name)
{
	return tu_file_size(dir, name) >= 0;
}

#endif
