/*
 * snapshot.c: the snapshot stream (writer, streaming reader, restore).
 *
 * The stream is a single LZ4 frame with block checksums and a content
 * checksum, so every corruption is caught either at the block it hits or, at
 * the latest, when the frame ends. Inside the frame (all integers
 * big-endian):
 *
 *   header   "KVDSNAP\0" | u32 version (2) | u64 index | u64 term |
 *            u32 config_len | config bytes        (config_len 0: none)
 *   record   'R' | u32 key_len | u32 value_len | u64 revision | key | value
 *            (repeated; 1 <= revision <= index)
 *
 * Version 1 streams (no revision field in records) are still read: their
 * records get revision max(index, 1), as an upgraded format-1 database does.
 *   trailer  'E' | u64 record count
 *
 * Records come in strictly increasing bytewise key order, because the writer
 * walks one generation of the LevelDB key space in order; the reader checks
 * that too, so a stream it accepts maps one-to-one onto a database.
 *
 * Durability of a written file: data to "<path>.tmp", fsync, rename, fsync of
 * the directory; a crash leaves either the old file or the complete new one.
 * The reader never asserts on file bytes: every length is bounded and every
 * mismatch is KVD_ECORRUPT with the file name and offset.
 */
#include "engine/snapshot.h"
#include "engine/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <lz4frame.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SNAP_MAGIC	"KVDSNAP" /* 8 bytes with the NUL */
#define SNAP_VERSION	2
#define SNAP_VERSION_V1 1  /* records without a revision; read only */
#define SNAP_HEADER_FIX 32 /* magic + version + index + term + config_len */
#define SNAP_TAG_RECORD 'R'
#define SNAP_TAG_END	'E'
#define WR_CHUNK	(64 * 1024)  /* bytes staged per compress call */
#define RD_IN		(64 * 1024)  /* bytes read from the file at a time */
#define RD_OUT		(256 * 1024) /* decompressed bytes per call */

