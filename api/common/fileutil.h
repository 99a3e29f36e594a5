/*
 * fileutil.h: small durable-file helpers shared by the daemon (its state
 * files: partition.json, cluster-id; snapshot directories) and the offline
 * tools (kvd_common). Any thread; errors are kvd_error codes.
 */
#ifndef KVD_COMMON_FILEUTIL_H
#define KVD_COMMON_FILEUTIL_H

#include <stddef.h>

/*
 * Replaces path with text atomically and durably: writes path.tmp, fsyncs
 * it, renames it over path and fsyncs the directory. Returns 0, KVD_ENOSPC or
 * KVD_EIO with errmsg (KVD_ERRMSG_SIZE bytes) naming the file.
 */
int kvd_write_file_durably(const char *path, const char *text, char *errmsg);

/* fsync of a directory, or of the directory holding path. Returns 0 or
 * KVD_EIO. */
int kvd_fsync_dir(const char *dir);
int kvd_fsync_parent(const char *path);

/*
 * Reads a small text file into buf (NUL-terminated, trailing newline and
 * spaces cut). Returns 0, KVD_ENOTFOUND when it does not exist, KVD_EIO, or
 * KVD_ETOOBIG when it does not fit in size - 1 bytes.
 */
int kvd_read_small_file(const char *path, char *buf, size_t size);

/* Removes a directory tree, path included (best effort: what cannot be
 * removed stays). */
void kvd_remove_tree(const char *path);

#endif
