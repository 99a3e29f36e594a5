/*
 * snapshot.h: the snapshot stream: writing a view to a file, reading one back
 * record by record, and restoring one into a fresh database directory.
 *
 * A stream is one LZ4 frame (block and content checksums on) whose content is
 * a header (magic, version, applied index, term, configuration blob), the
 * user key-value records of one generation in bytewise key order, and a
 * trailer with the record count. docs/formats-engine.md has the byte layout.
 * The same stream is what `kvdump --format snapshot` writes and kvload reads.
 *
 * Thread: none of these touch shared state; call them from a worker thread
 * (they do file I/O and fsync). A view may be written while applies go on.
 */
#ifndef KVD_ENGINE_SNAPSHOT_H
#define KVD_ENGINE_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvd/errors.h"
#include "engine/engine.h"

#define ENGINE_SNAPSHOT_CONFIG_MAX ((size_t)1 << 20) /* bytes */
#define ENGINE_SNAPSHOT_VALUE_MAX  ((size_t)1 << 28) /* bytes, sanity bound */

/* Header of a stream. config is malloc'd (NULL when the stream carries none);
 * release with engine_snapshot_meta_clear(). */
struct engine_snapshot_meta {
	uint64_t index;
	uint64_t term;
	void *config;
	size_t config_len; /* bytes */
	uint64_t size;	   /* bytes of the compressed file; 0 for a pipe */
};

/* Frees meta->config and zeroes *meta. */
void engine_snapshot_meta_clear(struct engine_snapshot_meta *meta);

/*
 * Serialize view (borrowed) into path: written to "<path>.tmp", fsynced,
 * renamed to path, directory fsynced. On success *size (may be NULL) is the
 * file size in bytes. Returns 0, KVD_ENOSPC, KVD_EIO, KVD_ENOMEM; the
 * temporary file is removed on failure.
 */
int engine_view_write(const struct engine_view *view, const char *path, uint64_t *size,
		      char *errmsg);

/* Same stream to an open fd (borrowed; e.g. stdout for kvdump), no fsync. */
int engine_view_write_fd(const struct engine_view *view, int fd, uint64_t *size, char *errmsg);

/*
 * Read the header of the stream in path into *meta (see struct above).
 * Returns 0, KVD_ENOTFOUND (no file), KVD_ECORRUPT, KVD_EIO, KVD_ENOMEM.
 */
int engine_snapshot_read_meta(const char *path, struct engine_snapshot_meta *meta, char *errmsg);

/*
 * Streaming reader. open() reads and checks the header. next() yields records
 * in order (pointers valid until the next call) and sets *end once the
 * trailer was read, its count matched, the frame's content checksum verified
 * and no byte follows the frame. Any mismatch, checksum failure, truncation,
 * out-of-order key or invalid key gives KVD_ECORRUPT with errmsg naming the
 * file and offset. open_fd() borrows fd (not closed by close()).
 */
struct engine_snapshot_reader;
int engine_snapshot_reader_open(const char *path, struct engine_snapshot_reader **reader,
				char *errmsg);
int engine_snapshot_reader_open_fd(int fd, const char *name, struct engine_snapshot_reader **reader,
				   char *errmsg);
/* The header (borrowed from the reader). */
const struct engine_snapshot_meta *
engine_snapshot_reader_meta(const struct engine_snapshot_reader *reader);
int engine_snapshot_reader_next(struct engine_snapshot_reader *reader, struct engine_record *rec,
				bool *end, char *errmsg);
/* NULL does nothing. */
void engine_snapshot_reader_close(struct engine_snapshot_reader *reader);

/*
 * Build a fresh database directory dbdir_new (must not exist) from the stream
 * in path, holding exactly its records, index, term and configuration. The
 * live database is never touched; install it with engine_swap(). On any
 * failure the partial directory is removed. *meta (may be NULL) receives the
 * header on success. Returns 0, KVD_EEXIST, KVD_ECORRUPT, KVD_ENOSPC,
 * KVD_EIO, KVD_ENOMEM.
 */
int engine_snapshot_restore(const char *path, const char *dbdir_new,
			    struct engine_snapshot_meta *meta, char *errmsg);

/*
 * Read the whole stream in path and check it as a restore would (header,
 * record order, trailer count, checksums, nothing after the frame) without
 * building anything. *meta (may be NULL) receives the header on success.
 * Returns 0, KVD_ENOTFOUND, KVD_ECORRUPT, KVD_EIO, KVD_ENOMEM.
 */
int engine_snapshot_check(const char *path, struct engine_snapshot_meta *meta, char *errmsg);

#endif
