/*
 * id.h: node ids ("host:port"), as the daemon's flags and the offline tools
 * (kvload --id) read them. Pure string functions; any thread.
 */
#ifndef KVD_COMMON_ID_H
#define KVD_COMMON_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVD_ID_SIZE 128 /* bytes, including the NUL; equals RAFT_ID_SIZE */

/*
 * True when id[0..len) is a node id as API.md §7 allows it: 1..127 bytes of
 * printable ASCII without spaces, '%', '&', '+' (or CR, LF, NUL), of the form
 * host:port with an empty host (":8001") allowed and a port in 1..65535.
 * Every id that comes from outside (Raft RPC fields, flags, environment,
 * /cluster bodies) passes this one check before anything stores or echoes it.
 */
bool kvd_id_valid(const char *id, size_t len);

/*
 * Splits an id "host:port" (host may be empty, meaning 127.0.0.1; IPv6
 * literals in brackets). id: borrowed. host receives at most host_size bytes
 * (may be NULL). Returns 0 with *port, or KVD_EINVAL for a missing or
 * malformed port, a host with spaces or commas, an id of KVD_ID_SIZE
 * bytes or more, or any id kvd_id_valid() refuses.
 */
int kvd_id_split(const char *id, char *host, size_t host_size, uint16_t *port);

/* Parses s (borrowed), a whole decimal number (digits only, no sign or
 * space) in [min, max], as ports and flag values are read. Returns 0 with
 * *out, or KVD_EINVAL. */
int kvd_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Parses a duration of the tools' flags: "10s", "500ms", "2m", or seconds
 * ("1.5" too); digits and at most one '.', then the unit (no sign, exponent,
 * "inf" or hex); from 1 ms to one day. Returns 0 with *ms, or KVD_EINVAL. */
int kvd_parse_duration_ms(const char *s, uint64_t *ms);

#endif
