/*
 * linearize.c: Wing & Gong linearizability search with Lowe's memoization,
 * for a map of registers, partitioned by key.
 *
 * For one key the operations become 2n events (invoke, return) sorted by
 * time, invokes before returns at equal times (operations touching at an
 * instant count as concurrent, the permissive reading). The events form a
 * doubly linked list. Walking it, an invoke whose operation is legal in the
 * current state is tentatively linearized: it and its return are lifted out
 * of the list, the (linearized set, state) pair is remembered, and the walk
 * restarts from the head. Reaching a return event means its operation was
 * not linearized before it returned: backtrack. A pair already seen is never
 * explored twice (Lowe), which makes register histories tractable.
 *
 * Invariants: the list always holds exactly the events of the operations not
 * linearized, in time order; the stack holds the linearized operations in
 * linearization order with the state before each.
 */
#include "tests/sim/linearize.h"

#include <stdlib.h>
#include <string.h>

#include "kvd/errors.h"

#define DEFAULT_MAX_STATES 4000000u
#define REV_BITS	   40 /* a state is value id << REV_BITS | revision */
#define REV_LIMIT	   (1ull << REV_BITS)

struct linearize_history {
	struct linearize_op *ops;
	size_t n;
	size_t cap;
};

struct linearize_history *linearize_history_create(void)
{
	return calloc(1, sizeof(struct linearize_history));
}

void linearize_history_destroy(struct linearize_history *h)
{
	if (h == NULL)
		return;
	free(h->ops);
	free(h);
}

size_t linearize_history_count(const struct linearize_history *h)
{
	return h->n;
}

int linearize_history_add(struct linearize_history *h, const struct linearize_op *op)
{
	if (op->return_time < op->invoke_time || op->kind < LINEARIZE_PUT ||
	    op->kind > LINEARIZE_DELETE_IF || op->outcome < LINEARIZE_OK ||
	    op->outcome > LINEARIZE_REFUSED ||
	    (op->outcome == LINEARIZE_REFUSED && op->kind < LINEARIZE_PUT_IF) ||
	    op->revision >= REV_LIMIT || op->if_revision >= REV_LIMIT)
		return KVD_EINVAL;
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		struct linearize_op *ops = realloc(h->ops, cap * sizeof(*ops));
		if (ops == NULL)
			return KVD_ENOMEM;
		h->ops = ops;
		h->cap = cap;
	}
	h->ops[h->n] = *op;
	h->ops[h->n].key[LINEARIZE_STR_SIZE - 1] = '\0';
	h->ops[h->n].value[LINEARIZE_STR_SIZE - 1] = '\0';
	h->n++;
	return 0;
}

static int copy_token(char *dst, const char *src)
{
	if (strlen(src) >= LINEARIZE_STR_SIZE)
		return KVD_EINVAL;
	strcpy(dst, src);
	return 0;
}

/* Parses "name=N" (N a decimal >= 1 below REV_LIMIT) from tok. */
static bool parse_rev_token(const char *tok, const char *name, uint64_t *out)
{
	size_t n = strlen(name);
	char *end = NULL;
	unsigned long long v;

	if (strncmp(tok, name, n) != 0 || tok[n] != '=' || tok[n + 1] < '0' || tok[n + 1] > '9')
		return false;
	v = strtoull(tok + n + 1, &end, 10);
	if (*end != '\0' || v == 0 || v >= REV_LIMIT)
		return false;
	*out = v;
	return true;
}

/* Parses the optional " if=N" and " rev=N" after the outcome. */
static int parse_extras(const char *p, struct linearize_op *op)
{
	char a[32] = "", b[32] = "", c[8] = "";
	int n = sscanf(p, "%31s %31s %7s", a, b, c);
	bool conditional = op->kind == LINEARIZE_PUT_IF || op->kind == LINEARIZE_DELETE_IF;
	bool has_if = false;

	if (n == 3)
		return KVD_EINVAL;
	for (int i = 0; i < n; i++) {
		const char *tok = i == 0 ? a : b;
		if (!has_if && i == 0 && parse_rev_token(tok, "if", &op->if_revision))
			has_if = true;
		else if (op->revision == 0 && op->kind != LINEARIZE_DELETE &&
			 op->kind != LINEARIZE_DELETE_IF &&
			 parse_rev_token(tok, "rev", &op->revision))
			continue;
		else
			return KVD_EINVAL;
	}
	return has_if == conditional ? 0 : KVD_EINVAL;
}

