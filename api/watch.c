/*
 * watch.c: the watcher hub (api/watch.h, API.md §13).
 *
 * Why it looks like this:
 * - Events come from the applier's results (engine_apply_results()), handed
 *   over on the loop thread once a job is applied, so every watcher sees the
 *   log's order: a watch can never show a change the store does not hold,
 *   nor two changes out of order. Each event is formatted once (its SSE text)
 *   and shared by every watcher and by the ring.
 * - Watchers are grouped by what they watch (a prefix, or one key) in a hash
 *   table. A change to key k looks up the groups of k's own prefixes (one
 *   hash per length, computed incrementally, and only for lengths some
 *   prefix group has) and of k itself: O(len(k)) per change, whatever the
 *   number of watchers of other prefixes.
 * - A job's events for one watcher are gathered and written at once (one
 *   write per watcher per job), so a transaction's events leave together.
 * - The ring keeps the most recent events (KVD_WATCH_RING_EVENTS and
 *   _BYTES at most) for watches starting in the past; it holds every event
 *   after base up to last. A start at or below base (or below the log's
 *   floor) answers 410 with the oldest available revision. A clean stop
 *   saves the ring next to the data and the next start loads it when it ends
 *   exactly at the applied index (then removes the file), so a watch resumes
 *   across a restart. After a crash there is no such file: the start refills
 *   the ring from the log after the latest snapshot, each entry's changes
 *   rebuilt by engine_entry_changes() (api/applier.c), so 410 is only for
 *   revisions no longer in the log.
 * - A watcher whose unsent output passes KVD_WATCH_MAX_UNSENT, or holds more
 *   than an eighth of it while the node's unsent total is over the server's
 *   budget, is cut: its stream ends after what is queued (whole events), and
 *   the client resumes with Last-Event-ID.
 *
 * Invariants: a watcher's start is the first revision it has not been sent;
 * events at or after start reach it exactly once, either from the ring (at
 * registration) or live (after). A watcher closed from a write inside a
 * dispatch is unlinked at once and freed by the dispatch (touched list).
 */
#include "api/watch.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/http/http_server.h"
#include "api/textutil.h"
#include "kvd/errors.h"

#define SAVE_MAGIC "kvd-watch-ring 1\n"

enum group_kind { GROUP_PREFIX = 0, GROUP_KEY = 1 };

struct watcher;

/* Watchers of one prefix or one key. */
struct group {
	struct group *hnext; /* hash chain */
	uint64_t hash;
	uint8_t kind; /* enum group_kind */
	size_t len;
	struct watcher *head;
	char name[]; /* len bytes */
};

struct watcher {
	struct kvd_watch_hub *hub;
	struct http_stream *stream; /* NULL once closed */
	struct group *group;
	struct watcher *gprev, *gnext; /* in the group */
	struct watcher *prev, *next;   /* every watcher */
	struct watcher *tnext;	       /* touched in this dispatch */
	uint64_t start;		       /* first revision not yet sent */
	char *buf;		       /* this dispatch's events */
	size_t len, cap;
	bool touched, dead;
};

/* One event of the ring: its SSE text; the key at key_off (key_len 0: clear). */
struct ring_ev {
	uint64_t rev;
	char *text;
	size_t text_len;
	size_t key_off, key_len;
};

/*
 * Event texts are placed in blocks, filled in ring order: the oldest event's
 * text is always in the first block, so trimming the ring frees whole
 * blocks, and one spare block is kept for the next. Applying a write then
 * costs no allocation and touches no fresh page once the ring is full.
 */
#define TEXT_BLOCK ((size_t)1 << 20)

struct text_block {
	struct text_block *next;
	size_t cap, used;  /* bytes */
	size_t nev, ndone; /* events placed, events trimmed */
	char data[];
};

