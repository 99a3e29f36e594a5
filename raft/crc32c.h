/*
 * crc32c.h: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum of every on-disk structure of the Raft log and metadata files.
 *
 * Thread: all functions are safe to call from any thread (the lookup tables
 * are built once, under pthread_once).
 */
#ifndef KVD_RAFT_CRC32C_H
#define KVD_RAFT_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/*
 * Extends crc (0 for a fresh checksum) over len bytes at buf (borrowed) and
 * returns the new value. Uses the SSE4.2 crc32 instruction when the CPU has
 * it, the table-driven software version otherwise; both give the same result.
 */
uint32_t raft_crc32c(uint32_t crc, const void *buf, size_t len);

/* The software implementation, always available; exported so tests can check
 * that it agrees with the hardware path. Same contract as raft_crc32c(). */
uint32_t raft_crc32c_software(uint32_t crc, const void *buf, size_t len);

#endif
