/*
 * log_recovery.c: bringing the segmented log back after a stop or a crash.
 *
 * What a crash can leave, given how raft/log_store.c writes (only the last
 * segment is ever written; a rollover syncs the sealed file before creating
 * the next; truncation unlinks newest first; a reset makes its base segment
 * durable before unlinking anything):
 *  - a torn tail at the end of the last segment: cut off, with a note;
 *  - a last segment whose header never reached the disk (too short, or all
 *    zeros): removed, with a note;
 *  - segments older than the newest BASE segment (an interrupted reset):
 *    removed, with a note.
 * Anything else that fails a check is corruption: KVD_ECORRUPT with the file
 * and byte offset, and nothing is dropped.
 *
 * Cost: closed segments are checked by header, seal and last record (three
 * small reads each); only the last segment is read in full. Trade-off in
 * docs/formats.md.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "raft/disk_codec.h"
#include "raft/log_store_internal.h"

static void note_append(char *errmsg, const char *note)
{
	size_t used;
	if (errmsg == NULL || note[0] == '\0') {
		return;
	}
	used = strlen(errmsg);
	snprintf(errmsg + used, KVD_ERRMSG_SIZE - used, "%s%s", used > 0 ? "; " : "", note);
}

static int seg_cmp(const void *a, const void *b)
{
	const struct raft_segment *x = a;
	const struct raft_segment *y = b;
	return x->sequence < y->sequence ? -1 : x->sequence > y->sequence;
}

/* Adds one directory entry to the list if it names a segment. */
static int dir_entry_cb(void *arg, const char *name)
{
	struct raft_log_store *s = arg;
	uint64_t seq;
	int rv;
	if (!raft_segment_name_parse(name, &seq)) {
		return 0;
	}
	rv = raft_log_store_segs_reserve(s, s->n_segs + 1);
	if (rv != 0) {
		return rv;
	}
	memset(&s->segs[s->n_segs], 0, sizeof(s->segs[0]));
	s->segs[s->n_segs].sequence = seq;
	raft_segment_name_format(s->segs[s->n_segs].name, seq);
	s->n_segs++;
	return 0;
}

/* Lists the segment files of the directory, sorted by sequence. */
static int dir_list(struct raft_log_store *s, char *errmsg)
{
	int rv = s->io.list(s->io.ctx, s->dir_fd, dir_entry_cb, s);
	if (rv == -1) {
		disk_errmsg(errmsg, "list %s: %s", s->dir, strerror(errno));
		rv = KVD_EIO;
	}
	if (rv == 0 && s->n_segs > 0) {
		qsort(s->segs, s->n_segs, sizeof(s->segs[0]), seg_cmp);
	}
	return rv;
}

/* Reads every header; removes a last file whose header never reached the disk
 * and every file older than the newest base segment (an interrupted reset). */
static int recover_headers(struct raft_log_store *s, char *errmsg)
{
	char note[KVD_ERRMSG_SIZE];
	size_t base = 0;
	int rv;

	for (size_t i = 0; i < s->n_segs; i++) {
		uint64_t size = 0;
		bool torn = false;
		rv = raft_segment_header_read(&s->io, s->dir, s->dir_fd, &s->segs[i], &size, &torn,
					      errmsg);
		if (rv != 0) {
			return rv;
		}
		if (torn && i + 1 < s->n_segs) {
			disk_errmsg(errmsg,
				    "segment file %s/%s: incomplete header at offset 0 in a "
				    "segment that is not the last",
				    s->dir, s->segs[i].name);
			return KVD_ECORRUPT;
		}
		if (torn) {
			snprintf(note, sizeof(note),
				 "removed segment file %s/%s whose header was never completely "
				 "written (%" PRIu64 " bytes)",
				 s->dir, s->segs[i].name, size);
			rv = raft_log_store_segment_remove(s, i, errmsg);
			if (rv != 0) {
				return rv;
			}
			note_append(s->notes, note);
			break;
		}
		if (s->segs[i].flags & RAFT_SEGMENT_FLAG_BASE) {
			base = i;
		}
	}
	if (base > 0) {
		snprintf(note, sizeof(note),
			 "removed %zu segment files older than %s/%s, left over from an "
			 "interrupted reset",
			 base, s->dir, s->segs[base].name);
		/* The base segment's name first: the reset may have died before
		 * its directory fsync, and a crash that kept an unlink below
		 * but not that name would leave no log at all (sim store seed
		 * 191 once preallocation moved the trajectories). */
		rv = raft_log_store_dir_sync(s, errmsg);
		if (rv != 0) {
			return rv;
		}
		for (size_t i = 0; i < base; i++) {
			rv = raft_log_store_segment_remove(s, 0, errmsg);
			if (rv != 0) {
				return rv;
			}
		}
		note_append(s->notes, note);
	}
	return 0;
}

