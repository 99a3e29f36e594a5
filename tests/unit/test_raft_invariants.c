/*
 * test_raft_invariants.c: Raft's safety properties (paper §5.4, Figure 3)
 * under a seeded random schedule of faults on the hand-driven fixture.
 *
 * Not the deterministic simulation (tests/sim does that at scale): a short
 * smoke run per seed that mixes proposals, reads, reordered and dropped
 * messages, partitions, crashes and restarts, snapshots, membership changes
 * and leadership transfers, and after every 10 ms of virtual time checks:
 *  - election safety: at most one leader per term;
 *  - state machine safety: no two servers apply different entries (terms)
 *    at the same index, each applies every index exactly once, in order
 *    (checked by the fixture);
 *  - leader append-only / log matching are implied by the above over many
 *    steps, and terms never decrease on disk (checked by the fixture).
 * At the end the network heals and a leader must emerge (liveness).
 */
#include <check.h>

#include "raft_fixture.h"

static struct fx f;

static uint64_t rng;

static unsigned rnd(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned)(rng % n);
}

static raft_term leader_of_term[100000];
static raft_term seen_term[FX_MAX_LOG]; /* term applied at index, by anyone */

static void check_invariants(void)
{
	for (unsigned i = 0; i < f.count; i++) {
		struct fx_node *n = &f.n[i];
		if (raft_role(n->r) == RAFT_LEADER && !n->down) {
			raft_term t = raft_current_term(n->r);
			ck_assert_uint_lt(t, 100000);
			if (leader_of_term[t] == 0)
				leader_of_term[t] = i + 1;
			ck_assert_uint_eq(leader_of_term[t], i + 1);
		}
		for (raft_index k = n->disk_prev + 1; k <= n->applied; k++) {
			if (seen_term[k] == 0)
				seen_term[k] = n->applied_term[k];
			ck_assert_msg(seen_term[k] == n->applied_term[k],
				      "index %llu applied with term %llu on %s, %llu elsewhere",
				      (unsigned long long)k, (unsigned long long)n->applied_term[k],
				      n->id, (unsigned long long)seen_term[k]);
		}
	}
}

static void maybe_install(unsigned i)
{
	struct fx_node *n = &f.n[i];

	if (!n->rx_done)
		return;
	for (unsigned j = 0; j < f.count; j++) {
		const struct raft_snapshot_meta *m = &f.n[j].snap;
		if (j != i && m->index != 0 && m->size == n->rx_len &&
		    memcmp(f.n[j].snap_bytes, n->rx_bytes, n->rx_len) == 0) {
			struct raft_snapshot_meta meta = *m;
			/* Applied entries before the snapshot keep their terms. */
			for (raft_index k = n->applied + 1; k <= meta.index; k++)
				n->applied_term[k] = seen_term[k];
			fx_install(&f, i, &meta);
			return;
		}
	}
}

static void random_action(void)
{
	int l = fx_leader(&f);
	unsigned a = rnd(1000), i = rnd(f.count);
	struct fx_node *n = &f.n[i];

	if (a < 300 && l >= 0) {
		fx_propose(&f, (unsigned)l, "payload");
	} else if (a < 330 && l >= 0) {
		struct raft_event e = {.type = RAFT_EVENT_READ};
		e.u.read.token = a;
		fx_step(&f, (unsigned)l, &e);
	} else if (a < 345) {
		bool cut = rnd(2) == 0;
		fx_partition(&f, i, cut);
	} else if (a < 355) {
		if (n->down) {
			fx_restart(&f, i, rng);
			n->down = false;
		} else {
			n->down = true;
		}
	} else if (a < 375 && !n->down) {
		raft_index idx = n->applied;
		if (idx > n->snap.index && idx > n->disk_prev && idx > 0)
			fx_take_snapshot(&f, i, idx, 50 + idx % 300);
	} else if (a < 385 && l >= 0) {
		const char *id = f.n[rnd(f.count)].id;
		struct raft_event e = {.type = RAFT_EVENT_CHANGE};
		const struct raft_config *c = raft_configuration(f.n[l].r);
		e.u.change.token = a;
		if (raft_config_is_voter(c, id)) {
			unsigned voters = 0;
			for (unsigned k = 0; k < c->n; k++)
				voters += c->servers[k].role == RAFT_VOTER;
			if (voters <= 3)
				return;
			e.u.change.remove = &id;
			e.u.change.n_remove = 1;
		} else {
			e.u.change.add = &id;
			e.u.change.n_add = 1;
		}
		fx_step(&f, (unsigned)l, &e);
	} else if (a < 390 && l >= 0) {
		struct raft_event e = {.type = RAFT_EVENT_TRANSFER};
		e.u.transfer.to = NULL;
		fx_step(&f, (unsigned)l, &e);
	}
}