static void put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t get_u32(const unsigned char *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

void engine_snapshot_meta_clear(struct engine_snapshot_meta *meta)
{
	if (meta == NULL) {
		return;
	}
	free(meta->config);
	memset(meta, 0, sizeof(*meta));
}

/* ---- writer ---- */

struct writer {
	int fd;
	const char *name;
	char *errmsg;
	LZ4F_cctx *cctx;
	unsigned char *stage;
	size_t staged;
	unsigned char *out;
	size_t out_cap;
	uint64_t written; /* compressed bytes written to fd */
};

static int wr_raw(struct writer *w, const unsigned char *buf, size_t n)
{
	while (n > 0) {
		ssize_t r = write(w->fd, buf, n);
		if (r < 0 && errno == EINTR) {
			continue;
		}
		if (r < 0) {
			engine_errmsg(w->errmsg, "write %s at offset %llu: %s", w->name,
				      (unsigned long long)w->written, strerror(errno));
			return errno == ENOSPC ? KVD_ENOSPC : KVD_EIO;
		}
		buf += r;
		n -= (size_t)r;
		w->written += (uint64_t)r;
	}
	return 0;
}

static int wr_flush(struct writer *w)
{
	size_t r;

	if (w->staged == 0) {
		return 0;
	}
	r = LZ4F_compressUpdate(w->cctx, w->out, w->out_cap, w->stage, w->staged, NULL);
	w->staged = 0;
	if (LZ4F_isError(r)) {
		engine_errmsg(w->errmsg, "compress %s: %s", w->name, LZ4F_getErrorName(r));
		return KVD_EIO;
	}
	return wr_raw(w, w->out, r);
}

static int wr_put(struct writer *w, const void *src, size_t n)
{
	const unsigned char *p = src;
	int rv;

	while (n > 0) {
		size_t take = WR_CHUNK - w->staged;
		if (take > n) {
			take = n;
		}
		memcpy(w->stage + w->staged, p, take);
		w->staged += take;
		p += take;
		n -= take;
		if (w->staged == WR_CHUNK) {
			rv = wr_flush(w);
			if (rv != 0) {
				return rv;
			}
		}
	}
	return 0;
}

static int wr_header(struct writer *w, const struct engine_view *view)
{
	unsigned char hdr[SNAP_HEADER_FIX];
	const void *config;
	size_t config_len;
	uint64_t index, term;
	int rv;

	engine_view_meta(view, &index, &term, &config, &config_len);
	if (config_len > ENGINE_SNAPSHOT_CONFIG_MAX) {
		engine_errmsg(w->errmsg, "%s: configuration of %zu bytes too large", w->name,
			      config_len);
		return KVD_ETOOBIG;
	}
	memcpy(hdr, SNAP_MAGIC, 8);
	put_u32(hdr + 8, SNAP_VERSION);
	engine_put_u64(hdr + 12, index);
	engine_put_u64(hdr + 20, term);
	put_u32(hdr + 28, (uint32_t)config_len);
	rv = wr_put(w, hdr, sizeof(hdr));
	if (rv == 0 && config_len > 0) {
		rv = wr_put(w, config, config_len);
	}
	return rv;
}

static int wr_records(struct writer *w, const struct engine_view *view)
{
	struct engine_iter *it = NULL;
	struct engine_record rec;
	unsigned char hdr[17];
	uint64_t count = 0;
	bool end = false;
	int rv;

	rv = engine_view_iter_open(view, &it);
	if (rv != 0) {
		return rv;
	}
	for (;;) {
		rv = engine_iter_next(it, &rec, &end);
		if (rv != 0 || end) {
			break;
		}
		if (rec.value_len > ENGINE_SNAPSHOT_VALUE_MAX) {
			engine_errmsg(w->errmsg, "%s: value of %zu bytes too large", w->name,
				      rec.value_len);
			rv = KVD_ETOOBIG;
			break;
		}
		hdr[0] = SNAP_TAG_RECORD;
		put_u32(hdr + 1, (uint32_t)rec.key_len);
		put_u32(hdr + 5, (uint32_t)rec.value_len);
		engine_put_u64(hdr + 9, rec.revision);
		rv = wr_put(w, hdr, sizeof(hdr));
		if (rv == 0) {
			rv = wr_put(w, rec.key, rec.key_len);
		}
		if (rv == 0) {
			rv = wr_put(w, rec.value, rec.value_len);
		}
		if (rv != 0) {
			break;
		}
		count++;
	}
	engine_iter_close(it);
	if (rv == 0) {
		hdr[0] = SNAP_TAG_END;
		engine_put_u64(hdr + 1, count);
		rv = wr_put(w, hdr, 9);
	}
	return rv;
}

static int write_stream(const struct engine_view *view, int fd, const char *name, uint64_t *size,
			char *errmsg)
{
	LZ4F_preferences_t prefs;
	struct writer w = {.fd = fd, .name = name, .errmsg = errmsg};
	size_t r;
	int rv;

	memset(&prefs, 0, sizeof(prefs));
	prefs.frameInfo.blockSizeID = LZ4F_max256KB;
	prefs.frameInfo.blockMode = LZ4F_blockLinked;
	prefs.frameInfo.blockChecksumFlag = LZ4F_blockChecksumEnabled;
	prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
	w.out_cap = LZ4F_compressBound(WR_CHUNK, &prefs);
	if (w.out_cap < LZ4F_HEADER_SIZE_MAX) {
		w.out_cap = LZ4F_HEADER_SIZE_MAX;
	}
	w.stage = malloc(WR_CHUNK);
	w.out = malloc(w.out_cap);
	if (w.stage == NULL || w.out == NULL ||
	    LZ4F_isError(LZ4F_createCompressionContext(&w.cctx, LZ4F_VERSION))) {
		rv = KVD_ENOMEM;
		goto out;
	}
	r = LZ4F_compressBegin(w.cctx, w.out, w.out_cap, &prefs);
	if (LZ4F_isError(r)) {
		engine_errmsg(errmsg, "compress %s: %s", name, LZ4F_getErrorName(r));
		rv = KVD_EIO;
		goto out;
	}
	rv = wr_raw(&w, w.out, r);
	if (rv == 0) {
		rv = wr_header(&w, view);
	}
	if (rv == 0) {
		rv = wr_records(&w, view);
	}
	if (rv == 0) {
		rv = wr_flush(&w);
	}
	if (rv != 0) {
		goto out;
	}
	r = LZ4F_compressEnd(w.cctx, w.out, w.out_cap, NULL);
	if (LZ4F_isError(r)) {
		engine_errmsg(errmsg, "compress %s: %s", name, LZ4F_getErrorName(r));
		rv = KVD_EIO;
		goto out;
	}
	rv = wr_raw(&w, w.out, r);
	if (rv == 0 && size != NULL) {
		*size = w.written;
	}
out:
	LZ4F_freeCompressionContext(w.cctx);
	free(w.out);
	free(w.stage);
	return rv;
}

int engine_view_write_fd(const struct engine_view *view, int fd, uint64_t *size, char *errmsg)
{
	return write_stream(view, fd, "stream", size, errmsg);
}

int engine_view_write(const struct engine_view *view, const char *path, uint64_t *size,
		      char *errmsg)
{
	char tmp[4096];
	uint64_t n = 0;
	int fd;
	int rv;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
		engine_errmsg(errmsg, "%s: path too long", path);
		return KVD_EINVAL;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		engine_errmsg(errmsg, "create %s: %s", tmp, strerror(errno));
		return errno == ENOSPC ? KVD_ENOSPC : KVD_EIO;
	}
	rv = write_stream(view, fd, tmp, &n, errmsg);
	if (rv != 0) {
		goto err_fd;
	}
	if (fsync(fd) != 0) {
		engine_errmsg(errmsg, "fsync %s: %s", tmp, strerror(errno));
		rv = errno == ENOSPC ? KVD_ENOSPC : KVD_EIO;
		goto err_fd;
	}
	if (close(fd) != 0) {
		fd = -1;
		engine_errmsg(errmsg, "close %s: %s", tmp, strerror(errno));
		rv = KVD_EIO;
		goto err_fd;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		engine_errmsg(errmsg, "rename %s to %s: %s", tmp, path, strerror(errno));
		rv = KVD_EIO;
		goto err_fd;
	}
	rv = engine_fsync_dir(path, false, errmsg);
	if (rv == 0 && size != NULL) {
		*size = n;
	}
	return rv;

err_fd:
	if (fd >= 0) {
		close(fd);
	}
	unlink(tmp);
	return rv;
}

