/*
 * snapfile.c: snapshot file names (snapfile.h). Kept in the common library
 * so that the transport (which sends the files), the snapshot part (which
 * writes, chooses and prunes them) and the tools agree on one spelling
 * without depending on each other.
 */
#include "api/common/snapfile.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>

void kvd_snapfile_path(const char *dir, uint64_t index, uint64_t term, char *path)
{
	snprintf(path, PATH_MAX,
		 "%.3900s/" KVD_SNAPFILE_PREFIX "%020" PRIu64 "-%020" PRIu64 KVD_SNAPFILE_SUFFIX,
		 dir, index, term);
}

bool kvd_snapfile_parse(const char *name, uint64_t *index, uint64_t *term)
{
	unsigned long long i, t;
	int used = 0;

	if (sscanf(name, KVD_SNAPFILE_PREFIX "%llu-%llu" KVD_SNAPFILE_SUFFIX "%n", &i, &t, &used) !=
		2 ||
	    name[used] != '\0' || used == 0)
		return false;
	*index = i;
	*term = t;
	return true;
}
