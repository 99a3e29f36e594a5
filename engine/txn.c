/*
 * txn.c: the JSON of a transaction (API.md §12): validation for the HTTP
 * layer, the canonical "TXN <json>" command text, and the parse that
 * engine_apply_results() runs on it.
 *
 * Why one parser for both ends: the HTTP layer rejects a bad body with a
 * precise 400/413 before proposing, and the applier parses the same text
 * again (a log entry may come from anywhere: an older node, a fuzzer), so
 * both must agree exactly on what is valid. The logged text is the body
 * re-encoded compactly by jansson (fields in their given order, UTF-8 kept),
 * so GET /log shows one readable line.
 *
 * Limits: at most ENGINE_TXN_OPS_MAX operations in success and failure
 * together, at most ENGINE_TXN_OPS_MAX comparisons, a body of at most
 * ENGINE_TXN_BODY_MAX bytes, keys as engine_key_valid(), values non-empty
 * UTF-8 without NUL (jansson's default) of at most value_max bytes (0: no
 * bound, as at apply, where the proposer already checked it).
 */
#include "engine/internal.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

void engine_txn_free(struct engine_txn *txn)
{
	if (txn == NULL) {
		return;
	}
	free(txn->cmp);
	free(txn->ops[0]);
	free(txn->ops[1]);
	if (txn->root != NULL) {
		json_decref((json_t *)txn->root);
	}
	memset(txn, 0, sizeof(*txn));
}

static int parse_compare(json_t *arr, struct engine_txn *txn, char *msg)
{
	size_t i;
	json_t *c;

	if (!json_is_array(arr)) {
		engine_errmsg(msg, "compare must be an array");
		return KVD_EINVAL;
	}
	if (json_array_size(arr) > ENGINE_TXN_OPS_MAX) {
		engine_errmsg(msg, "too many comparisons (at most %d)", ENGINE_TXN_OPS_MAX);
		return KVD_EINVAL;
	}
	txn->cmp = calloc(json_array_size(arr) + 1, sizeof(*txn->cmp));
	if (txn->cmp == NULL) {
		return KVD_ENOMEM;
	}
	json_array_foreach(arr, i, c)
	{
		json_t *k = json_object_get(c, "key");
		json_t *r = json_object_get(c, "revision");
		if (!json_is_object(c) || json_object_size(c) != 2 || !json_is_string(k) ||
		    r == NULL) {
			engine_errmsg(msg,
				      "compare[%zu]: expected {\"key\": string, \"revision\": "
				      "integer}",
				      i);
			return KVD_EINVAL;
		}
		if (!engine_key_valid(json_string_value(k), json_string_length(k))) {
			engine_errmsg(msg, "compare[%zu]: invalid key", i);
			return KVD_EINVAL;
		}
		if (!json_is_integer(r) || json_integer_value(r) < 0) {
			engine_errmsg(msg, "compare[%zu]: revision must be an integer >= 0", i);
			return KVD_EINVAL;
		}
		txn->cmp[i].key = json_string_value(k);
		txn->cmp[i].key_len = json_string_length(k);
		txn->cmp[i].revision = (uint64_t)json_integer_value(r);
	}
	txn->n_cmp = json_array_size(arr);
	return 0;
}

static int parse_ops(json_t *arr, const char *name, size_t value_max, struct engine_txn *txn,
		     int branch, char *msg)
{
	struct engine_txn_op *ops;
	size_t i;
	json_t *o;

	if (!json_is_array(arr)) {
		engine_errmsg(msg, "%s must be an array", name);
		return KVD_EINVAL;
	}
	ops = calloc(json_array_size(arr) + 1, sizeof(*ops));
	if (ops == NULL) {
		return KVD_ENOMEM;
	}
	txn->ops[branch] = ops;
	json_array_foreach(arr, i, o)
	{
		json_t *op = json_object_get(o, "op");
		json_t *k = json_object_get(o, "key");
		json_t *v = json_object_get(o, "value");
		const char *ops_name = json_string_value(op);
		size_t want_fields = 2;
		if (!json_is_object(o) || ops_name == NULL) {
			engine_errmsg(msg, "%s[%zu]: expected an object with \"op\"", name, i);
			return KVD_EINVAL;
		}
		if (strcmp(ops_name, "put") == 0) {
			ops[i].op = ENGINE_TXN_PUT;
			want_fields = 3;
		} else if (strcmp(ops_name, "delete") == 0) {
			ops[i].op = ENGINE_TXN_DELETE;
		} else if (strcmp(ops_name, "get") == 0) {
			ops[i].op = ENGINE_TXN_GET;
		} else {
			engine_errmsg(msg, "%s[%zu]: op must be put, delete or get", name, i);
			return KVD_EINVAL;
		}
		if (!json_is_string(k)) {
			engine_errmsg(msg, "%s[%zu]: key must be a string", name, i);
			return KVD_EINVAL;
		}
		if (!engine_key_valid(json_string_value(k), json_string_length(k))) {
			engine_errmsg(msg, "%s[%zu]: %s", name, i,
				      json_string_length(k) == 0 ? "key cannot be empty"
								 : "invalid key");
			return KVD_EINVAL;
		}
		if (want_fields == 3 && !json_is_string(v)) {
			engine_errmsg(msg, "%s[%zu]: value must be a string", name, i);
			return KVD_EINVAL;
		}
		if (json_object_size(o) != want_fields) {
			engine_errmsg(msg, "%s[%zu]: unexpected field for op %s", name, i,
				      ops_name);
			return KVD_EINVAL;
		}
		if (want_fields == 3 && json_string_length(v) == 0) {
			engine_errmsg(msg, "%s[%zu]: value cannot be empty", name, i);
			return KVD_EINVAL;
		}
		if (want_fields == 3 && value_max > 0 && json_string_length(v) > value_max) {
			engine_errmsg(msg, "%s[%zu]: value too large", name, i);
			return KVD_ETOOBIG;
		}
		ops[i].key = json_string_value(k);
		ops[i].key_len = json_string_length(k);
		if (want_fields == 3) {
			ops[i].value = json_string_value(v);
			ops[i].value_len = json_string_length(v);
		}
	}
	txn->n_ops[branch] = json_array_size(arr);
	return 0;
}

