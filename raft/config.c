/*
 * config.c: cluster configuration helpers and their byte encoding (thesis
 * ch. 4).
 *
 * Encoding, version 1 (all integers single bytes, ids without NUL):
 *
 *     version=1 | n | n x (role, id_len, id bytes) | n_old | n_old x (...)
 *
 * Decoding takes bytes from disk or the network: every length and role is
 * checked and anything malformed (bad version, counts above
 * RAFT_MAX_SERVERS, empty or oversized ids, embedded NULs, duplicates,
 * trailing bytes) is KVD_ECORRUPT, never an assertion.
 */
#include "raft/raft.h"

#include <stdlib.h>
#include <string.h>

#define CONFIG_VERSION 1

static const struct raft_server *find(const struct raft_server *s, unsigned n, const char *id)
{
	for (unsigned i = 0; i < n; i++) {
		if (strcmp(s[i].id, id) == 0)
			return &s[i];
	}
	return NULL;
}

int raft_config_add(struct raft_config *c, const char *id, enum raft_server_role role)
{
	size_t len = id ? strlen(id) : 0;

	if (len == 0 || len >= RAFT_ID_SIZE || (role != RAFT_VOTER && role != RAFT_LEARNER))
		return KVD_EINVAL;
	if (find(c->servers, c->n, id) != NULL)
		return KVD_EEXIST;
	if (c->n >= RAFT_MAX_SERVERS)
		return KVD_ETOOBIG;
	memcpy(c->servers[c->n].id, id, len + 1);
	c->servers[c->n].role = role;
	c->n++;
	return 0;
}

const struct raft_server *raft_config_get(const struct raft_config *c, const char *id)
{
	return find(c->servers, c->n, id);
}

bool raft_config_is_voter(const struct raft_config *c, const char *id)
{
	const struct raft_server *s = find(c->servers, c->n, id);

	if (s != NULL && s->role == RAFT_VOTER)
		return true;
	return find(c->old, c->n_old, id) != NULL;
}

static size_t encode_set(unsigned char *p, const struct raft_server *s, unsigned n)
{
	size_t off = 0;

	p[off++] = (unsigned char)n;
	for (unsigned i = 0; i < n; i++) {
		size_t len = strlen(s[i].id);
		p[off++] = (unsigned char)s[i].role;
		p[off++] = (unsigned char)len;
		memcpy(p + off, s[i].id, len);
		off += len;
	}
	return off;
}

int raft_config_encode(const struct raft_config *c, void **buf, size_t *len)
{
	size_t max = 3 + (size_t)(c->n + c->n_old) * (2 + RAFT_ID_SIZE);
	unsigned char *p = malloc(max);
	size_t off = 0;

	if (p == NULL)
		return KVD_ENOMEM;
	p[off++] = CONFIG_VERSION;
	off += encode_set(p + off, c->servers, c->n);
	off += encode_set(p + off, c->old, c->n_old);
	*buf = p;
	*len = off;
	return 0;
}

/* Parses one server set at *off; returns 0 or KVD_ECORRUPT. */
static int decode_set(const unsigned char *p, size_t len, size_t *off, struct raft_server *s,
		      unsigned *n)
{
	unsigned count;

	if (*off >= len)
		return KVD_ECORRUPT;
	count = p[(*off)++];
	if (count > RAFT_MAX_SERVERS)
		return KVD_ECORRUPT;
	for (unsigned i = 0; i < count; i++) {
		unsigned role, idlen;
		if (len - *off < 2)
			return KVD_ECORRUPT;
		role = p[(*off)++];
		idlen = p[(*off)++];
		if ((role != RAFT_VOTER && role != RAFT_LEARNER) || idlen == 0 ||
		    idlen >= RAFT_ID_SIZE || len - *off < idlen)
			return KVD_ECORRUPT;
		if (memchr(p + *off, '\0', idlen) != NULL)
			return KVD_ECORRUPT;
		memcpy(s[i].id, p + *off, idlen);
		s[i].id[idlen] = '\0';
		s[i].role = (enum raft_server_role)role;
		*off += idlen;
		if (find(s, i, s[i].id) != NULL)
			return KVD_ECORRUPT;
	}
	*n = count;
	return 0;
}

int raft_config_decode(const void *buf, size_t len, struct raft_config *c)
{
	const unsigned char *p = buf;
	struct raft_config tmp;
	size_t off = 0;
	int rv;

	if (p == NULL || len < 3 || p[0] != CONFIG_VERSION)
		return KVD_ECORRUPT;
	memset(&tmp, 0, sizeof(tmp));
	off = 1;
	rv = decode_set(p, len, &off, tmp.servers, &tmp.n);
	if (rv != 0)
		return rv;
	rv = decode_set(p, len, &off, tmp.old, &tmp.n_old);
	if (rv != 0)
		return rv;
	if (off != len)
		return KVD_ECORRUPT;
	for (unsigned i = 0; i < tmp.n_old; i++) {
		if (tmp.old[i].role != RAFT_VOTER)
			return KVD_ECORRUPT;
	}
	*c = tmp;
	return 0;
}

int raft_bootstrap_entry(const struct raft_config *c, struct raft_entry *out, void **buf)
{
	size_t len;
	void *p;
	int rv = raft_config_encode(c, &p, &len);

	if (rv != 0)
		return rv;
	out->index = 1;
	out->term = 1;
	out->type = RAFT_ENTRY_CONFIG;
	out->data = p;
	out->len = len;
	*buf = p;
	return 0;
}