struct kvd_watch_hub {
	struct text_block *bhead, *btail, *bspare;
	struct group **table;
	size_t table_size, n_groups;		  /* power of two; groups */
	unsigned prefix_lens[ENGINE_KEY_MAX + 1]; /* prefix groups per length */
	struct watcher *all;
	size_t n_watchers;
	struct watcher *touched;
	struct ring_ev *ring;
	size_t ring_cap, ring_head, ring_n, ring_bytes;
	uint64_t base; /* every event after base is in the ring */
	uint64_t last; /* the ring is complete up to here */
	uint64_t keepalive_ms, last_keepalive;
	size_t ring_events; /* bound on ring_n */
};

/* ---- hashing and groups ---- */

#define FNV_OFFSET 1469598103934665603ull
#define FNV_PRIME  1099511628211ull

static uint64_t hash_step(uint64_t h, unsigned char c)
{
	return (h ^ c) * FNV_PRIME;
}

static uint64_t hash_final(uint64_t h, enum group_kind kind, size_t len)
{
	return (h ^ ((uint64_t)kind << 32) ^ len) * FNV_PRIME;
}

static uint64_t hash_name(enum group_kind kind, const char *s, size_t len)
{
	uint64_t h = FNV_OFFSET;
	for (size_t i = 0; i < len; i++)
		h = hash_step(h, (unsigned char)s[i]);
	return hash_final(h, kind, len);
}

static struct group *group_find(struct kvd_watch_hub *hub, enum group_kind kind, const char *s,
				size_t len, uint64_t hash)
{
	struct group *g;

	if (hub->table_size == 0)
		return NULL;
	for (g = hub->table[hash & (hub->table_size - 1)]; g != NULL; g = g->hnext)
		if (g->hash == hash && g->kind == kind && g->len == len &&
		    memcmp(g->name, s, len) == 0)
			return g;
	return NULL;
}

static int table_grow(struct kvd_watch_hub *hub)
{
	size_t size = hub->table_size ? hub->table_size * 2 : 64;
	struct group **t = calloc(size, sizeof(*t));

	if (t == NULL)
		return KVD_ENOMEM;
	for (size_t i = 0; i < hub->table_size; i++) {
		struct group *g = hub->table[i], *next;
		for (; g != NULL; g = next) {
			next = g->hnext;
			g->hnext = t[g->hash & (size - 1)];
			t[g->hash & (size - 1)] = g;
		}
	}
	free(hub->table);
	hub->table = t;
	hub->table_size = size;
	return 0;
}

/* The group of (kind, s), created if missing; NULL when out of memory. */
static struct group *group_get(struct kvd_watch_hub *hub, enum group_kind kind, const char *s,
			       size_t len)
{
	uint64_t hash = hash_name(kind, s, len);
	struct group *g = group_find(hub, kind, s, len, hash);

	if (g != NULL)
		return g;
	if (hub->n_groups + 1 > hub->table_size / 2 && table_grow(hub) != 0)
		return NULL;
	g = calloc(1, sizeof(*g) + len);
	if (g == NULL)
		return NULL;
	g->hash = hash;
	g->kind = (uint8_t)kind;
	g->len = len;
	memcpy(g->name, s, len);
	g->hnext = hub->table[hash & (hub->table_size - 1)];
	hub->table[hash & (hub->table_size - 1)] = g;
	hub->n_groups++;
	if (kind == GROUP_PREFIX)
		hub->prefix_lens[len]++;
	return g;
}

static void group_drop_if_empty(struct kvd_watch_hub *hub, struct group *g)
{
	struct group **pp;

	if (g->head != NULL)
		return;
	pp = &hub->table[g->hash & (hub->table_size - 1)];
	while (*pp != g)
		pp = &(*pp)->hnext;
	*pp = g->hnext;
	hub->n_groups--;
	if (g->kind == GROUP_PREFIX)
		hub->prefix_lens[g->len]--;
	free(g);
}

/* ---- watchers ---- */

