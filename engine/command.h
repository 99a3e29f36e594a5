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
 *
 * rev is a decimal u64 without sign or leading zeros ("0" itself is valid and
 * never matches: a present key has a revision >= 1). The conditions are
 * evaluated by engine_apply*(), not here.
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
};

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
 * Parse len bytes (borrowed) into *cmd, whose pointers then borrow from bytes.
 * Returns 0 or KVD_EINVAL for anything that is not exactly one of the six
 * forms with a valid key and revision (unknown verb, bad revision, missing separator, invalid key,
 * trailing bytes after a DELETE key or after CLEAR).
 */
int engine_command_parse(const void *bytes, size_t len, struct engine_command *cmd);

#endif
