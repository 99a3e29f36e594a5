/*
 * disk_codec.h: little-endian fixed-width integers for the on-disk formats of
 * the log segments and the metadata files (docs/formats.md).
 *
 * Every multi-byte integer on disk is little-endian, written and read byte by
 * byte so the code depends neither on the host's byte order nor on alignment.
 * Private to the storage files of raft/.
 */
#ifndef KVD_RAFT_DISK_CODEC_H
#define KVD_RAFT_DISK_CODEC_H

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "kvd/errors.h"

/* Converts an errno value from a failed file system call into a code of
 * enum kvd_error: a full disk (or quota) is KVD_ENOSPC, a file size limit is
 * KVD_ETOOBIG, everything else KVD_EIO. */
static inline int disk_errno_code(int err)
{
	switch (err) {
	case ENOSPC:
	case EDQUOT: return KVD_ENOSPC;
	case EFBIG: return KVD_ETOOBIG;
	case ENOMEM: return KVD_ENOMEM;
	default: return KVD_EIO;
	}
}

static inline void disk_put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static inline void disk_put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static inline uint32_t disk_get_u32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--) {
		v = (v << 8) | p[i];
	}
	return v;
}

static inline uint64_t disk_get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--) {
		v = (v << 8) | p[i];
	}
	return v;
}

/* Formats a message into errmsg (KVD_ERRMSG_SIZE bytes) unless it is NULL;
 * leaves errno as it was. */
__attribute__((format(printf, 2, 3))) static inline void disk_errmsg(char *errmsg, const char *fmt,
								     ...)
{
	int saved = errno; /* callers convert errno after reporting it */
	va_list ap;
	if (errmsg == NULL) {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(errmsg, KVD_ERRMSG_SIZE, fmt, ap);
	va_end(ap);
	errno = saved;
}

#endif
