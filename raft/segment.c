/*
 * segment.c: byte layout and verification of one Raft log segment file.
 *
 * Layout (all integers little-endian; docs/formats.md is the reference):
 *
 *   header  magic "KVDL" u32 | version u32 | sequence u64 | first index u64 |
 *           previous term u64 | flags u32 | crc32c of the preceding 36 bytes u32
 *   record  payload length u32 | crc32c u32 | index u64 | term u64 | type u32 |
 *           batch tag u32 (version 2; 0 in version 1) | payload
 *   seal    a record of type RAFT_SEGMENT_TYPE_SEAL whose index and term are
 *           those of the last entry and whose 8-byte payload is the byte offset
 *           of that entry's record; only in closed segments, always last.
 *
 * A record's checksum covers its length field and everything after the
 * checksum field, payload included, so a damaged length is caught as well.
 *
 * Why a seal: recovery must not read a multi-gigabyte log. The seal lets open
 * find and verify a closed segment's last entry with two small reads, which is
 * also what tells it the last term (checked against the next segment's
 * "previous term"). Every other record of a closed segment is verified when
 * the segment is first read.
 *
 * Preallocation: the last segment may end with zeros after its last record
 * (space the log store wrote ahead, so that appends do not grow the file and
 * fdatasync has no inode to write). Zeros from some offset to the end of the
 * file are the end of the log, nothing to cut; zeros after the seal of the
 * last segment are a rollover's cut that did not reach the disk, and are cut.
 *
 * Torn writes: the only bytes ever in flight are at the end of the last
 * segment. A record there that fails to decode, followed by no valid record
 * up to the end of the file, is what an interrupted write leaves (zeros from
 * a size extension, a partial record, stale sector contents), so it is cut
 * off and reported as a note. A bad record followed by a valid one, or an
 * intact record in the wrong place, is not something a crash produces on an
 * append-only file, except inside the last group-commit batch: its pages
 * may reach the disk in any order when power fails before its fdatasync.
 * Every record carries its batch's tag (the tag changes at each successful
 * sync), so a bad record whose predecessor and every valid successor carry
 * one tag lies inside the file's last batch, which no sync covered for sure,
 * and is cut off with the rest of that batch. A batch followed by a newer one
 * was synced: damage there is corruption and stops the caller. Version 1
 * files (tag 0) keep the strict rule.
 */
#include "raft/segment.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "raft/crc32c.h"
#include "raft/disk_codec.h"

#define SEGMENT_MAGIC		  0x4c44564bu /* "KVDL" read as little-endian */
#define SEGMENT_VERSION		  2u	      /* written; version 1 (no batch tags) is still read */
#define SEGMENT_VERSION_1	  1u
#define SEGMENT_HEADER_CRC_OFFSET (RAFT_SEGMENT_HEADER_SIZE - 4)

void raft_segment_name_format(char name[RAFT_SEGMENT_NAME_SIZE], uint64_t sequence)
{
	snprintf(name, RAFT_SEGMENT_NAME_SIZE, "seg-%016" PRIx64, sequence);
}

bool raft_segment_name_parse(const char *name, uint64_t *sequence)
{
	uint64_t v = 0;
	if (strncmp(name, "seg-", 4) != 0 || strlen(name) != 20) {
		return false;
	}
	for (const char *p = name + 4; *p != '\0'; p++) {
		int d;
		if (*p >= '0' && *p <= '9') {
			d = *p - '0';
		} else if (*p >= 'a' && *p <= 'f') {
			d = *p - 'a' + 10;
		} else {
			return false;
		}
		v = (v << 4) | (uint64_t)d;
	}
	*sequence = v;
	return true;
}

void raft_segment_header_encode(const struct raft_segment *seg, uint8_t *buf)
{
	disk_put_u32(buf + 0, SEGMENT_MAGIC);
	disk_put_u32(buf + 4, SEGMENT_VERSION);
	disk_put_u64(buf + 8, seg->sequence);
	disk_put_u64(buf + 16, seg->first_index);
	disk_put_u64(buf + 24, seg->prev_term);
	disk_put_u32(buf + 32, seg->flags);
	disk_put_u32(buf + SEGMENT_HEADER_CRC_OFFSET,
		     raft_crc32c(0, buf, SEGMENT_HEADER_CRC_OFFSET));
}

