/*
 * segment.h: one file of the segmented Raft log (docs/formats.md).
 *
 * A segment file is a header followed by records, one per log entry, with
 * contiguous indexes; a closed segment ends with a seal record naming its last
 * entry, so opening the log can check a closed segment by reading its header,
 * its seal and its last record instead of all of it. This module knows the
 * byte layout and how to verify a file; raft/log_store.c decides which files
 * exist and in which order.
 *
 * Private to the log store: other modules include raft/log_store.h. The
 * functions taking io (borrowed) do every file operation through it.
 * Thread: not thread-safe; used by the log store's one thread.
 */
#ifndef KVD_RAFT_SEGMENT_H
#define KVD_RAFT_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/log_io.h"
#include "raft/raft.h"

#define RAFT_SEGMENT_HEADER_SIZE	40 /* bytes */
#define RAFT_SEGMENT_RECORD_HEADER_SIZE 32 /* bytes before a record's payload */
#define RAFT_SEGMENT_SEAL_SIZE		(RAFT_SEGMENT_RECORD_HEADER_SIZE + 8) /* bytes */
#define RAFT_SEGMENT_MAX_ENTRY_SIZE	((uint32_t)256 << 20)		      /* bytes of payload */
#define RAFT_SEGMENT_TYPE_SEAL		0x100u /* record type of the seal; entry types are 1..3 */
#define RAFT_SEGMENT_FLAG_BASE		1u     /* created by a reset: older segments are obsolete */
#define RAFT_SEGMENT_NAME_SIZE		24     /* bytes: "seg-" + 16 hex digits + NUL, rounded */

/* What a segment holds, as the log store tracks it in memory. */
struct raft_segment {
	char name[RAFT_SEGMENT_NAME_SIZE]; /* file name inside the log directory */
	uint64_t sequence;		   /* from the name and the header; grows per file */
	uint32_t flags;			   /* RAFT_SEGMENT_FLAG_* */
	raft_index first_index;		   /* index of the first record (header) */
	raft_term prev_term;		   /* term of first_index - 1 (header), 0 if none */
	raft_index last_index;		   /* first_index - 1 when empty */
	raft_term last_term;		   /* prev_term when empty */
	uint64_t size;			   /* bytes of valid content, header and seal included */
	/* Batch tag of the last record or seal (after a scan, or the seal's
	 * after raft_segment_check_closed()); 0 if none or unknown. */
	uint32_t last_batch;
	/* Tag the first record must carry when known, else 0: the batch after
	 * the previous segment's seal (set by recovery for the last segment). */
	uint32_t first_batch;
	bool sealed; /* ends with a seal record: never appended again */
	/* The entry index: byte offset and term of the record of first_index + i.
	 * NULL until the segment has been fully scanned (the last segment always
	 * is; closed ones on their first read). Owned; freed by
	 * raft_segment_index_drop(). */
	uint64_t *offsets;
	raft_term *terms;
	size_t n_alloc;	   /* capacity of offsets and terms, in entries */
	uint64_t last_use; /* log store's clock for evicting indexes */
};

/* One decoded record. payload is borrowed from the decoded buffer. */
struct raft_segment_record {
	raft_index index;
	raft_term term;
	uint32_t type;	/* enum raft_entry_type or RAFT_SEGMENT_TYPE_SEAL */
	uint32_t batch; /* group-commit batch tag; 0 in version 1 files (unknown) */
	const uint8_t *payload;
	uint32_t len;  /* bytes of payload */
	uint64_t size; /* bytes of the whole record */
};

/* The batch tag after tag (tags are never 0). */
static inline uint32_t raft_segment_batch_next(uint32_t tag)
{
	return tag == UINT32_MAX ? 1 : tag + 1;
}

/* Writes "seg-<sequence as 16 hex digits>" into name. */
void raft_segment_name_format(char name[RAFT_SEGMENT_NAME_SIZE], uint64_t sequence);

/* Parses a segment file name; returns false for any other name. */
bool raft_segment_name_parse(const char *name, uint64_t *sequence);

/* Encodes the header of seg (sequence, flags, first_index, prev_term) into
 * buf, which holds RAFT_SEGMENT_HEADER_SIZE bytes. */
void raft_segment_header_encode(const struct raft_segment *seg, uint8_t *buf);

