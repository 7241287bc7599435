-- 0011: the budget and the abort are the run's, not a process's (issue 23). Every process or machine that
-- works on a run reserves a call's estimate here before sending it and releases it once the call is
-- logged, so `max_cost_usd` holds for the run as a whole (spent = the run's logged calls, in flight = the
-- reservations not yet released or expired). `runs.abort_reason` is set by the first process that stops
-- the run (a wrong key, no quota); the others read it before their next call.
CREATE TABLE budget_reservations (
    reservation_id VARCHAR PRIMARY KEY,
    run_id         VARCHAR NOT NULL,
    usd            DOUBLE NOT NULL,
    holder         VARCHAR NOT NULL,
    created_at     TIMESTAMP NOT NULL,
    expires_at     TIMESTAMP NOT NULL
);
ALTER TABLE runs ADD COLUMN abort_reason VARCHAR;
