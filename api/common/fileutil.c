/*
 * fileutil.c: write-temp, fsync, rename, fsync-directory for small files, and
 * tree removal: what the daemon and the tools both need of the file system,
 * in one place (kvd_common).
 */
#include "api/common/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kvd/errors.h"

int kvd_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rv = 0;

	if (fd < 0)
		return KVD_EIO;
	if (fsync(fd) != 0)
		rv = KVD_EIO;
	close(fd);
	return rv;
}

int kvd_fsync_parent(const char *path)
{
	char dir[PATH_MAX];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	return kvd_fsync_dir(dir);
}

int kvd_write_file_durably(const char *path, const char *text, char *errmsg)
{
	char tmp[PATH_MAX + 8];
	int fd;
	size_t len = strlen(text);

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len || fsync(fd) != 0) {
		int err = errno;
		if (fd >= 0)
			close(fd);
		unlink(tmp);
		snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot write %s: %s", tmp, strerror(err));
		return err == ENOSPC ? KVD_ENOSPC : KVD_EIO;
	}
	close(fd);
	if (rename(tmp, path) != 0) {
		snprintf(errmsg, KVD_ERRMSG_SIZE, "cannot rename %s: %s", tmp, strerror(errno));
		return KVD_EIO;
	}
	return kvd_fsync_parent(path);
}

int kvd_read_small_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return errno == ENOENT ? KVD_ENOTFOUND : KVD_EIO;
	n = read(fd, buf, size);
	close(fd);
	if (n < 0)
		return KVD_EIO;
	if ((size_t)n >= size)
		return KVD_ETOOBIG;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		n--;
	buf[n] = '\0';
	return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void kvd_remove_tree(const char *path)
{
	nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}
