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
	struct linearize_op *ops; /* a txn's txn is owned (malloc'd) */
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
	for (size_t i = 0; i < h->n; i++)
		free((struct linearize_txn *)h->ops[i].txn);
	free(h->ops);
	free(h);
}

size_t linearize_history_count(const struct linearize_history *h)
{
	return h->n;
}

/* Whether a txn's parts are in range for an op of the given outcome. */
static bool txn_valid(const struct linearize_txn *t, enum linearize_outcome outcome)
{
	if (t == NULL || t->n_cmp > LINEARIZE_TXN_MAX || outcome == LINEARIZE_REFUSED)
		return false;
	for (size_t i = 0; i < t->n_cmp; i++)
		if (t->cmp[i].revision >= REV_LIMIT)
			return false;
	for (int b = 0; b < 2; b++) {
		if (t->n_ops[b] > LINEARIZE_TXN_MAX)
			return false;
		for (size_t i = 0; i < t->n_ops[b]; i++) {
			const struct linearize_txn_op *o = &t->ops[b][i];
			if (o->kind != LINEARIZE_PUT && o->kind != LINEARIZE_DELETE &&
			    o->kind != LINEARIZE_GET)
				return false;
			if (o->has_result && (o->kind != LINEARIZE_GET || outcome != LINEARIZE_OK ||
					      b != (t->succeeded ? 0 : 1)))
				return false;
			if (o->revision >= REV_LIMIT)
				return false;
		}
	}
	return true;
}

int linearize_history_add(struct linearize_history *h, const struct linearize_op *op)
{
	struct linearize_txn *txn = NULL;

	if (op->return_time < op->invoke_time || op->kind < LINEARIZE_PUT ||
	    op->kind > LINEARIZE_TXN || op->outcome < LINEARIZE_OK ||
	    op->outcome > LINEARIZE_REFUSED ||
	    (op->outcome == LINEARIZE_REFUSED && op->kind < LINEARIZE_PUT_IF) ||
	    op->revision >= REV_LIMIT || op->if_revision >= REV_LIMIT ||
	    (op->kind == LINEARIZE_TXN && !txn_valid(op->txn, op->outcome)))
		return KVD_EINVAL;
	if (op->kind == LINEARIZE_TXN) {
		txn = malloc(sizeof(*txn));
		if (txn == NULL)
			return KVD_ENOMEM;
		*txn = *op->txn;
		for (size_t i = 0; i < txn->n_cmp; i++)
			txn->cmp[i].key[LINEARIZE_STR_SIZE - 1] = '\0';
		for (int b = 0; b < 2; b++)
			for (size_t i = 0; i < txn->n_ops[b]; i++) {
				txn->ops[b][i].key[LINEARIZE_STR_SIZE - 1] = '\0';
				txn->ops[b][i].value[LINEARIZE_STR_SIZE - 1] = '\0';
			}
	}
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		struct linearize_op *ops = realloc(h->ops, cap * sizeof(*ops));
		if (ops == NULL) {
			free(txn);
			return KVD_ENOMEM;
		}
		h->ops = ops;
		h->cap = cap;
	}
	h->ops[h->n] = *op;
	h->ops[h->n].key[LINEARIZE_STR_SIZE - 1] = '\0';
	h->ops[h->n].value[LINEARIZE_STR_SIZE - 1] = '\0';
	h->ops[h->n].txn = txn;
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
		else if (op->revision == 0 && parse_rev_token(tok, "rev", &op->revision))
			continue;
		else
			return KVD_EINVAL;
	}
	return has_if == conditional ? 0 : KVD_EINVAL;
}

/* Characters a txn's keys and values may not hold (the text format's). */
#define TXN_SEPARATORS ",:=@/"

/* Copies the n bytes at src into dst as a txn key or value (non-empty,
 * shorter than LINEARIZE_STR_SIZE, no separator). */
static bool txn_token(char *dst, const char *src, size_t n)
{
	if (n == 0 || n >= LINEARIZE_STR_SIZE)
		return false;
	for (size_t i = 0; i < n; i++)
		if (strchr(TXN_SEPARATORS, src[i]) != NULL)
			return false;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return true;
}

/* Parses a decimal revision (>= 0, or >= 1 when positive) of n bytes. */
static bool txn_rev(const char *src, size_t n, bool positive, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 13)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (src[i] < '0' || src[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(src[i] - '0');
	}
	if (v >= REV_LIMIT || (positive && v == 0))
		return false;
	*out = v;
	return true;
}

/* Parses "-" or key=rev,... into t's comparisons. */
static bool parse_compare(const char *s, struct linearize_txn *t)
{
	if (strcmp(s, "-") == 0)
		return true;
	for (;;) {
		const char *end = strchr(s, ','), *eq = strchr(s, '=');
		if (end == NULL)
			end = s + strlen(s);
		if (t->n_cmp == LINEARIZE_TXN_MAX || eq == NULL || eq > end)
			return false;
		struct linearize_compare *c = &t->cmp[t->n_cmp++];
		if (!txn_token(c->key, s, (size_t)(eq - s)) ||
		    !txn_rev(eq + 1, (size_t)(end - eq - 1), false, &c->revision))
			return false;
		if (*end == '\0')
			return true;
		s = end + 1;
	}
}