static uint32_t record_crc(const uint8_t *p, uint32_t len)
{
	uint32_t crc = raft_crc32c(0, p, 4);
	return raft_crc32c(crc, p + 8, RAFT_SEGMENT_RECORD_HEADER_SIZE - 8 + (size_t)len);
}

size_t raft_segment_record_encode(uint8_t *buf, raft_index index, raft_term term, uint32_t type,
				  uint32_t batch, const void *data, uint32_t len)
{
	disk_put_u32(buf + 0, len);
	disk_put_u64(buf + 8, index);
	disk_put_u64(buf + 16, term);
	disk_put_u32(buf + 24, type);
	disk_put_u32(buf + 28, batch);
	if (len > 0) {
		memcpy(buf + RAFT_SEGMENT_RECORD_HEADER_SIZE, data, len);
	}
	disk_put_u32(buf + 4, record_crc(buf, len));
	return RAFT_SEGMENT_RECORD_HEADER_SIZE + (size_t)len;
}

int raft_segment_record_decode(const uint8_t *p, uint64_t avail, struct raft_segment_record *r,
			       const char **why)
{
	uint32_t len;
	uint32_t type;

	if (avail < RAFT_SEGMENT_RECORD_HEADER_SIZE) {
		*why = "incomplete record header";
		return KVD_ECORRUPT;
	}
	len = disk_get_u32(p);
	if (len > RAFT_SEGMENT_MAX_ENTRY_SIZE) {
		*why = "impossible record length";
		return KVD_ECORRUPT;
	}
	if (len > avail - RAFT_SEGMENT_RECORD_HEADER_SIZE) {
		*why = "record extends past the end of the file";
		return KVD_ECORRUPT;
	}
	if (disk_get_u32(p + 4) != record_crc(p, len)) {
		*why = "record checksum mismatch";
		return KVD_ECORRUPT;
	}
	type = disk_get_u32(p + 24);
	if (type != RAFT_SEGMENT_TYPE_SEAL &&
	    (type < RAFT_ENTRY_COMMAND || type > RAFT_ENTRY_CONFIG)) {
		*why = "unknown record type";
		return KVD_ECORRUPT;
	}
	r->len = len;
	r->index = disk_get_u64(p + 8);
	r->term = disk_get_u64(p + 16);
	r->type = type;
	r->batch = disk_get_u32(p + 28);
	r->payload = p + RAFT_SEGMENT_RECORD_HEADER_SIZE;
	r->size = RAFT_SEGMENT_RECORD_HEADER_SIZE + (uint64_t)len;
	return 0;
}

static int read_at(const struct raft_log_io *io, int fd, void *buf, size_t len, uint64_t offset)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = io->pread(io->ctx, fd, (uint8_t *)buf + done, len - done,
				      (off_t)(offset + done));
		if (r < 0 && errno == EINTR) {
			continue;
		}
		if (r < 0) {
			return -1;
		}
		if (r == 0) {
			errno = EIO; /* the file shrank under us */
			return -1;
		}
		done += (size_t)r;
	}
	return 0;
}

/* True when the len bytes of the file from offset are all zero. */
static int all_zero(const struct raft_log_io *io, int fd, uint64_t offset, uint64_t len, bool *zero)
{
	uint8_t buf[4096];
	*zero = true;
	while (len > 0) {
		size_t n = len < sizeof(buf) ? (size_t)len : sizeof(buf);
		if (read_at(io, fd, buf, n, offset) != 0) {
			return -1;
		}
		for (size_t i = 0; i < n; i++) {
			if (buf[i] != 0) {
				*zero = false;
				return 0;
			}
		}
		offset += n;
		len -= n;
	}
	return 0;
}