/* ---- reader ---- */

struct engine_snapshot_reader {
	int fd;
	bool own_fd;
	char name[256];
	LZ4F_dctx *dctx;
	unsigned char *in;
	size_t in_pos, in_len;
	bool in_eof;
	uint64_t in_offset; /* compressed bytes consumed */
	unsigned char *out;
	size_t out_pos, out_len;
	bool frame_done;
	uint64_t offset; /* decompressed bytes consumed */
	char *rec;
	size_t rec_cap;
	char prev[ENGINE_KEY_MAX];
	size_t prev_len; /* 0: no record yet */
	uint64_t count;
	bool finished;
	uint32_t version; /* SNAP_VERSION or SNAP_VERSION_V1 */
	struct engine_snapshot_meta meta;
};

static int rd_corrupt(struct engine_snapshot_reader *r, char *errmsg, const char *why)
{
	engine_errmsg(errmsg, "%s: %s (stream offset %llu, file offset %llu)", r->name, why,
		      (unsigned long long)r->offset, (unsigned long long)r->in_offset);
	return KVD_ECORRUPT;
}

/* Refills the input buffer once it is consumed. */
static int rd_input(struct engine_snapshot_reader *r, char *errmsg)
{
	ssize_t n;

	if (r->in_pos < r->in_len || r->in_eof) {
		return 0;
	}
	do {
		n = read(r->fd, r->in, RD_IN);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		engine_errmsg(errmsg, "read %s at offset %llu: %s", r->name,
			      (unsigned long long)r->in_offset, strerror(errno));
		return KVD_EIO;
	}
	r->in_pos = 0;
	r->in_len = (size_t)n;
	r->in_eof = n == 0;
	return 0;
}

/* Decompresses until at least one output byte is available. */
static int rd_fill(struct engine_snapshot_reader *r, char *errmsg)
{
	int rv;

	r->out_pos = r->out_len = 0;
	for (;;) {
		size_t dst = RD_OUT, src, ret;

		if (r->frame_done) {
			return rd_corrupt(r, errmsg, "frame ends before the trailer");
		}
		rv = rd_input(r, errmsg);
		if (rv != 0) {
			return rv;
		}
		if (r->in_pos == r->in_len) {
			return rd_corrupt(r, errmsg, "truncated");
		}
		src = r->in_len - r->in_pos;
		ret = LZ4F_decompress(r->dctx, r->out, &dst, r->in + r->in_pos, &src, NULL);
		if (LZ4F_isError(ret)) {
			return rd_corrupt(r, errmsg, LZ4F_getErrorName(ret));
		}
		r->in_pos += src;
		r->in_offset += src;
		if (ret == 0) {
			r->frame_done = true; /* content checksum verified */
		}
		if (dst > 0) {
			r->out_len = dst;
			return 0;
		}
	}
}

