/*
 * engine.h: the LevelDB state machine.
 *
 * The engine applies committed log entries to a LevelDB database and answers
 * reads from it. It knows nothing about Raft beyond an applied index and term
 * (plain uint64_t) and an opaque configuration blob that it stores for
 * snapshots. Every applied batch is one LevelDB WriteBatch holding the
 * mutations plus the new applied index and term, written without sync: the
 * Raft log is the write-ahead log, and replay starts after engine_applied().
 *
 * Every stored value carries its key's revision (the index of the entry that
 * wrote it); conditional commands and transactions are decided at apply and
 * their outcomes reported per entry (engine_apply_results()).
 *
 * CLEAR costs O(1) on the request path: user keys live under a generation
 * number, CLEAR bumps it, and a background thread deletes old generations.
 *
 * Threads:
 *  - engine_apply() is called from one thread at a time (the apply worker).
 *  - engine_get(), engine_get_rev(), engine_list(), engine_applied(), engine_config_get(),
 *    engine_snapshot_begin(), engine_iter_*() and the counters may be called
 *    from any thread concurrently with engine_apply(): LevelDB's DB object is
 *    thread-safe for concurrent reads and writes, and the engine's own
 *    in-memory state (applied index, generation) is under a mutex.
 *  - engine_open(), engine_close() and engine_swap() need exclusive use: no
 *    other call may run concurrently, and every view and iterator must have
 *    been released first.
 *  - The engine owns one background thread (the generation deleter), started
 *    by engine_open() and joined by engine_close()/engine_swap().
 */
#ifndef KVD_ENGINE_H
#define KVD_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvd/errors.h"
#include "engine/command.h"

struct engine;
struct engine_view;
struct engine_iter;

/* Log hook: msg is a NUL-terminated line (borrowed for the call). May be
 * called from the apply thread or the deleter thread. */
typedef void (*engine_log_cb)(void *data, const char *msg);

/* Tuning; a zero field takes the default. Passing NULL takes all defaults. */
struct engine_options {
	size_t cache_bytes;	   /* LRU block cache; default 32 MiB */
	size_t write_buffer_bytes; /* memtable size; default 8 MiB */
	int bloom_bits_per_key;	   /* bloom filter; default 10 */
	int max_open_files;	   /* LevelDB table cache + 10; default 74 */
	size_t table_file_bytes;   /* LevelDB max_file_size; default 2 MiB */
	size_t deleter_batch_keys; /* deletes per background batch; default 1000 */
	bool deleter_disabled;	   /* do not start the background deleter */
	engine_log_cb log_cb;	   /* may be NULL */
	void *log_data;		   /* passed to log_cb */
};

enum engine_entry_type {
	ENGINE_ENTRY_COMMAND = 1, /* data: command text (command.h) */
	ENGINE_ENTRY_OTHER = 2,	  /* no-op: only advances the applied index */
	ENGINE_ENTRY_CONFIG = 3,  /* data: opaque configuration blob to store */
};

/* One committed entry. data is borrowed for the call. */
struct engine_entry {
	uint64_t index;
	uint64_t term;
	enum engine_entry_type type;
	const void *data;
	size_t len; /* bytes */
};

/* A key-value record yielded by iterators. Pointers are borrowed and valid
 * until the next call on the same iterator or reader. */
struct engine_record {
	const char *key;
	size_t key_len; /* bytes */
	const char *value;
	size_t value_len;  /* bytes */
	uint64_t revision; /* index of the entry that last wrote the key */
};

/*
 * Per-entry outcomes of engine_apply_results(), for the HTTP layer (412,
 * ETag, transaction answers) and the watcher hub (changes in log order).
 */
enum engine_outcome {
	ENGINE_OUTCOME_NONE = 0,      /* OTHER or CONFIG entry: nothing to report */
	ENGINE_OUTCOME_APPLIED = 1,   /* command ran (its condition, if any, held) */
	ENGINE_OUTCOME_FAILED = 2,    /* condition did not hold: nothing changed (412) */
	ENGINE_OUTCOME_MALFORMED = 3, /* unparsable command: skipped and counted */
};

enum engine_change_type {
	ENGINE_CHANGE_PUT = 1,
	ENGINE_CHANGE_DELETE = 2, /* also emitted when the key was absent */
	ENGINE_CHANGE_CLEAR = 3,  /* every key; key is NULL */
};

