/*
 * precondition.c: the conditional-write headers (api/precondition.h). Only
 * the one strong, quoted, decimal form is accepted, so that a client that
 * sends anything else (a weak tag, a list, a bare number) learns at once
 * that it is not doing what it thinks, rather than getting a 412 or a write
 * it did not mean.
 */
#include "api/precondition.h"

/* Strips optional whitespace (spaces, tabs) around a header value. */
static const char *trim(const char *v, size_t *len)
{
	while (*len > 0 && (v[0] == ' ' || v[0] == '\t')) {
		v++;
		(*len)--;
	}
	while (*len > 0 && (v[*len - 1] == ' ' || v[*len - 1] == '\t'))
		(*len)--;
	return v;
}

/* Parses "<digits>" (quotes included) into *out; false if malformed or
 * over UINT64_MAX. */
static bool strong_tag(const char *v, size_t len, uint64_t *out)
{
	uint64_t x = 0;
	bool ok = len >= 3 && len <= 22 && v[0] == '"' && v[len - 1] == '"';

	for (size_t i = 1; ok && i + 1 < len; i++) {
		uint64_t d = (uint64_t)(unsigned char)v[i] - '0';
		if (v[i] < '0' || v[i] > '9' || x > (UINT64_MAX - d) / 10)
			ok = false;
		else
			x = x * 10 + d;
	}
	*out = x;
	return ok;
}

enum kvd_precondition kvd_precondition_parse(const char *if_match, size_t mlen, const char *if_none,
					     size_t nlen, bool allow_absent, uint64_t *revision)
{
	enum kvd_precondition pc = KVD_PRECOND_NONE;

	if (if_match != NULL && if_none != NULL) {
		pc = KVD_PRECOND_BAD;
	} else if (if_none != NULL) {
		if_none = trim(if_none, &nlen);
		pc = allow_absent && nlen == 1 && if_none[0] == '*' ? KVD_PRECOND_ABSENT
								    : KVD_PRECOND_BAD;
	} else if (if_match != NULL) {
		if_match = trim(if_match, &mlen);
		pc = strong_tag(if_match, mlen, revision) ? KVD_PRECOND_MATCH : KVD_PRECOND_BAD;
	}
	return pc;
}
