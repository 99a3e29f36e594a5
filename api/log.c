/*
 * log.c: logfmt-style event lines on stderr (API.md §9).
 *
 * The level is a process-wide setting read without locking: it is set once at
 * start, before any thread exists.
 */
#include "api/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum kvd_log_level min_level = KVD_LOG_INFO;

void kvd_log_set_level(enum kvd_log_level level)
{
	min_level = level;
}

int kvd_log_enabled(enum kvd_log_level level)
{
	return level >= min_level;
}

void kvd_log(enum kvd_log_level level, const char *msg, const char *fmt, ...)
{
	static const char *const names[] = {"debug", "info", "warn", "error"};
	char line[4096];
	size_t n;
	struct timeval tv;
	struct tm tm;
	int quote;

	if (level < min_level)
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	quote = strpbrk(msg, " \t\"=") != NULL;
	n = (size_t)snprintf(line, sizeof(line),
			     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s msg=%s%s%s",
			     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			     tm.tm_sec, (long)(tv.tv_usec / 1000), names[level], quote ? "\"" : "",
			     msg, quote ? "\"" : "");
	if (fmt != NULL && *fmt != '\0' && n < sizeof(line) - 2) {
		va_list ap;
		line[n++] = ' ';
		va_start(ap, fmt);
		n += (size_t)vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		va_end(ap);
	}
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	(void)!write(STDERR_FILENO, line, n);
}