static int rd_bytes(struct engine_snapshot_reader *r, void *dst, size_t n, char *errmsg)
{
	unsigned char *p = dst;
	int rv;

	while (n > 0) {
		size_t take;

		if (r->out_pos == r->out_len) {
			rv = rd_fill(r, errmsg);
			if (rv != 0) {
				return rv;
			}
		}
		take = r->out_len - r->out_pos;
		if (take > n) {
			take = n;
		}
		memcpy(p, r->out + r->out_pos, take);
		r->out_pos += take;
		r->offset += take;
		p += take;
		n -= take;
	}
	return 0;
}

/* After the trailer: the frame must end (verifying the content checksum)
 * with no further content and no bytes after it. */
static int rd_finish(struct engine_snapshot_reader *r, char *errmsg)
{
	int rv;

	if (r->out_pos < r->out_len) {
		return rd_corrupt(r, errmsg, "data after the trailer");
	}
	while (!r->frame_done) {
		size_t dst = RD_OUT, src, ret;

		rv = rd_input(r, errmsg);
		if (rv != 0) {
			return rv;
		}
		if (r->in_pos == r->in_len) {
			return rd_corrupt(r, errmsg, "truncated before the frame end");
		}
		src = r->in_len - r->in_pos;
		ret = LZ4F_decompress(r->dctx, r->out, &dst, r->in + r->in_pos, &src, NULL);
		if (LZ4F_isError(ret)) {
			return rd_corrupt(r, errmsg, LZ4F_getErrorName(ret));
		}
		r->in_pos += src;
		r->in_offset += src;
		if (dst > 0) {
			return rd_corrupt(r, errmsg, "data after the trailer");
		}
		r->frame_done = ret == 0;
	}
	rv = rd_input(r, errmsg);
	if (rv != 0) {
		return rv;
	}
	if (r->in_pos < r->in_len) {
		return rd_corrupt(r, errmsg, "bytes after the LZ4 frame");
	}
	return 0;
}

/* Reads the LZ4 frame header and insists on block and content checksums. */
static int rd_frame_header(struct engine_snapshot_reader *r, char *errmsg)
{
	LZ4F_frameInfo_t info;
	size_t src, ret;
	ssize_t n;

	while (r->in_len < LZ4F_HEADER_SIZE_MAX && !r->in_eof) {
		do {
			n = read(r->fd, r->in + r->in_len, RD_IN - r->in_len);
		} while (n < 0 && errno == EINTR);
		if (n < 0) {
			engine_errmsg(errmsg, "read %s: %s", r->name, strerror(errno));
			return KVD_EIO;
		}
		r->in_len += (size_t)n;
		r->in_eof = n == 0;
	}
	r->in_eof = false; /* rd_input() reads again once the buffer is used */
	src = r->in_len;
	memset(&info, 0, sizeof(info));
	ret = LZ4F_getFrameInfo(r->dctx, &info, r->in, &src);
	if (LZ4F_isError(ret) || src == 0) {
		return rd_corrupt(r, errmsg,
				  LZ4F_isError(ret) ? LZ4F_getErrorName(ret) : "no LZ4 frame");
	}
	r->in_pos = src;
	r->in_offset = src;
	if (info.blockChecksumFlag != LZ4F_blockChecksumEnabled ||
	    info.contentChecksumFlag != LZ4F_contentChecksumEnabled) {
		return rd_corrupt(r, errmsg, "LZ4 frame without block and content checksums");
	}
	return 0;
}

static int rd_header(struct engine_snapshot_reader *r, char *errmsg)
{
	unsigned char hdr[SNAP_HEADER_FIX];
	uint32_t config_len;
	int rv;

	rv = rd_bytes(r, hdr, sizeof(hdr), errmsg);
	if (rv != 0) {
		return rv;
	}
	if (memcmp(hdr, SNAP_MAGIC, 8) != 0) {
		return rd_corrupt(r, errmsg, "not a kvd snapshot stream (bad magic)");
	}
	r->version = get_u32(hdr + 8);
	if (r->version != SNAP_VERSION && r->version != SNAP_VERSION_V1) {
		return rd_corrupt(r, errmsg, "unsupported snapshot version");
	}
	r->meta.index = engine_get_u64(hdr + 12);
	r->meta.term = engine_get_u64(hdr + 20);
	config_len = get_u32(hdr + 28);
	if (config_len > ENGINE_SNAPSHOT_CONFIG_MAX) {
		return rd_corrupt(r, errmsg, "configuration length out of range");
	}
	if (config_len > 0) {
		r->meta.config = malloc(config_len);
		if (r->meta.config == NULL) {
			return KVD_ENOMEM;
		}
		r->meta.config_len = config_len;
		rv = rd_bytes(r, r->meta.config, config_len, errmsg);
	}
	return rv;
}

