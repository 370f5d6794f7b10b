"""Flow control: the clock, the meters that decide when a call may start (rate,
concurrency), the retry rules, and the retried-call executor every call goes through."""