int linearize_op_parse(const char *line, struct linearize_op *op)
{
	char kind[16], key[256], value[256], outcome[16];
	unsigned long long client, inv, ret;
	const char *p = line;
	int used = 0;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0' || *p == '\n' || *p == '#' || *p == '\r')
		return KVD_ENOTFOUND;
	if (sscanf(p, "%llu %15s %255s %255s %llu %llu %15s%n", &client, kind, key, value, &inv,
		   &ret, outcome, &used) != 7)
		return KVD_EINVAL;
	memset(op, 0, sizeof(*op));
	op->client = client;
	if (strcmp(kind, "put") == 0)
		op->kind = LINEARIZE_PUT;
	else if (strcmp(kind, "get") == 0)
		op->kind = LINEARIZE_GET;
	else if (strcmp(kind, "delete") == 0)
		op->kind = LINEARIZE_DELETE;
	else if (strcmp(kind, "put-if") == 0)
		op->kind = LINEARIZE_PUT_IF;
	else if (strcmp(kind, "put-absent") == 0)
		op->kind = LINEARIZE_PUT_ABSENT;
	else if (strcmp(kind, "delete-if") == 0)
		op->kind = LINEARIZE_DELETE_IF;
	else
		return KVD_EINVAL;
	if (copy_token(op->key, key) != 0)
		return KVD_EINVAL;
	op->has_value = strcmp(value, "-") != 0;
	if (op->has_value && copy_token(op->value, value) != 0)
		return KVD_EINVAL;
	if ((op->kind == LINEARIZE_PUT || op->kind == LINEARIZE_PUT_IF ||
	     op->kind == LINEARIZE_PUT_ABSENT) &&
	    !op->has_value)
		return KVD_EINVAL;
	op->invoke_time = inv;
	op->return_time = ret;
	if (ret < inv)
		return KVD_EINVAL;
	if (strcmp(outcome, "ok") == 0)
		op->outcome = LINEARIZE_OK;
	else if (strcmp(outcome, "fail") == 0)
		op->outcome = LINEARIZE_FAIL;
	else if (strcmp(outcome, "unknown") == 0)
		op->outcome = LINEARIZE_UNKNOWN;
	else if (strcmp(outcome, "refused") == 0 && op->kind >= LINEARIZE_PUT_IF)
		op->outcome = LINEARIZE_REFUSED;
	else
		return KVD_EINVAL;
	return parse_extras(p + used, op);
}

void linearize_op_print(const struct linearize_op *op, FILE *f)
{
	static const char *kinds[] = {"?",	"put",	      "get",	  "delete",
				      "put-if", "put-absent", "delete-if"};
	static const char *outcomes[] = {"?", "ok", "fail", "unknown", "refused"};

	fprintf(f, "%llu %s %s %s %llu %llu %s", (unsigned long long)op->client, kinds[op->kind],
		op->key, op->has_value ? op->value : "-", (unsigned long long)op->invoke_time,
		(unsigned long long)op->return_time, outcomes[op->outcome]);
	if (op->kind == LINEARIZE_PUT_IF || op->kind == LINEARIZE_DELETE_IF)
		fprintf(f, " if=%llu", (unsigned long long)op->if_revision);
	if (op->revision != 0)
		fprintf(f, " rev=%llu", (unsigned long long)op->revision);
	fputc('\n', f);
}

void linearize_history_dump(const struct linearize_history *h, FILE *f)
{
	for (size_t i = 0; i < h->n; i++)
		linearize_op_print(&h->ops[i], f);
}

/* One operation of a key's partition, in the search's terms. */
struct sop {
	enum linearize_kind kind;
	enum linearize_outcome outcome; /* OK, UNKNOWN or REFUSED here */
	uint32_t value;			/* interned; 0 is "absent" */
	uint64_t rev;			/* given or seen; 0 unknown */
	uint64_t if_rev;
	uint64_t invoke;
	uint64_t ret; /* UINT64_MAX: may take effect any time after invoke */
	size_t orig;  /* index in the history, for messages */
};

/* An invoke or return event in the linked list. */
struct event {
	uint64_t time;
	bool is_return;
	uint32_t op;
	int32_t prev, next; /* -1 ends; the list head is a sentinel */
};