/* Takes w out of its group and of the hub's list (not of a touched list). */
static void watcher_unlink(struct watcher *w)
{
	struct kvd_watch_hub *hub = w->hub;

	if (w->gprev != NULL)
		w->gprev->gnext = w->gnext;
	else
		w->group->head = w->gnext;
	if (w->gnext != NULL)
		w->gnext->gprev = w->gprev;
	group_drop_if_empty(hub, w->group);
	if (w->prev != NULL)
		w->prev->next = w->next;
	else
		hub->all = w->next;
	if (w->next != NULL)
		w->next->prev = w->prev;
	hub->n_watchers--;
	w->dead = true;
}

static void watcher_free(struct watcher *w)
{
	free(w->buf);
	free(w);
}

/* The connection closed by itself (client gone, write error, deadline). */
static void watcher_closed_cb(struct http_stream *s, void *user)
{
	struct watcher *w = user;

	(void)s;
	w->stream = NULL;
	watcher_unlink(w);
	if (!w->touched)
		watcher_free(w);
}

/* Ends w's stream (after its queued bytes) and forgets it. */
static void watcher_end(struct watcher *w)
{
	struct http_stream *s = w->stream;

	w->stream = NULL;
	watcher_unlink(w);
	if (s != NULL)
		http_stream_close(s);
	if (!w->touched)
		watcher_free(w);
}

/* Writes len bytes to w, then cuts it if its unsent output is over its cap
 * (or over an eighth of it while the node's total is over budget). */
static void watcher_send(struct watcher *w, const char *p, size_t len)
{
	size_t unsent;
	bool over;

	if (w->stream == NULL)
		return;
	if (http_stream_write(w->stream, p, len) != 0) {
		if (w->stream != NULL)
			watcher_end(w);
		return;
	}
	if (w->stream == NULL)
		return; /* closed by the write */
	unsent = http_stream_unsent(w->stream, &over);
	if (unsent > KVD_WATCH_MAX_UNSENT || (over && unsent > KVD_WATCH_MAX_UNSENT / 8))
		watcher_end(w);
}

static int buf_append(struct watcher *w, const char *p, size_t n)
{
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		char *nb;
		while (cap < w->len + n)
			cap *= 2;
		nb = realloc(w->buf, cap);
		if (nb == NULL)
			return KVD_ENOMEM;
		w->buf = nb;
		w->cap = cap;
	}
	memcpy(w->buf + w->len, p, n);
	w->len += n;
	return 0;
}

/* Adds an event's text to w's batch of this dispatch. */
static void watcher_add(struct kvd_watch_hub *hub, struct watcher *w, const struct ring_ev *ev)
{
	if (w->dead || ev->rev < w->start)
		return;
	if (buf_append(w, ev->text, ev->text_len) != 0) {
		/* Out of memory: the stream cannot stay exact; end it (the
		 * client resumes from its last event). */
		w->len = 0;
		if (!w->touched) {
			w->touched = true;
			w->tnext = hub->touched;
			hub->touched = w;
		}
		watcher_end(w);
		return;
	}
	if (!w->touched) {
		w->touched = true;
		w->tnext = hub->touched;
		hub->touched = w;
	}
}

/* Writes every touched watcher's batch; frees those that closed meanwhile. */
static void flush_touched(struct kvd_watch_hub *hub, uint64_t last)
{
	struct watcher *w = hub->touched, *next;

	hub->touched = NULL;
	for (; w != NULL; w = next) {
		next = w->tnext;
		if (!w->dead && w->len > 0)
			watcher_send(w, w->buf, w->len);
		w->len = 0;
		w->touched = false;
		if (w->dead) {
			watcher_free(w);
			continue;
		}
		if (w->start <= last)
			w->start = last + 1;
		if (w->cap > 64 * 1024) { /* a big batch's buffer is not kept */
			free(w->buf);
			w->buf = NULL;
			w->cap = 0;
		}
	}
}

/* ---- events ---- */

/* Appends s as a JSON string body (without quotes): quotes, backslashes
 * and control characters escaped; bytes that are not UTF-8 become U+FFFD. */