/* Checks closed segments cheaply, the last one fully, and continuity. */
static int recover_segments(struct raft_log_store *s, char *errmsg)
{
	char note[KVD_ERRMSG_SIZE] = "";
	int rv;

	for (size_t i = 0; i < s->n_segs; i++) {
		struct raft_segment *seg = &s->segs[i];
		if (i + 1 < s->n_segs) {
			rv = raft_segment_check_closed(&s->io, s->dir, s->dir_fd, seg, errmsg);
			if (rv == 0 && s->verify_all) {
				rv = raft_segment_scan(&s->io, s->dir, s->dir_fd, seg, 0, NULL,
						       errmsg);
				raft_segment_index_drop(seg); /* memory: reload on read */
			}
		} else {
			/* The first record of a segment created after a
			 * rollover belongs to the batch after the seal's. */
			seg->first_batch = i > 0 && s->segs[i - 1].last_batch != 0
					       ? raft_segment_batch_next(s->segs[i - 1].last_batch)
					       : 0;
			rv = raft_segment_scan(
			    &s->io, s->dir, s->dir_fd, seg,
			    RAFT_SEGMENT_SCAN_LAST |
				(s->strict_recovery ? RAFT_SEGMENT_SCAN_STRICT : 0),
			    note, errmsg);
		}
		if (rv != 0) {
			return rv;
		}
		if (i > 0 && (seg->first_index != s->segs[i - 1].last_index + 1 ||
			      seg->prev_term != s->segs[i - 1].last_term)) {
			disk_errmsg(errmsg,
				    "segment files %s/%s and %s are not contiguous: the first ends "
				    "at index %" PRIu64 " term %" PRIu64 ", the second starts at "
				    "index %" PRIu64 " after term %" PRIu64,
				    s->dir, s->segs[i - 1].name, seg->name,
				    s->segs[i - 1].last_index, s->segs[i - 1].last_term,
				    seg->first_index, seg->prev_term);
			return KVD_ECORRUPT;
		}
	}
	note_append(s->notes, note);
	return 0;
}

/* Opens the last segment for appending (unless sealed) and makes what
 * recovery found durable, in case the previous process died before its
 * kernel wrote it back. */
static int open_tail(struct raft_log_store *s, char *errmsg)
{
	struct raft_segment *last = raft_log_store_last_segment(s);
	if (last != NULL && !last->sealed) {
		s->fd = s->io.openat(s->io.ctx, s->dir_fd, last->name, O_RDWR, 0);
		if (s->fd < 0 || s->io.fdatasync(s->io.ctx, s->fd) != 0) {
			disk_errmsg(errmsg, "open %s/%s: %s", s->dir, last->name, strerror(errno));
			return disk_errno_code(errno);
		}
	}
	raft_log_store_bounds_update(s);
	/* New appends get the tag after the log's last batch, which is
	 * durable now (docs/formats.md, batch tags). */
	s->batch = 0;
	for (size_t i = s->n_segs; i > 0 && s->batch == 0; i--) {
		s->batch = s->segs[i - 1].last_batch;
	}
	s->batch_used = true;
	raft_log_store_mark_synced(s);
	s->next_sequence = last != NULL ? last->sequence + 1 : 1;
	return raft_log_store_dir_sync(s, errmsg);
}

int raft_log_recovery_run(struct raft_log_store *s, char *errmsg)
{
	int rv = dir_list(s, errmsg);
	if (rv == 0) {
		rv = recover_headers(s, errmsg);
	}
	if (rv == 0) {
		rv = recover_segments(s, errmsg);
	}
	if (rv == 0) {
		rv = open_tail(s, errmsg);
	}
	return rv;
}