/* Memo table of (linearized bitset, state) pairs, open addressing. */
struct memo {
	size_t words; /* uint64 words per bitset */
	size_t cap;   /* slots, power of two */
	size_t count;
	uint64_t *keys; /* cap * (words + 1): bitset words then state */
	uint8_t *used;
};

static uint64_t memo_hash(const uint64_t *bits, size_t words, uint64_t state)
{
	uint64_t h = 1469598103934665603ull ^ state;
	for (size_t i = 0; i < words; i++) {
		h ^= bits[i];
		h *= 1099511628211ull;
		h ^= h >> 29;
	}
	return h;
}

static int memo_grow(struct memo *m)
{
	size_t cap = m->cap ? m->cap * 2 : 1024;
	size_t stride = m->words + 1;
	uint64_t *keys = malloc(cap * stride * sizeof(uint64_t));
	uint8_t *used = calloc(cap, 1);
	if (keys == NULL || used == NULL) {
		free(keys);
		free(used);
		return KVD_ENOMEM;
	}
	for (size_t i = 0; i < m->cap; i++) {
		if (!m->used[i])
			continue;
		const uint64_t *k = m->keys + i * stride;
		size_t j = memo_hash(k, m->words, k[m->words]) & (cap - 1);
		while (used[j])
			j = (j + 1) & (cap - 1);
		used[j] = 1;
		memcpy(keys + j * stride, k, stride * sizeof(uint64_t));
	}
	free(m->keys);
	free(m->used);
	m->keys = keys;
	m->used = used;
	m->cap = cap;
	return 0;
}

/* Adds (bits, state). Returns 1 if added, 0 if already present, or a code. */
static int memo_add(struct memo *m, const uint64_t *bits, uint64_t state)
{
	size_t stride = m->words + 1;
	if ((m->count + 1) * 2 > m->cap) {
		int rc = memo_grow(m);
		if (rc != 0)
			return rc;
	}
	size_t j = memo_hash(bits, m->words, state) & (m->cap - 1);
	while (m->used[j]) {
		const uint64_t *k = m->keys + j * stride;
		if (k[m->words] == state && memcmp(k, bits, m->words * sizeof(uint64_t)) == 0)
			return 0;
		j = (j + 1) & (m->cap - 1);
	}
	m->used[j] = 1;
	memcpy(m->keys + j * stride, bits, m->words * sizeof(uint64_t));
	m->keys[j * stride + m->words] = state;
	m->count++;
	return 1;
}

static int event_cmp(const void *a, const void *b)
{
	const struct event *x = a, *y = b;
	if (x->time != y->time)
		return x->time < y->time ? -1 : 1;
	if (x->is_return != y->is_return)
		return x->is_return ? 1 : -1;
	return x->op < y->op ? -1 : (x->op > y->op);
}

/* Whether a condition (If-Match rev, or absence when absent is true) holds
 * in state; with an unknown revision both answers are possible, so *maybe
 * is set. */
static bool cond_holds(const struct sop *op, uint64_t state, bool *maybe)
{
	uint64_t v = state >> REV_BITS, r = state & (REV_LIMIT - 1);

	*maybe = false;
	if (op->kind == LINEARIZE_PUT_ABSENT)
		return v == 0;
	if (v != 0 && r == 0) {
		*maybe = true;
		return true;
	}
	return v != 0 && r == op->if_rev;
}

/* Applies op to state; returns whether legal and writes the next state. */
static bool sop_apply(const struct sop *op, uint64_t state, uint64_t *next)
{
	uint64_t written = (uint64_t)op->value << REV_BITS | op->rev;
	bool maybe, holds;

	*next = state;
	switch (op->kind) {
	case LINEARIZE_PUT: *next = written; return true;
	case LINEARIZE_DELETE: *next = 0; return true;
	case LINEARIZE_GET:
		if (state >> REV_BITS != op->value)
			return false;
		return op->value == 0 || op->rev == 0 || (state & (REV_LIMIT - 1)) == 0 ||
		       (state & (REV_LIMIT - 1)) == op->rev;
	case LINEARIZE_PUT_IF:
	case LINEARIZE_PUT_ABSENT:
	case LINEARIZE_DELETE_IF:
		holds = cond_holds(op, state, &maybe);
		if (op->outcome == LINEARIZE_REFUSED)
			return !holds || maybe;
		if (holds)
			*next = op->kind == LINEARIZE_DELETE_IF ? 0 : written;
		/* ok needs the condition; unknown takes effect iff it holds */
		return holds || op->outcome == LINEARIZE_UNKNOWN;
	}
	return false;
}