/* One change to the store. key and value borrow from the entry's data (valid
 * as long as the caller keeps the entries' bytes), except in a TXN's result,
 * which owns copies (struct engine_result.owns_data); value is NULL for
 * DELETE and CLEAR. */
struct engine_change {
	enum engine_change_type type;
	const char *key;
	size_t key_len; /* bytes */
	const char *value;
	size_t value_len;  /* bytes */
	uint64_t revision; /* the entry's index */
};

/* Result of one operation of the branch a TXN ran: {} for put and delete
 * (is_get false), {"value", "revision"} or {"found": false} for get. value is
 * malloc'd, owned by the result (NULL unless found). A get sees the earlier
 * operations of its own transaction. */
struct engine_txn_result {
	bool is_get;
	bool found;
	char *value;
	size_t value_len; /* bytes */
	uint64_t revision;
};

/*
 * Result of one applied entry. changes is a malloc'd array owned by the
 * result (NULL when n_changes is 0); for a TXN (owns_data) the keys and
 * values of its changes are malloc'd copies owned by the result too, else
 * they borrow from the entry. Everything is released by
 * engine_results_clear(). revision is the entry's index when the entry
 * changed the store or was a TXN, else 0. For a TXN, succeeded says whether
 * every comparison held (the success branch ran) and ops[0..n_ops) are the
 * results of the branch that ran, in order.
 */
struct engine_result {
	uint64_t index;
	enum engine_outcome outcome;
	uint64_t revision;
	struct engine_change *changes;
	size_t n_changes;
	bool owns_data;
	bool succeeded;
	struct engine_txn_result *ops;
	size_t n_ops;
};

/*
 * Open or create the database in dir (created if missing, parent must exist).
 * If a previous engine_swap() was interrupted by a crash, finishes or rolls
 * it back first (see engine_swap()). opts is borrowed (may be NULL).
 * On success *engine is a heap object freed with engine_close().
 * Returns 0, KVD_ELOCKED (another process holds dir), KVD_ECORRUPT (not a
 * kvd database or bad meta keys), KVD_ENOSPC, KVD_EIO, KVD_ENOMEM; errmsg
 * (KVD_ERRMSG_SIZE bytes, may be NULL) says why.
 */
int engine_open(const char *dir, const struct engine_options *opts, struct engine **engine,
		char *errmsg);

/* Stop the deleter thread, close the database, free. NULL does nothing. */
void engine_close(struct engine *engine);

/* Applied index and term stored in the database ((0, 0) when fresh). */
void engine_applied(struct engine *engine, uint64_t *index, uint64_t *term);

/*
 * The configuration blob of the last applied CONFIG entry: on success *config
 * is a malloc'd copy (caller frees with free()) of *len bytes. Returns 0,
 * KVD_ENOTFOUND (none applied yet), KVD_ENOMEM, KVD_EIO.
 */
int engine_config_get(struct engine *engine, void **config, size_t *len);

/*
 * Apply n entries (borrowed) in one WriteBatch, without sync. Indexes must be
 * strictly increasing and greater than the applied index, else KVD_EINVAL and
 * nothing is written. A malformed COMMAND is skipped (counted, logged) but its
 * index still advances. Returns 0, KVD_EINVAL, KVD_ENOSPC (disk full), KVD_EIO
 * (other write failure; errmsg has LevelDB's message), KVD_ENOMEM. On failure
 * nothing of the batch is applied; the caller retries the same entries later.
 * Because LevelDB keeps some write errors sticky (a compaction that hit a full
 * disk), the call after a failure first reopens the database, unless a view is
 * open or, after KVD_ENOSPC, less than two write buffers of space are free
 * (then it fails again at once and reads keep using the old handle).
 * Thread: the apply thread.
 */
int engine_apply(struct engine *engine, const struct engine_entry *entries, size_t n, char *errmsg);

/*
 * Same as engine_apply(), and fills results[0..n) (caller-provided array of n
 * elements, may be NULL: then this is engine_apply()) with each entry's
 * outcome and changes in log order. A condition (PUT-IF, PUT-ABSENT,
 * DELETE-IF) is checked against the state left by every earlier entry,
 * including earlier entries of the same call, so every node decides alike. On
 * success the caller owns the results and releases them with
 * engine_results_clear(results, n); on failure they are already cleared
 * (nothing was applied). Thread: the apply thread.
 */