int engine_snapshot_reader_open_fd(int fd, const char *name, struct engine_snapshot_reader **reader,
				   char *errmsg)
{
	struct engine_snapshot_reader *r = calloc(1, sizeof(*r));
	int rv;

	if (r == NULL) {
		return KVD_ENOMEM;
	}
	r->fd = fd;
	snprintf(r->name, sizeof(r->name), "%s", name != NULL ? name : "stream");
	r->in = malloc(RD_IN);
	r->out = malloc(RD_OUT);
	if (r->in == NULL || r->out == NULL ||
	    LZ4F_isError(LZ4F_createDecompressionContext(&r->dctx, LZ4F_VERSION))) {
		rv = KVD_ENOMEM;
		goto err;
	}
	rv = rd_frame_header(r, errmsg);
	if (rv == 0) {
		rv = rd_header(r, errmsg);
	}
	if (rv != 0) {
		goto err;
	}
	*reader = r;
	return 0;
err:
	engine_snapshot_reader_close(r);
	return rv;
}

int engine_snapshot_reader_open(const char *path, struct engine_snapshot_reader **reader,
				char *errmsg)
{
	struct engine_snapshot_reader *r;
	struct stat st;
	int fd;
	int rv;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		engine_errmsg(errmsg, "open %s: %s", path, strerror(errno));
		return errno == ENOENT ? KVD_ENOTFOUND : KVD_EIO;
	}
	if (fstat(fd, &st) != 0) {
		engine_errmsg(errmsg, "stat %s: %s", path, strerror(errno));
		close(fd);
		return KVD_EIO;
	}
	rv = engine_snapshot_reader_open_fd(fd, path, &r, errmsg);
	if (rv != 0) {
		close(fd);
		return rv;
	}
	r->own_fd = true;
	r->meta.size = (uint64_t)st.st_size;
	*reader = r;
	return 0;
}

const struct engine_snapshot_meta *
engine_snapshot_reader_meta(const struct engine_snapshot_reader *reader)
{
	return &reader->meta;
}

static int rd_record(struct engine_snapshot_reader *r, struct engine_record *rec, char *errmsg)
{
	unsigned char hdr[16];
	uint32_t klen, vlen;
	uint64_t revision = r->meta.index > 0 ? r->meta.index : 1;
	size_t cmp_len;
	int cmp;
	int rv;

	rv = rd_bytes(r, hdr, r->version == SNAP_VERSION_V1 ? 8 : 16, errmsg);
	if (rv != 0) {
		return rv;
	}
	klen = get_u32(hdr);
	vlen = get_u32(hdr + 4);
	if (klen == 0 || klen > ENGINE_KEY_MAX || vlen > ENGINE_SNAPSHOT_VALUE_MAX) {
		return rd_corrupt(r, errmsg, "record length out of range");
	}
	if (r->version != SNAP_VERSION_V1) {
		revision = engine_get_u64(hdr + 8);
		if (revision == 0 || (r->meta.index > 0 && revision > r->meta.index)) {
			return rd_corrupt(r, errmsg, "record revision out of range");
		}
	}
	if (r->rec_cap < (size_t)klen + vlen) {
		char *p = realloc(r->rec, (size_t)klen + vlen);
		if (p == NULL) {
			return KVD_ENOMEM;
		}
		r->rec = p;
		r->rec_cap = (size_t)klen + vlen;
	}
	rv = rd_bytes(r, r->rec, (size_t)klen + vlen, errmsg);
	if (rv != 0) {
		return rv;
	}
	if (!engine_key_valid(r->rec, klen)) {
		return rd_corrupt(r, errmsg, "invalid key");
	}
	cmp_len = klen < r->prev_len ? klen : r->prev_len;
	cmp = memcmp(r->prev, r->rec, cmp_len);
	if (r->prev_len > 0 && (cmp > 0 || (cmp == 0 && r->prev_len >= klen))) {
		return rd_corrupt(r, errmsg, "keys out of order");
	}
	memcpy(r->prev, r->rec, klen);
	r->prev_len = klen;
	r->count++;
	rec->key = r->rec;
	rec->key_len = klen;
	rec->value = r->rec + klen;
	rec->value_len = vlen;
	rec->revision = revision;
	return 0;
}

