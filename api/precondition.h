/*
 * precondition.h: parsing the conditional-write headers of API.md §10
 * (If-Match: "<revision>", If-None-Match: *), kept apart from the routes so
 * that the accepted forms can be tested byte by byte.
 *
 * Thread: pure functions, any thread.
 */
#ifndef KVD_API_PRECONDITION_H
#define KVD_API_PRECONDITION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A write's precondition. */
enum kvd_precondition {
	KVD_PRECOND_NONE = 0,	/* no conditional header: plain write */
	KVD_PRECOND_MATCH = 1,	/* If-Match: "<revision>" */
	KVD_PRECOND_ABSENT = 2, /* If-None-Match: * */
	KVD_PRECOND_BAD = 3,	/* malformed: 400 invalid precondition */
};

/*
 * Classifies a write's If-Match (if_match, mlen bytes; NULL: header absent)
 * and If-None-Match (if_none, nlen bytes; NULL: absent); both borrowed.
 * allow_absent: If-None-Match: * is accepted (PUT), else it is malformed
 * (DELETE). Accepted: one strong quoted tag of 1..20 decimal digits that fits
 * a u64 ("0" included: it never matches), or "*" in If-None-Match, each with
 * optional spaces and tabs around. Everything else (weak tags, unquoted
 * numbers, lists, If-Match: *, empty values, both headers) is
 * KVD_PRECOND_BAD. On KVD_PRECOND_MATCH *revision gets the revision.
 */
enum kvd_precondition kvd_precondition_parse(const char *if_match, size_t mlen, const char *if_none,
					     size_t nlen, bool allow_absent, uint64_t *revision);

#endif