int engine_txn_parse(const void *json, size_t len, size_t value_max, struct engine_txn *txn,
		     char *msg)
{
	static const char *const fields[] = {"compare", "success", "failure"};
	json_error_t jerr;
	json_t *empty = NULL;
	json_t *root;
	const char *name;
	json_t *val;
	int rv = 0;

	memset(txn, 0, sizeof(*txn));
	if (len > ENGINE_TXN_BODY_MAX) {
		engine_errmsg(msg, "request body too large");
		return KVD_ETOOBIG;
	}
	if (json == NULL || len == 0) {
		engine_errmsg(msg, "empty body");
		return KVD_EINVAL;
	}
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	txn->root = root;
	if (root == NULL) {
		engine_errmsg(msg, "invalid JSON: %s", jerr.text);
		return KVD_EINVAL;
	}
	if (!json_is_object(root)) {
		engine_errmsg(msg, "body must be a JSON object");
		rv = KVD_EINVAL;
		goto out;
	}
	json_object_foreach(root, name, val)
	{
		if (strcmp(name, fields[0]) != 0 && strcmp(name, fields[1]) != 0 &&
		    strcmp(name, fields[2]) != 0) {
			engine_errmsg(msg, "unknown field \"%.64s\"", name);
			rv = KVD_EINVAL;
			goto out;
		}
	}
	empty = json_array();
	if (empty == NULL) {
		rv = KVD_ENOMEM;
		goto out;
	}
	val = json_object_get(root, "compare");
	rv = parse_compare(val != NULL ? val : empty, txn, msg);
	if (rv == 0) {
		val = json_object_get(root, "success");
		rv = parse_ops(val != NULL ? val : empty, "success", value_max, txn, 0, msg);
	}
	if (rv == 0) {
		val = json_object_get(root, "failure");
		rv = parse_ops(val != NULL ? val : empty, "failure", value_max, txn, 1, msg);
	}
	if (rv == 0 && txn->n_ops[0] + txn->n_ops[1] > ENGINE_TXN_OPS_MAX) {
		engine_errmsg(msg, "too many operations (at most %d)", ENGINE_TXN_OPS_MAX);
		rv = KVD_EINVAL;
	}
out:
	if (empty != NULL) {
		json_decref(empty);
	}
	if (rv != 0) {
		engine_txn_free(txn);
	}
	return rv;
}

int engine_txn_validate(const void *body, size_t len, size_t value_max, char *msg)
{
	struct engine_txn txn;
	int rv = engine_txn_parse(body, len, value_max, &txn, msg);

	engine_txn_free(&txn);
	return rv;
}

int engine_command_encode_txn_alloc(const void *body, size_t body_len, size_t value_max, void **buf,
				    size_t *len, char *msg)
{
	struct engine_txn txn;
	char *text = NULL;
	char *p = NULL;
	size_t n;
	int rv = engine_txn_parse(body, body_len, value_max, &txn, msg);

	if (rv != 0) {
		return rv;
	}
	text = json_dumps((json_t *)txn.root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (text == NULL) {
		rv = KVD_ENOMEM;
		goto out;
	}
	n = strlen(text);
	p = malloc(4 + n);
	if (p == NULL) {
		rv = KVD_ENOMEM;
		goto out;
	}
	memcpy(p, "TXN ", 4);
	memcpy(p + 4, text, n);
	*buf = p;
	*len = 4 + n;
out:
	free(text);
	engine_txn_free(&txn);
	return rv;
}