int engine_apply_results(struct engine *engine, const struct engine_entry *entries, size_t n,
			 struct engine_result *results, char *errmsg);

/*
 * Rebuilds the result of the entry (borrowed; index <= the applied index and
 * above the latest snapshot's) without changing the store: outcome,
 * revision, succeeded and changes exactly as engine_apply_results() gave
 * them, from the command and, for PUT-IF, PUT-ABSENT, DELETE-IF and TXN, the
 * outcome recorded at apply ("moutcome" keys, docs/formats-engine.md). A
 * TXN's ops (its gets' answers) are not rebuilt: n_ops is 0. On success
 * *out is released with engine_results_clear(out, 1). Returns 0,
 * KVD_ENOTFOUND (no outcome recorded for that index: pruned, or applied by
 * an older kvd), KVD_ECORRUPT, KVD_EIO, KVD_ENOMEM. Thread: any.
 */
int engine_entry_changes(struct engine *engine, const struct engine_entry *entry,
			 struct engine_result *out);

/* Deletes the outcomes recorded for entries below index below (those a
 * snapshot covers: no replay needs them). Returns 0, KVD_EIO, KVD_ENOSPC,
 * KVD_ENOMEM. Thread: the apply thread. */
int engine_outcomes_prune(struct engine *engine, uint64_t below, char *errmsg);

/* Frees what results[0..n) own and zeroes them. NULL does nothing. Thread:
 * the owner of the array. */
void engine_results_clear(struct engine_result *results, size_t n);

/*
 * Read key (key_len bytes, borrowed) in the current generation. On success
 * *value is a malloc'd copy (caller frees with free()) of *len bytes.
 * Returns 0, KVD_ENOTFOUND, KVD_EINVAL (invalid key), KVD_EIO, KVD_ENOMEM.
 * Thread: any.
 */
int engine_get(struct engine *engine, const char *key, size_t key_len, void **value, size_t *len);

/* Same as engine_get(), and *revision (may be NULL) gets the key's revision.
 * Thread: any. */
int engine_get_rev(struct engine *engine, const char *key, size_t key_len, void **value,
		   size_t *len, uint64_t *revision);

/* One item of a range listing; key and value are malloc'd, owned by the
 * list result (value NULL when keys_only). */
struct engine_list_item {
	char *key;
	size_t key_len; /* bytes */
	char *value;
	size_t value_len; /* bytes */
	uint64_t revision;
};

/* A range listing: items in bytewise key order; revision is the store
 * revision (applied index) of the view it was read from. Released with
 * engine_list_result_clear(). */
struct engine_list_result {
	uint64_t revision;
	struct engine_list_item *items;
	size_t n_items;
	bool more; /* keys beyond the last item remain */
};

/*
 * List at most limit (>= 1) keys of the current generation that start with
 * prefix (prefix_len bytes, may be 0/NULL: every key) and sort strictly after
 * after (after_len bytes, may be 0/NULL), read from ONE LevelDB snapshot. A
 * non-empty prefix or after must consist of key characters (at most
 * ENGINE_KEY_MAX bytes), else KVD_EINVAL. On success *out is filled (release
 * with engine_list_result_clear()). Returns 0, KVD_EINVAL, KVD_ECORRUPT,
 * KVD_EIO, KVD_ENOMEM. Thread: any, concurrently with engine_apply().
 */
int engine_list(struct engine *engine, const char *prefix, size_t prefix_len, const char *after,
		size_t after_len, size_t limit, bool keys_only, struct engine_list_result *out);

/* Same as engine_list(), and the page also stops (more = true) before the
 * item that would take its keys' and values' bytes past max_bytes (0: no
 * bound; the first item is always taken), so that a page's memory is
 * bounded whatever the limit and the value sizes. */
int engine_list_bounded(struct engine *engine, const char *prefix, size_t prefix_len,
			const char *after, size_t after_len, size_t limit, size_t max_bytes,
			bool keys_only, struct engine_list_result *out);

/* Frees a list result and zeroes it. */
void engine_list_result_clear(struct engine_list_result *out);

