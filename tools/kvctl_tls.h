/*
 * kvctl_tls.h: kvctl's TLS transport (--cacert, --cert, --key; https://
 * endpoints). Single-threaded, like the rest of kvctl.
 */
#ifndef KVD_TOOLS_KVCTL_TLS_H
#define KVD_TOOLS_KVCTL_TLS_H

#include "api/common/tls_client.h"
#include "tools/kvctl_http.h"

/* The TLS transport, its client made from opts (checked with
 * kvd_tls_client_check). Returns 0 with *out, or KVD_EINVAL / KVD_ENOMEM
 * with errmsg (KVD_ERRMSG_SIZE bytes). */
int kvctl_transport_tls(const struct kvd_tls_client_opts *opts, const struct kvctl_transport **out,
			char *errmsg);

#endif
