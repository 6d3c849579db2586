//! Golden scenarios: what each strategy decides, as transcripts.

use expect_test::expect;

use crate::check;

#[test]
fn drf_paper_example_gives_a_three_and_b_two() {
    // Ghodsi et al.: 9 CPU, 18 GB; A's tasks <1 CPU, 4 GB>, B's <3 CPU, 1 GB>.
    check(
        "
        strategy fair-share
        pool a
        pool b
        submit ax6 pool=a cpu=1 memory=4G queue
        submit bx6 pool=b cpu=3 memory=1G queue
        node n cpu=9 memory=18G
        show
        ",
        expect![[r#"
            > pool a
            > pool b
            > submit ax6 pool=a cpu=1 memory=4G queue
              a-1: queued (NoEligibleNode: cpu=1,memory=3906250Ki)
              a-2: queued (NoEligibleNode: cpu=1,memory=3906250Ki)
              a-3: queued (NoEligibleNode: cpu=1,memory=3906250Ki)
              a-4: queued (NoEligibleNode: cpu=1,memory=3906250Ki)
              a-5: queued (NoEligibleNode: cpu=1,memory=3906250Ki)
              a-6: queued (NoEligibleNode: cpu=1,memory=3906250Ki)
            > submit bx6 pool=b cpu=3 memory=1G queue
              b-1: queued (NoEligibleNode: cpu=3,memory=1000000000)
              b-2: queued (NoEligibleNode: cpu=3,memory=1000000000)
              b-3: queued (NoEligibleNode: cpu=3,memory=1000000000)
              b-4: queued (NoEligibleNode: cpu=3,memory=1000000000)
              b-5: queued (NoEligibleNode: cpu=3,memory=1000000000)
              b-6: queued (NoEligibleNode: cpu=3,memory=1000000000)
            > node n cpu=9 memory=18G
              granted a-1 on n
              granted b-1 on n
              granted a-2 on n
              granted b-2 on n
              granted a-3 on n
            > show
              node n: cpu=9,memory=13671875Ki of cpu=9,memory=17578125Ki
              pool default: 0 granted, 0 queued, 0
              pool a: 3 granted, 3 queued, cpu=3,memory=11718750Ki
              pool b: 2 granted, 4 queued, cpu=6,memory=1953125Ki
        "#]],
    );
}

#[test]
fn weighted_drf_serves_a_weight_two_pool_twice_as_much() {
    check(
        "
        strategy fair-share
        pool a weight=2
        pool b weight=1
        submit ax12 pool=a cpu=1 memory=1Gi queue
        submit bx12 pool=b cpu=1 memory=1Gi queue
        node n cpu=12 memory=64Gi
        show
        ",
        expect![[r#"
            > pool a weight=2
            > pool b weight=1
            > submit ax12 pool=a cpu=1 memory=1Gi queue
              a-1: queued (NoEligibleNode: cpu=1,memory=1Gi)
              a-2: queued (NoEligibleNode: cpu=1,memory=1Gi)
              a-3: queued (NoEligibleNode: cpu=1,memory=1Gi)
              a-4: queued (NoEligibleNode: cpu=1,memory=1Gi)
              a-5: queued (NoEligibleNode: cpu=1,memory=1Gi)
              a-6: queued (NoEligibleNode: cpu=1,memory=1Gi)
              a-7: queued (NoEligibleNode: cpu=1,memory=1Gi)
              a-8: queued (NoEligibleNode: cpu=1,memory=1Gi)
              a-9: queued (NoEligibleNode: cpu=1,memory=1Gi)
              a-10: queued (NoEligibleNode: cpu=1,memory=1Gi)
              a-11: queued (NoEligibleNode: cpu=1,memory=1Gi)
              a-12: queued (NoEligibleNode: cpu=1,memory=1Gi)
            > submit bx12 pool=b cpu=1 memory=1Gi queue
              b-1: queued (NoEligibleNode: cpu=1,memory=1Gi)
              b-2: queued (NoEligibleNode: cpu=1,memory=1Gi)
              b-3: queued (NoEligibleNode: cpu=1,memory=1Gi)
              b-4: queued (NoEligibleNode: cpu=1,memory=1Gi)
              b-5: queued (NoEligibleNode: cpu=1,memory=1Gi)
              b-6: queued (NoEligibleNode: cpu=1,memory=1Gi)
              b-7: queued (NoEligibleNode: cpu=1,memory=1Gi)
              b-8: queued (NoEligibleNode: cpu=1,memory=1Gi)
              b-9: queued (NoEligibleNode: cpu=1,memory=1Gi)
              b-10: queued (NoEligibleNode: cpu=1,memory=1Gi)
              b-11: queued (NoEligibleNode: cpu=1,memory=1Gi)
              b-12: queued (NoEligibleNode: cpu=1,memory=1Gi)
            > node n cpu=12 memory=64Gi
              granted a-1 on n
              granted b-1 on n
              granted a-2 on n
              granted a-3 on n
              granted b-2 on n
              granted a-4 on n
              granted a-5 on n
              granted b-3 on n
              granted a-6 on n
              granted a-7 on n
              granted b-4 on n
              granted a-8 on n
            > show
              node n: cpu=12,memory=12Gi of cpu=12,memory=64Gi
              pool default: 0 granted, 0 queued, 0
              pool a: 8 granted, 4 queued, cpu=8,memory=8Gi
              pool b: 4 granted, 8 queued, cpu=4,memory=4Gi
        "#]],
    );
}

#[test]
fn preemption_takes_the_lowest_priority_victims() {
    // n1's victims top out at priority 100 (two of them), n2's at 200 (one): n1 wins.
    check(
        "
        node n1 cpu=4 memory=8Gi label.name=n1
        node n2 cpu=4 memory=8Gi label.name=n2
        submit lowx4 prio=100 sel.name=n1 cpu=1 memory=1Gi
        submit midx2 prio=200 sel.name=n2 cpu=2 memory=1Gi
        submit big prio=500 cpu=2 memory=1Gi
        show
        ",
        expect![[r#"
            > node n1 cpu=4 memory=8Gi label.name=n1
            > node n2 cpu=4 memory=8Gi label.name=n2
            > submit lowx4 prio=100 sel.name=n1 cpu=1 memory=1Gi
              granted low-1 on n1
              granted low-2 on n1
              granted low-3 on n1
              granted low-4 on n1
            > submit midx2 prio=200 sel.name=n2 cpu=2 memory=1Gi
              granted mid-1 on n2
              granted mid-2 on n2
            > submit big prio=500 cpu=2 memory=1Gi
              preempted low-4 (priority preemption by big)
              preempted low-3 (priority preemption by big)
              granted big on n1 preempting low-4 low-3
            > show
              node n1: cpu=4,memory=3Gi of cpu=4,memory=8Gi
              node n2: cpu=4,memory=2Gi of cpu=4,memory=8Gi
              pool default: 5 granted, 0 queued, cpu=8,memory=5Gi
        "#]],
    );
}

#[test]
fn preemption_prefers_fewer_victims_then_the_most_recently_granted() {
    check(
        "
        node n1 cpu=4 memory=8Gi label.name=n1
        node n2 cpu=4 memory=8Gi label.name=n2
        node n3 cpu=4 memory=8Gi label.name=n3
        submit smallx4 prio=100 sel.name=n1 cpu=1 memory=1Gi
        submit oldx2 prio=100 sel.name=n2 cpu=2 memory=1Gi
        submit newx2 prio=100 sel.name=n3 cpu=2 memory=1Gi
        # one victim on n2 or n3 beats two on n1; n3's are the more recent
        submit urgent prio=900 cpu=2 memory=1Gi
        # equal priority is never preempted, and fixed allocations never are
        submit peer prio=100 cpu=1 memory=1Gi
        submit boss prio=1000 fixed cpu=4 memory=1Gi
        show
        ",
        expect![[r#"
            > node n1 cpu=4 memory=8Gi label.name=n1
            > node n2 cpu=4 memory=8Gi label.name=n2
            > node n3 cpu=4 memory=8Gi label.name=n3
            > submit smallx4 prio=100 sel.name=n1 cpu=1 memory=1Gi
              granted small-1 on n1
              granted small-2 on n1
              granted small-3 on n1
              granted small-4 on n1
            > submit oldx2 prio=100 sel.name=n2 cpu=2 memory=1Gi
              granted old-1 on n2
              granted old-2 on n2
            > submit newx2 prio=100 sel.name=n3 cpu=2 memory=1Gi
              granted new-1 on n3
              granted new-2 on n3
            > submit urgent prio=900 cpu=2 memory=1Gi
              preempted new-2 (priority preemption by urgent)
              granted urgent on n3 preempting new-2
            > submit peer prio=100 cpu=1 memory=1Gi
              peer: refused (Capacity: cpu=1)
            > submit boss prio=1000 fixed cpu=4 memory=1Gi
              preempted old-2 (priority preemption by boss)
              preempted old-1 (priority preemption by boss)
              granted boss on n2 preempting old-2 old-1
            > show
              node n1: cpu=4,memory=4Gi of cpu=4,memory=8Gi
              node n2: cpu=4,memory=1Gi of cpu=4,memory=8Gi
              node n3: cpu=4,memory=2Gi of cpu=4,memory=8Gi
              pool default: 7 granted, 0 queued, cpu=12,memory=7Gi
        "#]],
    );
}

#[test]
fn best_fit_packs_where_spread_spreads() {
    let script = |strategy: &str| {
        format!(
            "
            strategy {strategy}
            node n1 cpu=4 memory=8Gi
            node n2 cpu=4 memory=8Gi
            node n3 cpu=4 memory=8Gi
            submit coderx4 cpu=1 memory=1Gi
            submit big cpu=4 memory=1Gi
            show
            "
        )
    };
    check(
        &script("best-fit"),
        expect![[r#"
        > node n1 cpu=4 memory=8Gi
        > node n2 cpu=4 memory=8Gi
        > node n3 cpu=4 memory=8Gi
        > submit coderx4 cpu=1 memory=1Gi
          granted coder-1 on n1
          granted coder-2 on n1
          granted coder-3 on n1
          granted coder-4 on n1
        > submit big cpu=4 memory=1Gi
          granted big on n2
        > show
          node n1: cpu=4,memory=4Gi of cpu=4,memory=8Gi
          node n2: cpu=4,memory=1Gi of cpu=4,memory=8Gi
          node n3: 0 of cpu=4,memory=8Gi
          pool default: 5 granted, 0 queued, cpu=8,memory=5Gi
    "#]],
    );
    check(
        &script("spread"),
        expect![[r#"
        > node n1 cpu=4 memory=8Gi
        > node n2 cpu=4 memory=8Gi
        > node n3 cpu=4 memory=8Gi
        > submit coderx4 cpu=1 memory=1Gi
          granted coder-1 on n1
          granted coder-2 on n2
          granted coder-3 on n3
          granted coder-4 on n1
        > submit big cpu=4 memory=1Gi
          big: refused (Capacity: cpu=1)
        > show
          node n1: cpu=2,memory=2Gi of cpu=4,memory=8Gi
          node n2: cpu=1,memory=1Gi of cpu=4,memory=8Gi
          node n3: cpu=1,memory=1Gi of cpu=4,memory=8Gi
          pool default: 4 granted, 0 queued, cpu=4,memory=4Gi
    "#]],
    );
    check(
        &script("first-fit"),
        expect![[r#"
        > node n1 cpu=4 memory=8Gi
        > node n2 cpu=4 memory=8Gi
        > node n3 cpu=4 memory=8Gi
        > submit coderx4 cpu=1 memory=1Gi
          granted coder-1 on n1
          granted coder-2 on n1
          granted coder-3 on n1
          granted coder-4 on n1
        > submit big cpu=4 memory=1Gi
          granted big on n2
        > show
          node n1: cpu=4,memory=4Gi of cpu=4,memory=8Gi
          node n2: cpu=4,memory=1Gi of cpu=4,memory=8Gi
          node n3: 0 of cpu=4,memory=8Gi
          pool default: 5 granted, 0 queued, cpu=8,memory=5Gi
    "#]],
    );
}

#[test]
fn fair_share_lends_idle_guarantee_and_reclaims_it() {
    check(
        "
        strategy fair-share
        node n cpu=8 memory=64Gi
        pool a guaranteed.cpu=4
        pool b guaranteed.cpu=4
        pool c limit.cpu=2
        # b borrows a's idle guarantee
        submit bx8 pool=b cpu=1 memory=1Gi
        # a takes its guarantee back, one borrowed grant at a time, newest first
        submit ax4 pool=a cpu=1 memory=1Gi
        # beyond its guarantee, a reclaims nothing: it waits
        submit extra pool=a cpu=1 memory=1Gi queue
        # c is capped by its limit (cpu only: memory is not named) whatever the cluster has
        node m cpu=8 memory=64Gi
        submit cx3 pool=c cpu=1 memory=1Gi
        show
        ",
        expect![[r#"
            > node n cpu=8 memory=64Gi
            > pool a guaranteed.cpu=4
            > pool b guaranteed.cpu=4
            > pool c limit.cpu=2
            > submit bx8 pool=b cpu=1 memory=1Gi
              granted b-1 on n
              granted b-2 on n
              granted b-3 on n
              granted b-4 on n
              granted b-5 on n
              granted b-6 on n
              granted b-7 on n
              granted b-8 on n
            > submit ax4 pool=a cpu=1 memory=1Gi
              preempted b-8 (reclaim preemption by a-1)
              granted a-1 on n preempting b-8
              preempted b-7 (reclaim preemption by a-2)
              granted a-2 on n preempting b-7
              preempted b-6 (reclaim preemption by a-3)
              granted a-3 on n preempting b-6
              preempted b-5 (reclaim preemption by a-4)
              granted a-4 on n preempting b-5
            > submit extra pool=a cpu=1 memory=1Gi queue
              extra: queued (Capacity: cpu=1)
            > node m cpu=8 memory=64Gi
              granted extra on m
            > submit cx3 pool=c cpu=1 memory=1Gi
              granted c-1 on m
              granted c-2 on m
              c-3: refused (PoolLimit: cpu=1)
            > show
              node n: cpu=8,memory=8Gi of cpu=8,memory=64Gi
              node m: cpu=3,memory=3Gi of cpu=8,memory=64Gi
              pool default: 0 granted, 0 queued, 0
              pool a: 5 granted, 0 queued, cpu=5,memory=5Gi
              pool b: 4 granted, 0 queued, cpu=4,memory=4Gi
              pool c: 2 granted, 0 queued, cpu=2,memory=2Gi
        "#]],
    );
}

#[test]
fn backfill_skips_the_big_request_until_it_waited_too_long() {
    check(
        "
        config reserve_after=60
        node n1 cpu=4 memory=8Gi
        submit base cpu=3 memory=1Gi
        submit big cpu=4 memory=1Gi queue
        # smaller requests behind it backfill
        submit small-1 cpu=1 memory=1Gi queue
        release small-1
        at 61
        drain
        # the node is now held for big: same-priority work waits behind it
        submit small-2 cpu=1 memory=1Gi queue
        show
        release base
        show
        ",
        expect![[r#"
            > node n1 cpu=4 memory=8Gi
            > submit base cpu=3 memory=1Gi
              granted base on n1
            > submit big cpu=4 memory=1Gi queue
              big: queued (Capacity: cpu=3)
            > submit small-1 cpu=1 memory=1Gi queue
              granted small-1 on n1
            > release small-1: released
              released small-1
            > drain: 0 granted
              held n1 for big
            > submit small-2 cpu=1 memory=1Gi queue
              small-2: queued (NodeHeld: 0)
            > show
              node n1: cpu=3,memory=1Gi of cpu=4,memory=8Gi held for big
              pool default: 1 granted, 2 queued, cpu=3,memory=1Gi
            > release base: released
              released base
              granted big on n1
            > show
              node n1: cpu=4,memory=1Gi of cpu=4,memory=8Gi
              pool default: 1 granted, 1 queued, cpu=4,memory=1Gi
        "#]],
    );
}

#[test]
fn queue_serves_priority_then_arrival() {
    check(
        "
        node n cpu=1 memory=8Gi
        submit hold cpu=1 memory=1Gi
        submit first prio=100 cpu=1 memory=1Gi queue
        submit second prio=700 cpu=1 memory=1Gi queue
        submit third prio=700 cpu=1 memory=1Gi queue
        release hold
        release second
        release third
        ",
        expect![[r#"
            > node n cpu=1 memory=8Gi
            > submit hold cpu=1 memory=1Gi
              granted hold on n
            > submit first prio=100 cpu=1 memory=1Gi queue
              first: queued (Capacity: cpu=1)
            > submit second prio=700 cpu=1 memory=1Gi queue
              preempted hold (priority preemption by second)
              granted second on n preempting hold
            > submit third prio=700 cpu=1 memory=1Gi queue
              third: queued (Capacity: cpu=1)
            > release hold: not live
            > release second: released
              released second
              granted third on n
            > release third: released
              released third
              granted first on n
        "#]],
    );
}

#[test]
fn leases_expire_unless_renewed() {
    check(
        "
        node n cpu=2 memory=8Gi
        submit lease ttl=30 cpu=1 memory=1Gi
        submit forever cpu=1 memory=1Gi
        at 20
        renew lease
        renew forever
        renew forever ttl=10
        at 45
        expire
        at 50
        expire
        release lease
        ",
        expect![[r#"
            > node n cpu=2 memory=8Gi
            > submit lease ttl=30 cpu=1 memory=1Gi
              granted lease on n
            > submit forever cpu=1 memory=1Gi
              granted forever on n
            > renew lease: expires at 50s
            > renew forever: error: allocation 2000001 has no lease to renew; give a ttl
            > renew forever ttl=10: expires at 30s
            > expire: 1
              expired forever (lease expired)
            > expire: 1
              expired lease (lease expired)
            > release lease: not live
        "#]],
    );
}

#[test]
fn lost_nodes_lose_their_grants_and_busy_nodes_stay() {
    check(
        "
        node n1 cpu=2 memory=8Gi
        node n2 cpu=2 memory=8Gi
        submit ax2 cpu=2 memory=1Gi
        remove n1
        submit waiting cpu=2 memory=1Gi queue
        lose n1
        unready n2
        remove n2 force
        show
        ",
        expect![[r#"
            > node n1 cpu=2 memory=8Gi
            > node n2 cpu=2 memory=8Gi
            > submit ax2 cpu=2 memory=1Gi
              granted a-1 on n1
              granted a-2 on n2
            > remove n1: error: node "n1" holds 1 live allocations; use force to remove it
            > submit waiting cpu=2 memory=1Gi queue
              waiting: queued (Capacity: cpu=2)
            > lose n1
              node n1 not ready
              lost a-1 (node n1 lost)
            > unready n2
              node n2 not ready
            > remove n2 force
              lost a-2 (node n2 lost)
            > show
              node n1: 0 of cpu=2,memory=8Gi
              pool default: 0 granted, 1 queued, 0
        "#]],
    );
}

#[test]
fn releases_are_idempotent_and_bad_requests_change_nothing() {
    check(
        "
        node n cpu=2 memory=8Gi label.zone=a
        submit a cpu=1 memory=1Gi
        release a
        release a
        submit bad pool=nope cpu=1 memory=1Gi
        submit picky sel.zone=b cpu=1 memory=1Gi
        submit huge cpu=3 memory=1Gi
        submit gpu gpu=1
        submit licensed example.com/license=1
        show
        ",
        expect![[r#"
            > node n cpu=2 memory=8Gi label.zone=a
            > submit a cpu=1 memory=1Gi
              granted a on n
            > release a: released
              released a
            > release a: not live
            > submit bad pool=nope cpu=1 memory=1Gi
              bad: error: pool: no pool named "nope"
            > submit picky sel.zone=b cpu=1 memory=1Gi
              picky: refused (NoEligibleNode: cpu=1,memory=1Gi)
            > submit huge cpu=3 memory=1Gi
              huge: refused (Capacity: cpu=1)
            > submit gpu gpu=1
              gpu: refused (Capacity: gpu=1)
            > submit licensed example.com/license=1
              licensed: refused (Capacity: example.com/license=1)
            > show
              node n: 0 of cpu=2,memory=8Gi
              pool default: 0 granted, 0 queued, 0
        "#]],
    );
}

#[test]
fn spread_constraints_keep_zones_within_their_skew_where_bin_packing_would_not() {
    // priority bin-packs (most-allocated): without the constraint all six land on one node
    check(
        "
        node a1 cpu=8 memory=8G label.zone=a
        node a2 cpu=8 memory=8G label.zone=a
        node b1 cpu=8 memory=8G label.zone=b
        node c1 cpu=8 memory=8G label.zone=c
        node x1 cpu=8 memory=8G
        submit packedx3 cpu=1 memory=1G label.app=packed
        submit coderx6 cpu=1 memory=1G label.app=coder spread=zone:1:app=coder
        submit wide cpu=1 memory=1G label.app=coder spread=zone:1:app=coder
        show
        ",
        expect![[r#"
            > node a1 cpu=8 memory=8G label.zone=a
            > node a2 cpu=8 memory=8G label.zone=a
            > node b1 cpu=8 memory=8G label.zone=b
            > node c1 cpu=8 memory=8G label.zone=c
            > node x1 cpu=8 memory=8G
            > submit packedx3 cpu=1 memory=1G label.app=packed
              granted packed-1 on a1
              granted packed-2 on a1
              granted packed-3 on a1
            > submit coderx6 cpu=1 memory=1G label.app=coder spread=zone:1:app=coder
              granted coder-1 on a1
              granted coder-2 on b1
              granted coder-3 on c1
              granted coder-4 on a1
              granted coder-5 on b1
              granted coder-6 on c1
            > submit wide cpu=1 memory=1G label.app=coder spread=zone:1:app=coder
              granted wide on a1
            > show
              node a1: cpu=6,memory=5859375Ki of cpu=8,memory=7812500Ki
              node a2: 0 of cpu=8,memory=7812500Ki
              node b1: cpu=2,memory=1953125Ki of cpu=8,memory=7812500Ki
              node c1: cpu=2,memory=1953125Ki of cpu=8,memory=7812500Ki
              node x1: 0 of cpu=8,memory=7812500Ki
              pool default: 10 granted, 0 queued, cpu=10,memory=9765625Ki
        "#]],
    );
}

#[test]
fn anti_affinity_keeps_replicas_apart_and_affinity_keeps_a_helper_beside_them() {
    check(
        "
        node a1 cpu=8 memory=8G label.zone=a
        node a2 cpu=8 memory=8G label.zone=a
        node b1 cpu=8 memory=8G label.zone=b
        submit dbx4 cpu=1 memory=1G label.app=db anti=qm.dev/node:app=db queue
        release db-1
        submit cache cpu=1 memory=1G label.app=cache aff=zone:app=db
        submit lonely cpu=1 memory=1G aff=zone:app=nothing
        submit first cpu=1 memory=1G label.app=pair aff=qm.dev/node:app=pair
        submit second cpu=1 memory=1G label.app=pair aff=qm.dev/node:app=pair
        show
        ",
        expect![[r#"
            > node a1 cpu=8 memory=8G label.zone=a
            > node a2 cpu=8 memory=8G label.zone=a
            > node b1 cpu=8 memory=8G label.zone=b
            > submit dbx4 cpu=1 memory=1G label.app=db anti=qm.dev/node:app=db queue
              granted db-1 on a1
              granted db-2 on a2
              granted db-3 on b1
              db-4: queued (Topology: 0)
            > release db-1: released
              released db-1
              granted db-4 on a1
            > submit cache cpu=1 memory=1G label.app=cache aff=zone:app=db
              granted cache on a1
            > submit lonely cpu=1 memory=1G aff=zone:app=nothing
              lonely: refused (Topology: 0)
            > submit first cpu=1 memory=1G label.app=pair aff=qm.dev/node:app=pair
              granted first on a1
            > submit second cpu=1 memory=1G label.app=pair aff=qm.dev/node:app=pair
              granted second on a1
            > show
              node a1: cpu=4,memory=3906250Ki of cpu=8,memory=7812500Ki
              node a2: cpu=1,memory=1000000000 of cpu=8,memory=7812500Ki
              node b1: cpu=1,memory=1000000000 of cpu=8,memory=7812500Ki
              pool default: 6 granted, 0 queued, cpu=6,memory=5859375Ki
        "#]],
    );
}