static char *json_escape(char *p, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t i = 0;

	while (i < len) {
		unsigned char c = (unsigned char)s[i];
		size_t n = c < 0x80		? 1
			   : (c & 0xe0) == 0xc0 ? 2
			   : (c & 0xf0) == 0xe0 ? 3
			   : (c & 0xf8) == 0xf0 ? 4
						: 0;
		if (c == '"' || c == '\\') {
			*p++ = '\\';
			*p++ = (char)c;
		} else if (c < 0x20) {
			memcpy(p, "\\u00", 4);
			p[4] = hex[c >> 4];
			p[5] = hex[c & 15];
			p += 6;
		} else if (n == 1) {
			*p++ = (char)c;
		} else if (n == 0 || i + n > len || !kvd_utf8_valid(s + i, n)) {
			memcpy(p, "\\ufffd", 6);
			p += 6;
			n = 1;
		} else {
			memcpy(p, s + i, n);
			p += n;
		}
		i += n > 0 ? n : 1;
	}
	return p;
}

/* Room for max bytes of text after the last block's placed events; NULL
 * when out of memory. Placed by text_commit() once the event is in the ring. */
static char *text_reserve(struct kvd_watch_hub *hub, size_t max)
{
	struct text_block *b = hub->btail;
	size_t cap = max > TEXT_BLOCK ? max : TEXT_BLOCK;

	if (b != NULL && b->cap - b->used >= max)
		return b->data + b->used;
	if (b != NULL && b->nev == b->ndone && b->cap >= max) {
		b->used = b->nev = b->ndone = 0; /* every event in it is trimmed */
		return b->data;
	}
	if (hub->bspare != NULL && hub->bspare->cap >= max) {
		b = hub->bspare;
		hub->bspare = NULL;
	} else if ((b = malloc(sizeof(*b) + cap)) != NULL) {
		b->cap = cap;
	} else {
		return NULL;
	}
	b->next = NULL;
	b->used = b->nev = b->ndone = 0;
	if (hub->btail != NULL)
		hub->btail->next = b;
	else
		hub->bhead = b;
	hub->btail = b;
	return b->data;
}

static void text_commit(struct kvd_watch_hub *hub, size_t len)
{
	hub->btail->used += len;
	hub->btail->nev++;
}

static void block_drop(struct kvd_watch_hub *hub, struct text_block *b)
{
	if (hub->bspare == NULL && b->cap == TEXT_BLOCK)
		hub->bspare = b;
	else
		free(b);
}

/* The oldest event's text is no longer needed. */
static void text_release_oldest(struct kvd_watch_hub *hub)
{
	struct text_block *b = hub->bhead;

	if (++b->ndone < b->nev || b == hub->btail)
		return;
	hub->bhead = b->next;
	block_drop(hub, b);
}

static void text_release_all(struct kvd_watch_hub *hub)
{
	while (hub->bhead != NULL) {
		struct text_block *b = hub->bhead;
		hub->bhead = b->next;
		block_drop(hub, b);
	}
	hub->btail = NULL;
}

/* Formats one change as its SSE text into ev, in room reserved after the
 * ring's texts (text_commit() places it); returns 0 or KVD_ENOMEM. */
static int event_format(struct kvd_watch_hub *hub, const struct engine_change *c,
			struct ring_ev *ev)
{
	static const char *names[] = {"", "put", "delete", "clear"};
	size_t cap = 128 + 6 * c->key_len + 6 * c->value_len;
	char *t = text_reserve(hub, cap), *p;

	if (t == NULL)
		return KVD_ENOMEM;
	p = t + sprintf(t, "id: %" PRIu64 "\nevent: %s\ndata: {", c->revision, names[c->type]);
	ev->key_off = 0;
	ev->key_len = 0;
	if (c->type != ENGINE_CHANGE_CLEAR) {
		p += sprintf(p, "\"key\": \"");
		ev->key_off = (size_t)(p - t);
		p = json_escape(p, c->key, c->key_len);
		ev->key_len = c->key_len; /* keys are plain key characters */
		p += sprintf(p, "\", ");
	}
	if (c->type == ENGINE_CHANGE_PUT) {
		p += sprintf(p, "\"value\": \"");
		p = json_escape(p, c->value, c->value_len);
		p += sprintf(p, "\", ");
	}
	p += sprintf(p, "\"revision\": %" PRIu64 "}\n\n", c->revision);
	ev->rev = c->revision;
	ev->text = t;
	ev->text_len = (size_t)(p - t);
	return 0;
}