int raft_segment_header_read(const struct raft_log_io *io, const char *dir, int dir_fd,
			     struct raft_segment *seg, uint64_t *file_size, bool *torn,
			     char *errmsg)
{
	uint8_t buf[RAFT_SEGMENT_HEADER_SIZE];
	uint64_t size = 0;
	bool zero;
	int rv = 0;
	int fd;

	*torn = false;
	fd = io->openat(io->ctx, dir_fd, seg->name, O_RDONLY, 0);
	if (fd < 0) {
		disk_errmsg(errmsg, "open %s/%s: %s", dir, seg->name, strerror(errno));
		return KVD_EIO;
	}
	if (io->fsize(io->ctx, fd, &size) != 0) {
		rv = KVD_EIO;
		disk_errmsg(errmsg, "stat %s/%s: %s", dir, seg->name, strerror(errno));
		goto err_opened;
	}
	if (size < RAFT_SEGMENT_HEADER_SIZE) {
		*torn = true;
		goto err_opened;
	}
	if (read_at(io, fd, buf, sizeof(buf), 0) != 0) {
		rv = KVD_EIO;
		disk_errmsg(errmsg, "read %s/%s: %s", dir, seg->name, strerror(errno));
		goto err_opened;
	}
	if (disk_get_u32(buf) != SEGMENT_MAGIC ||
	    disk_get_u32(buf + SEGMENT_HEADER_CRC_OFFSET) !=
		raft_crc32c(0, buf, SEGMENT_HEADER_CRC_OFFSET) ||
	    (disk_get_u32(buf + 4) != SEGMENT_VERSION &&
	     disk_get_u32(buf + 4) != SEGMENT_VERSION_1) ||
	    disk_get_u64(buf + 8) != seg->sequence || disk_get_u64(buf + 16) == 0) {
		/* A file of only zeros is a creation whose data never reached
		 * the disk; anything else is a damaged header. */
		if (all_zero(io, fd, 0, size, &zero) != 0) {
			rv = KVD_EIO;
			disk_errmsg(errmsg, "read %s/%s: %s", dir, seg->name, strerror(errno));
			goto err_opened;
		}
		if (zero) {
			*torn = true;
			goto err_opened;
		}
		rv = KVD_ECORRUPT;
		disk_errmsg(errmsg,
			    "segment file %s/%s: bad header at offset 0 (magic, checksum, "
			    "version, sequence or first index)",
			    dir, seg->name);
		goto err_opened;
	}
	seg->first_index = disk_get_u64(buf + 16);
	seg->prev_term = disk_get_u64(buf + 24);
	seg->flags = disk_get_u32(buf + 32);
	seg->last_index = seg->first_index - 1;
	seg->last_term = seg->prev_term;
	*file_size = size;
err_opened:
	io->close(io->ctx, fd);
	return rv;
}

int raft_segment_check_closed(const struct raft_log_io *io, const char *dir, int dir_fd,
			      struct raft_segment *seg, char *errmsg)
{
	uint8_t seal_buf[RAFT_SEGMENT_SEAL_SIZE];
	struct raft_segment_record seal;
	struct raft_segment_record last;
	uint8_t *rec = NULL;
	uint64_t seal_off;
	uint64_t last_off;
	const char *why = NULL;
	uint64_t file_size = 0;
	int rv = 0;
	int fd;

