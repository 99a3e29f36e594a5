/*
 * errors.h: the one project-wide error enum.
 *
 * Every function that can fail returns int: 0 on success or one of the
 * negative codes below. Library conventions (errno, LevelDB's errptr, LZ4's
 * negative returns) are converted at the module boundary. Where a caller needs
 * to know which file, offset or peer was involved, the function also fills a
 * caller-supplied message buffer of KVD_ERRMSG_SIZE bytes (may be NULL).
 */
#ifndef KVD_ERRORS_H
#define KVD_ERRORS_H

#define KVD_ERRMSG_SIZE 512

enum kvd_error {
	KVD_OK = 0,
	KVD_ENOMEM = -1,      /* allocation failed */
	KVD_EIO = -2,	      /* a system call on a file or socket failed */
	KVD_ECORRUPT = -3,    /* bytes on disk or on the wire fail a check */
	KVD_ENOSPC = -4,      /* the disk is full */
	KVD_EINVAL = -5,      /* bad argument or malformed input */
	KVD_ENOTLEADER = -6,  /* this node is not the leader */
	KVD_EBUSY = -7,	      /* another operation of the kind is pending */
	KVD_ENOTFOUND = -8,   /* no such key, file or entry */
	KVD_ESHUTDOWN = -9,   /* the component is stopping or has stopped */
	KVD_ETOOBIG = -10,    /* a size limit was exceeded */
	KVD_EEXIST = -11,     /* already exists / not empty */
	KVD_ELOCKED = -12,    /* the data directory is held by another process */
	KVD_ECOMPACTED = -13, /* the entry was removed by log compaction */
	KVD_EUNKNOWN = -14,   /* outcome unknown (leadership lost mid-way) */
	KVD_ETIMEDOUT = -15,  /* an operation did not finish in time */
	KVD_ESTALE = -16,     /* a completion belongs to an earlier term */
};

/* Returns a static, human-readable name for a code from enum kvd_error. */
static inline const char *kvd_strerror(int code)
{
	switch (code) {
	case KVD_OK: return "ok";
	case KVD_ENOMEM: return "out of memory";
	case KVD_EIO: return "i/o error";
	case KVD_ECORRUPT: return "corrupt data";
	case KVD_ENOSPC: return "insufficient storage";
	case KVD_EINVAL: return "invalid argument";
	case KVD_ENOTLEADER: return "not leader";
	case KVD_EBUSY: return "busy";
	case KVD_ENOTFOUND: return "not found";
	case KVD_ESHUTDOWN: return "shutting down";
	case KVD_ETOOBIG: return "too large";
	case KVD_EEXIST: return "already exists";
	case KVD_ELOCKED: return "locked by another process";
	case KVD_ECOMPACTED: return "compacted";
	case KVD_EUNKNOWN: return "outcome unknown";
	case KVD_ETIMEDOUT: return "timed out";
	case KVD_ESTALE: return "stale";
	default: return "unknown error";
	}
}

#endif