/* Parses one branch operation of n bytes at s. */
static bool parse_txn_op(const char *s, size_t n, struct linearize_txn_op *o)
{
	const char *end = s + n, *colon = memchr(s, ':', n);

	memset(o, 0, sizeof(*o));
	if (colon == NULL)
		return false;
	if ((size_t)(colon - s) == 3 && memcmp(s, "put", 3) == 0) {
		const char *c2 = memchr(colon + 1, ':', (size_t)(end - colon - 1));
		o->kind = LINEARIZE_PUT;
		o->has_value = true;
		return c2 != NULL && txn_token(o->key, colon + 1, (size_t)(c2 - colon - 1)) &&
		       txn_token(o->value, c2 + 1, (size_t)(end - c2 - 1));
	}
	if ((size_t)(colon - s) == 6 && memcmp(s, "delete", 6) == 0) {
		o->kind = LINEARIZE_DELETE;
		return txn_token(o->key, colon + 1, (size_t)(end - colon - 1));
	}
	if ((size_t)(colon - s) != 3 || memcmp(s, "get", 3) != 0)
		return false;
	o->kind = LINEARIZE_GET;
	const char *eq = memchr(colon + 1, '=', (size_t)(end - colon - 1));
	if (eq == NULL)
		return txn_token(o->key, colon + 1, (size_t)(end - colon - 1));
	if (!txn_token(o->key, colon + 1, (size_t)(eq - colon - 1)))
		return false;
	o->has_result = true;
	if (end - eq == 2 && eq[1] == '-')
		return true;
	const char *at = memchr(eq + 1, '@', (size_t)(end - eq - 1));
	o->has_value = true;
	if (at == NULL)
		return txn_token(o->value, eq + 1, (size_t)(end - eq - 1));
	return txn_token(o->value, eq + 1, (size_t)(at - eq - 1)) &&
	       txn_rev(at + 1, (size_t)(end - at - 1), true, &o->revision);
}

/* Parses "<success>/<failure>" into t's branches. */
static bool parse_branches(const char *s, struct linearize_txn *t)
{
	const char *slash = strchr(s, '/');

	if (slash == NULL || strchr(slash + 1, '/') != NULL)
		return false;
	for (int b = 0; b < 2; b++) {
		const char *p = b == 0 ? s : slash + 1;
		const char *stop = b == 0 ? slash : p + strlen(p);
		if (stop - p == 1 && *p == '-')
			continue;
		for (;;) {
			const char *end = memchr(p, ',', (size_t)(stop - p));
			if (end == NULL)
				end = stop;
			if (t->n_ops[b] == LINEARIZE_TXN_MAX ||
			    !parse_txn_op(p, (size_t)(end - p), &t->ops[b][t->n_ops[b]++]))
				return false;
			if (end == stop)
				break;
			p = end + 1;
		}
	}
	return true;
}

/* Parses a txn line's compare, branches and extras (branch=, rev=). */
static int parse_txn(const char *compare, const char *branches, const char *extras,
		     struct linearize_op *op)
{
	static _Thread_local struct linearize_txn parsed;
	char a[32] = "", b[32] = "", c[8] = "";
	int n = sscanf(extras, "%31s %31s %7s", a, b, c);
	bool has_branch = false;

	memset(&parsed, 0, sizeof(parsed));
	op->txn = &parsed;
	if (op->outcome == LINEARIZE_REFUSED || n == 3 || !parse_compare(compare, &parsed) ||
	    !parse_branches(branches, &parsed))
		return KVD_EINVAL;
	for (int i = 0; i < n; i++) {
		const char *tok = i == 0 ? a : b;
		if (!has_branch && strcmp(tok, "branch=success") == 0)
			has_branch = parsed.succeeded = true;
		else if (!has_branch && strcmp(tok, "branch=failure") == 0)
			has_branch = true;
		else if (op->revision != 0 || !parse_rev_token(tok, "rev", &op->revision))
			return KVD_EINVAL;
	}
	if (has_branch != (op->outcome == LINEARIZE_OK) || !txn_valid(&parsed, op->outcome))
		return KVD_EINVAL;
	return 0;
}

