"""The pure core: records, the model table, tokens, markup, costs, planning, requests, results,
map-reduce (with an injected `call`), the cache schedule, packing and the budget's arithmetic. No I/O,
no threads beyond a lock, no store, no network, no Prefect: testable in milliseconds."""
