//! Racing and stale view changes: which of two views a node keeps.
//!
//! Two coordinators may propose different views for the same *generation* (the high
//! bits of an epoch, see [`View::successor`]): two operators at once, or a coordinator
//! cut off from every member that builds on a view it does not know is stale. Every
//! node places the views it hears of, together with what it knows of their
//! *completion*, in one total order and keeps the greatest:
//!
//! 1. a later generation wins, whatever else;
//! 2. within a generation, a view known completed wins over one that is not (a view is
//!    completed once its coordinator saw every shard of it complete: every replica in
//!    the view with nothing more to receive from old owners; the coordinator then
//!    announces it, and the knowledge travels with the view and is kept with it);
//! 3. otherwise the view's rank (epoch, then fingerprint) decides.
//!
//! Invariants kept: a node only moves up this order, so nodes that hear the same
//! views (and completions) end on the same one, whatever the order of delivery; and a
//! view known completed is never replaced by another of its generation unless that
//! one too was announced completed (which needs every replica of both views to settle
//! in each, one after the other; then rank 3 still picks one winner everywhere). A
//! stale coordinator therefore cannot undo a completed change: its proposal is refused
//! ([`Offer::Keep`] with `tell`), and it learns the winner from the refusing node.
//! Moving between views never loses a write: the hand-over of every view change (and
//! of its undoing) moves each key to its owners in the view in force.

use crate::placement::View;
use std::cmp::Ordering;

/// Where a view stands in the order of the module docs.
pub fn standing(view: &View, completed: bool) -> (u64, bool, (u64, u64)) {
    (view.generation(), completed, view.rank())
}

/// Orders two views with what their holders know of their completion.
pub fn compare(a: &View, a_completed: bool, b: &View, b_completed: bool) -> Ordering {
    standing(a, a_completed).cmp(&standing(b, b_completed))
}

/// What a node does with a view offered to it (by a coordinator, a peer's reply, a
/// hand-over or a completion announcement).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// The offered view wins: install it, with the completion knowledge it came with.
    Install,
    /// The view in force, now known completed: record that.
    Complete,
    /// Keep the view in force. `tell` when the sender holds another view (or the same
    /// one without knowing it completed) that loses: it should be told ours.
    Keep { tell: bool },
}