static void run_seed(uint64_t seed)
{
	struct raft_options o;

	rng = seed * 2654435761u + 1;
	memset(leader_of_term, 0, sizeof(leader_of_term));
	memset(seen_term, 0, sizeof(seen_term));
	raft_options_default(&o);
	o.snapshot_trailing = 5;
	o.snapshot_chunk_bytes = 64;
	o.snapshot_timeout = 1000;
	o.max_msg_bytes = 64;
	o.max_inflight_msgs = 4;
	fx_init_opts(&f, 5, 3, &o);
	for (unsigned step = 0; step < 2000; step++) {
		random_action();
		f.now += 10;
		for (unsigned i = 0; i < f.count; i++) {
			fx_tick(&f, i);
			maybe_install(i);
		}
		/* Deliver most messages, in random order, dropping a few. */
		for (unsigned k = 0; k < 64 && f.n_q > 0; k++)
			fx_deliver_at(&f, rnd(f.n_q), rnd(100) < 3);
		check_invariants();
		if (f.n_q > FX_MAX_MSGS / 2)
			fx_drop_all(&f);
	}
	/* Heal everything: a leader must emerge and commit. */
	for (unsigned i = 0; i < f.count; i++) {
		fx_partition(&f, i, false);
		if (f.n[i].down) {
			fx_restart(&f, i, seed * 31 + i);
			f.n[i].down = false;
		}
	}
	for (unsigned step = 0; step < 1000 && fx_leader(&f) < 0; step++) {
		fx_run(&f, 10);
		for (unsigned i = 0; i < f.count; i++)
			maybe_install(i);
	}
	if (fx_leader(&f) < 0 || getenv("FX_VERBOSE") != NULL) {
		for (unsigned i = 0; i < f.count; i++) {
			const struct raft_config *c = raft_configuration(f.n[i].r);
			fprintf(stderr,
				"%s role %d term %llu leader '%s' last %llu commit %llu applied "
				"%llu cfg n=%u old=%u:",
				f.n[i].id, raft_role(f.n[i].r),
				(unsigned long long)raft_current_term(f.n[i].r),
				raft_leader(f.n[i].r),
				(unsigned long long)raft_last_index(f.n[i].r),
				(unsigned long long)raft_commit_index(f.n[i].r),
				(unsigned long long)f.n[i].applied, c->n, c->n_old);
			for (unsigned k = 0; k < c->n; k++)
				fprintf(stderr, " %s/%d", c->servers[k].id, c->servers[k].role);
			fprintf(stderr, " rx_done %d down %d\n", f.n[i].rx_done, f.n[i].down);
		}
	}
	ck_assert_int_ge(fx_leader(&f), 0);
	/* Every server of the leader's configuration catches up. */
	for (unsigned step = 0; step < 300; step++) {
		fx_run(&f, 10);
		for (unsigned i = 0; i < f.count; i++)
			maybe_install(i);
	}
	check_invariants();
	{
		int l = fx_leader(&f);
		const struct raft_config *c;
		ck_assert_int_ge(l, 0);
		c = raft_configuration(f.n[l].r);
		for (unsigned k = 0; k < c->n; k++) {
			int i = fx_index(&f, c->servers[k].id);
			ck_assert_msg(f.n[i].applied == f.n[l].applied,
				      "seed %llu: %s applied %llu, leader %llu",
				      (unsigned long long)seed, f.n[i].id,
				      (unsigned long long)f.n[i].applied,
				      (unsigned long long)f.n[l].applied);
		}
	}
	if (getenv("FX_VERBOSE") != NULL) {
		unsigned terms = 0, installs = 0, changes = 0;
		for (unsigned t = 0; t < 100000; t++)
			terms += leader_of_term[t] != 0;
		for (unsigned i = 0; i < f.count; i++) {
			installs += f.n[i].n_snapshot_writes;
			changes += f.n[i].n_changes;
		}
		fprintf(stderr,
			"seed %llu: leaders %u commit %llu chunks %u changes %u voters %u\n",
			(unsigned long long)seed, terms,
			(unsigned long long)raft_commit_index(f.n[fx_leader(&f)].r), installs,
			changes, raft_configuration(f.n[fx_leader(&f)].r)->n);
	}
	fx_close(&f);
}

START_TEST(test_raft_step_random_faults_keep_safety)
{
	run_seed((uint64_t)_i + 1 +
		 (getenv("FX_SEED0") ? strtoull(getenv("FX_SEED0"), NULL, 10) : 0));
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("raft_invariants");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_raft_step_random_faults_keep_safety, 0,
			    getenv("FX_SEEDS") ? atoi(getenv("FX_SEEDS")) : 10);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