/* Number of malformed COMMAND entries skipped since open. Thread: any. */
uint64_t engine_malformed_count(struct engine *engine);

/* Number of old generations still waiting for background deletion. */
size_t engine_deleter_pending(struct engine *engine);

/* Wait up to timeout_ms milliseconds until no generation is pending deletion.
 * Returns 0 or KVD_ETIMEDOUT. Thread: any but the deleter. */
int engine_deleter_wait(struct engine *engine, unsigned timeout_ms);

/*
 * Capture a consistent read view (a LevelDB snapshot) with the applied index,
 * term, generation and configuration at that point. Cheap; applies may
 * continue. On success *view is released with engine_view_release(), before
 * engine_close()/engine_swap(). Returns 0, KVD_ECORRUPT, KVD_EIO, KVD_ENOMEM.
 * Thread: any.
 */
int engine_snapshot_begin(struct engine *engine, struct engine_view **view);

/* The view's applied index, term and configuration (borrowed from the view;
 * config is NULL with len 0 when no configuration was applied). */
void engine_view_meta(const struct engine_view *view, uint64_t *index, uint64_t *term,
		      const void **config, size_t *config_len);

/* Release a view. NULL does nothing. Thread: any. */
void engine_view_release(struct engine_view *view);

/*
 * Iterate the user keys of a view's generation in bytewise order. The view is
 * borrowed and must outlive the iterator. Returns 0 or KVD_ENOMEM.
 */
int engine_view_iter_open(const struct engine_view *view, struct engine_iter **iter);

/* Iterate the live database's current generation at a consistent point (the
 * iterator owns a view of its own). Returns 0, KVD_ECORRUPT, KVD_EIO,
 * KVD_ENOMEM. */
int engine_iter_open(struct engine *engine, struct engine_iter **iter);

/*
 * Next record in *rec (borrowed until the next call), or *end = true when
 * the generation is exhausted. Returns 0 or KVD_EIO (LevelDB read error).
 */
int engine_iter_next(struct engine_iter *iter, struct engine_record *rec, bool *end);

/* Close an iterator (and its own view, if any). NULL does nothing. */
void engine_iter_close(struct engine_iter *iter);

/*
 * Replace the live database with the one in dbdir_new (built by
 * engine_snapshot_restore() or an engine_builder; must be on the same file
 * system as the live directory, ideally its sibling). Procedure: stop the
 * deleter, close LevelDB, rename dir -> dir.old, rename dbdir_new -> dir,
 * fsync the parent, reopen, remove dir.old, restart the deleter. A crash
 * after the first rename leaves dir missing and dir.old present:
 * engine_open() renames it back (the swap did not happen); a crash after the
 * second leaves both: engine_open() removes dir.old (the swap happened).
 * Returns 0, KVD_EBUSY (a view is open), KVD_EIO, or a code of
 * engine_open(); on failure after closing, the engine reopens whatever
 * directory is in place (reads give KVD_EIO if even that fails) and returns
 * the error. Thread: exclusive (no concurrent call on this engine).
 */
int engine_swap(struct engine *engine, const char *dbdir_new, char *errmsg);

/*
 * Builder: creates a fresh database directory from records, for snapshot
 * restore and kvload. dir must not exist (KVD_EEXIST). Records go into
 * generation 1 with the given revision (>= 1); put() validates keys and
 * revision (KVD_EINVAL). finish() writes the applied
 * index, term and configuration (config borrowed, may be NULL), syncs, closes
 * and frees the builder; abort() closes, removes dir and frees. After either
 * the builder pointer is invalid. Returns 0, KVD_EEXIST, KVD_EINVAL,
 * KVD_ENOSPC, KVD_EIO, KVD_ENOMEM. Thread: any (one thread per builder).
 */
struct engine_builder;
int engine_builder_create(const char *dir, struct engine_builder **builder, char *errmsg);
int engine_builder_put(struct engine_builder *builder, const char *key, size_t key_len,
		       const void *value, size_t value_len, uint64_t revision, char *errmsg);
int engine_builder_finish(struct engine_builder *builder, uint64_t index, uint64_t term,
			  const void *config, size_t config_len, char *errmsg);
void engine_builder_abort(struct engine_builder *builder);

#endif
