/*
 * log.h: one line per event on stderr, "level=... msg=... key=value ...".
 *
 * Thread-safe: each line is formatted in a local buffer and written with one
 * write(2), so lines from several threads never interleave.
 */
#ifndef KVD_API_LOG_H
#define KVD_API_LOG_H

#include "api/config.h"

/* Sets the lowest level that is printed (default KVD_LOG_INFO). */
void kvd_log_set_level(enum kvd_log_level level);

/* True when a line at level would be printed. */
int kvd_log_enabled(enum kvd_log_level level);

/*
 * Prints one line: timestamp, level, msg (quoted when it holds spaces), then
 * the printf-formatted key=value pairs of fmt (may be NULL). Lines longer than
 * 4 KiB are cut.
 */
void kvd_log(enum kvd_log_level level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define KVD_DEBUG(msg, ...) kvd_log(KVD_LOG_DEBUG, msg, __VA_ARGS__)
#define KVD_INFO(msg, ...) kvd_log(KVD_LOG_INFO, msg, __VA_ARGS__)
#define KVD_WARN(msg, ...) kvd_log(KVD_LOG_WARN, msg, __VA_ARGS__)
#define KVD_ERROR(msg, ...) kvd_log(KVD_LOG_ERROR, msg, __VA_ARGS__)

#endif