int linearize_op_parse(const char *line, struct linearize_op *op)
{
	char kind[16], key[1024], value[1024], outcome[16];
	unsigned long long client, inv, ret;
	const char *p = line;
	int used = 0;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0' || *p == '\n' || *p == '#' || *p == '\r')
		return KVD_ENOTFOUND;
	if (sscanf(p, "%llu %15s %1023s %1023s %llu %llu %15s%n", &client, kind, key, value, &inv,
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
	else if (strcmp(kind, "txn") == 0)
		op->kind = LINEARIZE_TXN;
	else
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
	if (op->kind == LINEARIZE_TXN)
		return parse_txn(key, value, p + used, op);
	if (copy_token(op->key, key) != 0)
		return KVD_EINVAL;
	op->has_value = strcmp(value, "-") != 0;
	if (op->has_value && copy_token(op->value, value) != 0)
		return KVD_EINVAL;
	if ((op->kind == LINEARIZE_PUT || op->kind == LINEARIZE_PUT_IF ||
	     op->kind == LINEARIZE_PUT_ABSENT) &&
	    !op->has_value)
		return KVD_EINVAL;
	return parse_extras(p + used, op);
}

/* Writes a txn's compare and branches columns. */
static void print_txn(const struct linearize_txn *t, FILE *f)
{
	for (size_t i = 0; i < t->n_cmp; i++)
		fprintf(f, "%s%s=%llu", i ? "," : "", t->cmp[i].key,
			(unsigned long long)t->cmp[i].revision);
	fputs(t->n_cmp ? " " : "- ", f);
	for (int b = 0; b < 2; b++) {
		if (b == 1)
			fputc('/', f);
		if (t->n_ops[b] == 0)
			fputc('-', f);
		for (size_t i = 0; i < t->n_ops[b]; i++) {
			const struct linearize_txn_op *o = &t->ops[b][i];
			const char *sep = i ? "," : "";
			if (o->kind == LINEARIZE_PUT)
				fprintf(f, "%sput:%s:%s", sep, o->key, o->value);
			else if (o->kind == LINEARIZE_DELETE)
				fprintf(f, "%sdelete:%s", sep, o->key);
			else if (!o->has_result)
				fprintf(f, "%sget:%s", sep, o->key);
			else if (!o->has_value)
				fprintf(f, "%sget:%s=-", sep, o->key);
			else if (o->revision == 0)
				fprintf(f, "%sget:%s=%s", sep, o->key, o->value);
			else
				fprintf(f, "%sget:%s=%s@%llu", sep, o->key, o->value,
					(unsigned long long)o->revision);
		}
	}
}

void linearize_op_print(const struct linearize_op *op, FILE *f)
{
	static const char *kinds[] = {"?",	"put",	      "get",	   "delete",
				      "put-if", "put-absent", "delete-if", "txn"};
	static const char *outcomes[] = {"?", "ok", "fail", "unknown", "refused"};

	fprintf(f, "%llu %s ", (unsigned long long)op->client, kinds[op->kind]);
	if (op->kind == LINEARIZE_TXN)
		print_txn(op->txn, f);
	else
		fprintf(f, "%s %s", op->key, op->has_value ? op->value : "-");
	fprintf(f, " %llu %llu %s", (unsigned long long)op->invoke_time,
		(unsigned long long)op->return_time, outcomes[op->outcome]);
	if (op->kind == LINEARIZE_TXN && op->outcome == LINEARIZE_OK)
		fprintf(f, " branch=%s", op->txn->succeeded ? "success" : "failure");
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

/* One branch operation of a txn, in the search's terms. */
struct stop {
	enum linearize_kind kind; /* PUT, DELETE or GET */
	bool has_result;	  /* get: check value and rev */
	uint32_t slot;
	uint32_t value; /* put: written; get: seen (0 absent) */
	uint64_t rev;	/* get: seen; 0 unknown */
};

/* One comparison of a txn, in the search's terms. */
struct scmp {
	uint32_t slot;
	uint64_t rev; /* 0: absent */
};

/* One operation of a partition (keys joined by txns), in the search's
 * terms. */
struct sop {
	enum linearize_kind kind;
	enum linearize_outcome outcome; /* OK, UNKNOWN or REFUSED here */
	uint32_t slot;			/* the key's place in the state */
	uint32_t value;			/* interned; 0 is "absent" */
	uint64_t rev;			/* given or seen; 0 unknown */
	uint64_t if_rev;
	uint64_t invoke;
	uint64_t ret; /* UINT64_MAX: may take effect any time after invoke */
	size_t orig;  /* index in the history, for messages */
	/* The log index of a write that records it (put, put-if and
	 * put-absent not refused, txn), else 0; see check_group(). */
	uint64_t order;
	/* txn: comparisons and the operations of both branches in the
	 * partition's arrays */
	bool succeeded;
	uint32_t cmp_at, n_cmp;
	uint32_t ops_at[2], n_ops[2];
};

/* A partition: its operations, txn parts and number of keys. The state is
 * one word per key, then the highest write index linearized so far. */
struct part {
	struct sop *ops;
	uint32_t n;
	uint32_t *unknown; /* unknown writes with an index, by index */
	uint32_t n_unknown;
	struct scmp *cmps;
	struct stop *tops;
	uint32_t keys;
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
	size_t sw;    /* uint64 words per state (one per key) */
	size_t cap;   /* slots, power of two */
	size_t count;
	uint64_t *keys; /* cap * (words + sw): bitset words then state */
	uint8_t *used;
};

static uint64_t memo_hash(const uint64_t *k, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++) {
		h ^= k[i];
		h *= 1099511628211ull;
		h ^= h >> 29;
	}
	return h;
}

static int memo_grow(struct memo *m)
{
	size_t cap = m->cap ? m->cap * 2 : 1024;
	size_t stride = m->words + m->sw;
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
		size_t j = memo_hash(k, stride) & (cap - 1);
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

/* Adds key (bitset words then state words). Returns 1 if added, 0 if
 * already present, or a code. */
static int memo_add(struct memo *m, const uint64_t *key)
{
	size_t stride = m->words + m->sw;
	if ((m->count + 1) * 2 > m->cap) {
		int rc = memo_grow(m);
		if (rc != 0)
			return rc;
	}
	size_t j = memo_hash(key, stride) & (m->cap - 1);
	while (m->used[j]) {
		if (memcmp(m->keys + j * stride, key, stride * sizeof(uint64_t)) == 0)
			return 0;
		j = (j + 1) & (m->cap - 1);
	}
	m->used[j] = 1;
	memcpy(m->keys + j * stride, key, stride * sizeof(uint64_t));
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

/* A read of (value, rev) in *st: whether possible; a seen revision fixes an
 * unknown one (the value's write has exactly one revision). */
static bool read_matches(uint64_t *st, uint32_t value, uint64_t rev)
{
	uint64_t r = *st & (REV_LIMIT - 1);

	if (*st >> REV_BITS != value)
		return false;
	if (value == 0 || rev == 0)
		return true;
	if (r == 0)
		*st |= rev;
	return r == 0 || r == rev;
}

/* Applies a txn to next (a copy of the state before it): its comparisons
 * select the branch (an ok txn's recorded branch must be possible), whose
 * operations then run in order at the txn's revision. */
static bool txn_apply(const struct part *p, const struct sop *op, uint64_t *next)
{
	bool no = false, maybe = false, success;

	for (uint32_t i = 0; i < op->n_cmp; i++) {
		const struct scmp *c = &p->cmps[op->cmp_at + i];
		uint64_t v = next[c->slot] >> REV_BITS, r = next[c->slot] & (REV_LIMIT - 1);
		if (c->rev == 0)
			no = no || v != 0;
		else if (v == 0 || (r != 0 && r != c->rev))
			no = true;
		else if (r == 0)
			maybe = true;
	}
	if (op->outcome == LINEARIZE_OK) {
		success = op->succeeded;
		if ((success && no) || (!success && !no && !maybe))
			return false;
	} else {
		success = !no; /* unknown: permissive on an unknown revision */
	}
	for (uint32_t i = 0; success && maybe && i < op->n_cmp; i++) {
		/* the comparisons held: unknown revisions were theirs */
		const struct scmp *c = &p->cmps[op->cmp_at + i];
		if (c->rev != 0 &&
		    !read_matches(&next[c->slot], (uint32_t)(next[c->slot] >> REV_BITS), c->rev))
			return false;
	}
	int b = success ? 0 : 1;
	for (uint32_t i = 0; i < op->n_ops[b]; i++) {
		const struct stop *t = &p->tops[op->ops_at[b] + i];
		uint64_t *st = &next[t->slot];
		if (t->kind == LINEARIZE_PUT)
			*st = (uint64_t)t->value << REV_BITS | op->rev;
		else if (t->kind == LINEARIZE_DELETE)
			*st = 0;
		else if (t->has_result && !read_matches(st, t->value, t->rev))
			return false;
	}
	return true;
}

/* Applies op to state (p->keys + 1 words); returns whether legal and
 * writes the next state. */
static bool sop_apply(const struct part *p, const struct sop *op, const uint64_t *state,
		      uint64_t *next)
{
	uint64_t written = (uint64_t)op->value << REV_BITS | op->rev;
	uint64_t *st = &next[op->slot];
	bool maybe, holds;

	memcpy(next, state, (p->keys + 1) * sizeof(uint64_t));
	if (op->order != 0) {
		/* writes take effect in the order of their log indexes */
		if (op->order <= state[p->keys])
			return false;
		next[p->keys] = op->order;
	}
	switch (op->kind) {
	case LINEARIZE_PUT: *st = written; return true;
	case LINEARIZE_DELETE: *st = 0; return true;
	case LINEARIZE_GET: return read_matches(st, op->value, op->rev);
	case LINEARIZE_PUT_IF:
	case LINEARIZE_PUT_ABSENT:
	case LINEARIZE_DELETE_IF:
		holds = cond_holds(op, *st, &maybe);
		if (op->outcome == LINEARIZE_REFUSED)
			return !holds || maybe;
		if (holds)
			*st = op->kind == LINEARIZE_DELETE_IF ? 0 : written;
		/* ok needs the condition; unknown takes effect iff it holds */
		return holds || op->outcome == LINEARIZE_UNKNOWN;
	case LINEARIZE_TXN: return txn_apply(p, op, next);
	}
	return false;
}

/* Lifts op's invoke and return events out of the list. */
static void lift(struct event *ev, const int32_t *call_of, const int32_t *ret_of, uint32_t op)
{
	int32_t c = call_of[op], r = ret_of[op];
	ev[ev[c].prev].next = ev[c].next;
	if (ev[c].next != -1)
		ev[ev[c].next].prev = ev[c].prev;
	ev[ev[r].prev].next = ev[r].next;
	if (ev[r].next != -1)
		ev[ev[r].next].prev = ev[r].prev;
}

/* Puts op's events back (the reverse of lift(), in reverse order). */
static void unlift(struct event *ev, const int32_t *call_of, const int32_t *ret_of, uint32_t op)
{
	int32_t c = call_of[op], r = ret_of[op];
	ev[ev[r].prev].next = r;
	if (ev[r].next != -1)
		ev[ev[r].next].prev = r;
	ev[ev[c].prev].next = c;
	if (ev[c].next != -1)
		ev[ev[c].next].prev = c;
}

/* First position in p->unknown of an index above rev. */
static uint32_t unknown_after(const struct part *p, uint64_t rev)
{
	uint32_t lo = 0, hi = p->n_unknown;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (p->ops[p->unknown[mid]].order <= rev)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* A linearized operation and how many unknown writes it retired. */
struct frame {
	uint32_t op;
	uint32_t retired; /* entries it pushed on the retired stack */
};

/*
 * Searches one partition. Returns 0 with *ok set, or a code.
 *
 * Writes with an index take effect in index order (state word p->keys is
 * the highest linearized). When it rises past an unknown write that was
 * not linearized, that write can no longer happen: it is retired (lifted
 * as linearized with no effect) at once, so the memo sees one
 * configuration instead of one per subset of dead unknown writes.
 */
static int check_partition(const struct part *p, size_t max_states, bool *ok)
{
	uint32_t n = p->n, sw = p->keys + 1;
	const struct sop *ops = p->ops;
	struct event *ev = NULL;
	int32_t *call_of = NULL, *ret_of = NULL;
	uint64_t *key = NULL, *next = NULL, *saved = NULL;
	struct frame *stack = NULL;
	uint32_t *retired = NULL, n_retired = 0;
	struct memo memo = {0};
	int rc = KVD_ENOMEM;

	*ok = true;
	if (n == 0)
		return 0;
	ev = malloc((2 * (size_t)n + 1) * sizeof(*ev));
	call_of = malloc(n * sizeof(*call_of));
	ret_of = malloc(n * sizeof(*ret_of));
	memo.words = (n + 63) / 64;
	memo.sw = sw;
	/* key: the linearized bitset then the current state */
	key = calloc(memo.words + sw, sizeof(uint64_t));
	next = calloc(sw, sizeof(uint64_t));
	stack = malloc(n * sizeof(*stack));
	retired = malloc(n * sizeof(*retired));
	saved = malloc((size_t)n * sw * sizeof(*saved)); /* state before each */
	if (ev == NULL || call_of == NULL || ret_of == NULL || key == NULL || next == NULL ||
	    stack == NULL || retired == NULL || saved == NULL)
		goto out;
	uint64_t *bits = key, *state = key + memo.words;
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
			if (!sop_apply(p, &ops[op], state, next)) {
				e = ev[e].next;
				continue;
			}
			memcpy(saved + depth * sw, state, sw * sizeof(uint64_t));
			bits[op / 64] |= 1ull << (op % 64);
			uint32_t first = n_retired;
			for (uint32_t u = unknown_after(p, state[p->keys]);
			     u < p->n_unknown && ops[p->unknown[u]].order <= next[p->keys]; u++) {
				uint32_t w = p->unknown[u];
				if (bits[w / 64] & (1ull << (w % 64)))
					continue;
				bits[w / 64] |= 1ull << (w % 64);
				retired[n_retired++] = w;
			}
			memcpy(state, next, sw * sizeof(uint64_t));
			int added = memo_add(&memo, key);
			if (added < 0) {
				rc = added;
				goto out;
			}
			if (added == 0) {
				while (n_retired > first) {
					uint32_t w = retired[--n_retired];
					bits[w / 64] &= ~(1ull << (w % 64));
				}
				bits[op / 64] &= ~(1ull << (op % 64));
				memcpy(state, saved + depth * sw, sw * sizeof(uint64_t));
				e = ev[e].next;
				continue;
			}
			if (memo.count > max_states) {
				rc = KVD_ETOOBIG;
				goto out;
			}
			stack[depth++] = (struct frame){op, n_retired - first};
			lift(ev, call_of, ret_of, op);
			for (uint32_t i = first; i < n_retired; i++)
				lift(ev, call_of, ret_of, retired[i]);
			e = ev[0].next;
		} else {
			if (depth == 0) {
				*ok = false;
				break;
			}
			struct frame f = stack[--depth];
			memcpy(state, saved + depth * sw, sw * sizeof(uint64_t));
			for (uint32_t i = 0; i < f.retired; i++) {
				uint32_t w = retired[--n_retired];
				bits[w / 64] &= ~(1ull << (w % 64));
				unlift(ev, call_of, ret_of, w);
			}
			bits[f.op / 64] &= ~(1ull << (f.op % 64));
			unlift(ev, call_of, ret_of, f.op);
			e = ev[call_of[f.op]].next;
		}
	}
	rc = 0;
out:
	free(ev);
	free(call_of);
	free(ret_of);
	free(key);
	free(next);
	free(stack);
	free(retired);
	free(saved);
	free(memo.keys);
	free(memo.used);
	return rc;
}

/* Interning of values (and keys) to ids 1.., by open addressing. */
struct names {
	const char **s; /* cap slots; NULL free */
	uint32_t *id;
	size_t cap;
	uint32_t count;
};

static uint64_t str_hash(const char *v)
{
	uint64_t h = 1469598103934665603ull;
	for (; *v != '\0'; v++) {
		h ^= (unsigned char)*v;
		h *= 1099511628211ull;
	}
	return h;
}

/* Sizes t for at most n names. Returns 0 or KVD_ENOMEM. */
static int names_init(struct names *t, size_t n)
{
	t->cap = 16;
	while (t->cap < 2 * n + 2)
		t->cap *= 2;
	t->s = calloc(t->cap, sizeof(*t->s));
	t->id = calloc(t->cap, sizeof(*t->id));
	t->count = 0;
	return t->s != NULL && t->id != NULL ? 0 : KVD_ENOMEM;
}

static void names_free(struct names *t)
{
	free(t->s);
	free(t->id);
}

/* Returns v's id (1-based), adding it (within the size given at init). */
static uint32_t intern(struct names *t, const char *v)
{
	size_t j = str_hash(v) & (t->cap - 1);
	while (t->s[j] != NULL) {
		if (strcmp(t->s[j], v) == 0)
			return t->id[j];
		j = (j + 1) & (t->cap - 1);
	}
	t->s[j] = v;
	t->id[j] = ++t->count;
	return t->count;
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

/* Number of key references of o (each comparison and branch operation of a
 * txn). */
static size_t op_keys(const struct linearize_op *o)
{
	if (o->kind != LINEARIZE_TXN)
		return 1;
	return o->txn->n_cmp + o->txn->n_ops[0] + o->txn->n_ops[1];
}

/* The i-th key reference of o. */
static const char *op_key(const struct linearize_op *o, size_t i)
{
	const struct linearize_txn *t = o->txn;
	if (o->kind != LINEARIZE_TXN)
		return o->key;
	if (i < t->n_cmp)
		return t->cmp[i].key;
	i -= t->n_cmp;
	if (i < t->n_ops[0])
		return t->ops[0][i].key;
	return t->ops[1][i - t->n_ops[0]].key;
}

static int unknown_cmp(const void *a, const void *b, void *ops)
{
	const struct sop *x = (const struct sop *)ops + *(const uint32_t *)a;
	const struct sop *y = (const struct sop *)ops + *(const uint32_t *)b;
	return x->order < y->order ? -1 : (x->order > y->order);
}

static int order_cmp(const void *a, const void *b)
{
	const struct sop *x = *(const struct sop *const *)a, *y = *(const struct sop *const *)b;
	return x->order < y->order ? -1 : (x->order > y->order);
}

/*
 * Writes take effect in log order, and a write's revision is its log index:
 * an unknown write W recorded with its index (it was proposed at that index)
 * either happened before every write of a higher index, so before the
 * earliest return among the ok ones, or never happened. So W's return time
 * becomes that earliest return; if it did not happen, it is retired (as
 * linearized with no effect) when a higher index is linearized
 * (check_partition()). This bounds how long unknown writes stay pending,
 * which keeps histories with many of them tractable. Also lists the
 * unknown writes with an index in p->unknown, by index.
 */
static int set_deadlines(struct part *p)
{
	struct sop **known = malloc((p->n ? p->n : 1) * sizeof(*known));
	uint64_t *min_ret = malloc((p->n ? p->n : 1) * sizeof(*min_ret));
	size_t k = 0;
	int rc = KVD_ENOMEM;

	if (known == NULL || min_ret == NULL)
		goto out;
	for (uint32_t i = 0; i < p->n; i++)
		if (p->ops[i].order != 0 && p->ops[i].outcome != LINEARIZE_UNKNOWN)
			known[k++] = &p->ops[i];
	qsort(known, k, sizeof(*known), order_cmp);
	/* min_ret[j]: the earliest return among known[j..k) */
	for (size_t j = k; j > 0; j--)
		min_ret[j - 1] =
		    j == k || known[j - 1]->ret < min_ret[j] ? known[j - 1]->ret : min_ret[j];
	p->n_unknown = 0;
	for (uint32_t i = 0; i < p->n; i++) {
		struct sop *w = &p->ops[i];
		size_t lo = 0, hi = k;
		if (w->order == 0 || w->outcome != LINEARIZE_UNKNOWN)
			continue;
		p->unknown[p->n_unknown++] = i;
		while (lo < hi) { /* first known write of a higher index */
			size_t mid = (lo + hi) / 2;
			if (known[mid]->order <= w->order)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo < k && min_ret[lo] >= w->invoke)
			w->ret = min_ret[lo];
	}
	qsort_r(p->unknown, p->n_unknown, sizeof(*p->unknown), unknown_cmp, p->ops);
	rc = 0;
out:
	free(known);
	free(min_ret);
	return rc;
}

/* Builds and searches the partition of the m operations idx (whose keys
 * have ids kid via keys; slot_of is scratch of one entry per key id, all
 * UINT32_MAX). */
static int check_group(const struct linearize_history *h, const size_t *idx, size_t m,
		       struct names *keys, uint32_t *slot_of, size_t max_states, bool *ok)
{
	struct part p = {0};
	struct names values = {0};
	size_t n_cmp = 0, n_tops = 0, n_refs = 0;
	bool conditional = false;
	int rc = KVD_ENOMEM;

	for (size_t i = 0; i < m; i++) {
		const struct linearize_op *o = &h->ops[idx[i]];
		conditional = conditional || o->kind >= LINEARIZE_PUT_IF;
		n_refs += op_keys(o);
		if (o->kind == LINEARIZE_TXN) {
			n_cmp += o->txn->n_cmp;
			n_tops += o->txn->n_ops[0] + o->txn->n_ops[1];
		}
	}
	p.ops = malloc((m ? m : 1) * sizeof(*p.ops));
	p.cmps = malloc((n_cmp ? n_cmp : 1) * sizeof(*p.cmps));
	p.tops = malloc((n_tops ? n_tops : 1) * sizeof(*p.tops));
	p.unknown = malloc((m ? m : 1) * sizeof(*p.unknown));
	if (p.ops == NULL || p.cmps == NULL || p.tops == NULL || p.unknown == NULL ||
	    names_init(&values, n_refs) != 0)
		goto out;
	n_cmp = n_tops = 0;
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
		struct sop *s = &p.ops[p.n++];
		memset(s, 0, sizeof(*s));
		s->kind = o->kind;
		s->outcome = o->outcome;
		s->rev = o->revision;
		s->if_rev = o->if_revision;
		s->invoke = o->invoke_time;
		s->ret = o->outcome == LINEARIZE_UNKNOWN ? UINT64_MAX : o->return_time;
		s->orig = idx[i];
		if (o->kind != LINEARIZE_GET && o->outcome != LINEARIZE_REFUSED)
			s->order = o->revision;
		for (size_t k = 0; k < op_keys(o); k++) {
			uint32_t id = intern(keys, op_key(o, k)) - 1;
			if (slot_of[id] == UINT32_MAX)
				slot_of[id] = p.keys++;
		}
		if (o->kind != LINEARIZE_TXN) {
			s->slot = slot_of[intern(keys, o->key) - 1];
			if (o->kind != LINEARIZE_DELETE && o->kind != LINEARIZE_DELETE_IF &&
			    o->has_value)
				s->value = intern(&values, o->value);
			continue;
		}
		const struct linearize_txn *t = o->txn;
		s->succeeded = t->succeeded;
		s->cmp_at = (uint32_t)n_cmp;
		s->n_cmp = (uint32_t)t->n_cmp;
		for (size_t k = 0; k < t->n_cmp; k++)
			p.cmps[n_cmp++] = (struct scmp){slot_of[intern(keys, t->cmp[k].key) - 1],
							t->cmp[k].revision};
		for (int b = 0; b < 2; b++) {
			s->ops_at[b] = (uint32_t)n_tops;
			s->n_ops[b] = (uint32_t)t->n_ops[b];
			for (size_t k = 0; k < t->n_ops[b]; k++) {
				const struct linearize_txn_op *to = &t->ops[b][k];
				struct stop *d = &p.tops[n_tops++];
				d->kind = to->kind;
				d->has_result = to->has_result;
				d->slot = slot_of[intern(keys, to->key) - 1];
				d->value = to->has_value ? intern(&values, to->value) : 0;
				d->rev = to->revision;
			}
		}
	}
	if (p.keys == 0)
		p.keys = 1;
	rc = set_deadlines(&p);
	if (rc == 0)
		rc = check_partition(&p, max_states, ok);
out:
	free(p.ops);
	free(p.cmps);
	free(p.tops);
	free(p.unknown);
	names_free(&values);
	return rc;
}

/* Union-find over key ids: the root of a component is its smallest id. */
static uint32_t uf_find(uint32_t *parent, uint32_t x)
{
	while (parent[x] != x) {
		parent[x] = parent[parent[x]];
		x = parent[x];
	}
	return x;
}

static void uf_union(uint32_t *parent, uint32_t a, uint32_t b)
{
	a = uf_find(parent, a);
	b = uf_find(parent, b);
	if (a < b)
		parent[b] = a;
	else if (b < a)
		parent[a] = b;
}

/* (component, index) order of the operations. */
struct comp_idx {
	uint32_t comp;
	size_t idx;
};

static int comp_cmp(const void *a, const void *b)
{
	const struct comp_idx *x = a, *y = b;
	if (x->comp != y->comp)
		return x->comp < y->comp ? -1 : 1;
	return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

/* Writes the keys of the component holding key id comp into why. */
static void describe(const struct comp_idx *g, size_t m, struct names *keys, uint32_t *parent,
		     char *why, size_t why_size)
{
	const char *first = NULL;
	size_t count = 0;

	/* the component's keys; the smallest by name is named */
	for (size_t i = 0; i < keys->cap; i++)
		if (keys->s[i] != NULL && uf_find(parent, keys->id[i] - 1) == g[0].comp) {
			count++;
			if (first == NULL || strcmp(keys->s[i], first) < 0)
				first = keys->s[i];
		}
	if (count <= 1)
		snprintf(why, why_size, "key \"%s\": no linearization of its %zu operations",
			 first != NULL ? first : "", m);
	else
		snprintf(why, why_size,
			 "keys \"%s\" and %zu more (joined by transactions): no linearization of "
			 "their %zu operations",
			 first, count - 1, m);
}

int linearize_history_check(const struct linearize_history *h, size_t max_states, bool *ok,
			    char *why, size_t why_size)
{
	struct names keys = {0};
	struct comp_idx *order = NULL;
	uint32_t *parent = NULL, *slot_of = NULL;
	size_t *idx = NULL, n_refs = 0, n_order = 0;
	bool all = true;
	int rc = KVD_ENOMEM;

	if (max_states == 0)
		max_states = DEFAULT_MAX_STATES;
	for (size_t i = 0; i < h->n; i++)
		n_refs += op_keys(&h->ops[i]);
	order = malloc((h->n ? h->n : 1) * sizeof(*order));
	idx = malloc((h->n ? h->n : 1) * sizeof(*idx));
	parent = malloc((n_refs ? n_refs : 1) * sizeof(*parent));
	slot_of = malloc((n_refs ? n_refs : 1) * sizeof(*slot_of));
	if (order == NULL || idx == NULL || parent == NULL || slot_of == NULL ||
	    names_init(&keys, n_refs) != 0)
		goto out;
	for (size_t i = 0; i < n_refs; i++) {
		parent[i] = (uint32_t)i;
		slot_of[i] = UINT32_MAX;
	}
	/* Keys of one txn are searched together (a failed txn joins none). */
	for (size_t i = 0; i < h->n; i++) {
		const struct linearize_op *o = &h->ops[i];
		for (size_t k = 0; k < op_keys(o); k++) {
			uint32_t id = intern(&keys, op_key(o, k)) - 1;
			if (k > 0 && o->outcome != LINEARIZE_FAIL)
				uf_union(parent, intern(&keys, op_key(o, 0)) - 1, id);
		}
	}
	for (size_t i = 0; i < h->n; i++)
		if (op_keys(&h->ops[i]) > 0) /* (a txn of no keys changes nothing) */
			order[n_order++] = (struct comp_idx){
			    uf_find(parent, intern(&keys, op_key(&h->ops[i], 0)) - 1), i};
	qsort(order, n_order, sizeof(*order), comp_cmp);
	rc = 0;
	for (size_t start = 0; start < n_order && all;) {
		size_t end = start + 1;
		while (end < n_order && order[end].comp == order[start].comp)
			end++;
		for (size_t i = start; i < end; i++)
			idx[i - start] = order[i].idx;
		bool key_ok = true;
		rc = check_group(h, idx, end - start, &keys, slot_of, max_states, &key_ok);
		if (rc != 0)
			break;
		for (size_t i = start; i < end; i++) {
			const struct linearize_op *o = &h->ops[order[i].idx];
			for (size_t k = 0; k < op_keys(o); k++)
				slot_of[intern(&keys, op_key(o, k)) - 1] = UINT32_MAX;
		}
		if (!key_ok) {
			all = false;
			if (why != NULL && why_size > 0)
				describe(order + start, end - start, &keys, parent, why, why_size);
		}
		start = end;
	}
out:
	free(order);
	free(idx);
	free(parent);
	free(slot_of);
	names_free(&keys);
	if (rc == 0)
		*ok = all;
	return rc;
}

/* ------------------------------------------------------------ watch streams */

int linearize_change_parse(const char *line, struct linearize_change *c)
{
	char kind[16], key[256] = "", value[256] = "", extra[8] = "";
	unsigned long long rev;
	const char *p = line;
	int n;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0' || *p == '\n' || *p == '#' || *p == '\r')
		return KVD_ENOTFOUND;
	memset(c, 0, sizeof(*c));
	if (*p < '0' || *p > '9')
		return KVD_EINVAL;
	n = sscanf(p, "%llu %15s %255s %255s %7s", &rev, kind, key, value, extra);
	if (n < 2 || rev == 0 || rev >= REV_LIMIT)
		return KVD_EINVAL;
	c->revision = rev;
	if (strcmp(kind, "put") == 0 && n == 4)
		c->kind = LINEARIZE_CHANGE_PUT;
	else if (strcmp(kind, "delete") == 0 && n == 3)
		c->kind = LINEARIZE_CHANGE_DELETE;
	else if (strcmp(kind, "clear") == 0 && n == 2)
		c->kind = LINEARIZE_CHANGE_CLEAR;
	else
		return KVD_EINVAL;
	if (copy_token(c->key, key) != 0 || copy_token(c->value, value) != 0)
		return KVD_EINVAL;
	return 0;
}

static bool change_matches(const struct linearize_change *c, const struct linearize_watch *w)
{
	if (c->revision < w->from)
		return false;
	if (c->kind == LINEARIZE_CHANGE_CLEAR)
		return true;
	if (w->key != NULL)
		return strcmp(c->key, w->key) == 0;
	return w->prefix == NULL || strncmp(c->key, w->prefix, strlen(w->prefix)) == 0;
}

static bool change_equal(const struct linearize_change *a, const struct linearize_change *b)
{
	return a->revision == b->revision && a->kind == b->kind &&
	       (a->kind == LINEARIZE_CHANGE_CLEAR || strcmp(a->key, b->key) == 0) &&
	       (a->kind != LINEARIZE_CHANGE_PUT || strcmp(a->value, b->value) == 0);
}

/* Writes "put k=v at R" (or delete, clear) into buf. */
static void change_describe(const struct linearize_change *c, char *buf, size_t size)
{
	if (c == NULL)
		snprintf(buf, size, "nothing");
	else if (c->kind == LINEARIZE_CHANGE_PUT)
		snprintf(buf, size, "put %s=%s at %llu", c->key, c->value,
			 (unsigned long long)c->revision);
	else if (c->kind == LINEARIZE_CHANGE_DELETE)
		snprintf(buf, size, "delete %s at %llu", c->key, (unsigned long long)c->revision);
	else
		snprintf(buf, size, "clear at %llu", (unsigned long long)c->revision);
}

int linearize_watch_check(const struct linearize_change *applied, size_t n_applied,
			  const struct linearize_change *events, size_t n_events,
			  const struct linearize_watch *w, bool *ok, char *why, size_t why_size)
{
	char want[2 * LINEARIZE_STR_SIZE + 48], got[2 * LINEARIZE_STR_SIZE + 48];
	size_t a = 0, e = 0;

	for (size_t i = 1; i < n_applied; i++)
		if (applied[i].revision < applied[i - 1].revision)
			return KVD_EINVAL;
	*ok = true;
	for (;; e++) {
		while (a < n_applied && !change_matches(&applied[a], w))
			a++;
		if (e == n_events) {
			if (w->complete && a < n_applied) {
				*ok = false;
				change_describe(&applied[a], want, sizeof(want));
				if (why != NULL && why_size > 0)
					snprintf(why, why_size,
						 "stream ends after %zu events; missing %s",
						 n_events, want);
			}
			break;
		}
		const struct linearize_change *x = a < n_applied ? &applied[a] : NULL;
		if (x == NULL || !change_equal(x, &events[e])) {
			const char *what = "differs";
			if (x == NULL)
				what = "is not in the applied sequence (repeated or invented)";
			else if (e > 0 && events[e].revision < events[e - 1].revision)
				what = "goes back in revision order";
			else if (e > 0 && change_equal(&events[e], &events[e - 1]))
				what = "repeats the previous event";
			else if (events[e].revision > x->revision)
				what = "skips a change";
			*ok = false;
			change_describe(x, want, sizeof(want));
			change_describe(&events[e], got, sizeof(got));
			if (why != NULL && why_size > 0)
				snprintf(why, why_size, "event %zu %s: expected %s, got %s", e,
					 what, want, got);
			break;
		}
		a++;
	}
	return 0;
}
