/*
 * fuzz_util.h: helpers shared by the libFuzzer targets: a scratch directory
 * per process (on /dev/shm when it exists, so the targets' fsyncs cost
 * nothing), writing input bytes into files, emptying the directory between
 * runs. Header-only so every fuzz_*.c stays one translation unit.
 */
#ifndef KVD_TESTS_FUZZ_UTIL_H
#define KVD_TESTS_FUZZ_UTIL_H

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fz_dir[PATH_MAX];

/* Removes every plain file of dir, and dir's subdirectories one level deep
 * (the targets create nothing deeper). */
static inline void fz_empty(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		char p[PATH_MAX];
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (unlink(p) != 0) {
			fz_empty(p);
			rmdir(p);
		}
	}
	closedir(d);
}

static inline void fz_cleanup(void)
{
	if (fz_dir[0] != '\0') {
		fz_empty(fz_dir);
		rmdir(fz_dir);
	}
}

/* The scratch directory of this process (created on first use; removed at
 * exit). Aborts when none can be made: a fuzz run without it tests nothing. */
static inline const char *fz_scratch(void)
{
	if (fz_dir[0] == '\0') {
		const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
		snprintf(fz_dir, sizeof(fz_dir), "%s/kvd-fuzz-XXXXXX",
			 base != NULL ? base : "/tmp");
		if (mkdtemp(fz_dir) == NULL) {
			perror("kvd fuzz: mkdtemp");
			abort();
		}
		atexit(fz_cleanup);
	}
	return fz_dir;
}

/* Writes len bytes into dir/name (created or truncated). */
static inline void fz_write(const char *dir, const char *name, const uint8_t *data, size_t len)
{
	char p[PATH_MAX];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		perror("kvd fuzz: open");
		abort();
	}
	while (len > 0) {
		ssize_t w = write(fd, data, len);
		if (w <= 0) {
			perror("kvd fuzz: write");
			abort();
		}
		data += w;
		len -= (size_t)w;
	}
	close(fd);
}

#endif