static struct ring_ev *ring_at(struct kvd_watch_hub *hub, size_t i)
{
	return &hub->ring[(hub->ring_head + i) % hub->ring_cap];
}

/* Drops the oldest events while over a bound, whole revisions at a time. */
static void ring_trim(struct kvd_watch_hub *hub)
{
	while (hub->ring_n > 0 &&
	       (hub->ring_n > hub->ring_events || hub->ring_bytes > KVD_WATCH_RING_BYTES)) {
		uint64_t rev = ring_at(hub, 0)->rev;
		while (hub->ring_n > 0 && ring_at(hub, 0)->rev == rev) {
			struct ring_ev *ev = ring_at(hub, 0);
			hub->ring_bytes -= ev->text_len;
			text_release_oldest(hub);
			hub->ring_head = (hub->ring_head + 1) % hub->ring_cap;
			hub->ring_n--;
		}
		hub->base = rev;
	}
}

/* Appends ev (its text reserved by text_reserve() and placed here);
 * returns 0 or KVD_ENOMEM (the text is not placed). */
static int ring_push(struct kvd_watch_hub *hub, const struct ring_ev *ev)
{
	if (hub->ring_n == hub->ring_cap) {
		size_t cap = hub->ring_cap ? hub->ring_cap * 2 : 1024;
		struct ring_ev *r = malloc(cap * sizeof(*r));
		if (r == NULL)
			return KVD_ENOMEM;
		for (size_t i = 0; i < hub->ring_n; i++)
			r[i] = *ring_at(hub, i);
		free(hub->ring);
		hub->ring = r;
		hub->ring_cap = cap;
		hub->ring_head = 0;
	}
	*ring_at(hub, hub->ring_n) = *ev;
	hub->ring_n++;
	hub->ring_bytes += ev->text_len;
	text_commit(hub, ev->text_len);
	return 0;
}

static void ring_clear(struct kvd_watch_hub *hub)
{
	text_release_all(hub);
	hub->ring_n = 0;
	hub->ring_head = 0;
	hub->ring_bytes = 0;
}