	fd = io->openat(io->ctx, dir_fd, seg->name, O_RDONLY, 0);
	if (fd < 0) {
		disk_errmsg(errmsg, "open %s/%s: %s", dir, seg->name, strerror(errno));
		rv = KVD_EIO;
		goto err;
	}
	if (io->fsize(io->ctx, fd, &file_size) != 0) {
		disk_errmsg(errmsg, "stat %s/%s: %s", dir, seg->name, strerror(errno));
		rv = KVD_EIO;
		goto err_opened;
	}
	if (file_size <
	    RAFT_SEGMENT_HEADER_SIZE + RAFT_SEGMENT_RECORD_HEADER_SIZE + RAFT_SEGMENT_SEAL_SIZE) {
		rv = KVD_ECORRUPT;
		disk_errmsg(errmsg, "segment file %s/%s: closed segment too short (%lld bytes)",
			    dir, seg->name, (long long)file_size);
		goto err_opened;
	}
	seal_off = file_size - RAFT_SEGMENT_SEAL_SIZE;
	if (read_at(io, fd, seal_buf, sizeof(seal_buf), seal_off) != 0) {
		rv = KVD_EIO;
		disk_errmsg(errmsg, "read %s/%s: %s", dir, seg->name, strerror(errno));
		goto err_opened;
	}
	if (raft_segment_record_decode(seal_buf, sizeof(seal_buf), &seal, &why) != 0 ||
	    seal.type != RAFT_SEGMENT_TYPE_SEAL || seal.len != 8 ||
	    disk_get_u64(seal.payload) < RAFT_SEGMENT_HEADER_SIZE ||
	    disk_get_u64(seal.payload) + RAFT_SEGMENT_RECORD_HEADER_SIZE > seal_off ||
	    seal.index < seg->first_index || seal.term < seg->prev_term) {
		rv = KVD_ECORRUPT;
		disk_errmsg(errmsg, "segment file %s/%s: no valid seal at offset %" PRIu64 " (%s)",
			    dir, seg->name, seal_off, why != NULL ? why : "inconsistent seal");
		goto err_opened;
	}
	last_off = disk_get_u64(seal.payload);
	rec = malloc((size_t)(seal_off - last_off));
	if (rec == NULL) {
		rv = KVD_ENOMEM;
		goto err_opened;
	}
	if (read_at(io, fd, rec, (size_t)(seal_off - last_off), last_off) != 0) {
		rv = KVD_EIO;
		disk_errmsg(errmsg, "read %s/%s: %s", dir, seg->name, strerror(errno));
		goto err_rec;
	}
	why = NULL;
	if (raft_segment_record_decode(rec, seal_off - last_off, &last, &why) != 0 ||
	    last.size != seal_off - last_off || last.type == RAFT_SEGMENT_TYPE_SEAL ||
	    last.index != seal.index || last.term != seal.term) {
		rv = KVD_ECORRUPT;
		disk_errmsg(errmsg,
			    "segment file %s/%s: last record at offset %" PRIu64
			    " does not match the seal (%s)",
			    dir, seg->name, last_off, why != NULL ? why : "index or term differ");
		goto err_rec;
	}
	seg->last_index = seal.index;
	seg->last_term = seal.term;
	seg->last_batch = seal.batch;
	seg->size = file_size;
	seg->sealed = true;
err_rec:
	free(rec);
err_opened:
	io->close(io->ctx, fd);
err:
	return rv;
}

int raft_segment_index_reserve(struct raft_segment *seg, size_t n)
{
	size_t count = seg->offsets == NULL ? 0 : (size_t)(seg->last_index + 1 - seg->first_index);
	size_t want = count + n;
	size_t cap = seg->n_alloc == 0 ? 64 : seg->n_alloc;
	uint64_t *offsets;
	raft_term *terms;

	if (want <= seg->n_alloc && seg->offsets != NULL) {
		return 0;
	}
	while (cap < want) {
		cap *= 2;
	}
	offsets = realloc(seg->offsets, cap * sizeof(*offsets));
	if (offsets == NULL) {
		return KVD_ENOMEM;
	}
	seg->offsets = offsets;
	terms = realloc(seg->terms, cap * sizeof(*terms));
	if (terms == NULL) {
		return KVD_ENOMEM;
	}
	seg->terms = terms;
	seg->n_alloc = cap;
	return 0;
}

int raft_segment_index_push(struct raft_segment *seg, uint64_t offset, raft_term term)
{
	size_t count = (size_t)(seg->last_index + 1 - seg->first_index);
	int rv = raft_segment_index_reserve(seg, 1);
	if (rv != 0) {
		return rv;
	}
	seg->offsets[count] = offset;
	seg->terms[count] = term;
	return 0;
}

void raft_segment_index_drop(struct raft_segment *seg)
{
	free(seg->offsets);
	free(seg->terms);
	seg->offsets = NULL;
	seg->terms = NULL;
	seg->n_alloc = 0;
}

/* Looks for any verifiable record (entry or seal) that could belong to this
 * segment at an offset in [from, size); returns its offset or 0. */