/* Encodes a record into buf (room for RAFT_SEGMENT_RECORD_HEADER_SIZE + len
 * bytes); returns the bytes written. data (len bytes) is borrowed. batch is
 * the group-commit batch tag (docs/formats.md): every record written between
 * two successful syncs carries the same non-zero tag, and the tag changes at
 * every sync. */
size_t raft_segment_record_encode(uint8_t *buf, raft_index index, raft_term term, uint32_t type,
				  uint32_t batch, const void *data, uint32_t len);

/* Decodes and verifies (length, checksum, type) the record at p, of which avail
 * bytes are readable. Returns 0, or KVD_ECORRUPT with *why set to a static
 * reason. */
int raft_segment_record_decode(const uint8_t *p, uint64_t avail, struct raft_segment_record *r,
			       const char **why);

/*
 * Reads and verifies the header of file seg->name in dir_fd (dir is the path,
 * for messages), filling seg's header fields and *file_size (bytes). Sets
 * *torn when the file is too short for a header or holds only zero bytes (a
 * segment creation that did not complete): then returns 0 and fills nothing
 * else. Returns 0, KVD_ECORRUPT (bad header, message with file and offset) or
 * KVD_EIO.
 */
int raft_segment_header_read(const struct raft_log_io *io, const char *dir, int dir_fd,
			     struct raft_segment *seg, uint64_t *file_size, bool *torn,
			     char *errmsg);

/*
 * Cheap check of a closed segment at open: reads the seal at the end of the
 * file and the last entry record it points to, verifies both, and fills
 * last_index, last_term, size and sealed. The records in between are verified
 * later, on the segment's first read. Returns 0, KVD_ECORRUPT or KVD_EIO.
 */
int raft_segment_check_closed(const struct raft_log_io *io, const char *dir, int dir_fd,
			      struct raft_segment *seg, char *errmsg);

/*
 * Verifies every record of the file and builds seg's entry index.
 *
 * flags: RAFT_SEGMENT_SCAN_* or 0.
 *
 * For the last segment (RAFT_SEGMENT_SCAN_LAST): a bad record followed only by bytes that
 * hold no valid record up to the end of the file is a torn write; the file is
 * cut at the bad record (ftruncate, fdatasync), a note "discarded N torn bytes
 * at offset X of file F" is written to note (KVD_ERRMSG_SIZE bytes, may be
 * NULL), and 0 is returned. So is a bad record that lies inside the last
 * batch of the file: the record before it and every valid record after it
 * carry the same batch tag (an unsynced batch written back out of order;
 * note "discarded N bytes of an unsynced batch ..."), unless
 * RAFT_SEGMENT_SCAN_STRICT (a planted bug for the simulation) refuses that. Fills last_index,
 * last_term, size, sealed and last_batch.
 *
 * For a closed segment (no RAFT_SEGMENT_SCAN_LAST): everything must verify, the file must end
 * with its seal, and the end must agree with seg->last_index and last_term
 * from raft_segment_check_closed().
 *
 * Any other failure is KVD_ECORRUPT with a message naming the file and the
 * byte offset. Also KVD_EIO, KVD_ENOMEM.
 */
int raft_segment_scan(const struct raft_log_io *io, const char *dir, int dir_fd,
		      struct raft_segment *seg, unsigned flags, char *note, char *errmsg);

#define RAFT_SEGMENT_SCAN_LAST	 1u /* the last segment: cut a torn tail */
#define RAFT_SEGMENT_SCAN_STRICT 2u /* planted bug: no unsynced-batch cut */

/* Appends (offset, term) to seg's entry index. Returns 0 or KVD_ENOMEM. */
int raft_segment_index_push(struct raft_segment *seg, uint64_t offset, raft_term term);

/* Makes room for n more index entries without changing the index. */
int raft_segment_index_reserve(struct raft_segment *seg, size_t n);

/* Frees seg's entry index (no-op without one). */
void raft_segment_index_drop(struct raft_segment *seg);

/*
 * Creates the file for seg (seg->sequence, flags, first_index, prev_term set
 * by the caller) with O_EXCL, writes its header and returns the descriptor,
 * open for reading and writing, in *fd. Neither the file nor the directory
 * is synced. Fills name, last_index, last_term, size, sealed. Returns 0,
 * KVD_ENOSPC, KVD_EIO or KVD_EEXIST.
 */
int raft_segment_create(const struct raft_log_io *io, const char *dir, int dir_fd,
			struct raft_segment *seg, int *fd, char *errmsg);

#endif
