/*
 * linearize.h: a linearizability checker for key-value register histories.
 *
 * A history is a list of client operations (put, get, delete on string keys
 * with string values), each with an invoke time, a return time and an
 * outcome. The checker decides whether some total order of the operations
 * exists that respects real time (an operation that returned before another
 * was invoked comes first) and the sequential semantics of a map of
 * registers. Keys are independent, so the history is partitioned by key and
 * each partition searched separately (Herlihy & Wing locality).
 *
 * Outcomes: "ok" operations happened with the recorded result; "fail"
 * operations certainly did not take effect and are dropped; "unknown" writes
 * may or may not have taken effect at any time after their invocation (their
 * return time is treated as infinite), unknown reads constrain nothing and
 * are dropped.
 *
 * Revisions and conditional writes (API.md §10): a write may carry the
 * revision it was given (its ETag) and a get the revision it saw; PUT-IF and
 * DELETE-IF carry the If-Match revision, PUT-ABSENT is If-None-Match: *; a
 * conditional write answered 412 has the outcome "refused" (it happened,
 * found its condition false and changed nothing). A key's state is then
 * (value, revision), revision 0 meaning unknown (a write whose revision was
 * not recorded): a condition against an unknown revision may hold or not
 * (permissive). An unknown-outcome conditional write takes effect exactly
 * when its condition holds at the point it is linearized (taking "holds"
 * for an unknown revision).
 *
 * Transactions (API.md §12): comparisons on key revisions (0: absent), then
 * the success or the failure branch of puts, deletes and gets, applied
 * atomically at one revision (the txn's: its puts write it). An "ok" txn
 * records which branch ran and its gets' results; an "unknown" txn takes
 * effect entirely or not at all, at any time after its invocation, running
 * the branch its comparisons select there (success when a comparison is
 * against an unknown revision). Keys joined by a transaction are searched
 * together (the partition is the connected component of keys), with a state
 * of one (value, revision) per key. A get that sees a revision fixes an
 * unknown one in the state (each write has one revision).
 *
 * The search is Wing & Gong's, with Lowe's memoization of (linearized set,
 * state) pairs. Every key starts absent.
 *
 * Thread: none of these functions is thread-safe; one history per thread.
 */
#ifndef KVD_SIM_LINEARIZE_H
#define KVD_SIM_LINEARIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define LINEARIZE_STR_SIZE 64 /* bytes for a key or value, including NUL */

enum linearize_kind {
	LINEARIZE_PUT = 1,
	LINEARIZE_GET = 2,
	LINEARIZE_DELETE = 3,
	LINEARIZE_PUT_IF = 4,	  /* If-Match: if_revision */
	LINEARIZE_PUT_ABSENT = 5, /* If-None-Match: * */
	LINEARIZE_DELETE_IF = 6,  /* If-Match: if_revision */
	LINEARIZE_TXN = 7,	  /* POST /txn: the op's txn */
};

#define LINEARIZE_TXN_MAX 8 /* comparisons, and operations per branch */

/* One comparison of a txn: key's revision equals revision (0: absent). */
struct linearize_compare {
	char key[LINEARIZE_STR_SIZE];
	uint64_t revision;
};

/* One operation of a txn branch: kind LINEARIZE_PUT, LINEARIZE_DELETE or
 * LINEARIZE_GET. For a get of the branch that ran, has_result says whether
 * its result was recorded: has_value false is {"found": false}, else value
 * and revision (0: not recorded). */
struct linearize_txn_op {
	enum linearize_kind kind;
	char key[LINEARIZE_STR_SIZE];
	char value[LINEARIZE_STR_SIZE];
	bool has_value;
	bool has_result;
	uint64_t revision;
};

/* A txn: comparisons, branches (ops[0] success, ops[1] failure) and, when
 * its outcome is ok, which branch ran. Its revision is the op's. */
struct linearize_txn {
	size_t n_cmp;
	struct linearize_compare cmp[LINEARIZE_TXN_MAX];
	size_t n_ops[2];
	struct linearize_txn_op ops[2][LINEARIZE_TXN_MAX];
	bool succeeded;
};

enum linearize_outcome {
	LINEARIZE_OK = 1,
	LINEARIZE_FAIL = 2,
	LINEARIZE_UNKNOWN = 3,
	LINEARIZE_REFUSED = 4, /* 412: a conditional write whose condition did not hold */
};

/* One operation. For a get, has_value false means "the key was absent";
 * for a put, value is the value written; for a delete value is unused. */
struct linearize_op {
	uint64_t client;
	enum linearize_kind kind;
	char key[LINEARIZE_STR_SIZE];
	char value[LINEARIZE_STR_SIZE];
	bool has_value;
	uint64_t invoke_time; /* any unit, same for all ops */
	uint64_t return_time; /* same unit; >= invoke_time */
	enum linearize_outcome outcome;
	/* put, put-if, put-absent, txn: given (the write's log index);
	 * delete, delete-if: the log index of the delete; get: seen; 0
	 * unknown. Writes with a revision are linearized in its order. */
	uint64_t revision;
	uint64_t if_revision; /* put-if/delete-if only */
	/* txn only (key and value unused); borrowed: linearize_history_add()
	 * copies it */
	const struct linearize_txn *txn;
};