static uint64_t find_valid_record(const uint8_t *map, uint64_t from, uint64_t size,
				  raft_index expect)
{
	uint64_t max_index = expect + (size - from) / RAFT_SEGMENT_RECORD_HEADER_SIZE;
	for (uint64_t p = from; p + RAFT_SEGMENT_RECORD_HEADER_SIZE <= size; p++) {
		struct raft_segment_record r;
		const char *why;
		uint32_t len = disk_get_u32(map + p);
		raft_index index = disk_get_u64(map + p + 8);
		if (len > size - p - RAFT_SEGMENT_RECORD_HEADER_SIZE || index + 1 < expect ||
		    index > max_index) {
			continue;
		}
		if (raft_segment_record_decode(map + p, size - p, &r, &why) == 0) {
			return p;
		}
	}
	return 0;
}

/* True when every verifiable record from offset p on carries one non-zero
 * batch tag, and that tag is batch (the tag of the valid record before the
 * bad one) or the tag after it (any tag when batch is 0 because the bad
 * record is the segment's first and the tag before it is unknown): a bad
 * record just before p then lies inside the last batch written to the file,
 * or is that batch's first record. */
static bool only_batch_after(const uint8_t *map, uint64_t p, uint64_t size, raft_index expect,
			     uint32_t batch, bool first)
{
	uint32_t tag = 0; /* of the records after the bad one */
	bool only = batch != 0 || first;
	while (only && p != 0 && p < size) {
		struct raft_segment_record r;
		const char *why;
		if (raft_segment_record_decode(map + p, size - p, &r, &why) == 0) {
			if (tag == 0) {
				tag = r.batch;
			}
			only = r.batch == tag && tag != 0 &&
			       (tag == batch || tag == raft_segment_batch_next(batch) ||
				(batch == 0 && first));
			p += r.size;
		} else {
			p = find_valid_record(map, p + 1, size, expect);
		}
	}
	return only;
}

/* Checks that a decoded record continues the segment; sets *why if not. */
static bool record_fits(const struct raft_segment *seg, const struct raft_segment_record *r,
			raft_index expect, raft_term term, const char **why)
{
	if (r->type == RAFT_SEGMENT_TYPE_SEAL) {
		size_t n = (size_t)(expect - seg->first_index);
		if (n == 0 || r->len != 8 || r->index != expect - 1 || r->term != term ||
		    disk_get_u64(r->payload) != seg->offsets[n - 1]) {
			*why = "seal does not match the records before it";
			return false;
		}
		return true;
	}
	if (r->index != expect) {
		*why = "index out of sequence";
		return false;
	}
	if (r->term < term) {
		*why = "term lower than the previous entry's";
		return false;
	}
	return true;
}

/* True when the bytes [p, size) of map are all zero: preallocated space
 * (docs/formats.md, "Preallocation"), or none at all. */
static bool zeros_from(const uint8_t *map, uint64_t p, uint64_t size)
{
	for (; p < size; p++) {
		if (map[p] != 0) {
			return false;
		}
	}
	return true;
}

/* Cuts a torn tail of the last segment at offset off. */
static int cut_tail(const struct raft_log_io *io, const char *dir, struct raft_segment *seg, int fd,
		    uint64_t off, uint64_t file_size, bool in_batch, uint32_t batch, char *note,
		    char *errmsg)
{
	if (io->ftruncate(io->ctx, fd, (off_t)off) != 0 || io->fdatasync(io->ctx, fd) != 0) {
		disk_errmsg(errmsg, "truncate %s/%s: %s", dir, seg->name, strerror(errno));
		return disk_errno_code(errno);
	}
	if (in_batch) {
		disk_errmsg(note,
			    "discarded %" PRIu64 " bytes of an unsynced batch (tag %" PRIu32
			    ", bad record followed by records of the same batch) at offset %" PRIu64
			    " of file %s/%s",
			    file_size - off, batch, off, dir, seg->name);
	} else {
		disk_errmsg(note,
			    "discarded %" PRIu64 " torn bytes at offset %" PRIu64 " of file %s/%s",
			    file_size - off, off, dir, seg->name);
	}
	return 0;
}