/// The decision for `offered` (with `offered_completed`) at a node in `current` (with
/// `current_completed`).
pub fn offer(
    current: &View,
    current_completed: bool,
    offered: &View,
    offered_completed: bool,
) -> Offer {
    if offered == current {
        return match (current_completed, offered_completed) {
            (false, true) => Offer::Complete,
            (true, false) => Offer::Keep { tell: true },
            _ => Offer::Keep { tell: false },
        };
    }
    match compare(offered, offered_completed, current, current_completed) {
        Ordering::Greater => Offer::Install,
        _ => Offer::Keep { tell: true },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(ns: &[u8]) -> Vec<String> {
        ns.iter().map(|n| format!("10.0.0.{n}:1")).collect()
    }

    /// Two successors of `base` for one generation, the lower-ranked first.
    fn racing(base: &View) -> (View, View) {
        let x = base.successor(nodes(&[1, 2, 3]), 1);
        let y = base.successor(nodes(&[3, 2, 1]), 1);
        if x.rank() < y.rank() {
            (x, y)
        } else {
            (y, x)
        }
    }

    #[test]
    fn a_completed_view_beats_a_higher_ranked_one_of_its_generation() {
        let base = View::new(0, nodes(&[1, 2, 3, 4]), 2);
        let (low, high) = racing(&base);
        assert_eq!(low.generation(), high.generation());
        // Nothing known: rank decides.
        assert_eq!(offer(&low, false, &high, false), Offer::Install);
        assert_eq!(offer(&high, false, &low, false), Offer::Keep { tell: true });
        // The lower-ranked one completed: the stale proposal is refused, and the
        // node holding it installs the completed one when told.
        assert_eq!(offer(&low, true, &high, false), Offer::Keep { tell: true });
        assert_eq!(offer(&high, false, &low, true), Offer::Install);
        // A completion of the view in force is recorded; a sender that lacks it is told.
        assert_eq!(offer(&low, false, &low, true), Offer::Complete);
        assert_eq!(offer(&low, true, &low, false), Offer::Keep { tell: true });
        assert_eq!(offer(&low, true, &low, true), Offer::Keep { tell: false });
        assert_eq!(offer(&low, false, &low, false), Offer::Keep { tell: false });
    }

    #[test]
    fn a_later_generation_wins_whatever_is_known_of_the_earlier_one() {
        let base = View::new(0, nodes(&[1, 2, 3, 4]), 2);
        let (low, high) = racing(&base);
        let next = low.successor(nodes(&[1, 2]), 2);
        for c in [false, true] {
            assert_eq!(offer(&high, c, &next, false), Offer::Install);
            assert_eq!(offer(&low, c, &next, false), Offer::Install);
            // A completion announced for an earlier generation is news to nobody here.
            assert_eq!(offer(&next, false, &low, true), Offer::Keep { tell: true });
        }
    }

    /// One message: a view (an index into the proposals) and whether it announces
    /// completion, delivered to one node.
    type Msg = (usize, bool, usize);

    fn proposals() -> Vec<View> {
        let base = View::new(0, nodes(&[1, 2, 3, 4]), 2);
        let g1 = [
            base.successor(nodes(&[1, 2, 3, 4]), 1),
            base.successor(nodes(&[4, 3, 2, 1]), 2),
            base.successor(nodes(&[1, 2]), 1),
            base.successor(nodes(&[2, 3]), 2),
        ];
        let g2 = [
            g1[0].successor(nodes(&[1]), 1),
            g1[1].successor(nodes(&[2]), 1),
        ];
        g1.into_iter().chain(g2).collect()
    }

    proptest! {
        /// Any delivery order of proposals and completions (at most one completed view
        /// per generation, as the coordinators' checks ensure), followed by the nodes
        /// telling each other what they hold, ends with every node on one view; and no
        /// node ever replaces a view it knows completed with another of its generation.
        #[test]
        fn any_delivery_order_converges_and_keeps_completed_views(
            msgs in prop::collection::vec((0usize..6, any::<bool>(), 0usize..5), 0..40),
            completed_g1 in 0usize..4,
            completed_g2 in 4usize..6,
            gossip in prop::collection::vec((0usize..5, 0usize..5), 0..60),
        ) {
            let views = proposals();
            let base = View::new(0, nodes(&[1, 2, 3, 4]), 2);
            // A completion is announced only for the one view per generation that completed.
            let may_complete = |i: usize| i == completed_g1 || i == completed_g2;
            let msgs: Vec<Msg> = msgs
                .into_iter()
                .map(|(v, c, n)| (v, c && may_complete(v), n))
                .collect();
            let mut held: Vec<(View, bool)> = vec![(base.clone(), false); 5];
            let deliver = |held: &mut Vec<(View, bool)>, to: usize, view: &View, c: bool| {
                let (cur, cur_c) = held[to].clone();
                match offer(&cur, cur_c, view, c) {
                    Offer::Install => {
                        assert!(
                            !(cur_c && cur.generation() == view.generation() && !c),
                            "a completed view replaced by an uncompleted one of its generation"
                        );
                        held[to] = (view.clone(), c);
                    }
                    Offer::Complete => held[to].1 = true,
                    Offer::Keep { .. } => {}
                }
            };
            for (v, c, to) in &msgs {
                deliver(&mut held, *to, &views[*v], *c);
            }
            for (from, to) in &gossip {
                let (v, c) = held[*from].clone();
                deliver(&mut held, *to, &v, c);
            }
            // Then everyone tells everyone until nothing changes (a refused sender is
            // told the winner, so each pair ends up exchanging both ways).
            loop {
                let before = held.clone();
                for from in 0..5 {
                    for to in 0..5 {
                        let (v, c) = held[from].clone();
                        deliver(&mut held, to, &v, c);
                    }
                }
                if held == before {
                    break;
                }
            }
            prop_assert!(held.iter().all(|h| *h == held[0]), "{held:?}");
            // The winner is the greatest of everything delivered.
            let best = msgs
                .iter()
                .map(|(v, c, _)| (views[*v].clone(), *c))
                .chain([(base, false)])
                .max_by(|a, b| compare(&a.0, a.1, &b.0, b.1))
                .unwrap();
            prop_assert_eq!(&held[0], &best);
        }
    }
}