struct linearize_history;

/* Returns an empty history (free with linearize_history_destroy), or NULL
 * when out of memory. */
struct linearize_history *linearize_history_create(void);
/* Frees h and its operations; h may be NULL. */
void linearize_history_destroy(struct linearize_history *h);

/* Appends a copy of *op (and of its txn). Returns 0, KVD_EINVAL if
 * return_time < invoke_time or a field is out of range (a txn without its
 * txn, a txn get result on an unknown txn, more than LINEARIZE_TXN_MAX
 * parts), KVD_ENOMEM. */
int linearize_history_add(struct linearize_history *h, const struct linearize_op *op);

/* Number of operations added so far. */
size_t linearize_history_count(const struct linearize_history *h);

/*
 * Parses one line of the text format into *op:
 *     <client> <kind> <key> <value|-> <invoke> <return> <outcome> [if=N] [rev=N]
 * kind: put, get, delete, put-if, put-absent, delete-if; outcome: ok, fail,
 * unknown, refused (conditional kinds only). if=N is required for put-if and
 * delete-if and refused elsewhere; rev=N (N >= 1) is allowed for every
 * kind (a refused write's is ignored).
 * A txn is
 *     <client> txn <compare> <success>/<failure> <invoke> <return> <outcome>
 *         [branch=success|failure] [rev=N]
 * compare: "-" or key=rev,... (0: absent); a branch: "-" or a comma list of
 * put:key:value, delete:key, get:key (no result), get:key=value[@rev] and
 * get:key=- (absent). branch= is required with ok and refused elsewhere;
 * outcome ok, fail or unknown; results only with ok. Keys and values of a
 * txn may not contain , : = @ / or whitespace.
 * For a txn, op->txn points at storage of the calling thread that the next
 * parse overwrites (add the op before parsing again).
 * Returns 0, KVD_ENOTFOUND for a blank or '#' comment line, KVD_EINVAL for a
 * malformed line (*op is then unspecified).
 */
int linearize_op_parse(const char *line, struct linearize_op *op);

/* Writes op as one line of the text format (with the newline) to f. */
void linearize_op_print(const struct linearize_op *op, FILE *f);

/* Writes every operation of h, one line each, in the text format. */
void linearize_history_dump(const struct linearize_history *h, FILE *f);

/*
 * Decides whether h is linearizable. On success returns 0 and sets *ok; when
 * *ok is false and why is not NULL, writes a description of the first key
 * that failed into why (why_size bytes). max_states bounds the memoized
 * states per key (0: default of 4,000,000); exceeding it returns KVD_ETOOBIG.
 * Returns KVD_ENOMEM when out of memory.
 */
int linearize_history_check(const struct linearize_history *h, size_t max_states, bool *ok,
			    char *why, size_t why_size);

/*
 * Watch streams (API.md §13). A change is one event of the applied log: a
 * put (key, value), a delete (key) or a clear, at the revision of its entry
 * (a txn's changes share it). Text format, one per line:
 *     <revision> put <key> <value> | <revision> delete <key> | <revision> clear
 */
enum linearize_change_kind {
	LINEARIZE_CHANGE_PUT = 1,
	LINEARIZE_CHANGE_DELETE = 2,
	LINEARIZE_CHANGE_CLEAR = 3,
};

struct linearize_change {
	uint64_t revision;
	enum linearize_change_kind kind;
	char key[LINEARIZE_STR_SIZE];	/* put, delete */
	char value[LINEARIZE_STR_SIZE]; /* put */
};

/* What a watcher asked for: changes of keys starting with prefix (NULL or
 * "": all), or of exactly key when key is not NULL; clears always match.
 * from: the first revision it asked for (GET /watch?from=R, or Last-Event-ID
 * + 1). complete: the stream must hold every matching change up to the end
 * of applied (the watcher was caught up), else a prefix of them suffices (a
 * stream cut short). */
struct linearize_watch {
	const char *prefix;
	const char *key;
	uint64_t from;
	bool complete;
};

/* Parses one change line. Returns 0, KVD_ENOTFOUND for a blank or '#'
 * line, KVD_EINVAL for a malformed one. */
int linearize_change_parse(const char *line, struct linearize_change *c);

/*
 * Checks a watcher's events against the applied sequence of changes
 * (applied, in log order, revisions non-decreasing): the events must be
 * exactly the matching changes with revision >= from, in the same order,
 * none skipped, none repeated, none invented, a txn's changes at their
 * shared revision (all of the stream when w->complete, else a prefix).
 * Returns 0 with *ok set (on false, why describes the first difference),
 * or KVD_EINVAL when applied is not in revision order.
 */
int linearize_watch_check(const struct linearize_change *applied, size_t n_applied,
			  const struct linearize_change *events, size_t n_events,
			  const struct linearize_watch *w, bool *ok, char *why, size_t why_size);

#endif