static int scan_records(const struct raft_log_io *io, const char *dir, struct raft_segment *seg,
			unsigned flags, int fd, const uint8_t *map, uint64_t size, char *note,
			char *errmsg)
{
	uint64_t off = RAFT_SEGMENT_HEADER_SIZE;
	raft_index expect = seg->first_index;
	raft_term term = seg->prev_term;
	uint32_t batch = seg->first_batch; /* tag of the last valid record (or the first's) */
	bool sealed = false;
	int rv;

	seg->last_index = seg->first_index - 1;
	while (off < size) {
		struct raft_segment_record r;
		const char *why = NULL;
		uint64_t next = 0;
		bool decoded = raft_segment_record_decode(map + off, size - off, &r, &why) == 0;
		if (decoded && !record_fits(seg, &r, expect, term, &why)) {
			/* An intact record in the wrong place is no torn write. */
			disk_errmsg(errmsg,
				    "segment file %s/%s: record at offset %" PRIu64
				    " passes its checksum but does not fit (%s)",
				    dir, seg->name, off, why);
			return KVD_ECORRUPT;
		}
		if (decoded) {
			if (r.type == RAFT_SEGMENT_TYPE_SEAL) {
				/* Preallocated zeros after the seal of the last
				 * segment: the rollover's cut did not reach the
				 * disk before the crash; cut them now. */
				if (off + r.size != size && (flags & RAFT_SEGMENT_SCAN_LAST) &&
				    zeros_from(map, off + r.size, size)) {
					if (io->ftruncate(io->ctx, fd, (off_t)(off + r.size)) !=
						0 ||
					    io->fdatasync(io->ctx, fd) != 0) {
						disk_errmsg(errmsg, "truncate %s/%s: %s", dir,
							    seg->name, strerror(errno));
						return disk_errno_code(errno);
					}
					size = off + r.size;
				}
				if (off + r.size != size) {
					disk_errmsg(errmsg,
						    "segment file %s/%s: %" PRIu64
						    " bytes after the seal at offset %" PRIu64,
						    dir, seg->name, size - off - r.size, off);
					return KVD_ECORRUPT;
				}
				sealed = true;
				batch = r.batch;
				off += r.size;
				break;
			}
			rv = raft_segment_index_push(seg, off, r.term);
			if (rv != 0) {
				return rv;
			}
			seg->last_index = expect;
			expect++;
			term = r.term;
			batch = r.batch;
			off += r.size;
			continue;
		}
		if ((flags & RAFT_SEGMENT_SCAN_LAST) && zeros_from(map, off, size)) {
			break; /* preallocated space: the end of the log */
		}
		if (flags & RAFT_SEGMENT_SCAN_LAST) {
			next = find_valid_record(map, off + 1, size, expect);
			if (next == 0 || (!(flags & RAFT_SEGMENT_SCAN_STRICT) &&
					  only_batch_after(map, next, size, expect, batch,
							   expect == seg->first_index))) {
				rv = cut_tail(io, dir, seg, fd, off, size, next != 0, batch, note,
					      errmsg);
				if (rv != 0) {
					return rv;
				}
				break;
			}
		}
		if (next != 0) {
			disk_errmsg(errmsg,
				    "segment file %s/%s: bad record at offset %" PRIu64
				    " (%s), followed by a valid record at offset %" PRIu64,
				    dir, seg->name, off, why, next);
		} else {
			disk_errmsg(errmsg,
				    "segment file %s/%s: bad record at offset %" PRIu64
				    " (%s) in a closed segment",
				    dir, seg->name, off, why);
		}
		return KVD_ECORRUPT;
	}
	seg->last_index = expect - 1;
	seg->last_term = term;
	seg->size = off;
	seg->sealed = sealed;
	seg->last_batch = expect > seg->first_index || sealed ? batch : 0;
	return 0;
}

int raft_segment_scan(const struct raft_log_io *io, const char *dir, int dir_fd,
		      struct raft_segment *seg, unsigned flags, char *note, char *errmsg)
{
	raft_index known_last = seg->last_index;
	raft_term known_term = seg->last_term;
	struct raft_segment probe = *seg;
	uint64_t file_size = 0;
	const uint8_t *map = NULL;
	bool torn = false;
	int rv = 0;
	int fd;

