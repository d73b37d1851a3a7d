"""The ``discord`` engine: Midjourney and Niji driven directly through Discord user accounts.

* ``wire`` — what Discord and the Midjourney bot say, parsed (pure functions).
* ``options`` — the account's settings and their validation.
* ``rest`` — the REST client (interactions, uploads, command index, rate limits).
* ``engine`` — the engine (submit, find_job, poll, cancel, image_seed) over the Job value.
* ``gateway`` — the long-running WebSocket service (leases, resume, events → JobUpdates).
* ``fake`` — a faithful fake Discord with a Midjourney bot, for tests and demos.
"""
