//! Retries for watertight: budgets, backoff, server hints, deadlines, hedging and replayable bodies.