	/* Re-read the header: for a closed segment this is the full check. */
	rv = raft_segment_header_read(io, dir, dir_fd, &probe, &file_size, &torn, errmsg);
	if (rv != 0) {
		goto err;
	}
	if (torn || probe.first_index != seg->first_index || probe.prev_term != seg->prev_term) {
		rv = KVD_ECORRUPT;
		disk_errmsg(errmsg, "segment file %s/%s: header at offset 0 changed or torn", dir,
			    seg->name);
		goto err;
	}
	fd = io->openat(io->ctx, dir_fd, seg->name,
			(flags & RAFT_SEGMENT_SCAN_LAST) ? O_RDWR : O_RDONLY, 0);
	if (fd < 0) {
		rv = KVD_EIO;
		disk_errmsg(errmsg, "open %s/%s: %s", dir, seg->name, strerror(errno));
		goto err;
	}
	if (io->fsize(io->ctx, fd, &file_size) != 0 || file_size < RAFT_SEGMENT_HEADER_SIZE) {
		rv = KVD_EIO;
		disk_errmsg(errmsg, "stat %s/%s: %s", dir, seg->name, strerror(errno));
		goto err_opened;
	}
	if (io->map(io->ctx, fd, (size_t)file_size, (const void **)&map) != 0) {
		rv = KVD_EIO;
		disk_errmsg(errmsg, "map %s/%s: %s", dir, seg->name, strerror(errno));
		goto err_opened;
	}
	raft_segment_index_drop(seg);
	rv = raft_segment_index_reserve(seg, 0);
	if (rv != 0) {
		goto err_mapped;
	}
	rv = scan_records(io, dir, seg, flags, fd, map, file_size, note, errmsg);
	if (rv != 0) {
		goto err_mapped;
	}
	if (!(flags & RAFT_SEGMENT_SCAN_LAST) &&
	    (!seg->sealed || seg->last_index != known_last || seg->last_term != known_term)) {
		rv = KVD_ECORRUPT;
		disk_errmsg(errmsg,
			    "segment file %s/%s: records end at index %" PRIu64
			    " but the segment was closed at index %" PRIu64,
			    dir, seg->name, seg->last_index, known_last);
	}
err_mapped:
	io->unmap(io->ctx, map, (size_t)file_size);
err_opened:
	io->close(io->ctx, fd);
err:
	if (rv != 0) {
		raft_segment_index_drop(seg);
		seg->last_index = known_last;
		seg->last_term = known_term;
	}
	return rv;
}

int raft_segment_create(const struct raft_log_io *io, const char *dir, int dir_fd,
			struct raft_segment *seg, int *fd, char *errmsg)
{
	uint8_t buf[RAFT_SEGMENT_HEADER_SIZE];
	size_t done = 0;
	int rv = 0;
	int f;

	raft_segment_name_format(seg->name, seg->sequence);
	f = io->openat(io->ctx, dir_fd, seg->name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (f < 0) {
		rv = errno == EEXIST ? KVD_EEXIST : disk_errno_code(errno);
		disk_errmsg(errmsg, "create %s/%s: %s", dir, seg->name, strerror(errno));
		return rv;
	}
	raft_segment_header_encode(seg, buf);
	while (done < sizeof(buf)) {
		ssize_t w = io->pwrite(io->ctx, f, buf + done, sizeof(buf) - done, (off_t)done);
		if (w < 0 && errno == EINTR) {
			continue;
		}
		if (w < 0) {
			rv = disk_errno_code(errno);
			disk_errmsg(errmsg, "write %s/%s: %s", dir, seg->name, strerror(errno));
			io->close(io->ctx, f);
			io->unlinkat(io->ctx, dir_fd, seg->name);
			return rv;
		}
		done += (size_t)w;
	}
	seg->last_index = seg->first_index - 1;
	seg->last_term = seg->prev_term;
	seg->size = RAFT_SEGMENT_HEADER_SIZE;
	seg->sealed = false;
	*fd = f;
	return 0;
}
