//! The retry budget (Finagle's): retries as a share of recent requests.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Slots the window is counted in: the window slides by a tenth of itself.
const SLOTS: u32 = 10;

/// Bounds retries to `ratio` of the requests of the last `window`, plus
/// `floor` retries per window, so that a fleet in trouble is not buried
/// under retries while a quiet one can still retry a few.
///
/// Each request [`deposit`](RetryBudget::deposit)s; each retry must
/// [`try_withdraw`](RetryBudget::try_withdraw) first. Counts are kept in
/// ten slots of a tenth of the window each, so what leaves the window
/// leaves it a slot at a time.
#[derive(Debug)]
pub struct RetryBudget {
    window: Duration,
    ratio: f64,
    floor: u32,
    origin: Instant,
    slots: Mutex<VecDeque<Slot>>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    index: u128,
    deposits: u64,
    withdrawals: u64,
}

impl Default for RetryBudget {
    /// 20% of the last 10 s of requests, plus 3 retries per 10 s.
    fn default() -> Self {
        RetryBudget::new(Duration::from_secs(10), 0.2, 3)
    }
}

impl RetryBudget {
    /// A budget of `ratio` of the requests of the last `window`, plus
    /// `floor` retries per window.
    pub fn new(window: Duration, ratio: f64, floor: u32) -> Self {
        RetryBudget {
            window: window.max(Duration::from_nanos(u64::from(SLOTS))),
            ratio,
            floor,
            origin: Instant::now(),
            slots: Mutex::new(VecDeque::new()),
        }
    }

    /// Counts one request made at `now`.
    pub fn deposit(&self, now: Instant) {
        self.with_slot(now, |slot| slot.deposits += 1);
    }

    /// Whether a retry at `now` is within the budget; if so, counts it.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = self.prune(&mut slots, now);
        let deposits: u64 = slots.iter().map(|s| s.deposits).sum();
        let withdrawals: u64 = slots.iter().map(|s| s.withdrawals).sum();
        let allowed = u64::from(self.floor) + (self.ratio * deposits as f64).floor() as u64;
        if withdrawals >= allowed {
            return false;
        }
        Self::slot(&mut slots, index).withdrawals += 1;
        true
    }

    fn with_slot(&self, now: Instant, change: impl FnOnce(&mut Slot)) {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = self.prune(&mut slots, now);
        change(Self::slot(&mut slots, index));
    }

    /// Drops the slots that left the window; returns `now`'s slot index.
    fn prune(&self, slots: &mut VecDeque<Slot>, now: Instant) -> u128 {
        let width = self.window.as_nanos() / u128::from(SLOTS);
        let index = now.saturating_duration_since(self.origin).as_nanos() / width;
        while slots
            .front()
            .is_some_and(|s| s.index + u128::from(SLOTS) <= index)
        {
            slots.pop_front();
        }
        index
    }

    fn slot(slots: &mut VecDeque<Slot>, index: u128) -> &mut Slot {
        // A time earlier than the newest slot counts in the newest.
        if slots.back().is_none_or(|s| s.index < index) {
            slots.push_back(Slot {
                index,
                deposits: 0,
                withdrawals: 0,
            });
        }
        slots.back_mut().expect("pushed above")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn withdrawn(budget: &RetryBudget) -> usize {
        (0..1000)
            .take_while(|_| budget.try_withdraw(Instant::now()))
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_hundred_requests_allow_about_twenty_retries() {
        let budget = RetryBudget::default();
        for _ in 0..100 {
            budget.deposit(Instant::now());
        }
        // 20% of 100, plus the floor of 3.
        assert_eq!(withdrawn(&budget), 23);
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_allows_three_without_traffic() {
        let budget = RetryBudget::default();
        assert_eq!(withdrawn(&budget), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides() {
        let budget = RetryBudget::default();
        for _ in 0..100 {
            budget.deposit(Instant::now());
        }
        assert_eq!(withdrawn(&budget), 23);
        advance(Duration::from_secs(5)).await;
        assert_eq!(
            withdrawn(&budget),
            0,
            "the retries taken are still in the window"
        );
        for _ in 0..50 {
            budget.deposit(Instant::now());
        }
        assert_eq!(withdrawn(&budget), 10, "150 requests allow 33, 23 taken");
        advance(Duration::from_secs(5)).await;
        // The first 100 requests and 23 retries left; 50 requests and 10
        // retries are left in the window: 3 + 10 - 10.
        assert_eq!(withdrawn(&budget), 3);
        advance(Duration::from_secs(10)).await;
        assert_eq!(withdrawn(&budget), 3);
    }
}