struct frame {
	uint32_t op;
	uint64_t state; /* before op */
};

/* Searches one key's operations. Returns 0 with *ok set, or a code. */
static int check_partition(struct sop *ops, uint32_t n, size_t max_states, bool *ok)
{
	struct event *ev = NULL;
	int32_t *call_of = NULL, *ret_of = NULL;
	uint64_t *bits = NULL;
	struct frame *stack = NULL;
	struct memo memo = {0};
	int rc = KVD_ENOMEM;

	*ok = true;
	if (n == 0)
		return 0;
	ev = malloc((2 * (size_t)n + 1) * sizeof(*ev));
	call_of = malloc(n * sizeof(*call_of));
	ret_of = malloc(n * sizeof(*ret_of));
	memo.words = (n + 63) / 64;
	bits = calloc(memo.words, sizeof(uint64_t));
	stack = malloc(n * sizeof(*stack));
	if (ev == NULL || call_of == NULL || ret_of == NULL || bits == NULL || stack == NULL)
		goto out;
	/* ev[0] is the head sentinel; events follow sorted. */
	for (uint32_t i = 0; i < n; i++) {
		ev[1 + 2 * i] = (struct event){ops[i].invoke, false, i, 0, 0};
		ev[2 + 2 * i] = (struct event){ops[i].ret, true, i, 0, 0};
	}
	qsort(ev + 1, 2 * (size_t)n, sizeof(*ev), event_cmp);
	int32_t total = (int32_t)(2 * n) + 1;
	for (int32_t i = 0; i < total; i++) {
		ev[i].prev = i - 1;
		ev[i].next = i + 1 < total ? i + 1 : -1;
		if (i > 0) {
			if (ev[i].is_return)
				ret_of[ev[i].op] = i;
			else
				call_of[ev[i].op] = i;
		}
	}

	uint64_t state = 0;
	size_t depth = 0;
	int32_t e = ev[0].next;
	while (ev[0].next != -1) {
		if (e == -1) {
			/* Only unknown operations (infinite return) remain
			 * unvisited behind us: impossible, since each has an
			 * invoke event before any -1. Treat as failure. */
			*ok = false;
			break;
		}
		if (!ev[e].is_return) {
			uint32_t op = ev[e].op;
			uint64_t next;
			if (sop_apply(&ops[op], state, &next)) {
				bits[op / 64] |= 1ull << (op % 64);
				int added = memo_add(&memo, bits, next);
				if (added < 0) {
					rc = added;
					goto out;
				}
				if (added == 1) {
					if (memo.count > max_states) {
						rc = KVD_ETOOBIG;
						goto out;
					}
					stack[depth++] = (struct frame){op, state};
					state = next;
					/* Lift the invoke and return events. */
					int32_t c = call_of[op], r = ret_of[op];
					ev[ev[c].prev].next = ev[c].next;
					if (ev[c].next != -1)
						ev[ev[c].next].prev = ev[c].prev;
					ev[ev[r].prev].next = ev[r].next;
					if (ev[r].next != -1)
						ev[ev[r].next].prev = ev[r].prev;
					e = ev[0].next;
					continue;
				}
				bits[op / 64] &= ~(1ull << (op % 64));
			}
			e = ev[e].next;
		} else {
			if (depth == 0) {
				*ok = false;
				break;
			}
			struct frame f = stack[--depth];
			state = f.state;
			bits[f.op / 64] &= ~(1ull << (f.op % 64));
			/* Unlift in reverse order: return, then invoke. */
			int32_t c = call_of[f.op], r = ret_of[f.op];
			ev[ev[r].prev].next = r;
			if (ev[r].next != -1)
				ev[ev[r].next].prev = r;
			ev[ev[c].prev].next = c;
			if (ev[c].next != -1)
				ev[ev[c].next].prev = c;
			e = ev[c].next;
		}
	}
	rc = 0;
out:
	free(ev);
	free(call_of);
	free(ret_of);
	free(bits);
	free(stack);
	free(memo.keys);
	free(memo.used);
	return rc;
}

