/*
 * datadir.h: names inside a node's data directory that the daemon and the
 * offline tools (kvload, kvdump) must agree on.
 */
#ifndef KVD_COMMON_DATADIR_H
#define KVD_COMMON_DATADIR_H

/*
 * A data directory built offline by kvload without --id holds this file: the
 * first node started on it alone (no peers, no --join) takes the loaded
 * state as its own one-member cluster under its own id, then removes it.
 */
#define KVD_ADOPT_FILE "adopt-loaded-state"

#endif
