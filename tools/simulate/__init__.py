"""`hearthmesh simulate`: real node processes under faults, a chat workload and its invariants
(SPEC §20.4)."""
