/*
 * command.c: encoding and parsing of the PUT/DELETE/CLEAR text commands.
 *
 * The text form is what a human reads in GET /log, so it is also what travels
 * through the Raft log: no length prefixes, no escaping. That works because a
 * key can never contain a space, so the first space after "PUT " ends the key
 * and every later byte (spaces, tabs, newlines, NULs, any UTF-8) is the value.
 *
 * Invariant: parse(encode(x)) == x for every valid key and every value, and
 * parse() accepts nothing that encode() could not have produced.
 */
#include "engine/command.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool engine_key_valid(const char *key, size_t len)
{
	size_t i;

	if (key == NULL || len == 0 || len > ENGINE_KEY_MAX) {
		return false;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)key[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == ':' || c == '_' || c == '.' || c == '-';
		if (!ok) {
			return false;
		}
	}
	return true;
}

int engine_command_encode_put(const char *key, size_t key_len, const void *value, size_t value_len,
			      void *buf, size_t cap, size_t *len)
{
	char *p = buf;
	size_t need;

	if (!engine_key_valid(key, key_len) || (value == NULL && value_len > 0)) {
		return KVD_EINVAL;
	}
	need = ENGINE_COMMAND_PUT_SIZE(key_len, value_len);
	if (buf == NULL || cap < need) {
		return KVD_ETOOBIG;
	}
	memcpy(p, "PUT ", 4);
	memcpy(p + 4, key, key_len);
	p[4 + key_len] = ' ';
	if (value_len > 0) {
		memcpy(p + 5 + key_len, value, value_len);
	}
	*len = need;
	return 0;
}

int engine_command_encode_delete(const char *key, size_t key_len, void *buf, size_t cap,
				 size_t *len)
{
	char *p = buf;
	size_t need;

	if (!engine_key_valid(key, key_len)) {
		return KVD_EINVAL;
	}
	need = ENGINE_COMMAND_DELETE_SIZE(key_len);
	if (buf == NULL || cap < need) {
		return KVD_ETOOBIG;
	}
	memcpy(p, "DELETE ", 7);
	memcpy(p + 7, key, key_len);
	*len = need;
	return 0;
}

int engine_command_encode_clear(void *buf, size_t cap, size_t *len)
{
	if (buf == NULL || cap < ENGINE_COMMAND_CLEAR_SIZE) {
		return KVD_ETOOBIG;
	}
	memcpy(buf, "CLEAR", ENGINE_COMMAND_CLEAR_SIZE);
	*len = ENGINE_COMMAND_CLEAR_SIZE;
	return 0;
}

int engine_command_encode_put_alloc(const char *key, size_t key_len, const void *value,
				    size_t value_len, void **buf, size_t *len)
{
	size_t need = ENGINE_COMMAND_PUT_SIZE(key_len, value_len);
	void *p;
	int rv;

	if (!engine_key_valid(key, key_len)) {
		return KVD_EINVAL;
	}
	p = malloc(need);
	if (p == NULL) {
		return KVD_ENOMEM;
	}
	rv = engine_command_encode_put(key, key_len, value, value_len, p, need, len);
	if (rv != 0) {
		free(p);
		return rv;
	}
	*buf = p;
	return 0;
}

int engine_command_encode_delete_alloc(const char *key, size_t key_len, void **buf, size_t *len)
{
	size_t need = ENGINE_COMMAND_DELETE_SIZE(key_len);
	void *p;
	int rv;

	if (!engine_key_valid(key, key_len)) {
		return KVD_EINVAL;
	}
	p = malloc(need);
	if (p == NULL) {
		return KVD_ENOMEM;
	}
	rv = engine_command_encode_delete(key, key_len, p, need, len);
	if (rv != 0) {
		free(p);
		return rv;
	}
	*buf = p;
	return 0;
}

int engine_command_encode_clear_alloc(void **buf, size_t *len)
{
	void *p = malloc(ENGINE_COMMAND_CLEAR_SIZE);
	int rv;

	if (p == NULL) {
		return KVD_ENOMEM;
	}
	rv = engine_command_encode_clear(p, ENGINE_COMMAND_CLEAR_SIZE, len);
	if (rv != 0) {
		free(p);
		return rv;
	}
	*buf = p;
	return 0;
}

/* Formats "<verb> [<rev> ]<key>[ <value>]" into a malloc'd buffer. */
static int encode_alloc(const char *verb, bool with_rev, uint64_t revision, const char *key,
			size_t key_len, bool with_value, const void *value, size_t value_len,
			void **buf, size_t *len)
{
	char revtext[24] = "";
	size_t vlen = strlen(verb);
	size_t rlen = 0;
	size_t need;
	char *p;

	if (!engine_key_valid(key, key_len) || (value == NULL && value_len > 0)) {
		return KVD_EINVAL;
	}
	if (with_rev) {
		rlen = (size_t)snprintf(revtext, sizeof(revtext), "%" PRIu64 " ", revision);
	}
	need = vlen + 1 + rlen + key_len + (with_value ? 1 + value_len : 0);
	p = malloc(need);
	if (p == NULL) {
		return KVD_ENOMEM;
	}
	memcpy(p, verb, vlen);
	p[vlen] = ' ';
	memcpy(p + vlen + 1, revtext, rlen);
	memcpy(p + vlen + 1 + rlen, key, key_len);
	if (with_value) {
		p[vlen + 1 + rlen + key_len] = ' ';
		if (value_len > 0) {
			memcpy(p + vlen + 2 + rlen + key_len, value, value_len);
		}
	}
	*buf = p;
	*len = need;
	return 0;
}

