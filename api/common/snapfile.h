/*
 * snapfile.h: the names of snapshot files, shared by the daemon (api/) and
 * the offline tools (tools/): <dir>/snapshot-<index>-<term>.lz4 with both
 * numbers zero-padded to 20 digits so that names sort by index.
 *
 * Pure string functions; any thread.
 */
#ifndef KVD_COMMON_SNAPFILE_H
#define KVD_COMMON_SNAPFILE_H

#include <stdbool.h>
#include <stdint.h>

#define KVD_SNAPFILE_PREFIX "snapshot-"
#define KVD_SNAPFILE_SUFFIX ".lz4"

/* Writes the path of the snapshot file for (index, term) in dir (borrowed)
 * into path (PATH_MAX bytes; a dir too long is cut). */
void kvd_snapfile_path(const char *dir, uint64_t index, uint64_t term, char *path);

/* True when name (a file name, no directory) is a snapshot file's name, with
 * its index and term in *index and *term; false (outputs untouched) else. */
bool kvd_snapfile_parse(const char *name, uint64_t *index, uint64_t *term);

#endif
