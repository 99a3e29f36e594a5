/*
 * command.h: the text form of state-machine commands.
 *
 * A command is the byte string carried in a Raft COMMAND entry and shown by
 * GET /log:
 *
 *     PUT <key> <value>          value is every byte after the second space
 *     DELETE <key>
 *     CLEAR
 *     PUT-IF <rev> <key> <value> put only if key exists with revision rev
 *     PUT-ABSENT <key> <value>   put only if key is absent
 *     DELETE-IF <rev> <key>      delete only if key exists with revision rev
 *     TXN <json>                 a transaction (API.md §12), JSON re-encoded
 *                                compactly by engine_command_encode_txn_alloc()
 *
 * rev is a decimal u64 without sign or leading zeros ("0" itself is valid and
 * never matches: a present key has a revision >= 1). The conditions are
 * evaluated by engine_apply*(), not here; so is the JSON of a TXN (parse()
 * only checks the "TXN " verb and that some JSON text follows).
 *
 * Keys are 1..ENGINE_KEY_MAX bytes of [A-Za-z0-9:_.-]; values are opaque
 * bytes here (the HTTP layer enforces UTF-8 and the size limit). Parsing never
 * asserts on its input: malformed bytes give KVD_EINVAL.
 *
 * Thread: every function is pure and may be called from any thread.
 */
#ifndef KVD_ENGINE_COMMAND_H
#define KVD_ENGINE_COMMAND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvd/errors.h"

#define ENGINE_KEY_MAX 1024 /* bytes */

/* Encoded sizes in bytes, for sizing a caller buffer. */
#define ENGINE_COMMAND_PUT_SIZE(key_len, value_len) (4 + (key_len) + 1 + (value_len))
#define ENGINE_COMMAND_DELETE_SIZE(key_len)	    (7 + (key_len))
#define ENGINE_COMMAND_CLEAR_SIZE		    5

enum engine_command_type {
	ENGINE_COMMAND_PUT = 1,
	ENGINE_COMMAND_DELETE = 2,
	ENGINE_COMMAND_CLEAR = 3,
	ENGINE_COMMAND_PUT_IF = 4,
	ENGINE_COMMAND_PUT_ABSENT = 5,
	ENGINE_COMMAND_DELETE_IF = 6,
	ENGINE_COMMAND_TXN = 7, /* value: the JSON text; key NULL */
};

#define ENGINE_TXN_OPS_MAX  128		      /* operations (success + failure) */
#define ENGINE_TXN_BODY_MAX ((size_t)4 << 20) /* bytes of JSON */

/* A parsed command. key and value point into the parsed bytes (borrowed; valid
 * as long as those bytes are). For DELETE value is NULL/0; for CLEAR key too. */
struct engine_command {
	enum engine_command_type type;
	const char *key;
	size_t key_len; /* bytes */
	const char *value;
	size_t value_len;  /* bytes; may be 0 */
	uint64_t revision; /* PUT-IF and DELETE-IF only, else 0 */
};

/* True when key[0..len) is 1..ENGINE_KEY_MAX bytes of [A-Za-z0-9:_.-]. */
bool engine_key_valid(const char *key, size_t len);

/*
 * Encode into a caller buffer buf of cap bytes (borrowed). On success writes
 * the encoded length (bytes, no NUL terminator) to *len. Returns 0,
 * KVD_EINVAL for an invalid key, KVD_ETOOBIG when cap is too small (size it
 * with the ENGINE_COMMAND_*_SIZE macros).
 */
int engine_command_encode_put(const char *key, size_t key_len, const void *value, size_t value_len,
			      void *buf, size_t cap, size_t *len);
int engine_command_encode_delete(const char *key, size_t key_len, void *buf, size_t cap,
				 size_t *len);
int engine_command_encode_clear(void *buf, size_t cap, size_t *len);