static int key_cmp(const void *a, const void *b, void *h)
{
	const struct linearize_op *ops = h;
	return strcmp(ops[*(const size_t *)a].key, ops[*(const size_t *)b].key);
}

/* Interns v among names[0..*count); returns its id (1-based). */
static uint32_t intern(const char **names, uint32_t *count, const char *v)
{
	for (uint32_t i = 0; i < *count; i++)
		if (strcmp(names[i], v) == 0)
			return i + 1;
	names[*count] = v;
	return ++*count;
}

/* Whether some successful get of this key returned value v. An unknown put
 * whose value nobody read may be dropped: removing it from any valid
 * linearization leaves every read's result unchanged. */
static bool value_read(const struct linearize_history *h, const size_t *idx, size_t m,
		       const char *v)
{
	for (size_t i = 0; i < m; i++) {
		const struct linearize_op *o = &h->ops[idx[i]];
		if (o->kind == LINEARIZE_GET && o->outcome == LINEARIZE_OK && o->has_value &&
		    strcmp(o->value, v) == 0)
			return true;
	}
	return false;
}

static int check_key(const struct linearize_history *h, const size_t *idx, size_t m,
		     size_t max_states, bool *ok)
{
	struct sop *ops = malloc((m ? m : 1) * sizeof(*ops));
	const char **names = malloc((m ? m : 1) * sizeof(*names));
	uint32_t n = 0, n_names = 0;
	bool conditional = false;
	int rc = KVD_ENOMEM;

	if (ops == NULL || names == NULL)
		goto out;
	for (size_t i = 0; i < m; i++)
		conditional = conditional || h->ops[idx[i]].kind >= LINEARIZE_PUT_IF;
	for (size_t i = 0; i < m; i++) {
		const struct linearize_op *o = &h->ops[idx[i]];
		if (o->outcome == LINEARIZE_FAIL)
			continue;
		if (o->outcome == LINEARIZE_UNKNOWN && o->kind == LINEARIZE_GET)
			continue;
		/* (an unknown write changes later conditions' outcomes even
		 * when nobody read its value) */
		if (o->outcome == LINEARIZE_UNKNOWN && o->kind == LINEARIZE_PUT && !conditional &&
		    !value_read(h, idx, m, o->value))
			continue;
		struct sop *s = &ops[n++];
		s->kind = o->kind;
		s->outcome = o->outcome;
		s->rev = o->revision;
		s->if_rev = o->if_revision;
		s->value = 0;
		if (o->kind != LINEARIZE_DELETE && o->kind != LINEARIZE_DELETE_IF && o->has_value)
			s->value = intern(names, &n_names, o->value);
		s->invoke = o->invoke_time;
		s->ret = o->outcome == LINEARIZE_UNKNOWN ? UINT64_MAX : o->return_time;
		s->orig = idx[i];
	}
	rc = check_partition(ops, n, max_states, ok);
out:
	free(ops);
	free(names);
	return rc;
}

int linearize_history_check(const struct linearize_history *h, size_t max_states, bool *ok,
			    char *why, size_t why_size)
{
	size_t *idx = malloc((h->n ? h->n : 1) * sizeof(*idx));
	int rc = 0;
	bool all = true;

	if (idx == NULL)
		return KVD_ENOMEM;
	if (max_states == 0)
		max_states = DEFAULT_MAX_STATES;
	for (size_t i = 0; i < h->n; i++)
		idx[i] = i;
	qsort_r(idx, h->n, sizeof(*idx), key_cmp, h->ops);
	for (size_t start = 0; start < h->n && all;) {
		size_t end = start + 1;
		while (end < h->n && strcmp(h->ops[idx[end]].key, h->ops[idx[start]].key) == 0)
			end++;
		bool key_ok = true;
		rc = check_key(h, idx + start, end - start, max_states, &key_ok);
		if (rc != 0)
			break;
		if (!key_ok) {
			all = false;
			if (why != NULL && why_size > 0)
				snprintf(why, why_size,
					 "key \"%s\": no linearization of its %zu operations",
					 h->ops[idx[start]].key, end - start);
		}
		start = end;
	}
	free(idx);
	if (rc == 0)
		*ok = all;
	return rc;
}