int engine_snapshot_reader_next(struct engine_snapshot_reader *reader, struct engine_record *rec,
				bool *end, char *errmsg)
{
	struct engine_snapshot_reader *r = reader;
	unsigned char tag;
	unsigned char cnt[8];
	int rv;

	if (r->finished) {
		*end = true;
		return 0;
	}
	rv = rd_bytes(r, &tag, 1, errmsg);
	if (rv != 0) {
		return rv;
	}
	if (tag == SNAP_TAG_RECORD) {
		rv = rd_record(r, rec, errmsg);
		if (rv == 0) {
			*end = false;
		}
		return rv;
	}
	if (tag != SNAP_TAG_END) {
		return rd_corrupt(r, errmsg, "bad record tag");
	}
	rv = rd_bytes(r, cnt, sizeof(cnt), errmsg);
	if (rv != 0) {
		return rv;
	}
	if (engine_get_u64(cnt) != r->count) {
		return rd_corrupt(r, errmsg, "trailer record count mismatch");
	}
	rv = rd_finish(r, errmsg);
	if (rv != 0) {
		return rv;
	}
	r->finished = true;
	*end = true;
	return 0;
}

void engine_snapshot_reader_close(struct engine_snapshot_reader *reader)
{
	if (reader == NULL) {
		return;
	}
	if (reader->own_fd) {
		close(reader->fd);
	}
	LZ4F_freeDecompressionContext(reader->dctx);
	engine_snapshot_meta_clear(&reader->meta);
	free(reader->rec);
	free(reader->out);
	free(reader->in);
	free(reader);
}

int engine_snapshot_read_meta(const char *path, struct engine_snapshot_meta *meta, char *errmsg)
{
	struct engine_snapshot_reader *r;
	int rv;

	rv = engine_snapshot_reader_open(path, &r, errmsg);
	if (rv != 0) {
		return rv;
	}
	*meta = r->meta;
	memset(&r->meta, 0, sizeof(r->meta)); /* config now owned by *meta */
	engine_snapshot_reader_close(r);
	return 0;
}

int engine_snapshot_restore(const char *path, const char *dbdir_new,
			    struct engine_snapshot_meta *meta, char *errmsg)
{
	struct engine_snapshot_reader *r = NULL;
	struct engine_builder *b = NULL;
	struct engine_record rec;
	bool end = false;
	int rv;

	rv = engine_snapshot_reader_open(path, &r, errmsg);
	if (rv != 0) {
		return rv;
	}
	rv = engine_builder_create(dbdir_new, &b, errmsg);
	if (rv != 0) {
		goto err_reader;
	}
	for (;;) {
		rv = engine_snapshot_reader_next(r, &rec, &end, errmsg);
		if (rv != 0 || end) {
			break;
		}
		rv = engine_builder_put(b, rec.key, rec.key_len, rec.value, rec.value_len,
					rec.revision, errmsg);
		if (rv != 0) {
			break;
		}
	}
	if (rv != 0) {
		engine_builder_abort(b);
		goto err_reader;
	}
	rv = engine_builder_finish(b, r->meta.index, r->meta.term, r->meta.config,
				   r->meta.config_len, errmsg);
	if (rv != 0) {
		goto err_reader; /* finish() removed the directory */
	}
	if (meta != NULL) {
		*meta = r->meta;
		memset(&r->meta, 0, sizeof(r->meta));
	}
err_reader:
	engine_snapshot_reader_close(r);
	return rv;
}

int engine_snapshot_check(const char *path, struct engine_snapshot_meta *meta, char *errmsg)
{
	struct engine_snapshot_reader *r = NULL;
	struct engine_record rec;
	bool end = false;
	int rv;

	rv = engine_snapshot_reader_open(path, &r, errmsg);
	if (rv != 0) {
		return rv;
	}
	while (rv == 0 && !end) {
		rv = engine_snapshot_reader_next(r, &rec, &end, errmsg);
	}
	if (rv == 0 && meta != NULL) {
		*meta = r->meta;
		memset(&r->meta, 0, sizeof(r->meta));
	}
	engine_snapshot_reader_close(r);
	return rv;
}