/* Index of the first ring event with revision >= rev (ring_n if none). */
static size_t ring_find(struct kvd_watch_hub *hub, uint64_t rev)
{
	size_t lo = 0, hi = hub->ring_n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (ring_at(hub, mid)->rev < rev)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool group_matches(const struct group *g, const struct ring_ev *ev, const char *text)
{
	const char *key = text + ev->key_off;

	if (ev->key_len == 0)
		return true; /* clear: every watcher */
	if (g->kind == GROUP_KEY)
		return g->len == ev->key_len && memcmp(g->name, key, g->len) == 0;
	return g->len <= ev->key_len && memcmp(g->name, key, g->len) == 0;
}

/* Hands ev to every watcher it concerns. */
static void dispatch(struct kvd_watch_hub *hub, const struct ring_ev *ev)
{
	const char *key = ev->text + ev->key_off;
	uint64_t h = FNV_OFFSET;
	struct watcher *w;
	struct group *g;

	if (ev->key_len == 0) {
		for (w = hub->all; w != NULL; w = w->next)
			watcher_add(hub, w, ev);
		return;
	}
	for (size_t i = 0; i <= ev->key_len; i++) {
		if (hub->prefix_lens[i] > 0) {
			g = group_find(hub, GROUP_PREFIX, key, i, hash_final(h, GROUP_PREFIX, i));
			for (w = g != NULL ? g->head : NULL; w != NULL; w = w->gnext)
				watcher_add(hub, w, ev);
		}
		if (i < ev->key_len)
			h = hash_step(h, (unsigned char)key[i]);
	}
	g = group_find(hub, GROUP_KEY, key, ev->key_len, hash_final(h, GROUP_KEY, ev->key_len));
	for (w = g != NULL ? g->head : NULL; w != NULL; w = w->gnext)
		watcher_add(hub, w, ev);
}

void kvd_watch_hub_applied(struct kvd_watch_hub *h, const struct engine_result *results, size_t n,
			   uint64_t last_index)
{
	for (size_t i = 0; i < n; i++) {
		const struct engine_result *r = &results[i];
		if (r->outcome != ENGINE_OUTCOME_APPLIED)
			continue;
		for (size_t j = 0; j < r->n_changes; j++) {
			struct ring_ev ev = {0};
			if (event_format(h, &r->changes[j], &ev) != 0 || ring_push(h, &ev) != 0) {
				/* Out of memory: no watch can be exact any more
				 * from here: end them all, start the ring anew. */
				kvd_watch_hub_end_all(h);
				flush_touched(h, last_index);
				ring_clear(h);
				h->base = h->last = last_index;
				return;
			}
			dispatch(h, ring_at(h, h->ring_n - 1));
		}
	}
	h->last = last_index;
	flush_touched(h, last_index);
	ring_trim(h);
}

/* ---- serving ---- */

static void reply(struct http_request *req, int status, const char *extra, const char *body)
{
	http_response_send(req, status, "text/plain; charset=utf-8", extra, body, strlen(body));
}

/* Parses a decimal u64 of 1..20 digits; false when malformed or too big. */
static bool parse_u64(const char *v, size_t len, uint64_t *out)
{
	uint64_t x = 0;

	if (len == 0 || len > 20)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9' || x > (UINT64_MAX - (uint64_t)(v[i] - '0')) / 10)
			return false;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	*out = x;
	return true;
}

/* A key-character parameter, percent-decoded into out (ENGINE_KEY_MAX
 * bytes); *present says whether it was given. False when malformed. */
static bool param_name(const char *q, size_t qlen, const char *name, char *out, size_t *len,
		       bool *present)
{
	char buf[3 * ENGINE_KEY_MAX];
	const char *v;
	size_t vlen;
	long n;

	*present = kvd_query_get(q, qlen, name, &v, &vlen);
	*len = 0;
	if (!*present || vlen == 0)
		return true;
	if (vlen > sizeof(buf))
		return false;
	n = kvd_percent_decode(v, vlen, buf);
	if (n <= 0 || !engine_key_valid(buf, (size_t)n))
		return false;
	memcpy(out, buf, (size_t)n);
	*len = (size_t)n;
	return true;
}

/* Parses the watch's parameters: the group and the start. Answers 400
 * itself and returns false on a bad one. */
static bool watch_parse(struct kvd_watch_hub *hub, struct http_request *req, char *name,
			size_t *name_len, enum group_kind *kind, uint64_t *start)
{
	size_t qlen, vlen, klen;
	const char *q = http_request_query(req, &qlen);
	const char *v, *bad = NULL;
	char key[ENGINE_KEY_MAX];
	bool has_key, has_prefix;
	uint64_t x;

	*kind = GROUP_PREFIX;
	*start = hub->last + 1;
	if (!param_name(q, qlen, "prefix", name, name_len, &has_prefix))
		bad = "invalid prefix\n";
	else if (!param_name(q, qlen, "key", key, &klen, &has_key))
		bad = "invalid key\n";
	else if (has_key && has_prefix)
		bad = "key and prefix cannot both be given\n";
	else if (has_key && klen == 0)
		bad = "key cannot be empty\n";
	if (bad == NULL && has_key) {
		*kind = GROUP_KEY;
		memcpy(name, key, klen);
		*name_len = klen;
	}
	if (bad == NULL && kvd_query_get(q, qlen, "from", &v, &vlen)) {
		if (parse_u64(v, vlen, &x))
			*start = x > 0 ? x : 1;
		else
			bad = "invalid from\n";
	}
	v = http_request_header(req, "Last-Event-ID", &vlen);
	if (bad == NULL && v != NULL) {
		while (vlen > 0 && (*v == ' ' || *v == '\t'))
			v++, vlen--;
		while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
			vlen--;
		if (parse_u64(v, vlen, &x) && x < UINT64_MAX)
			*start = x + 1;
		else
			bad = "invalid Last-Event-ID\n";
	}
	if (bad != NULL)
		reply(req, 400, NULL, bad);
	return bad == NULL;
}

void kvd_watch_serve(struct kvd_watch_hub *h, struct http_request *req, uint64_t floor)
{
	char name[ENGINE_KEY_MAX];
	size_t name_len = 0;
	enum group_kind kind;
	uint64_t start, oldest = (h->base > floor ? h->base : floor) + 1;
	struct watcher *w;
	struct group *g;
	char hdr[96];

	if (!watch_parse(h, req, name, &name_len, &kind, &start))
		return;
	if (start < oldest) {
		snprintf(hdr, sizeof(hdr), "X-Kvd-Compacted-Revision: %" PRIu64 "\r\n", oldest);
		reply(req, 410, hdr, "revision compacted\n");
		return;
	}
	w = calloc(1, sizeof(*w));
	g = w != NULL ? group_get(h, kind, name, name_len) : NULL;
	if (g == NULL) {
		free(w);
		reply(req, 503, NULL, "out of memory\n");
		return;
	}
	w->hub = h;
	w->group = g;
	w->start = start;
	w->gnext = g->head;
	if (g->head != NULL)
		g->head->gprev = w;
	g->head = w;
	w->next = h->all;
	if (h->all != NULL)
		h->all->prev = w;
	h->all = w;
	h->n_watchers++;
	if (http_stream_start(req, 200, "text/event-stream", NULL, watcher_closed_cb, w,
			      &w->stream) != 0) {
		watcher_unlink(w);
		watcher_free(w);
		return;
	}
	/* Replay what the ring holds from start, as one batch. */
	for (size_t i = ring_find(h, start); i < h->ring_n && !w->dead; i++) {
		const struct ring_ev *ev = ring_at(h, i);
		if (group_matches(g, ev, ev->text))
			watcher_add(h, w, ev);
	}
	flush_touched(h, h->last);
}

/* ---- lifecycle ---- */

int kvd_watch_hub_create(uint64_t keepalive_ms, size_t ring_events, struct kvd_watch_hub **out)
{
	struct kvd_watch_hub *h = calloc(1, sizeof(*h));

	if (h == NULL)
		return KVD_ENOMEM;
	h->keepalive_ms = keepalive_ms ? keepalive_ms : KVD_WATCH_KEEPALIVE_MS;
	h->ring_events = ring_events ? ring_events : KVD_WATCH_RING_EVENTS;
	*out = h;
	return 0;
}

void kvd_watch_hub_end_all(struct kvd_watch_hub *h)
{
	while (h->all != NULL)
		watcher_end(h->all);
}

void kvd_watch_hub_destroy(struct kvd_watch_hub *h)
{
	if (h == NULL)
		return;
	kvd_watch_hub_end_all(h);
	ring_clear(h);
	free(h->bspare);
	free(h->ring);
	free(h->table);
	free(h);
}

void kvd_watch_hub_reset(struct kvd_watch_hub *h, uint64_t applied)
{
	/* The store jumped without the hub seeing the changes in between: no
	 * watch can go on exactly. Each ends; its client resumes with
	 * Last-Event-ID and gets 410 when it was behind the jump. */
	kvd_watch_hub_end_all(h);
	ring_clear(h);
	h->base = h->last = applied;
}

void kvd_watch_hub_tick(struct kvd_watch_hub *h, uint64_t now)
{
	static const char ka[] = ": keep-alive\n\n";
	struct watcher *w, *next;

	if (now - h->last_keepalive < h->keepalive_ms)
		return;
	h->last_keepalive = now;
	for (w = h->all; w != NULL; w = next) {
		next = w->next;
		watcher_send(w, ka, sizeof(ka) - 1);
	}
}

size_t kvd_watch_count(const struct kvd_watch_hub *h)
{
	return h->n_watchers;
}

/* ---- saving across a clean restart ---- */

/*
 * File: SAVE_MAGIC, then "<base> <last> <n>\n", then n records
 * "<rev> <key_off> <key_len> <text_len>\n<text>". Written to path.tmp,
 * fsynced, renamed.
 */
int kvd_watch_hub_save(struct kvd_watch_hub *h, const char *path)
{
	char tmp[4096];
	FILE *f;
	int rv = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (f == NULL)
		return errno == ENOSPC ? KVD_ENOSPC : KVD_EIO;
	fprintf(f, "%s%" PRIu64 " %" PRIu64 " %zu\n", SAVE_MAGIC, h->base, h->last, h->ring_n);
	for (size_t i = 0; i < h->ring_n; i++) {
		const struct ring_ev *ev = ring_at(h, i);
		fprintf(f, "%" PRIu64 " %zu %zu %zu\n", ev->rev, ev->key_off, ev->key_len,
			ev->text_len);
		fwrite(ev->text, 1, ev->text_len, f);
	}
	if (fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0)
		rv = errno == ENOSPC ? KVD_ENOSPC : KVD_EIO;
	if (fclose(f) != 0 && rv == 0)
		rv = KVD_EIO;
	if (rv == 0 && rename(tmp, path) != 0)
		rv = KVD_EIO;
	if (rv != 0)
		unlink(tmp);
	return rv;
}

/* Whether a loaded text looks like what event_format() wrote for ev. */
static bool text_is_event(struct ring_ev *ev)
{
	char id[32];
	int n = snprintf(id, sizeof(id), "id: %" PRIu64 "\nevent: ", ev->rev);

	return ev->text_len > (size_t)n + 2 && memcmp(ev->text, id, (size_t)n) == 0 &&
	       memcmp(ev->text + ev->text_len - 2, "\n\n", 2) == 0;
}

bool kvd_watch_hub_load(struct kvd_watch_hub *h, const char *path, uint64_t applied)
{
	char magic[sizeof(SAVE_MAGIC)];
	uint64_t base, last, prev = 0;
	size_t n;
	FILE *f = fopen(path, "r");
	bool ok;

	if (f == NULL)
		return false;
	ok = fread(magic, 1, sizeof(SAVE_MAGIC) - 1, f) == sizeof(SAVE_MAGIC) - 1 &&
	     memcmp(magic, SAVE_MAGIC, sizeof(SAVE_MAGIC) - 1) == 0 &&
	     fscanf(f, "%" SCNu64 " %" SCNu64 " %zu", &base, &last, &n) == 3 && fgetc(f) == '\n' &&
	     last == applied && base <= last && h->ring_n == 0 && h->last == applied;
	for (size_t i = 0; ok && i < n; i++) {
		struct ring_ev ev = {0};
		ok = fscanf(f, "%" SCNu64 " %zu %zu %zu", &ev.rev, &ev.key_off, &ev.key_len,
			    &ev.text_len) == 4 &&
		     fgetc(f) == '\n' && ev.rev > base && ev.rev <= last && ev.rev >= prev &&
		     ev.text_len <= KVD_WATCH_RING_BYTES && ev.key_off + ev.key_len <= ev.text_len;
		if (ok)
			ok = (ev.text = text_reserve(h, ev.text_len)) != NULL &&
			     fread(ev.text, 1, ev.text_len, f) == ev.text_len &&
			     text_is_event(&ev) && ring_push(h, &ev) == 0;
		prev = ev.rev;
	}
	fclose(f);
	unlink(path);
	if (ok) {
		h->base = base;
		ring_trim(h);
	} else {
		ring_clear(h);
		h->base = applied;
	}
	return ok;
}