int engine_command_encode_put_if_alloc(uint64_t revision, const char *key, size_t key_len,
				       const void *value, size_t value_len, void **buf, size_t *len)
{
	return encode_alloc("PUT-IF", true, revision, key, key_len, true, value, value_len, buf,
			    len);
}

int engine_command_encode_put_absent_alloc(const char *key, size_t key_len, const void *value,
					   size_t value_len, void **buf, size_t *len)
{
	return encode_alloc("PUT-ABSENT", false, 0, key, key_len, true, value, value_len, buf, len);
}

int engine_command_encode_delete_if_alloc(uint64_t revision, const char *key, size_t key_len,
					  void **buf, size_t *len)
{
	return encode_alloc("DELETE-IF", true, revision, key, key_len, false, NULL, 0, buf, len);
}

/* Parses "<decimal u64> " at p (avail bytes): canonical digits (no sign, no
 * leading zero unless "0"), no overflow. Returns the bytes consumed including
 * the space, or 0 when malformed. */
static size_t parse_rev(const char *p, size_t avail, uint64_t *rev)
{
	uint64_t v = 0;
	size_t i = 0;

	while (i < avail && i < 21 && p[i] >= '0' && p[i] <= '9') {
		uint64_t d = (uint64_t)(p[i] - '0');
		if (v > (UINT64_MAX - d) / 10) {
			return 0;
		}
		v = v * 10 + d;
		i++;
	}
	if (i == 0 || i >= avail || p[i] != ' ' || (p[0] == '0' && i > 1)) {
		return 0;
	}
	*rev = v;
	return i + 1;
}

/* Parses "<key> <value>" (value: every remaining byte) at p. */
static int parse_key_value(const char *p, size_t avail, struct engine_command *out);

/* Length of the key starting at p (bytes up to the first space or end). */
static size_t key_span(const char *p, size_t avail)
{
	const char *sp = memchr(p, ' ', avail);
	return sp == NULL ? avail : (size_t)(sp - p);
}

int engine_command_parse(const void *bytes, size_t len, struct engine_command *cmd)
{
	const char *p = bytes;
	struct engine_command out = {0};
	size_t klen;

	if (bytes == NULL || cmd == NULL) {
		return KVD_EINVAL;
	}
	if (len >= 7 && memcmp(p, "PUT-IF ", 7) == 0) {
		size_t used = parse_rev(p + 7, len - 7, &out.revision);
		if (used == 0 || parse_key_value(p + 7 + used, len - 7 - used, &out) != 0) {
			return KVD_EINVAL;
		}
		out.type = ENGINE_COMMAND_PUT_IF;
	} else if (len >= 11 && memcmp(p, "PUT-ABSENT ", 11) == 0) {
		if (parse_key_value(p + 11, len - 11, &out) != 0) {
			return KVD_EINVAL;
		}
		out.type = ENGINE_COMMAND_PUT_ABSENT;
	} else if (len >= 10 && memcmp(p, "DELETE-IF ", 10) == 0) {
		size_t used = parse_rev(p + 10, len - 10, &out.revision);
		if (used == 0 || !engine_key_valid(p + 10 + used, len - 10 - used)) {
			return KVD_EINVAL;
		}
		out.type = ENGINE_COMMAND_DELETE_IF;
		out.key = p + 10 + used;
		out.key_len = len - 10 - used;
	} else if (len > 4 && memcmp(p, "TXN ", 4) == 0) {
		out.type = ENGINE_COMMAND_TXN;
		out.value = p + 4;
		out.value_len = len - 4;
	} else if (len >= 4 && memcmp(p, "PUT ", 4) == 0) {
		klen = key_span(p + 4, len - 4);
		if (4 + klen >= len || !engine_key_valid(p + 4, klen)) {
			return KVD_EINVAL; /* no second space, or a bad key */
		}
		out.type = ENGINE_COMMAND_PUT;
		out.key = p + 4;
		out.key_len = klen;
		out.value = p + 5 + klen;
		out.value_len = len - 5 - klen;
	} else if (len >= 7 && memcmp(p, "DELETE ", 7) == 0) {
		if (!engine_key_valid(p + 7, len - 7)) {
			return KVD_EINVAL;
		}
		out.type = ENGINE_COMMAND_DELETE;
		out.key = p + 7;
		out.key_len = len - 7;
	} else if (len == 5 && memcmp(p, "CLEAR", 5) == 0) {
		out.type = ENGINE_COMMAND_CLEAR;
	} else {
		return KVD_EINVAL;
	}
	*cmd = out;
	return 0;
}

static int parse_key_value(const char *p, size_t avail, struct engine_command *out)
{
	size_t klen = key_span(p, avail);

	if (klen >= avail || !engine_key_valid(p, klen)) {
		return KVD_EINVAL; /* no space after the key, or a bad key */
	}
	out->key = p;
	out->key_len = klen;
	out->value = p + klen + 1;
	out->value_len = avail - klen - 1;
	return 0;
}