/*
 * Same, into a malloc'd buffer: on success *buf is transferred to the caller,
 * who frees it with free(). Returns 0, KVD_EINVAL, KVD_ENOMEM.
 */
int engine_command_encode_put_alloc(const char *key, size_t key_len, const void *value,
				    size_t value_len, void **buf, size_t *len);
int engine_command_encode_delete_alloc(const char *key, size_t key_len, void **buf, size_t *len);
int engine_command_encode_clear_alloc(void **buf, size_t *len);

/* The conditional forms, into a malloc'd buffer as above. Returns 0,
 * KVD_EINVAL (invalid key), KVD_ENOMEM. */
int engine_command_encode_put_if_alloc(uint64_t revision, const char *key, size_t key_len,
				       const void *value, size_t value_len, void **buf,
				       size_t *len);
int engine_command_encode_put_absent_alloc(const char *key, size_t key_len, const void *value,
					   size_t value_len, void **buf, size_t *len);
int engine_command_encode_delete_if_alloc(uint64_t revision, const char *key, size_t key_len,
					  void **buf, size_t *len);

/*
 * Check a transaction body (len bytes of JSON, borrowed) as POST /txn takes
 * it: an object with optional "compare" ([{"key", "revision" >= 0}]),
 * "success" and "failure" ([{"op": "put", "key", "value"} | {"op": "delete"|
 * "get", "key"}]) and nothing else; keys valid, values non-empty UTF-8 of at
 * most value_max bytes (0: unbounded), at most ENGINE_TXN_OPS_MAX operations
 * and as many comparisons. Returns 0, KVD_EINVAL (400) or KVD_ETOOBIG (413:
 * body over ENGINE_TXN_BODY_MAX, or a value over value_max), KVD_ENOMEM; msg
 * (KVD_ERRMSG_SIZE bytes, may be NULL) names the problem, e.g.
 * "success[2]: invalid key". Thread: any.
 */
int engine_txn_validate(const void *body, size_t len, size_t value_max, char *msg);

/* Validate as above and encode "TXN <compact json>" into a malloc'd buffer
 * (*buf transferred to the caller, free()). Same returns. */
int engine_command_encode_txn_alloc(const void *body, size_t body_len, size_t value_max, void **buf,
				    size_t *len, char *msg);

/* A parsed transaction (txn.c), for the applier and for tools that replay
 * the log (kvdump). Strings borrow from root (a json_t *, kept opaque so
 * that only txn.c needs jansson's header). */
enum engine_txn_op_type {
	ENGINE_TXN_PUT = 1,
	ENGINE_TXN_DELETE = 2,
	ENGINE_TXN_GET = 3,
};

struct engine_txn_cmp {
	const char *key;
	size_t key_len;
	uint64_t revision; /* 0: absent */
};

struct engine_txn_op {
	enum engine_txn_op_type op;
	const char *key;
	size_t key_len;
	const char *value; /* put only */
	size_t value_len;
};

struct engine_txn {
	void *root; /* json_t * */
	struct engine_txn_cmp *cmp;
	size_t n_cmp;
	struct engine_txn_op *ops[2]; /* [0] success, [1] failure */
	size_t n_ops[2];
};

/* Parses and checks a transaction body as engine_txn_validate() (same
 * returns). On success *txn is released with engine_txn_free(); on failure
 * it is empty. Thread: any. */
int engine_txn_parse(const void *json, size_t len, size_t value_max, struct engine_txn *txn,
		     char *msg);
void engine_txn_free(struct engine_txn *txn);

/*
 * Parse len bytes (borrowed) into *cmd, whose pointers then borrow from bytes.
 * Returns 0 or KVD_EINVAL for anything that is not exactly one of the six
 * forms with a valid key and revision (unknown verb, bad revision, missing separator, invalid key,
 * trailing bytes after a DELETE key or after CLEAR).
 */
int engine_command_parse(const void *bytes, size_t len, struct engine_command *cmd);

#endif
