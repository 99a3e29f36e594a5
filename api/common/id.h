/*
 * id.h: node ids ("host:port"), as the daemon's flags and the offline tools
 * (kvload --id) read them. Pure string functions; any thread.
 */
#ifndef KVD_COMMON_ID_H
#define KVD_COMMON_ID_H

#include <stddef.h>
#include <stdint.h>

#define KVD_ID_SIZE 128 /* bytes, including the NUL; equals RAFT_ID_SIZE */

/*
 * Splits an id "host:port" (host may be empty, meaning 127.0.0.1; IPv6
 * literals in brackets). id: borrowed. host receives at most host_size bytes
 * (may be NULL). Returns 0 with *port, or KVD_EINVAL for a missing or
 * malformed port, a host with spaces or commas, or an id of KVD_ID_SIZE
 * bytes or more.
 */
int kvd_id_split(const char *id, char *host, size_t host_size, uint16_t *port);

#endif
